// Package timingstat holds the statistics the enumeration-timing tests use
// to compare two samples of response times (known vs unknown users): a
// quantile and the Mann–Whitney probability of superiority.
package timingstat

import (
	"slices"
	"sort"
	"time"
)

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of d, rounded to the
// microsecond. d must not be empty.
func Quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))].Round(time.Microsecond)
}

// Median is Quantile(d, 0.5).
func Median(d []time.Duration) time.Duration { return Quantile(d, .5) }

// Superiority is the Mann–Whitney U statistic of a over b divided by
// len(a)·len(b): the probability that a sample of a exceeds one of b (ties
// count half). 0.5 means no difference.
func Superiority(a, b []time.Duration) float64 {
	type v struct {
		d   time.Duration
		inA bool
	}
	all := make([]v, 0, len(a)+len(b))
	for _, d := range a {
		all = append(all, v{d, true})
	}
	for _, d := range b {
		all = append(all, v{d, false})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].d < all[j].d })
	rankSumA := 0.0
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].d == all[i].d {
			j++
		}
		rank := float64(i+j+1) / 2 // average rank of the tie group, 1-based
		for k := i; k < j; k++ {
			if all[k].inA {
				rankSumA += rank
			}
		}
		i = j
	}
	n1, n2 := float64(len(a)), float64(len(b))
	return (rankSumA - n1*(n1+1)/2) / (n1 * n2)
}
