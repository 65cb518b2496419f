// Package controller is meshproxy's destination controller: it watches the
// Kubernetes API (Services, EndpointSlices, Pods and Namespaces, through
// client-go shared informers) and answers the proxies' question "what is at
// this address?" over the destination API (package destinationpb), as a
// stream of updates per address.
//
// The design follows kube-proxy's pkg/proxy/config: event handlers do no
// work of their own beyond naming what changed. Each subscription records
// the objects its answer depends on (a ClusterIP, a Service, the pods behind
// it, their namespaces); an event wakes the subscriptions that depend on the
// objects it touched, and each recomputes its answer from the informers'
// stores and sends the difference. Answers are therefore always computed
// from the stores' current state, so the order in which related objects
// arrive (an EndpointSlice before its Service, a pod after its slice) does
// not matter, and several events in a row cost one recomputation.
//
// index.go holds the informers and their indexes, resolve.go turns an
// address into its answer, pod.go reads what an injected pod declares,
// server.go serves subscriptions, and metrics.go counts.
package controller
