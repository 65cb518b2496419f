package bench

import (
	"fmt"
	"math"
)

// Target is one of meshproxy's performance goals (issue #7). Targets are
// goals to report against, never assertions: the report shows each with
// the measured value and whether it was met.
type Target struct {
	Goal  string `json:"goal"`
	Table string `json:"table"`
	Key   string `json:"key"`
	// Better says which side of the reference meets the goal.
	Better Better `json:"better"`
	// Against, when set, makes the reference Factor × that contender's
	// median; otherwise the reference is Bound.
	Against string  `json:"against,omitempty"`
	Factor  float64 `json:"factor,omitempty"`
	Bound   float64 `json:"bound,omitempty"`
	// AddedVsDirect compares meshproxy's median minus direct's.
	AddedVsDirect bool `json:"added_vs_direct,omitempty"`
}

// TargetResult is a Target evaluated on a report.
type TargetResult struct {
	Target
	// Value, Reference and Met are nil when a value is missing.
	Value     *float64 `json:"value"`
	Reference *float64 `json:"reference"`
	Met       *bool    `json:"met"`
}

// optional is v, or nil for NaN (which JSON cannot carry).
func optional(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

// issueTargets are the goals issue #7 sets for meshproxy.
func issueTargets() []Target {
	return []Target{
		{Goal: "bulk, 1 stream: ≥ 1.1 × stunnel", Table: "bulk-1", Key: "mbps", Better: HigherIsBetter, Against: ContenderStunnel, Factor: 1.1},
		{Goal: "bulk, 1 stream: ≥ go-tls", Table: "bulk-1", Key: "mbps", Better: HigherIsBetter, Against: ContenderGoTLS, Factor: 1},
		{Goal: "bulk, 8 streams: ≥ 1.1 × stunnel", Table: "bulk-8", Key: "mbps", Better: HigherIsBetter, Against: ContenderStunnel, Factor: 1.1},
		{Goal: "bulk, 8 streams: ≥ go-tls", Table: "bulk-8", Key: "mbps", Better: HigherIsBetter, Against: ContenderGoTLS, Factor: 1},
		{Goal: "ping-pong round trips/s ≥ 1.1 × haproxy", Table: "ping-pong", Key: "ops", Better: HigherIsBetter, Against: ContenderHAProxy, Factor: 1.1},
		{Goal: "ping-pong p99 no worse than haproxy", Table: "ping-pong", Key: "p99_us", Better: LowerIsBetter, Against: ContenderHAProxy, Factor: 1},
		{Goal: "new connections/s ≥ 2 × haproxy", Table: "new-conns", Key: "conns", Better: HigherIsBetter, Against: ContenderHAProxy, Factor: 2},
		{Goal: "memory per idle proxied connection ≤ 12 KiB (pair)", Table: "memory", Key: "per_conn_kib", Better: LowerIsBetter, Bound: 12},
		{Goal: "idle RSS < 20 MiB (largest process of the pair)", Table: "memory", Key: "idle_max_mib", Better: LowerIsBetter, Bound: 20},
		{Goal: "HTTP at 1000 rps: added p99 < 500 µs", Table: "http-1000", Key: "p99_us", Better: LowerIsBetter, Bound: 500, AddedVsDirect: true},
	}
}

// evaluateTargets checks meshproxy's medians against targets.
func evaluateTargets(tables []*Table, targets []Target) []TargetResult {
	byName := map[string]*Table{}
	for _, t := range tables {
		byName[t.Name] = t
	}
	out := make([]TargetResult, 0, len(targets))
	for _, tg := range targets {
		value, ref := math.NaN(), tg.Bound
		if tg.Against != "" {
			ref = math.NaN()
		}
		if t, ok := byName[tg.Table]; ok {
			value = t.Median(ContenderMeshproxy, tg.Key)
			if tg.AddedVsDirect {
				value -= t.Median(ContenderDirect, tg.Key)
			}
			if tg.Against != "" {
				ref = tg.Factor * t.Median(tg.Against, tg.Key)
			}
		}
		res := TargetResult{Target: tg, Value: optional(value), Reference: optional(ref)}
		if res.Value != nil && res.Reference != nil {
			met := value >= ref
			if tg.Better == LowerIsBetter {
				met = value <= ref
			}
			res.Met = &met
		}
		out = append(out, res)
	}
	return out
}

// describe says what a result was compared with.
func (r TargetResult) describe() string {
	ref := "–"
	if r.Reference != nil {
		ref = formatNum(*r.Reference)
	}
	if r.Against != "" {
		return fmt.Sprintf("%s × %s = %s", formatNum(r.Factor), r.Against, ref)
	}
	return ref
}

// measured shows the value compared.
func (r TargetResult) measured() string {
	switch {
	case r.Value == nil:
		return "–"
	case r.AddedVsDirect:
		return formatAdded(*r.Value)
	default:
		return formatNum(*r.Value)
	}
}
