package scim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	filter "github.com/scim2/filter-parser/v2"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// listPage is how many users a list reads from the store at a time.
const listPage = 500

// allUsers reads every user of the region (at most maxScan), giving each
// one without a SCIM id its id first.
func (h *Handler) allUsers(ctx context.Context) ([]store.User, error) {
	var out []store.User
	after := ""
	for {
		page, err := h.Store.ListUsers(ctx, after, listPage)
		if err != nil {
			return nil, err
		}
		for _, u := range page {
			if u, err = h.ensureID(ctx, u); err != nil {
				return nil, err
			}
			out = append(out, u)
		}
		if len(out) > h.maxScan {
			return nil, badRequest("tooMany", "the region holds more than %d users: filter with userName eq", h.maxScan)
		}
		if len(page) < listPage {
			return out, nil
		}
		after = page[len(page)-1].Username
	}
}

// ensureID gives a user created outside SCIM (the regional command, an
// older release) its SCIM id, once: a concurrent assignment wins and is
// read back.
func (h *Handler) ensureID(ctx context.Context, u store.User) (store.User, error) {
	for range 3 {
		if u.SCIMID != "" {
			return u, nil
		}
		id, err := h.Codec.New(routing.KindUser, h.Region)
		if err != nil {
			return u, err
		}
		v := u
		v.SCIMID = id
		v.UpdatedAt = u.UpdatedAt // naming a user is not a modification of it
		err = h.Store.UpdateUser(ctx, v)
		if err != nil && !errors.Is(err, store.ErrStale) {
			return u, err
		}
		if u, err = h.Store.GetUserByUsername(ctx, u.Username); err != nil {
			return u, err
		}
	}
	return u, errors.New("scim: could not assign a SCIM id")
}

// listParams are a list request's query parameters (RFC 7644 §3.4.2).
type listParams struct {
	filter     filter.Expression
	sortBy     *filter.AttributePath
	descending bool
	start      int
	count      int
	proj       projection
}

func (h *Handler) listParams(r *http.Request, rt *resourceType) (listParams, error) {
	q := r.URL.Query()
	p := listParams{start: 1, count: h.maxResults}
	var err error
	if f := q.Get("filter"); f != "" {
		if p.filter, err = parseFilter(rt, f, h.maxFilter); err != nil {
			return p, err
		}
	}
	if s := q.Get("sortBy"); s != "" {
		ap, err := filter.ParseAttrPath([]byte(s))
		if err != nil {
			return p, badRequest("invalidValue", "sortBy does not parse")
		}
		if _, _, err := resolve(rt, ap, nil); err != nil {
			return p, badRequest("invalidValue", "sortBy names an unknown attribute")
		}
		p.sortBy = &ap
	}
	switch strings.ToLower(q.Get("sortOrder")) {
	case "", "ascending":
	case "descending":
		p.descending = true
	default:
		return p, badRequest("invalidValue", "sortOrder must be ascending or descending")
	}
	if s := q.Get("startIndex"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return p, badRequest("invalidValue", "startIndex must be an integer")
		}
		p.start = max(n, 1) // RFC 7644 §3.4.2.4: less than 1 is 1
	}
	if s := q.Get("count"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return p, badRequest("invalidValue", "count must be an integer")
		}
		p.count = min(max(n, 0), h.maxResults)
	}
	p.proj, err = parseProjection(rt, q.Get("attributes"), q.Get("excludedAttributes"))
	return p, err
}

