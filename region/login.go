package region

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/meridian-id/meridian/loginpage"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

var templateFS = loginpage.Templates()

// PageTemplates are the login page templates ("username", "password",
// "totp", "consent", "error"), shared with the hub and the federation
// client so that their pages are indistinguishable from a region's.
func PageTemplates() fs.FS { return templateFS }

// loginUI is the server-rendered, identifier-first login: username, then
// password, then a TOTP code when the user enrolled one, then consent for
// third-party clients. Unknown users walk the same pages, get the same
// answer and pay the same argon2id cost as a wrong password.
type loginUI struct {
	p         *Provider
	tmpl      *template.Template
	dummyHash string
	limits    *limiter
	argon     *memoryBudget
}

func newLoginUI(p *Provider) (*loginUI, error) {
	t, err := template.ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	dummy, err := HashPassword("meridian-dummy-password-for-timing")
	if err != nil {
		return nil, err
	}
	budget := p.cfg.PasswordMemoryBudget
	if budget == 0 {
		budget = DefaultPasswordMemoryBudget
	}
	return &loginUI{p: p, tmpl: t, dummyHash: dummy, limits: newLimiter(p.st), argon: newMemoryBudget(budget)}, nil
}

type page struct {
	Title, Region, Error      string
	ID, CSRF, State, Username string
	ClientName, Message       string
	Scopes                    []string
	// Second-factor and passkey pages (regions only; the hub's look-alike
	// pages never render them).
	TOTP          bool   // the TOTP form is offered
	Passkey       string // WebAuthn options (JSON) for the page's script
	PasskeyState  string // sealed state of the passkey ceremony
	PasskeyAction string // where the passkey form posts
}

