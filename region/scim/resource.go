package scim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// A resource is handled as a JSON object (map[string]any) with attribute
// names in the schema's case; extension attributes sit under their
// schema's URN. Stored users keep everything but the id, userName,
// password, groups and meta in store.User.SCIM.

// normalize checks an incoming resource against rt's schemas: names are
// matched case-insensitively and rewritten in the schema's case, unknown
// attributes and read-only ones are dropped (RFC 7644 §3.3, §3.5.1), and
// every value must have its attribute's type. "schemas" is checked to name
// the core schema.
func normalize(rt *resourceType, in map[string]any, requireSchemas bool) (map[string]any, error) {
	out := map[string]any{}
	sawSchemas := false
	for k, v := range in {
		if strings.EqualFold(k, "schemas") {
			sawSchemas = true
			list, ok := v.([]any)
			if !ok {
				return nil, badRequest("invalidSyntax", "schemas must be a list of URNs")
			}
			core := false
			for _, s := range list {
				str, ok := s.(string)
				if !ok {
					return nil, badRequest("invalidSyntax", "schemas must be a list of URNs")
				}
				if strings.EqualFold(str, rt.Schema.ID) {
					core = true
				}
			}
			if !core {
				return nil, badRequest("invalidSyntax", "schemas must include %s", rt.Schema.ID)
			}
			continue
		}
		if x := rt.extension(k); x != nil {
			if v == nil {
				continue
			}
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, badRequest("invalidValue", "%s must be an object", x.ID)
			}
			ext := map[string]any{}
			for ek, ev := range obj {
				a := find(x.Attrs, ek)
				if a == nil || a.Mutability == "readOnly" {
					continue
				}
				nv, err := checkValue(a, ev, a.Name)
				if err != nil {
					return nil, err
				}
				if nv != nil {
					ext[a.Name] = nv
				}
			}
			if len(ext) > 0 {
				out[x.ID] = ext
			}
			continue
		}
		a, _ := rt.lookup("", k)
		if a == nil || a.Mutability == "readOnly" {
			continue
		}
		nv, err := checkValue(a, v, a.Name)
		if err != nil {
			return nil, err
		}
		if nv != nil {
			out[a.Name] = nv
		}
	}
	if requireSchemas && !sawSchemas {
		return nil, badRequest("invalidSyntax", "schemas is required")
	}
	return out, nil
}

