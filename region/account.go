package region

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/seal"
)

// AccountOptions configure account self-service (/account).
type AccountOptions struct {
	// EditableClaims are the profile claims users may change.
	EditableClaims []string
	// ReauthWindow is how recent the session's sign-in must be for
	// sensitive changes (second factors, passkeys); zero: 10 minutes.
	ReauthWindow time.Duration
	// HomeURLs maps every region id to the base URL of its region host:
	// /account for a user resident elsewhere sends the browser there.
	HomeURLs map[string]string
}

// Audit events of account self-service.
const (
	AuditPasswordChanged = "account.password_changed"
	AuditTOTPEnrolled    = "account.totp_enrolled"
	AuditTOTPRemoved     = "account.totp_removed"
	AuditSessionEnded    = "account.session_ended"
	AuditProfileChanged  = "account.profile_changed"
	AuditConsentRevoked  = "account.consent_revoked"
)

// minPasswordLength is the shortest new password /account accepts.
const minPasswordLength = 10

// accountUI is /account: the signed-in user's own account, served only by
// their home region (the session names the user; a federated session
// sends the browser to the home region's host). Every form carries a CSRF
// token bound to the session handle and the browser; sensitive changes
// need a recent sign-in, a new password the current one.
type accountUI struct {
	p        *Provider
	l        *loginUI
	box      *seal.Box // TOTP secrets and passkey ceremonies in forms
	clientID string    // the built-in sign-in client
}

func newAccountUI(p *Provider) (*accountUI, error) {
	box, err := seal.New("meridian account v1", p.cfg.CookieKey, p.cfg.PreviousCookieKeys...)
	if err != nil {
		return nil, err
	}
	id, err := p.codec.Derive(routing.KindClient, p.cfg.Region, "account")
	if err != nil {
		return nil, err
	}
	a := &accountUI{p: p, l: p.login, box: box, clientID: id}
	var redirects []string
	for _, base := range a.bases() {
		redirects = append(redirects, base+"/account/callback")
	}
	if p.storage.static == nil {
		p.storage.static = map[string]*client{}
	}
	p.storage.static[id] = &client{Client: store.Client{ID: id, Name: "Your account", RedirectURIs: redirects,
		GrantTypes: []string{"authorization_code"}, AuthMethod: AuthNone, FirstParty: true}, idTokenTTL: p.cfg.Lifetimes.IDToken}
	return a, nil
}

