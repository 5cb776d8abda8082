package conformance

import (
	"errors"
	"testing"

	"github.com/meridian-id/meridian/region/store"
)

// Token issuance is group-committed by the backends (store.GroupCommit):
// concurrent calls share a transaction. These tests hold every call to the
// atomicity of a call made alone.

// issuers is how many concurrent token inserts the group commit tests run:
// enough that batches hold many calls.
const issuers = 200

// testConcurrentIssue: every concurrent CreateAccessToken and CreateTokens
// that returned nil is stored, and each returned nil.
func testConcurrentIssue(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	tokens := make([]store.AccessToken, issuers)
	refresh := make([]*store.RefreshToken, issuers)
	for i := range tokens {
		if i%4 == 0 { // code flow: an access and a refresh token of a new grant
			grant := newID("grant")
			tokens[i] = sampleAccess(now, grant, "user-"+newID("u"), "client-x")
			rt := sampleRefresh(now, grant, tokens[i].Subject, "client-x")
			refresh[i] = &rt
		} else { // client_credentials
			tokens[i] = sampleAccess(now, "", "client-x", "client-x")
		}
	}
	errs := race(issuers, func(i int) error {
		if refresh[i] != nil {
			return s.CreateTokens(ctx, tokens[i], refresh[i])
		}
		return s.CreateAccessToken(ctx, tokens[i])
	})
	for i, err := range errs {
		ok(t, err)
		got, err := s.GetAccessToken(ctx, tokens[i].Hash)
		ok(t, err)
		if got.Revoked || got.Subject != tokens[i].Subject {
			t.Fatalf("token %d: got %+v", i, got)
		}
		if refresh[i] != nil {
			_, err := s.GetRefreshToken(ctx, refresh[i].Hash)
			ok(t, err)
		}
	}
}

// testConcurrentIssueFailures: calls that fail in a batch (a duplicate
// digest, a token of a revoked grant) fail alone; the others of the same
// batch are stored, and nothing of a failed call is.
func testConcurrentIssueFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	revokedGrant := newID("grant")
	ok(t, s.RevokeGrant(ctx, revokedGrant))
	for range rounds {
		tokens := make([]store.AccessToken, issuers)
		for i := range tokens {
			switch {
			case i%10 == 1: // the same digest as its predecessor
				tokens[i] = sampleAccess(now, "", "client-z", "client-z")
				tokens[i].Hash = tokens[i-1].Hash
			case i%10 == 5:
				tokens[i] = sampleAccess(now, revokedGrant, "user-r", "client-y")
			default:
				tokens[i] = sampleAccess(now, "", "client-y", "client-y")
			}
		}
		errs := race(issuers, func(i int) error { return s.CreateAccessToken(ctx, tokens[i]) })
		for i, err := range errs {
			switch {
			case i%10 == 0 || i%10 == 1:
				continue // checked by pair below
			case i%10 == 5:
				is(t, err, store.ErrRevoked)
				_, gerr := s.GetAccessToken(ctx, tokens[i].Hash)
				is(t, gerr, store.ErrNotFound)
			default:
				ok(t, err)
				_, gerr := s.GetAccessToken(ctx, tokens[i].Hash)
				ok(t, gerr)
			}
		}
		for i := 0; i < issuers; i += 10 {
			a, b := errs[i], errs[i+1]
			if (a == nil) == (b == nil) {
				t.Fatalf("duplicate digest: want exactly one success, got %v and %v", a, b)
			}
			if !errors.Is(a, store.ErrConflict) && !errors.Is(b, store.ErrConflict) {
				t.Fatalf("duplicate digest: want store.ErrConflict, got %v and %v", a, b)
			}
			got, err := s.GetAccessToken(ctx, tokens[i].Hash)
			ok(t, err)
			winner := tokens[i]
			if a != nil {
				winner = tokens[i+1]
			}
			if got.Subject != winner.Subject || got.ClientID != winner.ClientID {
				t.Fatalf("duplicate digest: stored %+v, want the winner's", got)
			}
		}
	}
}
