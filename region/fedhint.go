package region

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
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

func (l *loginUI) hintAEAD() cipher.AEAD {
	k := sha256.Sum256(append([]byte("meridian federated-login hint\x00"), l.p.cfg.CookieKey...))
	block, _ := aes.NewCipher(k[:])
	aead, _ := cipher.NewGCM(block)
	return aead
}

func (l *loginUI) setFedHint(w http.ResponseWriter, username string) {
	if username == "" {
		return
	}
	aead := l.hintAEAD()
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	exp := time.Now().Add(l.p.cfg.Lifetimes.Session)
	plain := strconv.FormatInt(exp.Unix(), 10) + "|" + username
	sealed := aead.Seal(nonce, nonce, []byte(plain), []byte(l.p.cfg.Region))
	http.SetCookie(w, &http.Cookie{Name: l.fedHintName(), Value: base64.RawURLEncoding.EncodeToString(sealed),
		Path: "/", Domain: l.p.cfg.CookieDomain, HttpOnly: true, Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, Expires: exp})
}

func (l *loginUI) fedHint(r *http.Request) (string, bool) {
	c, err := r.Cookie(l.fedHintName())
	if err != nil {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(c.Value)
	aead := l.hintAEAD()
	if err != nil || len(raw) < aead.NonceSize() {
		return "", false
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(l.p.cfg.Region))
	if err != nil {
		return "", false
	}
	exp, name, ok := strings.Cut(string(plain), "|")
	e, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || time.Now().Unix() > e || name == "" {
		return "", false
	}
	return name, true
}

func (l *loginUI) clearFedHint(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: l.fedHintName(), Value: "", Path: "/", Domain: l.p.cfg.CookieDomain, HttpOnly: true,
		Secure: l.p.cfg.SecureCookies, SameSite: http.SameSiteLaxMode, MaxAge: -1})
}
