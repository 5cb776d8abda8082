package federation

import (
	"crypto/subtle"
	"errors"
	"slices"
	"strings"

	"github.com/meridian-id/meridian/routing"
)

// Topologies of a federation (config federation.topology).
const (
	// TopologyHub federates every cross-region login through the hub.
	TopologyHub = "hub"
	// TopologyMesh lets the entry region federate with the resident region
	// directly, resolving it in the lookup table.
	TopologyMesh = "mesh"
)

// CallbackPath is where an entry region receives federated authorization
// responses (region.Upstream.Finish runs there).
const CallbackPath = "/login/federated/callback"

// Credentials are one federation client's id, secret and redirect URIs.
// RedirectURIs[0] is the default; the others are the same callback on the
// region's other hosts (DR site, global host).
type Credentials struct {
	ClientID     string
	ClientSecret string
	RedirectURIs []string
}

// HubClientID is the client_id of the hub's client at region.
func HubClientID(codec *routing.Codec, region string) (string, error) {
	return codec.Derive(routing.KindClient, region, "hub")
}

// HubClientSecret is the secret of the hub's client at region. Regions also
// use it to authenticate the hub on their internal endpoints.
func HubClientSecret(codec *routing.Codec, region string) string {
	return codec.DeriveSecret("hub@" + region)
}

// HubRedirectURI is the redirect URI of the hub's client at region.
func HubRedirectURI(hubURL, region string) string {
	return strings.TrimSuffix(hubURL, "/") + "/callback/" + region
}

// HubCredentials are the hub's client credentials at region.
func HubCredentials(codec *routing.Codec, region, hubURL string) (Credentials, error) {
	id, err := HubClientID(codec, region)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ClientID: id, ClientSecret: HubClientSecret(codec, region),
		RedirectURIs: []string{HubRedirectURI(hubURL, region)}}, nil
}

// RegionClientID is the client_id of region's client at the hub.
func RegionClientID(region string) string { return "region-" + region }

// RegionFromClientID returns the region of a hub client id ("region-eu").
func RegionFromClientID(clientID string) (string, bool) {
	r, ok := strings.CutPrefix(clientID, "region-")
	return r, ok && routing.ValidRegionID(r)
}

// RegionClientSecret is the secret of region's client at the hub; the
// region's Pusher authenticates with it too.
func RegionClientSecret(codec *routing.Codec, region string) string {
	return codec.DeriveSecret("region@hub|" + region)
}

// CallbackURIs returns the federated-login callback on each base URL (the
// region's issuer first, then its DR and global URLs), without duplicates.
func CallbackURIs(bases ...string) []string {
	var out []string
	for _, b := range bases {
		if b == "" {
			continue
		}
		u := strings.TrimSuffix(b, "/") + CallbackPath
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// RegionCredentials are region's client credentials at the hub; bases are
// the region's issuer and the other URLs its login pages are served on.
func RegionCredentials(codec *routing.Codec, region string, bases ...string) Credentials {
	return Credentials{ClientID: RegionClientID(region), ClientSecret: RegionClientSecret(codec, region),
		RedirectURIs: CallbackURIs(bases...)}
}

// PeerClientID is the client_id of entry region's client at resident region
// (mesh topology).
func PeerClientID(codec *routing.Codec, entry, resident string) (string, error) {
	return codec.Derive(routing.KindClient, resident, "peer|"+entry)
}

// PeerClientSecret is the secret of entry region's client at resident.
func PeerClientSecret(codec *routing.Codec, entry, resident string) string {
	return codec.DeriveSecret("peer|" + entry + "|" + resident)
}

// PeerCredentials are entry region's client credentials at resident region;
// entryBases are the entry region's issuer and other login URLs.
func PeerCredentials(codec *routing.Codec, entry, resident string, entryBases ...string) (Credentials, error) {
	id, err := PeerClientID(codec, entry, resident)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ClientID: id, ClientSecret: PeerClientSecret(codec, entry, resident),
		RedirectURIs: CallbackURIs(entryBases...)}, nil
}

// ErrBadCredentials is returned by CheckHubCredentials for a wrong client.
var ErrBadCredentials = errors.New("federation: invalid client credentials")

// CheckHubCredentials checks, in constant time, that id and secret are the
// hub's client credentials at region.
func CheckHubCredentials(codec *routing.Codec, region, id, secret string) error {
	want, err := HubClientID(codec, region)
	if err != nil {
		return err
	}
	okID := subtle.ConstantTimeCompare([]byte(id), []byte(want))
	okSecret := subtle.ConstantTimeCompare([]byte(secret), []byte(HubClientSecret(codec, region)))
	if okID&okSecret != 1 {
		return ErrBadCredentials
	}
	return nil
}
