package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// configKey is one key of the config schema found by walking Config's
// mapstructure tags: its YAML path, its environment override and how to
// reach its field (a list element is reached at index 0).
type configKey struct {
	yaml, env string
	get       func(c *Config) reflect.Value
	typ       reflect.Type
}

// walkKeys lists every value key under t, written independently of
// leafKeys so that the test does not trust what it tests: lists of
// structs are entered at index 0 (env ..._0_...), pointers to structs are
// followed, squashed structs flattened.
func walkKeys(t reflect.Type, yaml, env string, get func(c *Config) reflect.Value, out *[]configKey, lists map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "remain") {
			continue // dns.Extra: collects unknown keys to refuse them
		}
		idx := i
		fget := func(c *Config) reflect.Value {
			v := get(c)
			if v.Kind() == reflect.Pointer {
				if v.IsNil() {
					v.Set(reflect.New(v.Type().Elem()))
				}
				v = v.Elem()
			}
			return v.Field(idx)
		}
		ft := f.Type
		if strings.Contains(opts, "squash") {
			walkKeys(ft, yaml, env, fget, out, lists)
			continue
		}
		y, e := yaml+name, env+strings.ToUpper(name)
		switch {
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			walkKeys(ft.Elem(), y+".", e+"_", fget, out, lists)
		case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)):
			walkKeys(ft, y+".", e+"_", fget, out, lists)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			lists[y] = true
			walkKeys(ft.Elem(), y+"[0].", e+"_0_", func(c *Config) reflect.Value { return fget(c).Index(0) }, out, lists)
		default:
			*out = append(*out, configKey{yaml: y, env: e, get: fget, typ: ft})
		}
	}
}

// TestEveryKeyHasAnEnvOverride: every key of the schema, found by
// reflection over Config, is set by its MERIDIAN_* variable — plain keys
// (MERIDIAN_DNS_TLS_ADMIN), keys inside lists by index
// (MERIDIAN_REGIONS_0_DR_DATABASE, MERIDIAN_REGIONS_0_LOGIN_...,
// MERIDIAN_DNS_SUBNETS_0_CIDR, MERIDIAN_FEDERATION_ROUTING_KEYS_0_FILE) —
// and no two keys share a variable. A key added without a working override
// (or of a type the override cannot decode) fails here.
func TestEveryKeyHasAnEnvOverride(t *testing.T) {
	var keys []configKey
	lists := map[string]bool{}
	walkKeys(reflect.TypeOf(Config{}), "", "MERIDIAN_", func(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }, &keys, lists)
	if len(keys) < 80 {
		t.Fatalf("walked only %d keys", len(keys))
	}
	seen := map[string]string{}
	for _, k := range keys {
		if prev, dup := seen[k.env]; dup {
			t.Fatalf("%s and %s share the variable %s", prev, k.yaml, k.env)
		}
		seen[k.env] = k.yaml
	}
	// A file with one entry in every list (an index override needs the
	// entry) and, for each list entry, a key the override must not clobber.
	doc := map[string]any{}
	for l := range lists {
		if strings.Contains(l, "[") {
			t.Fatalf("%s: a list inside a list entry cannot be overridden by MERIDIAN_<LIST>_<i>_<KEY>", l)
		}
		m := doc
		parts := strings.Split(l, ".")
		for _, p := range parts[:len(parts)-1] {
			if m[p] == nil {
				m[p] = map[string]any{}
			}
			m = m[p].(map[string]any)
		}
		m[parts[len(parts)-1]] = []any{map[string]any{}}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "regions.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		t.Run(k.env, func(t *testing.T) {
			raw, want := sample(t, k.typ)
			t.Setenv(k.env, raw)
			c, err := decode(path)
			if err != nil {
				t.Fatalf("%s=%s: %v", k.env, raw, err)
			}
			if got := k.get(c).Interface(); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s=%s set %s to %#v, want %#v", k.env, raw, k.yaml, got, want)
			}
		})
	}
}

// sample is an environment value for a key of type t and the value it
// must decode to.
func sample(t *testing.T, typ reflect.Type) (string, any) {
	t.Helper()
	switch {
	case typ == reflect.TypeOf(time.Duration(0)):
		return "7s", 7 * time.Second
	case typ.Kind() == reflect.String:
		return "value-7", "value-7"
	case typ.Kind() == reflect.Bool:
		return "true", true
	case typ.Kind() == reflect.Int, typ.Kind() == reflect.Int64, typ.Kind() == reflect.Uint32:
		return "7", reflect.ValueOf(7).Convert(typ).Interface()
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.String:
		return "a,b", []string{"a", "b"}
	}
	t.Fatalf("no sample value for a key of type %s: extend sample", typ)
	return "", nil
}
