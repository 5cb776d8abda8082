package region

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// ScopeAdmin lets a client manage the region's clients through the admin
// API (/admin/clients) with a client_credentials access token.
const ScopeAdmin = "meridian:admin"

// Audit events of client management. Every change through the admin API
// is an admin.change event (action client.created, client.updated,
// client.deleted, client.secret_rotated) naming the admin client as actor;
// every RFC 7592 call is a client.configuration event.
const (
	AuditAdminDenied  = "admin.denied"
	AuditClientConfig = "client.configuration"
)

// maxClientBody bounds a client metadata document.
const maxClientBody = 64 << 10

// clientDocument is a client as the management endpoints show it: RFC 7591
// §3.2.1 client information (with RFC 7592 §3's registration fields) plus
// Meridian's own fields. A secret is shown only when it was just made.
type clientDocument struct {
	ClientID                string          `json:"client_id"`
	ClientSecret            string          `json:"client_secret,omitempty"`
	ClientIDIssuedAt        int64           `json:"client_id_issued_at"`
	ClientSecretExpiresAt   int64           `json:"client_secret_expires_at"`
	PreviousSecretExpiresAt int64           `json:"previous_secret_expires_at,omitempty"`
	RegistrationAccessToken string          `json:"registration_access_token,omitempty"`
	RegistrationClientURI   string          `json:"registration_client_uri,omitempty"`
	ClientName              string          `json:"client_name,omitempty"`
	RedirectURIs            []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes              []string        `json:"grant_types"`
	ResponseTypes           []string        `json:"response_types"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	AccessTokenFormat       string          `json:"access_token_format"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	Scope                   string          `json:"scope,omitempty"`
	FirstParty              bool            `json:"first_party"`
}

func newClientDocument(c store.Client, secret string, now time.Time) clientDocument {
	d := clientDocument{
		ClientID: c.ID, ClientSecret: secret, ClientIDIssuedAt: c.CreatedAt.Unix(),
		ClientName: c.Name, RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs,
		GrantTypes: c.GrantTypes, ResponseTypes: []string{"code"}, TokenEndpointAuthMethod: c.AuthMethod,
		AccessTokenFormat: c.AccessTokenFormat, Scope: strings.Join(c.Scopes, " "), FirstParty: c.FirstParty,
	}
	if d.RedirectURIs == nil {
		d.RedirectURIs = []string{}
	}
	if !slices.Contains(c.GrantTypes, GrantAuthorizationCode) {
		d.ResponseTypes = []string{}
	}
	if c.JWKS != "" && json.Valid([]byte(c.JWKS)) {
		d.JWKS = json.RawMessage(c.JWKS)
	}
	if len(c.PreviousSecretHash) > 0 && now.Before(c.PreviousSecretExpiresAt) {
		d.PreviousSecretExpiresAt = c.PreviousSecretExpiresAt.Unix()
	}
	return d
}

// clientMetadata is a client metadata document in a request: RFC 7591
// §2 names, the read-only fields of clientDocument (ignored, so a client
// may send back what it read), and the admin-only scope and first_party.
type clientMetadata struct {
	ClientID                string          `json:"client_id"`
	ClientSecret            string          `json:"client_secret"`
	RedirectURIs            []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris"`
	ClientName              string          `json:"client_name"`
	GrantTypes              []string        `json:"grant_types"`
	ResponseTypes           []string        `json:"response_types"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method"`
	JWKS                    json.RawMessage `json:"jwks"`
	AccessTokenFormat       string          `json:"access_token_format"`
	Scope                   *string         `json:"scope"`
	FirstParty              *bool           `json:"first_party"`
}

// readMetadata decodes a metadata document; false after answering the
// protocol's error.
func readMetadata(w http.ResponseWriter, r *http.Request) (clientMetadata, bool) {
	var m clientMetadata
	if err := json.NewDecoder(io.LimitReader(r.Body, maxClientBody)).Decode(&m); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "body must be a JSON object of client metadata")
		return m, false
	}
	for _, rt := range m.ResponseTypes {
		if rt != "code" {
			writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "only response type code is supported")
			return m, false
		}
	}
	return m, true
}

