package postgres

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// utc returns t in UTC; pgx returns timestamptz values in the local zone.
func utc(t time.Time) time.Time {
	t = t.UTC()
	if t.IsZero() {
		return time.Time{}
	}
	return t
}

// nowOr returns t, or now when t is the zero time.
func nowOr(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}

// list encodes a list for a NOT NULL text[] column.
func list(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// unlist decodes a text[] column; empty lists decode to nil.
func unlist(v []string) []string {
	if len(v) == 0 {
		return nil
	}
	return v
}

// maxAge encodes an optional max_age (NULL when absent).
func maxAge(v *uint) (*int64, error) {
	if v == nil {
		return nil, nil
	}
	if uint64(*v) > math.MaxInt64 {
		return nil, fmt.Errorf("max_age %d out of range", *v)
	}
	n := int64(*v)
	return &n, nil
}

func unmaxAge(v *int64) (*uint, error) {
	if v == nil {
		return nil, nil
	}
	if *v < 0 {
		return nil, fmt.Errorf("corrupt row: negative max_age %d", *v)
	}
	u := uint(*v)
	return &u, nil
}

// claims encodes profile claims as a JSON object for a jsonb column.
func claims(m map[string]string) ([]byte, error) {
	if len(m) == 0 {
		return []byte("{}"), nil
	}
	return json.Marshal(m)
}

func unclaims(b []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.Join(errors.New("corrupt row"), err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// hash decodes a digest column.
func hash(b []byte) (store.Hash, error) {
	var h store.Hash
	if len(b) != len(h) {
		return h, fmt.Errorf("corrupt row: digest of %d bytes, want %d", len(b), len(h))
	}
	copy(h[:], b)
	return h, nil
}
