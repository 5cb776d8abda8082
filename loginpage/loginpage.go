// Package loginpage holds the HTML templates of the login pages
// ("username", "password", "totp", "consent", "error") and the headers they
// are served with. Regions and the hub render the same templates, so that a
// page the hub shows (the unknown-user password page above all) cannot be
// told apart from a region's.
package loginpage

import (
	"bytes"
	"embed"
	"encoding/json"
	"html"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed templates/*.html
var templates embed.FS

// Templates returns the page templates, under "templates/*.html".
func Templates() fs.FS { return templates }

// SetHeaders sets the browser hardening headers every login page carries:
// no framing, no sniffing, no referrer (codes travel in URLs), a CSP that
// allows only inline styles.
func SetHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// HTMLErrors answers a browser endpoint's non-HTML error responses (op's
// plain text or JSON errors) with page instead, passing it the error's
// description. Regions and the hub wrap their browser endpoints with it.
func HTMLErrors(next http.Handler, page func(w http.ResponseWriter, status int, msg string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &htmlErrorWriter{ResponseWriter: w}
		next.ServeHTTP(hw, r)
		if hw.status != 0 {
			msg := strings.TrimSpace(hw.body.String())
			var e struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal([]byte(msg), &e) == nil && e.Error != "" {
				msg = e.Error
				if e.Description != "" {
					msg = e.Description
				}
			}
			if msg == "" {
				msg = http.StatusText(hw.status)
			}
			page(w, hw.status, html.UnescapeString(msg))
		}
	})
}

type htmlErrorWriter struct {
	http.ResponseWriter
	status  int
	body    bytes.Buffer
	started bool
}

func (w *htmlErrorWriter) WriteHeader(status int) {
	if w.started || w.status != 0 {
		return
	}
	ct := w.Header().Get("Content-Type")
	if status >= 400 && !strings.HasPrefix(ct, "text/html") {
		w.status = status
		w.Header().Del("Content-Type")
		w.Header().Del("X-Content-Type-Options")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		return
	}
	w.started = true
	w.ResponseWriter.WriteHeader(status)
}

func (w *htmlErrorWriter) Write(b []byte) (int, error) {
	if !w.started && w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.status != 0 {
		if w.body.Len() < 4096 {
			w.body.Write(b)
		}
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}
