// Package conformance is the behavioural test suite every store.Store
// backend must pass. A backend's tests call Run with a function that opens
// a fresh, migrated, empty store:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func(t *testing.T) store.Store { return openTestStore(t) })
//	}
//
// Run calls open once per subtest; open must register the store's cleanup
// (Close, dropping its database) with t.Cleanup.
package conformance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// Run runs the conformance suite against the backend that open creates.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"User/RoundTrip", testUserRoundTrip},
		{"User/Defaults", testUserDefaults},
		{"User/Conflict", testUserConflict},
		{"User/NotFound", testUserNotFound},
		{"User/Update", testUserUpdate},
		{"User/Rename", testUserRename},
		{"User/List", testUserList},
		{"User/Delete", testUserDelete},
		{"User/SCIM", testUserSCIM},
		{"User/VersionCheck", testUserVersion},
		{"User/RevokeUserTokens", testRevokeUserTokens},
		{"Group/RoundTrip", testGroupRoundTrip},
		{"Group/UpdateAndVersion", testGroupUpdate},
		{"Group/DeleteUserLeavesGroups", testGroupMemberDeleted},
		{"Concurrent/UpdateUserVersion", testConcurrentUserVersion},
		{"Outbox/OrderAndAck", testOutbox},
		{"Outbox/SeqNeverReused", testOutboxSeq},
		{"Client/RoundTrip", testClientRoundTrip},
		{"Client/ConflictAndNotFound", testClientErrors},
		{"Client/Update", testClientUpdate},
		{"Client/DeleteRevokesTokens", testClientDeleteRevokes},
		{"AuthRequest/RoundTrip", testAuthRoundTrip},
		{"AuthRequest/Complete", testAuthComplete},
		{"AuthRequest/Expired", testAuthExpired},
		{"AuthRequest/Delete", testAuthDelete},
		{"Code/SaveCode", testSaveCode},
		{"Code/Redeem", testRedeem},
		{"Code/ReuseRevokesGrant", testRedeemReuse},
		{"Code/NotFound", testRedeemNotFound},
		{"Code/Expired", testRedeemExpired},
		{"AccessToken/RoundTrip", testAccessRoundTrip},
		{"AccessToken/Revoke", testAccessRevoke},
		{"CreateTokens", testCreateTokens},
		{"CreateTokens/Atomic", testCreateTokensAtomic},
		{"RefreshToken/GetAsIs", testRefreshGetAsIs},
		{"RefreshToken/Rotate", testRotate},
		{"RefreshToken/RotateErrors", testRotateErrors},
		{"RefreshToken/Reuse", testRotateReuse},
		{"RefreshToken/RevokeFamily", testRevokeRefresh},
		{"RevokeGrant", testRevokeGrant},
		{"RevokeUserClientTokens", testRevokeUserClient},
		{"Session", testSession},
		{"Session/PerUser", testUserSessions},
		{"UserClients", testUserClients},
		{"WebAuthn/Credentials", testWebAuthnCredentials},
		{"WebAuthn/CloneDetection", testWebAuthnClone},
		{"Concurrent/UseWebAuthnCredential", testConcurrentWebAuthnUse},
		{"SigningKeys", testSigningKeys},
		{"SigningKeyReseal", testSigningKeyReseal},
		{"DeleteExpired", testDeleteExpired},
		{"Concurrent/RedeemCode", testConcurrentRedeem},
		{"Concurrent/RotateRefreshToken", testConcurrentRotate},
		{"Concurrent/CreateUsers", testConcurrentUsers},
		{"Concurrent/Writers", testConcurrentWriters},
		{"Concurrent/Issue", testConcurrentIssue},
		{"Concurrent/IssueFailures", testConcurrentIssueFailures},
		{"Attempts", testAttempts},
		{"TOTPStep", testTOTPStep},
		{"Concurrent/ReserveAttempt", testConcurrentAttempts},
		{"Concurrent/AcceptTOTPStep", testConcurrentTOTPStep},
		{"Ping", testPing},
		{"Generation/ClaimAndFence", testGeneration},
		{"Concurrent/ClaimGeneration", testConcurrentClaim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// n is how many goroutines the concurrency tests run.
const n = 20

// rounds is how often the single-winner races are repeated: one round
// catches a missing lock only some of the time.
const rounds = 10

// --- helpers ---------------------------------------------------------------

// base returns the current time in a non-UTC zone with a sub-microsecond
// part, so round trips check both UTC conversion and precision.
func base() time.Time {
	zone := time.FixedZone("UTC+05:30", 5*3600+30*60)
	return time.Now().In(zone).Truncate(time.Millisecond).Add(123456 * time.Nanosecond)
}

func newID(prefix string) string { return prefix + "-" + rand.Text()[:16] }

func newHash() store.Hash { return store.Digest(rand.Text()) }

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func is(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

// equal compares got with want after truncating times to milliseconds (the
// precision every backend keeps) and treating empty lists and maps as nil.
// Times in got must be in UTC; those of want are converted.
func equal[T any](t *testing.T, got, want T) {
	t.Helper()
	g, w := canon(got, false), canon(want, true)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("mismatch\n got: %+v\nwant: %+v", g, w)
	}
}

func canon[T any](v T, toUTC bool) T {
	canonValue(reflect.ValueOf(&v).Elem(), toUTC)
	return v
}

func canonValue(v reflect.Value, toUTC bool) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			tm := v.Interface().(time.Time)
			if toUTC {
				tm = tm.UTC()
			}
			v.Set(reflect.ValueOf(tm.Truncate(time.Millisecond)))
			return
		}
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				canonValue(v.Field(i), toUTC)
			}
		}
	case reflect.Slice:
		if v.Len() == 0 && v.Type().Elem().Kind() == reflect.String {
			v.SetZero()
			return
		}
		for i := range v.Len() {
			canonValue(v.Index(i), toUTC)
		}
	case reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
		}
	}
}

// eventually waits until cond holds, polling it, or fails after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func uintp(v uint) *uint { return &v }

func sampleUser(now time.Time) store.User {
	id := newID("usr")
	return store.User{
		ID:           id,
		Username:     "user-" + id,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
		Claims:       map[string]string{"name": "Ada Lovelace", "email": "ada@example.org", "locale": "en-GB"},
		TOTPSecret:   "JBSWY3DPEHPK3PXP",
		CreatedAt:    now,
		UpdatedAt:    now.Add(time.Second),
		SCIMID:       newID("scim"),
		SCIM:         `{"active":true,"emails":[{"value":"ada@example.org","type":"work"}]}`,
		Version:      1, // what CreateUser stores
	}
}

func sampleClient(now time.Time) store.Client {
	secret := store.Digest("secret")
	return store.Client{
		ID:                     newID("cli"),
		SecretHash:             secret[:],
		Name:                   "Example App",
		RedirectURIs:           []string{"https://app.example/cb", "https://app.example/cb2"},
		PostLogoutRedirectURIs: []string{"https://app.example/bye"},
		GrantTypes:             []string{"authorization_code", "refresh_token"},
		AuthMethod:             "client_secret_basic",
		AccessTokenFormat:      "jwt",
		JWKS:                   `{"keys":[]}`,
		FirstParty:             true,
		Scopes:                 []string{"openid", "profile"},
		CreatedAt:              now,
	}
}

