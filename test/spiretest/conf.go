//go:build linux

package spiretest

// serverConf is the SPIRE server configuration: loopback only, an
// in-memory key manager (its CA lives as long as the test), SQLite, join
// token attestation. experimental.cache_reload_interval makes the server
// see new entries within a second instead of five; with the agent's
// sync_interval below, an entry reaches workloads in about a second.
// Arguments: port, socket path, trust domain, data
// directory, log level, SQLite file.
const serverConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = %q
    default_x509_svid_ttl = "1m"
    experimental {
        cache_reload_interval = "1s"
    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    KeyManager "memory" { plugin_data {} }
    NodeAttestor "join_token" { plugin_data {} }
}
`

// agentConf is the SPIRE agent configuration. insecure_bootstrap spares
// the test from handing the agent the server's bundle; the server is on
// loopback. The disk key manager keeps the agent's key and SVID across
// restarts (StopAgent, StartAgent): a join token is single-use, so with
// the memory key manager a restarted agent could not attest again.
// experimental.sync_interval makes the agent fetch entries every second
// instead of every five. The unix workload attestor is told
// to discover each workload's executable path for unix:path: selectors.
// Arguments: data directory, log level, server port, socket path, trust
// domain, key directory.
const agentConf = `agent {
    data_dir = %q
    log_level = %q
    server_address = "127.0.0.1"
    server_port = "%d"
    socket_path = %q
    trust_domain = %q
    insecure_bootstrap = true
    experimental {
        sync_interval = "1s"
    }
}
plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "disk" { plugin_data { directory = %q } }
    WorkloadAttestor "unix" { plugin_data { discover_workload_path = true } }
}
`