func (h *Handler) list(c *call, rt *resourceType) error {
	p, err := h.listParams(c.r, rt)
	if err != nil {
		return err
	}
	ctx := c.r.Context()
	groups, err := h.Store.ListGroups(ctx)
	if err != nil {
		return err
	}
	var all []map[string]any
	if rt == userType {
		users, err := h.candidates(ctx, p.filter)
		if err != nil {
			return err
		}
		for _, u := range users {
			all = append(all, h.userResource(u, groups))
		}
	} else {
		names, err := h.memberNames(ctx, groups)
		if err != nil {
			return err
		}
		for _, g := range groups {
			all = append(all, h.groupResource(g, names))
		}
	}
	var hits []map[string]any
	for _, m := range all {
		if p.filter == nil || match(rt, p.filter, m, nil, nil) {
			hits = append(hits, m)
		}
	}
	if p.sortBy != nil {
		slices.SortStableFunc(hits, func(a, b map[string]any) int {
			ka, oka := sortKey(rt, *p.sortBy, a)
			kb, okb := sortKey(rt, *p.sortBy, b)
			var d int
			switch {
			case !oka && !okb:
				return 0
			case !oka:
				return 1 // unassigned values last, either order
			case !okb:
				return -1
			default:
				d = strings.Compare(ka, kb)
			}
			if p.descending {
				d = -d
			}
			return d
		})
	}
	var page []any
	for i := p.start - 1; i < len(hits) && len(page) < p.count; i++ {
		page = append(page, p.proj.apply(rt, hits[i]))
	}
	h.reply(c, http.StatusOK, listResponse(page, len(hits), p.start))
	return nil
}

// search serves POST /<type>/.search (RFC 7644 §3.4.3): a list whose
// parameters come in a SearchRequest body (so filter values stay out of
// URLs and access logs).
func (h *Handler) search(c *call, rt *resourceType) error {
	body, err := h.readJSON(c)
	if err != nil {
		return err
	}
	ok := false
	schemas, _ := lookupKey(body, "schemas").([]any)
	for _, s := range schemas {
		if str, _ := s.(string); strings.EqualFold(str, searchSchema) {
			ok = true
		}
	}
	if !ok {
		return badRequest("invalidSyntax", "schemas must be [%q]", searchSchema)
	}
	q := url.Values{}
	for _, k := range []string{"filter", "sortBy", "sortOrder"} {
		switch v := lookupKey(body, k).(type) {
		case nil:
		case string:
			q.Set(k, v)
		default:
			return badRequest("invalidValue", "%s must be a string", k)
		}
	}
	for _, k := range []string{"startIndex", "count"} {
		switch v := lookupKey(body, k).(type) {
		case nil:
		case json.Number:
			q.Set(k, v.String())
		default:
			return badRequest("invalidValue", "%s must be an integer", k)
		}
	}
	for _, k := range []string{"attributes", "excludedAttributes"} {
		switch v := lookupKey(body, k).(type) {
		case nil:
		case []any:
			var names []string
			for _, n := range v {
				s, ok := n.(string)
				if !ok {
					return badRequest("invalidValue", "%s must be a list of attribute names", k)
				}
				names = append(names, s)
			}
			q.Set(k, strings.Join(names, ","))
		default:
			return badRequest("invalidValue", "%s must be a list of attribute names", k)
		}
	}
	r := c.r.Clone(c.r.Context())
	r.URL.RawQuery = q.Encode()
	c.r = r
	return h.list(c, rt)
}

// candidates returns the users a filter may match: the one user a
// top-level "userName eq" names, else every user.
func (h *Handler) candidates(ctx context.Context, f filter.Expression) ([]store.User, error) {
	if e, ok := f.(*filter.AttributeExpression); ok && e.Operator == filter.EQ && e.AttributePath.SubAttribute == nil &&
		strings.EqualFold(e.AttributePath.AttributeName, "userName") &&
		(e.AttributePath.URIPrefix == nil || strings.EqualFold(e.AttributePath.URI(), UserSchema)) {
		name, _ := e.CompareValue.(string)
		norm, err := h.Users.Normalize(name)
		if err != nil {
			return nil, nil
		}
		u, err := h.Store.GetUserByUsername(ctx, norm)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		u, err = h.ensureID(ctx, u)
		return []store.User{u}, err
	}
	return h.allUsers(ctx)
}

