package conformance

import (
	"errors"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// FederatedClaimsMigration checks a backend's migration that drops the
// federated_claims table (issue 12): grants of users resident elsewhere
// that had claims here are renamed to the federated subject
// "fed.<home>.<home subject>" in auth requests, access and refresh
// tokens; sessions of federated users are ended; local grants and
// sessions are untouched. s is migrated to the latest version; legacy
// recreates the old table and stores claims for a grant; migrate runs the
// backend's drop migration; gone reports the table is no longer there.
func FederatedClaimsMigration(t *testing.T, s store.Store, legacy func(grantID, home string), migrate func(), gone func() bool) {
	ctx := t.Context()
	now := base()
	// A federated grant, as the entry region stored it before subjects
	// were bound to the home region: the home subject itself.
	fed := sampleAuth(now, nil)
	fed.UserID, fed.AuthTime, fed.AMR, fed.Done = "homeSubject123", now.Add(-time.Minute), []string{"fed", "pwd"}, true
	ok(t, s.CreateAuthRequest(ctx, fed))
	fedRT := sampleRefresh(now, fed.ID, fed.UserID, fed.ClientID)
	fedAT := sampleAccess(now, fed.ID, fed.UserID, fed.ClientID)
	ok(t, s.CreateTokens(ctx, fedAT, &fedRT))
	fedSess := store.Session{Hash: newHash(), UserID: fed.UserID, AuthTime: now, AMR: []string{"fed", "pwd"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	ok(t, s.CreateSession(ctx, fedSess))
	// A local grant and session.
	loc := completedAuth(t, s, now)
	locRT := sampleRefresh(now, loc.ID, loc.UserID, loc.ClientID)
	locAT := sampleAccess(now, loc.ID, loc.UserID, loc.ClientID)
	ok(t, s.CreateTokens(ctx, locAT, &locRT))
	locSess := store.Session{Hash: newHash(), UserID: loc.UserID, AuthTime: now, AMR: []string{"pwd"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	ok(t, s.CreateSession(ctx, locSess))

	legacy(fed.ID, "us")
	migrate()
	if !gone() {
		t.Fatal("federated_claims is still there")
	}
	want := "fed.us." + fed.UserID
	ar, err := s.GetAuthRequest(ctx, fed.ID)
	ok(t, err)
	rt, err := s.GetRefreshToken(ctx, fedRT.Hash)
	ok(t, err)
	at, err := s.GetAccessToken(ctx, fedAT.Hash)
	ok(t, err)
	if ar.UserID != want || rt.Subject != want || at.Subject != want {
		t.Fatalf("federated grant subjects %q %q %q, want %q", ar.UserID, rt.Subject, at.Subject, want)
	}
	if _, err := s.GetSession(ctx, fedSess.Hash); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("federated session survived: %v", err)
	}
	ar, err = s.GetAuthRequest(ctx, loc.ID)
	ok(t, err)
	rt, err = s.GetRefreshToken(ctx, locRT.Hash)
	ok(t, err)
	at, err = s.GetAccessToken(ctx, locAT.Hash)
	ok(t, err)
	if ar.UserID != loc.UserID || rt.Subject != loc.UserID || at.Subject != loc.UserID {
		t.Fatalf("local grant renamed: %q %q %q", ar.UserID, rt.Subject, at.Subject)
	}
	if _, err := s.GetSession(ctx, locSess.Hash); err != nil {
		t.Fatalf("local session lost: %v", err)
	}
}