// spec turns the document into a ClientSpec; scopes and first party come
// from the document only when admin is set, else from keep.
func (m clientMetadata) spec(admin bool, keep store.Client) ClientSpec {
	s := ClientSpec{
		Name: m.ClientName, RedirectURIs: m.RedirectURIs, PostLogoutRedirectURIs: m.PostLogoutRedirectURIs,
		GrantTypes: m.GrantTypes, AuthMethod: m.TokenEndpointAuthMethod, Public: m.TokenEndpointAuthMethod == AuthNone,
		AccessTokenFormat: m.AccessTokenFormat, FirstParty: keep.FirstParty, Scopes: keep.Scopes,
	}
	if len(m.JWKS) > 0 && string(m.JWKS) != "null" {
		s.JWKS = string(m.JWKS)
	}
	if admin {
		s.FirstParty, s.Scopes = false, nil
		if m.FirstParty != nil {
			s.FirstParty = *m.FirstParty
		}
		if m.Scope != nil {
			s.Scopes = strings.Fields(*m.Scope)
		}
	}
	return s
}

// writeOAuthError answers an RFC 6749 §5.2 style JSON error.
func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// writeBearerError answers an RFC 6750 §3 error with its WWW-Authenticate.
func writeBearerError(w http.ResponseWriter, status int, code, desc, scope string) {
	v := `Bearer realm="meridian", error="` + code + `"`
	if scope != "" {
		v += `, scope="` + scope + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	writeOAuthError(w, status, code, desc)
}

// writeClientError maps a client management error to the protocol's error.
func (p *Provider) writeClientError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrInvalidRedirectURI):
		writeOAuthError(w, http.StatusBadRequest, "invalid_redirect_uri", err.Error())
	case errors.Is(err, ErrInvalidClientMetadata):
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", err.Error())
	case errors.Is(err, store.ErrNotFound):
		writeOAuthError(w, http.StatusNotFound, "not_found", "no such client in this region")
	case errors.Is(err, ErrNoSecret):
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the client authenticates without a secret; nothing to rotate")
	case errors.Is(err, ErrOverlapTooLong):
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", err.Error())
	default:
		p.log.ErrorContext(r.Context(), "client management failed", "err", err)
		raiseFault(r.Context())
		writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "retry later")
	}
}

// clientCalls counts client management calls by api (admin, rfc7592),
// operation and result (the HTTP status class's meaning).
type clientCalls struct{ c metric.Int64Counter }

func newClientCalls(m metric.Meter) clientCalls {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	c, err := m.Int64Counter("meridian_client_management_requests",
		metric.WithDescription("Client management calls (admin API and RFC 7592) by api, operation and result."))
	if err != nil {
		c, _ = noop.NewMeterProvider().Meter("").Int64Counter("")
	}
	return clientCalls{c: c}
}

func (cc clientCalls) add(ctx context.Context, api, op, result string) {
	cc.c.Add(ctx, 1, metric.WithAttributes(attribute.String("api", api), attribute.String("operation", op),
		attribute.String("result", result)))
}

// resultOf names a response status for the metric.
func resultOf(status int) string {
	switch {
	case status < 300:
		return "ok"
	case status == http.StatusUnauthorized:
		return "unauthenticated"
	case status == http.StatusForbidden:
		return "forbidden"
	case status == http.StatusNotFound:
		return "not_found"
	case status < 500:
		return "invalid"
	}
	return "unavailable"
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// counted wraps a management handler with its metric, no-store and the
// API's error shape (a database fault is 503 temporarily_unavailable).
func (p *Provider) counted(api, op string, h http.HandlerFunc) http.Handler {
	return noStore(apiErrors(false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sr := &statusRecorder{ResponseWriter: w}
		h(sr, r)
		if sr.status == 0 {
			sr.status = http.StatusOK
		}
		p.clientCalls.add(r.Context(), api, op, resultOf(sr.status))
	})))
}

// registrationClientURI is the client configuration endpoint of client id
// on the host the request came through.
func (p *Provider) registrationClientURI(r *http.Request, id string) string {
	return strings.TrimSuffix(p.hostIssuer(r), "/") + "/register/" + url.PathEscape(id)
}

// managementNotFound answers any other method or path under /admin/ and
// /register/ with a JSON error instead of a plain-text 404 or 405.
func managementNotFound(w http.ResponseWriter, r *http.Request) {
	writeOAuthError(w, http.StatusNotFound, "not_found", "no "+r.Method+" endpoint at this path (see docs/management-api.md)")
}

// --- RFC 7592 client configuration endpoint ---