func sampleAuth(now time.Time, maxAge *uint) store.AuthRequest {
	return store.AuthRequest{
		ID:                  newID("ar"),
		ClientID:            newID("cli"),
		RedirectURI:         "https://app.example/cb",
		Scopes:              []string{"openid", "email"},
		State:               "st-" + rand.Text(),
		Nonce:               "n-" + rand.Text(),
		ResponseType:        "code",
		ResponseMode:        "query",
		CodeChallenge:       "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		CodeChallengeMethod: "S256",
		Prompt:              []string{"login", "consent"},
		MaxAge:              maxAge,
		LoginHint:           "ada",
		UILocales:           []string{"fr-CA", "en"},
		// In the client's order of preference, which must survive.
		ACRValues: []string{"urn:meridian:acr:mfa", "urn:example:loa:2", "urn:meridian:acr:pwd"},
		CreatedAt: now,
		ExpiresAt: now.Add(10 * time.Minute),
	}
}

// completedAuth creates a completed request and returns it.
func completedAuth(t *testing.T, s store.Store, now time.Time) store.AuthRequest {
	t.Helper()
	r := sampleAuth(now, nil)
	r.UserID = newID("usr")
	r.AuthTime = now.Add(-time.Minute)
	r.AMR = []string{"pwd", "otp"}
	r.Done = true
	ok(t, s.CreateAuthRequest(t.Context(), r))
	return r
}

func sampleAccess(now time.Time, grant, subject, client string) store.AccessToken {
	return store.AccessToken{
		Hash:      newHash(),
		ClientID:  client,
		Subject:   subject,
		Audience:  []string{client, "https://api.example"},
		Scopes:    []string{"openid", "email"},
		GrantID:   grant,
		Format:    "opaque",
		AuthTime:  now.Add(-time.Minute),
		AMR:       []string{"pwd"},
		CreatedAt: now,
		ExpiresAt: now.Add(time.Hour),
	}
}

func sampleRefresh(now time.Time, grant, subject, client string) store.RefreshToken {
	return store.RefreshToken{
		Hash:      newHash(),
		GrantID:   grant,
		ClientID:  client,
		Subject:   subject,
		Audience:  []string{client},
		Scopes:    []string{"openid", "offline_access"},
		AuthTime:  now.Add(-time.Minute),
		AMR:       []string{"pwd"},
		CreatedAt: now,
		ExpiresAt: now.Add(24 * time.Hour),
	}
}

// family creates the first tokens of a new grant.
func family(t *testing.T, s store.Store, now time.Time) (store.AccessToken, store.RefreshToken) {
	t.Helper()
	grant, user, client := newID("grant"), newID("usr"), newID("cli")
	at, rt := sampleAccess(now, grant, user, client), sampleRefresh(now, grant, user, client)
	ok(t, s.CreateTokens(t.Context(), at, &rt))
	return at, rt
}

func outbox(t *testing.T, s store.Store) []store.OutboxEntry {
	t.Helper()
	e, err := s.PendingOutbox(t.Context(), 1000)
	ok(t, err)
	return e
}

// ops renders outbox entries as "op:username" for comparison.
func ops(entries []store.OutboxEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Op+":"+e.Username)
	}
	return out
}

func accessRevoked(t *testing.T, s store.Store, h store.Hash) bool {
	t.Helper()
	at, err := s.GetAccessToken(t.Context(), h)
	ok(t, err)
	return at.Revoked
}

func refreshRevoked(t *testing.T, s store.Store, h store.Hash) bool {
	t.Helper()
	rt, err := s.GetRefreshToken(t.Context(), h)
	ok(t, err)
	return rt.Revoked
}

// --- users and outbox -------------------------------------------------------

func testUserRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	got, err := s.GetUserByID(ctx, u.ID)
	ok(t, err)
	equal(t, got, u)
	if got.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt in %v, want UTC", got.CreatedAt.Location())
	}
	got, err = s.GetUserByUsername(ctx, u.Username)
	ok(t, err)
	equal(t, got, u)

	bare := sampleUser(base())
	bare.Claims, bare.TOTPSecret, bare.SCIMID, bare.SCIM = nil, "", "", ""
	ok(t, s.CreateUser(ctx, bare))
	got, err = s.GetUserByID(ctx, bare.ID)
	ok(t, err)
	equal(t, got, bare)
	if len(got.Claims) != 0 {
		t.Fatalf("claims %v, want none", got.Claims)
	}
	equal(t, ops(outbox(t, s)), []string{"put:" + u.Username, "put:" + bare.Username})
}

func testUserDefaults(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	u := sampleUser(time.Time{})
	u.UpdatedAt = time.Time{}
	ok(t, s.CreateUser(ctx, u))
	got, err := s.GetUserByID(ctx, u.ID)
	ok(t, err)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("zero CreatedAt stored as %v, want about now in UTC", got.CreatedAt)
	}
	if !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Fatalf("zero UpdatedAt stored as %v, want CreatedAt %v", got.UpdatedAt, got.CreatedAt)
	}
	e := outbox(t, s)
	if len(e) != 1 || e[0].CreatedAt.Before(before) || e[0].CreatedAt.Location() != time.UTC || e[0].Attempts != 0 {
		t.Fatalf("outbox %+v, want one fresh entry", e)
	}
}

func testUserConflict(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	sameID := sampleUser(base())
	sameID.ID = u.ID
	is(t, s.CreateUser(ctx, sameID), store.ErrConflict)
	sameName := sampleUser(base())
	sameName.Username = u.Username
	is(t, s.CreateUser(ctx, sameName), store.ErrConflict)
	// A failed create writes no outbox entry.
	equal(t, ops(outbox(t, s)), []string{"put:" + u.Username})
}

func testUserNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.GetUserByID(ctx, "usr-unknown")
	is(t, err, store.ErrNotFound)
	_, err = s.GetUserByUsername(ctx, "unknown")
	is(t, err, store.ErrNotFound)
	is(t, s.UpdateUser(ctx, sampleUser(base())), store.ErrNotFound)
	is(t, s.DeleteUser(ctx, "unknown"), store.ErrNotFound)
	if e := outbox(t, s); len(e) != 0 {
		t.Fatalf("failed calls wrote outbox entries %+v", e)
	}
}

func testUserUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	u := sampleUser(now)
	ok(t, s.CreateUser(ctx, u))
	upd := u
	upd.PasswordHash = "$argon2id$v=19$m=65536,t=3,p=4$bmV3c2FsdA$bmV3aGFzaA"
	upd.Claims = map[string]string{"name": "Ada King"}
	upd.TOTPSecret = ""
	upd.CreatedAt = now.Add(time.Hour) // ignored: CreatedAt is immutable
	upd.UpdatedAt = now.Add(time.Minute)
	ok(t, s.UpdateUser(ctx, upd))
	got, err := s.GetUserByID(ctx, u.ID)
	ok(t, err)
	want := upd
	want.CreatedAt = u.CreatedAt
	want.Version = 2
	equal(t, got, want)

	other := sampleUser(now)
	ok(t, s.CreateUser(ctx, other))
	taken := upd
	taken.Username = other.Username
	taken.Version = 0 // unconditional
	is(t, s.UpdateUser(ctx, taken), store.ErrConflict)
	equal(t, ops(outbox(t, s)), []string{"put:" + u.Username, "put:" + u.Username, "put:" + other.Username})
}

