package region

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/oidc"
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
	mux.Handle("POST /login/passkey", login((*loginUI).passkeyStart))
	mux.Handle("POST /login/passkey/verify", login((*loginUI).passkeyVerify))
	mux.Handle("POST /login/mfa/passkey", login((*loginUI).passkeyMFA))
	mux.HandleFunc("GET /login/webauthn.js", serveWebAuthnJS)
	// Account self-service: served where the session lives, never routed.
	// (p.account is built after op, which calls intercept while building.)
	account := func(h func(*accountUI, http.ResponseWriter, *http.Request)) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(p.account, w, r) })
	}
	mux.Handle("GET /account", account((*accountUI).overview))
	mux.Handle("GET /account/signin", account((*accountUI).reauth))
	mux.Handle("GET /account/callback", account((*accountUI).callback))
	mux.Handle("POST /account/password", account((*accountUI).changePassword))
	mux.Handle("POST /account/totp/begin", account((*accountUI).totpBegin))
	mux.Handle("POST /account/totp/confirm", account((*accountUI).totpConfirm))
	mux.Handle("POST /account/totp/remove", account((*accountUI).totpRemove))
	mux.Handle("POST /account/passkeys", account((*accountUI).passkeyAdd))
	mux.Handle("POST /account/passkeys/remove", account((*accountUI).passkeyRemove))
	mux.Handle("POST /account/sessions/end", account((*accountUI).endSession))
	mux.Handle("POST /account/profile", account((*accountUI).profile))
	mux.Handle("POST /account/consents/revoke", account((*accountUI).revokeConsent))
	mux.HandleFunc("GET /logged-out", func(w http.ResponseWriter, r *http.Request) {
		p.login.render(w, http.StatusOK, "loggedout", page{Title: "Signed out"})
	})
	// CORS (any origin, never credentials) only where JavaScript clients
	// call with bearer tokens or read public metadata; never on the login
	// pages, /consent, /end_session or /register.
	js := cors.New(cors.Options{
		AllowedOrigins:   []string{"*"},
		AllowedMethods:   []string{http.MethodGet, http.MethodPost},
		AllowedHeaders:   []string{"Authorization", "Content-Type", "Accept"},
		AllowCredentials: false,
	}).Handler
	mux.Handle("/.well-known/openid-configuration", js(onlyGet(http.HandlerFunc(p.discovery))))
	mux.Handle("/keys", js(next))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", p.readyz)
	mux.HandleFunc("POST /register", p.register)
	mux.Handle("GET /register/{id}", p.counted("rfc7592", "read", p.clientConfigRead))
	mux.Handle("PUT /register/{id}", p.counted("rfc7592", "update", p.clientConfigUpdate))
	mux.Handle("DELETE /register/{id}", p.counted("rfc7592", "delete", p.clientConfigDelete))
	mux.Handle("GET /admin/clients", p.counted("admin", "list", p.adminList))
	mux.Handle("POST /admin/clients", p.counted("admin", "create", p.adminCreate))
	mux.Handle("GET /admin/clients/{id}", p.counted("admin", "get", p.adminGet))
	mux.Handle("PUT /admin/clients/{id}", p.counted("admin", "update", p.adminUpdate))
	mux.Handle("DELETE /admin/clients/{id}", p.counted("admin", "delete", p.adminDelete))
	mux.Handle("POST /admin/clients/{id}/secret", p.counted("admin", "rotate_secret", p.adminRotate))
	mux.Handle("/admin/", noStore(http.HandlerFunc(managementNotFound)))
	mux.Handle("/register/", noStore(http.HandlerFunc(managementNotFound)))
	mux.HandleFunc("POST /internal/client-auth", p.internalClientAuth)
	mux.HandleFunc("GET /internal/keys", p.internalKeys)
	mux.HandleFunc("POST /internal/end-session", p.internalEndSession)
	mux.HandleFunc("POST "+claimsPath, p.internalClaims)
	mux.Handle("POST /dereference", noStore(apiErrors(false, http.HandlerFunc(p.dereference))))
	mux.Handle("/authorize", p.browser(p.withIss(markRequestURI(next))))
	mux.Handle("/authorize/callback", p.browser(p.checkCallback(p.withIss(next))))
	mux.Handle("/end_session", p.browser(p.endSession(next)))
	mux.Handle("/device_authorization", http.NotFoundHandler())
	mux.Handle("/ready", http.NotFoundHandler())
	mux.Handle("/oauth/token", js(noStore(apiErrors(false, p.tokenClientAuth(next)))))
	mux.Handle("/oauth/introspect", noStore(apiErrors(false, introspectionClientAuth(p.fastIntrospection(next)))))
	mux.Handle("/revoke", js(noStore(apiErrors(false, next))))
	mux.Handle("/userinfo", js(noStore(apiErrors(true, next))))
	mux.Handle("/", next)
	return p.regionHeader(securityHeaders(varyOrigin(mux)))
}

