package sqlite

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// micros encodes t as microseconds since the Unix epoch. The zero time
// keeps its own (negative) value so decoding it gives the zero time back.
func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros decodes micros; the result is in UTC.
func fromMicros(v int64) time.Time {
	t := time.UnixMicro(v).UTC()
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

// maxAge encodes an optional max_age (NULL when absent).
func maxAge(v *uint) (any, error) {
	if v == nil {
		return nil, nil
	}
	if uint64(*v) > math.MaxInt64 {
		return nil, fmt.Errorf("max_age %d out of range", *v)
	}
	return int64(*v), nil
}

// enc encodes lists and claims as JSON text, keeping the first error.
type enc struct{ err error }

func (e *enc) list(v []string) string {
	if len(v) == 0 {
		return "[]"
	}
	b, err := json.Marshal(v)
	if err != nil && e.err == nil {
		e.err = err
	}
	return string(b)
}

func (e *enc) claims(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, err := json.Marshal(m)
	if err != nil && e.err == nil {
		e.err = err
	}
	return string(b)
}

// dec decodes JSON text columns, keeping the first error. Empty lists and
// claims decode to nil.
type dec struct{ err error }

func (d *dec) list(s string) []string {
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		d.fail(err)
		return nil
	}
	if len(v) == 0 {
		return nil
	}
	return v
}

func (d *dec) claims(s string) map[string]string {
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		d.fail(err)
		return nil
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func (d *dec) hash(b []byte) store.Hash {
	var h store.Hash
	if len(b) != len(h) {
		d.fail(fmt.Errorf("digest of %d bytes, want %d", len(b), len(h)))
		return h
	}
	copy(h[:], b)
	return h
}

func (d *dec) fail(err error) {
	if d.err == nil {
		d.err = errors.Join(errors.New("corrupt row"), err)
	}
}
