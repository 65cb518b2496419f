package metrics

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/seed722d2a70/meshproxy/internal/tcptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testLabels = Labels{
	Direction:  DirectionInbound,
	Peer:       PeerSrc,
	TLS:        TLSTrue,
	ClientID:   "spiffe://example.org/client",
	ServerID:   "",
	TargetAddr: "127.0.0.1:4143",
}

func newTransport(t *testing.T) (*Transport, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	tr, err := NewTransport(reg)
	if err != nil {
		t.Fatal(err)
	}
	return tr, reg
}

// counts is a snapshot of one connection's series.
type counts struct {
	openTotal, open, read, written float64
	closes                         map[string]float64 // by errno
	durations                      uint64
}

func snapshot(t *testing.T, tr *Transport, l Labels) counts {
	t.Helper()
	vals := l.values()
	c := counts{
		openTotal: testutil.ToFloat64(tr.openTotal.WithLabelValues(vals...)),
		open:      testutil.ToFloat64(tr.open.WithLabelValues(vals...)),
		read:      testutil.ToFloat64(tr.readBytes.WithLabelValues(vals...)),
		written:   testutil.ToFloat64(tr.writeBytes.WithLabelValues(vals...)),
		closes:    map[string]float64{},
	}
	for _, errno := range []string{"", "ECONNRESET", "EPIPE"} {
		if v := testutil.ToFloat64(tr.closeTotal.WithLabelValues(l.values(errno)...)); v != 0 {
			c.closes[errno] = v
		}
	}
	var m dto.Metric
	if err := tr.duration.WithLabelValues(vals...).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	c.durations = m.GetHistogram().GetSampleCount()
	return c
}

func TestTrackCountsAConnection(t *testing.T) {
	tr, _ := newTransport(t)
	client, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)

	if got := snapshot(t, tr, testLabels); got.openTotal != 1 || got.open != 1 || got.durations != 0 || len(got.closes) != 0 {
		t.Fatalf("after Track: %+v, want one open connection and no close", got)
	}
	if _, err := client.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want EOF", n, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, tr, testLabels)
	want := counts{openTotal: 1, open: 0, read: 1000, written: 300, closes: map[string]float64{"": 1}, durations: 1}
	if got.openTotal != want.openTotal || got.open != want.open || got.read != want.read || got.written != want.written ||
		got.durations != want.durations || len(got.closes) != 1 || got.closes[""] != 1 {
		t.Errorf("after Close: %+v, want %+v", got, want)
	}
}

func TestCloseIsRecordedOnce(t *testing.T) {
	tr, _ := newTransport(t)
	_, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err == nil {
		t.Error("second Close returned nil, want the wrapped conn's error")
	}
	got := snapshot(t, tr, testLabels)
	if got.open != 0 || got.closes[""] != 1 || got.durations != 1 {
		t.Errorf("after two Closes: %+v, want gauge 0, one close, one duration", got)
	}
}

func TestCloseRecordsErrno(t *testing.T) {
	tr, _ := newTransport(t)
	client, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)
	if err := client.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	_ = client.Close() // sends RST
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after reset = %v, want ECONNRESET", err)
	}
	// Later errors do not replace the first.
	_, _ = c.Write([]byte("x"))
	_ = c.Close()
	got := snapshot(t, tr, testLabels)
	if len(got.closes) != 1 || got.closes["ECONNRESET"] != 1 {
		t.Errorf("closes = %v, want one with errno ECONNRESET", got.closes)
	}
}

func TestNonOSErrorsLeaveErrnoEmpty(t *testing.T) {
	tr, _ := newTransport(t)
	_, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v, want os.ErrDeadlineExceeded (deadlines forwarded)", err)
	}
	_ = c.Close()
	if got := snapshot(t, tr, testLabels); got.closes[""] != 1 {
		t.Errorf("closes = %v, want one with an empty errno", got.closes)
	}
}

func TestTrackForwardsHalfClose(t *testing.T) {
	tr, _ := newTransport(t)
	client, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)
	defer c.Close()

	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
		t.Fatalf("client read %q, %v; want EOF after CloseWrite", b, err)
	}
	if _, err := client.Write([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len("still open"))); err != nil {
		t.Fatalf("reading after CloseWrite: %v", err)
	}
	if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after CloseRead = %d, %v; want EOF", n, err)
	}
}

// bare hides every method of a conn beyond net.Conn.
type bare struct{ net.Conn }

func TestTrackHalfCloseUnsupported(t *testing.T) {
	tr, _ := newTransport(t)
	_, server := tcptest.Pair(t)
	c := tr.Track(bare{server}, testLabels).(*Conn)
	defer c.Close()
	if err := c.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseWrite = %v, want errors.ErrUnsupported", err)
	}
	if err := c.CloseRead(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("CloseRead = %v, want errors.ErrUnsupported", err)
	}
}

