package identity

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseAuthorizer(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		allow  []string
		refuse []string
	}{
		{
			name:   "exact ID",
			values: []string{"spiffe://example.org/ns/web"},
			allow:  []string{"spiffe://example.org/ns/web"},
			refuse: []string{"spiffe://example.org/ns/web/x", "spiffe://example.org/ns/webx", "spiffe://other.org/ns/web"},
		},
		{
			name:   "path prefix",
			values: []string{"spiffe://example.org/ns/*"},
			allow:  []string{"spiffe://example.org/ns/a", "spiffe://example.org/ns/a/b"},
			refuse: []string{"spiffe://example.org/ns", "spiffe://example.org/nsfoo", "spiffe://example.org/nsfoo/a", "spiffe://other.org/ns/a"},
		},
		{
			name:   "bare trust domain",
			values: []string{"example.org"},
			allow:  []string{"spiffe://example.org/a", "spiffe://example.org/a/b"},
			refuse: []string{"spiffe://other.org/a", "spiffe://example.org.evil/a"},
		},
		{
			name:   "trust domain ID",
			values: []string{"spiffe://example.org"},
			allow:  []string{"spiffe://example.org/a"},
			refuse: []string{"spiffe://other.org/a"},
		},
		{
			name:   "trust domain wildcard",
			values: []string{"spiffe://example.org/*"},
			allow:  []string{"spiffe://example.org/a"},
			refuse: []string{"spiffe://other.org/a"},
		},
		{
			name:   "star",
			values: []string{"*"},
			allow:  []string{"spiffe://example.org/a", "spiffe://other.org/b"},
		},
		{
			name:   "any, among others",
			values: []string{"spiffe://example.org/a", "any"},
			allow:  []string{"spiffe://other.org/b"},
		},
		{
			name:   "several forms",
			values: []string{" spiffe://example.org/ns/web ", "spiffe://example.org/db/*", "other.org"},
			allow:  []string{"spiffe://example.org/ns/web", "spiffe://example.org/db/pg", "spiffe://other.org/x"},
			refuse: []string{"spiffe://example.org/ns/api", "spiffe://example.org/db", "spiffe://third.org/x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			authorize, err := ParseAuthorizer(tt.values)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.allow {
				if err := authorize(spiffeid.RequireFromString(s), nil); err != nil {
					t.Errorf("%s refused: %v", s, err)
				}
			}
			for _, s := range tt.refuse {
				if err := authorize(spiffeid.RequireFromString(s), nil); err == nil {
					t.Errorf("%s allowed", s)
				}
			}
		})
	}
}

func TestParseAuthorizerInvalid(t *testing.T) {
	for _, values := range [][]string{
		nil,
		{},
		{""},
		{"  "},
		{"spiffe://example.org/a", ""},
		{"example.org/ns/web"},     // a path needs the scheme
		{"https://example.org/a"},  // not SPIFFE
		{"spiffe://Example.org/a"}, // trust domains are lower case
		{"spiffe://example.org/a/"},
		{"spiffe://example.org/a//b"},
		{"spiffe:///a"},
		{"ns/*"},
		{"spiffe://example.org/a*"},
		{"**"},
		{"*", "spiffe://Example.org/a"}, // a wildcard does not hide a mistake
		{"any", ""},
	} {
		if _, err := ParseAuthorizer(values); !errors.Is(err, ErrBadAuthorization) {
			t.Errorf("ParseAuthorizer(%q) = %v, want ErrBadAuthorization", values, err)
		}
	}
}