func testUserRename(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	renamed := u
	renamed.Username = "renamed-" + u.ID
	ok(t, s.UpdateUser(ctx, renamed))
	_, err := s.GetUserByUsername(ctx, u.Username)
	is(t, err, store.ErrNotFound)
	got, err := s.GetUserByUsername(ctx, renamed.Username)
	ok(t, err)
	renamed.Version = 2
	equal(t, got, renamed)
	equal(t, ops(outbox(t, s)), []string{"put:" + u.Username, "delete:" + u.Username, "put:" + renamed.Username})
}

func testUserList(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Byte order: upper case < '_' < lower case.
	names := []string{"bob", "Alice", "alice", "carol", "_x", "zed", "ålesund"}
	for _, name := range names {
		u := sampleUser(base())
		u.Username = name
		ok(t, s.CreateUser(ctx, u))
	}
	want := slices.Clone(names)
	slices.Sort(want)
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > len(names) {
			t.Fatal("ListUsers does not advance")
		}
		page, err := s.ListUsers(ctx, after, 2)
		ok(t, err)
		if len(page) > 2 {
			t.Fatalf("page of %d users, limit 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, u := range page {
			got = append(got, u.Username)
		}
		after = page[len(page)-1].Username
	}
	equal(t, got, want)
	all, err := s.ListUsers(ctx, "", 100)
	ok(t, err)
	if len(all) != len(names) {
		t.Fatalf("ListUsers(100) gave %d users, want %d", len(all), len(names))
	}
	none, err := s.ListUsers(ctx, "", 0)
	ok(t, err)
	if len(none) != 0 {
		t.Fatalf("ListUsers(limit 0) gave %d users", len(none))
	}
}

func testUserDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	// Tokens and a session of the user end with the account.
	now := base()
	at := sampleAccess(now, "", u.ID, "cli-del")
	ok(t, s.CreateAccessToken(ctx, at))
	rt := sampleRefresh(now, "grant-del", u.ID, "cli-del")
	ok(t, s.CreateTokens(ctx, sampleAccess(now, "grant-del", u.ID, "cli-del"), &rt))
	sess := store.Session{Hash: newHash(), UserID: u.ID, AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	ok(t, s.CreateSession(ctx, sess))
	ok(t, s.DeleteUser(ctx, u.Username))
	if got, err := s.GetAccessToken(ctx, at.Hash); err != nil || !got.Revoked {
		t.Fatalf("access token of a deleted user: revoked=%v err=%v", got.Revoked, err)
	}
	if got, err := s.GetRefreshToken(ctx, rt.Hash); err != nil || !got.Revoked {
		t.Fatalf("refresh token of a deleted user: revoked=%v err=%v", got.Revoked, err)
	}
	_, err0 := s.GetSession(ctx, sess.Hash)
	is(t, err0, store.ErrNotFound)
	_, err := s.GetUserByID(ctx, u.ID)
	is(t, err, store.ErrNotFound)
	is(t, s.DeleteUser(ctx, u.Username), store.ErrNotFound)
	// The username is free again.
	again := sampleUser(base())
	again.Username = u.Username
	ok(t, s.CreateUser(ctx, again))
	equal(t, ops(outbox(t, s)), []string{"put:" + u.Username, "delete:" + u.Username, "put:" + u.Username})
}

func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	var users []store.User
	for range 4 {
		u := sampleUser(base())
		ok(t, s.CreateUser(ctx, u))
		users = append(users, u)
	}
	ok(t, s.DeleteUser(ctx, users[1].Username))
	all := outbox(t, s)
	equal(t, ops(all), []string{"put:" + users[0].Username, "put:" + users[1].Username, "put:" + users[2].Username,
		"put:" + users[3].Username, "delete:" + users[1].Username})
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("outbox not in Seq order: %+v", all)
		}
	}
	first, err := s.PendingOutbox(ctx, 2)
	ok(t, err)
	equal(t, first, all[:2])
	none, err := s.PendingOutbox(ctx, 0)
	ok(t, err)
	if len(none) != 0 {
		t.Fatalf("PendingOutbox(0) gave %d entries", len(none))
	}
	ok(t, s.AckOutbox(ctx, all[0].Seq))
	ok(t, s.AckOutbox(ctx, all[2].Seq))
	is(t, s.AckOutbox(ctx, all[0].Seq), store.ErrNotFound)
	is(t, s.AckOutbox(ctx, -1), store.ErrNotFound)
	rest := outbox(t, s)
	equal(t, rest, []store.OutboxEntry{all[1], all[3], all[4]})
}

func testOutboxSeq(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok(t, s.CreateUser(ctx, sampleUser(base())))
	ok(t, s.CreateUser(ctx, sampleUser(base())))
	e := outbox(t, s)
	for _, x := range e {
		ok(t, s.AckOutbox(ctx, x.Seq))
	}
	ok(t, s.CreateUser(ctx, sampleUser(base())))
	next := outbox(t, s)
	if len(next) != 1 || next[0].Seq <= e[len(e)-1].Seq {
		t.Fatalf("after acking up to seq %d the next entry is %+v, want a larger seq", e[len(e)-1].Seq, next)
	}
}

// --- clients ----------------------------------------------------------------

func testClientRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	conf := sampleClient(base())
	pub := store.Client{
		ID:         newID("cli"),
		Name:       "SPA",
		GrantTypes: []string{"authorization_code"},
		AuthMethod: "none",
		CreatedAt:  base(),
	}
	ok(t, s.CreateClient(ctx, conf))
	ok(t, s.CreateClient(ctx, pub))
	got, err := s.GetClient(ctx, conf.ID)
	ok(t, err)
	equal(t, got, conf)
	got, err = s.GetClient(ctx, pub.ID)
	ok(t, err)
	equal(t, got, pub)
	if got.SecretHash != nil {
		t.Fatalf("public client SecretHash %x, want nil", got.SecretHash)
	}
	list, err := s.ListClients(ctx)
	ok(t, err)
	want := []store.Client{conf, pub}
	slices.SortFunc(want, func(a, b store.Client) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	equal(t, list, want)
	ok(t, s.DeleteClient(ctx, conf.ID))
	_, err = s.GetClient(ctx, conf.ID)
	is(t, err, store.ErrNotFound)
	list, err = s.ListClients(ctx)
	ok(t, err)
	equal(t, list, []store.Client{pub})
}

func testClientErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := sampleClient(base())
	ok(t, s.CreateClient(ctx, c))
	dup := sampleClient(base())
	dup.ID = c.ID
	is(t, s.CreateClient(ctx, dup), store.ErrConflict)
	_, err := s.GetClient(ctx, "cli-unknown")
	is(t, err, store.ErrNotFound)
	is(t, s.DeleteClient(ctx, "cli-unknown"), store.ErrNotFound)
	got, err := s.GetClient(ctx, c.ID)
	ok(t, err)
	equal(t, got, c)
}