// bases are the URLs this region's pages are served on: the global host
// and the region's own hosts (primary and DR).
func (a *accountUI) bases() []string {
	out := []string{strings.TrimSuffix(a.p.cfg.GlobalIssuer, "/"), strings.TrimSuffix(a.p.cfg.Issuer, "/")}
	if u, err := url.Parse(a.p.cfg.Issuer); err == nil {
		for _, h := range a.p.cfg.RegionHosts {
			v := *u
			if port := u.Port(); port != "" {
				v.Host = h + ":" + port
			} else {
				v.Host = h
			}
			out = append(out, strings.TrimSuffix(v.String(), "/"))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (a *accountUI) reauthWindow() time.Duration {
	if a.p.cfg.Account.ReauthWindow > 0 {
		return a.p.cfg.Account.ReauthWindow
	}
	return 10 * time.Minute
}

// accountPage is the data of the account pages.
type accountPage struct {
	Title, Region, Error, Message string
	CSRF                          string
	Username                      string
	TOTP                          bool
	TOTPSecret, TOTPURL, TOTPSeal string
	Passkeys                      []accountPasskey
	Sessions                      []accountSession
	Claims                        []accountClaim
	Apps                          []accountApp
	Recent                        bool
	// Registration ceremony for a new passkey.
	Passkey, PasskeyState, PasskeyAction string
}

type accountPasskey struct {
	ID, Name, Created, LastUsed string
	Cloned                      bool
}

type accountSession struct {
	ID, Created, AuthTime, Methods string
	Current                        bool
}

type accountClaim struct{ Name, Value string }

type accountApp struct{ ID, Name string }

// grants are the applications holding the user's tokens (their consents),
// federation clients (the hub, peer regions) left out: those carry the
// user's logins elsewhere, not an application's access.
func (a *accountUI) grants(ctx context.Context, userID string) ([]accountApp, error) {
	ids, err := a.p.st.ListUserClients(ctx, userID)
	if err != nil {
		return nil, err
	}
	var out []accountApp
	for _, id := range ids {
		c, err := a.p.storage.client(ctx, id)
		if err != nil || slices.Contains(c.Scopes, ScopeFederation) || id == a.clientID {
			continue
		}
		name := c.Name
		if name == "" {
			name = id
		}
		out = append(out, accountApp{ID: id, Name: name})
	}
	return out, nil
}

// who is the signed-in user of a request at /account.
type who struct {
	handle string
	sess   store.Session
	user   store.User
	nonce  string
}

// signedIn returns the request's session at this region and its user;
// otherwise it has answered (a redirect to sign in, or to the home region
// for a federated session) and returns false.
func (a *accountUI) signedIn(w http.ResponseWriter, r *http.Request) (who, bool) {
	h, ok := a.l.sessionHandle(r)
	var sess store.Session
	if ok {
		var err error
		sess, err = a.p.st.GetSession(r.Context(), store.Digest(h))
		ok = err == nil && time.Now().Before(sess.ExpiresAt)
	}
	if !ok {
		if r.Method != http.MethodGet {
			a.l.errorPage(w, http.StatusForbidden, "Your session has ended. Open your account page again to sign in.")
			return who{}, false
		}
		a.signIn(w, r, false)
		return who{}, false
	}
	if home, _, fed := ParseFederatedSubject(sess.UserID); fed {
		// The account lives at the home region; nothing of it is here.
		base, known := a.p.cfg.Account.HomeURLs[home]
		if !known || r.Method != http.MethodGet {
			a.l.errorPage(w, http.StatusBadRequest, "Your account is managed by your home region.")
			return who{}, false
		}
		http.Redirect(w, r, strings.TrimSuffix(base, "/")+"/account", http.StatusSeeOther)
		return who{}, false
	}
	u, err := a.p.st.GetUserByID(r.Context(), sess.UserID)
	if errors.Is(err, store.ErrNotFound) {
		a.l.errorPage(w, http.StatusForbidden, "This account no longer exists.")
		return who{}, false
	}
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return who{}, false
	}
	return who{handle: h, sess: sess, user: u, nonce: a.l.existingNonce(r)}, true
}

// signIn starts a sign-in at this region with the built-in client, coming
// back to /account/callback on the same host; reauth forces a fresh login
// (prompt=login) for a sensitive change.
func (a *accountUI) signIn(w http.ResponseWriter, r *http.Request, reauth bool) {
	nonce := a.l.browserNonce(w, r)
	base := a.baseOf(r)
	if base == "" {
		a.l.errorPage(w, http.StatusBadRequest, "Open your account page through a Meridian host.")
		return
	}
	verifier := a.l.mac("account-pkce", nonce)
	q := url.Values{"client_id": {a.clientID}, "response_type": {"code"}, "scope": {"openid"},
		"redirect_uri": {base + "/account/callback"}, "state": {a.l.mac("account-state", nonce)},
		"code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}}
	if reauth {
		q.Set("prompt", "login")
	}
	http.Redirect(w, r, "/authorize?"+q.Encode(), http.StatusSeeOther)
}

// baseOf is the configured base URL of the request's host, "" for a host
// that is not this region's.
func (a *accountUI) baseOf(r *http.Request) string {
	for _, b := range a.bases() {
		if u, err := url.Parse(b); err == nil && strings.EqualFold(u.Host, r.Host) {
			return b
		}
	}
	return ""
}

// callback is GET /account/callback: the sign-in finished. The code is
// not exchanged (this region issued it to itself): it names the
// authorization request, which says who signed in, and is deleted with it
// at once. A local user's SSO session now signs /account in; a user
// resident elsewhere (no session is kept here for them) is sent to their
// home region's /account. The state binds the callback to the browser
// that began the sign-in.
func (a *accountUI) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	nonce := a.l.existingNonce(r)
	if nonce == "" || !hmac.Equal([]byte(q.Get("state")), []byte(a.l.mac("account-state", nonce))) {
		a.l.errorPage(w, http.StatusBadRequest, "This sign-in link is not valid. Open your account page again.")
		return
	}
	if q.Get("error") != "" || q.Get("code") == "" {
		a.l.errorPage(w, http.StatusForbidden, "Sign-in did not complete. Open your account page again.")
		return
	}
	ar, err := a.p.st.GetAuthRequestByCode(r.Context(), store.Digest(q.Get("code")))
	if err != nil || ar.ClientID != a.clientID || !ar.Done {
		a.l.errorPage(w, http.StatusBadRequest, "This sign-in link is not valid. Open your account page again.")
		return
	}
	_ = a.p.st.DeleteAuthRequest(r.Context(), ar.ID)
	if home, _, fed := ParseFederatedSubject(ar.UserID); fed {
		if base, ok := a.p.cfg.Account.HomeURLs[home]; ok {
			http.Redirect(w, r, strings.TrimSuffix(base, "/")+"/account", http.StatusSeeOther)
			return
		}
		a.l.errorPage(w, http.StatusBadRequest, "Your account is managed by your home region.")
		return
	}
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// csrf is the account forms' token: bound to the session and the browser.
func (a *accountUI) csrf(wh who) string { return a.l.mac("account-csrf", wh.handle, wh.nonce) }

// form authenticates a posted account form: a session, its user and a
// valid CSRF token.
func (a *accountUI) form(w http.ResponseWriter, r *http.Request) (who, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		a.l.errorPage(w, http.StatusBadRequest, "The form could not be read.")
		return who{}, false
	}
	wh, ok := a.signedIn(w, r)
	if !ok {
		return who{}, false
	}
	if wh.nonce == "" || !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(a.csrf(wh))) {
		a.l.errorPage(w, http.StatusForbidden, "Your session expired. Open your account page again.")
		return who{}, false
	}
	return wh, true
}

// recent reports whether the session's sign-in is recent enough for a
// sensitive change; if not it answers with the overview asking to sign in
// again.
func (a *accountUI) recent(w http.ResponseWriter, r *http.Request, wh who) bool {
	if time.Since(wh.sess.AuthTime) <= a.reauthWindow() {
		return true
	}
	a.render(w, r, wh, http.StatusForbidden, "Sign in again to make this change.", "")
	return false
}

func (a *accountUI) sealFor(wh who, purpose, v string) string {
	s, _ := a.box.SealString([]byte(v), purpose+"|"+wh.handle, time.Now().Add(10*time.Minute))
	return s
}

func (a *accountUI) openFor(wh who, purpose, v string) (string, bool) {
	b, err := a.box.OpenString(v, purpose+"|"+wh.handle, time.Now(), 8192)
	return string(b), err == nil
}

// render writes the account overview.
func (a *accountUI) render(w http.ResponseWriter, r *http.Request, wh who, status int, errMsg, msg string) {
	ctx := r.Context()
	pg := accountPage{Title: "Your account", Region: a.p.cfg.Region, Error: errMsg, Message: msg, CSRF: a.csrf(wh),
		Username: wh.user.Username, TOTP: wh.user.TOTPSecret != "", Recent: time.Since(wh.sess.AuthTime) <= a.reauthWindow()}
	rows, err := a.p.st.ListWebAuthnCredentials(ctx, wh.user.ID)
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	for _, c := range rows {
		pk := accountPasskey{ID: base64.RawURLEncoding.EncodeToString(c.ID), Name: c.Name, Created: c.CreatedAt.Format(time.DateTime), Cloned: c.CloneWarning}
		if !c.LastUsedAt.IsZero() {
			pk.LastUsed = c.LastUsedAt.Format(time.DateTime)
		}
		pg.Passkeys = append(pg.Passkeys, pk)
	}
	sessions, err := a.p.st.ListUserSessions(ctx, wh.user.ID)
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	cur := store.Digest(wh.handle)
	for _, s := range sessions {
		pg.Sessions = append(pg.Sessions, accountSession{ID: hex.EncodeToString(s.Hash[:]), Created: s.CreatedAt.Format(time.DateTime),
			AuthTime: s.AuthTime.Format(time.DateTime), Methods: strings.Join(s.AMR, " "), Current: s.Hash == cur})
	}
	for _, name := range a.p.cfg.Account.EditableClaims {
		pg.Claims = append(pg.Claims, accountClaim{Name: name, Value: wh.user.Claims[name]})
	}
	if pg.Apps, err = a.grants(ctx, wh.user.ID); err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	if pg.Recent {
		pu, err := loadPasskeyUser(ctx, a.p.st, wh.user)
		if err == nil {
			var opts, cer string
			if opts, cer, err = a.p.passkey.beginRegistration(pu); err == nil {
				pg.Passkey, pg.PasskeyState, pg.PasskeyAction = opts, a.sealFor(wh, "passkey", cer), "/account/passkeys"
			}
		}
		if err != nil && !errors.Is(err, errPasskeysOff) {
			a.p.log.ErrorContext(ctx, "passkey registration options", "err", err)
		}
	}
	h := w.Header()
	h.Set("Content-Security-Policy", passkeyCSP)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = a.l.tmpl.ExecuteTemplate(w, "account", pg)
}

// overview is GET /account.
func (a *accountUI) overview(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.signedIn(w, r)
	if !ok {
		return
	}
	a.render(w, r, wh, http.StatusOK, "", r.URL.Query().Get("done"))
}

// reauth is GET /account/signin: sign in again (prompt=login) before a
// sensitive change.
func (a *accountUI) reauth(w http.ResponseWriter, r *http.Request) { a.signIn(w, r, true) }

func (a *accountUI) done(w http.ResponseWriter, r *http.Request, msg string) {
	http.Redirect(w, r, "/account?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

// changePassword is POST /account/password: the current password is
// required and throttled exactly like a login's; on success every other
// session of the user ends.
func (a *accountUI) changePassword(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	ip := clientIP(r)
	cost, ok := a.l.argon.acquire(wh.user.PasswordHash)
	if !ok {
		retryAfter(w, time.Second)
		a.render(w, r, wh, http.StatusServiceUnavailable, "The service is busy. Try again in a moment.", "")
		return
	}
	res, wait, lerr := a.l.limits.reserve(ctx, perAddress(ip), perIdentifier("user", wh.user.Username))
	if lerr != nil {
		a.l.argon.release(cost)
		if !errors.Is(lerr, errLimited) {
			a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
			return
		}
		a.p.audit.record(ctx, AuditLockout, slog.String("step", "account_password"), slog.String("client_ip", ip), slog.String("user_id", wh.user.ID))
		retryAfter(w, wait)
		a.render(w, r, wh, http.StatusTooManyRequests, "Too many attempts. Wait a minute and try again.", "")
		return
	}
	perr := VerifyPassword(wh.user.PasswordHash, r.PostFormValue("current"))
	a.l.argon.spend(cost)
	if perr != nil {
		a.p.audit.record(ctx, AuditLoginFailed, slog.String("step", "account_password"), slog.String("client_ip", ip),
			slog.String("user_id", wh.user.ID), slog.String("reason", "bad_password"))
		a.render(w, r, wh, http.StatusForbidden, "Your current password is not correct.", "")
		return
	}
	a.l.limits.release(context.WithoutCancel(ctx), res)
	next := r.PostFormValue("new")
	switch {
	case len([]rune(next)) < minPasswordLength || len(next) > 1024:
		a.render(w, r, wh, http.StatusBadRequest, "Choose a new password of at least 10 characters.", "")
		return
	case next != r.PostFormValue("confirm"):
		a.render(w, r, wh, http.StatusBadRequest, "The new passwords do not match.", "")
		return
	}
	hash, err := HashPassword(next)
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	u := wh.user
	u.PasswordHash = hash
	if err := a.p.st.UpdateUser(ctx, u); err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	n, err := a.p.st.DeleteUserSessions(ctx, u.ID, store.Digest(wh.handle))
	if err != nil {
		a.p.log.ErrorContext(ctx, "ending sessions after a password change", "err", err)
	}
	a.p.audit.record(ctx, AuditPasswordChanged, slog.String("user_id", u.ID), slog.String("client_ip", ip), slog.Int("sessions_ended", n))
	a.done(w, r, "Your password was changed; your other sessions were ended.")
}

// totpBegin is POST /account/totp/begin: a new secret to scan, sealed in
// the confirmation form (nothing is stored until a code confirms it).
func (a *accountUI) totpBegin(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok || !a.recent(w, r, wh) {
		return
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Meridian", AccountName: wh.user.Username})
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	pg := accountPage{Title: "Set up an authenticator app", Region: a.p.cfg.Region, CSRF: a.csrf(wh), Username: wh.user.Username,
		TOTPSecret: key.Secret(), TOTPURL: key.URL(), TOTPSeal: a.sealFor(wh, "totp", key.Secret())}
	loginSetHeaders(w)
	_ = a.l.tmpl.ExecuteTemplate(w, "account-totp", pg)
}

// totpConfirm is POST /account/totp/confirm: the first code proves the app
// holds the secret.
func (a *accountUI) totpConfirm(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok || !a.recent(w, r, wh) {
		return
	}
	secret, ok := a.openFor(wh, "totp", r.PostFormValue("secret"))
	if !ok {
		a.render(w, r, wh, http.StatusBadRequest, "The setup expired. Start again.", "")
		return
	}
	step, valid := matchTOTP(secret, strings.TrimSpace(r.PostFormValue("code")), time.Now())
	if !valid {
		a.render(w, r, wh, http.StatusBadRequest, "That code is not valid. Start the setup again.", "")
		return
	}
	u := wh.user
	u.TOTPSecret = secret
	if err := a.p.st.UpdateUser(r.Context(), u); err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	_, _ = a.p.st.AcceptTOTPStep(r.Context(), u.ID, step)
	a.p.audit.record(r.Context(), AuditTOTPEnrolled, slog.String("user_id", u.ID), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "Your authenticator app is set up.")
}

// totpRemove is POST /account/totp/remove.
func (a *accountUI) totpRemove(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok || !a.recent(w, r, wh) {
		return
	}
	u := wh.user
	u.TOTPSecret = ""
	if err := a.p.st.UpdateUser(r.Context(), u); err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	a.p.audit.record(r.Context(), AuditTOTPRemoved, slog.String("user_id", u.ID), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "Your authenticator app was removed.")
}

// passkeyAdd is POST /account/passkeys: finish registering a passkey.
func (a *accountUI) passkeyAdd(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok || !a.recent(w, r, wh) {
		return
	}
	ctx := r.Context()
	cer, ok := a.openFor(wh, "passkey", r.PostFormValue("state"))
	if !ok {
		a.render(w, r, wh, http.StatusBadRequest, "The passkey setup expired. Try again.", "")
		return
	}
	if fresh, err := a.l.consumeChallenge(ctx, cer); err != nil || !fresh {
		a.render(w, r, wh, http.StatusBadRequest, "The passkey setup expired. Try again.", "")
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" || len(name) > 64 {
		name = "Passkey"
	}
	pu, err := loadPasskeyUser(ctx, a.p.st, wh.user)
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	c, err := a.p.passkey.finishRegistration(pu, cer, r.PostFormValue("credential"), name)
	if err == nil {
		err = a.p.st.AddWebAuthnCredential(ctx, c)
	}
	if err != nil {
		a.p.audit.record(ctx, AuditPasskeyFailed, slog.String("user_id", wh.user.ID), slog.String("step", "register"), slog.String("client_ip", clientIP(r)))
		a.render(w, r, wh, http.StatusBadRequest, "The passkey could not be registered.", "")
		return
	}
	a.p.audit.record(ctx, AuditPasskeyAdded, slog.String("user_id", wh.user.ID), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "Your passkey was added.")
}

// passkeyRemove is POST /account/passkeys/remove: only the user's own.
func (a *accountUI) passkeyRemove(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok || !a.recent(w, r, wh) {
		return
	}
	id, err := base64.RawURLEncoding.DecodeString(r.PostFormValue("passkey"))
	if err == nil {
		err = a.p.st.DeleteWebAuthnCredential(r.Context(), wh.user.ID, id)
	}
	if err != nil {
		a.render(w, r, wh, http.StatusNotFound, "No such passkey.", "")
		return
	}
	a.p.audit.record(r.Context(), AuditPasskeyRemoved, slog.String("user_id", wh.user.ID), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "Your passkey was removed.")
}

// endSession is POST /account/sessions/end: one of the user's own sessions.
func (a *accountUI) endSession(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	raw, err := hex.DecodeString(r.PostFormValue("session"))
	var h store.Hash
	if err != nil || len(raw) != len(h) {
		a.render(w, r, wh, http.StatusNotFound, "No such session.", "")
		return
	}
	copy(h[:], raw)
	sessions, err := a.p.st.ListUserSessions(ctx, wh.user.ID)
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	if !slices.ContainsFunc(sessions, func(s store.Session) bool { return s.Hash == h }) {
		a.render(w, r, wh, http.StatusNotFound, "No such session.", "")
		return
	}
	if err := a.p.st.DeleteSession(ctx, h); err != nil && !errors.Is(err, store.ErrNotFound) {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	a.p.audit.record(ctx, AuditSessionEnded, slog.String("user_id", wh.user.ID), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "The session was ended.")
}

// revokeConsent is POST /account/consents/revoke: every token of the
// user at one application they granted access to is revoked.
func (a *accountUI) revokeConsent(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	apps, err := a.grants(ctx, wh.user.ID)
	if err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	id := r.PostFormValue("client")
	if !slices.ContainsFunc(apps, func(app accountApp) bool { return app.ID == id }) {
		a.render(w, r, wh, http.StatusNotFound, "No such application.", "")
		return
	}
	// Through the token cache, which forgets what it cached at once.
	if err := a.p.storage.st.RevokeUserClientTokens(ctx, wh.user.ID, id); err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	a.p.audit.record(ctx, AuditConsentRevoked, slog.String("user_id", wh.user.ID), slog.String("client_id", id), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "The application's access was revoked.")
}

// profile is POST /account/profile: only the claims the operator made
// editable; every other claim is kept as it is.
func (a *accountUI) profile(w http.ResponseWriter, r *http.Request) {
	wh, ok := a.form(w, r)
	if !ok {
		return
	}
	u := wh.user
	claims := map[string]string{}
	for k, v := range u.Claims {
		claims[k] = v
	}
	for _, name := range a.p.cfg.Account.EditableClaims {
		if _, posted := r.PostForm["claim."+name]; !posted {
			continue
		}
		v := strings.TrimSpace(r.PostFormValue("claim." + name))
		if len(v) > 256 || strings.ContainsAny(v, "\x00\r\n") {
			a.render(w, r, wh, http.StatusBadRequest, "A profile value is too long or not valid.", "")
			return
		}
		if v == "" {
			delete(claims, name)
		} else {
			claims[name] = v
		}
	}
	u.Claims = claims
	if err := a.p.st.UpdateUser(r.Context(), u); err != nil {
		a.l.errorPage(w, http.StatusServiceUnavailable, "The account service is temporarily unavailable.")
		return
	}
	a.p.audit.record(r.Context(), AuditProfileChanged, slog.String("user_id", u.ID), slog.String("client_ip", clientIP(r)))
	a.done(w, r, "Your profile was saved.")
}

// s256 is an RFC 7636 S256 code challenge.
func s256(verifier string) string {
	d := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(d[:])
}

// loginSetHeaders sets the headers of an account page without a script.
func loginSetHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
}
