package region

import (
	"net/http"
	"time"
)

// The federated-login hint lets SSO work for users resident elsewhere
// without the entry region keeping anything about them: after a federated
// login the entry region gives the browser an encrypted, host-only cookie
// holding the username (scoped like the SSO cookie), and the next authorization request in that browser
// goes straight to the hub (and the resident region's SSO session) instead
// of asking for the username again. The data stays in the user's browser.

const fedHintCookie = "mrd_fed_"

// fedHintName is scoped like the SSO cookie (the global domain), so a
// logout through any host of the federation can clear it.
func (l *loginUI) fedHintName() string {
	return l.cookieName(fedHintCookie+l.p.cfg.Region, l.p.cfg.CookieDomain == "")
}

// fedHintMaxLen bounds the cookie value opened (a username is at most a
// few hundred bytes).
const fedHintMaxLen = 2048

func (l *loginUI) setFedHint(w http.ResponseWriter, username string) {
	if username == "" {
		return
	}
	exp := time.Now().Add(l.p.cfg.Lifetimes.Session)
	v, err := l.p.fedHint.SealString([]byte(username), l.p.cfg.Region, exp)
	if err != nil {
		return // the hint is a convenience: without it the user types the username again
	}
	http.SetCookie(w, &http.Cookie{Name: l.fedHintName(), Value: v,
		Path: "/", Domain: l.p.cfg.CookieDomain, HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, Expires: exp})
}

func (l *loginUI) fedHint(r *http.Request) (string, bool) {
	c, err := r.Cookie(l.fedHintName())
	if err != nil {
		return "", false
	}
	name, err := l.p.fedHint.OpenString(c.Value, l.p.cfg.Region, time.Now(), fedHintMaxLen)
	if err != nil || len(name) == 0 {
		return "", false
	}
	return string(name), true
}

func (l *loginUI) clearFedHint(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: l.fedHintName(), Value: "", Path: "/", Domain: l.p.cfg.CookieDomain, HttpOnly: true,
		Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}
