// Package release names what the project publishes: its version, set at
// link time, and the container images that carry it (built by package
// image), so that `meshproxy inject` and `meshproxy install` default to the
// images of the version that prints them.
package release

// Version is set at link time by the Makefile and cmd/meshimage:
// -X github.com/seed722d2a70/meshproxy/internal/release.Version=...; "dev"
// in builds without it (go test, go run).
var Version = "dev"

// VersionFlag is the -X linker flag that stamps v into a build.
func VersionFlag(v string) string {
	return "-X github.com/seed722d2a70/meshproxy/internal/release.Version=" + v
}

// Repository is where the project publishes its images.
const Repository = "ghcr.io/seed722d2a70"

// Names of the images, after the repository.
const (
	// ProxyName is the sidecar build with iptables for the init step.
	ProxyName = "meshproxy-proxy"
	// ControllerName is the full build: destination, injector.
	ControllerName = "meshproxy-controller"
)

// Image is name in Repository, tagged Version.
func Image(name string) string {
	return Repository + "/" + name + ":" + Version
}
