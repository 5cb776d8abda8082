// Package scim serves SCIM 2.0 (RFC 7643, RFC 7644) provisioning of a
// region's users and groups at /scim/v2: Users and Groups with create, get,
// replace, PATCH, delete and filtered, sorted, paged lists, ETags with
// If-Match, the enterprise user extension, and the discovery endpoints
// (ServiceProviderConfig, ResourceTypes, Schemas).
//
// Callers authenticate with an access token of this region obtained with
// the client_credentials grant and carrying the SCIM scope (Config.Scope).
// Resource ids are region-tagged artifacts (routing.KindUser,
// routing.KindGroup), so the router sends a call naming a resource to the
// resource's region and every other call to the region that issued the
// token; this handler only ever serves its own region.
//
// Filters are parsed by github.com/scim2/filter-parser/v2 and evaluated
// here over the resources; no part of a filter reaches a database query.
package scim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// Store is the part of the regional store SCIM reads and writes.
type Store interface {
	CreateUser(ctx context.Context, u store.User) error
	UpdateUser(ctx context.Context, u store.User) error
	GetUserBySCIMID(ctx context.Context, scimID string) (store.User, error)
	GetUserByUsername(ctx context.Context, username string) (store.User, error)
	ListUsers(ctx context.Context, after string, limit int) ([]store.User, error)
	DeleteUser(ctx context.Context, username string) error
	RevokeUserTokens(ctx context.Context, userID string) error
	CreateGroup(ctx context.Context, g store.Group) error
	GetGroup(ctx context.Context, id string) (store.Group, error)
	ListGroups(ctx context.Context) ([]store.Group, error)
	UpdateGroup(ctx context.Context, g store.Group) error
	DeleteGroup(ctx context.Context, id string) error
}

// Tokens authenticates bearer tokens (region.Provider.BearerToken).
type Tokens interface {
	BearerToken(ctx context.Context, bearer string) (store.AccessToken, error)
}

// Auditor records audit events (region.Auditor).
type Auditor interface {
	Record(ctx context.Context, event string, attrs ...slog.Attr)
}

// Users need what the region does to a username and a password.
type Users struct {
	// Normalize returns the stored form of a username or an error.
	Normalize func(string) (string, error)
	// HashPassword returns the stored form of a password.
	HashPassword func(string) (string, error)
}

// Config configures a Handler.
type Config struct {
	Region string
	// Issuer is the region's public base URL; resource locations are
	// Issuer + "/scim/v2/...".
	Issuer string
	Store  Store
	Tokens Tokens
	Codec  *routing.Codec
	Users  Users
	Audit  Auditor
	// AuditEvent is the event name of a write (region.AuditSCIMWrite).
	AuditEvent string
	Log        *slog.Logger
	Meter      metric.Meter // nil: no metrics
	// Scope a token must carry (default "scim").
	Scope string
	// MaxResults bounds a page (default 200); MaxFilterLength a filter's
	// bytes (default 1024); MaxBodyBytes a request body (default 1 MiB);
	// MaxScan the users a list may evaluate a filter over (default 50000).
	MaxResults      int
	MaxFilterLength int
	MaxBodyBytes    int64
	MaxScan         int
}

// Handler serves /scim/v2. It is an http.Handler.
type Handler struct {
	Config
	scope      string
	maxResults int
	maxFilter  int
	maxBody    int64
	maxScan    int
	requests   metric.Int64Counter
}

// Prefix is the path the handler serves.
const Prefix = "/scim/v2"

// New returns a SCIM handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Tokens == nil || cfg.Codec == nil || cfg.Users.Normalize == nil || cfg.Users.HashPassword == nil {
		return nil, errors.New("scim: store, tokens, codec and user functions are required")
	}
	if !cfg.Codec.HasRegion(cfg.Region) {
		return nil, fmt.Errorf("scim: region %q is not in the routing codec", cfg.Region)
	}
	h := &Handler{Config: cfg, scope: cfg.Scope, maxResults: cfg.MaxResults, maxFilter: cfg.MaxFilterLength,
		maxBody: cfg.MaxBodyBytes, maxScan: cfg.MaxScan}
	if h.scope == "" {
		h.scope = "scim"
	}
	if h.maxResults <= 0 {
		h.maxResults = 200
	}
	if h.maxFilter <= 0 {
		h.maxFilter = 1024
	}
	if h.maxBody <= 0 {
		h.maxBody = 1 << 20
	}
	if h.maxScan <= 0 {
		h.maxScan = 50000
	}
	if h.Log == nil {
		h.Log = slog.New(slog.DiscardHandler)
	}
	m := cfg.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var err error
	if h.requests, err = m.Int64Counter("meridian.scim.requests",
		metric.WithDescription("SCIM requests by resource type, operation and HTTP status")); err != nil {
		return nil, err
	}
	return h, nil
}

