package conformance

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// testUserSCIM: the SCIM id and attributes round-trip, the user is found
// by its SCIM id, a set SCIM id survives an update that does not name it,
// and a SCIM id is unique.
func testUserSCIM(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	got, err := s.GetUserBySCIMID(ctx, u.SCIMID)
	ok(t, err)
	equal(t, got, u)
	_, err = s.GetUserBySCIMID(ctx, "scim-unknown")
	is(t, err, store.ErrNotFound)

	upd := got
	upd.SCIMID, upd.SCIM = "", `{"active":false}`
	ok(t, s.UpdateUser(ctx, upd))
	got, err = s.GetUserByID(ctx, u.ID)
	ok(t, err)
	if got.SCIMID != u.SCIMID || got.SCIM != `{"active":false}` || got.Version != 2 {
		t.Fatalf("after update: scim id %q attrs %q version %d, want %q, {\"active\":false}, 2", got.SCIMID, got.SCIM, got.Version, u.SCIMID)
	}

	// A user created without a SCIM id gets one with an update.
	bare := sampleUser(base())
	bare.SCIMID = ""
	ok(t, s.CreateUser(ctx, bare))
	bare.SCIMID = newID("scim")
	ok(t, s.UpdateUser(ctx, bare))
	got, err = s.GetUserBySCIMID(ctx, bare.SCIMID)
	ok(t, err)
	if got.ID != bare.ID {
		t.Fatalf("SCIM id %q names user %q, want %q", bare.SCIMID, got.ID, bare.ID)
	}

	dup := sampleUser(base())
	dup.SCIMID = u.SCIMID
	is(t, s.CreateUser(ctx, dup), store.ErrConflict)
}

// testUserVersion: a conditional update with a stale version changes
// nothing and writes no outbox entry.
func testUserVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	first := u
	first.Claims = map[string]string{"name": "first"}
	ok(t, s.UpdateUser(ctx, first)) // version 1 → 2
	stale := u
	stale.Claims = map[string]string{"name": "stale"}
	is(t, s.UpdateUser(ctx, stale), store.ErrStale)
	got, err := s.GetUserByID(ctx, u.ID)
	ok(t, err)
	if got.Claims["name"] != "first" || got.Version != 2 {
		t.Fatalf("after a stale update: name %q version %d, want first, 2", got.Claims["name"], got.Version)
	}
	equal(t, ops(outbox(t, s)), []string{"put:" + u.Username, "put:" + u.Username})
}

// testConcurrentUserVersion: of n updates conditional on the same version
// exactly one wins.
func testConcurrentUserVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, stale := 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := u
			v.Claims = map[string]string{"n": string(rune('a' + i))}
			err := s.UpdateUser(ctx, v)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrStale):
				stale++
			default:
				t.Errorf("update: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || stale != n-1 {
		t.Fatalf("%d updates won and %d were stale, want 1 and %d", wins, stale, n-1)
	}
}

func sampleGroup(now time.Time, members ...string) store.Group {
	id := newID("grp")
	return store.Group{ID: id, DisplayName: "group " + id, ExternalID: "ext-" + id, Members: members,
		CreatedAt: now, UpdatedAt: now.Add(time.Second), Version: 1}
}

func testGroupRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := sampleGroup(base(), "scim-b", "scim-a", "scim-b")
	ok(t, s.CreateGroup(ctx, g))
	got, err := s.GetGroup(ctx, g.ID)
	ok(t, err)
	want := g
	want.Members = []string{"scim-a", "scim-b"} // sorted, no duplicates
	equal(t, got, want)
	empty := sampleGroup(base())
	empty.DisplayName = "a first " + empty.ID
	ok(t, s.CreateGroup(ctx, empty))
	all, err := s.ListGroups(ctx)
	ok(t, err)
	equal(t, all, []store.Group{empty, want})

	_, err = s.GetGroup(ctx, "grp-unknown")
	is(t, err, store.ErrNotFound)
	sameName := sampleGroup(base())
	sameName.DisplayName = g.DisplayName
	is(t, s.CreateGroup(ctx, sameName), store.ErrConflict)
	sameID := sampleGroup(base())
	sameID.ID = g.ID
	is(t, s.CreateGroup(ctx, sameID), store.ErrConflict)
	ok(t, s.DeleteGroup(ctx, g.ID))
	_, err = s.GetGroup(ctx, g.ID)
	is(t, err, store.ErrNotFound)
	is(t, s.DeleteGroup(ctx, g.ID), store.ErrNotFound)
	// A group of the same id starts without the old members.
	again := sampleGroup(base())
	again.ID = g.ID
	ok(t, s.CreateGroup(ctx, again))
	got, err = s.GetGroup(ctx, g.ID)
	ok(t, err)
	if len(got.Members) != 0 {
		t.Fatalf("recreated group has members %v", got.Members)
	}
}

func testGroupUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	g := sampleGroup(now, "scim-a")
	ok(t, s.CreateGroup(ctx, g))
	upd := g
	upd.DisplayName, upd.ExternalID, upd.Members = "renamed "+g.ID, "", []string{"scim-c", "scim-b"}
	upd.CreatedAt, upd.UpdatedAt = now.Add(time.Hour), now.Add(time.Minute)
	ok(t, s.UpdateGroup(ctx, upd))
	got, err := s.GetGroup(ctx, g.ID)
	ok(t, err)
	want := upd
	want.CreatedAt, want.Version, want.Members = g.CreatedAt, 2, []string{"scim-b", "scim-c"}
	equal(t, got, want)
	is(t, s.UpdateGroup(ctx, upd), store.ErrStale) // still version 1
	unknown := sampleGroup(now)
	is(t, s.UpdateGroup(ctx, unknown), store.ErrNotFound)
	other := sampleGroup(now)
	ok(t, s.CreateGroup(ctx, other))
	taken := got
	taken.DisplayName = other.DisplayName
	is(t, s.UpdateGroup(ctx, taken), store.ErrConflict)
}

func testGroupMemberDeleted(t *testing.T, s store.Store) {
	ctx := t.Context()
	u, v := sampleUser(base()), sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	ok(t, s.CreateUser(ctx, v))
	g := sampleGroup(base(), u.SCIMID, v.SCIMID)
	ok(t, s.CreateGroup(ctx, g))
	ok(t, s.DeleteUser(ctx, u.Username))
	got, err := s.GetGroup(ctx, g.ID)
	ok(t, err)
	equal(t, got.Members, []string{v.SCIMID})
}

// testRevokeUserTokens: every token and session of the user ends, another
// user's stay, and the user remains.
func testRevokeUserTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	u, other := sampleUser(now), sampleUser(now)
	ok(t, s.CreateUser(ctx, u))
	ok(t, s.CreateUser(ctx, other))
	at := sampleAccess(now, "", u.ID, "cli-rev")
	ok(t, s.CreateAccessToken(ctx, at))
	rt := sampleRefresh(now, "grant-rev", u.ID, "cli-rev")
	ok(t, s.CreateTokens(ctx, sampleAccess(now, "grant-rev", u.ID, "cli-rev"), &rt))
	sess := store.Session{Hash: newHash(), UserID: u.ID, AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	ok(t, s.CreateSession(ctx, sess))
	keep := sampleAccess(now, "", other.ID, "cli-rev")
	ok(t, s.CreateAccessToken(ctx, keep))
	keepSess := store.Session{Hash: newHash(), UserID: other.ID, AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	ok(t, s.CreateSession(ctx, keepSess))

	ok(t, s.RevokeUserTokens(ctx, u.ID))
	if !accessRevoked(t, s, at.Hash) || !refreshRevoked(t, s, rt.Hash) {
		t.Fatal("the user's tokens are still active")
	}
	_, err := s.GetSession(ctx, sess.Hash)
	is(t, err, store.ErrNotFound)
	if accessRevoked(t, s, keep.Hash) {
		t.Fatal("another user's token was revoked")
	}
	_, err = s.GetSession(ctx, keepSess.Hash)
	ok(t, err)
	_, err = s.GetUserByID(ctx, u.ID)
	ok(t, err)
	ok(t, s.RevokeUserTokens(ctx, "usr-unknown"))
}
