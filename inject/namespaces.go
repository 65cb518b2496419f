package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// APINamespaces returns a NamespaceLookup that reads namespaces from the
// Kubernetes API at baseURL (e.g. https://kubernetes.default.svc) with the
// bearer token in tokenFile, read on every call because projected service
// account tokens rotate. client carries the API server's CA.
func APINamespaces(client *http.Client, baseURL, tokenFile string) NamespaceLookup {
	base := strings.TrimSuffix(baseURL, "/")
	return func(ctx context.Context, name string) (map[string]string, error) {
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading service account token: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/namespaces/"+url.PathEscape(name), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("getting namespace: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("getting namespace: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("getting namespace: %s", resp.Status)
		}
		var ns corev1.Namespace
		if err := json.Unmarshal(body, &ns); err != nil {
			return nil, fmt.Errorf("decoding namespace: %w", err)
		}
		return ns.Annotations, nil
	}
}