// checkValue returns v as attribute a holds it, or an invalidValue error;
// a nil result means unassigned.
func checkValue(a *attr, v any, path string) (any, error) {
	if v == nil {
		return nil, nil
	}
	if a.Multi {
		list, ok := v.([]any)
		if !ok {
			return nil, badRequest("invalidValue", "%s must be a list", path)
		}
		var out []any
		primaries := 0
		for _, e := range list {
			one := *a
			one.Multi = false
			nv, err := checkValue(&one, e, path)
			if err != nil {
				return nil, err
			}
			if nv == nil {
				continue
			}
			if m, ok := nv.(map[string]any); ok && m["primary"] == true {
				primaries++
			}
			out = append(out, nv)
		}
		if primaries > 1 {
			return nil, badRequest("invalidValue", "at most one of %s may be primary", path)
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	}
	switch a.Type {
	case "complex":
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, badRequest("invalidValue", "%s must be an object", path)
		}
		out := map[string]any{}
		for k, sv := range obj {
			s := a.sub(k)
			if s == nil || s.Mutability == "readOnly" {
				continue
			}
			nv, err := checkValue(s, sv, path+"."+s.Name)
			if err != nil {
				return nil, err
			}
			if nv != nil {
				out[s.Name] = nv
			}
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	case "boolean":
		switch b := v.(type) {
		case bool:
			return b, nil
		case string: // some clients send "True"/"False"
			switch strings.ToLower(b) {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
		}
		return nil, badRequest("invalidValue", "%s must be a boolean", path)
	case "dateTime":
		s, ok := v.(string)
		if _, err := time.Parse(time.RFC3339, s); !ok || err != nil {
			return nil, badRequest("invalidValue", "%s must be an RFC 3339 date-time", path)
		}
		return s, nil
	default:
		s, ok := v.(string)
		if !ok {
			return nil, badRequest("invalidValue", "%s must be a string", path)
		}
		if len(s) > 4096 {
			return nil, badRequest("invalidValue", "%s is longer than 4096 bytes", path)
		}
		if s == "" {
			return nil, nil
		}
		return s, nil
	}
}

// userDoc is a stored user's SCIM attributes (store.User.SCIM).
func userDoc(u store.User) map[string]any {
	m := map[string]any{}
	if u.SCIM != "" {
		d := json.NewDecoder(strings.NewReader(u.SCIM))
		d.UseNumber()
		_ = d.Decode(&m) // written by this package; a bad document reads as empty
	}
	return m
}

// userResource is the full representation of u (before projection).
func (h *Handler) userResource(u store.User, groups []store.Group) map[string]any {
	m := userDoc(u)
	schemas := []any{UserSchema}
	if _, ok := m[EnterpriseSchema]; ok {
		schemas = append(schemas, EnterpriseSchema)
	}
	m["schemas"] = schemas
	m["id"] = u.SCIMID
	m["userName"] = u.Username
	if _, ok := m["active"]; !ok {
		m["active"] = true
	}
	var gs []any
	for _, g := range groups {
		if _, found := slices.BinarySearch(g.Members, u.SCIMID); found {
			gs = append(gs, map[string]any{"value": g.ID, "$ref": h.base() + "/Groups/" + g.ID, "display": g.DisplayName, "type": "direct"})
		}
	}
	if len(gs) > 0 {
		m["groups"] = gs
	}
	m["meta"] = map[string]any{"resourceType": "User", "created": u.CreatedAt.UTC().Format(time.RFC3339Nano),
		"lastModified": u.UpdatedAt.UTC().Format(time.RFC3339Nano), "location": h.base() + "/Users/" + u.SCIMID,
		"version": etag(u.Version)}
	return m
}

// groupResource is the full representation of g; names maps member ids
// to their userName.
func (h *Handler) groupResource(g store.Group, names map[string]string) map[string]any {
	m := map[string]any{"schemas": []any{GroupSchema}, "id": g.ID, "displayName": g.DisplayName}
	if g.ExternalID != "" {
		m["externalId"] = g.ExternalID
	}
	if len(g.Members) > 0 {
		ms := make([]any, 0, len(g.Members))
		for _, id := range g.Members {
			mm := map[string]any{"value": id, "$ref": h.base() + "/Users/" + id, "type": "User"}
			if n, ok := names[id]; ok {
				mm["display"] = n
			}
			ms = append(ms, mm)
		}
		m["members"] = ms
	}
	m["meta"] = map[string]any{"resourceType": "Group", "created": g.CreatedAt.UTC().Format(time.RFC3339Nano),
		"lastModified": g.UpdatedAt.UTC().Format(time.RFC3339Nano), "location": h.base() + "/Groups/" + g.ID,
		"version": etag(g.Version)}
	return m
}

// writable is the part of a representation a client may send back: what
// PATCH starts from.
func writable(m map[string]any) map[string]any {
	out := maps.Clone(m)
	for _, k := range []string{"id", "meta", "groups", "schemas"} {
		delete(out, k)
	}
	out["schemas"] = []any{}
	return out
}

// applyUser turns a normalized user representation into the stored user:
// userName and password are taken out, the rest becomes the SCIM
// document, and the OpenID claims the document implies are refreshed.
func (h *Handler) applyUser(u *store.User, doc map[string]any) error {
	name, _ := doc["userName"].(string)
	if name == "" {
		return badRequest("invalidValue", "userName is required")
	}
	norm, err := h.Users.Normalize(name)
	if err != nil {
		return badRequest("invalidValue", "userName is not a valid username")
	}
	u.Username = norm
	if pw, ok := doc["password"].(string); ok {
		if len(pw) < 8 || len(pw) > 1024 {
			return badRequest("invalidValue", "password must be 8 to 1024 characters")
		}
		if u.PasswordHash, err = h.Users.HashPassword(pw); err != nil {
			return err
		}
	}
	rest := maps.Clone(doc)
	delete(rest, "userName")
	delete(rest, "password")
	b, err := json.Marshal(rest)
	if err != nil {
		return err
	}
	u.SCIM = string(b)
	u.Claims = claimsOf(u.Claims, rest)
	return nil
}

// claimsOf updates OpenID profile claims from SCIM attributes: name,
// given_name, family_name, email, phone_number and locale follow the SCIM
// resource; other claims are kept.
func claimsOf(old map[string]string, doc map[string]any) map[string]string {
	c := maps.Clone(old)
	if c == nil {
		c = map[string]string{}
	}
	set := func(k, v string) {
		if v == "" {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	name, _ := doc["name"].(map[string]any)
	given, _ := name["givenName"].(string)
	family, _ := name["familyName"].(string)
	full, _ := name["formatted"].(string)
	if full == "" {
		full, _ = doc["displayName"].(string)
	}
	if full == "" {
		full = strings.TrimSpace(given + " " + family)
	}
	set("name", full)
	set("given_name", given)
	set("family_name", family)
	set("email", primary(doc["emails"]))
	set("phone_number", primary(doc["phoneNumbers"]))
	locale, _ := doc["locale"].(string)
	set("locale", locale)
	return c
}

// primary returns the value of the primary element of a multi-valued
// attribute, else of its first element.
func primary(v any) string {
	list, _ := v.([]any)
	first := ""
	for i, e := range list {
		m, _ := e.(map[string]any)
		s, _ := m["value"].(string)
		if i == 0 {
			first = s
		}
		if m["primary"] == true {
			return s
		}
	}
	return first
}

// randomID returns a fresh subject id like region.CreateUser's: len(buf)
// random bytes, base64url.
func randomID(buf []byte) (string, error) {
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}