// scimError is a SCIM error response (RFC 7644 §3.12).
type scimError struct {
	status   int
	scimType string
	detail   string
}

func (e *scimError) Error() string {
	return fmt.Sprintf("scim: %d %s: %s", e.status, e.scimType, e.detail)
}

func errorf(status int, scimType, format string, args ...any) *scimError {
	return &scimError{status: status, scimType: scimType, detail: fmt.Sprintf(format, args...)}
}

func badRequest(scimType, format string, args ...any) *scimError {
	return errorf(http.StatusBadRequest, scimType, format, args...)
}

var (
	errNotFound = errorf(http.StatusNotFound, "", "resource not found")
	errStale    = errorf(http.StatusPreconditionFailed, "", "the resource changed: its version does not match If-Match")
)

// call is one request being served.
type call struct {
	w        http.ResponseWriter
	r        *http.Request
	clientID string
	resource string // User, Group or a discovery endpoint, for metrics
	op       string
	status   int
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{w: w, r: r, resource: "other", op: strings.ToLower(r.Method)}
	w.Header().Set("Cache-Control", "no-store")
	if err := h.serve(c); err != nil {
		h.fail(c, err)
	}
	h.requests.Add(r.Context(), 1, metric.WithAttributes(attribute.String("resource", c.resource),
		attribute.String("op", c.op), attribute.Int("status", c.status)))
}

func (h *Handler) serve(c *call) error {
	rest, ok := strings.CutPrefix(c.r.URL.Path, Prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		return errNotFound
	}
	rest = strings.TrimPrefix(rest, "/")
	typ, id, _ := strings.Cut(rest, "/")
	if strings.Contains(id, "/") {
		return errNotFound
	}
	switch typ {
	case "ServiceProviderConfig", "ResourceTypes", "Schemas":
		c.resource = typ
		if c.r.Method != http.MethodGet {
			return errorf(http.StatusMethodNotAllowed, "", "%s is read-only", typ)
		}
		return h.discovery(c, typ, id)
	case "Users", "Groups":
	default:
		return errNotFound
	}
	c.resource = strings.TrimSuffix(typ, "s")
	if err := h.authenticate(c); err != nil {
		return err
	}
	rt := userType
	if typ == "Groups" {
		rt = groupType
	}
	switch {
	case id == "" && c.r.Method == http.MethodGet:
		c.op = "list"
		return h.list(c, rt)
	case id == ".search" && c.r.Method == http.MethodPost:
		c.op = "list"
		return h.search(c, rt)
	case id == "" && c.r.Method == http.MethodPost:
		c.op = "create"
		return h.create(c, rt)
	case id == "":
	case c.r.Method == http.MethodGet:
		return h.get(c, rt, id)
	case c.r.Method == http.MethodPut:
		c.op = "replace"
		return h.write(c, rt, id, false)
	case c.r.Method == http.MethodPatch:
		return h.write(c, rt, id, true)
	case c.r.Method == http.MethodDelete:
		return h.delete(c, rt, id)
	}
	return errorf(http.StatusMethodNotAllowed, "", "method %s not allowed here", c.r.Method)
}

