package region

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// Federator federates users who are not resident in this region: the login
// sends them to the hub (hub topology) or straight to their resident region
// (mesh topology) and takes back a verified identity. The region never sees
// their password and keeps their claims only with the grant they sign in
// for, never as a user record.
type Federator interface {
	// Begin starts a federated login for the pending authorization request
	// and the username the user typed, by writing a redirect.
	Begin(w http.ResponseWriter, r *http.Request, login FederatedLogin)
	// Finish handles the upstream's answer at /login/federated/callback and
	// returns the authorization request it belongs to and the identity.
	// When the answer is an authorization error (*federation.AuthError),
	// arID is still set so the error can be relayed to the application.
	Finish(w http.ResponseWriter, r *http.Request) (arID string, id FederatedIdentity, err error)
}

// unknownAnswerer is implemented by a Federator that can tell that a name
// not resident here is one this region answers itself as an unknown user
// (it is the name's decoy region and no region has it), so the name shows
// this region's page wherever it is typed, as a resident's name would.
type unknownAnswerer interface {
	AnswersUnknown(ctx context.Context, username string) (bool, error)
	// AskAsIfUnknown does the same work for a name resident here, so
	// both take as long.
	AskAsIfUnknown(ctx context.Context, username string)
}

// FederatedLogin is what the entry region hands the hub (or the resident
// region) for a user resident elsewhere: the authorization request's id,
// the username as login_hint, and the request parameters the resident
// region must enforce (OIDC Core §3.1.2.1): prompt (login, none), max_age,
// ui_locales and acr_values.
type FederatedLogin struct {
	ARID      string
	Username  string
	Prompt    []string
	MaxAge    *uint
	UILocales []string
	ACRValues []string
}

