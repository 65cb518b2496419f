package identity

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"slices"
)

// A resumed TLS handshake carries no certificates: each side sees the
// peer's certificate from the full handshake that began the session. After
// a rotation the peer would go on seeing the old SVID (an old SPIFFE ID,
// soon an expired certificate), and after a bundle change the old chain
// would be checked against the new bundle and fail. So sessions are resumed
// only within one epoch of the Source, which ends at its next change (SVID
// or bundles; see epoch): the server refuses tickets it issued in an
// earlier epoch, and the client drops sessions stored in an earlier epoch
// of its own.
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
		if !hasTag(ss.Extra, epochTag(current())) {
			return nil, nil // not resumed: a full handshake follows
		}
		return ss, nil
	}
}

// epochCache is a client session cache whose sessions belong to the epoch
// they were stored in; in a later epoch they are not found. The epoch is
// recorded in the session itself, not in its key: keyed by epoch, every
// rotation (every half SVID lifetime) left one dead session per peer in
// the cache, each with the peer's parsed certificate chain, until the
// LRU's 1024 entries were full (issue #18: the client proxy of a soak with
// 60 s SVIDs grew by about 4 MiB an hour). Now a peer has one entry, which
// a rotation's first handshake replaces.
type epochCache struct {
	tls.ClientSessionCache
	current func() uint64
}

func (c epochCache) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := c.ClientSessionCache.Get(key)
	if !ok || cs == nil {
		return nil, false
	}
	if _, ss, err := cs.ResumptionState(); err != nil || ss == nil || !hasTag(ss.Extra, epochTag(c.current())) {
		c.ClientSessionCache.Put(key, nil) // of an earlier epoch: drop it
		return nil, false
	}
	return cs, true
}

func (c epochCache) Put(key string, cs *tls.ClientSessionState) {
	if cs == nil {
		c.ClientSessionCache.Put(key, nil)
		return
	}
	ticket, ss, err := cs.ResumptionState()
	if err != nil || ss == nil {
		return
	}
	ss.Extra = append(ss.Extra, epochTag(c.current()))
	tagged, err := tls.NewResumptionState(ticket, ss)
	if err != nil {
		return
	}
	c.ClientSessionCache.Put(key, tagged)
}

// hasTag reports whether extra holds tag.
func hasTag(extra [][]byte, tag []byte) bool {
	return slices.ContainsFunc(extra, func(b []byte) bool { return bytes.Equal(b, tag) })
}
