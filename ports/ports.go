// Package ports parses and represents sets of TCP ports such as
// "25,587,4000-4100", the form used by opaque-port, skip-port and allow-list
// settings throughout meshproxy.
package ports

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// ErrInvalid is returned (wrapped) for any malformed port list.
var ErrInvalid = errors.New("invalid port list")

// Set is a set of TCP ports 1..65535. The zero value is the empty set.
// Lookups are constant time, which matters because the set is consulted on
// every new connection.
type Set struct {
	bits *[1024]uint64 // nil when empty; bit p set when port p is a member
}

// None is the list with no ports. It parses to the empty set, like "", and
// says so where an empty value would be taken for an absent one (an
// environment variable, say).
const None = "none"

// Parse parses a comma-separated list of ports and inclusive ranges, such as
// "25, 587, 4000-4100". Whitespace around items is ignored; an empty string
// and None are the empty set. Port 0, ports above 65535 and inverted ranges
// are errors.
func Parse(s string) (Set, error) {
	var set Set
	if strings.TrimSpace(s) == None {
		return set, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := parsePort(lo)
		if err != nil {
			return Set{}, err
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return Set{}, err
			}
			if last < first {
				return Set{}, fmt.Errorf("%w: inverted range %q", ErrInvalid, item)
			}
		}
		for p := int(first); p <= int(last); p++ {
			set.Add(uint16(p))
		}
	}
	return set, nil
}

// MustParse is Parse for constants known to be valid; it panics otherwise.
func MustParse(s string) Set {
	set, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return set
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || n > 65535 {
		return 0, fmt.Errorf("%w: %q is not a port (1-65535)", ErrInvalid, s)
	}
	return uint16(n), nil
}

// Add adds port p to the set. Port 0 is ignored: it is never a destination.
func (s *Set) Add(p uint16) {
	if p == 0 {
		return
	}
	if s.bits == nil {
		s.bits = new([1024]uint64)
	}
	s.bits[p/64] |= 1 << (p % 64)
}

// Contains reports whether p is in the set.
func (s Set) Contains(p uint16) bool {
	return s.bits != nil && s.bits[p/64]&(1<<(p%64)) != 0
}

// Len returns the number of ports in the set.
func (s Set) Len() int {
	if s.bits == nil {
		return 0
	}
	n := 0
	for _, w := range s.bits {
		n += bits.OnesCount64(w)
	}
	return n
}

// Ranges returns the set as sorted, maximal inclusive ranges.
//
// It reads the set a 64-bit word at a time and skips empty words, so its
// cost follows the number of words with members rather than the 65 535
// ports: the destination controller calls it for every endpoint it
// describes.
func (s Set) Ranges() [][2]uint16 {
	if s.bits == nil {
		return nil
	}
	var out [][2]uint16
	open := -1 // the first port of a range that reaches the previous word's end
	for i, w := range s.bits {
		base := i * 64
		if i == 0 {
			w &^= 1 // port 0 is never a member
		}
		if open >= 0 {
			if w == ^uint64(0) {
				continue // the range goes on through this word
			}
			n := bits.TrailingZeros64(^w) // the range's ports in this word
			out = append(out, [2]uint16{uint16(open), uint16(base + n - 1)})
			open = -1
			w &^= 1<<n - 1
		}
		for w != 0 {
			lo := bits.TrailingZeros64(w)
			n := bits.TrailingZeros64(^(w >> lo)) // ports from lo on
			if lo+n == 64 {
				open = base + lo
				break
			}
			out = append(out, [2]uint16{uint16(base + lo), uint16(base + lo + n - 1)})
			w &^= (1<<n - 1) << lo
		}
	}
	if open >= 0 {
		out = append(out, [2]uint16{uint16(open), 65535})
	}
	return out
}

// String formats the set in the form Parse accepts, with maximal ranges.
func (s Set) String() string {
	var b strings.Builder
	for i, r := range s.Ranges() {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(r[0])))
		if r[1] != r[0] {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r[1])))
		}
	}
	return b.String()
}

// MarshalText implements encoding.TextMarshaler.
func (s Set) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler, so a Set can be read
// from YAML, flags and environment variables alike.
func (s *Set) UnmarshalText(text []byte) error {
	set, err := Parse(string(text))
	if err != nil {
		return err
	}
	*s = set
	return nil
}
