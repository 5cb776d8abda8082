package federation

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meridian-id/meridian/lookup"
)

// Paths of the internal, machine-to-machine endpoints.
const (
	// ChangesPath is the hub's endpoint applying a region's outbox
	// (POST, region client credentials).
	ChangesPath = "/internal/lookup/changes"
	// UserKeysPath is a region's listing of its users' lookup keys
	// (GET, the hub's client credentials).
	UserKeysPath = "/internal/user-keys"
)

// Limits of the internal endpoints.
const (
	MaxChanges      = 5000
	MaxPageSize     = 5000
	DefaultPageSize = 1000
)

// Operations of a KeyChange, as in the region's outbox.
const (
	OpPut    = "put"
	OpDelete = "delete"
)

// KeyChange is one change of the lookup table announced by a region: the
// user with this key now lives in (put) or left (delete) the region. It
// carries the keyed hash, never the username.
type KeyChange struct {
	Op  string `json:"op"`
	Key string `json:"key"` // 32 lower-case hex digits
}

// ChangesRequest is the body of POST ChangesPath.
type ChangesRequest struct {
	Changes []KeyChange `json:"changes"`
}

// ChangesResult is the answer to ChangesRequest.
type ChangesResult struct {
	// Applied counts puts written and deletes of the region's own entries.
	Applied int `json:"applied"`
	// Conflicts counts puts of keys the table places in another region: a
	// username cannot live in two regions, so they are refused and left to
	// an operator (hub reconcile reports them).
	Conflicts int `json:"conflicts"`
	// Ignored counts deletes of keys that are not the region's.
	Ignored int `json:"ignored"`
}

