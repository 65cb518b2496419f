package detect

import (
	"slices"
	"sync"
)

// interner keeps the server names and ALPN lists of the ClientHellos a
// Detector has parsed, so that one seen before is reported without
// allocating: a proxy meets the same few names over and over. It is
// bounded, so that clients sending ever new names cannot grow it; past the
// bounds new values are allocated per detection, as with no interner. The
// zero interner is ready; a nil one interns nothing.
type interner struct {
	mu    sync.RWMutex
	names map[string]string
	lists map[string][]string // keyed by the raw protocol_name_list
}

// Bounds of an interner: a few hundred KiB at most.
const (
	maxInternedNames   = 256
	maxInternedLists   = 64
	maxInternedListLen = 256 // bytes of a protocol_name_list
)

// hostName returns the normalized host name h, or "" when h is none.
func (in *interner) hostName(h cursor) string {
	var buf [maxHostNameLen]byte
	lower := normalizeHostName(&buf, h)
	if lower == nil {
		return ""
	}
	if in == nil {
		return string(lower)
	}
	in.mu.RLock()
	name, ok := in.names[string(lower)] // the conversion does not allocate
	in.mu.RUnlock()
	if ok {
		return name
	}
	name = string(lower)
	in.mu.Lock()
	if len(in.names) < maxInternedNames {
		if in.names == nil {
			in.names = make(map[string]string)
		}
		in.names[name] = name
	}
	in.mu.Unlock()
	return name
}

// protocols returns the names of the checked protocol_name_list list, nil
// when there is none. An interned list is shared by the Results reporting
// it; its capacity is its length, so that appending to it copies.
func (in *interner) protocols(list cursor) []string {
	if len(list) == 0 {
		return nil
	}
	if in == nil || len(list) > maxInternedListLen {
		return protocolNames(list)
	}
	in.mu.RLock()
	names, ok := in.lists[string(list)]
	in.mu.RUnlock()
	if ok {
		return names
	}
	names = slices.Clip(protocolNames(list))
	in.mu.Lock()
	if len(in.lists) < maxInternedLists {
		if in.lists == nil {
			in.lists = make(map[string][]string)
		}
		in.lists[string(list)] = names
	}
	in.mu.Unlock()
	return names
}
