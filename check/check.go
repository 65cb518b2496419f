// Package check inspects a cluster's meshproxy installation and its meshed
// workloads through the Kubernetes API, as `linkerd check` does: named
// checks in groups, each passing or failing with a one-line hint and a link
// to the section of docs/kubernetes.md that explains it. `meshproxy check`
// prints them.
package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// DocsURL is the page the checks' anchors are on.
const DocsURL = "https://github.com/seed722d2a70/meshproxy/blob/main/docs/kubernetes.md"

// Groups of checks, in the order they run.
const (
	GroupKubernetesAPI = "kubernetes-api"
	GroupControlPlane  = "control-plane"
	GroupIdentity      = "identity"
	GroupDataPlane     = "data-plane"
	GroupConfiguration = "configuration"
)

// Result is the outcome of one check.
type Result struct {
	Group string `json:"group"`
	// Name identifies the check (its docs anchor is "check-" + Name);
	// Description says what passing means.
	Name        string `json:"name"`
	Description string `json:"description"`
	OK          bool   `json:"ok"`
	// Hint says in one line what to do when the check fails.
	Hint string `json:"hint,omitempty"`
	Docs string `json:"docs"`
	// Details are the objects at fault, one per line, or notes.
	Details []string `json:"details,omitempty"`
}

// Options configure Run.
type Options struct {
	Client kubernetes.Interface
	// Namespace is the control plane's.
	Namespace string
	// ProxyImage is the proxy injected pods should run; empty: the
	// installation's (its ConfigMap), else inject.DefaultImage.
	ProxyImage string
}

// check is one named check: run returns the objects at fault (none: it
// passes), or an error when it could not look.
type check struct {
	group, name, description, hint string
	run                            func(ctx context.Context, c *cluster) ([]string, error)
}

func checks() []check {
	return []check{
		{GroupKubernetesAPI, "api", "can reach the Kubernetes API",
			"check the kubeconfig's server and credentials", checkAPI},
		{GroupKubernetesAPI, "rbac", "can read what the checks read",
			"run check as a user who may list and get these, e.g. a cluster admin", checkRBAC},
		{GroupControlPlane, "control-plane-objects", "the control plane's objects are present",
			"install the control plane: meshproxy install | kubectl apply -f -", checkObjects},
		{GroupControlPlane, "control-plane-ready", "the control plane's pods are ready",
			"look at the pods' events and logs: kubectl -n <namespace> describe pods", checkReady},
		{GroupControlPlane, "webhook-ca", "the webhook's caBundle matches the injector's certificate",
			"make the caBundle and the Secret agree: apply one install output, or let cert-manager inject the CA", checkWebhookCA},
		{GroupIdentity, "spire-agent", "the SPIRE agent runs on the nodes",
			"install SPIRE: a DaemonSet named spire-agent (examples/kubernetes/spire-agent.yaml)", checkSPIREAgent},
		{GroupIdentity, "csi-driver", "the SPIFFE CSI driver is registered",
			"install the SPIFFE CSI driver (examples/kubernetes/spiffe-csi-driver.yaml), or install with -socket hostpath", checkCSIDriver},
		{GroupDataPlane, "proxy-version", "injected pods run the current proxy",
			"restart these workloads so that they are injected again: kubectl rollout restart", checkProxyVersion},
		{GroupDataPlane, "proxy-uid", "no app container runs as the proxy's UID",
			"run these containers as another user: traffic of the proxy's UID bypasses the proxy", checkProxyUID},
		{GroupConfiguration, "opaque-ports", "Services and their pods agree on opaque ports",
			"annotate the Service with the ports whose target ports the pods mark opaque, or the other way", checkOpaquePorts},
		{GroupConfiguration, "target-ports", "every Service's targetPort is a container port of its pods",
			"declare the port in the pods' containers, or fix the Service's targetPort", checkTargetPorts},
		{GroupConfiguration, "network-policies", "no NetworkPolicy drops meshed traffic",
			"admit the inbound proxy port 4143 too: kubectl get netpol,pods,svc,ns -A -o yaml | meshproxy netpol -fix -", checkNetworkPolicies},
	}
}

// Run runs every check in order. When the API cannot be reached, the
// checks after it are not run.
func Run(ctx context.Context, o Options) []Result {
	c := newCluster(o)
	var results []Result
	for _, ch := range checks() {
		faults, err := ch.run(ctx, c)
		r := Result{
			Group: ch.group, Name: ch.name, Description: ch.description, OK: err == nil && len(faults) == 0,
			Docs: DocsURL + "#check-" + ch.name, Details: faults,
		}
		if err != nil {
			r.Details = append(r.Details, err.Error())
		}
		if !r.OK {
			r.Hint = ch.hint
		}
		results = append(results, r)
		if !r.OK && ch.name == "api" {
			break
		}
	}
	return results
}

// Failed reports whether any check failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if !r.OK {
			return true
		}
	}
	return false
}

// WriteText prints the results grouped, as linkerd check does.
func WriteText(w io.Writer, results []Result) error {
	group := ""
	for _, r := range results {
		if r.Group != group {
			if group != "" {
				fmt.Fprintln(w)
			}
			group = r.Group
			fmt.Fprintf(w, "%s\n%s\n", group, strings.Repeat("-", len(group)))
		}
		mark := "✔"
		if !r.OK {
			mark = "×"
		}
		fmt.Fprintf(w, "%s %s\n", mark, r.Description)
		for _, d := range r.Details {
			fmt.Fprintf(w, "    %s\n", d)
		}
		if !r.OK {
			fmt.Fprintf(w, "    hint: %s\n    see %s\n", r.Hint, r.Docs)
		}
	}
	status := "Status check results are ✔"
	if Failed(results) {
		status = "Status check results are ×"
	}
	_, err := fmt.Fprintf(w, "\n%s\n", status)
	return err
}

// WriteJSON prints the results as a JSON object {"success": …, "checks": […]}.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Success bool     `json:"success"`
		Checks  []Result `json:"checks"`
	}{!Failed(results), results})
}
