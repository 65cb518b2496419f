package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestReadWriteRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		input string
		docs  int
	}{
		{"empty", "", 0},
		{"one", "a: 1\n", 1},
		{"leading separator", "---\na: 1\n", 1},
		{"two", "a: 1\n---\nb: 2\n", 2},
		{"separator comment", "a: 1\n--- # next\nb: 2\n", 2},
		{"empty document", "a: 1\n---\n---\nb: 2\n", 3},
		{"no final newline", "a: 1\n---\nb: 2", 2},
		{"CRLF", "a: 1\r\n---\r\nb: 2\r\n", 2},
		{"not a separator", "a: |\n  ---x\n", 1},
		{"trailing separator", "a: 1\n---\n", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := Read(strings.NewReader(tc.input))
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) != tc.docs {
				t.Errorf("%d documents, want %d: %+v", len(docs), tc.docs, docs)
			}
			var out bytes.Buffer
			if err := Write(&out, docs); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.input {
				t.Errorf("round trip %q, want %q", out.String(), tc.input)
			}
		})
	}
}

func TestEncodeLeavesOutEmptyFields(t *testing.T) {
	h, err := ReadHeader([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	obj, ok := NewObject(h.GVK())
	if !ok {
		t.Fatal("Deployment unknown")
	}
	if err := DecodeStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers: [{name: a, image: b}]\n      volumes: [{name: v, emptyDir: {}}]\n"), obj); err != nil {
		t.Fatal(err)
	}
	out, err := Encode(obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"creationTimestamp", "status", "resources", "strategy"} {
		if strings.Contains(string(out), absent) {
			t.Errorf("output has %s:\n%s", absent, out)
		}
	}
	for _, kept := range []string{"emptyDir: {}", "selector: {}"} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("output lost %q:\n%s", kept, out)
		}
	}
	if err := CheckStrict(out); err != nil {
		t.Error(err)
	}
}

func TestCheckStrict(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		ok          bool
	}{
		{"valid", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n", true},
		{"comment only", "# nothing\n", true},
		{"unknown field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndatum: {a: b}\n", false},
		{"unknown kind", "apiVersion: example.com/v1\nkind: Widget\n", false},
		{"bad list item", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  spec: {portz: []}\n", false},
		{"wrong type", "apiVersion: v1\nkind: Service\nspec: {ports: 80}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckStrict([]byte(tc.input))
			if (err == nil) != tc.ok {
				t.Fatalf("error %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrDecode) {
				t.Errorf("error %v does not wrap ErrDecode", err)
			}
		})
	}
}

// FuzzRead checks that splitting any input into documents and writing them
// back gives the input again, and that headers never panic.
func FuzzRead(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Pod\n---\n# c\n--- # x\nb: [1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Read(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := Write(&out, docs); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("round trip changed the input")
		}
		for _, d := range docs {
			_, _ = ReadHeader(d.Body)
		}
	})
}
