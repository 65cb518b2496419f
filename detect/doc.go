// Package detect finds out which protocol a client speaks by peeking at the
// first bytes it sends, so that the proxy can pick a handler: HTTP/1.x and
// HTTP/2 (including gRPC, which arrives with HTTP/2 prior knowledge) get
// request-level routing and metrics, anything else is proxied as opaque TCP.
//
// Detection has two promises:
//
//   - It never adds latency to a client that sends a complete request line or
//     the HTTP/2 preface: the decision is made as soon as the bytes that
//     settle it have arrived, and the first byte that cannot start an HTTP
//     request ends detection at once as opaque. Only a client that has sent
//     an undecided prefix, or nothing at all, is waited for, and never longer
//     than the Detector's timeout (10 s by default, as in Linkerd). A timeout
//     is not a failure: the connection continues as opaque TCP, which is what
//     server-first protocols (SMTP, MySQL, NATS, …) on ports not declared
//     opaque need.
//   - It never loses or reorders a byte: every byte read while detecting,
//     and the end of stream or read error that stopped the reading, are
//     replayed in order to whoever reads the returned connection next.
//
// TLS from the application is always opaque to the proxy, but when the first
// bytes are a TLS ClientHello the server name (SNI) and the offered ALPN
// protocols are returned for metrics and logs.
package detect
