package duplex

import "sync"

// DefaultBufferSize is the buffer size NewBufferPool uses when given a size of
// zero or less: 32 KiB, room for two full TLS records, like io.Copy's own.
const DefaultBufferSize = 32 << 10

// BufferPool recycles the copy buffers of connections that cannot splice
// (those with a TLS leg), so that a busy proxy does not allocate and collect
// two buffers per connection. Share one pool between all Joins. A nil
// *BufferPool is valid: it allocates a fresh buffer each time.
type BufferPool struct {
	size int
	pool sync.Pool
}

// NewBufferPool returns a pool of size-byte buffers (DefaultBufferSize if size
// is zero or less).
func NewBufferPool(size int) *BufferPool {
	if size <= 0 {
		size = DefaultBufferSize
	}
	p := &BufferPool{size: size}
	p.pool.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return p
}

// Get returns a buffer of the pool's size. Return it with Put when done.
func (p *BufferPool) Get() *[]byte {
	if p == nil {
		b := make([]byte, DefaultBufferSize)
		return &b
	}
	return p.pool.Get().(*[]byte)
}

// Put returns a buffer obtained from Get to the pool. Buffers of another size
// are dropped.
func (p *BufferPool) Put(b *[]byte) {
	if p == nil || b == nil || len(*b) != p.size {
		return
	}
	p.pool.Put(b)
}
