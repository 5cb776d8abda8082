package federate

import (
	"context"
	"crypto/subtle"
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
// and secret (region.CreateClient would mint random ones).
func HubClientSpec(hubURL, region string) region.ClientSpec {
	return federationSpec("Meridian federation hub", []string{federation.HubRedirectURI(hubURL, region)})
}

func federationSpec(name string, redirects []string) region.ClientSpec {
	return region.ClientSpec{Name: name, RedirectURIs: redirects, GrantTypes: []string{region.GrantAuthorizationCode},
		AuthMethod: region.AuthSecretBasic, FirstParty: true, Scopes: []string{region.ScopeFederation}}
}

// ClientStore is the part of the regional store the federation clients
// are kept in.
type ClientStore interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
	CreateClient(ctx context.Context, c store.Client) error
	DeleteClient(ctx context.Context, id string) error
}

// EnsureHubClient registers (or repairs) the hub's client at region in the
// region's store, with its derived id and secret. It is idempotent and
// meant for node startup in hub topology.
func EnsureHubClient(ctx context.Context, st ClientStore, codec *routing.Codec, region, hubURL string) error {
	c, err := federation.HubCredentials(codec, region, hubURL)
	if err != nil {
		return err
	}
	return EnsureClient(ctx, st, "Meridian federation hub", c)
}

// EnsurePeerClients registers (or repairs) at resident region the client of
// every other region of the mesh; entries maps an entry region id to its
// login base URLs (issuer first).
func EnsurePeerClients(ctx context.Context, st ClientStore, codec *routing.Codec, resident string, entries map[string][]string) error {
	for entry, bases := range entries {
		if entry == resident {
			continue
		}
		c, err := federation.PeerCredentials(codec, entry, resident, bases...)
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
func EnsureClient(ctx context.Context, st ClientStore, name string, c federation.Credentials) error {
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