// authenticate accepts an active access token of this region, issued with
// the client_credentials grant, that carries the SCIM scope.
func (h *Handler) authenticate(c *call) error {
	v := c.r.Header.Get("Authorization")
	if len(v) <= 7 || !strings.EqualFold(v[:7], "bearer ") {
		c.w.Header().Set("WWW-Authenticate", `Bearer realm="scim"`)
		return errorf(http.StatusUnauthorized, "", "a bearer access token is required")
	}
	at, err := h.Tokens.BearerToken(c.r.Context(), strings.TrimSpace(v[7:]))
	if err != nil {
		// Unknown, foreign, revoked, expired or malformed: all the same to
		// the caller (the reason is not told).
		c.w.Header().Set("WWW-Authenticate", `Bearer realm="scim", error="invalid_token"`)
		return errorf(http.StatusUnauthorized, "", "the access token is not valid here")
	}
	if at.GrantID != "" || at.Subject != at.ClientID || !slices.Contains(at.Scopes, h.scope) {
		c.w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="scim", error="insufficient_scope", scope=%q`, h.scope))
		return errorf(http.StatusForbidden, "", "the token must be a client_credentials token with the %q scope", h.scope)
	}
	c.clientID = at.ClientID
	return nil
}

func (h *Handler) fail(c *call, err error) {
	var se *scimError
	if !errors.As(err, &se) {
		if c.r.Context().Err() == nil {
			h.Log.Error("scim request failed", "method", c.r.Method, "path", c.r.URL.Path, "err", err)
		}
		se = errorf(http.StatusInternalServerError, "", "internal error")
	}
	body := map[string]any{"schemas": []any{errorSchema}, "status": strconv.Itoa(se.status), "detail": se.detail}
	if se.scimType != "" {
		body["scimType"] = se.scimType
	}
	h.reply(c, se.status, body)
}

func (h *Handler) reply(c *call, status int, body any) {
	c.status = status
	c.w.Header().Set("Content-Type", "application/scim+json")
	c.w.WriteHeader(status)
	if body != nil {
		_ = json.NewEncoder(c.w).Encode(body)
	}
}

func (h *Handler) base() string { return strings.TrimSuffix(h.Issuer, "/") + Prefix }

// readJSON reads a bounded JSON object body.
func (h *Handler) readJSON(c *call) (map[string]any, error) {
	ct := c.r.Header.Get("Content-Type")
	if ct != "" && !strings.HasPrefix(ct, "application/scim+json") && !strings.HasPrefix(ct, "application/json") {
		return nil, errorf(http.StatusUnsupportedMediaType, "", "send application/scim+json")
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, h.maxBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "tooLarge", "the body exceeds %d bytes", h.maxBody)
		}
		return nil, badRequest("invalidSyntax", "unreadable body")
	}
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	if err := d.Decode(&m); err != nil || m == nil || d.More() {
		return nil, badRequest("invalidSyntax", "the body must be one JSON object")
	}
	return m, nil
}

func (h *Handler) discovery(c *call, typ, id string) error {
	base := h.base()
	switch typ {
	case "ServiceProviderConfig":
		if id != "" {
			return errNotFound
		}
		h.reply(c, http.StatusOK, h.serviceProviderConfig(base))
	case "ResourceTypes":
		docs := []any{resourceTypeDoc(userType, base), resourceTypeDoc(groupType, base)}
		if id != "" {
			for _, rt := range []*resourceType{userType, groupType} {
				if rt.Name == id {
					h.reply(c, http.StatusOK, resourceTypeDoc(rt, base))
					return nil
				}
			}
			return errNotFound
		}
		h.reply(c, http.StatusOK, listResponse(docs, len(docs), 1))
	case "Schemas":
		all := []*resourceSchema{userSchema, enterpriseSchema, groupSchema}
		if id != "" {
			for _, s := range all {
				if s.ID == id {
					h.reply(c, http.StatusOK, schemaDoc(s, base))
					return nil
				}
			}
			return errNotFound
		}
		docs := make([]any, len(all))
		for i, s := range all {
			docs[i] = schemaDoc(s, base)
		}
		h.reply(c, http.StatusOK, listResponse(docs, len(docs), 1))
	}
	return nil
}

func listResponse(items []any, total, start int) map[string]any {
	if items == nil {
		items = []any{}
	}
	return map[string]any{"schemas": []any{listSchema}, "totalResults": total, "startIndex": start,
		"itemsPerPage": len(items), "Resources": items}
}

// audit records a successful write.
func (h *Handler) audit(c *call, rt *resourceType, action, id string) {
	if h.Audit == nil {
		return
	}
	h.Audit.Record(c.r.Context(), h.AuditEvent, slog.String("action", action), slog.String("resource_type", rt.Name),
		slog.String("id", id), slog.String("client_id", c.clientID))
}

// etag is a resource version's entity tag.
func etag(version int64) string { return `W/"` + strconv.FormatInt(version, 10) + `"` }

// ifMatch checks an If-Match header against the current version: it
// returns the version a conditional write must find (0 when the header is
// absent or "*") or errStale.
func ifMatch(r *http.Request, version int64) (int64, error) {
	v := r.Header.Get("If-Match")
	if v == "" {
		return 0, nil
	}
	cur := etag(version)
	for t := range strings.SplitSeq(v, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == cur || "W/"+t == cur {
			return version, nil
		}
	}
	return 0, errStale
}

// notModified answers If-None-Match on a read.
func notModified(r *http.Request, version int64) bool {
	v := r.Header.Get("If-None-Match")
	if v == "" {
		return false
	}
	cur := etag(version)
	for t := range strings.SplitSeq(v, ",") {
		if t = strings.TrimSpace(t); t == "*" || t == cur || "W/"+t == cur {
			return true
		}
	}
	return false
}

// ownID reports whether id is a resource id of kind minted for this region.
func (h *Handler) ownID(id string, kind routing.Kind) bool {
	t, err := h.Codec.VerifyKind(id, kind)
	return err == nil && t.Region == h.Region
}
