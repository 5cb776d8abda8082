package federation

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meridian-id/meridian/lookup"
)

// ResolvePath is the hub's endpoint telling a region whether any region
// holds a lookup key (POST, region client credentials). A region asks it
// only for a name that is not resident there and whose decoy region is
// itself (DecoyRegion), to answer an unknown name as its own resident's
// wrong password without sending the browser through the hub.
const ResolvePath = "/internal/lookup/resolve"

// ResolveRequest is the body of POST ResolvePath: the name's lookup key
// and, during a hub key rotation, its previous-key lookup key (hex). The
// username itself never travels.
type ResolveRequest struct {
	Keys []string `json:"keys"`
}

// ResolveResult is the answer to ResolveRequest: whether any region holds
// one of the keys. Which region is not said: the asking region only needs
// to know whether the name is unknown.
type ResolveResult struct {
	Known bool `json:"known"`
}

// DecoyRegion is the region that answers username when no region has it:
// the hub sends an unknown name there, and an entry region that is the
// decoy answers it itself. It is fixed per name and key, chosen among all
// regions (the entry region included) from the name's current-key lookup
// key, so it cannot be computed without k_hub, and it is the same whichever
// region the login entered at: probing one name from applications of
// several regions shows one region's page, as for a resident user. The
// order of regions does not matter. It fails for an invalid username or
// an empty region list.
func DecoyRegion(h *lookup.Hasher, username string, regions []string) (string, error) {
	if len(regions) == 0 {
		return "", errors.New("federation: no regions to choose a decoy from")
	}
	k, err := h.Key(username)
	if err != nil {
		return "", err
	}
	ids := slices.Sorted(slices.Values(regions))
	ids = slices.Compact(ids)
	// The key's leading 64 bits: the modulo bias over a few regions is
	// below 2^-58.
	return ids[binary.BigEndian.Uint64(k[:8])%uint64(len(ids))], nil
}

// PostResolve asks the hub at hubURL whether any region holds one of keys,
// with region's client credentials (a bearer client assertion, audience
// the hub's ResolvePath URL).
func PostResolve(ctx context.Context, client *http.Client, hubURL string, creds Credentials, keys []lookup.Key) (bool, error) {
	req := ResolveRequest{}
	for _, k := range keys {
		req.Keys = append(req.Keys, k.String())
	}
	body, err := json.Marshal(req)
	if err != nil {
		return false, err
	}
	aud := strings.TrimSuffix(hubURL, "/") + ResolvePath
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, aud, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	hr.Header.Set("Content-Type", "application/json")
	authz, err := BearerAssertion(creds.Key, creds.ClientID, aud)
	if err != nil {
		return false, err
	}
	hr.Header.Set("Authorization", authz)
	var res ResolveResult
	if err := doJSON(client, hr, &res); err != nil {
		return false, fmt.Errorf("federation: resolve: %w", err)
	}
	return res.Known, nil
}
