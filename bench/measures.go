package bench

import (
	"context"
	"fmt"
	"time"
)

// measures lists the run's tables in the order they run and print.
func (r *runner) measures() []measure {
	o := r.opts
	// The HTTP/2 relay variant differs from meshproxy in the gRPC measure
	// only: HTTP/1 always goes through meshproxy's own relay.
	all := o.Contenders
	base := only(all, ContenderDirect, ContenderGoTLS, ContenderStunnel, ContenderHAProxy, ContenderMeshproxy)
	proxies := only(all, ContenderGoTLS, ContenderStunnel, ContenderHAProxy, ContenderMeshproxy)
	var ms []measure

	for _, streams := range o.BulkStreams {
		noun := "streams"
		if streams == 1 {
			noun = "stream"
		}
		ms = append(ms, measure{
			table: NewTable(fmt.Sprintf("bulk-%d", streams), fmt.Sprintf("Bulk throughput, %d %s (opaque TCP)", streams, noun),
				fmt.Sprintf("%d MiB per run to a sink that confirms the count; time ends at the confirmation. "+
					"CPU is user+system seconds of both proxy processes per GiB carried (/proc/PID/stat).", o.BulkBytes>>20),
				Metric{Key: "mbps", Title: "MB/s", Better: HigherIsBetter, Ratio: true},
				Metric{Key: "cpu_per_gib", Title: "CPU s/GiB", Better: LowerIsBetter, Ratio: true}),
			contenders: base,
			timeout:    3 * time.Minute,
			run: func(ctx context.Context, inst *Instance) (map[string]float64, error) {
				return measureBulk(ctx, inst, streams, o.BulkBytes)
			},
		})
	}
	ms = append(ms, measure{
		table: NewTable("ping-pong", fmt.Sprintf("Ping-pong, %d-byte messages over %d connections (opaque TCP)", pingPongSize, o.PingPongConns),
			"Each connection sends a message and waits for the echo, as fast as it can (closed loop).",
			Metric{Key: "ops", Title: "round trips/s", Better: HigherIsBetter, Ratio: true},
			Metric{Key: "p50_us", Title: "p50 µs", Better: LowerIsBetter},
			Metric{Key: "p99_us", Title: "p99 µs", Better: LowerIsBetter, Ratio: true}),
		contenders: base,
		timeout:    o.PingPongTime + time.Minute,
		run: func(ctx context.Context, inst *Instance) (map[string]float64, error) {
			return measurePingPong(ctx, inst, o.PingPongConns, o.PingPongTime)
		},
	})
	for _, rate := range o.HTTPRates {
		ms = append(ms, measure{
			table: NewTable(fmt.Sprintf("http-%.0f", rate), fmt.Sprintf("HTTP/1.1 latency at %.0f requests/s over %d keep-alive connections", rate, o.HTTPConns),
				"Fixed-rate schedule; latency counts from each request's intended send time, so stalls are not hidden (no coordinated omission). "+
					"HDR histogram per repetition. Before it, each connection sends one request in turn, then the schedule runs unrecorded for the warm-up: a proxy that pools its upstream connections makes them then, as a TCP tunnel makes its connections when the client connects.",
				Metric{Key: "p50_us", Title: "p50 µs", Better: LowerIsBetter, Added: true},
				Metric{Key: "p99_us", Title: "p99 µs", Better: LowerIsBetter, Added: true},
				Metric{Key: "p999_us", Title: "p99.9 µs", Better: LowerIsBetter, Added: true},
				Metric{Key: "achieved", Title: "achieved rps", Better: HigherIsBetter}),
			contenders: base,
			timeout:    o.HTTPTime + time.Minute,
			run: func(ctx context.Context, inst *Instance) (map[string]float64, error) {
				return measureHTTP(ctx, inst, rate, o.HTTPConns, o.HTTPTime)
			},
		})
	}
	ms = append(ms, measure{
		table: NewTable("grpc", fmt.Sprintf("gRPC unary, %d concurrent callers on one connection", o.GRPCCallers),
			"grpc-go client and server, 64-byte messages, closed loop. meshproxy against the limit and the Go TLS limit "+
				"(the OpenSSL peers would carry it as opaque TCP, like the other TCP rows).",
			Metric{Key: "rps", Title: "calls/s", Better: HigherIsBetter, Ratio: true},
			Metric{Key: "p50_us", Title: "p50 µs", Better: LowerIsBetter},
			Metric{Key: "p99_us", Title: "p99 µs", Better: LowerIsBetter, Ratio: true}),
		contenders: only(all, ContenderDirect, ContenderGoTLS, ContenderMeshproxy, ContenderMeshproxyNetHTTP2),
		timeout:    o.GRPCTime + time.Minute,
		run: func(ctx context.Context, inst *Instance) (map[string]float64, error) {
			return measureGRPC(ctx, inst, o.GRPCCallers, o.GRPCTime)
		},
	})
	ms = append(ms, measure{
		table: NewTable("new-conns", fmt.Sprintf("New connections per second, %d workers", o.ConnWorkers),
			"Each connection: connect through the pair (an mTLS handshake between the proxies, resumed where the stack resumes), one 64-byte round trip, close.",
			Metric{Key: "conns", Title: "conns/s", Better: HigherIsBetter, Ratio: true},
			Metric{Key: "p99_us", Title: "p99 µs", Better: LowerIsBetter}),
		contenders: base,
		timeout:    o.ConnTime + time.Minute,
		run: func(ctx context.Context, inst *Instance) (map[string]float64, error) {
			return measureConnRate(ctx, inst, o.ConnWorkers, o.ConnTime)
		},
	})
	ms = append(ms, measure{
		table: NewTable("memory", fmt.Sprintf("Memory: idle, and per idle proxied connection (%d connections)", o.IdleConns),
			"RSS (VmRSS) of both proxy processes together, on a fresh instance each repetition: idle after start, "+
				"then (RSS with the connections open − idle RSS) / connections.",
			Metric{Key: "idle_mib", Title: "idle RSS MiB (pair)", Better: LowerIsBetter, Ratio: true},
			Metric{Key: "idle_max_mib", Title: "idle RSS MiB (larger process)", Better: LowerIsBetter},
			Metric{Key: "per_conn_kib", Title: "KiB per connection (pair)", Better: LowerIsBetter, Ratio: true}),
		contenders: proxies,
		timeout:    3 * time.Minute,
		fresh:      true,
		run: func(ctx context.Context, inst *Instance) (map[string]float64, error) {
			return measureMemory(ctx, inst, o.IdleConns, o.IdleWorkers)
		},
	})
	return ms
}
