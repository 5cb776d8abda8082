package region

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/meridian-id/meridian/loginpage"
)

// ScopeFederation marks a client that federates with this region's own
// issuer (the hub, or a peer region in mesh topology). Authorization
// responses to it carry the region issuer; every other client is an
// application of the federation and sees the global issuer.
const ScopeFederation = "meridian:federation"

// intercept runs inside op's router (after op put the issuer in the
// context). It serves Meridian's own pages and wraps op's browser endpoints.
func (p *Provider) intercept(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	// Login pages may answer the client with an error redirect (prompt=none,
	// consent denied), so they get the iss parameter too.
	login := func(h func(*loginUI, http.ResponseWriter, *http.Request)) http.Handler {
		return p.withIss(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(p.login, w, r) }))
	}
	mux.Handle("GET /login", login((*loginUI).start))
	mux.Handle("POST /login", login((*loginUI).identify))
	mux.Handle("POST /login/password", login((*loginUI).password))
	mux.Handle("POST /login/totp", login((*loginUI).otp))
	mux.Handle("POST /consent", login((*loginUI).consent))
	mux.Handle("GET /login/federated/callback", login((*loginUI).federatedCallback))
	mux.HandleFunc("GET /logged-out", func(w http.ResponseWriter, r *http.Request) {
		p.login.render(w, http.StatusOK, "loggedout", page{Title: "Signed out"})
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", p.readyz)
	mux.HandleFunc("POST /register", p.register)
	mux.HandleFunc("POST /internal/client-auth", p.internalClientAuth)
	mux.HandleFunc("GET /internal/keys", p.internalKeys)
	mux.HandleFunc("POST /internal/end-session", p.internalEndSession)
	mux.Handle("POST /dereference", noStore(apiErrors(false, http.HandlerFunc(p.dereference))))
	mux.Handle("/authorize", p.browser(p.withIss(next)))
	mux.Handle("/authorize/callback", p.browser(p.checkCallback(p.withIss(next))))
	mux.Handle("/end_session", p.browser(p.endSession(next)))
	mux.Handle("/device_authorization", http.NotFoundHandler())
	mux.Handle("/ready", http.NotFoundHandler())
	for _, path := range []string{"/oauth/token", "/oauth/introspect", "/revoke"} {
		mux.Handle(path, noStore(apiErrors(false, next)))
	}
	mux.Handle("/userinfo", noStore(apiErrors(true, next)))
	mux.Handle("/", next)
	return p.regionHeader(securityHeaders(mux))
}

// regionHeader names the region that answered, for operators and demos;
// through the router a proxied answer carries the issuing region's name.
func (p *Provider) regionHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Meridian-Region", p.cfg.Region)
		next.ServeHTTP(w, r)
	})
}

// securityHeaders hardens every response: no framing (clickjacking), no
// sniffing, no referrer leaking codes, a CSP that allows only inline styles.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// noStore marks token-bearing responses uncacheable (RFC 6749 §5.1).
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// withIss adds RFC 9207's iss parameter to every authorization response op
// sends to a client's redirect_uri (success or error).
func (p *Provider) withIss(next http.Handler) http.Handler {
	return onRedirect(next, func(w http.ResponseWriter, r *http.Request) {
		if loc := w.Header().Get("Location"); loc != "" {
			w.Header().Set("Location", p.addIss(r.Context(), loc, r))
		}
	})
}

// onRedirect runs hook just before next's response header is written, when
// next answers with a redirect; hook may still change the header.
func onRedirect(next http.Handler, hook func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&redirectWriter{ResponseWriter: w, r: r, hook: hook}, r)
	})
}

type redirectWriter struct {
	http.ResponseWriter
	r    *http.Request
	hook func(http.ResponseWriter, *http.Request)
	done bool
}

