package scim

import (
	"strings"
)

// Schema and message URNs (RFC 7643 §§4, 8.7; RFC 7644 §§3.4.2, 3.5.2, 3.12).
const (
	UserSchema       = "urn:ietf:params:scim:schemas:core:2.0:User"
	GroupSchema      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	EnterpriseSchema = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	listSchema       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	patchSchema      = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	searchSchema     = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
	errorSchema      = "urn:ietf:params:scim:api:messages:2.0:Error"
	spcSchema        = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	rtSchema         = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	schemaSchema     = "urn:ietf:params:scim:schemas:core:2.0:Schema"
)

// attr is an attribute definition (RFC 7643 §7). Names are matched
// case-insensitively and written in the case given here.
type attr struct {
	Name        string
	Type        string // string, boolean, complex, dateTime, reference, integer, decimal
	Multi       bool
	Required    bool
	CaseExact   bool
	Mutability  string // readOnly, readWrite, immutable, writeOnly
	Returned    string // always, never, default, request
	Uniqueness  string // none, server, global
	Sub         []*attr
	Description string
}

func (a *attr) sub(name string) *attr { return find(a.Sub, name) }

func find(as []*attr, name string) *attr {
	for _, a := range as {
		if strings.EqualFold(a.Name, name) {
			return a
		}
	}
	return nil
}

func str(name, desc string) *attr {
	return &attr{Name: name, Type: "string", Mutability: "readWrite", Returned: "default", Uniqueness: "none", Description: desc}
}

func boolean(name, desc string) *attr {
	a := str(name, desc)
	a.Type = "boolean"
	return a
}

func complexAttr(name, desc string, multi bool, sub ...*attr) *attr {
	return &attr{Name: name, Type: "complex", Multi: multi, Mutability: "readWrite", Returned: "default", Uniqueness: "none", Sub: sub, Description: desc}
}

func readOnly(a *attr) *attr { a.Mutability = "readOnly"; return a }

// multiValued is the usual sub-attributes of a multi-valued attribute.
func multiValued(name, desc string) *attr {
	return complexAttr(name, desc, true, str("value", "The value."), str("display", "A human-readable name."),
		str("type", "A label of the value's function."), boolean("primary", "The preferred value."))
}

// resourceSchema is a schema with its attributes.
type resourceSchema struct {
	ID          string
	Name        string
	Description string
	Attrs       []*attr
}

var (
	userSchema = &resourceSchema{ID: UserSchema, Name: "User", Description: "User Account", Attrs: []*attr{
		{Name: "userName", Type: "string", Required: true, Mutability: "readWrite", Returned: "always", Uniqueness: "server",
			Description: "Unique identifier for the user, used to sign in (PRECIS-normalized, case-insensitive)."},
		complexAttr("name", "The components of the user's name.", false,
			str("formatted", "The full name."), str("familyName", "The family name."), str("givenName", "The given name."),
			str("middleName", "The middle name."), str("honorificPrefix", "Title prefix."), str("honorificSuffix", "Title suffix.")),
		str("displayName", "The name displayed to end-users."),
		str("nickName", "The casual name."),
		str("profileUrl", "A URI of the user's online profile."),
		str("title", "The user's title."),
		str("userType", "The relationship between the organization and the user."),
		str("preferredLanguage", "Preferred written or spoken language."),
		str("locale", "Default location for localization."),
		str("timezone", "Time zone in IANA format."),
		boolean("active", "The user's administrative status; an inactive user cannot sign in."),
		{Name: "password", Type: "string", Mutability: "writeOnly", Returned: "never", Uniqueness: "none",
			Description: "The user's clear-text password, hashed with argon2id on receipt; never returned."},
		multiValued("emails", "Email addresses."),
		multiValued("phoneNumbers", "Phone numbers."),
		complexAttr("addresses", "Physical mailing addresses.", true,
			str("formatted", ""), str("streetAddress", ""), str("locality", ""), str("region", ""),
			str("postalCode", ""), str("country", ""), str("type", ""), boolean("primary", "")),
		readOnly(complexAttr("groups", "The groups the user belongs to (managed through Groups).", true,
			readOnly(str("value", "Group id.")), readOnly(str("$ref", "Group URI.")), readOnly(str("display", "Group name.")),
			readOnly(str("type", "direct")))),
		multiValued("roles", "Roles of the user."),
		multiValued("entitlements", "Entitlements of the user."),
	}}
	enterpriseSchema = &resourceSchema{ID: EnterpriseSchema, Name: "EnterpriseUser", Description: "Enterprise User", Attrs: []*attr{
		str("employeeNumber", "Numeric or alphanumeric identifier assigned to a person."),
		str("costCenter", "Name of a cost center."),
		str("organization", "Name of an organization."),
		str("division", "Name of a division."),
		str("department", "Name of a department."),
		complexAttr("manager", "The user's manager.", false,
			str("value", "The manager's id."), str("$ref", "The manager's URI."), readOnly(str("displayName", "The manager's displayName."))),
	}}
	groupSchema = &resourceSchema{ID: GroupSchema, Name: "Group", Description: "Group", Attrs: []*attr{
		{Name: "displayName", Type: "string", Required: true, Mutability: "readWrite", Returned: "always", Uniqueness: "server",
			Description: "A human-readable name for the group, unique in the region."},
		complexAttr("members", "Users of this region in the group.", true,
			&attr{Name: "value", Type: "string", Mutability: "immutable", Returned: "default", Uniqueness: "none", CaseExact: true, Description: "User id."},
			readOnly(str("$ref", "User URI.")), readOnly(str("display", "User name.")), readOnly(str("type", "User"))),
	}}
	// common are the attributes of every resource (RFC 7643 §3.1).
	common = []*attr{
		{Name: "id", Type: "string", CaseExact: true, Mutability: "readOnly", Returned: "always", Uniqueness: "server", Description: "Unique, region-tagged resource id."},
		{Name: "externalId", Type: "string", CaseExact: true, Mutability: "readWrite", Returned: "default", Uniqueness: "none", Description: "The provisioning client's id."},
		readOnly(complexAttr("meta", "Resource metadata.", false,
			readOnly(str("resourceType", "")), readOnly(&attr{Name: "created", Type: "dateTime", Mutability: "readOnly", Returned: "default"}),
			readOnly(&attr{Name: "lastModified", Type: "dateTime", Mutability: "readOnly", Returned: "default"}),
			readOnly(str("location", "")), readOnly(&attr{Name: "version", Type: "string", CaseExact: true, Mutability: "readOnly", Returned: "default"}))),
	}
)