// --- authorization requests and codes ---------------------------------------

func testAuthRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, age := range []*uint{nil, uintp(0), uintp(300)} {
		r := sampleAuth(base(), age)
		ok(t, s.CreateAuthRequest(ctx, r))
		got, err := s.GetAuthRequest(ctx, r.ID)
		ok(t, err)
		equal(t, got, r)
		switch {
		case age == nil && got.MaxAge != nil:
			t.Fatalf("MaxAge nil came back as %d", *got.MaxAge)
		case age != nil && (got.MaxAge == nil || *got.MaxAge != *age):
			t.Fatalf("MaxAge %d came back as %v", *age, got.MaxAge)
		}
		if !got.AuthTime.IsZero() || got.Done {
			t.Fatalf("pending request came back with AuthTime %v, Done %v", got.AuthTime, got.Done)
		}
	}
	r := sampleAuth(base(), nil)
	r.Scopes, r.Prompt, r.UILocales, r.ACRValues = nil, nil, nil, nil
	ok(t, s.CreateAuthRequest(ctx, r))
	got, err := s.GetAuthRequest(ctx, r.ID)
	ok(t, err)
	equal(t, got, r)
	is(t, s.CreateAuthRequest(ctx, r), store.ErrConflict)
	_, err = s.GetAuthRequest(ctx, "ar-unknown")
	is(t, err, store.ErrNotFound)
}

func testAuthComplete(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	r := sampleAuth(now, uintp(60))
	ok(t, s.CreateAuthRequest(ctx, r))
	authTime := now.Add(-30 * time.Second)
	ok(t, s.CompleteAuthRequest(ctx, r.ID, "usr-1", authTime, []string{"pwd", "otp"}))
	got, err := s.GetAuthRequest(ctx, r.ID)
	ok(t, err)
	want := r
	want.UserID, want.AuthTime, want.AMR, want.Done = "usr-1", authTime, []string{"pwd", "otp"}, true
	equal(t, got, want)
	is(t, s.CompleteAuthRequest(ctx, "ar-unknown", "usr-1", authTime, nil), store.ErrNotFound)
}

func testAuthExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := sampleAuth(base().Add(-time.Hour), nil)
	ok(t, s.CreateAuthRequest(ctx, r))
	_, err := s.GetAuthRequest(ctx, r.ID)
	is(t, err, store.ErrNotFound)
	is(t, s.CompleteAuthRequest(ctx, r.ID, "usr-1", base(), []string{"pwd"}), store.ErrNotFound)
}

func testAuthDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := sampleAuth(base(), nil)
	ok(t, s.CreateAuthRequest(ctx, r))
	ok(t, s.DeleteAuthRequest(ctx, r.ID))
	_, err := s.GetAuthRequest(ctx, r.ID)
	is(t, err, store.ErrNotFound)
	is(t, s.DeleteAuthRequest(ctx, r.ID), store.ErrNotFound)
}

func testSaveCode(t *testing.T, s store.Store) {
	ctx := t.Context()
	is(t, s.SaveCode(ctx, "ar-unknown", newHash()), store.ErrNotFound)

	pending := sampleAuth(base(), nil)
	ok(t, s.CreateAuthRequest(ctx, pending))
	is(t, s.SaveCode(ctx, pending.ID, newHash()), store.ErrNotFound) // not completed

	expired := sampleAuth(base().Add(-time.Hour), nil)
	expired.Done, expired.UserID = true, "usr-1"
	ok(t, s.CreateAuthRequest(ctx, expired))
	is(t, s.SaveCode(ctx, expired.ID, newHash()), store.ErrNotFound)

	r := completedAuth(t, s, base())
	code := newHash()
	ok(t, s.SaveCode(ctx, r.ID, code))
	is(t, s.SaveCode(ctx, r.ID, newHash()), store.ErrConflict) // one code per request
	// Once a code is out, the request's user cannot change.
	is(t, s.CompleteAuthRequest(ctx, r.ID, "usr-other", base(), []string{"pwd"}), store.ErrConflict)

	other := completedAuth(t, s, base())
	is(t, s.SaveCode(ctx, other.ID, code), store.ErrConflict) // digest taken
	got, err := s.RedeemCode(ctx, code)
	ok(t, err)
	if got.ID != r.ID {
		t.Fatalf("code redeemed request %s, want %s", got.ID, r.ID)
	}
}

func testRedeem(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := completedAuth(t, s, base())
	code := newHash()
	ok(t, s.SaveCode(ctx, r.ID, code))
	// Reading by code changes nothing: the code still redeems once.
	peek, err := s.GetAuthRequestByCode(ctx, code)
	ok(t, err)
	equal(t, peek, r)
	_, err = s.GetAuthRequestByCode(ctx, newHash())
	is(t, err, store.ErrNotFound)
	got, err := s.RedeemCode(ctx, code)
	ok(t, err)
	equal(t, got, r)
	// A redeemed code is still readable (its replay must reach RedeemCode
	// to revoke the grant).
	peek, err = s.GetAuthRequestByCode(ctx, code)
	ok(t, err)
	if peek.ID != r.ID {
		t.Fatalf("GetAuthRequestByCode after redemption = %s, want %s", peek.ID, r.ID)
	}
	_, err = s.RedeemCode(ctx, code)
	is(t, err, store.ErrAlreadyUsed)
	_, err = s.RedeemCode(ctx, code)
	is(t, err, store.ErrAlreadyUsed)
}

func testRedeemReuse(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	r := completedAuth(t, s, now)
	code := newHash()
	ok(t, s.SaveCode(ctx, r.ID, code))
	_, err := s.RedeemCode(ctx, code)
	ok(t, err)
	at, rt := sampleAccess(now, r.ID, r.UserID, r.ClientID), sampleRefresh(now, r.ID, r.UserID, r.ClientID)
	ok(t, s.CreateTokens(ctx, at, &rt))
	at2, rt2 := sampleAccess(now, r.ID, r.UserID, r.ClientID), sampleRefresh(now, r.ID, r.UserID, r.ClientID)
	ok(t, s.RotateRefreshToken(ctx, rt.Hash, at2, rt2))
	otherAT, otherRT := family(t, s, now)

	_, err = s.RedeemCode(ctx, code)
	is(t, err, store.ErrAlreadyUsed)
	// The revocation was committed although the call failed.
	for _, h := range []store.Hash{at.Hash, at2.Hash} {
		if !accessRevoked(t, s, h) {
			t.Fatal("access token of the reused code's grant not revoked")
		}
	}
	for _, h := range []store.Hash{rt.Hash, rt2.Hash} {
		if !refreshRevoked(t, s, h) {
			t.Fatal("refresh token of the reused code's grant not revoked")
		}
	}
	if accessRevoked(t, s, otherAT.Hash) || refreshRevoked(t, s, otherRT.Hash) {
		t.Fatal("tokens of another grant revoked")
	}
	// No token of the grant can be issued any more.
	late := sampleAccess(now, r.ID, r.UserID, r.ClientID)
	is(t, s.CreateTokens(ctx, late, nil), store.ErrRevoked)
	is(t, s.CreateAccessToken(ctx, late), store.ErrRevoked)
	_, err = s.GetAccessToken(ctx, late.Hash)
	is(t, err, store.ErrNotFound)
}

func testRedeemNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.RedeemCode(ctx, newHash())
	is(t, err, store.ErrNotFound)
	// A completed request without a saved code cannot be redeemed.
	completedAuth(t, s, base())
	_, err = s.RedeemCode(ctx, store.Hash{})
	is(t, err, store.ErrNotFound)
}

func testRedeemExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := completedAuth(t, s, base().Add(-10*time.Minute+500*time.Millisecond)) // expires in 0.5 s
	code := newHash()
	ok(t, s.SaveCode(ctx, r.ID, code))
	eventually(t, 10*time.Second, "the request to expire", func() bool {
		_, err := s.GetAuthRequest(ctx, r.ID)
		return errors.Is(err, store.ErrNotFound)
	})
	_, err := s.RedeemCode(ctx, code)
	is(t, err, store.ErrNotFound)
}

// --- access and refresh tokens ----------------------------------------------

func testAccessRoundTrip(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	at := sampleAccess(now, newID("grant"), "usr-1", "cli-1")
	ok(t, s.CreateAccessToken(ctx, at))
	got, err := s.GetAccessToken(ctx, at.Hash)
	ok(t, err)
	equal(t, got, at)
	is(t, s.CreateAccessToken(ctx, at), store.ErrConflict)

	cc := sampleAccess(now, "", "cli-1", "cli-1") // client_credentials: no grant
	cc.Format, cc.AuthTime, cc.AMR, cc.Audience = "jwt", time.Time{}, nil, nil
	ok(t, s.CreateAccessToken(ctx, cc))
	got, err = s.GetAccessToken(ctx, cc.Hash)
	ok(t, err)
	equal(t, got, cc)
	if !got.AuthTime.IsZero() {
		t.Fatalf("zero AuthTime came back as %v", got.AuthTime)
	}

	expired := sampleAccess(now.Add(-2*time.Hour), "", "cli-1", "cli-1")
	ok(t, s.CreateAccessToken(ctx, expired))
	got, err = s.GetAccessToken(ctx, expired.Hash)
	ok(t, err) // expired tokens are returned as they are
	equal(t, got, expired)

	_, err = s.GetAccessToken(ctx, newHash())
	is(t, err, store.ErrNotFound)
}

func testAccessRevoke(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := sampleAccess(base(), newID("grant"), "usr-1", "cli-1")
	other := sampleAccess(base(), at.GrantID, "usr-1", "cli-1")
	ok(t, s.CreateAccessToken(ctx, at))
	ok(t, s.CreateAccessToken(ctx, other))
	ok(t, s.RevokeAccessToken(ctx, at.Hash))
	got, err := s.GetAccessToken(ctx, at.Hash)
	ok(t, err) // revoked tokens are returned as they are
	if !got.Revoked {
		t.Fatal("revoked token not marked revoked")
	}
	if accessRevoked(t, s, other.Hash) {
		t.Fatal("RevokeAccessToken revoked another token of the grant")
	}
	ok(t, s.RevokeAccessToken(ctx, at.Hash))
	is(t, s.RevokeAccessToken(ctx, newHash()), store.ErrNotFound)
}

func testCreateTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	at := sampleAccess(now, newID("grant"), "usr-1", "cli-1")
	ok(t, s.CreateTokens(ctx, at, nil))
	got, err := s.GetAccessToken(ctx, at.Hash)
	ok(t, err)
	equal(t, got, at)

	at2, rt2 := family(t, s, now)
	gotAT, err := s.GetAccessToken(ctx, at2.Hash)
	ok(t, err)
	equal(t, gotAT, at2)
	gotRT, err := s.GetRefreshToken(ctx, rt2.Hash)
	ok(t, err)
	equal(t, gotRT, rt2)
	_, err = s.GetRefreshToken(ctx, newHash())
	is(t, err, store.ErrNotFound)
}

func testCreateTokensAtomic(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	_, rt := family(t, s, now)
	at := sampleAccess(now, rt.GrantID, rt.Subject, rt.ClientID)
	dup := sampleRefresh(now, rt.GrantID, rt.Subject, rt.ClientID)
	dup.Hash = rt.Hash
	is(t, s.CreateTokens(ctx, at, &dup), store.ErrConflict)
	_, err := s.GetAccessToken(ctx, at.Hash)
	is(t, err, store.ErrNotFound) // the access token was rolled back
}

func testRefreshGetAsIs(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	_, rt := family(t, s, now)
	next := sampleRefresh(now, rt.GrantID, rt.Subject, rt.ClientID)
	ok(t, s.RotateRefreshToken(ctx, rt.Hash, sampleAccess(now, rt.GrantID, rt.Subject, rt.ClientID), next))
	got, err := s.GetRefreshToken(ctx, rt.Hash)
	ok(t, err)
	want := rt
	want.Used = true
	equal(t, got, want)
	ok(t, s.RevokeRefreshToken(ctx, next.Hash))
	got, err = s.GetRefreshToken(ctx, next.Hash)
	ok(t, err)
	want = next
	want.Revoked = true
	equal(t, got, want)

	expired := sampleRefresh(now.Add(-48*time.Hour), newID("grant"), "usr-1", "cli-1")
	ok(t, s.CreateTokens(ctx, sampleAccess(now, expired.GrantID, "usr-1", "cli-1"), &expired))
	got, err = s.GetRefreshToken(ctx, expired.Hash)
	ok(t, err)
	equal(t, got, expired)
}

func testRotate(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	at0, rt0 := family(t, s, now)
	at1 := sampleAccess(now, "", rt0.Subject, rt0.ClientID) // GrantID filled in from rt0
	rt1 := sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	ok(t, s.RotateRefreshToken(ctx, rt0.Hash, at1, rt1))
	old, err := s.GetRefreshToken(ctx, rt0.Hash)
	ok(t, err)
	if !old.Used || old.Revoked {
		t.Fatalf("rotated token: used %v revoked %v, want used and not revoked", old.Used, old.Revoked)
	}
	gotAT, err := s.GetAccessToken(ctx, at1.Hash)
	ok(t, err)
	at1.GrantID = rt0.GrantID
	equal(t, gotAT, at1)
	gotRT, err := s.GetRefreshToken(ctx, rt1.Hash)
	ok(t, err)
	equal(t, gotRT, rt1)
	if accessRevoked(t, s, at0.Hash) {
		t.Fatal("rotation revoked the earlier access token")
	}
	// The successor rotates in turn.
	rt2 := sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	ok(t, s.RotateRefreshToken(ctx, rt1.Hash, sampleAccess(now, rt0.GrantID, rt0.Subject, rt0.ClientID), rt2))
}

func testRotateErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	_, rt := family(t, s, now)
	at := sampleAccess(now, rt.GrantID, rt.Subject, rt.ClientID)
	next := sampleRefresh(now, rt.GrantID, rt.Subject, rt.ClientID)
	is(t, s.RotateRefreshToken(ctx, newHash(), at, next), store.ErrNotFound)

	// A successor in another grant is refused and nothing is written.
	foreign := sampleRefresh(now, newID("grant"), rt.Subject, rt.ClientID)
	if err := s.RotateRefreshToken(ctx, rt.Hash, at, foreign); err == nil {
		t.Fatal("rotation into another grant succeeded")
	}
	got, err := s.GetRefreshToken(ctx, rt.Hash)
	ok(t, err)
	if got.Used {
		t.Fatal("refused rotation marked the token used")
	}
	_, err = s.GetAccessToken(ctx, at.Hash)
	is(t, err, store.ErrNotFound)

	// A successor whose digest exists is a conflict and rolls back.
	dup := next
	dup.Hash = rt.Hash
	is(t, s.RotateRefreshToken(ctx, rt.Hash, at, dup), store.ErrConflict)
	got, err = s.GetRefreshToken(ctx, rt.Hash)
	ok(t, err)
	if got.Used {
		t.Fatal("failed rotation marked the token used")
	}
	ok(t, s.RotateRefreshToken(ctx, rt.Hash, at, next))
}

