package region

import (
	"errors"
	"net/http"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// Upstream federates users who are not resident in this region: the login
// sends them to the hub (hub topology) or straight to their resident region
// (mesh topology) and takes back a verified identity. The region never sees
// their password and keeps their claims only with the grant they sign in
// for, never as a user record.
type Upstream interface {
	// Begin starts a federated login for the pending authorization request
	// arID and the username the user typed, by writing a redirect.
	Begin(w http.ResponseWriter, r *http.Request, arID, username string)
	// Finish handles the upstream's answer at /login/federated/callback and
	// returns the authorization request it belongs to and the identity.
	Finish(w http.ResponseWriter, r *http.Request) (arID string, id FederatedIdentity, err error)
}

// FederatedIdentity is a user authenticated by their resident region.
type FederatedIdentity struct {
	Subject    string            // the resident region's sub (random, globally unique)
	HomeRegion string            // the resident region's id
	Claims     map[string]string // preferred_username, name, email, ...
	AuthTime   time.Time
	AMR        []string
}

// ErrFederationUnavailable is returned by Finish when the hub or resident
// region cannot be reached; the user sees a clear error page.
var ErrFederationUnavailable = errors.New("region: federation unavailable")

// federatedCallback is GET /login/federated/callback.
func (l *loginUI) federatedCallback(w http.ResponseWriter, r *http.Request) {
	if l.p.cfg.Upstream == nil {
		http.NotFound(w, r)
		return
	}
	arID, id, err := l.p.cfg.Upstream.Finish(w, r)
	if errors.Is(err, ErrFederationUnavailable) {
		l.errorPage(w, http.StatusServiceUnavailable, "Sign-in through your home region is temporarily unavailable. Please try again in a few minutes.")
		return
	}
	if err != nil {
		l.p.log.WarnContext(r.Context(), "federated login failed", "err", err)
		l.errorPage(w, http.StatusBadRequest, "Sign-in through your home region failed. Please start again from the application.")
		return
	}
	if err := r.ParseForm(); err != nil {
		l.errorPage(w, http.StatusBadRequest, "This sign-in request is malformed.")
		return
	}
	r.Form.Set("id", arID)
	ar, ok := l.pending(w, r)
	if !ok {
		return
	}
	nonce := l.existingNonce(r)
	if nonce == "" {
		l.errorPage(w, http.StatusBadRequest, "This sign-in could not be completed in this browser. Please start again from the application.")
		return
	}
	fc := store.FederatedClaims{GrantID: ar.ID, HomeRegion: id.HomeRegion, Claims: id.Claims,
		ExpiresAt: time.Now().UTC().Add(l.p.cfg.Lifetimes.RefreshToken)}
	if err := l.p.st.SaveFederatedClaims(r.Context(), fc); err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	l.setFedHint(w, id.Claims["preferred_username"])
	amr := "fed"
	for _, a := range id.AMR {
		amr += " " + a
	}
	l.authenticated(w, r, ar, nonce, loginState{id: ar.ID, userID: id.Subject, amr: amr, authTime: id.AuthTime, federated: true}, false)
}
