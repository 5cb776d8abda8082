package config

import (
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/viper"
)

// envPrefix starts every environment override.
const envPrefix = "MERIDIAN_"

// envName is the environment variable of a key path ("dr.database" →
// "DR_DATABASE").
func envName(key string) string { return strings.ToUpper(strings.ReplaceAll(key, ".", "_")) }

// leafKeys lists the key paths of t's fields that hold a value (not a
// struct), following squashed and nested structs and pointers to structs;
// lists of structs are returned separately, with their element type.
func leafKeys(t reflect.Type, prefix string, leaves *[]string, lists map[string]reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "remain") || tag == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if strings.Contains(opts, "squash") {
			leafKeys(ft, prefix, leaves, lists)
			continue
		}
		key := prefix + name
		switch {
		case ft.Kind() == reflect.Struct:
			leafKeys(ft, key+".", leaves, lists)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			if lists != nil {
				lists[key] = ft.Elem()
			}
		default:
			*leaves = append(*leaves, key)
		}
	}
}

// applyEnv makes every key overridable from the environment. Plain keys
// are bound explicitly (AutomaticEnv alone only reaches keys present in the
// file). Keys inside lists, which viper cannot address, are set from
// MERIDIAN_<LIST>_<index>_<KEY> (MERIDIAN_REGIONS_0_DR_DATABASE sets
// regions[0].dr.database); such a variable naming an index the file does not
// have, or no key, is an error rather than silently ignored.
func applyEnv(v *viper.Viper, environ []string) error {
	var leaves []string
	lists := map[string]reflect.Type{}
	leafKeys(reflect.TypeOf(Config{}), "", &leaves, lists)
	for _, k := range leaves {
		if err := v.BindEnv(k, envPrefix+envName(k)); err != nil {
			return err
		}
	}
	// Longest list prefix first, so no list's prefix shadows another's.
	names := make([]string, 0, len(lists))
	for k := range lists {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	sorted := append([]string(nil), environ...)
	sort.Strings(sorted)
	for _, kv := range sorted {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		for _, list := range names {
			p := envPrefix + envName(list) + "_"
			rest, ok := strings.CutPrefix(name, p)
			if !ok {
				continue
			}
			idx, field, ok := strings.Cut(rest, "_")
			i, err := strconv.Atoi(idx)
			if !ok || err != nil || i < 0 {
				continue // e.g. MERIDIAN_DNS_SUBNETS alone: not an indexed override
			}
			if err := setListElem(v, list, lists[list], i, field, val, name); err != nil {
				return err
			}
			break
		}
	}
	return nil
}

// setListElem sets key field of list[i] in v's settings to val.
func setListElem(v *viper.Viper, list string, elem reflect.Type, i int, field, val, env string) error {
	var leaves []string
	leafKeys(elem, "", &leaves, nil)
	key := ""
	for _, l := range leaves {
		if envName(l) == field {
			key = l
		}
	}
	if key == "" {
		return invalid(env, "names no key of %s[%d] (known: %s)", list, i, strings.Join(leaves, ", "))
	}
	raw, _ := v.Get(list).([]any)
	if i >= len(raw) {
		return invalid(env, "sets %s[%d].%s but the file has %d entries in %s", list, i, key, len(raw), list)
	}
	m, ok := raw[i].(map[string]any)
	if !ok {
		return invalid(env, "%s[%d] is not a mapping", list, i)
	}
	m = copyMap(m)
	cur := m
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := cur[p].(map[string]any)
		if !ok {
			next = map[string]any{}
		} else {
			next = copyMap(next)
		}
		cur[p] = next
		cur = next
	}
	cur[parts[len(parts)-1]] = val
	out := append([]any(nil), raw...)
	out[i] = m
	v.Set(list, out)
	return nil
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