func (w *redirectWriter) WriteHeader(status int) {
	if w.done {
		return
	}
	w.done = true
	if status >= 300 && status < 400 {
		w.hook(w.ResponseWriter, w.r)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *redirectWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// addIss appends iss to an authorization response URL. Redirects within
// this server (to the login page) are left alone.
func (p *Provider) addIss(ctx context.Context, loc string, r *http.Request) string {
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() {
		return loc
	}
	// Errors for non-code response types travel in the fragment.
	if f, err := url.ParseQuery(u.Fragment); err == nil && u.Fragment != "" && (f.Has("error") || f.Has("code")) && !f.Has("iss") {
		f.Set("iss", p.responseIssuer(ctx, r))
		u.Fragment = f.Encode()
		return u.String()
	}
	q := u.Query()
	if !q.Has("code") && !q.Has("error") {
		return loc
	}
	if q.Has("iss") {
		return loc
	}
	q.Set("iss", p.responseIssuer(ctx, r))
	u.RawQuery = q.Encode()
	return u.String()
}

// responseIssuer is the issuer the client knows: the region issuer for
// federation clients, else the issuer of the host the request came
// through, which is what that host's discovery document and ID tokens say
// (RFC 9207).
func (p *Provider) responseIssuer(ctx context.Context, r *http.Request) string {
	id := r.URL.Query().Get("client_id")
	if id == "" {
		if ar, err := p.storage.AuthRequestByID(ctx, r.FormValue("id")); err == nil {
			id = ar.GetClientID()
		}
	}
	if c, err := p.storage.client(ctx, id); err == nil && slices.Contains(c.Scopes, ScopeFederation) {
		return p.cfg.Issuer
	}
	return p.hostIssuer(r)
}

// checkCallback lets only the browser that logged in collect the code.
func (p *Provider) checkCallback(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.login.checkCallback(r) {
			p.login.errorPage(w, http.StatusBadRequest, "This sign-in could not be completed in this browser. Please start again from the application.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// endSession ends the browser's SSO session when op accepts an RP-initiated
// logout (it answers with a redirect).
func (p *Provider) endSession(next http.Handler) http.Handler {
	return onRedirect(next, func(w http.ResponseWriter, r *http.Request) {
		p.login.endSession(r.Context(), w, r)
	})
}

// browser turns op's plain-text error answers on browser endpoints into an
// HTML error page.
func (p *Provider) browser(next http.Handler) http.Handler {
	return loginpage.HTMLErrors(next, func(w http.ResponseWriter, status int, msg string) {
		p.login.errorPage(w, status, "The application sent an invalid sign-in request: "+msg)
	})
}

// discovery serves op's discovery document corrected to say only what this
// server does: code flow, query response mode, S256, RFC 9207, registration.
func (p *Provider) discovery(w http.ResponseWriter, r *http.Request) {
	doc := op.CreateDiscoveryConfig(r.Context(), p.op, p.storage)
	issuer := op.IssuerFromContext(r.Context())
	doc.ResponseTypesSupported = []string{"code"}
	doc.ResponseModesSupported = []string{"query"}
	doc.GrantTypesSupported = nil
	doc.CodeChallengeMethodsSupported = nil
	doc.DeviceAuthorizationEndpoint = ""
	doc.CheckSessionIframe = ""
	doc.RequestObjectSigningAlgValuesSupported = nil
	doc.RegistrationEndpoint = issuer + "/register"
	raw, err := json.Marshal(doc)
	if err != nil {
		http.Error(w, "discovery unavailable", http.StatusInternalServerError)
		return
	}
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	m["grant_types_supported"] = []string{"authorization_code", "refresh_token", "client_credentials"}
	m["code_challenge_methods_supported"] = []string{"S256"}
	m["authorization_response_iss_parameter_supported"] = true
	m["prompt_values_supported"] = []string{"none", "login", "consent"}
	m["claims_parameter_supported"] = false
	m["request_parameter_supported"] = false
	m["request_uri_parameter_supported"] = false
	m["subject_types_supported"] = []string{"public"}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, m)
}

func (p *Provider) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := p.Ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "database unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
