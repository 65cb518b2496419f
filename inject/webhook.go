package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// maxReviewBytes bounds an AdmissionReview body. The API server caps objects
// at about 1.5 MiB; the review carries the object (and, on updates, the old
// one) plus a little.
const maxReviewBytes = 8 << 20

// NamespaceLookup returns the annotations of a namespace, for pods whose
// injection is enabled or configured at namespace level.
type NamespaceLookup func(ctx context.Context, name string) (map[string]string, error)

// WebhookOptions configures a Webhook. All fields are optional.
type WebhookOptions struct {
	Log     *zap.Logger
	Metrics *WebhookMetrics
	// Namespaces looks namespaces' annotations up; nil means only pod
	// annotations count.
	Namespaces NamespaceLookup
}

// Webhook is a mutating admission webhook (AdmissionReview v1) that injects
// the proxy into pods being created whose pod or namespace is annotated
// meshproxy.io/inject: enabled, answering with a JSON Patch. It never
// refuses a pod: on any problem it admits the pod unchanged with a warning,
// so a broken injector cannot stop a cluster from scheduling.
type Webhook struct {
	in   *Injector
	log  *zap.Logger
	m    *WebhookMetrics
	nsFn NamespaceLookup
}

// NewWebhook returns the webhook handler for in.
func NewWebhook(in *Injector, o WebhookOptions) *Webhook {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Webhook{in: in, log: o.Log, m: o.Metrics, nsFn: o.Namespaces}
}

// ServeHTTP answers one AdmissionReview.
func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var review admissionv1.AdmissionReview
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err == nil {
		err = json.Unmarshal(body, &review)
	}
	if err == nil && review.Request == nil {
		err = errors.New("no request in AdmissionReview")
	}
	if err != nil {
		wh.m.observe("bad_request")
		wh.log.Warn("bad admission review", zap.Error(err), zap.String("remote", r.RemoteAddr))
		http.Error(w, "bad AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp := wh.review(r.Context(), review.Request)
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// review decides about one admission request.
func (wh *Webhook) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	log := wh.log.With(zap.String("uid", string(req.UID)), zap.String("namespace", req.Namespace), zap.String("name", req.Name))
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		wh.m.observe("ignored")
		return resp
	}
	patch, res, err := wh.podPatch(ctx, req)
	if err != nil {
		wh.m.observe("error")
		log.Warn("pod admitted without injection", zap.Error(err))
		resp.Warnings = []string{"meshproxy injector: pod admitted without proxy: " + err.Error()}
		return resp
	}
	wh.m.observe(string(res.Action))
	log.Info("pod reviewed", zap.String("action", string(res.Action)), zap.String("reason", res.Reason))
	if patch != nil {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	return resp
}

func (wh *Webhook) podPatch(ctx context.Context, req *admissionv1.AdmissionRequest) ([]byte, Result, error) {
	var pod corev1.Pod
	// Not strict: the API server may send fields newer than these types;
	// the patch only adds, so they are kept.
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return nil, Result{}, fmt.Errorf("decoding pod: %w", err)
	}
	if Injected(&pod.Spec) {
		return nil, Result{Action: ActionSkipped, Reason: "already injected"}, nil
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	var nsAnn map[string]string
	if wh.nsFn != nil && ns != "" {
		a, err := wh.nsFn(ctx, ns)
		if err != nil {
			return nil, Result{}, fmt.Errorf("namespace %s: %w", ns, err)
		}
		nsAnn = a
	}
	after := pod.DeepCopy()
	res, err := wh.in.Pod(&after.ObjectMeta, &after.Spec, Scope{Pod: after.Annotations, Namespace: nsAnn}, WhenEnabled)
	if err != nil || res.Action != ActionInjected {
		return nil, res, err
	}
	patch, err := marshalPatch(additionsPatch(&pod, after))
	return patch, res, err
}

// WebhookMetrics counts admission reviews. A nil *WebhookMetrics records
// nothing.
type WebhookMetrics struct {
	reviews *prometheus.CounterVec
}

// NewWebhookMetrics creates and registers on reg (when not nil):
//
//	injector_reviews_total{result}   counter: injected, skipped, unchanged, ignored, error, bad_request
func NewWebhookMetrics(reg prometheus.Registerer) (*WebhookMetrics, error) {
	m := &WebhookMetrics{reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "injector_reviews_total",
		Help: "Admission reviews answered by the injector, by result.",
	}, []string{"result"})}
	if reg != nil {
		if err := reg.Register(m.reviews); err != nil {
			return nil, fmt.Errorf("registering injector metrics: %w", err)
		}
	}
	return m, nil
}

func (m *WebhookMetrics) observe(result string) {
	if m == nil {
		return
	}
	m.reviews.WithLabelValues(result).Inc()
}
