package scim

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	filter "github.com/scim2/filter-parser/v2"
)

// parseFilter parses a filter of at most max bytes (RFC 7644 §3.4.2.2)
// and checks that every attribute it names exists.
func parseFilter(rt *resourceType, raw string, max int) (filter.Expression, error) {
	if len(raw) > max {
		return nil, badRequest("invalidFilter", "the filter is longer than %d bytes", max)
	}
	e, err := filter.ParseFilter([]byte(raw))
	if err != nil || e == nil {
		return nil, badRequest("invalidFilter", "the filter does not parse")
	}
	if err := checkExpr(rt, e, nil); err != nil {
		return nil, err
	}
	return e, nil
}

// resolve finds the definition of a filter or sort path; parent is the
// multi-valued attribute a value path's inner filter runs in.
func resolve(rt *resourceType, p filter.AttributePath, parent *attr) (*attr, *attr, error) {
	if parent != nil {
		s := parent.sub(p.AttributeName)
		if s == nil || p.SubAttribute != nil {
			return nil, nil, badRequest("invalidFilter", "%s has no sub-attribute %s", parent.Name, p)
		}
		return s, nil, nil
	}
	a, _ := rt.lookup(p.URI(), p.AttributeName)
	if a == nil {
		return nil, nil, badRequest("invalidFilter", "unknown attribute %s", p)
	}
	if p.SubAttribute == nil {
		return a, nil, nil
	}
	s := a.sub(p.SubAttributeName())
	if s == nil {
		return nil, nil, badRequest("invalidFilter", "unknown attribute %s", p)
	}
	return a, s, nil
}

func checkExpr(rt *resourceType, e filter.Expression, parent *attr) error {
	switch e := e.(type) {
	case *filter.LogicalExpression:
		if err := checkExpr(rt, e.Left, parent); err != nil {
			return err
		}
		return checkExpr(rt, e.Right, parent)
	case *filter.NotExpression:
		return checkExpr(rt, e.Expression, parent)
	case *filter.ValuePath:
		if parent != nil {
			return badRequest("invalidFilter", "value filters do not nest")
		}
		a, s, err := resolve(rt, e.AttributePath, nil)
		if err != nil {
			return err
		}
		if s != nil || a.Type != "complex" {
			return badRequest("invalidFilter", "%s is not a complex attribute", e.AttributePath)
		}
		return checkExpr(rt, e.ValueFilter, a)
	case *filter.AttributeExpression:
		a, s, err := resolve(rt, e.AttributePath, parent)
		if err != nil {
			return err
		}
		t := a
		if s != nil {
			t = s
		} else if a.Type == "complex" {
			if t = a.sub("value"); t == nil {
				return badRequest("invalidFilter", "%s cannot be compared", e.AttributePath)
			}
		}
		if a.Returned == "never" || (s != nil && s.Returned == "never") {
			return badRequest("invalidFilter", "%s cannot be filtered on", e.AttributePath)
		}
		switch e.Operator {
		case filter.PR:
		case filter.EQ, filter.NE:
		case filter.GT, filter.GE, filter.LT, filter.LE, filter.CO, filter.SW, filter.EW:
			if t.Type == "boolean" {
				return badRequest("invalidFilter", "%s is a boolean: only eq, ne and pr apply", e.AttributePath)
			}
		default:
			return badRequest("invalidFilter", "unknown operator %q", e.Operator)
		}
		return nil
	}
	return badRequest("invalidFilter", "unsupported filter")
}

// get returns the value of a top-level attribute or extension attribute.
func get(m map[string]any, uri string, a *attr, rt *resourceType) any {
	if x := rt.extension(uri); x != nil {
		ext, _ := m[x.ID].(map[string]any)
		return ext[a.Name]
	}
	return m[a.Name]
}