// memberNames maps the member ids of groups to their userName.
func (h *Handler) memberNames(ctx context.Context, groups []store.Group) (map[string]string, error) {
	names := map[string]string{}
	for _, g := range groups {
		for _, id := range g.Members {
			if _, ok := names[id]; ok {
				continue
			}
			u, err := h.Store.GetUserBySCIMID(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			names[id] = u.Username
		}
	}
	return names, nil
}

// load returns the resource id names, its representation and version.
func (h *Handler) load(ctx context.Context, rt *resourceType, id string) (map[string]any, int64, any, error) {
	if rt == userType {
		if !h.ownID(id, routing.KindUser) {
			return nil, 0, nil, errNotFound
		}
		u, err := h.Store.GetUserBySCIMID(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil, 0, nil, errNotFound
		}
		if err != nil {
			return nil, 0, nil, err
		}
		groups, err := h.Store.ListGroups(ctx)
		if err != nil {
			return nil, 0, nil, err
		}
		return h.userResource(u, groups), u.Version, u, nil
	}
	if !h.ownID(id, routing.KindGroup) {
		return nil, 0, nil, errNotFound
	}
	g, err := h.Store.GetGroup(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, nil, errNotFound
	}
	if err != nil {
		return nil, 0, nil, err
	}
	names, err := h.memberNames(ctx, []store.Group{g})
	if err != nil {
		return nil, 0, nil, err
	}
	return h.groupResource(g, names), g.Version, g, nil
}

func (h *Handler) get(c *call, rt *resourceType, id string) error {
	proj, err := parseProjection(rt, c.r.URL.Query().Get("attributes"), c.r.URL.Query().Get("excludedAttributes"))
	if err != nil {
		return err
	}
	m, version, _, err := h.load(c.r.Context(), rt, id)
	if err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(version))
	if notModified(c.r, version) {
		c.status = http.StatusNotModified
		c.w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h.reply(c, http.StatusOK, proj.apply(rt, m))
	return nil
}

// storeErr maps a store error of a write to its SCIM error.
func storeErr(rt *resourceType, err error) error {
	switch {
	case errors.Is(err, store.ErrConflict):
		what := "userName"
		if rt == groupType {
			what = "displayName"
		}
		return errorf(http.StatusConflict, "uniqueness", "%s is already taken", what)
	case errors.Is(err, store.ErrStale):
		return errStale
	case errors.Is(err, store.ErrNotFound):
		return errNotFound
	}
	return err
}

func (h *Handler) create(c *call, rt *resourceType) error {
	body, err := h.readJSON(c)
	if err != nil {
		return err
	}
	doc, err := normalize(rt, body, true)
	if err != nil {
		return err
	}
	ctx := c.r.Context()
	now := time.Now().UTC()
	var id string
	if rt == userType {
		var raw [16]byte
		if id, err = h.Codec.New(routing.KindUser, h.Region); err != nil {
			return err
		}
		u := store.User{SCIMID: id, CreatedAt: now, UpdatedAt: now, Version: 1}
		if u.ID, err = randomID(raw[:]); err != nil {
			return err
		}
		if err := h.applyUser(&u, doc); err != nil {
			return err
		}
		if err := h.Store.CreateUser(ctx, u); err != nil {
			return storeErr(rt, err)
		}
	} else {
		if id, err = h.Codec.New(routing.KindGroup, h.Region); err != nil {
			return err
		}
		g := store.Group{ID: id, CreatedAt: now, UpdatedAt: now}
		if err := h.applyGroup(ctx, &g, doc); err != nil {
			return err
		}
		if err := h.Store.CreateGroup(ctx, g); err != nil {
			return storeErr(rt, err)
		}
	}
	h.audit(c, rt, "create", id)
	m, version, _, err := h.load(ctx, rt, id)
	if err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(version))
	c.w.Header().Set("Location", h.base()+rt.Endpoint+"/"+id)
	h.reply(c, http.StatusCreated, m)
	return nil
}

