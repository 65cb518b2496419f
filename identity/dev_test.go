package identity

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestDevSourceRotatesAtHalfLife uses a 2 s TTL, so the first rotation
// comes after about 1 s.
func TestDevSourceRotatesAtHalfLife(t *testing.T) {
	ca := newTestCA(t, tdExample)
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewDevSource(ca, idServer, 2*time.Second, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if !src.Ready() {
		t.Fatal("dev source not ready at once")
	}
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if want := first.Certificates[0].NotBefore.Add(clockSkew + time.Second); !rotateAt(first).Equal(want) {
		t.Errorf("rotation due at %s, want half life %s", rotateAt(first), want)
	}
	if b, err := src.GetX509BundleForTrustDomain(tdExample); err != nil || !b.Equal(ca.Bundle()) {
		t.Errorf("bundle: %v", err)
	}
	if _, err := src.GetX509BundleForTrustDomain(tdOther); err == nil {
		t.Error("bundle for a trust domain the source does not know")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-src.Changed():
	case <-ctx.Done():
		t.Fatal("no rotation")
	}
	second, _ := src.GetX509SVID()
	if second.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatal("rotation kept the serial number")
	}
	if second.ID != idServer {
		t.Errorf("rotated ID %s", second.ID)
	}
	// The change is announced as the SVID is installed, and counted just
	// after: wait for the count rather than race it.
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(m.refresh) < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.refresh); got < 2 {
		t.Errorf("identity_cert_refresh_count = %v, want >= 2", got)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.GetX509SVID(); err != nil {
		t.Errorf("SVID gone after Close: %v", err)
	}
}

func TestDevSourceRefusesForeignID(t *testing.T) {
	ca := newTestCA(t, tdExample)
	if _, err := NewDevSource(ca, spiffeid.RequireFromString("spiffe://other.org/x"), 0, nil, nil); err == nil {
		t.Fatal("dev source for another trust domain")
	}
	if _, err := NewDevSource(nil, idServer, 0, nil, nil); err == nil {
		t.Fatal("dev source without a CA")
	}
	if _, err := NewDevSource(ca, idServer, MinSVIDTTL/2, nil, nil); err == nil {
		t.Fatal("dev source rotating faster than MinSVIDTTL allows")
	}
}

func TestDevSourceDefaultTTL(t *testing.T) {
	src, err := NewDevSource(newTestCA(t, tdExample), idServer, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, _ := src.GetX509SVID()
	leaf := svid.Certificates[0]
	if d := leaf.NotAfter.Sub(leaf.NotBefore) - clockSkew; d < DefaultSVIDTTL-time.Second || d > DefaultSVIDTTL {
		t.Errorf("TTL %s, want %s", d, DefaultSVIDTTL)
	}
}
