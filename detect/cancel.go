package detect

import (
	"context"
	"net"
	"sync"
	"time"
)

// watchers interrupt blocked detection reads when their context is done, by
// moving the read deadline into the past. A context.AfterFunc per detection
// would cost four allocations and a registration with the parent context;
// instead the detections under one context (a proxy passes its server's
// context to every connection) share one registration, a watchGroup kept
// per Done channel while the context lives. The zero watchers is ready.
type watchers struct {
	mu     sync.Mutex
	groups map[<-chan struct{}]*watchGroup
	nodes  sync.Pool // *watchNode, so that watching allocates nothing
}

// maxWatchGroups bounds the shared groups, for callers that pass a new
// context per connection and never cancel it; past it a detection gets a
// group of its own, stopped when it ends.
const maxWatchGroups = 64

// watchGroup is the detections waiting under one context, a doubly linked
// list of watchNodes guarded by watchers.mu.
type watchGroup struct {
	head   *watchNode
	shared bool        // in watchers.groups, rather than one detection's own
	stop   func() bool // the context.AfterFunc registration
}

// watchNode is one detection's conn in a watchGroup.
type watchNode struct {
	conn       net.Conn
	group      *watchGroup
	prev, next *watchNode
}

// watch arranges for conn's read deadline to move into the past when ctx,
// whose Done channel must not be nil, is done. The node must be handed to
// unwatch before the deadline is cleared.
func (w *watchers) watch(ctx context.Context, conn net.Conn) *watchNode {
	n, _ := w.nodes.Get().(*watchNode)
	if n == nil {
		n = new(watchNode)
	}
	n.conn = conn
	done := ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.groups[done]
	if g == nil {
		g = &watchGroup{}
		if len(w.groups) < maxWatchGroups {
			if w.groups == nil {
				w.groups = make(map[<-chan struct{}]*watchGroup)
			}
			w.groups[done], g.shared = g, true
		}
		// Runs f in a goroutine of its own even when ctx is done already,
		// so never under w.mu.
		g.stop = context.AfterFunc(ctx, func() { w.fire(done, g) })
	}
	n.group, n.prev, n.next = g, nil, g.head
	if g.head != nil {
		g.head.prev = n
	}
	g.head = n
	return n
}

// unwatch ends what watch began: once it returns, ctx being done no longer
// touches the conn, and the node is recycled.
func (w *watchers) unwatch(n *watchNode) {
	w.mu.Lock()
	g := n.group
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		g.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	}
	w.mu.Unlock()
	if !g.shared {
		g.stop()
	}
	*n = watchNode{}
	w.nodes.Put(n)
}

// fire interrupts the reads of g's detections; the group, done with its
// context, leaves the shared ones.
func (w *watchers) fire(done <-chan struct{}, g *watchGroup) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.groups[done] == g {
		delete(w.groups, done)
	}
	for n := g.head; n != nil; n = n.next {
		_ = n.conn.SetReadDeadline(time.Unix(1, 0))
	}
}
