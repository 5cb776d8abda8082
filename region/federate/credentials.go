package federate

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// HubClientSpec describes the hub's client at a region for documentation
// and display; register it with EnsureHubClient, which keeps the derived id
// and the hub's public key (region.CreateClient would mint a random id).
func HubClientSpec(hubURL, region string) region.ClientSpec {
	return federationSpec("Meridian federation hub", []string{federation.HubRedirectURI(hubURL, region)})
}

func federationSpec(name string, redirects []string) region.ClientSpec {
	return region.ClientSpec{Name: name, RedirectURIs: redirects, GrantTypes: []string{region.GrantAuthorizationCode},
		AuthMethod: region.AuthPrivateKey, FirstParty: true, Scopes: []string{region.ScopeFederation}}
}

// ClientStore is the part of the regional store the federation clients
// are kept in.
type ClientStore interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
	CreateClient(ctx context.Context, c store.Client) error
	UpdateClient(ctx context.Context, c store.Client) error
}

// EnsureHubClient registers (or repairs) the hub's client at region in the
// region's store: its derived id, authenticated by private_key_jwt with the
// hub's public keys (hubKeys: more than one while the hub rotates its
// federation key). It is idempotent and meant for node startup in hub
// topology.
func EnsureHubClient(ctx context.Context, st ClientStore, codec *routing.Codec, region, hubURL string, hubKeys ...*ecdsa.PublicKey) error {
	ids, err := federation.HubClientIDs(codec, region)
	if err != nil {
		return err
	}
	// Under every key of the routing key ring: the hub names itself by the
	// id of the key it signs with, which a rolling rotation changes.
	for _, id := range ids {
		if err := EnsureClient(ctx, st, "Meridian federation hub", id, []string{federation.HubRedirectURI(hubURL, region)}, hubKeys...); err != nil {
			return err
		}
	}
	return nil
}

// EnsurePeerClients registers (or repairs) at resident region the client of
// every other region of the mesh; entries maps an entry region id to its
// login base URLs (issuer first), keys holds each region's public keys.
func EnsurePeerClients(ctx context.Context, st ClientStore, codec *routing.Codec, resident string, entries map[string][]string, keys *federation.Keyring) error {
	for entry, bases := range entries {
		if entry == resident {
			continue
		}
		pubs := keys.PublicKeys(entry)
		if len(pubs) == 0 {
			return fmt.Errorf("peer client of %s: no federation public key", entry)
		}
		ids, err := federation.PeerClientIDs(codec, entry, resident)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := EnsureClient(ctx, st, "Meridian region "+entry, id, federation.CallbackURIs(bases...), pubs...); err != nil {
				return fmt.Errorf("peer client of %s: %w", entry, err)
			}
		}
	}
	return nil
}

// EnsureClient stores a federation client (first party, code flow only,
// private_key_jwt with the calling party's public keys, scope
// meridian:federation so that authorization responses carry the region
// issuer), replacing a stored client of that id that differs (a client
// stored with a secret derived from the routing key, before per-party keys,
// is replaced in place, keeping the tokens issued to it).
func EnsureClient(ctx context.Context, st ClientStore, name, id string, redirects []string, pubs ...*ecdsa.PublicKey) error {
	if len(pubs) == 0 || slices.Contains(pubs, nil) {
		return errors.New("federation: client " + id + " needs a public key")
	}
	spec := federationSpec(name, redirects)
	want := store.Client{
		ID: id, Name: name, JWKS: federation.JWKS(pubs...),
		RedirectURIs: spec.RedirectURIs, GrantTypes: spec.GrantTypes, AuthMethod: spec.AuthMethod,
		AccessTokenFormat: region.FormatOpaque, FirstParty: true, Scopes: spec.Scopes, CreatedAt: time.Now().UTC(),
	}
	have, err := st.GetClient(ctx, id)
	switch {
	case err == nil:
		if sameClient(have, want) {
			return nil
		}
		// Replaced in place: deleting would revoke the tokens already
		// issued to the federation client (DeleteClient does).
		if err := st.UpdateClient(ctx, want); !errors.Is(err, store.ErrNotFound) {
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
	return len(a.SecretHash) == 0 && len(a.PreviousSecretHash) == 0 && len(a.RegistrationTokenHash) == 0 && a.JWKS == b.JWKS && a.Name == b.Name &&
		slices.Equal(a.RedirectURIs, b.RedirectURIs) && slices.Equal(a.GrantTypes, b.GrantTypes) &&
		a.AuthMethod == b.AuthMethod && a.FirstParty == b.FirstParty && slices.Equal(a.Scopes, b.Scopes)
}