func testRotateReuse(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	at0, rt0 := family(t, s, now)
	otherAT, otherRT := family(t, s, now)
	at1 := sampleAccess(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	rt1 := sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	ok(t, s.RotateRefreshToken(ctx, rt0.Hash, at1, rt1))

	at2 := sampleAccess(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	rt2 := sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	is(t, s.RotateRefreshToken(ctx, rt0.Hash, at2, rt2), store.ErrAlreadyUsed)
	for _, h := range []store.Hash{at0.Hash, at1.Hash} {
		if !accessRevoked(t, s, h) {
			t.Fatal("reuse left an access token of the family active")
		}
	}
	for _, h := range []store.Hash{rt0.Hash, rt1.Hash} {
		if !refreshRevoked(t, s, h) {
			t.Fatal("reuse left a refresh token of the family active")
		}
	}
	_, err := s.GetRefreshToken(ctx, rt2.Hash)
	is(t, err, store.ErrNotFound) // the reuse attempt inserted nothing
	if accessRevoked(t, s, otherAT.Hash) || refreshRevoked(t, s, otherRT.Hash) {
		t.Fatal("reuse revoked another family")
	}
	// The legitimate successor is dead too.
	is(t, s.RotateRefreshToken(ctx, rt1.Hash, at2, rt2), store.ErrRevoked)
	// Presenting the reused token again is still reuse.
	is(t, s.RotateRefreshToken(ctx, rt0.Hash, at2, rt2), store.ErrAlreadyUsed)
	// And the family cannot grow.
	is(t, s.CreateTokens(ctx, at2, &rt2), store.ErrRevoked)
}

func testRevokeRefresh(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	at0, rt0 := family(t, s, now)
	at1 := sampleAccess(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	rt1 := sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	ok(t, s.RotateRefreshToken(ctx, rt0.Hash, at1, rt1))
	otherAT, otherRT := family(t, s, now)

	ok(t, s.RevokeRefreshToken(ctx, rt1.Hash))
	for _, h := range []store.Hash{at0.Hash, at1.Hash} {
		if !accessRevoked(t, s, h) {
			t.Fatal("RevokeRefreshToken left an access token of the family active")
		}
	}
	for _, h := range []store.Hash{rt0.Hash, rt1.Hash} {
		if !refreshRevoked(t, s, h) {
			t.Fatal("RevokeRefreshToken left a refresh token of the family active")
		}
	}
	if accessRevoked(t, s, otherAT.Hash) || refreshRevoked(t, s, otherRT.Hash) {
		t.Fatal("RevokeRefreshToken revoked another family")
	}
	next := sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	is(t, s.RotateRefreshToken(ctx, rt1.Hash, sampleAccess(now, rt0.GrantID, rt0.Subject, rt0.ClientID), next), store.ErrRevoked)
	is(t, s.RevokeRefreshToken(ctx, newHash()), store.ErrNotFound)
}

func testRevokeGrant(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	at, rt := family(t, s, now)
	extra := sampleAccess(now, at.GrantID, at.Subject, at.ClientID)
	ok(t, s.CreateAccessToken(ctx, extra))
	otherAT, otherRT := family(t, s, now)
	cc := sampleAccess(now, "", "cli-1", "cli-1")
	ok(t, s.CreateAccessToken(ctx, cc))

	ok(t, s.RevokeGrant(ctx, at.GrantID))
	if !accessRevoked(t, s, at.Hash) || !accessRevoked(t, s, extra.Hash) || !refreshRevoked(t, s, rt.Hash) {
		t.Fatal("RevokeGrant left a token of the grant active")
	}
	if accessRevoked(t, s, otherAT.Hash) || refreshRevoked(t, s, otherRT.Hash) || accessRevoked(t, s, cc.Hash) {
		t.Fatal("RevokeGrant revoked tokens of other grants")
	}
	is(t, s.CreateTokens(ctx, sampleAccess(now, at.GrantID, at.Subject, at.ClientID), nil), store.ErrRevoked)
	// Revoking a grant without tokens is no error, and it cannot gain any.
	g := newID("grant")
	ok(t, s.RevokeGrant(ctx, g))
	is(t, s.CreateAccessToken(ctx, sampleAccess(now, g, "usr-1", "cli-1")), store.ErrRevoked)
	is(t, s.RevokeGrant(ctx, ""), store.ErrNotFound)
	if accessRevoked(t, s, cc.Hash) {
		t.Fatal("RevokeGrant(\"\") revoked client_credentials tokens")
	}
}

func testRevokeUserClient(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	mk := func(user, client string) (store.AccessToken, store.RefreshToken) {
		g := newID("grant")
		at, rt := sampleAccess(now, g, user, client), sampleRefresh(now, g, user, client)
		ok(t, s.CreateTokens(ctx, at, &rt))
		return at, rt
	}
	at1, rt1 := mk("usr-a", "cli-x")
	at2, rt2 := mk("usr-a", "cli-x")
	keepAT1, keepRT1 := mk("usr-a", "cli-y")
	keepAT2, keepRT2 := mk("usr-b", "cli-x")

	ok(t, s.RevokeUserClientTokens(ctx, "usr-a", "cli-x"))
	for _, h := range []store.Hash{at1.Hash, at2.Hash} {
		if !accessRevoked(t, s, h) {
			t.Fatal("access token of the user at the client not revoked")
		}
	}
	for _, h := range []store.Hash{rt1.Hash, rt2.Hash} {
		if !refreshRevoked(t, s, h) {
			t.Fatal("refresh token of the user at the client not revoked")
		}
	}
	if accessRevoked(t, s, keepAT1.Hash) || accessRevoked(t, s, keepAT2.Hash) ||
		refreshRevoked(t, s, keepRT1.Hash) || refreshRevoked(t, s, keepRT2.Hash) {
		t.Fatal("tokens of another user or client revoked")
	}
	next := sampleRefresh(now, rt1.GrantID, rt1.Subject, rt1.ClientID)
	is(t, s.RotateRefreshToken(ctx, rt1.Hash, sampleAccess(now, rt1.GrantID, "usr-a", "cli-x"), next), store.ErrRevoked)
	ok(t, s.RevokeUserClientTokens(ctx, "usr-nobody", "cli-x"))
}

// --- sessions and keys ------------------------------------------------------

func testSession(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	sess := store.Session{
		Hash:      newHash(),
		UserID:    "usr-1",
		AuthTime:  now.Add(-time.Minute),
		AMR:       []string{"pwd", "otp"},
		CreatedAt: now,
		ExpiresAt: now.Add(8 * time.Hour),
	}
	ok(t, s.CreateSession(ctx, sess))
	got, err := s.GetSession(ctx, sess.Hash)
	ok(t, err)
	equal(t, got, sess)
	is(t, s.CreateSession(ctx, sess), store.ErrConflict)
	_, err = s.GetSession(ctx, newHash())
	is(t, err, store.ErrNotFound)

	expired := sess
	expired.Hash, expired.ExpiresAt = newHash(), now.Add(-time.Second)
	ok(t, s.CreateSession(ctx, expired))
	_, err = s.GetSession(ctx, expired.Hash)
	is(t, err, store.ErrNotFound)

	ok(t, s.DeleteSession(ctx, sess.Hash))
	_, err = s.GetSession(ctx, sess.Hash)
	is(t, err, store.ErrNotFound)
	is(t, s.DeleteSession(ctx, sess.Hash), store.ErrNotFound)
}

func testSigningKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	key := func(id string, created time.Time, active bool) store.SigningKey {
		return store.SigningKey{ID: id, Algorithm: "ES256", PrivateDER: []byte("der-" + id), KEKID: "kek-1",
			CreatedAt: created, NotBefore: created.Add(time.Minute), Active: active}
	}
	k1 := key("eu-1", now.Add(-3*time.Hour), true)
	k2 := key("eu-2", now.Add(-2*time.Hour), false)
	k3 := key("eu-3", now.Add(-time.Hour), false)
	ok(t, s.AddSigningKey(ctx, k1))
	ok(t, s.AddSigningKey(ctx, k2))
	ok(t, s.AddSigningKey(ctx, k3))
	is(t, s.AddSigningKey(ctx, key("eu-1", now, false)), store.ErrConflict)
	is(t, s.AddSigningKey(ctx, key("eu-9", now, true)), store.ErrConflict) // a second active key

	list, err := s.ListSigningKeys(ctx, now)
	ok(t, err)
	equal(t, list, []store.SigningKey{k1}) // k2, k3 are not published yet

	until := now.Add(24 * time.Hour)
	ok(t, s.ActivateSigningKey(ctx, k2.ID, until))
	list, err = s.ListSigningKeys(ctx, now)
	ok(t, err)
	retired1 := k1
	retired1.Active, retired1.NotAfter = false, until
	active2 := k2
	active2.Active = true
	equal(t, list, []store.SigningKey{active2, retired1})
	if !list[0].NotAfter.IsZero() {
		t.Fatalf("active key NotAfter %v, want zero", list[0].NotAfter)
	}

	// Activating the active key changes nothing.
	ok(t, s.ActivateSigningKey(ctx, k2.ID, now))
	again, err := s.ListSigningKeys(ctx, now)
	ok(t, err)
	equal(t, again, list)

	// A retired key stops being listed at its NotAfter.
	ok(t, s.ActivateSigningKey(ctx, k3.ID, now.Add(time.Hour)))
	list, err = s.ListSigningKeys(ctx, now)
	ok(t, err)
	retired2 := k2
	retired2.NotAfter = now.Add(time.Hour)
	active3 := k3
	active3.Active = true
	equal(t, list, []store.SigningKey{active3, retired2, retired1})
	list, err = s.ListSigningKeys(ctx, now.Add(2*time.Hour))
	ok(t, err)
	equal(t, list, []store.SigningKey{active3, retired1})
	list, err = s.ListSigningKeys(ctx, until)
	ok(t, err)
	equal(t, list, []store.SigningKey{active3})

	is(t, s.ActivateSigningKey(ctx, "eu-unknown", until), store.ErrNotFound)
	list, err = s.ListSigningKeys(ctx, until)
	ok(t, err)
	equal(t, list, []store.SigningKey{active3})
}

// testSigningKeyReseal covers the in-place sealing of a legacy plaintext
// key and a KEK rotation: the material and KEK id change together, only
// while the row is still sealed by the expected KEK.
func testSigningKeyReseal(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	// A legacy row: no KEK, no NotBefore (stored as CreatedAt).
	legacy := store.SigningKey{ID: "eu-legacy", Algorithm: "ES256", PrivateDER: []byte("plain"), CreatedAt: now.Add(-time.Hour), Active: true}
	ok(t, s.AddSigningKey(ctx, legacy))
	list, err := s.ListSigningKeys(ctx, now)
	ok(t, err)
	want := legacy
	want.NotBefore = legacy.CreatedAt
	equal(t, list, []store.SigningKey{want})

	ok(t, s.ResealSigningKey(ctx, legacy.ID, "", []byte("sealed-1"), "kek-1"))
	// A second node migrating the same row from plaintext loses the race.
	is(t, s.ResealSigningKey(ctx, legacy.ID, "", []byte("sealed-other"), "kek-other"), store.ErrConflict)
	list, err = s.ListSigningKeys(ctx, now)
	ok(t, err)
	want.PrivateDER, want.KEKID = []byte("sealed-1"), "kek-1"
	equal(t, list, []store.SigningKey{want})

	ok(t, s.ResealSigningKey(ctx, legacy.ID, "kek-1", []byte("sealed-2"), "kek-2"))
	list, err = s.ListSigningKeys(ctx, now)
	ok(t, err)
	want.PrivateDER, want.KEKID = []byte("sealed-2"), "kek-2"
	equal(t, list, []store.SigningKey{want})

	is(t, s.ResealSigningKey(ctx, "eu-unknown", "", []byte("x"), "kek-1"), store.ErrNotFound)
}

func testDeleteExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	cut := now.Add(90 * time.Minute) // DeleteExpired(cut) runs "in the future"

	oldReq := sampleAuth(now, nil) // expires at now+10m
	ok(t, s.CreateAuthRequest(ctx, oldReq))
	newReq := sampleAuth(now.Add(2*time.Hour), nil)
	ok(t, s.CreateAuthRequest(ctx, newReq))

	oldAT, oldRT := family(t, s, now) // access expires at now+1h, refresh at now+24h
	usedRT := sampleRefresh(now, oldRT.GrantID, oldRT.Subject, oldRT.ClientID)
	ok(t, s.RotateRefreshToken(ctx, oldRT.Hash, sampleAccess(now, "", oldRT.Subject, oldRT.ClientID), usedRT))
	ok(t, s.RevokeRefreshToken(ctx, usedRT.Hash))
	deadRT := sampleRefresh(now.Add(-25*time.Hour), newID("grant"), "usr-1", "cli-1")
	liveAT := sampleAccess(now.Add(time.Hour), "", "cli-1", "cli-1")
	ok(t, s.CreateTokens(ctx, liveAT, &deadRT))

	oldSess := store.Session{Hash: newHash(), UserID: "usr-1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	newSess := store.Session{Hash: newHash(), UserID: "usr-1", CreatedAt: now, ExpiresAt: now.Add(2 * time.Hour)}
	ok(t, s.CreateSession(ctx, oldSess))
	ok(t, s.CreateSession(ctx, newSess))

	ok(t, s.DeleteExpired(ctx, cut))

	is(t, s.DeleteAuthRequest(ctx, oldReq.ID), store.ErrNotFound) // gone
	ok(t, s.DeleteAuthRequest(ctx, newReq.ID))                    // kept
	_, err := s.GetAccessToken(ctx, oldAT.Hash)
	is(t, err, store.ErrNotFound)
	_, err = s.GetAccessToken(ctx, liveAT.Hash)
	ok(t, err)
	_, err = s.GetRefreshToken(ctx, deadRT.Hash)
	is(t, err, store.ErrNotFound)
	// Used and revoked refresh tokens stay until they expire: reuse of
	// them must still be detected.
	for _, h := range []store.Hash{oldRT.Hash, usedRT.Hash} {
		_, err = s.GetRefreshToken(ctx, h)
		ok(t, err)
	}
	is(t, s.RotateRefreshToken(ctx, oldRT.Hash, sampleAccess(now, "", "", ""), sampleRefresh(now, "", "", "")), store.ErrAlreadyUsed)
	is(t, s.DeleteSession(ctx, oldSess.Hash), store.ErrNotFound)
	ok(t, s.DeleteSession(ctx, newSess.Hash))
	ok(t, s.DeleteExpired(ctx, cut)) // nothing left to do is fine
}

// --- concurrency ------------------------------------------------------------

// race runs fn in n goroutines released at once and returns their errors.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

func testConcurrentRedeem(t *testing.T, s store.Store) {
	for range rounds {
		raceRedeem(t, s)
	}
}

func raceRedeem(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	now := base()
	r := completedAuth(t, s, now)
	code := newHash()
	ok(t, s.SaveCode(ctx, r.ID, code))

	var mu sync.Mutex
	var issuedErr error
	var issued []store.Hash
	errs := race(n, func(int) error {
		got, err := s.RedeemCode(ctx, code)
		if err != nil {
			return err
		}
		if got.ID != r.ID {
			return fmt.Errorf("redeemed request %s, want %s", got.ID, r.ID)
		}
		// The winner issues the grant's first tokens, racing the losers'
		// revocation.
		at, rt := sampleAccess(now, got.ID, got.UserID, got.ClientID), sampleRefresh(now, got.ID, got.UserID, got.ClientID)
		err = s.CreateTokens(ctx, at, &rt)
		mu.Lock()
		defer mu.Unlock()
		issuedErr, issued = err, []store.Hash{at.Hash, rt.Hash}
		return nil
	})
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, store.ErrAlreadyUsed):
		default:
			t.Errorf("concurrent redemption: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent redemptions succeeded, want exactly 1", wins, n)
	}
	// Whether the winner's tokens were written before or after the losers
	// revoked the grant, none of them may be usable now.
	switch {
	case issuedErr == nil:
		if !accessRevoked(t, s, issued[0]) || !refreshRevoked(t, s, issued[1]) {
			t.Fatal("tokens issued for a reused code are not revoked")
		}
	case errors.Is(issuedErr, store.ErrRevoked):
		_, err := s.GetAccessToken(ctx, issued[0])
		is(t, err, store.ErrNotFound)
	default:
		t.Fatalf("issuing the winner's tokens: %v", issuedErr)
	}
	_, err := s.RedeemCode(ctx, code)
	is(t, err, store.ErrAlreadyUsed)
}

