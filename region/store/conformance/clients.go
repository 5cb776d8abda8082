package conformance

import (
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// testClientUpdate: UpdateClient replaces every field but CreatedAt (a
// secret rotation keeps the previous digest with its expiry, an RFC 7592
// update rotates the registration token digest), nil digests stay nil,
// and an unknown id is ErrNotFound.
func testClientUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	c := sampleClient(now)
	reg := store.Digest("registration-1")
	c.RegistrationTokenHash = reg[:]
	ok(t, s.CreateClient(ctx, c))
	got, err := s.GetClient(ctx, c.ID)
	ok(t, err)
	equal(t, got, c)
	if got.PreviousSecretHash != nil || !got.PreviousSecretExpiresAt.IsZero() {
		t.Fatalf("new client has a previous secret %x until %v", got.PreviousSecretHash, got.PreviousSecretExpiresAt)
	}

	next := store.Digest("secret-2")
	reg2 := store.Digest("registration-2")
	u := c
	u.PreviousSecretHash, u.PreviousSecretExpiresAt = c.SecretHash, now.Add(time.Hour)
	u.SecretHash = next[:]
	u.RegistrationTokenHash = reg2[:]
	u.Name = "Renamed"
	u.RedirectURIs = []string{"https://app.example/new"}
	u.PostLogoutRedirectURIs = nil
	u.GrantTypes = []string{"client_credentials"}
	u.AuthMethod = "client_secret_post"
	u.AccessTokenFormat = "opaque"
	u.JWKS = ""
	u.FirstParty = false
	u.Scopes = []string{"meridian:admin"}
	u.CreatedAt = now.Add(24 * time.Hour) // ignored
	ok(t, s.UpdateClient(ctx, u))
	got, err = s.GetClient(ctx, c.ID)
	ok(t, err)
	want := u
	want.CreatedAt = c.CreatedAt
	equal(t, got, want)

	// Writing the same values again is not "not found".
	ok(t, s.UpdateClient(ctx, u))

	// The previous secret and the registration token can be cleared.
	u.PreviousSecretHash, u.PreviousSecretExpiresAt, u.RegistrationTokenHash = nil, time.Time{}, nil
	ok(t, s.UpdateClient(ctx, u))
	got, err = s.GetClient(ctx, c.ID)
	ok(t, err)
	if got.PreviousSecretHash != nil || !got.PreviousSecretExpiresAt.IsZero() || got.RegistrationTokenHash != nil {
		t.Fatalf("cleared fields came back: %x until %v, registration %x", got.PreviousSecretHash, got.PreviousSecretExpiresAt, got.RegistrationTokenHash)
	}
	list, err := s.ListClients(ctx)
	ok(t, err)
	if len(list) != 1 || list[0].Name != "Renamed" {
		t.Fatalf("list after update: %+v", list)
	}

	missing := sampleClient(now)
	is(t, s.UpdateClient(ctx, missing), store.ErrNotFound)
	_, err = s.GetClient(ctx, missing.ID)
	is(t, err, store.ErrNotFound)
}
