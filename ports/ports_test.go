package ports

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantLen int
		in1     []uint16
		out     []uint16
	}{
		{in: "", want: "", wantLen: 0, out: []uint16{0, 1, 65535}},
		{in: "25,587,3306,4444,5432,6379,9300,11211", want: "25,587,3306,4444,5432,6379,9300,11211", wantLen: 8,
			in1: []uint16{25, 6379, 11211}, out: []uint16{4222, 6222, 8222, 4567, 4568}},
		{in: " 4000-4100 , 80", want: "80,4000-4100", wantLen: 102, in1: []uint16{80, 4000, 4050, 4100}, out: []uint16{3999, 4101}},
		{in: "1-3,2-5", want: "1-5", wantLen: 5, in1: []uint16{1, 5}},
		{in: "65535", want: "65535", wantLen: 1, in1: []uint16{65535}, out: []uint16{65534}},
		{in: "7,,8", want: "7-8", wantLen: 2},
		{in: "none", want: "", wantLen: 0, out: []uint16{25, 6379}},
		{in: " none ", want: "", wantLen: 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if got := s.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
			for _, p := range tt.in1 {
				if !s.Contains(p) {
					t.Errorf("Contains(%d) = false", p)
				}
			}
			for _, p := range tt.out {
				if s.Contains(p) {
					t.Errorf("Contains(%d) = true", p)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"0", "65536", "-1", "10-5", "a", "80-", "-80", "1-2-3", "99999999999999999999", "none,80"} {
		t.Run(in, func(t *testing.T) {
			if _, err := Parse(in); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error = %v, want ErrInvalid", in, err)
			}
		})
	}
}

func TestTextRoundTrip(t *testing.T) {
	var s Set
	if err := s.UnmarshalText([]byte("9300, 25-26")); err != nil {
		t.Fatal(err)
	}
	b, _ := s.MarshalText()
	if string(b) != "25-26,9300" {
		t.Fatalf("MarshalText = %q", b)
	}
	if err := s.UnmarshalText([]byte("0")); err == nil {
		t.Fatal("UnmarshalText accepted port 0")
	}
}

func BenchmarkContains(b *testing.B) {
	s := MustParse("25,587,3306,4444,5432,6379,9300,11211")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Contains(uint16(i))
	}
}

// naiveRanges is Ranges as it was first written, port by port: the
// reference the word-at-a-time Ranges must match.
func naiveRanges(s Set) [][2]uint16 {
	var out [][2]uint16
	for p := 1; p <= 65535; p++ {
		if !s.Contains(uint16(p)) {
			continue
		}
		lo := p
		for p < 65535 && s.Contains(uint16(p+1)) {
			p++
		}
		out = append(out, [2]uint16{uint16(lo), uint16(p)})
	}
	return out
}

func TestRanges(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"1", "1"},
		{"1-63", "1-63"},
		{"63-64", "63-64"},
		{"64", "64"},
		{"1-64", "1-64"},
		{"1-65535", "1-65535"},
		{"65535", "65535"},
		{"65472-65535", "65472-65535"}, // the last word, whole
		{"65471-65535", "65471-65535"},
		{"100-300", "100-300"}, // across whole words
		{"127,128,192", "127-128,192"},
		{"1,3,5,62,63,65,66", "1,3,5,62-63,65-66"},
		{"25,587,3306,4444,5432,6379,9300,11211", "25,587,3306,4444,5432,6379,9300,11211"},
	} {
		s := MustParse(tc.in)
		if got := s.String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.in, got, tc.want)
		}
		if got, want := s.Ranges(), naiveRanges(s); !slices.Equal(got, want) {
			t.Errorf("Parse(%q).Ranges() = %v, want %v", tc.in, got, want)
		}
	}
}

// TestRangesMatchesNaive compares Ranges with naiveRanges on random sets:
// sparse and dense, single ports and runs of every length, most of them
// meeting a word's edge somewhere.
func TestRangesMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 2000 {
		var s Set
		runs, maxLen := 1+rng.IntN(40), []int{1, 3, 70, 300, 5000}[i%5]
		for range runs {
			first := 1 + rng.IntN(65535)
			for p := first; p < first+1+rng.IntN(maxLen) && p <= 65535; p++ {
				s.Add(uint16(p))
			}
		}
		if got, want := s.Ranges(), naiveRanges(s); !slices.Equal(got, want) {
			t.Fatalf("set %d (%s): Ranges() = %v, want %v", i, s, got, want)
		}
	}
}

// FuzzRanges builds a set from alternating gap and run lengths and
// compares Ranges with naiveRanges.
func FuzzRanges(f *testing.F) {
	f.Add([]byte{0, 63, 1, 1})
	f.Add([]byte{62, 2, 0, 255, 255, 255})
	f.Add([]byte{255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, lengths []byte) {
		var s Set
		p := 1
		for i, n := range lengths {
			if i%2 == 1 {
				for q := p; q < p+int(n)*8 && q <= 65535; q++ {
					s.Add(uint16(q))
				}
			}
			p += int(n) * 8
		}
		if got, want := s.Ranges(), naiveRanges(s); !slices.Equal(got, want) {
			t.Fatalf("set %s: Ranges() = %v, want %v", s, got, want)
		}
	})
}

func BenchmarkRanges(b *testing.B) {
	for _, in := range []string{config8, "1-65535", "1,3,5,7,9,4000-4100,65535"} {
		s := MustParse(in)
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Ranges()
			}
		})
	}
}

// config8 is the default opaque-ports list's shape: eight single ports.
const config8 = "25,587,3306,4444,5432,6379,9300,11211"
