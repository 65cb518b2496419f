package bench

import (
	"math"
	"slices"
)

// Summary describes the repetitions of one measurement: a noisy machine
// makes a single number meaningless, so the spread is kept with it.
type Summary struct {
	Min     float64   `json:"min"`
	Median  float64   `json:"median"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

// Summarize returns the Summary of samples, ignoring NaNs. It returns false
// when no sample is left.
func Summarize(samples []float64) (Summary, bool) {
	s := make([]float64, 0, len(samples))
	for _, v := range samples {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return Summary{}, false
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	n := len(sorted)
	med := sorted[n/2]
	if n%2 == 0 {
		med = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return Summary{Min: sorted[0], Median: med, Max: sorted[n-1], Samples: s}, true
}

// Ratio is a / b, or NaN when b is zero or either is NaN, so a missing
// baseline shows as a missing ratio rather than as infinity.
func Ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}
