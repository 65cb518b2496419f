package inbound

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

// fakeConn is a connection from a given source that records its closing.
type fakeConn struct {
	net.Conn
	from   *net.TCPAddr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.from }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

func conn(ip string) *fakeConn {
	return &fakeConn{from: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}
}

func TestPendingLimiter(t *testing.T) {
	type step struct {
		from    string // admit a connection from this source
		release int    // or release the connection admitted at this step (1-based)
	}
	tests := []struct {
		name           string
		max, perSource int
		steps          []step
		wantPending    int
		wantClosed     []int // steps whose connections were reset
		wantShed       map[string]float64
	}{
		{
			name: "under the caps", max: 3, perSource: 3,
			steps:       []step{{from: "10.0.0.1"}, {from: "10.0.0.2"}, {from: "10.0.0.1"}},
			wantPending: 3,
		},
		{
			name: "per source: the newcomer is reset", max: 10, perSource: 2,
			steps:       []step{{from: "10.0.0.1"}, {from: "10.0.0.1"}, {from: "10.0.0.1"}, {from: "10.0.0.2"}},
			wantPending: 3, wantClosed: []int{3}, wantShed: map[string]float64{"source_limit": 1},
		},
		{
			name: "IPv4-mapped IPv6 is the same source", max: 10, perSource: 1,
			steps:       []step{{from: "10.0.0.1"}, {from: "::ffff:10.0.0.1"}},
			wantPending: 1, wantClosed: []int{2}, wantShed: map[string]float64{"source_limit": 1},
		},
		{
			name: "in total: the oldest is reset", max: 2, perSource: 5,
			steps:       []step{{from: "10.0.0.1"}, {from: "10.0.0.2"}, {from: "10.0.0.3"}, {from: "10.0.0.4"}},
			wantPending: 2, wantClosed: []int{1, 2}, wantShed: map[string]float64{"oldest": 2},
		},
		{
			name: "authenticated connections are not counted", max: 2, perSource: 1,
			steps: []step{
				{from: "10.0.0.1"}, {release: 1}, // authenticated
				{from: "10.0.0.1"}, {from: "10.0.0.2"}, {release: 3}, {release: 4},
				{from: "10.0.0.1"}, {from: "10.0.0.2"},
			},
			wantPending: 2,
		},
		{
			name: "a released connection is never shed", max: 2, perSource: 5,
			steps: []step{
				{from: "10.0.0.1"}, {from: "10.0.0.2"}, {release: 1},
				{from: "10.0.0.3"}, {from: "10.0.0.4"},
			},
			wantPending: 2, wantClosed: []int{2}, wantShed: map[string]float64{"oldest": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			l := newPendingLimiter(tt.max, tt.perSource, m, zap.NewNop())
			l.closeConn = func(c net.Conn) { _ = c.Close() }
			conns := map[int]*fakeConn{}
			admitted := map[int]*pendingConn{}
			for i, s := range tt.steps {
				if s.from == "" {
					if shed := admitted[s.release].release(); shed {
						t.Fatalf("step %d: released connection %d had been shed", i+1, s.release)
					}
					continue
				}
				c := conn(s.from)
				conns[i+1] = c
				if pc, ok := l.admit(c).(*pendingConn); ok {
					admitted[i+1] = pc
				}
			}
			if got := l.count(); got != tt.wantPending {
				t.Errorf("pending = %d, want %d", got, tt.wantPending)
			}
			if got := testutil.ToFloat64(m.pending); got != float64(tt.wantPending) {
				t.Errorf("inbound_pending_connections = %v, want %d", got, tt.wantPending)
			}
			want := map[int]bool{}
			for _, i := range tt.wantClosed {
				want[i] = true
			}
			for i, c := range conns {
				if c.closed != want[i] {
					t.Errorf("connection of step %d closed = %v, want %v", i, c.closed, want[i])
				}
			}
			for _, reason := range []string{"source_limit", "oldest"} {
				if got := testutil.ToFloat64(m.shed.WithLabelValues(reason)); got != tt.wantShed[reason] {
					t.Errorf("shed{%s} = %v, want %v", reason, got, tt.wantShed[reason])
				}
			}
			// Every connection ends (closing or authenticating) and the
			// count returns to zero, shed ones included.
			for _, pc := range admitted {
				_ = pc.Close()
			}
			if l.count() != 0 || len(l.bySource) != 0 || l.oldest != nil || l.newest != nil {
				t.Errorf("after every close: %d pending, %d sources tracked", l.count(), len(l.bySource))
			}
			if got := testutil.ToFloat64(m.pending); got != 0 {
				t.Errorf("inbound_pending_connections = %v after every close", got)
			}
		})
	}
}

// A shed connection's handler learns it was shed, not refused.
func TestPendingShedIsReported(t *testing.T) {
	l := newPendingLimiter(1, 1, nil, zap.NewNop())
	l.closeConn = func(c net.Conn) { _ = c.Close() }
	first := l.admit(conn("10.0.0.1")).(*pendingConn)
	second := l.admit(conn("10.0.0.2")).(*pendingConn)
	if !first.release() {
		t.Error("the shed connection's release() = false, want true")
	}
	if second.release() {
		t.Error("the newer connection's release() = true, want false")
	}
}
