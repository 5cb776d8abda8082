package region

import (
	"net/http"
	"net/url"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/meridian-id/meridian/routing"
)

// presentedAuthMethod names the client authentication method a back-channel
// request uses (RFC 6749 §2.3, OIDC Core §9), and whether it mixes several,
// which RFC 6749 §2.3 forbids.
func presentedAuthMethod(r *http.Request) (method, clientID string, mixed bool) {
	n := 0
	if r.PostForm.Get("client_assertion") != "" || r.PostForm.Get("client_assertion_type") != "" {
		method = AuthPrivateKey
		n++
	}
	if id, secret, ok := r.BasicAuth(); ok {
		clientID = id
		if u, err := url.QueryUnescape(id); err == nil {
			clientID = u
		}
		// Many libraries send a public client's id as Basic with an empty
		// password: that identifies, it does not authenticate.
		if secret != "" {
			method = AuthSecretBasic
			n++
		}
	}
	if r.PostForm.Has("client_secret") {
		method = AuthSecretPost
		n++
	}
	if n == 0 {
		method = AuthNone
	}
	if clientID == "" {
		clientID = r.PostForm.Get("client_id")
	}
	return method, clientID, n > 1
}

// tokenClientAuth lets a client authenticate at the token endpoint only with
// the token_endpoint_auth_method it registered (op accepts a secret by
// either basic or post for any secret client). Unknown and foreign clients
// pass to op, which refuses them itself.
func (p *Provider) tokenClientAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ParseForm() != nil {
			next.ServeHTTP(w, r)
			return
		}
		method, id, mixed := presentedAuthMethod(r)
		if mixed {
			writeClientAuthError(w, "use exactly one client authentication method")
			return
		}
		if tag, err := p.codec.VerifyKind(id, routing.KindClient); err == nil && tag.Region == p.cfg.Region {
			if c, err := p.storage.client(r.Context(), id); err == nil && c.Client.AuthMethod != method {
				writeClientAuthError(w, "the client is registered for token_endpoint_auth_method "+c.Client.AuthMethod)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// introspectionClientAuth accepts client_secret_post at introspection, as
// discovery advertises, by handing op (which reads only HTTP Basic there)
// the same credentials as a Basic header.
func introspectionClientAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ParseForm() != nil {
			next.ServeHTTP(w, r)
			return
		}
		method, _, mixed := presentedAuthMethod(r)
		if mixed {
			writeClientAuthError(w, "use exactly one client authentication method")
			return
		}
		if method == AuthSecretPost {
			id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
			for _, f := range []url.Values{r.PostForm, r.Form} {
				f.Del("client_secret")
			}
			r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}
		next.ServeHTTP(w, r)
	})
}

func writeClientAuthError(w http.ResponseWriter, desc string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="meridian"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": string(oidc.InvalidClient), "error_description": desc})
}
