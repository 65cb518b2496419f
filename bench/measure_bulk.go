package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// bulkWriteSize is the size of each write of a bulk stream.
const bulkWriteSize = 256 << 10

// measureBulk sends total bytes to the sink over streams parallel
// connections (total/streams each) and reports the throughput in MB/s and,
// for contenders with proxy processes, their CPU seconds per GiB carried.
// The time runs until the sink has confirmed every byte.
func measureBulk(ctx context.Context, inst *Instance, streams int, total int64) (map[string]float64, error) {
	per := total / int64(streams)
	cpu0, err := sumPIDs(inst.PIDs(), ProcessCPU)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() { errs[i] = sendBulk(ctx, inst.Front.Sink, per) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	cpu1, err := sumPIDs(inst.PIDs(), ProcessCPU)
	if err != nil {
		return nil, err
	}
	moved := float64(per * int64(streams))
	out := map[string]float64{"mbps": moved / elapsed.Seconds() / 1e6}
	if len(inst.procs) > 0 {
		out["cpu_per_gib"] = (cpu1 - cpu0) / (moved / math.Exp2(30))
	}
	return out, nil
}

// sendBulk writes n bytes to a sink, half-closes, and checks the count the
// sink answers.
func sendBulk(ctx context.Context, addr string, n int64) error {
	c, done, err := dial(ctx, addr)
	if err != nil {
		return err
	}
	defer done()
	buf := make([]byte, bulkWriteSize)
	for i := range buf {
		buf[i] = byte(i)
	}
	for left := n; left > 0; {
		m := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:m]); err != nil {
			return fmt.Errorf("bulk write: %w", err)
		}
		left -= m
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("bulk close: %w", err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("bulk: no count from the sink: %w", err)
	}
	if got := binary.BigEndian.Uint64(ack[:]); got != uint64(n) {
		return fmt.Errorf("bulk: sink counted %d bytes, sent %d", got, n)
	}
	return nil
}
