package federation

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
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

// HubClientSpec describes the hub's client at a region for documentation
// and display; register it with EnsureHubClient, which keeps the derived id
// and secret (region.CreateClient would mint random ones).
func HubClientSpec(hubURL, region string) region.ClientSpec {
	return federationSpec("Meridian federation hub", []string{HubRedirectURI(hubURL, region)})
}

func federationSpec(name string, redirects []string) region.ClientSpec {
	return region.ClientSpec{Name: name, RedirectURIs: redirects, GrantTypes: []string{region.GrantAuthorizationCode},
		AuthMethod: region.AuthSecretBasic, FirstParty: true, Scopes: []string{region.ScopeFederation}}
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

// EnsureHubClient registers (or repairs) the hub's client at region in the
// region's store, with its derived id and secret. It is idempotent and
// meant for node startup in hub topology.
func EnsureHubClient(ctx context.Context, st store.Store, codec *routing.Codec, region, hubURL string) error {
	c, err := HubCredentials(codec, region, hubURL)
	if err != nil {
		return err
	}
	return EnsureClient(ctx, st, "Meridian federation hub", c)
}

// EnsurePeerClients registers (or repairs) at resident region the client of
// every other region of the mesh; entries maps an entry region id to its
// login base URLs (issuer first).
func EnsurePeerClients(ctx context.Context, st store.Store, codec *routing.Codec, resident string, entries map[string][]string) error {
	for entry, bases := range entries {
		if entry == resident {
			continue
		}
		c, err := PeerCredentials(codec, entry, resident, bases...)
		if err != nil {
			return err
		}
		if err := EnsureClient(ctx, st, "Meridian region "+entry, c); err != nil {
			return fmt.Errorf("peer client of %s: %w", entry, err)
		}
	}
	return nil
}

// EnsureClient stores a federation client (first party, code flow only,
// client_secret_basic, scope meridian:federation so that authorization
// responses carry the region issuer) with the given derived credentials,
// replacing a stored client of that id that differs.
func EnsureClient(ctx context.Context, st store.Store, name string, c Credentials) error {
	spec := federationSpec(name, c.RedirectURIs)
	want := store.Client{
		ID: c.ClientID, SecretHash: region.HashClientSecret(c.ClientSecret), Name: name,
		RedirectURIs: spec.RedirectURIs, GrantTypes: spec.GrantTypes, AuthMethod: spec.AuthMethod,
		AccessTokenFormat: region.FormatOpaque, FirstParty: true, Scopes: spec.Scopes, CreatedAt: time.Now().UTC(),
	}
	have, err := st.GetClient(ctx, c.ClientID)
	switch {
	case err == nil:
		if sameClient(have, want) {
			return nil
		}
		if err := st.DeleteClient(ctx, c.ClientID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	if err := st.CreateClient(ctx, want); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	return nil
}

func sameClient(a, b store.Client) bool {
	return subtle.ConstantTimeCompare(a.SecretHash, b.SecretHash) == 1 && a.Name == b.Name &&
		slices.Equal(a.RedirectURIs, b.RedirectURIs) && slices.Equal(a.GrantTypes, b.GrantTypes) &&
		a.AuthMethod == b.AuthMethod && a.FirstParty == b.FirstParty && slices.Equal(a.Scopes, b.Scopes)
}