// configuredClient authenticates an RFC 7592 call: the bearer token must
// be the registration access token of the client in the path, compared
// by digest in constant time. Every failure (no token, a wrong one,
// another client's, an unknown client, a client made by the operator) is
// 401 invalid_token (RFC 7592 §2.1, §2.2, §2.3).
func (p *Provider) configuredClient(w http.ResponseWriter, r *http.Request, op string) (store.Client, string, bool) {
	ctx := r.Context()
	id := r.PathValue("id")
	tok := bearerToken(r)
	c, err := p.clients.Get(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		p.writeClientError(w, r, err)
		return store.Client{}, "", false
	}
	sum := sha256.Sum256([]byte(tok))
	if err != nil || tok == "" || len(c.RegistrationTokenHash) == 0 ||
		subtle.ConstantTimeCompare(sum[:], c.RegistrationTokenHash) != 1 {
		p.audit.record(ctx, AuditClientConfig, slog.String("operation", op), slog.String("outcome", "denied"),
			slog.String("client_id", logID(p.codec, id)))
		writeBearerError(w, http.StatusUnauthorized, "invalid_token",
			"the registration access token is missing or not valid for this client", "")
		return store.Client{}, "", false
	}
	return c, tok, true
}

// clientConfigRead is GET /register/{id} (RFC 7592 §2.1). The response
// carries the token the client presented: only its digest is stored.
func (p *Provider) clientConfigRead(w http.ResponseWriter, r *http.Request) {
	c, tok, ok := p.configuredClient(w, r, "read")
	if !ok {
		return
	}
	p.audit.record(r.Context(), AuditClientConfig, slog.String("operation", "read"), slog.String("outcome", "ok"),
		slog.String("client_id", c.ID))
	d := newClientDocument(c, "", time.Now())
	d.Scope, d.FirstParty = "", false
	d.RegistrationAccessToken, d.RegistrationClientURI = tok, p.registrationClientURI(r, c.ID)
	writeJSON(w, http.StatusOK, d)
}

// clientConfigUpdate is PUT /register/{id} (RFC 7592 §2.2): the document
// replaces the client's metadata (omitted fields take their defaults),
// must name the client's own client_id, may name its current secret but
// never choose one. The registration access token is rotated: the
// response carries the new one and the presented one stops working.
func (p *Provider) clientConfigUpdate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, _, ok := p.configuredClient(w, r, "update")
	if !ok {
		return
	}
	m, ok := readMetadata(w, r)
	if !ok {
		return
	}
	if m.ClientID != c.ID {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "client_id must be present and name this client")
		return
	}
	if m.ClientSecret != "" && (len(c.SecretHash) == 0 ||
		subtle.ConstantTimeCompare(HashClientSecret(m.ClientSecret), c.SecretHash) != 1) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "client_secret must be the current secret; a client cannot choose its secret")
		return
	}
	tok, hash, err := newRegistrationToken()
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	spec := m.spec(false, c)
	spec.registrationTokenHash = hash
	u, err := p.clients.Update(ctx, c.ID, spec)
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	p.storage.forget(c.ID)
	p.audit.record(ctx, AuditClientConfig, slog.String("operation", "update"), slog.String("outcome", "ok"),
		slog.String("client_id", c.ID), slog.String("token_endpoint_auth_method", u.AuthMethod),
		slog.Any("redirect_uris", u.RedirectURIs))
	d := newClientDocument(u.Client, u.Secret, time.Now())
	d.Scope, d.FirstParty = "", false
	d.RegistrationAccessToken, d.RegistrationClientURI = tok, p.registrationClientURI(r, c.ID)
	writeJSON(w, http.StatusOK, d)
}

// clientConfigDelete is DELETE /register/{id} (RFC 7592 §2.3).
func (p *Provider) clientConfigDelete(w http.ResponseWriter, r *http.Request) {
	c, _, ok := p.configuredClient(w, r, "delete")
	if !ok {
		return
	}
	if err := p.clients.Delete(r.Context(), c.ID); err != nil {
		p.writeClientError(w, r, err)
		return
	}
	p.storage.forget(c.ID)
	p.audit.record(r.Context(), AuditClientConfig, slog.String("operation", "delete"), slog.String("outcome", "ok"),
		slog.String("client_id", c.ID))
	w.WriteHeader(http.StatusNoContent)
}

// --- admin API ---

