// Package httpproxy proxies HTTP/1.x and HTTP/2 (so gRPC) request by
// request. Both the outbound and the inbound proxy use it once a connection
// is known to carry HTTP: the outbound after protocol detection, the inbound
// when the transport header's session protocol says so.
//
// A Server serves connections handed to it one at a time (ServeConn). Those
// its caller knows to carry HTTP/1 (Conn.Protocol) are served by the relay
// of h1.go on the caller's goroutine: it parses each request head itself,
// writes it to a pooled upstream connection, and streams the body and the
// answer by their framing, without net/http's per-request goroutine
// hand-offs (docs/http-fast-path.md). The others go to a single net/http
// server that speaks HTTP/1.1 and prior-knowledge HTTP/2 (h2c) on the same
// conns. There each request is forwarded by an
// httputil.ReverseProxy through the round tripper the connection was handed
// over with, so hop-by-hop headers, trailers, 1xx responses and protocol
// switches (101, as WebSockets use) are handled the standard library's way.
// CONNECT becomes a raw two-way copy after the upstream's answer.
//
// A connection the caller knows to carry prior-knowledge HTTP/2
// (Conn.Protocol) and hands over with an H2Picker is relayed frame by frame
// instead (h2*.go, docs/http2-relay.md): two goroutines per connection and
// none per stream, HPACK and flow control per hop, streams mapped onto
// pooled upstream connections (H2Pool), and writes batched until nothing
// else is pending, so gRPC pays a fraction of what net/http's server,
// ReverseProxy and Transport cost per call.
//
// Failures become real HTTP answers naming the proxy as their source in a
// meshproxy-error header: 502 (gRPC UNAVAILABLE) when the upstream cannot be
// reached, 504 (DEADLINE_EXCEEDED) on a timeout, 403 (PERMISSION_DENIED)
// when authorization refused the request.
//
// Requests are counted with Linkerd's names and labels: request_total,
// response_total (with status_code, grpc_status and classification) and
// response_latency_ms.
package httpproxy
