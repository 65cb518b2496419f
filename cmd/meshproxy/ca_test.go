package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, ctx context.Context, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, func(string) string { return "" }, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestCAInit(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	readCert := func() []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, stderr, err := runCmd(t, ctx, "ca", "init", "-dir", dir); err != nil {
		t.Fatal(err, stderr)
	}
	first := readCert()
	out, _, err := runCmd(t, ctx, "ca", "init", "-dir", dir)
	if err != nil || !strings.Contains(out, "already") || !bytes.Equal(readCert(), first) {
		t.Fatalf("second init: %v %q; the CA must be kept", err, out)
	}
	if _, stderr, err := runCmd(t, ctx, "ca", "init", "-dir", dir, "-force"); err != nil {
		t.Fatalf("-force: %v %s", err, stderr)
	}
	if bytes.Equal(readCert(), first) {
		t.Error("-force kept the old CA")
	}
	if st, err := os.Stat(filepath.Join(dir, "ca_key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file %v %v, want mode 0600", st, err)
	}
}

// Commands that take no arguments refuse them rather than ignore them: a
// directory given without -dir must not send the CA somewhere else.
func TestStrayArguments(t *testing.T) {
	for _, args := range [][]string{
		{"ca", "init", "-dir", t.TempDir(), "elsewhere"},
		{"ca", "issue", "elsewhere"},
		{"init", "--dry-run", "extra"},
		{"version", "extra"},
	} {
		if _, _, err := runCmd(t, context.Background(), args...); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
			t.Errorf("%q: error %v, want unexpected arguments", args, err)
		}
	}
}

// Help asked for exits 0; a command line that cannot run exits 2.
func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"-h"}, 0},
		{[]string{"run", "-h"}, 0},
		{[]string{"ca", "init", "-help"}, 0},
		{[]string{"ca", "-h"}, 0},
		{[]string{"version", "-h"}, 0},
		{nil, 2},
		{[]string{"nonsense"}, 2},
		{[]string{"run", "-no-such-flag"}, 2},
	} {
		_, _, err := runCmd(t, context.Background(), tt.args...)
		if got := exitCode(err); err == nil || got != tt.code {
			t.Errorf("%q: error %v, exit %d; want exit %d", tt.args, err, got, tt.code)
		}
	}
}
