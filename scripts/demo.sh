#!/usr/bin/env bash
# Runs a two-proxy mesh on loopback with the embedded dev CA (no SPIRE):
#
#   client ──► client proxy ──mTLS──► server proxy (inbound) ──► demo app
#
# and prints how to try it. Ctrl-C stops everything.
# Ports are DEMO_PORT_BASE (default 14000) + small offsets, so a test can move them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${MESHPROXY_BIN:-bin/meshproxy}"
app="${DEMOAPP_BIN:-bin/demoapp}"
base="${DEMO_PORT_BASE:-14000}"
work="$(mktemp -d "${TMPDIR:-/tmp}/meshproxy-demo.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

app_http=$((base + 80)) app_echo=$((base + 7))
server_in=$((base + 143)) server_out=$((base + 140)) server_admin=$((base + 191))
client_in=$((base + 1143)) client_out=$((base + 1140)) client_admin=$((base + 1191))
client_http=$((base + 1080)) client_echo=$((base + 1007))

# The CA both proxies share. `ca init` is the one step that writes a key to
# disk, because two processes must trust the same CA; it lives in $work.
"$bin" ca init --dir "$work/ca" --trust-domain demo.local >/dev/null

cat >"$work/client.yaml" <<YAML
outbound:
  listeners:
    - {listen: "127.0.0.1:$client_http", target: "app.demo:$app_http"}
    - {listen: "127.0.0.1:$client_echo", target: "app.demo:$app_echo"}
destinations:
  - match: app.demo
    address: 127.0.0.1
    inboundPort: $server_in
    identity: ["spiffe://demo.local/server"]
    opaquePorts: "$app_echo"
YAML

"$app" -http "127.0.0.1:$app_http" -echo "127.0.0.1:$app_echo" 2>"$work/app.log" &
pids+=($!)
common=(--ca-dir "$work/ca" --trust-domain demo.local --log-format console --detect-timeout 2s)
"$bin" run "${common[@]}" --identity-id spiffe://demo.local/server \
  --inbound-addr "127.0.0.1:$server_in" --outbound-addr "127.0.0.1:$server_out" \
  --admin-addr "127.0.0.1:$server_admin" 2>"$work/server-proxy.log" &
pids+=($!)
"$bin" run "${common[@]}" --identity-id spiffe://demo.local/client --config "$work/client.yaml" \
  --inbound-addr "127.0.0.1:$client_in" --outbound-addr "127.0.0.1:$client_out" \
  --admin-addr "127.0.0.1:$client_admin" 2>"$work/client-proxy.log" &
pids+=($!)

ready() { exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /ready HTTP/1.0\r\n\r\n' >&3 && grep -q '200 OK' <&3; }
for port in $server_admin $client_admin; do
  for _ in $(seq 100); do ready "$port" 2>/dev/null && break; sleep 0.1; done
  ready "$port" 2>/dev/null || { echo "demo: proxy on admin port $port did not become ready" >&2; cat "$work"/*.log >&2; exit 1; }
done

cat <<EOT
meshproxy demo is running (dev CA, trust domain demo.local):

  app ──► client proxy 127.0.0.1:$client_http / :$client_echo ──mTLS──► server proxy :$server_in ──► demo app

Try it:
  curl http://127.0.0.1:$client_http/                       # HTTP, detected, carried over mTLS
  $app -dial 127.0.0.1:$client_echo -send hello     # opaque port: no detection, header names port $app_echo
Metrics:
  curl -s http://127.0.0.1:$client_admin/metrics | grep ^tcp_   # client proxy
  curl -s http://127.0.0.1:$server_admin/metrics | grep ^tcp_   # server proxy (note inbound client_id)
Logs: $work/*.log
Press Ctrl-C to stop.
EOT
wait -n "${pids[@]}"
echo "demo: a process exited unexpectedly; logs:" >&2
tail -n 20 "$work"/*.log >&2
exit 1
