// Package identity gives the proxies their SPIFFE X.509 identity and the mTLS
// configurations built on it.
//
// A [Source] holds the proxy's current X509-SVID and the trust bundles it
// verifies peers with, and tells listeners when either changes. Three
// sources exist, one a file each:
//
//   - [WorkloadAPISource] (workloadapi.go) streams SVIDs and bundles from a
//     SPIFFE Workload API such as the SPIRE agent, reconnecting on its own.
//   - [FileSource] (files.go) reads PEM files written by spiffe-helper or
//     cert-manager's csi-driver-spiffe and reloads them when they change.
//   - [DevSource] (dev.go) issues itself short-lived SVIDs from an embedded
//     development [CA] (ca.go) for running without any SPIFFE infrastructure.
//
// None of the constructors waits for a first SVID: a source reports
// [Source.Ready] once it holds an SVID that is valid now, so the proxy can
// serve its admin endpoints (and answer /ready with 503) while the agent is
// still attesting it.
//
// [ServerConfig] and [ClientConfig] (tls.go) build TLS 1.3 configurations
// that present the source's current SVID on every new handshake and verify
// and authorize the peer's SVID on every handshake, including resumed ones.
// [ParseAuthorizer] (authorize.go) turns configuration strings into the
// authorization policy they take.
package identity
