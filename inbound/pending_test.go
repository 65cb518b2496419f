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
		verify  int    // or move it to the header stage
		heard   int    // or record that its peer has sent a byte
		serve   int    // or count it as an unmeshed HTTP connection
	}
	tests := []struct {
		name           string
		max, perSource int
		maxUnmeshed    int
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
			name: "in total: silent connections are shed before ones whose peer spoke", max: 3, perSource: 5,
			steps: []step{
				{from: "10.0.0.1"}, {heard: 1}, {from: "10.0.0.2"}, {from: "10.0.0.3"},
				{from: "10.0.0.4"}, {from: "10.0.0.5"}, {from: "10.0.0.6"},
			},
			// 1 is the oldest, but its peer spoke: the silent 3, 4 and 5 go.
			wantPending: 3, wantClosed: []int{3, 4, 5}, wantShed: map[string]float64{"oldest": 3},
		},
		{
			name: "IPv6 sources are grouped by /64", max: 10, perSource: 2,
			steps: []step{
				{from: "2001:db8:0:1::1"}, {from: "2001:db8:0:1::2"}, {from: "2001:db8:0:1:ffff::3"},
				{from: "2001:db8:0:2::1"},
			},
			wantPending: 3, wantClosed: []int{3}, wantShed: map[string]float64{"source_limit": 1},
		},
		{
			name: "a verified connection waiting for its header is not shed for strangers", max: 4, perSource: 4,
			steps: []step{
				{from: "10.0.0.1"}, {verify: 1},
				{from: "10.0.0.2"}, {from: "10.0.0.2"}, {from: "10.0.0.3"}, {from: "10.0.0.3"}, {from: "10.0.0.4"},
			},
			// Four in the handshake stage, one in the header stage.
			wantPending: 5, wantClosed: []int{3}, wantShed: map[string]float64{"oldest": 1},
		},
		{
			name: "the header stage has its own budget, oldest shed", max: 16, perSource: 16,
			steps: []step{
				{from: "10.0.0.1"}, {verify: 1}, {from: "10.0.0.2"}, {verify: 3},
				{from: "10.0.0.3"}, {verify: 5},
			},
			// headerBudget(16) = 2.
			wantPending: 2, wantClosed: []int{1}, wantShed: map[string]float64{"header_oldest": 1},
		},
		{
			name: "the header stage's per-source cap refuses the newcomer", max: 8, perSource: 1,
			steps: []step{
				{from: "10.0.0.1"}, {verify: 1}, {from: "10.0.0.1"}, {verify: 3},
			},
			wantPending: 1, wantClosed: []int{3}, wantShed: map[string]float64{"header_source_limit": 1},
		},
		{
			name: "unmeshed HTTP connections: capped, newcomer refused, not pending", max: 8, perSource: 8, maxUnmeshed: 2,
			steps: []step{
				{from: "10.0.0.1"}, {serve: 1}, {from: "10.0.0.2"}, {serve: 3},
				{from: "10.0.0.3"}, {serve: 5}, {from: "10.0.0.4"},
			},
			wantPending: 1, wantClosed: []int{5}, wantShed: map[string]float64{"unmeshed_limit": 1},
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
			l := newPendingLimiter(limits{
				maxPending: tt.max, perSource: tt.perSource, maxUnmeshedHTTP: tt.maxUnmeshed, unmeshedHTTPPerSource: tt.maxUnmeshed,
			}, m, zap.NewNop())
			l.closeConn = func(c net.Conn) { _ = c.Close() }
			conns := map[int]*fakeConn{}
			admitted := map[int]*pendingConn{}
			for i, s := range tt.steps {
				switch {
				case s.release != 0:
					if shed := admitted[s.release].release(); shed {
						t.Fatalf("step %d: released connection %d had been shed", i+1, s.release)
					}
					continue
				case s.heard != 0:
					admitted[s.heard].heard()
					continue
				case s.verify != 0:
					_ = admitted[s.verify].verified()
					continue
				case s.serve != 0:
					_ = admitted[s.serve].servingUnmeshed()
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
			for _, reason := range []string{"source_limit", "oldest", "header_source_limit", "header_oldest", "unmeshed_limit", "unmeshed_source_limit"} {
				if got := testutil.ToFloat64(m.shed.WithLabelValues(reason)); got != tt.wantShed[reason] {
					t.Errorf("shed{%s} = %v, want %v", reason, got, tt.wantShed[reason])
				}
			}
			// Every connection ends (closing or authenticating) and the
			// count returns to zero, shed ones included.
			for _, pc := range admitted {
				_ = pc.Close()
			}
			for _, c := range []*pendingClass{&l.handshake, &l.header, &l.unmesh} {
				if c.n != 0 || len(c.bySource) != 0 || c.lists[0].l.Len() != 0 || c.lists[1].l.Len() != 0 {
					t.Errorf("after every close: %d counted, %d sources tracked", c.n, len(c.bySource))
				}
			}
			if got := testutil.ToFloat64(m.pending); got != 0 {
				t.Errorf("inbound_pending_connections = %v after every close", got)
			}
			if got := testutil.ToFloat64(m.unmeshed); got != 0 {
				t.Errorf("inbound_unmeshed_http_connections = %v after every close", got)
			}
		})
	}
}

// A shed connection's handler learns it was shed, not refused.
func TestPendingShedIsReported(t *testing.T) {
	l := newPendingLimiter(limits{maxPending: 1, perSource: 1}, nil, zap.NewNop())
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
