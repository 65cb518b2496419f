// Package spiretest runs a real SPIRE server and agent for integration
// tests: meshproxy is deployed beside SPIRE, so its tests talk to the real
// thing rather than to a fake Workload API.
//
// [Start] unpacks the binaries kept in ../shared/spire (once, into
// .cache/spire of the repository), starts a server on a free loopback port
// with an in-memory key manager and a SQLite datastore, attests an agent to
// it with a join token, and stops both when the test ends. Entries are
// registered with [Env.CreateEntry] under the agent's alias ID
// spiffe://<trust domain>/agent; the agent syncs them every second.
//
// # Telling workloads apart
//
// The agent's unix workload attestor identifies the process at the other
// end of the Workload API socket (from the socket's peer credentials) by
// its uid, gid and, because the harness enables discover_workload_path, the
// path of its executable. All processes of one uid get the same entries, so
// two workloads need different selectors:
//
//   - By path, which works as root or not: copy one binary to two paths
//     with [CopyExecutable] and register [PathSelector] of each copy. Two
//     meshproxy processes started from the two copies get two identities.
//   - By uid, as root: run the second process under another uid (e.g.
//     65534, nobody, via exec.Cmd's SysProcAttr.Credential) from a copy made
//     by CopyExecutable, which nobody can read, and register [UIDSelector]
//     of each uid. The agent socket's directory is world-searchable for
//     this.
//
// A process that matches several entries receives several SVIDs; go-spiffe
// (and so identity.WorkloadAPISource) uses the first, so keep selectors
// disjoint: don't register unix:uid:0 next to unix:path: entries for
// processes that run as root.
//
// The binaries are found in $MESHPROXY_SPIRE_DIR (default
// <repo>/.cache/spire) and, when missing there, installed by
// $MESHPROXY_SHARED_DIR/spire/install.sh (default <repo>/../shared).
package spiretest
