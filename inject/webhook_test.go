package inject_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/seed722d2a70/meshproxy/inject"
	"github.com/seed722d2a70/meshproxy/internal/testcert"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tlsServer serves h over TLS on 127.0.0.1:0 with a certificate made for
// the test, and returns its URL and a client trusting only that
// certificate.
func tlsServer(t *testing.T, h http.Handler) (string, *http.Client) {
	t.Helper()
	cert := testcert.New(t, "meshproxy-injector.test")
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return srv.URL, &http.Client{Transport: tr}
}

// reviewJSON is an AdmissionReview as the API server sends it.
func reviewJSON(t *testing.T, uid, kind, namespace string, object []byte) []byte {
	t.Helper()
	group, version := "", "v1"
	if kind == "Deployment" {
		group = "apps"
	}
	return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{` +
		`"uid":"` + uid + `","kind":{"group":"` + group + `","version":"` + version + `","kind":"` + kind + `"},` +
		`"resource":{"group":"` + group + `","version":"` + version + `","resource":"` + strings.ToLower(kind) + `s"},` +
		`"namespace":"` + namespace + `","operation":"CREATE",` +
		`"userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},` +
		`"object":` + string(object) + `,"oldObject":null,"dryRun":false,` +
		`"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}`)
}

// podJSON is a pod, as JSON, made from a pod template of a testdata file.
func podJSON(t *testing.T, file string, annotations map[string]string) []byte {
	t.Helper()
	ws := decodeWorkloads(t, readFile(t, filepath.Join("testdata", file)))
	pod := corev1.Pod{ObjectMeta: *ws[0].PodMeta.DeepCopy(), Spec: *ws[0].Spec.DeepCopy()}
	pod.APIVersion, pod.Kind = "v1", "Pod"
	pod.GenerateName = "app-"
	for k, v := range annotations {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[k] = v
	}
	b, err := json.Marshal(&pod)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applyPatch applies a JSON Patch of "add" operations, the only kind the
// injector sends, to a JSON document.
func applyPatch(t *testing.T, doc []byte, patch []byte) []byte {
	t.Helper()
	var root any
	if err := json.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	var ops []inject.PatchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Op != "add" {
			t.Fatalf("unexpected op %+v", op)
		}
		tokens := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		for i, tok := range tokens {
			tokens[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		}
		root = addAt(t, root, tokens, op.Value)
	}
	out, err := json.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func addAt(t *testing.T, node any, path []string, v any) any {
	t.Helper()
	switch n := node.(type) {
	case map[string]any:
		if len(path) == 1 {
			n[path[0]] = v
			return n
		}
		child, ok := n[path[0]]
		if !ok {
			t.Fatalf("patch path through missing member %q", path[0])
		}
		n[path[0]] = addAt(t, child, path[1:], v)
		return n
	case []any:
		i := len(n)
		if path[0] != "-" {
			var err error
			if i, err = strconv.Atoi(path[0]); err != nil || i > len(n) {
				t.Fatalf("bad array index %q", path[0])
			}
		}
		if len(path) == 1 {
			return append(n[:i], append([]any{v}, n[i:]...)...)
		}
		n[i] = addAt(t, n[i], path[1:], v)
		return n
	}
	t.Fatalf("patch path through a scalar")
	return nil
}

func postReview(t *testing.T, client *http.Client, url string, body []byte) (int, admissionv1.AdmissionReview) {
	t.Helper()
	resp, err := client.Post(url+"/inject", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, review
}

func TestWebhook(t *testing.T) {
	// A stand-in for the Kubernetes API, serving namespaces to the
	// injector's lookup over TLS, checking the bearer token.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apiURL, apiClient := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer test-token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ann := map[string]string{}
		switch r.URL.Path {
		case "/api/v1/namespaces/meshed":
			ann[inject.AnnotationInject] = inject.Enabled
			ann[inject.AnnotationOpaquePorts] = "7000"
		case "/api/v1/namespaces/plain", "/api/v1/namespaces/shop":
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(corev1.Namespace{ObjectMeta: metav1ObjectMeta(r.URL.Path, ann)})
	}))

	for _, native := range []bool{true, false} {
		t.Run("native="+strconv.FormatBool(native), func(t *testing.T) {
			cfg := inject.DefaultConfig()
			cfg.NativeSidecar = native
			in, err := inject.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			m, err := inject.NewWebhookMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.Handle("/inject", inject.NewWebhook(in, inject.WebhookOptions{
				Metrics: m, Namespaces: inject.APINamespaces(apiClient, apiURL, tokenFile),
			}))
			url, client := tlsServer(t, mux)

			enabled := map[string]string{inject.AnnotationInject: inject.Enabled}
			tests := []struct {
				name      string
				kind, ns  string
				object    []byte
				wantPatch bool
				wantWarn  bool
			}{
				{"annotated pod", "Pod", "shop", podJSON(t, "pod.yaml", enabled), true, false},
				{"pod with init containers and probes", "Pod", "shop", podJSON(t, "web-deployment.yaml", enabled), true, false},
				{"pod of a meshed namespace", "Pod", "meshed", podJSON(t, "redis-statefulset.yaml", nil), true, false},
				{"pod of a plain namespace", "Pod", "plain", podJSON(t, "redis-statefulset.yaml", nil), false, false},
				{"disabled pod of a meshed namespace", "Pod", "meshed", podJSON(t, "pod.yaml", map[string]string{inject.AnnotationInject: inject.Disabled}), false, false},
				{"already injected", "Pod", "shop", podJSON(t, "already-injected.yaml", enabled), false, false},
				{"bad annotation", "Pod", "shop", podJSON(t, "pod.yaml", map[string]string{inject.AnnotationInject: "sure"}), false, true},
				{"namespace lookup fails", "Pod", "missing", podJSON(t, "pod.yaml", nil), false, true},
				{"not a pod", "Deployment", "shop", readYAMLAsJSON(t, "web-deployment.yaml"), false, false},
			}
			for i, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					uid := "uid-" + strconv.Itoa(i)
					status, review := postReview(t, client, url, reviewJSON(t, uid, tc.kind, tc.ns, tc.object))
					if status != http.StatusOK {
						t.Fatalf("status %d", status)
					}
					resp := review.Response
					if resp == nil || string(resp.UID) != uid || !resp.Allowed {
						t.Fatalf("response %+v, want allowed with uid %s", resp, uid)
					}
					if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
						t.Errorf("review type %q %q", review.APIVersion, review.Kind)
					}
					if got := len(resp.Warnings) > 0; got != tc.wantWarn {
						t.Errorf("warnings %q, want some: %v", resp.Warnings, tc.wantWarn)
					}
					if !tc.wantPatch {
						if resp.Patch != nil || resp.PatchType != nil {
							t.Errorf("unexpected patch %s", resp.Patch)
						}
						return
					}
					if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
						t.Fatalf("patch type %v", resp.PatchType)
					}
					var got corev1.Pod
					if err := json.Unmarshal(applyPatch(t, tc.object, resp.Patch), &got); err != nil {
						t.Fatal(err)
					}
					// The patched pod is what injecting directly gives.
					var want corev1.Pod
					if err := json.Unmarshal(tc.object, &want); err != nil {
						t.Fatal(err)
					}
					var nsAnn map[string]string
					if tc.ns == "meshed" {
						nsAnn = map[string]string{inject.AnnotationInject: inject.Enabled, inject.AnnotationOpaquePorts: "7000"}
					}
					res, err := in.Pod(&want.ObjectMeta, &want.Spec, inject.Scope{Pod: want.Annotations, Namespace: nsAnn}, inject.WhenEnabled)
					if err != nil || res.Action != inject.ActionInjected {
						t.Fatalf("direct injection %v %v", res, err)
					}
					if !equality.Semantic.DeepEqual(got, want) {
						t.Errorf("patched pod differs from injected pod:\n%s", inject.Diff("injected", "patched", mustYAML(t, &want), mustYAML(t, &got)))
					}
				})
			}
			if got := counter(t, reg, "injector_reviews_total", "injected"); got != 3 {
				t.Errorf("injected reviews = %v, want 3", got)
			}
			if got := counter(t, reg, "injector_reviews_total", "error"); got != 2 {
				t.Errorf("error reviews = %v, want 2", got)
			}

			for _, bad := range []struct {
				name, method, body string
				want               int
			}{
				{"not json", http.MethodPost, "{not json", http.StatusBadRequest},
				{"no request", http.MethodPost, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
				{"GET", http.MethodGet, "", http.StatusMethodNotAllowed},
			} {
				req, err := http.NewRequestWithContext(context.Background(), bad.method, url+"/inject", strings.NewReader(bad.body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != bad.want {
					t.Errorf("%s: status %d, want %d", bad.name, resp.StatusCode, bad.want)
				}
			}
			if got := counter(t, reg, "injector_reviews_total", "bad_request"); got != 2 {
				t.Errorf("bad_request reviews = %v, want 2", got)
			}
		})
	}
}

func TestAPINamespacesErrors(t *testing.T) {
	lookup := inject.APINamespaces(http.DefaultClient, "http://127.0.0.1:1", filepath.Join(t.TempDir(), "absent"))
	if _, err := lookup(context.Background(), "x"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want a missing token file", err)
	}
}

func metav1ObjectMeta(path string, ann map[string]string) (m metav1.ObjectMeta) {
	m.Name = path[strings.LastIndexByte(path, '/')+1:]
	m.Annotations = ann
	return m
}

func readYAMLAsJSON(t *testing.T, file string) []byte {
	t.Helper()
	b, err := yaml.YAMLToJSON(readFile(t, filepath.Join("testdata", file)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustYAML(t *testing.T, v any) []byte {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func counter(t *testing.T, g prometheus.Gatherer, name, result string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