// TestCopyBetweenTrackedConns copies with io.Copy between two tracked TCP
// conns, the path that reaches splice through ReadFrom and WriteTo, and
// between tracked conns whose wrapped conns lack those methods.
func TestCopyBetweenTrackedConns(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		name := "tcp"
		if wrapped {
			name = "without ReadFrom and WriteTo"
		}
		t.Run(name, func(t *testing.T) {
			tr, _ := newTransport(t)
			client, srcEnd := tcptest.Pair(t)
			dstEnd, server := tcptest.Pair(t)
			srcLabels, dstLabels := testLabels, testLabels
			dstLabels.Peer, dstLabels.TargetAddr = PeerDst, server.LocalAddr().String()
			var srcConn, dstConn net.Conn = srcEnd, dstEnd
			if wrapped {
				srcConn, dstConn = bare{srcEnd}, bare{dstEnd}
			}
			src, dst := tr.Track(srcConn, srcLabels), tr.Track(dstConn, dstLabels)

			const size = 300 << 10
			payload := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			sent := make(chan error, 1)
			go func() {
				_, err := client.Write(payload)
				if err == nil {
					err = client.CloseWrite()
				}
				sent <- err
			}()
			copied := make(chan error, 1)
			go func() {
				n, err := io.Copy(dst, src)
				if err == nil && n != size {
					err = errors.New("short copy")
				}
				if err == nil {
					err = dstEnd.CloseWrite() // the wrapper may hide it
				}
				copied <- err
			}()
			_ = server.SetReadDeadline(time.Now().Add(30 * time.Second))
			got, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if err := <-copied; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("server got %d bytes that differ from the %d sent", len(got), len(payload))
			}
			if r := snapshot(t, tr, srcLabels).read; r != size {
				t.Errorf("src read bytes = %v, want %d", r, size)
			}
			if w := snapshot(t, tr, dstLabels).written; w != size {
				t.Errorf("dst written bytes = %v, want %d", w, size)
			}
			_ = src.Close()
			_ = dst.Close()
		})
	}
}

func TestTrackPassesAddrsAndUnwrap(t *testing.T) {
	tr, _ := newTransport(t)
	_, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)
	defer c.Close()
	if c.LocalAddr().String() != server.LocalAddr().String() || c.RemoteAddr().String() != server.RemoteAddr().String() {
		t.Errorf("addresses = %v, %v; want %v, %v", c.LocalAddr(), c.RemoteAddr(), server.LocalAddr(), server.RemoteAddr())
	}
	if u := c.(interface{ Unwrap() net.Conn }).Unwrap(); u != net.Conn(server) {
		t.Errorf("Unwrap = %v, want the tracked conn", u)
	}
	for _, set := range []func(time.Time) error{c.SetDeadline, c.SetWriteDeadline, c.SetReadDeadline} {
		if err := set(time.Now().Add(time.Hour)); err != nil {
			t.Error(err)
		}
	}
}

func TestNilTransport(t *testing.T) {
	var tr *Transport
	_, server := tcptest.Pair(t)
	if got := tr.Track(server, testLabels); got != net.Conn(server) {
		t.Errorf("nil Transport's Track returned %T, want the conn itself", got)
	}
}

func TestNewTransportRegisters(t *testing.T) {
	tr, reg := newTransport(t)
	_, server := tcptest.Pair(t)
	c := tr.Track(server, testLabels)
	_ = c.Close()

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			want := map[string]string{
				"direction": "inbound", "peer": "src", "tls": "true", "client_id": "spiffe://example.org/client",
				"server_id": "", "target_addr": "127.0.0.1:4143", "dst_service": "", "dst_namespace": "", "dst_pod": "",
			}
			if f.GetName() == "tcp_close_total" {
				want["errno"] = ""
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s label %s = %q, want %q", f.GetName(), k, got[k], v)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%s labels = %v, want %v", f.GetName(), got, want)
			}
		}
	}
	sort.Strings(names)
	want := []string{"tcp_close_total", "tcp_connection_duration_ms", "tcp_open_connections", "tcp_open_total",
		"tcp_read_bytes_total", "tcp_write_bytes_total"}
	if len(names) != len(want) {
		t.Fatalf("registered %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("registered %v, want %v", names, want)
			break
		}
	}

	if _, err := NewTransport(reg); err == nil {
		t.Error("second NewTransport on the same registry succeeded, want an error")
	}
	if after, err := reg.Gather(); err != nil || len(after) != len(families) {
		t.Errorf("a failed NewTransport changed the registry: %d families, %v", len(after), err)
	}
}

func TestNewTransportNilRegisterer(t *testing.T) {
	tr, err := NewTransport(nil)
	if err != nil || tr == nil {
		t.Fatalf("NewTransport(nil) = %v, %v; want a usable Transport", tr, err)
	}
}

func TestErrnoName(t *testing.T) {
	tests := map[syscall.Errno]string{
		0:                    "",
		syscall.ECONNRESET:   "ECONNRESET",
		syscall.ETIMEDOUT:    "ETIMEDOUT",
		syscall.EPIPE:        "EPIPE",
		syscall.ECONNREFUSED: "ECONNREFUSED",
		syscall.Errno(4000):  "errno_4000",
	}
	for e, want := range tests {
		if got := errnoName(e); got != want {
			t.Errorf("errnoName(%d) = %q, want %q", e, got, want)
		}
	}
}

// target_addr takes at most MaxTargetAddrs values; connections to any
// further destination are counted under OtherValue, close included.
func TestTargetAddrBounded(t *testing.T) {
	tr, _ := newTransport(t)
	client, server := tcptest.Pair(t)
	defer client.Close()
	l := testLabels
	for i := range MaxTargetAddrs {
		l.TargetAddr = "10.0.0.1:" + strconv.Itoa(i+1)
		if got := tr.targets.Value(l.TargetAddr); got != l.TargetAddr {
			t.Fatalf("target %d of %d labelled %q", i+1, MaxTargetAddrs, got)
		}
	}
	l.TargetAddr = "192.0.2.1:443"
	c := tr.Track(server, l)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	other := l
	other.TargetAddr = OtherValue
	if got := snapshot(t, tr, other); got.openTotal != 1 || got.closes[""] != 1 {
		t.Errorf("one destination too many: %+v under target_addr=%q, want one open and one close", got, OtherValue)
	}
	if got := snapshot(t, tr, l); got.openTotal != 0 {
		t.Errorf("the destination over the bound got its own series: %+v", got)
	}
}
