package inject_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/seed722d2a70/meshproxy/inject"
)

// FuzzStream checks that any input either fails cleanly or injects into a
// stream that injecting again leaves unchanged.
func FuzzStream(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: batch/v1, kind: Job, spec: {template: {spec: {containers: []}}}}]\n"))
	cfg := inject.DefaultConfig()
	in, err := inject.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, _, err := in.Stream(data, inject.StreamOptions{})
		if err != nil {
			return
		}
		again, _, err := in.Stream(out, inject.StreamOptions{})
		if err != nil {
			t.Fatalf("injected output does not inject again: %v\n%s", err, out)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("second injection changed the output:\n%s", inject.Diff("once", "twice", out, again))
		}
	})
}

// FuzzWebhook posts arbitrary bodies to the webhook handler: it must answer
// 200 or 400, never panic.
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"annotations":{"meshproxy.io/inject":"enabled"}},"spec":{"containers":[{"name":"a"}]}}}}`))
	in, err := inject.New(inject.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	wh := inject.NewWebhook(in, inject.WebhookOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body)))
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d", rec.Code)
		}
	})
}
