package test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/seed722d2a70/meshproxy/test/meshtest"
)

// meshproxyBin is the meshproxy binary built once for the tests that run
// proxies as processes.
var meshproxyBin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(floodHelperEnv); spec != "" {
		os.Exit(floodHelper(spec))
	}
	dir, err := os.MkdirTemp("", "meshproxy-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by every user: some tests run copies as other UIDs.
	_ = os.Chmod(dir, 0o755)
	meshproxyBin, err = meshtest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	// Every proxy the tests started has shut down: none of their
	// goroutines may be left.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}