func testConcurrentRotate(t *testing.T, s store.Store) {
	for range rounds {
		raceRotate(t, s)
	}
}

func raceRotate(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	now := base()
	at0, rt0 := family(t, s, now)
	ats := make([]store.AccessToken, n)
	rts := make([]store.RefreshToken, n)
	for i := range n {
		ats[i] = sampleAccess(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
		rts[i] = sampleRefresh(now, rt0.GrantID, rt0.Subject, rt0.ClientID)
	}
	errs := race(n, func(i int) error { return s.RotateRefreshToken(ctx, rt0.Hash, ats[i], rts[i]) })
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("rotations %d and %d both succeeded", winner, i)
			}
			winner = i
		case errors.Is(err, store.ErrAlreadyUsed):
		default:
			t.Errorf("concurrent rotation: %v", err)
		}
	}
	if winner < 0 {
		t.Fatal("no concurrent rotation succeeded")
	}
	// The losers presented a used token: the whole family is revoked.
	for _, h := range []store.Hash{at0.Hash, ats[winner].Hash} {
		if !accessRevoked(t, s, h) {
			t.Fatal("access token of the family not revoked after reuse")
		}
	}
	for _, h := range []store.Hash{rt0.Hash, rts[winner].Hash} {
		if !refreshRevoked(t, s, h) {
			t.Fatal("refresh token of the family not revoked after reuse")
		}
	}
	for i := range n {
		if i == winner {
			continue
		}
		if _, err := s.GetRefreshToken(ctx, rts[i].Hash); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("losing rotation %d left its refresh token: %v", i, err)
		}
		if _, err := s.GetAccessToken(ctx, ats[i].Hash); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("losing rotation %d left its access token: %v", i, err)
		}
	}
}

func testConcurrentUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	const each = 5
	errs := race(n, func(int) error {
		for range each {
			if err := s.CreateUser(ctx, sampleUser(base())); err != nil {
				return err
			}
		}
		return nil
	})
	for _, err := range errs {
		ok(t, err)
	}
	users, err := s.ListUsers(ctx, "", 10*n*each)
	ok(t, err)
	if len(users) != n*each {
		t.Fatalf("%d users, want %d", len(users), n*each)
	}
	e := outbox(t, s)
	if len(e) != n*each {
		t.Fatalf("%d outbox entries, want %d", len(e), n*each)
	}
	for i := 1; i < len(e); i++ {
		if e[i].Seq <= e[i-1].Seq {
			t.Fatalf("outbox seq not strictly increasing: %d after %d", e[i].Seq, e[i-1].Seq)
		}
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	const each = 10
	errs := race(n, func(i int) error {
		for range each {
			at, rt := sampleAccess(now, newID("grant"), "usr-1", "cli-1"), sampleRefresh(now, "", "usr-1", "cli-1")
			rt.GrantID = at.GrantID
			if err := s.CreateTokens(ctx, at, &rt); err != nil {
				return err
			}
			if _, err := s.GetAccessToken(ctx, at.Hash); err != nil {
				return fmt.Errorf("read after write: %w", err)
			}
			sess := store.Session{Hash: newHash(), UserID: "usr-1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
			if err := s.CreateSession(ctx, sess); err != nil {
				return err
			}
			if i%2 == 0 {
				if err := s.RevokeUserClientTokens(ctx, "usr-1", "cli-1"); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for _, err := range errs {
		ok(t, err)
	}
}

func testPing(t *testing.T, s store.Store) {
	ok(t, s.Ping(t.Context()))
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ok(t, s.Ping(ctx))
}
