//go:build sidecar

package main

// kubeCommands is empty in the sidecar build, which runs in every pod and
// needs none of the Kubernetes tools; see kube.go.
func kubeCommands() []command { return nil }