func (l *loginUI) render(w http.ResponseWriter, status int, name string, pg page) {
	pg.Region = l.p.cfg.Region
	if pg.Passkey != "" {
		// The ceremony runs in /login/webauthn.js; nothing inline.
		w.Header().Set("Content-Security-Policy", passkeyCSP)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = l.tmpl.ExecuteTemplate(w, name, pg)
}

// errorPage answers a browser with an HTML error page.
func (l *loginUI) errorPage(w http.ResponseWriter, status int, msg string) {
	l.render(w, status, "error", page{Title: http.StatusText(status), Message: msg})
}

// --- cookies and MACs ---

func (l *loginUI) cookieName(base string, hostOnly bool) string {
	if !l.p.cfg.SecureCookies {
		return base
	}
	if hostOnly {
		return "__Host-" + base
	}
	return "__Secure-" + base
}

const browserCookie = "mrd_browser"

// browserNonce returns the random value that binds CSRF tokens and the
// authorization callback to this browser, setting it when absent.
func (l *loginUI) browserNonce(w http.ResponseWriter, r *http.Request) string {
	name := l.cookieName(browserCookie, true)
	if c, err := r.Cookie(name); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	v := base64.RawURLEncoding.EncodeToString(b[:])
	http.SetCookie(w, &http.Cookie{Name: name, Value: v, Path: "/", HttpOnly: true,
		Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	return v
}

func (l *loginUI) existingNonce(r *http.Request) string {
	if c, err := r.Cookie(l.cookieName(browserCookie, true)); err == nil {
		return c.Value
	}
	return ""
}

func (l *loginUI) mac(parts ...string) string {
	m := hmac.New(sha256.New, l.p.cfg.CookieKey)
	for _, p := range parts {
		m.Write([]byte(strconv.Itoa(len(p))))
		m.Write([]byte{':'})
		m.Write([]byte(p))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (l *loginUI) csrf(id, nonce string) string { return l.mac("csrf", id, nonce) }

func (l *loginUI) checkCSRF(r *http.Request, id string) bool {
	return l.csrfFailure(r, id) == ""
}

// csrfFailure is why a posted form's CSRF token is refused ("" when it
// verifies): no browser cookie, no token, or a token that does not verify
// under this node's cookie key.
func (l *loginUI) csrfFailure(r *http.Request, id string) string {
	nonce := l.existingNonce(r)
	switch {
	case nonce == "":
		return "the browser sent no " + l.cookieName(browserCookie, true) + " cookie"
	case r.PostFormValue("csrf") == "":
		return "the form has no CSRF token"
	case !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(l.csrf(id, nonce))):
		return "the CSRF token does not verify under this node's cookie key (minted by a node with another cookie key, or forged)"
	}
	return ""
}

// cookieKeyID names this node's cookie key without revealing it (a MAC
// under the key), so operators can compare it across a region's nodes.
func (l *loginUI) cookieKeyID() string { return l.mac("cookie key id")[:12] }

// refused logs why a login step refused what the browser sent (never the
// values themselves). A refusal under another cookie key means the
// region's nodes do not share regions[].cookie_key_file.
func (l *loginUI) refused(r *http.Request, cause string) {
	l.p.log.WarnContext(r.Context(), "login refused", "region", l.p.cfg.Region, "path", r.URL.Path, "cause", cause,
		"cookie_key_id", l.cookieKeyID(),
		"hint", "every node of a region and of its DR site must read the same cookie key (regions[].cookie_key_file)")
}

// bindCallback is added to the callback URL so that only the browser that
// logged in can collect the code.
func (l *loginUI) bindCallback(id, nonce string) string { return l.mac("bind", id, nonce) }

func (l *loginUI) checkCallback(r *http.Request) bool {
	nonce := l.existingNonce(r)
	id := r.URL.Query().Get("id")
	return nonce != "" && id != "" && hmac.Equal([]byte(r.URL.Query().Get("b")), []byte(l.bindCallback(id, nonce)))
}

// loginState carries a half-finished login between pages, MACed and
// short-lived. A sealed state names the one step it was minted for and the
// factors still to verify, and is bound to the authorization request and
// the browser, so it cannot be replayed at another step (a password-only
// state at /consent), for another request or from another browser.
type loginState struct {
	id, userID, amr string
	authTime        time.Time
	// ceremony is a passkey step's WebAuthn session data (challenge,
	// allowed credentials); hint is the username the first-factor passkey
	// must belong to.
	ceremony, hint string
	// federated is a user authenticated by their resident region, which
	// enforced their factors; this region knows none of them.
	federated bool
}

// Login steps a sealed state can be minted for.
const (
	stepTOTP       = "totp"        // the password is verified, the TOTP code is still required
	stepPasskey    = "passkey"     // nothing is verified, a passkey (first factor) is asked
	stepPasskeyMFA = "passkey-mfa" // the password is verified, a passkey (second factor) is asked
	stepConsent    = "consent"     // every factor is verified, consent is asked
)

// factorsFor is what a state minted for step still requires: the TOTP step
// requires the one-time code, the passkey steps an assertion, consent
// requires nothing more.
func factorsFor(step string) string {
	switch step {
	case stepTOTP:
		return "otp"
	case stepPasskey, stepPasskeyMFA:
		return "webauthn"
	}
	return ""
}

func (l *loginUI) sealState(s loginState, step, nonce string) string {
	exp := strconv.FormatInt(time.Now().Add(5*time.Minute).Unix(), 10)
	at := strconv.FormatInt(s.authTime.Unix(), 10)
	fed := "0"
	if s.federated {
		fed = "1"
	}
	cer := base64.RawURLEncoding.EncodeToString([]byte(s.ceremony))
	hint := base64.RawURLEncoding.EncodeToString([]byte(s.hint))
	payload := strings.Join([]string{step, factorsFor(step), s.id, s.userID, s.amr, at, fed, exp, cer, hint}, "|")
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + l.mac("state", payload, nonce)
}

// openState opens a sealed state for the authorization request id, posted
// at step by the browser with nonce. A state minted for any other step,
// request or browser, expired or forged, is refused, and the refusal is
// logged with its cause.
func (l *loginUI) openState(r *http.Request, v, id, step, nonce string) (loginState, bool) {
	st, cause := l.openStateCause(v, id, step, nonce)
	if cause != "" {
		l.refused(r, cause)
		return loginState{}, false
	}
	return st, true
}

func (l *loginUI) openStateCause(v, id, step, nonce string) (loginState, string) {
	enc, sig, ok := strings.Cut(v, ".")
	if !ok || nonce == "" {
		return loginState{}, "the login state is missing or malformed, or the browser sent no browser cookie"
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || !hmac.Equal([]byte(sig), []byte(l.mac("state", string(raw), nonce))) {
		return loginState{}, "the login state does not verify under this node's cookie key (sealed by a node with another cookie key, for another browser, or forged)"
	}
	f := strings.Split(string(raw), "|")
	if len(f) != 10 || f[0] != step || f[1] != factorsFor(step) || f[2] != id {
		return loginState{}, "the login state was sealed for another step or request"
	}
	at, err1 := strconv.ParseInt(f[5], 10, 64)
	exp, err2 := strconv.ParseInt(f[7], 10, 64)
	cer, err3 := base64.RawURLEncoding.DecodeString(f[8])
	hint, err4 := base64.RawURLEncoding.DecodeString(f[9])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || time.Now().Unix() > exp {
		return loginState{}, "the login state expired"
	}
	return loginState{id: f[2], userID: f[3], amr: f[4], authTime: time.Unix(at, 0).UTC(), federated: f[6] == "1",
		ceremony: string(cer), hint: string(hint)}, ""
}

// missingFactor names a factor the user has but st has not verified
// ("mfa": a user who enrolled TOTP or a passkey presents one of them after
// a password), or is empty when the login may complete. Federated users'
// factors were enforced by their resident region.
func (l *loginUI) missingFactor(ctx context.Context, st loginState) (string, error) {
	if _, _, fed := ParseFederatedSubject(st.userID); fed || st.federated {
		// A federated subject is never looked up in the user table; a
		// federated login without one (a session from before subjects were
		// bound to their home region) signs in again.
		if !fed {
			return "", errors.New("region: federated login without a federated subject")
		}
		return "", nil
	}
	u, err := l.p.st.GetUserByID(ctx, st.userID)
	if err != nil {
		return "", err
	}
	amr := strings.Fields(st.amr)
	if secondFactor(amr) || slices.Contains(amr, "mfa") {
		return "", nil
	}
	if u.TOTPSecret != "" {
		return "mfa", nil
	}
	creds, err := l.p.st.ListWebAuthnCredentials(ctx, u.ID)
	if err != nil {
		return "", err
	}
	if len(creds) > 0 {
		return "mfa", nil
	}
	return "", nil
}

// --- handlers ---

// pending loads a live, unfinished authorization request named by the form.
func (l *loginUI) pending(w http.ResponseWriter, r *http.Request) (store.AuthRequest, bool) {
	id := r.FormValue("id")
	if _, err := l.p.codec.VerifyKind(id, routing.KindAuthRequest); err != nil {
		l.errorPage(w, http.StatusBadRequest, "This sign-in link is not valid.")
		return store.AuthRequest{}, false
	}
	ar, err := l.p.st.GetAuthRequest(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (time.Now().After(ar.ExpiresAt) || ar.Done)) {
		l.errorPage(w, http.StatusBadRequest, "This sign-in request has expired or was already used.")
		return store.AuthRequest{}, false
	}
	if err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return store.AuthRequest{}, false
	}
	return ar, true
}

// pendingForm is pending for a posted form: it also checks the CSRF token
// and returns the browser nonce it is bound to.
func (l *loginUI) pendingForm(w http.ResponseWriter, r *http.Request) (store.AuthRequest, string, bool) {
	ar, ok := l.pending(w, r)
	if !ok {
		return ar, "", false
	}
	if cause := l.csrfFailure(r, ar.ID); cause != "" {
		l.refused(r, cause)
		l.errorPage(w, http.StatusForbidden, "Your session expired. Please start again from the application.")
		return ar, "", false
	}
	return ar, l.existingNonce(r), true
}

// stepForm is pendingForm followed by openState for the posted state of
// step: it returns the request, the browser nonce and the opened state, or
// writes the refusal page and returns false.
func (l *loginUI) stepForm(w http.ResponseWriter, r *http.Request, step string) (store.AuthRequest, string, loginState, bool) {
	ar, nonce, ok := l.pendingForm(w, r)
	if !ok {
		return ar, "", loginState{}, false
	}
	st, ok := l.openState(r, r.PostFormValue("state"), ar.ID, step, nonce)
	if !ok {
		l.errorPage(w, http.StatusBadRequest, "Your sign-in took too long. Please start again from the application.")
		return ar, "", loginState{}, false
	}
	return ar, nonce, st, true
}

// start is GET /login?id=…: reuse a live SSO session when the request
// allows it, else ask for the username.
func (l *loginUI) start(w http.ResponseWriter, r *http.Request) {
	ar, ok := l.pending(w, r)
	if !ok {
		return
	}
	nonce := l.browserNonce(w, r)
	if sess, ok := l.session(r); ok && !hasPrompt(ar, oidc.PromptLogin) && withinMaxAge(ar, sess.AuthTime) {
		l.authenticated(w, r, ar, nonce, loginState{id: ar.ID, userID: sess.UserID, amr: strings.Join(sess.AMR, " "), authTime: sess.AuthTime, federated: isFederatedSubject(sess.UserID)}, false)
		return
	}
	if hasPrompt(ar, oidc.PromptNone) && !l.federateSilently(w, r, ar) {
		l.redirectError(w, r, ar, oidc.ErrLoginRequired())
	}
	if hasPrompt(ar, oidc.PromptNone) {
		return
	}
	// A user resident elsewhere who signed in through this browser before:
	// back to the hub, whose resident region's SSO session answers.
	if name, ok := l.fedHint(r); ok && l.p.cfg.Federator != nil && !hasPrompt(ar, oidc.PromptLogin) && !l.federationClient(r.Context(), ar.ClientID) {
		l.p.cfg.Federator.Begin(w, r, federatedLogin(ar, name))
		return
	}
	// The hub (or a peer region) already asked for the username: go
	// straight to the password so the user types it once.
	if ar.LoginHint != "" && l.federationClient(r.Context(), ar.ClientID) {
		l.render(w, http.StatusOK, "password", page{Title: "Enter your password", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: ar.LoginHint})
		return
	}
	l.render(w, http.StatusOK, "username", page{Title: "Sign in", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: ar.LoginHint})
}

// federationClient reports whether a client is the hub or a peer region,
// whose logins are never federated again (no loops).
func (l *loginUI) federationClient(ctx context.Context, id string) bool {
	c, err := l.p.storage.client(ctx, id)
	return err == nil && slices.Contains(c.Scopes, ScopeFederation)
}

// identify is POST /login: the username step. Every username, known or
// not, gets the password page.
func (l *loginUI) identify(w http.ResponseWriter, r *http.Request) {
	ar, nonce, ok := l.pendingForm(w, r)
	if !ok {
		return
	}
	// Every username post counts against the address until a login
	// succeeds from it (authenticated refunds it): probing names is slow.
	if _, wait, err := l.limits.reserve(r.Context(), identifyLimit(clientIP(r))); err != nil {
		l.limited(w, r, err, wait, "identify", "", "username", page{Title: "Sign in", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: r.PostFormValue("username")})
		return
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	if username == "" || len(username) > 256 {
		l.render(w, http.StatusOK, "username", page{Title: "Sign in", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Error: "Enter your username."})
		return
	}
	if l.p.cfg.Federator != nil && !l.federationClient(r.Context(), ar.ClientID) {
		name, err := NormalizeUsername(username)
		_, lerr := l.p.st.GetUserByUsername(r.Context(), name)
		if err == nil && errors.Is(lerr, store.ErrNotFound) && !l.answersUnknown(r, username) {
			// Not resident here: the hub (or, in mesh, the resident region)
			// takes over; only the resident region will see the password.
			l.p.cfg.Federator.Begin(w, r, federatedLogin(ar, username))
			return
		}
		if lerr == nil {
			// A resident: the same question an unknown name answered here
			// costs, so the two take as long.
			if ua, ok := l.p.cfg.Federator.(unknownAnswerer); ok {
				ua.AskAsIfUnknown(r.Context(), username)
			}
		}
	}
	l.render(w, http.StatusOK, "password", page{Title: "Enter your password", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: username})
}

// answersUnknown reports whether this region answers username, resident
// nowhere, itself: it is the name's decoy region, so the name gets this
// region's password page here as a resident's would, and the hub would
// have sent it here from any other entry. When the upstream cannot tell
// (the hub unreachable), the name goes to the hub as before.
func (l *loginUI) answersUnknown(r *http.Request, username string) bool {
	ua, ok := l.p.cfg.Federator.(unknownAnswerer)
	if !ok {
		return false
	}
	here, err := ua.AnswersUnknown(r.Context(), username)
	if err != nil {
		l.p.log.WarnContext(r.Context(), "asking the hub whether a name is known failed; handing it to the hub", "err", err)
		return false
	}
	return here
}

const invalidCredentials = "Invalid username or password."

// limited answers an attempt that a limit refused (err is errLimited) or
// that the limiter could not count (the database failed: refuse rather
// than guess unthrottled).
func (l *loginUI) limited(w http.ResponseWriter, r *http.Request, err error, wait time.Duration, step, userID, tmpl string, pg page) {
	if !errors.Is(err, errLimited) {
		l.p.log.ErrorContext(r.Context(), "login limiter unavailable", "err", err)
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	attrs := []slog.Attr{slog.String("step", step), slog.String("client_ip", clientIP(r))}
	if userID != "" {
		attrs = append(attrs, slog.String("user_id", userID))
	}
	l.p.audit.record(r.Context(), AuditLockout, attrs...)
	retryAfter(w, wait)
	pg.Error = "Too many attempts. Wait a minute and try again."
	l.render(w, http.StatusTooManyRequests, tmpl, pg)
}

// password is POST /login/password. The order bounds what an attacker can
// make the node do: memory for argon2id first (a flood is refused at once),
// then an attempt reserved region-wide against the address and the
// username, and only then the verification.
func (l *loginUI) password(w http.ResponseWriter, r *http.Request) {
	ar, nonce, ok := l.pendingForm(w, r)
	if !ok {
		return
	}
	raw := r.PostFormValue("username")
	username, nerr := NormalizeUsername(raw)
	pg := page{Title: "Enter your password", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: raw}
	ip := clientIP(r)
	var u store.User
	var err error
	if nerr == nil {
		u, err = l.p.st.GetUserByUsername(r.Context(), username)
	} else {
		err = store.ErrNotFound
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	hash := l.dummyHash
	if err == nil {
		hash = u.PasswordHash
	}
	cost, ok := l.argon.acquire(hash)
	if !ok {
		retryAfter(w, time.Second)
		pg.Error = "The sign-in service is busy. Try again in a moment."
		l.render(w, http.StatusServiceUnavailable, "password", pg)
		return
	}
	res, wait, lerr := l.limits.reserve(r.Context(), perAddress(ip), perIdentifier("user", username))
	if lerr != nil {
		l.argon.release(cost)
		l.limited(w, r, lerr, wait, "password", u.ID, "password", pg)
		return
	}
	// The argon2id cost is paid whether or not the user exists.
	perr := VerifyPassword(hash, r.PostFormValue("password"))
	l.argon.spend(cost)
	// A user provisioning deactivated (SCIM "active": false) is refused
	// like a wrong password, after the same argon2id work.
	inactive := err == nil && perr == nil && !UserActive(u)
	if err != nil || perr != nil || inactive {
		reason := "bad_password"
		attrs := []slog.Attr{slog.String("client_ip", ip), slog.String("client_id", ar.ClientID)}
		if err != nil {
			// The typed name is not logged: people type passwords there.
			reason = "unknown_user"
		} else {
			attrs = append(attrs, slog.String("user_id", u.ID))
		}
		if inactive {
			reason = "inactive"
		}
		l.p.audit.record(r.Context(), AuditLoginFailed, append(attrs, slog.String("reason", reason))...)
		pg.Error = invalidCredentials
		l.render(w, http.StatusOK, "password", pg)
		return
	}
	// A right password is not an attempt that counts.
	l.limits.release(context.WithoutCancel(r.Context()), res)
	st := loginState{id: ar.ID, userID: u.ID, amr: "pwd", authTime: time.Now().UTC()}
	l.authenticated(w, r, ar, nonce, st, true)
}

// totpSkew is how many time steps a code may be early or late.
const totpSkew = 1

// matchTOTP returns the time step (RFC 6238, 30 s) whose code is code,
// within totpSkew steps of now, comparing in constant time.
func matchTOTP(secret, code string, now time.Time) (int64, bool) {
	if len(code) != 6 {
		return 0, false
	}
	cur := now.Unix() / 30
	step, found := int64(0), 0
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		want, err := totp.GenerateCode(secret, time.Unix((cur+d)*30, 0))
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && found == 0 {
			step, found = cur+d, 1
		}
	}
	return step, found == 1
}

// otp is POST /login/totp. A code is accepted at most once per user and
// time step, across every node of the region (RFC 6238 §5.2).
func (l *loginUI) otp(w http.ResponseWriter, r *http.Request) {
	ar, nonce, st, ok := l.stepForm(w, r, stepTOTP)
	if !ok {
		return
	}
	pg := page{Title: "Two-step verification", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), State: r.PostFormValue("state")}
	res, wait, lerr := l.limits.reserve(r.Context(), perAddress(clientIP(r)), perIdentifier("totp", st.userID))
	if lerr != nil {
		l.limited(w, r, lerr, wait, "totp", st.userID, "totp", pg)
		return
	}
	u, err := l.p.st.GetUserByID(r.Context(), st.userID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		l.limits.release(context.WithoutCancel(r.Context()), res)
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	reason := ""
	step, valid := matchTOTP(u.TOTPSecret, strings.TrimSpace(r.PostFormValue("code")), time.Now())
	switch {
	case err != nil || u.TOTPSecret == "" || !valid:
		reason = "invalid_code"
	default:
		fresh, aerr := l.p.st.AcceptTOTPStep(r.Context(), u.ID, step)
		if aerr != nil {
			l.limits.release(context.WithoutCancel(r.Context()), res)
			l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
			return
		}
		if !fresh {
			reason = "reused_code"
		}
	}
	if reason != "" {
		l.p.audit.record(r.Context(), AuditMFAFailed, slog.String("user_id", st.userID), slog.String("client_ip", clientIP(r)),
			slog.String("client_id", ar.ClientID), slog.String("reason", reason))
		msg := "That code is not valid."
		if reason == "reused_code" {
			msg = "That code was already used. Wait for the next one."
		}
		l.secondFactorPage(w, r, http.StatusOK, ar, nonce, st, msg)
		return
	}
	l.limits.release(context.WithoutCancel(r.Context()), res)
	st.amr = "pwd otp mfa"
	l.authenticated(w, r, ar, nonce, st, true)
}

// secondFactorPage asks for a second factor after the password: the TOTP
// form when the user enrolled TOTP, a passkey when they registered one.
// Each offer carries its own state, sealed for its own step.
func (l *loginUI) secondFactorPage(w http.ResponseWriter, r *http.Request, status int, ar store.AuthRequest, nonce string, st loginState, msg string) {
	pg := page{Title: "Two-step verification", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Error: msg}
	u, err := l.p.st.GetUserByID(r.Context(), st.userID)
	if err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	st.ceremony, st.hint = "", ""
	if u.TOTPSecret != "" {
		pg.TOTP, pg.State = true, l.sealState(st, stepTOTP, nonce)
	}
	pu, err := loadPasskeyUser(r.Context(), l.p.st, u)
	if err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	if len(pu.creds) > 0 {
		opts, cer, err := l.p.passkey.beginLogin(&pu)
		if err != nil {
			l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
			return
		}
		pst := st
		pst.ceremony = cer
		pg.Passkey, pg.PasskeyState, pg.PasskeyAction = opts, l.sealState(pst, stepPasskeyMFA, nonce), "/login/mfa/passkey"
	}
	if !pg.TOTP && pg.Passkey == "" {
		// Every passkey was flagged as cloned and there is no TOTP: the
		// password alone is not enough for a user who had a second factor.
		l.errorPage(w, http.StatusForbidden, "Your passkey can no longer be used. Contact your administrator.")
		return
	}
	l.render(w, status, "totp", pg)
}

// authenticated runs once the user is known: a fresh login starts an SSO
// session; third-party clients then ask for consent; finally the browser is
// sent to op's callback, which issues the code.
func (l *loginUI) authenticated(w http.ResponseWriter, r *http.Request, ar store.AuthRequest, nonce string, st loginState, fresh bool) {
	missing, err := l.missingFactor(r.Context(), st)
	if err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	if missing != "" {
		// A session from before the user enrolled a second factor: ask for
		// it now instead of completing with fewer factors than they have.
		if hasPrompt(ar, oidc.PromptNone) {
			l.redirectError(w, r, ar, oidc.ErrLoginRequired())
			return
		}
		l.secondFactorPage(w, r, http.StatusOK, ar, nonce, st, "")
		return
	}
	if fresh {
		if err := l.startSession(w, r, st, nonce); err != nil {
			l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
			return
		}
	}
	if fresh || st.federated {
		// The username step this login began with was no probe.
		l.limits.refund(context.WithoutCancel(r.Context()), identifyLimit(clientIP(r)))
		l.p.audit.record(r.Context(), AuditLoginSucceeded, slog.String("user_id", st.userID), slog.String("client_ip", clientIP(r)),
			slog.String("client_id", ar.ClientID), slog.String("amr", st.amr), slog.Bool("federated", st.federated))
	}
	c, err := l.p.storage.client(r.Context(), ar.ClientID)
	if err != nil {
		l.errorPage(w, http.StatusBadRequest, "The application is no longer registered.")
		return
	}
	if !c.FirstParty || hasPrompt(ar, oidc.PromptConsent) {
		if hasPrompt(ar, oidc.PromptNone) {
			l.redirectError(w, r, ar, &oidc.Error{ErrorType: "consent_required", Description: "the user has not consented"})
			return
		}
		name := c.Name
		if name == "" {
			name = c.ID
		}
		l.render(w, http.StatusOK, "consent", page{Title: "Allow access?", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), State: l.sealState(st, stepConsent, nonce),
			ClientName: name, Scopes: ar.Scopes})
		return
	}
	l.complete(w, r, ar, nonce, st)
}

// consent is POST /consent.
func (l *loginUI) consent(w http.ResponseWriter, r *http.Request) {
	ar, nonce, st, ok := l.stepForm(w, r, stepConsent)
	if !ok {
		return
	}
	decision := "deny"
	if r.PostFormValue("decision") == "allow" {
		decision = "allow"
	}
	l.p.audit.record(r.Context(), AuditConsent, slog.String("user_id", st.userID), slog.String("client_id", ar.ClientID),
		slog.String("decision", decision), slog.String("scopes", strings.Join(ar.Scopes, " ")))
	if decision != "allow" {
		l.redirectError(w, r, ar, oidc.ErrAccessDenied().WithDescription("the user denied access"))
		return
	}
	l.complete(w, r, ar, nonce, st)
}

func (l *loginUI) complete(w http.ResponseWriter, r *http.Request, ar store.AuthRequest, nonce string, st loginState) {
	// Defense in depth: whatever path led here, no login completes with
	// fewer factors than the user has.
	if missing, err := l.missingFactor(r.Context(), st); err != nil || missing != "" {
		l.errorPage(w, http.StatusBadRequest, "Your sign-in could not be completed. Please start again from the application.")
		return
	}
	amr := strings.Fields(st.amr)
	if err := l.p.st.CompleteAuthRequest(r.Context(), ar.ID, st.userID, st.authTime, amr); err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	cb := op.AuthCallbackURL(l.p.op)(r.Context(), ar.ID)
	// Stay on the host the browser is on: the callback is relative.
	if u, err := url.Parse(cb); err == nil {
		cb = u.RequestURI()
	}
	http.Redirect(w, r, cb+"&b="+url.QueryEscape(l.bindCallback(ar.ID, nonce)), http.StatusSeeOther)
}

// redirectError sends an OAuth error back to the client's redirect_uri.
func (l *loginUI) redirectError(w http.ResponseWriter, r *http.Request, ar store.AuthRequest, e *oidc.Error) {
	op.AuthRequestError(w, r, &authRequest{ar}, e, l.p.op)
}

// --- sessions ---

const ssoCookie = "mrd_sso_"

// ssoBindSep separates the session handle from its browser binding in the
// SSO cookie (routing artifacts never contain it).
const ssoBindSep = "~"

// ssoCookieName is host-only (__Host- with https): the session cookie is
// sent only to the host that set it (the region's host, or the global host
// while this region served it), never to other regions or the hub.
func (l *loginUI) ssoCookieName() string {
	return l.cookieName(ssoCookie+l.p.cfg.Region, true)
}

// ssoBinding binds a session handle to the browser's nonce cookie (itself
// host-only): an SSO cookie replayed without that browser's nonce cookie
// signs nobody in.
func (l *loginUI) ssoBinding(handle, nonce string) string {
	return l.mac("sso", l.p.cfg.Region, handle, nonce)
}

func (l *loginUI) startSession(w http.ResponseWriter, r *http.Request, st loginState, nonce string) error {
	if nonce == "" {
		return errors.New("region: no browser nonce to bind the session to")
	}
	handle, err := l.p.codec.New(routing.KindSession, l.p.cfg.Region)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	s := store.Session{Hash: store.Digest(handle), UserID: st.userID, AuthTime: st.authTime, AMR: strings.Fields(st.amr),
		CreatedAt: now, ExpiresAt: now.Add(l.p.cfg.Lifetimes.Session)}
	if err := l.p.st.CreateSession(r.Context(), s); err != nil {
		return err
	}
	if old, ok := l.sessionHandle(r); ok {
		_ = l.p.st.DeleteSession(r.Context(), store.Digest(old))
	}
	http.SetCookie(w, &http.Cookie{Name: l.ssoCookieName(), Value: handle + ssoBindSep + l.ssoBinding(handle, nonce), Path: "/",
		HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, Expires: s.ExpiresAt})
	name := l.p.signOutName(l.p.cfg.Region)
	if v, err := l.p.signOut.SealString([]byte(handle), name, s.ExpiresAt); err == nil {
		http.SetCookie(w, &http.Cookie{Name: name, Value: v, Path: "/", Domain: l.p.cfg.CookieDomain,
			HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, Expires: s.ExpiresAt})
	}
	return nil
}

// signOutCookie starts the name of the sign-out cookie: the session handle
// sealed under the region's cookie key, scoped to the cookie domain so a
// logout on any host ends the session, but good for nothing else: it signs
// nobody in, and only the region that sealed it can open it (a peer
// forwards it over an authenticated hop, /internal/end-session).
const signOutCookie = "mrd_so_"

// signOutName is region's sign-out cookie name.
func (p *Provider) signOutName(region string) string {
	name := signOutCookie + region
	switch {
	case !p.cfg.SecureCookies:
		return name
	case p.cfg.CookieDomain == "":
		return "__Host-" + name
	}
	return "__Secure-" + name
}

// signedOutHandle opens this region's sign-out cookie value.
func (p *Provider) signedOutHandle(v string) (string, bool) {
	plain, err := p.signOut.OpenString(v, p.signOutName(p.cfg.Region), time.Now(), 512)
	if err != nil {
		return "", false
	}
	tag, err := p.codec.VerifyKind(string(plain), routing.KindSession)
	if err != nil || tag.Region != p.cfg.Region {
		return "", false
	}
	return string(plain), true
}

// sessionHandle returns this region's session handle from the browser's
// SSO cookie, when the cookie is bound to the browser's nonce cookie.
func (l *loginUI) sessionHandle(r *http.Request) (string, bool) {
	nonce := l.existingNonce(r)
	if nonce == "" {
		return "", false
	}
	name := l.ssoCookieName()
	for _, c := range r.Cookies() {
		if c.Name != name {
			continue
		}
		handle, bind, ok := strings.Cut(c.Value, ssoBindSep)
		if !ok || !hmac.Equal([]byte(bind), []byte(l.ssoBinding(handle, nonce))) {
			continue
		}
		tag, err := l.p.codec.VerifyKind(handle, routing.KindSession)
		if err != nil || tag.Region != l.p.cfg.Region {
			continue
		}
		return handle, true
	}
	return "", false
}

func (l *loginUI) session(r *http.Request) (store.Session, bool) {
	h, ok := l.sessionHandle(r)
	if !ok {
		return store.Session{}, false
	}
	s, err := l.p.st.GetSession(r.Context(), store.Digest(h))
	if err != nil || time.Now().After(s.ExpiresAt) {
		return store.Session{}, false
	}
	return s, true
}

// endSession deletes the browser's SSO session (RP-initiated logout), and
// the sessions other regions hold for it whose cookies this host sees (the
// global host is served by whichever region GeoDNS picks, so it may hold
// several regions' host-only cookies): each is cleared in the browser and
// ended at its region over an authenticated hop (best effort).
func (l *loginUI) endSession(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if h, ok := l.sessionHandle(r); ok {
		_ = l.p.st.DeleteSession(ctx, store.Digest(h))
	}
	for _, c := range r.Cookies() {
		name := strings.TrimPrefix(strings.TrimPrefix(c.Name, "__Secure-"), "__Host-")
		if reg, ok := strings.CutPrefix(name, signOutCookie); ok && l.p.codec.HasRegion(reg) && c.Name == l.p.signOutName(reg) {
			http.SetCookie(w, &http.Cookie{Name: c.Name, Value: "", Path: "/", Domain: l.p.cfg.CookieDomain,
				HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: -1})
			if reg == l.p.cfg.Region {
				if h, ok := l.p.signedOutHandle(c.Value); ok {
					_ = l.p.st.DeleteSession(ctx, store.Digest(h))
				}
			} else {
				l.endRemote(ctx, reg, url.Values{"signout": {c.Value}})
			}
			continue
		}
		other, ok := strings.CutPrefix(name, ssoCookie)
		if !ok || other == l.p.cfg.Region {
			continue
		}
		handle, _, _ := strings.Cut(c.Value, ssoBindSep)
		tag, err := l.p.codec.VerifyKind(handle, routing.KindSession)
		if err != nil || tag.Region != other {
			continue
		}
		l.expireSSOCookie(w, c.Name)
		l.endRemote(ctx, other, url.Values{"session": {handle}})
	}
	l.expireSSOCookie(w, l.ssoCookieName())
	l.clearFedHint(w)
}

// endRemote ends a session at region other over an authenticated hop
// (best effort).
func (l *loginUI) endRemote(ctx context.Context, other string, form url.Values) {
	if l.p.cfg.Peers == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if resp, err := l.p.cfg.Peers.Call(cctx, other, "/internal/end-session", form); err == nil {
		resp.Body.Close()
	} else {
		l.p.log.WarnContext(ctx, "ending a session at its region failed; its cookie is cleared", "region", other, "err", err)
	}
}

// expireSSOCookie clears an SSO cookie, and its domain-wide predecessor
// (set before session cookies became host-only) when a cookie domain is
// configured.
func (l *loginUI) expireSSOCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/",
		HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	if l.p.cfg.CookieDomain != "" {
		legacy := name
		if l.p.cfg.SecureCookies {
			legacy = "__Secure-" + strings.TrimPrefix(strings.TrimPrefix(name, "__Host-"), "__Secure-")
		}
		http.SetCookie(w, &http.Cookie{Name: legacy, Value: "", Path: "/", Domain: l.p.cfg.CookieDomain,
			HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	}
}

func hasPrompt(ar store.AuthRequest, p string) bool {
	for _, x := range ar.Prompt {
		if x == p {
			return true
		}
	}
	return false
}

func withinMaxAge(ar store.AuthRequest, authTime time.Time) bool {
	if ar.MaxAge == nil {
		return true
	}
	return time.Since(authTime) <= time.Duration(*ar.MaxAge)*time.Second
}