// adminCaller authenticates an admin API call: an active access token of
// this region (opaque, or an RFC 9068 JWT), issued by the client
// credentials grant to a client that still exists and still holds
// meridian:admin, with that scope. A missing or inactive token (including
// another region's) is 401 invalid_token; a valid one without the scope
// is 403 insufficient_scope (RFC 6750 §3.1).
func (p *Provider) adminCaller(w http.ResponseWriter, r *http.Request, op string) (string, bool) {
	ctx := r.Context()
	tok := bearerToken(r)
	id := tok
	if strings.HasPrefix(tok, "eyJ") {
		// verify answers op's "tokenID:subject" form.
		v, err := p.storage.jwts.verify(tok)
		id, _, _ = strings.Cut(v, ":")
		if err != nil {
			id = ""
		}
	}
	var at store.AccessToken
	err := errors.New("no token")
	if id != "" {
		at, err = p.storage.activeToken(ctx, id)
	}
	if err != nil {
		if faultRaised(ctx) { // activeToken flagged a database fault
			p.writeClientError(w, r, err)
			return "", false
		}
		p.audit.record(ctx, AuditAdminDenied, slog.String("operation", op), slog.String("reason", "invalid_token"))
		writeBearerError(w, http.StatusUnauthorized, "invalid_token", "an active access token of this region is required", "")
		return "", false
	}
	adm, cerr := p.storage.client(ctx, at.ClientID)
	if cerr != nil && !errors.As(cerr, new(notFoundError)) {
		p.writeClientError(w, r, cerr)
		return "", false
	}
	if at.GrantID != "" || at.Subject != at.ClientID || cerr != nil ||
		!slices.Contains(at.Scopes, ScopeAdmin) || !slices.Contains(adm.Scopes, ScopeAdmin) {
		p.audit.record(ctx, AuditAdminDenied, slog.String("operation", op), slog.String("reason", "insufficient_scope"),
			slog.String("actor", at.ClientID))
		writeBearerError(w, http.StatusForbidden, "insufficient_scope",
			"a client_credentials token with the "+ScopeAdmin+" scope is required", ScopeAdmin)
		return "", false
	}
	return at.ClientID, true
}

// bearerToken is the RFC 6750 §2.1 Authorization header's token.
func bearerToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// logID returns id for a log line when it is a verified client id of the
// federation, else a fixed marker (no attacker-chosen text in audit logs).
func logID(codec *routing.Codec, id string) string {
	if _, err := codec.VerifyKind(id, routing.KindClient); err == nil {
		return id
	}
	return "(not a client id)"
}

func (p *Provider) adminChange(ctx context.Context, actor, action, clientID string, attrs ...slog.Attr) {
	p.audit.record(ctx, AuditAdminChange, append([]slog.Attr{slog.String("action", action), slog.String("actor", actor),
		slog.String("client_id", clientID), slog.String("via", "admin_api")}, attrs...)...)
}

// federationGuard keeps the admin API away from federation clients (the
// hub's and peer regions' clients, scope meridian:federation): they are
// made from the federation configuration at every start, and changing
// one (its key, its redirect URIs) would let an admin act as the hub
// towards this region. Granting the scope is refused the same way. It
// reports whether the call may go on, after answering if not.
func (p *Provider) federationGuard(w http.ResponseWriter, r *http.Request, id string, spec *ClientSpec) bool {
	if spec != nil && slices.Contains(spec.Scopes, ScopeFederation) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "the "+ScopeFederation+" scope is given only by the federation configuration")
		return false
	}
	if id == "" {
		return true
	}
	c, err := p.clients.Get(r.Context(), id)
	if err != nil {
		p.writeClientError(w, r, err)
		return false
	}
	if slices.Contains(c.Scopes, ScopeFederation) {
		writeOAuthError(w, http.StatusForbidden, "access_denied", "federation clients are managed by the federation configuration, not the admin API")
		return false
	}
	return true
}

