package mysql

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// dateTime is the layout of a DATETIME(6) literal.
const dateTime = "2006-01-02 15:04:05.000000"

// ts encodes t for a DATETIME(6) column: UTC, truncated to microseconds.
// The driver would send the zero time.Time as '0000-00-00', which a strict
// sql_mode refuses; as text it is 0001-01-01 00:00:00 like every other time.
func ts(t time.Time) string { return t.UTC().Format(dateTime) }

// utc returns t in UTC, and the zero time for 0001-01-01.
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

// list encodes a list for a NOT NULL JSON column.
func list(v []string) string {
	if len(v) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(v) // a []string always marshals
	return string(b)
}

// unlist decodes a JSON list column; empty lists decode to nil.
func unlist(b []byte) ([]string, error) {
	var v []string
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, errors.Join(errors.New("corrupt row"), err)
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// listCol scans a JSON list column into a []string (nil when empty).
type listCol struct{ p *[]string }

func (c listCol) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("corrupt row: list column of type %T", src)
	}
	v, err := unlist(b)
	*c.p = v
	return err
}

// timeCol scans a DATETIME column into a time.Time in UTC (zero for
// 0001-01-01).
type timeCol struct{ p *time.Time }

func (c timeCol) Scan(src any) error {
	t, ok := src.(time.Time)
	if !ok {
		return fmt.Errorf("corrupt row: time column of type %T", src)
	}
	*c.p = utc(t)
	return nil
}

// hashCol scans a digest column into a store.Hash.
type hashCol struct{ p *store.Hash }

func (c hashCol) Scan(src any) error {
	b, ok := src.([]byte)
	if !ok {
		return fmt.Errorf("corrupt row: digest column of type %T", src)
	}
	h, err := hash(b)
	*c.p = h
	return err
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

// claims encodes profile claims as a JSON object.
func claims(m map[string]string) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
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