// match evaluates e against resource m; ctx is the element of a value
// path's attribute the inner filter runs on.
func match(rt *resourceType, e filter.Expression, m map[string]any, parent *attr, ctx map[string]any) bool {
	switch e := e.(type) {
	case *filter.LogicalExpression:
		if e.Operator == filter.AND {
			return match(rt, e.Left, m, parent, ctx) && match(rt, e.Right, m, parent, ctx)
		}
		return match(rt, e.Left, m, parent, ctx) || match(rt, e.Right, m, parent, ctx)
	case *filter.NotExpression:
		return !match(rt, e.Expression, m, parent, ctx)
	case *filter.ValuePath:
		a, _, _ := resolve(rt, e.AttributePath, nil)
		for _, el := range elements(get(m, e.AttributePath.URI(), a, rt)) {
			if obj, ok := el.(map[string]any); ok && match(rt, e.ValueFilter, m, a, obj) {
				return true
			}
		}
		return false
	case *filter.AttributeExpression:
		a, s, _ := resolve(rt, e.AttributePath, parent)
		var values []any
		t := a
		switch {
		case parent != nil:
			values = elements(ctx[a.Name])
		case s != nil:
			t = s
			for _, el := range elements(get(m, e.AttributePath.URI(), a, rt)) {
				if obj, ok := el.(map[string]any); ok {
					values = append(values, elements(obj[s.Name])...)
				}
			}
		case a.Type == "complex":
			t = a.sub("value")
			for _, el := range elements(get(m, e.AttributePath.URI(), a, rt)) {
				if obj, ok := el.(map[string]any); ok {
					values = append(values, elements(obj["value"])...)
				}
			}
		default:
			values = elements(get(m, e.AttributePath.URI(), a, rt))
		}
		if e.Operator == filter.PR {
			for _, v := range values {
				if v != nil && v != "" {
					return true
				}
			}
			return false
		}
		if e.Operator == filter.NE {
			for _, v := range values {
				if compare(t, filter.EQ, v, e.CompareValue) {
					return false
				}
			}
			return true
		}
		for _, v := range values {
			if compare(t, e.Operator, v, e.CompareValue) {
				return true
			}
		}
		return false
	}
	return false
}

// elements returns a multi-valued attribute's values, or a single value
// as a one-element list (nothing for unassigned).
func elements(v any) []any {
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		return v
	}
	return []any{v}
}

// compare applies op to an attribute value and a filter's literal.
func compare(a *attr, op filter.CompareOperator, v, lit any) bool {
	switch a.Type {
	case "boolean":
		b, ok := lit.(bool)
		return ok && op == filter.EQ && v == b
	case "dateTime":
		s, _ := v.(string)
		ls, _ := lit.(string)
		t, err1 := time.Parse(time.RFC3339, s)
		l, err2 := time.Parse(time.RFC3339, ls)
		if err1 != nil || err2 != nil {
			return false
		}
		switch op {
		case filter.EQ:
			return t.Equal(l)
		case filter.GT:
			return t.After(l)
		case filter.GE:
			return !t.Before(l)
		case filter.LT:
			return t.Before(l)
		case filter.LE:
			return !t.After(l)
		}
		return false
	case "integer", "decimal":
		f, ok1 := number(v)
		l, ok2 := number(lit)
		if !ok1 || !ok2 {
			return false
		}
		return ordered(op, f, l)
	}
	s, ok := v.(string)
	ls, ok2 := lit.(string)
	if !ok || !ok2 {
		return false
	}
	if !a.CaseExact {
		s, ls = strings.ToLower(s), strings.ToLower(ls)
	}
	switch op {
	case filter.CO:
		return strings.Contains(s, ls)
	case filter.SW:
		return strings.HasPrefix(s, ls)
	case filter.EW:
		return strings.HasSuffix(s, ls)
	}
	return ordered(op, s, ls)
}

// ordered applies eq, gt, ge, lt or le to two numbers or two strings; any
// other operator is false.
func ordered[T float64 | string](op filter.CompareOperator, v, lit T) bool {
	switch op {
	case filter.EQ:
		return v == lit
	case filter.GT:
		return v > lit
	case filter.GE:
		return v >= lit
	case filter.LT:
		return v < lit
	case filter.LE:
		return v <= lit
	}
	return false
}

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	}
	return 0, false
}

// --- sorting ---

