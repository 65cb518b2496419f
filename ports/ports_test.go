package ports

import (
	"errors"
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
