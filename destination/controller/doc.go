// Package controller is meshproxy's destination controller: it watches the
// Kubernetes API (Services, EndpointSlices, Pods and Namespaces, through
// client-go shared informers) and answers the proxies' question "what is at
// this address?" over the destination API (package destinationpb), as a
// stream of updates per address.
//
// The design follows kube-proxy's pkg/proxy/config: event handlers do no
// work of their own beyond naming what changed. The subscriptions to one
// address share a topic, which records the objects its answer depends on (a
// ClusterIP, a Service, the pods behind it, their namespaces); an event
// marks stale the topics that depend on the objects it touched and wakes
// their subscriptions. The first to look recomputes the answer from the
// informers' stores, once for all of them, and each sends the difference
// from what it sent last: most often the one delta the topic made for
// every subscriber that was up to date. Answers are therefore always
// computed from the stores' current state, so the order in which related
// objects arrive (an EndpointSlice before its Service, a pod after its
// slice) does not matter, and several events in a row cost one
// recomputation.
//
// index.go holds the informers and their indexes, resolve.go turns an
// address into its answer, pod.go reads what an injected pod declares,
// topic.go shares answers and updates between the subscriptions to one
// address, codec.go encodes a shared update once, server.go serves
// subscriptions, and metrics.go counts.
package controller
