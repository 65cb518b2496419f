package identity

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, tdExample)
	a := issue(t, ca, idClient)
	b := issue(t, ca, spiffeid.RequireFromString("spiffe://example.org/ns/renamed"))
	m.svidInstalled(a)
	m.svidInstalled(b)
	m.sourceError(SourceFiles, "parse")

	want := `
# HELP identity_cert_refresh_count Number of times the proxy's X509-SVID was installed or replaced.
# TYPE identity_cert_refresh_count counter
identity_cert_refresh_count 2
# HELP identity_source_errors_total Errors fetching or loading the proxy's identity, by source and reason.
# TYPE identity_source_errors_total counter
identity_source_errors_total{reason="parse",source="files"} 1
# HELP identity_svid_spiffe_id The SPIFFE ID of the proxy's current X509-SVID, as a label; the value is always 1.
# TYPE identity_svid_spiffe_id gauge
identity_svid_spiffe_id{spiffe_id="spiffe://example.org/ns/renamed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"identity_cert_refresh_count", "identity_source_errors_total", "identity_svid_spiffe_id"); err != nil {
		t.Error(err)
	}
	if got, want := testutil.ToFloat64(m.expiry), float64(b.Certificates[0].NotAfter.Unix()); got != want {
		t.Errorf("expiry %v, want %v", got, want)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registered twice")
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.svidInstalled(issue(t, newTestCA(t, tdExample), idClient))
	m.sourceError(SourceDev, "issue")
}
