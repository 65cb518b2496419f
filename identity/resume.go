package identity

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"slices"
	"strconv"
)

// A resumed TLS handshake carries no certificates: each side sees the
// peer's certificate from the full handshake that began the session. After
// a rotation the peer would go on seeing the old SVID (an old SPIFFE ID,
// soon an expired certificate), and after a bundle change the old chain
// would be checked against the new bundle and fail. So sessions are resumed
// only within one epoch of the Source, which ends at its next change (SVID
// or bundles; see epoch): the server refuses tickets it issued in an
// earlier epoch, and the client keys its session cache by its own epoch.
// The first handshake with each peer after a change is then a full one.

// epoch returns a function that tells src's current epoch: the number of
// its changes so far. Every source of this package counts them; any other
// stays in one epoch.
func epoch(src Source) func() uint64 {
	if g, ok := src.(interface{ generation() uint64 }); ok {
		return g.generation
	}
	return func() uint64 { return 0 }
}

// epochTag is the session ticket's record of the epoch it was issued in.
func epochTag(n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("meshproxy-epoch:"), n)
}

// resumeWithinEpoch makes the server configuration cfg issue session
// tickets marked with the current epoch and refuse, with a full handshake
// rather than an error, tickets from any other. The tickets are sealed
// with cfg's own keys, also for clones of cfg: set session ticket keys on
// cfg itself, never on a clone.
func resumeWithinEpoch(cfg *tls.Config, current func() uint64) {
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, epochTag(current()))
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(ticket []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(ticket, cs)
		if ss == nil || err != nil {
			return nil, err
		}
		tag := epochTag(current())
		if !slices.ContainsFunc(ss.Extra, func(b []byte) bool { return bytes.Equal(b, tag) }) {
			return nil, nil // not resumed: a full handshake follows
		}
		return ss, nil
	}
}

// epochCache is a client session cache whose sessions belong to the epoch
// they were stored in; in a later epoch they are not found.
type epochCache struct {
	tls.ClientSessionCache
	current func() uint64
}

func (c epochCache) Get(key string) (*tls.ClientSessionState, bool) {
	return c.ClientSessionCache.Get(c.key(key))
}

func (c epochCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(c.key(key), cs)
}

func (c epochCache) key(k string) string {
	return k + "\x00" + strconv.FormatUint(c.current(), 10)
}
