//go:build linux

package spiretest

import (
	"testing"

	"github.com/seed722d2a70/meshproxy/test/internal/sharedbin"
)

// Binaries returns the directory holding spire-server and spire-agent
// ($MESHPROXY_SPIRE_DIR, or <repo>/.cache/spire where scripts/deps.sh puts
// them), installing them there first if they are missing.
func Binaries(t testing.TB) string {
	t.Helper()
	return sharedbin.Dir(t, sharedbin.Set{
		Name: "SPIRE", DirEnv: "MESHPROXY_SPIRE_DIR", Cache: "spire", Script: "spire/install.sh",
		Commands: []string{"spire-server", "spire-agent"},
	})
}
