package conformance

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

func testAttempts(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base()
	win := now.Truncate(time.Minute)
	exp := win.Add(2 * time.Minute)
	key := newID("ip")
	for i := range 3 {
		got, err := s.ReserveAttempt(ctx, key, win, 3, exp)
		ok(t, err)
		if !got {
			t.Fatalf("reservation %d of 3 refused", i+1)
		}
	}
	if got, err := s.ReserveAttempt(ctx, key, win, 3, exp); err != nil || got {
		t.Fatalf("fourth reservation of 3: %v, %v; want refused", got, err)
	}
	// Other keys and other windows have their own counters.
	if got, err := s.ReserveAttempt(ctx, newID("ip"), win, 3, exp); err != nil || !got {
		t.Fatalf("another key: %v, %v", got, err)
	}
	if got, err := s.ReserveAttempt(ctx, key, win.Add(time.Minute), 3, exp); err != nil || !got {
		t.Fatalf("the next window: %v, %v", got, err)
	}
	// CountAttempts reads a window's counter; an absent one is zero.
	if n, err := s.CountAttempts(ctx, key, win); err != nil || n != 3 {
		t.Fatalf("count of a full window: %d, %v; want 3", n, err)
	}
	if n, err := s.CountAttempts(ctx, key, win.Add(-time.Minute)); err != nil || n != 0 {
		t.Fatalf("count of an absent window: %d, %v; want 0", n, err)
	}
	// A release makes room for exactly one more.
	ok(t, s.ReleaseAttempt(ctx, key, win))
	if got, err := s.ReserveAttempt(ctx, key, win, 3, exp); err != nil || !got {
		t.Fatalf("after a release: %v, %v", got, err)
	}
	if got, _ := s.ReserveAttempt(ctx, key, win, 3, exp); got {
		t.Fatal("a release made room for two")
	}
	// The counter never goes below zero; an absent counter is not an error.
	other := newID("id")
	ok(t, s.ReleaseAttempt(ctx, other, win))
	if _, err := s.ReserveAttempt(ctx, other, win, 2, exp); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ok(t, s.ReleaseAttempt(ctx, other, win))
	}
	for i := range 3 {
		got, err := s.ReserveAttempt(ctx, other, win, 2, exp)
		ok(t, err)
		if got != (i < 2) {
			t.Fatalf("after releasing below zero, reservation %d of 2: %v", i+1, got)
		}
	}
	if got, err := s.ReserveAttempt(ctx, newID("zero"), win, 0, exp); err != nil || got {
		t.Fatalf("a limit of zero admitted an attempt: %v, %v", got, err)
	}
	// Expired counters are removed.
	ok(t, s.DeleteExpired(ctx, exp.Add(time.Second)))
	if got, err := s.ReserveAttempt(ctx, key, win, 3, exp); err != nil || !got {
		t.Fatalf("an expired, deleted counter still refused: %v, %v", got, err)
	}
}

func testConcurrentAttempts(t *testing.T, s store.Store) {
	ctx := t.Context()
	win := base().Truncate(time.Minute)
	for range rounds {
		key := newID("race")
		const limit = 10
		var won atomic.Int32
		errs := race(4*limit, func(int) error {
			got, err := s.ReserveAttempt(ctx, key, win, limit, win.Add(time.Hour))
			if got {
				won.Add(1)
			}
			return err
		})
		for _, err := range errs {
			ok(t, err)
		}
		if w := won.Load(); w != limit {
			t.Fatalf("%d of %d concurrent reservations succeeded, want exactly the limit %d", w, 4*limit, limit)
		}
	}
}

func testTOTPStep(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	for _, c := range []struct {
		step int64
		want bool
	}{{100, true}, {100, false}, {99, false}, {101, true}, {101, false}, {150, true}, {120, false}} {
		got, err := s.AcceptTOTPStep(ctx, u.ID, c.step)
		ok(t, err)
		if got != c.want {
			t.Fatalf("step %d: accepted %v, want %v", c.step, got, c.want)
		}
	}
	// Each user has their own record.
	v := sampleUser(base())
	ok(t, s.CreateUser(ctx, v))
	if got, err := s.AcceptTOTPStep(ctx, v.ID, 100); err != nil || !got {
		t.Fatalf("another user's first step: %v, %v", got, err)
	}
	// The record goes with the user.
	ok(t, s.DeleteUser(ctx, u.Username))
}

func testConcurrentTOTPStep(t *testing.T, s store.Store) {
	ctx := t.Context()
	u := sampleUser(base())
	ok(t, s.CreateUser(ctx, u))
	for round := range rounds {
		var won atomic.Int32
		step := int64(1000 + round)
		errs := race(20, func(int) error {
			got, err := s.AcceptTOTPStep(ctx, u.ID, step)
			if got {
				won.Add(1)
			}
			return err
		})
		for _, err := range errs {
			ok(t, err)
		}
		if w := won.Load(); w != 1 {
			t.Fatalf("%d of 20 concurrent acceptances of one step won, want exactly 1", w)
		}
	}
}