// applyGroup sets a group from a normalized representation; every member
// must be a user of this region.
func (h *Handler) applyGroup(ctx context.Context, g *store.Group, doc map[string]any) error {
	name, _ := doc["displayName"].(string)
	if name == "" {
		return badRequest("invalidValue", "displayName is required")
	}
	g.DisplayName = name
	g.ExternalID, _ = doc["externalId"].(string)
	g.Members = nil
	for _, m := range elements(doc["members"]) {
		mm, _ := m.(map[string]any)
		id, _ := mm["value"].(string)
		if id == "" {
			return badRequest("invalidValue", "every member needs a value (a user id)")
		}
		if !h.ownID(id, routing.KindUser) {
			return badRequest("invalidValue", "member %q is not a user of this region", id)
		}
		if _, err := h.Store.GetUserBySCIMID(ctx, id); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return badRequest("invalidValue", "member %q is not a user of this region", id)
			}
			return err
		}
		g.Members = append(g.Members, id)
	}
	if len(g.Members) > 10000 {
		return badRequest("tooMany", "a group holds at most 10000 members")
	}
	slices.Sort(g.Members)
	g.Members = slices.Compact(g.Members)
	return nil
}

// write serves PUT (replace) and PATCH of resource id.
func (h *Handler) write(c *call, rt *resourceType, id string, isPatch bool) error {
	body, err := h.readJSON(c)
	if err != nil {
		return err
	}
	ctx := c.r.Context()
	m, version, cur, err := h.load(ctx, rt, id)
	if err != nil {
		return err
	}
	want, err := ifMatch(c.r, version)
	if err != nil {
		return err
	}
	if want == 0 {
		want = version // the write must still find what it read
	}
	var doc map[string]any
	if isPatch {
		c.op = "patch"
		w := writable(m)
		if err := patch(rt, w, body); err != nil {
			return err
		}
		delete(w, "schemas")
		if doc, err = normalize(rt, w, false); err != nil {
			return err
		}
	} else {
		if doc, err = normalize(rt, body, true); err != nil {
			return err
		}
		if v, ok := lookupKey(body, "id").(string); ok && v != id {
			return badRequest("mutability", "id cannot be changed")
		}
	}
	if rt == userType {
		u := cur.(store.User)
		u.Version = want
		u.UpdatedAt = time.Now().UTC()
		if err := h.applyUser(&u, doc); err != nil {
			return err
		}
		if err := h.Store.UpdateUser(ctx, u); err != nil {
			return storeErr(rt, err)
		}
		// An inactive user and a password set by provisioning end the
		// user's sessions and tokens at this region (after every write
		// leaving the user inactive, so a retry after a failed revocation
		// revokes).
		_, newPassword := doc["password"]
		if doc["active"] == false || newPassword {
			if err := h.Store.RevokeUserTokens(ctx, u.ID); err != nil {
				return err
			}
		}
	} else {
		g := cur.(store.Group)
		g.Version = want
		g.UpdatedAt = time.Now().UTC()
		if err := h.applyGroup(ctx, &g, doc); err != nil {
			return err
		}
		if err := h.Store.UpdateGroup(ctx, g); err != nil {
			return storeErr(rt, err)
		}
	}
	h.audit(c, rt, c.op, id)
	m, version, _, err = h.load(ctx, rt, id)
	if err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(version))
	h.reply(c, http.StatusOK, m)
	return nil
}

func (h *Handler) delete(c *call, rt *resourceType, id string) error {
	c.op = "delete"
	ctx := c.r.Context()
	_, version, cur, err := h.load(ctx, rt, id)
	if err != nil {
		return err
	}
	if _, err := ifMatch(c.r, version); err != nil {
		return err
	}
	if rt == userType {
		err = h.Store.DeleteUser(ctx, cur.(store.User).Username)
	} else {
		err = h.Store.DeleteGroup(ctx, id)
	}
	if err != nil {
		return storeErr(rt, err)
	}
	h.audit(c, rt, "delete", id)
	c.status = http.StatusNoContent
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
