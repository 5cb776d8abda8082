package region

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// passkeyCSP is the policy of pages that run a WebAuthn ceremony: the
// login pages' policy plus the one same-origin script.
const passkeyCSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"

//go:embed webauthn.js
var webauthnJS []byte

// serveWebAuthnJS is GET /login/webauthn.js, the ceremony script of the
// passkey pages (login and /account).
func serveWebAuthnJS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(webauthnJS)
}

// AuditPasskey events: a passkey sign-in refused (reason: unknown,
// invalid, cloned credential, reused challenge), a passkey added or
// removed at /account.
const (
	AuditPasskeyFailed  = "passkey.failed"
	AuditPasskeyAdded   = "passkey.added"
	AuditPasskeyRemoved = "passkey.removed"
)

const passkeyRefused = "That passkey could not be used to sign in."

// passkeyPage renders the first-factor passkey page for the username
// shown on the password page: a discoverable ceremony (no credential
// list), the same for every username, known or not.
func (l *loginUI) passkeyPage(w http.ResponseWriter, ar store.AuthRequest, nonce, username, msg string) {
	opts, cer, err := l.p.passkey.beginLogin(nil)
	if err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return
	}
	st := loginState{id: ar.ID, ceremony: cer, hint: username, authTime: time.Now().UTC()}
	l.render(w, http.StatusOK, "passkey", page{Title: "Sign in with a passkey", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: username,
		Error: msg, Passkey: opts, PasskeyState: l.sealState(st, stepPasskey, nonce), PasskeyAction: "/login/passkey/verify"})
}

// passkeyStart is POST /login/passkey: the password page's "use a passkey
// instead".
func (l *loginUI) passkeyStart(w http.ResponseWriter, r *http.Request) {
	ar, nonce, ok := l.pendingForm(w, r)
	if !ok {
		return
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	if username == "" || len(username) > 256 {
		l.errorPage(w, http.StatusBadRequest, "Enter your username first.")
		return
	}
	l.passkeyPage(w, ar, nonce, username, "")
}

// freshChallenge is consumeChallenge for a login step: false after
// answering the unavailable page when the attempt store fails.
func (l *loginUI) freshChallenge(w http.ResponseWriter, r *http.Request, ceremony string) (fresh, ok bool) {
	fresh, err := l.consumeChallenge(r.Context(), ceremony)
	if err != nil {
		l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
		return false, false
	}
	return fresh, true
}

// consumeChallenge makes a ceremony's challenge single-use across the
// region's nodes: a second verification of the same challenge (a replayed
// form, or a counterless authenticator's assertion posted twice) is
// refused.
func (l *loginUI) consumeChallenge(ctx context.Context, ceremony string) (bool, error) {
	sd, err := decodeCeremony(ceremony)
	if err != nil || sd.Challenge == "" {
		return false, nil
	}
	now := time.Now()
	return l.p.st.ReserveAttempt(ctx, "webauthn:"+sd.Challenge, time.Unix(0, 0).UTC(), 1, now.Add(10*time.Minute))
}

// passkeyVerify is POST /login/passkey/verify: a passkey as the first
// factor. The credential must belong to the username on the page.
func (l *loginUI) passkeyVerify(w http.ResponseWriter, r *http.Request) {
	ar, nonce, st, ok := l.stepForm(w, r, stepPasskey)
	if !ok {
		return
	}
	name, nerr := NormalizeUsername(st.hint)
	ip := clientIP(r)
	res, wait, lerr := l.limits.reserve(r.Context(), perAddress(ip), perIdentifier("user", name))
	if lerr != nil {
		l.limited(w, r, lerr, wait, "passkey", "", "passkey", page{Title: "Sign in with a passkey", ID: ar.ID, CSRF: l.csrf(ar.ID, nonce), Username: st.hint})
		return
	}
	fresh, ok := l.freshChallenge(w, r, st.ceremony)
	if !ok {
		return
	}
	reason := "reused_challenge"
	var out passkeyResult
	var err error
	if fresh && nerr == nil {
		out, reason, err = l.p.passkey.finishLogin(r.Context(), l.p.st, func(u store.User) bool { return u.Username == name },
			st.ceremony, r.PostFormValue("credential"))
		if err != nil && !errors.Is(err, errPasskey) {
			l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
			return
		}
	}
	if reason != "" {
		l.p.audit.record(r.Context(), AuditPasskeyFailed, slog.String("client_ip", ip), slog.String("client_id", ar.ClientID),
			slog.String("step", "first_factor"), slog.String("reason", reason))
		l.passkeyPage(w, ar, nonce, st.hint, passkeyRefused)
		return
	}
	l.limits.release(context.WithoutCancel(r.Context()), res)
	// A passkey without user verification proves possession only: it is
	// not a sign-in on its own (the ceremony requires verification).
	if !strings.Contains(strings.Join(out.amr, " "), "mfa") {
		l.passkeyPage(w, ar, nonce, st.hint, passkeyRefused)
		return
	}
	l.authenticated(w, r, ar, nonce, loginState{id: ar.ID, userID: out.user.u.ID, amr: strings.Join(out.amr, " "), authTime: time.Now().UTC()}, true)
}

// passkeyMFA is POST /login/mfa/passkey: a passkey as the second factor
// after the password.
func (l *loginUI) passkeyMFA(w http.ResponseWriter, r *http.Request) {
	ar, nonce, st, ok := l.stepForm(w, r, stepPasskeyMFA)
	if !ok {
		return
	}
	ip := clientIP(r)
	res, wait, lerr := l.limits.reserve(r.Context(), perAddress(ip), perIdentifier("totp", st.userID))
	if lerr != nil {
		l.limited(w, r, lerr, wait, "passkey", st.userID, "error", page{Title: "Two-step verification"})
		return
	}
	fresh, ok := l.freshChallenge(w, r, st.ceremony)
	if !ok {
		return
	}
	reason := "reused_challenge"
	var out passkeyResult
	var err error
	if fresh {
		out, reason, err = l.p.passkey.finishLogin(r.Context(), l.p.st, func(u store.User) bool { return u.ID == st.userID },
			st.ceremony, r.PostFormValue("credential"))
		if err != nil && !errors.Is(err, errPasskey) {
			l.errorPage(w, http.StatusServiceUnavailable, "The sign-in service is temporarily unavailable.")
			return
		}
	}
	if reason != "" {
		l.p.audit.record(r.Context(), AuditMFAFailed, slog.String("user_id", st.userID), slog.String("client_ip", ip),
			slog.String("client_id", ar.ClientID), slog.String("method", "passkey"), slog.String("reason", reason))
		l.secondFactorPage(w, r, http.StatusOK, ar, nonce, loginState{id: ar.ID, userID: st.userID, amr: st.amr, authTime: st.authTime}, passkeyRefused)
		return
	}
	l.limits.release(context.WithoutCancel(r.Context()), res)
	amr := []string{"pwd"}
	for _, m := range out.amr {
		if m != "mfa" {
			amr = append(amr, m)
		}
	}
	st.amr = strings.Join(append(amr, "mfa"), " ")
	st.ceremony, st.hint = "", ""
	l.authenticated(w, r, ar, nonce, st, true)
}