// sortKey returns the value sortBy names in m: of a multi-valued
// attribute, the primary (else first) element's (RFC 7644 §3.4.2.3).
func sortKey(rt *resourceType, path filter.AttributePath, m map[string]any) (string, bool) {
	a, s, err := resolve(rt, path, nil)
	if err != nil {
		return "", false
	}
	v := get(m, path.URI(), a, rt)
	if a.Multi {
		list := elements(v)
		v = nil
		for i, e := range list {
			if obj, ok := e.(map[string]any); ok && (i == 0 || obj["primary"] == true) {
				v = obj
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		if s != nil {
			v = obj[s.Name]
		} else {
			v = obj["value"]
		}
	}
	switch v := v.(type) {
	case nil:
		return "", false
	case string:
		t := a
		if s != nil {
			t = s
		}
		if t.Type == "dateTime" {
			if tm, err := time.Parse(time.RFC3339, v); err == nil {
				return tm.UTC().Format("2006-01-02T15:04:05.000000000"), true
			}
		}
		if !t.CaseExact {
			return strings.ToLower(v), true
		}
		return v, true
	default:
		return fmt.Sprint(v), true
	}
}

// --- attribute projection (RFC 7644 §3.4.2.5) ---

// projection is the attributes / excludedAttributes of a request.
type projection struct {
	include, exclude []filter.AttributePath
}

func parseProjection(rt *resourceType, attrs, excluded string) (projection, error) {
	var p projection
	for _, spec := range []struct {
		raw string
		to  *[]filter.AttributePath
	}{{attrs, &p.include}, {excluded, &p.exclude}} {
		if spec.raw == "" {
			continue
		}
		for n := range strings.SplitSeq(spec.raw, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if len(*spec.to) >= 64 {
				return p, badRequest("invalidValue", "too many attributes")
			}
			ap, err := filter.ParseAttrPath([]byte(n))
			if err != nil {
				return p, badRequest("invalidValue", "attribute %q does not parse", n)
			}
			if _, _, err := resolve(rt, ap, nil); err != nil {
				return p, badRequest("invalidValue", "unknown attribute %q", n)
			}
			*spec.to = append(*spec.to, ap)
		}
	}
	return p, nil
}

// apply returns m reduced to the projection; attributes returned
// "always" (id, schemas, userName, displayName of groups) stay.
func (p projection) apply(rt *resourceType, m map[string]any) map[string]any {
	if len(p.include) == 0 && len(p.exclude) == 0 {
		return m
	}
	always := func(k string) bool {
		if k == "schemas" {
			return true
		}
		a, _ := rt.lookup("", k)
		return a != nil && a.Returned == "always"
	}
	key := func(ap filter.AttributePath) (string, string, string) {
		a, _, _ := resolve(rt, ap, nil)
		if x := rt.extension(ap.URI()); x != nil {
			return x.ID, a.Name, subName(a, ap)
		}
		return "", a.Name, subName(a, ap)
	}
	if len(p.include) > 0 {
		out := map[string]any{}
		for k, v := range m {
			if always(k) {
				out[k] = v
			}
		}
		for _, ap := range p.include {
			ext, name, sub := key(ap)
			src := m
			if ext != "" {
				src, _ = m[ext].(map[string]any)
			}
			v, ok := src[name]
			if !ok {
				continue
			}
			if sub != "" {
				v = pick(v, sub)
				if v == nil {
					continue
				}
			}
			dst := out
			if ext != "" {
				d, _ := out[ext].(map[string]any)
				if d == nil {
					d = map[string]any{}
					out[ext] = d
				}
				dst = d
			}
			if sub != "" {
				v = mergeSub(dst[name], v)
			}
			dst[name] = v
		}
		return out
	}
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for _, ap := range p.exclude {
		ext, name, sub := key(ap)
		if ext == "" && always(name) {
			continue
		}
		if ext != "" {
			src, _ := out[ext].(map[string]any)
			if src == nil {
				continue
			}
			c := map[string]any{}
			for k, v := range src {
				c[k] = v
			}
			dropAttr(c, name, sub)
			out[ext] = c
			continue
		}
		dropAttr(out, name, sub)
	}
	return out
}

func subName(a *attr, ap filter.AttributePath) string {
	if ap.SubAttribute == nil {
		return ""
	}
	if s := a.sub(ap.SubAttributeName()); s != nil {
		return s.Name
	}
	return ""
}

// pick keeps only sub of a complex value or of each element of a list.
func pick(v any, sub string) any {
	switch v := v.(type) {
	case map[string]any:
		if sv, ok := v[sub]; ok {
			return map[string]any{sub: sv}
		}
		return nil
	case []any:
		var out []any
		for _, e := range v {
			if p := pick(e, sub); p != nil {
				out = append(out, p)
			}
		}
		if out == nil {
			return nil
		}
		return out
	}
	return nil
}

// mergeSub merges a picked sub-attribute into what an earlier pick of the
// same attribute selected.
func mergeSub(have, v any) any {
	hm, ok1 := have.(map[string]any)
	vm, ok2 := v.(map[string]any)
	if ok1 && ok2 {
		for k, x := range vm {
			hm[k] = x
		}
		return hm
	}
	hl, ok1 := have.([]any)
	vl, ok2 := v.([]any)
	if ok1 && ok2 && len(hl) == len(vl) {
		for i := range hl {
			hl[i] = mergeSub(hl[i], vl[i])
		}
		return hl
	}
	return v
}

func dropAttr(m map[string]any, name, sub string) {
	if sub == "" {
		delete(m, name)
		return
	}
	switch v := m[name].(type) {
	case map[string]any:
		c := map[string]any{}
		for k, x := range v {
			if k != sub {
				c[k] = x
			}
		}
		m[name] = c
	case []any:
		out := make([]any, 0, len(v))
		for _, e := range v {
			if em, ok := e.(map[string]any); ok {
				c := map[string]any{}
				for k, x := range em {
					if k != sub {
						c[k] = x
					}
				}
				out = append(out, c)
			}
		}
		m[name] = out
	}
}
