// Package bench measures meshproxy against the limit (no proxy) and against
// other mutual-TLS tunnels, side by side in one run on one machine.
//
// Every contender runs as real processes on loopback: direct (no proxy),
// go-tls (a minimal crypto/tls 1.3 pair written here, the Go TLS limit),
// stunnel4, haproxy and meshproxy, each as a client-side and a server-side
// proxy with mutual TLS between them and certificates from one dev CA. The
// backend apps (sink, echo, HTTP, gRPC) run in a process of their own, so the
// load generator, the apps and the proxies do not share a Go runtime.
//
// A machine shared with other work is noisy, so every measure is repeated,
// contenders are interleaved within each repetition, and results are
// reported as min/median/max with ratios to baselines measured in the same
// run. Run drives it all and returns a Report, which renders as Markdown
// (WriteMarkdown) and JSON.
//
// The files follow a run: contender.go and its siblings start the proxies,
// apps.go the backends, measure_*.go the measures, stats.go, schedule.go and
// report.go the numbers, markdown.go the tables.
package bench