// corsPaths are the endpoints that answer CORS (see intercept).
var corsPaths = map[string]bool{"/oauth/token": true, "/userinfo": true, "/keys": true,
	"/.well-known/openid-configuration": true, "/revoke": true}

// varyOrigin sets "Vary: Origin" on the answers without CORS too (the CORS
// handler sets it on its own). The hub's pages carry it, and a page the
// resident region serves must have the same header shape as the hub's
// answer for an unknown user (hub TestUnknownUserIndistinguishable).
func varyOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !corsPaths[r.URL.Path] {
			w.Header().Set("Vary", "Origin")
		}
		next.ServeHTTP(w, r)
	})
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
			p.login.refused(r, "the authorization callback's browser binding does not verify (another browser, or a node with another cookie key)")
			p.login.errorPage(w, http.StatusBadRequest, "This sign-in could not be completed in this browser. Please start again from the application.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// endSession implements RP-initiated logout. With a valid id_token_hint
// (expired is fine: it still proves the client) op checks the
// post_logout_redirect_uri against the client the hint names and redirects,
// and the browser's SSO session ends with that redirect. Without one, a
// cross-site link could sign the user out and bounce the browser anywhere
// a client registered, so the user is asked to confirm (a CSRF-protected
// form) and lands on Meridian's own signed-out page.
func (p *Provider) endSession(next http.Handler) http.Handler {
	withHint := onRedirect(next, func(w http.ResponseWriter, r *http.Request) {
		p.login.endSession(r.Context(), w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() == nil && p.validIDTokenHint(r.Context(), r.Form.Get("id_token_hint")) {
			withHint.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodPost && r.PostForm.Get("confirm") == "yes" {
			if !p.login.checkCSRF(r, logoutCSRFID) {
				p.login.errorPage(w, http.StatusBadRequest, "This sign-out could not be confirmed. Please try again.")
				return
			}
			p.login.endSession(r.Context(), w, r)
			http.Redirect(w, r, "/logged-out", http.StatusSeeOther)
			return
		}
		nonce := p.login.browserNonce(w, r)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_ = p.logoutPage.ExecuteTemplate(w, "confirmlogout", page{Title: "Sign out?", Region: p.cfg.Region,
			CSRF: p.login.csrf(logoutCSRFID, nonce)})
	})
}

// logoutCSRFID binds the logout confirmation's CSRF token to its purpose.
const logoutCSRFID = "end_session"

const confirmLogoutTemplate = `{{define "confirmlogout"}}{{template "top" .}}
<p>Do you want to sign out of Meridian?</p>
<form method="post" action="/end_session">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit" name="confirm" value="yes">Sign out</button>
</form>
{{template "bottom" .}}{{end}}`

// validIDTokenHint reports whether hint is an ID token this provider
// signed for the request's issuer (expired or not).
func (p *Provider) validIDTokenHint(ctx context.Context, hint string) bool {
	if hint == "" {
		return false
	}
	_, err := op.VerifyIDTokenHint[*oidc.IDTokenClaims](ctx, hint, p.op.IDTokenHintVerifier(ctx))
	return err == nil || errors.As(err, &op.IDTokenHintExpiredError{})
}

// requestURIKey marks an authorization request that named a request_uri.
type requestURIKey struct{}

// markRequestURI lets CreateAuthRequest answer request_uri_not_supported
// (OIDC Core §6.2) instead of ignoring the parameter; op does not parse it.
func markRequestURI(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() == nil && r.Form.Has("request_uri") {
			r = r.WithContext(context.WithValue(r.Context(), requestURIKey{}, true))
		}
		next.ServeHTTP(w, r)
	})
}

// onlyGet answers other methods with 405.
func onlyGet(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
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
	doc.RegistrationEndpoint = ""
	if p.registration.open() {
		doc.RegistrationEndpoint = issuer + "/register"
	}
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
	m["acr_values_supported"] = acrValuesSupported
	m["request_parameter_supported"] = false
	m["request_uri_parameter_supported"] = false
	m["subject_types_supported"] = []string{"public"}
	// What introspectionClientAuth and op's revocation accept.
	m["introspection_endpoint_auth_methods_supported"] = []string{AuthSecretBasic, AuthSecretPost, AuthPrivateKey}
	m["revocation_endpoint_auth_methods_supported"] = []string{AuthNone, AuthSecretBasic, AuthSecretPost, AuthPrivateKey}
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
