package bench

import (
	"fmt"
	"syscall"
)

// RaiseFileLimit raises this process's open-file limit to want (or to the
// hard limit when it may not raise that), and returns the new soft limit.
// Child processes inherit it: the memory measure holds tens of thousands of
// sockets across the load generator, the proxies and the apps.
func RaiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	raised := syscall.Rlimit{Cur: want, Max: max(want, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		// Not allowed past the hard limit: take what there is.
		raised = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return lim.Cur, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return raised.Cur, nil
}

// connBudget is how many proxied connections fit under an open-file limit
// for a process holding two sockets per connection, with room for the
// listeners, logs and libraries.
func connBudget(fileLimit uint64) int {
	const reserve = 500
	if fileLimit < 2*reserve {
		return int(fileLimit / 4)
	}
	return int((fileLimit - reserve) / 2)
}
