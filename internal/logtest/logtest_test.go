package logtest

import (
	"slices"
	"testing"
)

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    []string
		wantErr bool
	}{
		{name: "flat, distinct", doc: `{"a":1,"b":"x","c":null}`},
		{name: "flat, repeated", doc: `{"direction":"outbound","direction":"outbound","reason":"x"}`, want: []string{"direction"}},
		{name: "repeated twice", doc: `{"a":1,"a":2,"a":3}`, want: []string{"a", "a"}},
		{name: "same key in sibling objects", doc: `{"x":{"a":1},"y":{"a":2},"z":[{"a":1},{"a":2}]}`},
		{name: "nested, repeated", doc: `{"x":{"a":1,"a":2},"a":[{"b":1,"b":2}]}`, want: []string{"a", "b"}},
		{name: "key as a value", doc: `{"a":"a","b":["a","a"]}`},
		{name: "not JSON", doc: `{"a":`, wantErr: true},
		{name: "trailing data", doc: `{"a":1} {"a":1}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DuplicateKeys([]byte(tt.doc))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
