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

// testClientDeleteRevokes: deleting a client revokes every access and
// refresh token issued to it (and no other client's) in the same
// transaction; a failed delete (unknown id) revokes nothing.
func testClientDeleteRevokes(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	gone, kept := sampleClient(now), sampleClient(now)
	ok(t, s.CreateClient(ctx, gone))
	ok(t, s.CreateClient(ctx, kept))
	mk := func(client string) (store.AccessToken, store.RefreshToken) {
		g := newID("grant")
		at, rt := sampleAccess(now, g, "usr-a", client), sampleRefresh(now, g, "usr-a", client)
		ok(t, s.CreateTokens(ctx, at, &rt))
		return at, rt
	}
	at1, rt1 := mk(gone.ID)
	cc := sampleAccess(now, "", gone.ID, gone.ID) // a client_credentials token
	ok(t, s.CreateAccessToken(ctx, cc))
	keepAT, keepRT := mk(kept.ID)

	is(t, s.DeleteClient(ctx, "cli-unknown"), store.ErrNotFound)
	if accessRevoked(t, s, at1.Hash) || accessRevoked(t, s, keepAT.Hash) {
		t.Fatal("a failed delete revoked tokens")
	}
	ok(t, s.DeleteClient(ctx, gone.ID))
	if !accessRevoked(t, s, at1.Hash) || !accessRevoked(t, s, cc.Hash) || !refreshRevoked(t, s, rt1.Hash) {
		t.Fatal("the deleted client's tokens are not revoked")
	}
	if accessRevoked(t, s, keepAT.Hash) || refreshRevoked(t, s, keepRT.Hash) {
		t.Fatal("another client's tokens were revoked")
	}
	is(t, s.DeleteClient(ctx, gone.ID), store.ErrNotFound)
}
