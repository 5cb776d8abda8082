package federation

import (
	"crypto/ecdsa"
	"errors"
	"slices"
	"strings"
	"time"

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
// responses (region.Federator.Finish runs there).
const CallbackPath = "/login/federated/callback"

// Credentials are one federation client's id, private key and redirect
// URIs. The client authenticates with private_key_jwt (RFC 7523) signed by
// its party's own key; nothing about it derives from the routing key.
// RedirectURIs[0] is the default; the others are the same callback on the
// region's other hosts (DR site, global host).
type Credentials struct {
	ClientID     string
	Key          *ecdsa.PrivateKey
	RedirectURIs []string
}

// HubClientID is the client_id of the hub's client at region. It is a
// name, not a secret: the routing key derives it, the hub's key
// authenticates it.
func HubClientID(codec *routing.Codec, region string) (string, error) {
	return codec.Derive(routing.KindClient, region, "hub")
}

// HubClientIDs are HubClientID under every routing key of codec (the
// signing key's first). During a routing-key rotation the hub names
// itself by the id of the key it signs with, so a region registers and
// accepts all of them.
func HubClientIDs(codec *routing.Codec, region string) ([]string, error) {
	return codec.DeriveAll(routing.KindClient, region, "hub")
}

// PeerClientIDs are PeerClientID under every routing key of codec, as
// HubClientIDs.
func PeerClientIDs(codec *routing.Codec, entry, resident string) ([]string, error) {
	return codec.DeriveAll(routing.KindClient, resident, "peer|"+entry)
}

// HubRedirectURI is the redirect URI of the hub's client at region.
func HubRedirectURI(hubURL, region string) string {
	return strings.TrimSuffix(hubURL, "/") + "/callback/" + region
}

// HubCredentials are the hub's client credentials at region; key is the
// hub's private key.
func HubCredentials(codec *routing.Codec, region, hubURL string, key *ecdsa.PrivateKey) (Credentials, error) {
	id, err := HubClientID(codec, region)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ClientID: id, Key: key, RedirectURIs: []string{HubRedirectURI(hubURL, region)}}, nil
}

// RegionClientID is the client_id of region's client at the hub.
func RegionClientID(region string) string { return "region-" + region }

// RegionFromClientID returns the region of a hub client id ("region-eu").
func RegionFromClientID(clientID string) (string, bool) {
	r, ok := strings.CutPrefix(clientID, "region-")
	return r, ok && routing.ValidRegionID(r)
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

// RegionCredentials are region's client credentials at the hub; key is the
// region's private key, bases the region's issuer and the other URLs its
// login pages are served on.
func RegionCredentials(region string, key *ecdsa.PrivateKey, bases ...string) Credentials {
	return Credentials{ClientID: RegionClientID(region), Key: key, RedirectURIs: CallbackURIs(bases...)}
}

// PeerClientID is the client_id of entry region's client at resident region
// (mesh topology).
func PeerClientID(codec *routing.Codec, entry, resident string) (string, error) {
	return codec.Derive(routing.KindClient, resident, "peer|"+entry)
}

// PeerCredentials are entry region's client credentials at resident region;
// key is the entry region's private key, entryBases the entry region's
// issuer and other login URLs.
func PeerCredentials(codec *routing.Codec, entry, resident string, key *ecdsa.PrivateKey, entryBases ...string) (Credentials, error) {
	id, err := PeerClientID(codec, entry, resident)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ClientID: id, Key: key, RedirectURIs: CallbackURIs(entryBases...)}, nil
}

// ErrBadCredentials is returned by CheckHubAssertion for a wrong client.
var ErrBadCredentials = errors.New("federation: invalid client credentials")

// CheckHubAssertion checks that the Authorization header of an internal
// call to aud carries a client assertion of the hub's client at region,
// signed with one of the hub's keys (hubPubs).
func CheckHubAssertion(codec *routing.Codec, region, authz, aud string, hubPubs ...*ecdsa.PublicKey) error {
	ids, err := HubClientIDs(codec, region)
	if err != nil {
		return err
	}
	a, ok := AssertionFromRequest(authz)
	if !ok {
		return ErrBadCredentials
	}
	id, err := AssertionIssuer(a)
	if err != nil || !slices.Contains(ids, id) || VerifyAssertionAny(a, hubPubs, id, aud, time.Now()) != nil {
		return ErrBadCredentials
	}
	return nil
}
