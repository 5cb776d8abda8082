package conformance

import (
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// testUserSessions: a user's sessions are listed (unexpired, oldest first)
// and ended all at once except the one kept; other users' are untouched.
func testUserSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	user, other := newID("usr"), newID("usr")
	mk := func(uid string, created time.Time, expires time.Time) store.Session {
		sess := store.Session{Hash: newHash(), UserID: uid, AuthTime: created, AMR: []string{"pwd"}, CreatedAt: created, ExpiresAt: expires}
		ok(t, s.CreateSession(ctx, sess))
		return sess
	}
	first := mk(user, now.Add(-2*time.Hour), now.Add(time.Hour))
	second := mk(user, now.Add(-time.Hour), now.Add(time.Hour))
	mk(user, now.Add(-3*time.Hour), now.Add(-time.Second)) // expired: not listed
	theirs := mk(other, now, now.Add(time.Hour))

	got, err := s.ListUserSessions(ctx, user)
	ok(t, err)
	equal(t, got, []store.Session{first, second})
	none, err := s.ListUserSessions(ctx, newID("usr"))
	ok(t, err)
	equal(t, len(none), 0)

	n, err := s.DeleteUserSessions(ctx, user, second.Hash)
	ok(t, err)
	if n < 1 {
		t.Fatalf("DeleteUserSessions ended %d sessions, want at least 1", n)
	}
	got, err = s.ListUserSessions(ctx, user)
	ok(t, err)
	equal(t, got, []store.Session{second})
	_, err = s.GetSession(ctx, theirs.Hash)
	ok(t, err)
	_, err = s.DeleteUserSessions(ctx, user, store.Hash{})
	ok(t, err)
	_, err = s.GetSession(ctx, second.Hash)
	is(t, err, store.ErrNotFound)
}

func credentialID() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func sampleCredential(now time.Time, userID string) store.WebAuthnCredential {
	return store.WebAuthnCredential{ID: credentialID(), UserID: userID, Name: "laptop", Data: []byte(`{"publicKey":"pQECAyYgASFY"}`),
		SignCount: 0, CreatedAt: now}
}

// testWebAuthnCredentials: round trip, conflicts, per-user listing, and a
// user can delete only their own credential; DeleteUser removes them.
func testWebAuthnCredentials(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	u := sampleUser(now)
	ok(t, s.CreateUser(ctx, u))
	a := sampleCredential(now, u.ID)
	b := sampleCredential(now.Add(time.Second), u.ID)
	b.Name, b.SignCount = "phone", 7
	ok(t, s.AddWebAuthnCredential(ctx, a))
	ok(t, s.AddWebAuthnCredential(ctx, b))
	dup := sampleCredential(now, "someone-else")
	dup.ID = a.ID
	is(t, s.AddWebAuthnCredential(ctx, dup), store.ErrConflict)

	got, err := s.GetWebAuthnCredential(ctx, a.ID)
	ok(t, err)
	equal(t, got, a)
	_, err = s.GetWebAuthnCredential(ctx, credentialID())
	is(t, err, store.ErrNotFound)
	list, err := s.ListWebAuthnCredentials(ctx, u.ID)
	ok(t, err)
	equal(t, list, []store.WebAuthnCredential{a, b})

	// Another user cannot delete it; the owner can, once.
	is(t, s.DeleteWebAuthnCredential(ctx, "someone-else", a.ID), store.ErrNotFound)
	ok(t, s.DeleteWebAuthnCredential(ctx, u.ID, a.ID))
	is(t, s.DeleteWebAuthnCredential(ctx, u.ID, a.ID), store.ErrNotFound)

	ok(t, s.DeleteUser(ctx, u.Username))
	list, err = s.ListWebAuthnCredentials(ctx, u.ID)
	ok(t, err)
	equal(t, len(list), 0)
	_, err = s.GetWebAuthnCredential(ctx, b.ID)
	is(t, err, store.ErrNotFound)
}

// testWebAuthnClone: a use must raise the counter (or keep a counterless
// authenticator at zero); a counter that does not rise flags the
// credential and is refused.
func testWebAuthnClone(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	c := sampleCredential(now, newID("usr"))
	ok(t, s.AddWebAuthnCredential(ctx, c))
	used := now.Add(time.Minute)
	ok(t, s.UseWebAuthnCredential(ctx, c.ID, 0, used)) // no counter: 0 → 0 is fine
	ok(t, s.UseWebAuthnCredential(ctx, c.ID, 5, used))
	got, err := s.GetWebAuthnCredential(ctx, c.ID)
	ok(t, err)
	equal(t, got.SignCount, uint32(5))
	equal(t, got.CloneWarning, false)
	equal(t, got.LastUsedAt.Equal(used.Truncate(time.Microsecond)), true)

	for _, back := range []uint32{5, 4, 0} {
		is(t, s.UseWebAuthnCredential(ctx, c.ID, back, used), store.ErrConflict)
	}
	got, err = s.GetWebAuthnCredential(ctx, c.ID)
	ok(t, err)
	equal(t, got.SignCount, uint32(5))
	equal(t, got.CloneWarning, true)
	is(t, s.UseWebAuthnCredential(ctx, credentialID(), 1, used), store.ErrNotFound)
}

// testConcurrentWebAuthnUse: of concurrent uses reporting the same
// counter exactly one is accepted (an assertion replayed in parallel
// across nodes).
func testConcurrentWebAuthnUse(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	for round := range rounds {
		c := sampleCredential(now, newID("usr"))
		ok(t, s.AddWebAuthnCredential(ctx, c))
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for range n {
			wg.Go(func() {
				err := s.UseWebAuthnCredential(ctx, c.ID, 3, now)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, store.ErrConflict):
					conflicts++
				default:
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || conflicts != n-1 {
			t.Fatalf("round %d: %d accepted, %d refused; want 1 and %d", round, wins, conflicts, n-1)
		}
	}
}

// testUserClients: a user's grants are the clients holding their live
// tokens; revoked, expired and other users' tokens do not count, and
// revoking a client's tokens removes it.
func testUserClients(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	user, other := newID("usr"), newID("usr")
	a, b, c, d := "cli-a-"+newID("x"), "cli-b-"+newID("x"), "cli-c-"+newID("x"), "cli-d-"+newID("x")
	// a: access and refresh token; b: refresh token only (access expired);
	// c: revoked; d: another user's.
	at, rt := sampleAccess(now, newID("grant"), user, a), sampleRefresh(now, newID("grant"), user, a)
	ok(t, s.CreateTokens(ctx, at, &rt))
	expired := sampleAccess(now.Add(-2*time.Hour), newID("grant"), user, b)
	brt := sampleRefresh(now, expired.GrantID, user, b)
	ok(t, s.CreateTokens(ctx, expired, &brt))
	cat := sampleAccess(now, newID("grant"), user, c)
	ok(t, s.CreateTokens(ctx, cat, nil))
	ok(t, s.RevokeUserClientTokens(ctx, user, c))
	dat := sampleAccess(now, newID("grant"), other, d)
	ok(t, s.CreateTokens(ctx, dat, nil))

	got, err := s.ListUserClients(ctx, user)
	ok(t, err)
	equal(t, got, []string{a, b})
	ok(t, s.RevokeUserClientTokens(ctx, user, a))
	got, err = s.ListUserClients(ctx, user)
	ok(t, err)
	equal(t, got, []string{b})
	none, err := s.ListUserClients(ctx, newID("usr"))
	ok(t, err)
	equal(t, len(none), 0)
}
