package scim

import (
	"encoding/json"
	"errors"
	"testing"
)

// sampleUser is a user representation with every kind of attribute.
func sampleUser() map[string]any {
	var m map[string]any
	_ = json.Unmarshal([]byte(`{"schemas":["`+UserSchema+`","`+EnterpriseSchema+`"],"id":"u1","userName":"ada","title":"Countess",
		"active":true,"name":{"givenName":"Ada","familyName":"Lovelace"},
		"emails":[{"value":"ada@work.example","type":"work","primary":true},{"value":"ada@home.example","type":"home"}],
		"groups":[{"value":"g1","display":"Engines"}],
		"meta":{"resourceType":"User","created":"2026-01-02T03:04:05Z","lastModified":"2026-01-02T03:04:05.5Z","version":"W/\"3\""},
		"`+EnterpriseSchema+`":{"department":"Engines","manager":{"value":"u2"}}}`), &m)
	return m
}

// FuzzFilterAndPatchPath: any filter, sort path or PATCH path is either
// refused with a SCIM error or evaluated/applied; nothing panics, and an
// accepted PATCH leaves a resource that normalizes or is refused with a
// SCIM error (what the handler answers 400 for, never 500).
func FuzzFilterAndPatchPath(f *testing.F) {
	for _, s := range []string{
		`userName eq "ada"`, `emails[type eq "work" and value co "@"]`, `not (title pr) or active eq true`,
		`meta.created gt "2000-01-01T00:00:00Z"`, EnterpriseSchema + `:department sw "E"`, `name.givenName ew "a"`,
		`emails[type eq "work"].value`, `members[value eq "x"]`, `groups.display`, `((userName pr))`, `emails[`,
		EnterpriseSchema + `:manager.value`, `meta.version`, `active gt 3`, `userName eq null`, `emails.type`,
	} {
		f.Add(s, `"x"`)
		f.Add(s, `[{"value":"v","type":"work"}]`)
		f.Add(s, `{"givenName":"G"}`)
	}
	f.Fuzz(func(t *testing.T, expr, value string) {
		var v any
		if json.Unmarshal([]byte(value), &v) != nil {
			v = value
		}
		for _, rt := range []*resourceType{userType, groupType} {
			if e, err := parseFilter(rt, expr, 1024); err == nil {
				match(rt, e, sampleUser(), nil, nil)
			} else if !isSCIMError(err) {
				t.Fatalf("filter %q: %v", expr, err)
			}
			if p, err := parseProjection(rt, expr, ""); err == nil {
				p.apply(rt, sampleUser())
			}
			for _, op := range []string{"add", "replace", "remove"} {
				doc := writable(sampleUser())
				body := map[string]any{"schemas": []any{patchSchema}, "Operations": []any{map[string]any{"op": op, "path": expr, "value": v}}}
				err := patch(rt, doc, body)
				if err == nil {
					delete(doc, "schemas")
					_, err = normalize(rt, doc, false)
				}
				if err != nil && !isSCIMError(err) {
					t.Fatalf("%s %q %s: %v", op, expr, value, err)
				}
			}
		}
	})
}

func isSCIMError(err error) bool {
	var se *scimError
	return errors.As(err, &se) && se.status == 400
}
