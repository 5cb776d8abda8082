package region

import (
	"errors"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"net/http"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region/store"
)

// Upstream federates users who are not resident in this region: the login
// sends them to the hub (hub topology) or straight to their resident region
// (mesh topology) and takes back a verified identity. The region never sees
// their password and keeps their claims only with the grant they sign in
// for, never as a user record.
type Upstream interface {
	// Begin starts a federated login for the pending authorization request
	// and the username the user typed, by writing a redirect.
	Begin(w http.ResponseWriter, r *http.Request, login FederatedLogin)
	// Finish handles the upstream's answer at /login/federated/callback and
	// returns the authorization request it belongs to and the identity.
	// When the answer is an authorization error (*federation.AuthError),
	// arID is still set so the error can be relayed to the application.
	Finish(w http.ResponseWriter, r *http.Request) (arID string, id FederatedIdentity, err error)
}

// FederatedLogin is what the entry region hands the hub (or the resident
// region) for a user resident elsewhere: the authorization request's id,
// the username as login_hint, and the request parameters the resident
// region must enforce (OIDC Core §3.1.2.1): prompt (login, none), max_age
// and ui_locales.
type FederatedLogin struct {
	ARID      string
	Username  string
	Prompt    []string
	MaxAge    *uint
	UILocales []string
}

// federatedLogin is the FederatedLogin of ar for username.
func federatedLogin(ar store.AuthRequest, username string) FederatedLogin {
	fl := FederatedLogin{ARID: ar.ID, Username: username, MaxAge: ar.MaxAge, UILocales: ar.UILocales}
	for _, p := range ar.Prompt {
		if p == oidc.PromptLogin || p == oidc.PromptNone {
			fl.Prompt = append(fl.Prompt, p)
		}
	}
	return fl
}

// federateSilently answers prompt=none for a browser without a session
// here that signed in before as a user resident elsewhere (it holds the
// federated-login hint): the resident region decides, through the hub,
// whether its session answers (a code) or not (login_required). It reports
// whether it wrote the response.
func (l *loginUI) federateSilently(w http.ResponseWriter, r *http.Request, ar store.AuthRequest) bool {
	if l.p.cfg.Upstream == nil || l.federationClient(r.Context(), ar.ClientID) {
		return false
	}
	name, ok := l.fedHint(r)
	if !ok {
		return false
	}
	l.p.cfg.Upstream.Begin(w, r, federatedLogin(ar, name))
	return true
}

// relayedError is the authorization error passed on to the application for
// a resident region's error code; any other code ends on an error page.
func relayedError(code string) (*oidc.Error, bool) {
	var e *oidc.Error
	switch code {
	case "login_required":
		e = oidc.ErrLoginRequired()
	case "interaction_required":
		e = oidc.ErrInteractionRequired()
	case "consent_required":
		e = &oidc.Error{ErrorType: "consent_required"}
	case "account_selection_required":
		e = &oidc.Error{ErrorType: "account_selection_required"}
	case "access_denied":
		e = oidc.ErrAccessDenied()
	default:
		return nil, false
	}
	return e.WithDescription("the home region answered %s", code), true
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
var ErrFederationUnavailable = federation.ErrUnavailable

// errCode is the code of an upstream authorization error, else "".
func errCode(err error) string {
	var ae *federation.AuthError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// federatedCallback is GET /login/federated/callback.
func (l *loginUI) federatedCallback(w http.ResponseWriter, r *http.Request) {
	if l.p.cfg.Upstream == nil {
		http.NotFound(w, r)
		return
	}
	arID, id, err := l.p.cfg.Upstream.Finish(w, r)
	if relay, ok := relayedError(errCode(err)); ok && arID != "" {
		// The resident region answered prompt=none (or the user declined):
		// the application gets the authorization error, not a dead end.
		if err := r.ParseForm(); err != nil {
			l.errorPage(w, http.StatusBadRequest, "This sign-in request is malformed.")
			return
		}
		r.Form.Set("id", arID)
		ar, ok := l.pending(w, r)
		if !ok {
			return
		}
		l.redirectError(w, r, ar, relay)
		return
	}
	if errors.Is(err, ErrFederationUnavailable) {
		l.errorPage(w, http.StatusServiceUnavailable, federation.UnavailableMessage)
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
	// The resident region enforced max_age; check its auth_time anyway
	// (a minute of clock skew allowed) before issuing on its word.
	if ar.MaxAge != nil && (id.AuthTime.IsZero() || time.Since(id.AuthTime) > time.Duration(*ar.MaxAge)*time.Second+time.Minute) {
		l.redirectError(w, r, ar, oidc.ErrLoginRequired().WithDescription("the home region's authentication is older than max_age"))
		return
	}
	l.setFedHint(w, id.Claims["preferred_username"])
	amr := "fed"
	for _, a := range id.AMR {
		amr += " " + a
	}
	l.authenticated(w, r, ar, nonce, loginState{id: ar.ID, userID: id.Subject, amr: amr, authTime: id.AuthTime, federated: true}, false)
}