// federatedLogin is the FederatedLogin of ar for username.
func federatedLogin(ar store.AuthRequest, username string) FederatedLogin {
	fl := FederatedLogin{ARID: ar.ID, Username: username, MaxAge: ar.MaxAge, UILocales: ar.UILocales, ACRValues: ar.ACRValues}
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
	if l.p.cfg.Federator == nil || l.federationClient(r.Context(), ar.ClientID) {
		return false
	}
	name, ok := l.fedHint(r)
	if !ok {
		return false
	}
	l.p.cfg.Federator.Begin(w, r, federatedLogin(ar, name))
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
	Subject    string            // the resident region's sub for the user
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
	if l.p.cfg.Federator == nil {
		http.NotFound(w, r)
		return
	}
	arID, id, err := l.p.cfg.Federator.Finish(w, r)
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
	// The entry region keeps no claims of a user resident elsewhere: the
	// grant names the user by a federated subject bound to (home region,
	// home subject), and ID tokens and userinfo fetch the claims from the
	// home region when they are needed (fillUserinfo).
	sub, err := FederatedSubject(id.HomeRegion, id.Subject)
	if err != nil || !l.p.codec.HasRegion(id.HomeRegion) || id.HomeRegion == l.p.cfg.Region {
		l.p.log.WarnContext(r.Context(), "federated login refused: the identity is not bound to another region of the federation", "home", id.HomeRegion)
		l.errorPage(w, http.StatusBadRequest, "Sign-in through your home region failed. Please start again from the application.")
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
	l.authenticated(w, r, ar, nonce, loginState{id: ar.ID, userID: sub, amr: amr, authTime: id.AuthTime, federated: true}, false)
}

// federatedPrefix starts every subject this region gives a user resident
// in another region. A local user id (CreateUser: 22 base64url characters)
// never contains a dot, and a subject of this form is never looked up in
// the user table, so a federated identity cannot take a local user's
// identity, and a row in the user table cannot take a federated one.
const federatedPrefix = "fed."

// FederatedSubject is the subject the entry region issues for the user
// whose home region home calls sub: "fed.<home>.<sub>". It binds the user
// to their home region: a region asserting a subject it does not hold
// yields a subject of its own namespace, never another region's user.
func FederatedSubject(home, sub string) (string, error) {
	if home == "" || strings.ContainsAny(home, ".") || !validHomeSubject(sub) {
		return "", fmt.Errorf("region: invalid federated identity (home %q)", home)
	}
	return federatedPrefix + home + "." + sub, nil
}

// ParseFederatedSubject splits a subject made by FederatedSubject; ok is
// false for a local subject.
func ParseFederatedSubject(s string) (home, sub string, ok bool) {
	rest, ok := strings.CutPrefix(s, federatedPrefix)
	if !ok {
		return "", "", false
	}
	home, sub, ok = strings.Cut(rest, ".")
	if !ok || home == "" || !validHomeSubject(sub) {
		return "", "", false
	}
	return home, sub, true
}

// validHomeSubject accepts a home region's own subject: printable ASCII,
// at most 255 bytes, and not itself federated (a home region answers only
// for users it holds).
func validHomeSubject(sub string) bool {
	if sub == "" || len(sub) > 255 || strings.HasPrefix(sub, federatedPrefix) {
		return false
	}
	for i := 0; i < len(sub); i++ {
		if sub[i] <= ' ' || sub[i] >= 0x7f {
			return false
		}
	}
	return true
}

// claimsPath is the home region's internal endpoint that answers a user's
// claims to a peer region (over an authenticated hop).
const claimsPath = "/internal/claims"

// errHomeClaims is a failed claims fetch from a user's home region.
var errHomeClaims = errors.New("region: the home region did not answer the user's claims")

// homeClaims fetches, for a user resident in home, the claims scopes
// release, from home over an authenticated hop. Nothing is cached or
// stored: the claims live in the home region only.
func (rm *remote) homeClaims(ctx context.Context, home, sub string, scopes []string) (map[string]string, error) {
	resp, err := rm.peers.Call(ctx, home, claimsPath, url.Values{"sub": {sub}, "scope": {strings.Join(scopes, " ")}})
	if err != nil {
		raiseFault(ctx)
		return nil, fmt.Errorf("%w: %s: %v", errHomeClaims, home, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 {
			raiseFault(ctx)
		}
		return nil, fmt.Errorf("%w: %s answered %d", errHomeClaims, home, resp.StatusCode)
	}
	var body struct {
		Sub    string            `json:"sub"`
		Claims map[string]string `json:"claims"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil || body.Sub != sub {
		return nil, fmt.Errorf("%w: %s: malformed answer", errHomeClaims, home)
	}
	if body.Claims == nil {
		body.Claims = map[string]string{}
	}
	return body.Claims, nil
}

// scopeClaims lists the claims each scope releases.
var scopeClaims = map[string][]string{
	oidc.ScopeProfile: {"name", "given_name", "family_name", "locale"},
	oidc.ScopeEmail:   {"email", "email_verified"},
	oidc.ScopePhone:   {"phone_number"},
}

// internalClaims is POST /internal/claims: a peer region asks, for a user
// resident here who signed in there, the claims the scopes release. It is
// answered for peer regions only (the router sets the hop-from header
// after verifying the hop and strips any client-supplied one), for users
// of this region only.
func (p *Provider) internalClaims(w http.ResponseWriter, r *http.Request) {
	from := r.Header.Get(routing.HopFromHeader)
	if from == "" {
		http.NotFound(w, r)
		return
	}
	sub := r.PostFormValue("sub")
	if from == p.cfg.Region || !validHomeSubject(sub) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	u, err := p.st.GetUserByID(r.Context(), sub)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	out := map[string]string{}
	for _, sc := range strings.Fields(r.PostFormValue("scope")) {
		if sc == oidc.ScopeProfile {
			out["preferred_username"] = u.Username
		}
		for _, c := range scopeClaims[sc] {
			if v, ok := u.Claims[c]; ok {
				out[c] = v
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sub": u.ID, "claims": out})
}

// isFederatedSubject reports whether sub names a user resident elsewhere.
func isFederatedSubject(sub string) bool {
	_, _, ok := ParseFederatedSubject(sub)
	return ok
}