// UserKeysPage is one page of GET UserKeysPath.
type UserKeysPage struct {
	Region string `json:"region"`
	// Keys are the current-key lookup keys of the region's users (hex).
	Keys []string `json:"keys"`
	// PrevKeys, during a hub key rotation, are the previous-key lookup keys
	// of the same users, parallel to Keys.
	PrevKeys []string `json:"prev_keys,omitempty"`
	// Next is the opaque cursor of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// ErrBadChange is wrapped by ApplyChanges for a malformed change.
var ErrBadChange = errors.New("federation: malformed key change")

// ParseKey decodes a lookup key from 32 hex digits.
func ParseKey(s string) (lookup.Key, error) {
	var k lookup.Key
	if len(s) != 2*lookup.KeySize {
		return k, fmt.Errorf("%w: key must be %d hex digits", ErrBadChange, 2*lookup.KeySize)
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("%w: key is not hex", ErrBadChange)
	}
	return k, nil
}

// ApplyChanges applies region's changes to a lookup store in order: a put
// writes the key unless another region holds it (a conflict); a delete
// removes the key only if region holds it. It is what the hub does for
// POST ChangesPath and what a mesh region does directly. Malformed input is
// rejected (ErrBadChange) before anything is written.
func ApplyChanges(ctx context.Context, st lookup.Store, region string, changes []KeyChange) (ChangesResult, error) {
	return ApplyChangesFunc(ctx, st, region, changes, nil)
}

// Refusal is a change ApplyChangesFunc refused: a put of a key another
// region holds (a double claim) or a delete of a key region does not hold.
type Refusal struct {
	Op  string
	Key lookup.Key
	// Holder is the region the table places the key in ("" for a delete
	// of an absent key).
	Holder string
}

// ApplyChangesFunc is ApplyChanges calling refused, when not nil, for each
// change it refuses, before the next run of changes is read.
func ApplyChangesFunc(ctx context.Context, st lookup.Store, region string, changes []KeyChange, refused func(Refusal)) (ChangesResult, error) {
	var res ChangesResult
	if err := lookup.ValidateRegion(region); err != nil {
		return res, err
	}
	keys := make([]lookup.Key, len(changes))
	for i, c := range changes {
		if c.Op != OpPut && c.Op != OpDelete {
			return res, fmt.Errorf("%w: change %d: op must be put or delete", ErrBadChange, i)
		}
		k, err := ParseKey(c.Key)
		if err != nil {
			return res, fmt.Errorf("change %d: %w", i, err)
		}
		keys[i] = k
	}
	for i := 0; i < len(changes); {
		j := i + 1
		for j < len(changes) && changes[j].Op == changes[i].Op {
			j++
		}
		run := keys[i:j]
		have, err := st.GetMany(ctx, run)
		if err != nil {
			return res, err
		}
		if changes[i].Op == OpPut {
			var put []lookup.Entry
			for n, k := range run {
				if have[n] != "" && have[n] != region {
					res.Conflicts++
					if refused != nil {
						refused(Refusal{Op: OpPut, Key: k, Holder: have[n]})
					}
					continue
				}
				put = append(put, lookup.Entry{Key: k, Region: region})
			}
			if err := st.PutMany(ctx, put); err != nil {
				return res, err
			}
			res.Applied += len(put)
		} else {
			var del []lookup.Key
			for n, k := range run {
				if have[n] == region {
					del = append(del, k)
				} else {
					res.Ignored++
					if refused != nil {
						refused(Refusal{Op: OpDelete, Key: k, Holder: have[n]})
					}
				}
			}
			if err := st.DeleteMany(ctx, del); err != nil {
				return res, err
			}
			res.Applied += len(del)
		}
		i = j
	}
	return res, nil
}

// ErrUnexpectedStatus is wrapped when an internal endpoint answers an
// unexpected status.
var ErrUnexpectedStatus = errors.New("federation: unexpected status")

// ListUserKeys fetches one page of region's user keys from its issuer with
// the hub's client credentials (creds from HubCredentials): a bearer client
// assertion signed with the hub's key, audience the region's issuer.
func ListUserKeys(ctx context.Context, client *http.Client, issuer string, creds Credentials, after string, limit int) (UserKeysPage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if after != "" {
		q.Set("after", after)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+UserKeysPath+"?"+q.Encode(), nil)
	if err != nil {
		return UserKeysPage{}, err
	}
	authz, err := BearerAssertion(creds.Key, creds.ClientID, strings.TrimSuffix(issuer, "/")+UserKeysPath)
	if err != nil {
		return UserKeysPage{}, err
	}
	req.Header.Set("Authorization", authz)
	var page UserKeysPage
	if err := doJSON(client, req, &page); err != nil {
		return UserKeysPage{}, err
	}
	if len(page.PrevKeys) != 0 && len(page.PrevKeys) != len(page.Keys) {
		return UserKeysPage{}, errors.New("federation: user keys page: prev_keys not parallel to keys")
	}
	return page, nil
}

func doJSON(client *http.Client, req *http.Request, v any) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s %s: %s: %s", ErrUnexpectedStatus, req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	return json.Unmarshal(body, v)
}

// PostChanges sends one ChangesRequest to the hub's ChangesPath at hubURL
// with region's client credentials: a bearer client assertion signed with
// the region's own key, audience the hub's ChangesPath URL.
func PostChanges(ctx context.Context, client *http.Client, hubURL string, creds Credentials, changes []KeyChange) (ChangesResult, error) {
	body, err := json.Marshal(ChangesRequest{Changes: changes})
	if err != nil {
		return ChangesResult{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(hubURL, "/")+ChangesPath, bytes.NewReader(body))
	if err != nil {
		return ChangesResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	authz, err := BearerAssertion(creds.Key, creds.ClientID, strings.TrimSuffix(hubURL, "/")+ChangesPath)
	if err != nil {
		return ChangesResult{}, err
	}
	req.Header.Set("Authorization", authz)
	var res ChangesResult
	if err := doJSON(client, req, &res); err != nil {
		return ChangesResult{}, err
	}
	return res, nil
}
