package region

import (
	"net/http"
	"strings"
)

// Role is what a regional node may do with its database right now.
type Role int32

// The roles of a node. A node on a writable database is RolePrimary; on a
// streaming standby (read-only) RoleStandby; RoleFenced once another site
// of the region has taken over its write authority (see docs/architecture.md,
// "Standby and fencing").
const (
	RolePrimary Role = iota
	RoleStandby
	RoleFenced
)

// String is the role as /readyz and the logs name it.
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleStandby:
		return "standby"
	case RoleFenced:
		return "fenced"
	}
	return "unknown"
}

// standbyRetryAfter is the Retry-After (seconds) of a refused write: about
// the time an operator needs to promote a standby, and longer than a DNS
// TTL, so a client that retries likely reaches a promoted site.
const standbyRetryAfter = "30"

// readOnlyRoutes are the endpoints a standby serves: they only read the
// database (discovery, JWKS, introspection, userinfo, dereference, the
// federation's key and client lookups).
var readOnlyRoutes = map[string]bool{
	"GET /.well-known/openid-configuration": true,
	"GET /keys":                             true,
	"GET /userinfo":                         true,
	"POST /userinfo":                        true,
	"POST /oauth/introspect":                true,
	"POST /dereference":                     true,
	"GET /internal/keys":                    true,
	"POST /internal/client-auth":            true,
	"GET /logged-out":                       true,
	"GET /healthz":                          true,
}

// browserRoute reports whether path is shown to a person (an HTML error
// page) rather than called by a client (an OAuth JSON error).
func browserRoute(path string) bool {
	switch {
	case path == "/authorize", path == "/authorize/callback", path == "/end_session",
		path == "/consent", path == "/logged-out", path == "/login", strings.HasPrefix(path, "/login/"):
		return true
	}
	return false
}

// WriteGate wraps a node's public handler with its role: a primary passes
// everything through; a standby serves readOnlyRoutes and answers every
// other request with 503 temporarily_unavailable and Retry-After (JSON for
// clients, an HTML page for browsers) instead of letting it fail on the
// read-only database; a fenced node answers everything but /healthz that
// way. /readyz answers 503 with the role for a standby or a fenced node, so
// GeoDNS never sends a region's traffic to a site that cannot take writes.
func (p *Provider) WriteGate(next http.Handler, role func() Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rl := role()
		if rl == RolePrimary {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Meridian-Role", rl.String())
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		switch {
		case r.URL.Path == "/readyz":
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": rl.String(), "reason": roleReason(rl)})
			return
		case r.URL.Path == "/healthz" && method == http.MethodGet:
			next.ServeHTTP(w, r)
			return
		case rl == RoleStandby && readOnlyRoutes[method+" "+r.URL.Path]:
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", standbyRetryAfter)
		w.Header().Set("Cache-Control", "no-store")
		if browserRoute(r.URL.Path) {
			msg := "This sign-in service is in read-only standby mode. Please try again in a minute."
			if rl == RoleFenced {
				msg = "This sign-in site has been replaced by another site and is out of service."
			}
			p.login.errorPage(w, http.StatusServiceUnavailable, msg)
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable",
			"error_description": roleReason(rl)})
	})
}

func roleReason(rl Role) string {
	if rl == RoleFenced {
		return "this site was fenced: another site of the region took over its writes; it must be rebuilt from that site"
	}
	return "this site runs on a read-only standby database and cannot accept writes until it is promoted; retry later"
}
