//go:build !sidecar

package main

// kubeCommands are the Kubernetes tools. They link client-go's API types,
// whose package initialization costs the proxy about 4 MiB of idle RSS and
// 10 MB of binary, so the sidecar build (-tags sidecar) leaves them out.
func kubeCommands() []command {
	return []command{
		{"inject", "add the proxy to Kubernetes workloads in YAML manifests", runInject},
		{"injector", "serve the Kubernetes mutating admission webhook that injects the proxy", runInjector},
		{"netpol", "find NetworkPolicies that would drop meshed traffic", runNetpol},
		{"destination", "serve the destination API: what is at an address, from the Kubernetes API", runDestination},
		{"install", "print the control plane's Kubernetes manifests", runInstall},
		{"uninstall", "print the control plane's objects, for kubectl delete", runUninstall},
		{"check", "check the cluster's meshproxy installation and meshed workloads", runCheck},
	}
}
