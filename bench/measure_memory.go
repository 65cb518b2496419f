package bench

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"time"
)

// memorySettle is how long a proxy is left alone before its RSS is read.
const memorySettle = time.Second

// measureMemory reads the RSS of a fresh instance's proxies idle, then opens
// n connections through them to the echo app (each proven end to end by a
// 1-byte round trip), leaves them idle, and reports the idle RSS of the pair
// and of its larger process in MiB, and the RSS added per idle connection
// in KiB (both processes together).
func measureMemory(ctx context.Context, inst *Instance, n, workers int) (map[string]float64, error) {
	pids := inst.PIDs()
	if len(pids) == 0 {
		return nil, fmt.Errorf("no proxy processes to measure")
	}
	time.Sleep(memorySettle)
	idle, err := sumPIDs(pids, ProcessRSS)
	if err != nil {
		return nil, err
	}
	var idleMax float64
	for _, pid := range pids {
		rss, err := ProcessRSS(pid)
		if err != nil {
			return nil, err
		}
		idleMax = max(idleMax, rss)
	}
	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n)
		dones []func()
		wg    sync.WaitGroup
		errs  = make([]error, workers)
	)
	defer func() {
		for _, done := range dones {
			done()
		}
	}()
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for i := range workers {
		wg.Go(func() {
			one := []byte{1}
			in := make([]byte, 1)
			for range next {
				c, done, err := dial(ctx, inst.Front.Echo)
				if err != nil {
					errs[i] = err
					return
				}
				mu.Lock()
				conns = append(conns, c)
				dones = append(dones, done)
				mu.Unlock()
				if err := roundTrip(c, one, in); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("after %d connections: %w", len(conns), err)
		}
	}
	time.Sleep(memorySettle)
	loaded, err := sumPIDs(pids, ProcessRSS)
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"idle_mib":     idle / math.Exp2(20),
		"idle_max_mib": idleMax / math.Exp2(20),
		"per_conn_kib": (loaded - idle) / float64(n) / 1024,
	}, nil
}