// adminList is GET /admin/clients.
func (p *Provider) adminList(w http.ResponseWriter, r *http.Request) {
	if _, ok := p.adminCaller(w, r, "list"); !ok {
		return
	}
	cs, err := p.clients.List(r.Context())
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	now := time.Now()
	out := make([]clientDocument, 0, len(cs))
	for _, c := range cs {
		out = append(out, newClientDocument(c, "", now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"region": p.cfg.Region, "clients": out})
}

// adminCreate is POST /admin/clients: 201 with the client and its secret
// (shown once).
func (p *Provider) adminCreate(w http.ResponseWriter, r *http.Request) {
	actor, ok := p.adminCaller(w, r, "create")
	if !ok {
		return
	}
	m, ok := readMetadata(w, r)
	if !ok {
		return
	}
	spec := m.spec(true, store.Client{})
	if !p.federationGuard(w, r, "", &spec) {
		return
	}
	c, err := p.clients.Create(r.Context(), spec)
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	p.adminChange(r.Context(), actor, "client.created", c.ID, slog.String("token_endpoint_auth_method", c.AuthMethod),
		slog.Any("scopes", c.Scopes))
	writeJSON(w, http.StatusCreated, newClientDocument(c.Client, c.Secret, time.Now()))
}

// adminGet is GET /admin/clients/{id}.
func (p *Provider) adminGet(w http.ResponseWriter, r *http.Request) {
	if _, ok := p.adminCaller(w, r, "get"); !ok {
		return
	}
	c, err := p.clients.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newClientDocument(c, "", time.Now()))
}

// adminUpdate is PUT /admin/clients/{id}: the document replaces the
// client's metadata, scope and first_party included.
func (p *Provider) adminUpdate(w http.ResponseWriter, r *http.Request) {
	actor, ok := p.adminCaller(w, r, "update")
	if !ok {
		return
	}
	id := r.PathValue("id")
	m, ok := readMetadata(w, r)
	if !ok {
		return
	}
	if m.ClientID != "" && m.ClientID != id {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "client_id cannot be changed")
		return
	}
	if m.ClientSecret != "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_client_metadata", "a secret cannot be chosen; rotate it with POST /admin/clients/{id}/secret")
		return
	}
	spec := m.spec(true, store.Client{})
	if !p.federationGuard(w, r, id, &spec) {
		return
	}
	u, err := p.clients.Update(r.Context(), id, spec)
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	p.storage.forget(id)
	p.adminChange(r.Context(), actor, "client.updated", id, slog.String("token_endpoint_auth_method", u.AuthMethod),
		slog.Any("scopes", u.Scopes), slog.Any("redirect_uris", u.RedirectURIs))
	writeJSON(w, http.StatusOK, newClientDocument(u.Client, u.Secret, time.Now()))
}

// adminDelete is DELETE /admin/clients/{id}: 204.
func (p *Provider) adminDelete(w http.ResponseWriter, r *http.Request) {
	actor, ok := p.adminCaller(w, r, "delete")
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !p.federationGuard(w, r, id, nil) {
		return
	}
	if err := p.clients.Delete(r.Context(), id); err != nil {
		p.writeClientError(w, r, err)
		return
	}
	p.storage.forget(id)
	p.adminChange(r.Context(), actor, "client.deleted", id)
	w.WriteHeader(http.StatusNoContent)
}

// adminRotate is POST /admin/clients/{id}/secret: a new secret (shown
// once); the old one keeps working for overlap_seconds from the JSON body
// (absent: the region's default overlap; 0: it stops at once).
func (p *Provider) adminRotate(w http.ResponseWriter, r *http.Request) {
	actor, ok := p.adminCaller(w, r, "rotate_secret")
	if !ok {
		return
	}
	id := r.PathValue("id")
	var body struct {
		OverlapSeconds *int64 `json:"overlap_seconds"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 4<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "body must be a JSON object, e.g. {\"overlap_seconds\": 3600}")
			return
		}
	}
	if !p.federationGuard(w, r, id, nil) {
		return
	}
	overlap := p.secretOverlap
	if body.OverlapSeconds != nil {
		if *body.OverlapSeconds < 0 || *body.OverlapSeconds > int64(p.clients.MaxOverlap/time.Second) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request",
				"overlap_seconds must be between 0 and "+p.clients.MaxOverlap.String())
			return
		}
		overlap = time.Duration(*body.OverlapSeconds) * time.Second
	}
	c, err := p.clients.RotateSecret(r.Context(), id, overlap)
	if err != nil {
		p.writeClientError(w, r, err)
		return
	}
	p.storage.forget(id)
	p.adminChange(r.Context(), actor, "client.secret_rotated", id, slog.Duration("overlap", overlap))
	writeJSON(w, http.StatusOK, newClientDocument(c.Client, c.Secret, time.Now()))
}
