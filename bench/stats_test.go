package bench

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name             string
		in               []float64
		ok               bool
		min, median, max float64
	}{
		{"one", []float64{5}, true, 5, 5, 5},
		{"odd", []float64{3, 1, 2}, true, 1, 2, 3},
		{"even takes the mean of the middle two", []float64{4, 1, 3, 2}, true, 1, 2.5, 4},
		{"NaNs are ignored", []float64{nan, 7, nan, 9}, true, 7, 8, 9},
		{"empty", nil, false, 0, 0, 0},
		{"only NaNs", []float64{nan}, false, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := Summarize(tt.in)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if s.Min != tt.min || s.Median != tt.median || s.Max != tt.max {
				t.Errorf("got min %v median %v max %v, want %v %v %v", s.Min, s.Median, s.Max, tt.min, tt.median, tt.max)
			}
		})
	}
}

func TestSummarizeKeepsSampleOrder(t *testing.T) {
	in := []float64{3, 1, 2}
	s, _ := Summarize(in)
	if s.Samples[0] != 3 || s.Samples[2] != 2 || in[0] != 3 {
		t.Errorf("samples %v, input %v: want both in the order measured", s.Samples, in)
	}
}

func TestRatio(t *testing.T) {
	tests := []struct {
		a, b float64
		want float64 // NaN for none
	}{
		{10, 5, 2},
		{1, 4, 0.25},
		{1, 0, math.NaN()},
		{math.NaN(), 1, math.NaN()},
		{1, math.NaN(), math.NaN()},
	}
	for _, tt := range tests {
		got := Ratio(tt.a, tt.b)
		if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && got != tt.want) {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
