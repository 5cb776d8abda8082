package timingstat

import (
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x) * time.Millisecond
	}
	return d
}

func TestStatistics(t *testing.T) {
	tests := []struct {
		name string
		a, b []time.Duration
		want float64
	}{
		{"a always slower", ms(5, 6, 7), ms(1, 2, 3), 1},
		{"a always faster", ms(1, 2), ms(5, 6), 0},
		{"identical", ms(1, 2, 3), ms(1, 2, 3), 0.5},
		{"all tied", ms(4, 4), ms(4, 4, 4), 0.5},
	}
	for _, tt := range tests {
		if got := Superiority(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: Superiority = %v, want %v", tt.name, got, tt.want)
		}
	}
	if m := Median(ms(9, 1, 5)); m != 5*time.Millisecond {
		t.Errorf("Median = %v, want 5ms", m)
	}
	if q := Quantile(ms(1, 2, 3, 4, 5), 1); q != 5*time.Millisecond {
		t.Errorf("Quantile(1) = %v, want 5ms", q)
	}
}