// resourceType is a served resource type (RFC 7643 §6).
type resourceType struct {
	Name       string
	Endpoint   string
	Schema     *resourceSchema
	Extensions []*resourceSchema
}

var (
	userType  = &resourceType{Name: "User", Endpoint: "/Users", Schema: userSchema, Extensions: []*resourceSchema{enterpriseSchema}}
	groupType = &resourceType{Name: "Group", Endpoint: "/Groups", Schema: groupSchema}
)

// lookup resolves an attribute name of resource type rt, with an optional
// schema URN prefix, to its definition and the extension schema holding it
// (nil for the core schema or a common attribute).
func (rt *resourceType) lookup(uri, name string) (*attr, *resourceSchema) {
	if uri == "" || strings.EqualFold(uri, rt.Schema.ID) {
		if a := find(common, name); a != nil {
			return a, nil
		}
		if a := find(rt.Schema.Attrs, name); a != nil {
			return a, nil
		}
		if uri != "" {
			return nil, nil
		}
		// An extension attribute named without its URN is not found: names
		// may repeat across schemas (RFC 7644 §3.10).
		return nil, nil
	}
	for _, x := range rt.Extensions {
		if strings.EqualFold(uri, x.ID) {
			return find(x.Attrs, name), x
		}
	}
	return nil, nil
}

// extension returns the extension schema whose URN is key, or nil.
func (rt *resourceType) extension(key string) *resourceSchema {
	for _, x := range rt.Extensions {
		if strings.EqualFold(key, x.ID) {
			return x
		}
	}
	return nil
}

// --- discovery documents ---

func attrDoc(a *attr) map[string]any {
	d := map[string]any{
		"name": a.Name, "type": a.Type, "multiValued": a.Multi, "description": a.Description, "required": a.Required,
		"caseExact": a.CaseExact, "mutability": a.Mutability, "returned": a.Returned, "uniqueness": a.Uniqueness,
	}
	if a.Uniqueness == "" {
		d["uniqueness"] = "none"
	}
	if len(a.Sub) > 0 {
		subs := make([]any, len(a.Sub))
		for i, s := range a.Sub {
			subs[i] = attrDoc(s)
		}
		d["subAttributes"] = subs
	}
	return d
}

func schemaDoc(s *resourceSchema, base string) map[string]any {
	as := make([]any, len(s.Attrs))
	for i, a := range s.Attrs {
		as[i] = attrDoc(a)
	}
	return map[string]any{
		"schemas": []any{schemaSchema}, "id": s.ID, "name": s.Name, "description": s.Description, "attributes": as,
		"meta": map[string]any{"resourceType": "Schema", "location": base + "/Schemas/" + s.ID},
	}
}

func resourceTypeDoc(rt *resourceType, base string) map[string]any {
	d := map[string]any{
		"schemas": []any{rtSchema}, "id": rt.Name, "name": rt.Name, "endpoint": rt.Endpoint, "schema": rt.Schema.ID,
		"description": rt.Schema.Description,
		"meta":        map[string]any{"resourceType": "ResourceType", "location": base + "/ResourceTypes/" + rt.Name},
	}
	if len(rt.Extensions) > 0 {
		var xs []any
		for _, x := range rt.Extensions {
			xs = append(xs, map[string]any{"schema": x.ID, "required": false})
		}
		d["schemaExtensions"] = xs
	}
	return d
}

func (h *Handler) serviceProviderConfig(base string) map[string]any {
	return map[string]any{
		"schemas":          []any{spcSchema},
		"documentationUri": "https://github.com/meridian-id/meridian/blob/main/docs/scim.md",
		"patch":            map[string]any{"supported": true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": h.maxResults},
		"changePassword":   map[string]any{"supported": true},
		"sort":             map[string]any{"supported": true},
		"etag":             map[string]any{"supported": true},
		"authenticationSchemes": []any{map[string]any{
			"type": "oauthbearertoken", "name": "OAuth Bearer Token", "primary": true,
			"description": "An access token of this region (client_credentials grant) carrying the " + h.scope + " scope.",
			"specUri":     "https://www.rfc-editor.org/rfc/rfc6750",
		}},
		"meta": map[string]any{"resourceType": "ServiceProviderConfig", "location": base + "/ServiceProviderConfig"},
	}
}
