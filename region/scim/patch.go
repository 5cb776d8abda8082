package scim

import (
	"strings"

	filter "github.com/scim2/filter-parser/v2"
)

// maxOperations bounds the operations of one PATCH request.
const maxOperations = 100

// patch applies a PatchOp body (RFC 7644 §3.5.2) to doc, the writable
// representation of a resource, in place.
func patch(rt *resourceType, doc map[string]any, body map[string]any) error {
	schemas, _ := lookupKey(body, "schemas").([]any)
	ok := false
	for _, s := range schemas {
		if str, _ := s.(string); strings.EqualFold(str, patchSchema) {
			ok = true
		}
	}
	if !ok {
		return badRequest("invalidSyntax", "schemas must be [%q]", patchSchema)
	}
	ops, isList := lookupKey(body, "Operations").([]any)
	if !isList || len(ops) == 0 {
		return badRequest("invalidSyntax", "Operations must be a non-empty list")
	}
	if len(ops) > maxOperations {
		return badRequest("tooMany", "at most %d operations per request", maxOperations)
	}
	for i, o := range ops {
		op, _ := o.(map[string]any)
		if op == nil {
			return badRequest("invalidSyntax", "operation %d is not an object", i)
		}
		name, _ := lookupKey(op, "op").(string)
		path, _ := lookupKey(op, "path").(string)
		value := lookupKey(op, "value")
		var err error
		switch strings.ToLower(name) {
		case "add":
			err = patchAdd(rt, doc, path, value, false)
		case "replace":
			err = patchAdd(rt, doc, path, value, true)
		case "remove":
			err = patchRemove(rt, doc, path, value)
		default:
			err = badRequest("invalidSyntax", "operation %d: op must be add, remove or replace", i)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func lookupKey(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// target is a resolved PATCH path.
type target struct {
	a      *attr
	ext    *resourceSchema // the extension holding a, nil for core
	filter filter.Expression
	sub    *attr
}

func parsePath(rt *resourceType, raw string) (target, error) {
	if len(raw) > 1024 {
		return target{}, badRequest("invalidPath", "path is too long")
	}
	p, err := filter.ParsePath([]byte(raw))
	if err != nil {
		// A bare extension URN names the whole extension object.
		return target{}, badRequest("invalidPath", "path %q does not parse", raw)
	}
	a, ext := rt.lookup(p.AttributePath.URI(), p.AttributePath.AttributeName)
	if a == nil {
		return target{}, badRequest("invalidPath", "unknown attribute in path %q", raw)
	}
	t := target{a: a, ext: ext, filter: p.ValueExpression}
	subName := p.AttributePath.SubAttributeName()
	if p.SubAttribute != nil {
		if subName != "" {
			return target{}, badRequest("invalidPath", "path %q names two sub-attributes", raw)
		}
		subName = *p.SubAttribute
	}
	if subName != "" {
		if t.sub = a.sub(subName); t.sub == nil {
			return target{}, badRequest("invalidPath", "unknown sub-attribute in path %q", raw)
		}
	}
	if t.filter != nil {
		if !a.Multi || a.Type != "complex" {
			return target{}, badRequest("invalidPath", "a value filter needs a multi-valued attribute: %q", raw)
		}
		if err := checkExpr(rt, t.filter, a); err != nil {
			return target{}, badRequest("invalidPath", "value filter of %q: %s", raw, err.(*scimError).detail)
		}
	}
	if a.Mutability == "readOnly" || (t.sub != nil && t.sub.Mutability == "readOnly") {
		return target{}, badRequest("mutability", "%q is read-only", raw)
	}
	return t, nil
}

// container returns the object holding t's attribute (creating the
// extension object when create is set).
func (t target) container(doc map[string]any, create bool) map[string]any {
	if t.ext == nil {
		return doc
	}
	ext, _ := doc[t.ext.ID].(map[string]any)
	if ext == nil && create {
		ext = map[string]any{}
		doc[t.ext.ID] = ext
	}
	return ext
}

func patchAdd(rt *resourceType, doc map[string]any, path string, value any, replace bool) error {
	if value == nil {
		return badRequest("invalidValue", "add and replace need a value")
	}
	if path == "" {
		obj, ok := value.(map[string]any)
		if !ok {
			return badRequest("invalidValue", "without a path the value must be an object of attributes")
		}
		for k, v := range obj {
			if strings.EqualFold(k, "schemas") {
				continue
			}
			if x := rt.extension(k); x != nil {
				inner, ok := v.(map[string]any)
				if !ok {
					return badRequest("invalidValue", "%s must be an object", x.ID)
				}
				for ik, iv := range inner {
					if err := patchAdd(rt, doc, x.ID+":"+ik, iv, replace); err != nil {
						return err
					}
				}
				continue
			}
			if a, _ := rt.lookup("", k); a == nil || a.Mutability == "readOnly" {
				continue // ignored like in a PUT
			}
			if err := patchAdd(rt, doc, k, v, replace); err != nil {
				return err
			}
		}
		return nil
	}
	t, err := parsePath(rt, path)
	if err != nil {
		return err
	}
	c := t.container(doc, true)
	name := t.a.Name
	switch {
	case t.filter != nil:
		matched := false
		for _, el := range elements(c[name]) {
			obj, ok := el.(map[string]any)
			if !ok || !match(rt, t.filter, doc, t.a, obj) {
				continue
			}
			matched = true
			if t.sub != nil {
				nv, err := checkValue(t.sub, value, path)
				if err != nil {
					return err
				}
				obj[t.sub.Name] = nv
				continue
			}
			in, ok := value.(map[string]any)
			if !ok {
				return badRequest("invalidValue", "%s: the value must be an object", path)
			}
			for k, v := range in {
				if s := t.a.sub(k); s != nil {
					obj[s.Name] = v
				}
			}
		}
		if !matched {
			if replace {
				return badRequest("noTarget", "no value matches %q", path)
			}
			return badRequest("noTarget", "no value matches %q", path)
		}
	case t.sub != nil && t.a.Multi:
		// emails.type without a filter: set on every element.
		for _, el := range elements(c[name]) {
			if obj, ok := el.(map[string]any); ok {
				obj[t.sub.Name] = value
			}
		}
	case t.sub != nil:
		obj, _ := c[name].(map[string]any)
		if obj == nil {
			obj = map[string]any{}
			c[name] = obj
		}
		obj[t.sub.Name] = value
	case t.a.Multi:
		list := elements(value)
		if _, single := value.(map[string]any); !single {
			if _, isList := value.([]any); !isList {
				return badRequest("invalidValue", "%s: the value must be a list", path)
			}
		}
		if replace {
			c[name] = list
		} else {
			c[name] = mergeList(elements(c[name]), list)
		}
	case t.a.Type == "complex" && !replace:
		in, ok := value.(map[string]any)
		if !ok {
			return badRequest("invalidValue", "%s: the value must be an object", path)
		}
		obj, _ := c[name].(map[string]any)
		if obj == nil {
			obj = map[string]any{}
		}
		for k, v := range in {
			obj[k] = v
		}
		c[name] = obj
	default:
		c[name] = value
	}
	return nil
}

// mergeList appends the values of add not already in list (equal "value").
func mergeList(list, add []any) []any {
	for _, v := range add {
		dup := false
		vm, _ := v.(map[string]any)
		for _, e := range list {
			em, _ := e.(map[string]any)
			if vm != nil && em != nil && vm["value"] != nil && vm["value"] == em["value"] {
				dup = true
				break
			}
		}
		if !dup {
			list = append(list, v)
		}
	}
	return list
}

func patchRemove(rt *resourceType, doc map[string]any, path string, value any) error {
	if path == "" {
		return badRequest("noTarget", "remove needs a path")
	}
	t, err := parsePath(rt, path)
	if err != nil {
		return err
	}
	if t.a.Required && t.filter == nil && t.sub == nil {
		return badRequest("mutability", "%s is required and cannot be removed", t.a.Name)
	}
	c := t.container(doc, false)
	if c == nil {
		return nil
	}
	name := t.a.Name
	switch {
	case t.filter != nil:
		var keep []any
		for _, el := range elements(c[name]) {
			obj, ok := el.(map[string]any)
			if ok && match(rt, t.filter, doc, t.a, obj) {
				if t.sub != nil {
					delete(obj, t.sub.Name)
					keep = append(keep, obj)
				}
				continue
			}
			keep = append(keep, el)
		}
		setOrDelete(c, name, keep)
	case t.sub != nil && t.a.Multi:
		for _, el := range elements(c[name]) {
			if obj, ok := el.(map[string]any); ok {
				delete(obj, t.sub.Name)
			}
		}
	case t.sub != nil:
		if obj, ok := c[name].(map[string]any); ok {
			delete(obj, t.sub.Name)
		}
	case t.a.Multi && value != nil:
		// Removing listed values (members: [{"value": id}]), as some
		// clients send instead of a value filter.
		drop := map[any]bool{}
		for _, v := range elements(value) {
			if vm, ok := v.(map[string]any); ok {
				drop[vm["value"]] = true
			}
		}
		var keep []any
		for _, el := range elements(c[name]) {
			if em, ok := el.(map[string]any); ok && drop[em["value"]] {
				continue
			}
			keep = append(keep, el)
		}
		setOrDelete(c, name, keep)
	default:
		delete(c, name)
	}
	if t.ext != nil && len(c) == 0 {
		delete(doc, t.ext.ID)
	}
	return nil
}

func setOrDelete(c map[string]any, name string, list []any) {
	if len(list) == 0 {
		delete(c, name)
		return
	}
	c[name] = list
}
