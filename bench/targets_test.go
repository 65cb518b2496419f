package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestEvaluateTargets(t *testing.T) {
	bulk := NewTable("bulk-1", "", "", Metric{Key: "mbps"})
	bulk.Add(ContenderStunnel, "mbps", 100)
	bulk.Add(ContenderMeshproxy, "mbps", 120)
	pp := NewTable("ping-pong", "", "", Metric{Key: "p99_us"})
	pp.Add(ContenderHAProxy, "p99_us", 300)
	pp.Add(ContenderMeshproxy, "p99_us", 301)
	lat := NewTable("http-1000", "", "", Metric{Key: "p99_us"})
	lat.Add(ContenderDirect, "p99_us", 1000)
	lat.Add(ContenderMeshproxy, "p99_us", 1400)
	tables := []*Table{bulk, pp, lat}
	for _, tb := range tables {
		tb.finish()
	}
	targets := []Target{
		{Goal: "higher, met", Table: "bulk-1", Key: "mbps", Better: HigherIsBetter, Against: ContenderStunnel, Factor: 1.1},
		{Goal: "higher, missed", Table: "bulk-1", Key: "mbps", Better: HigherIsBetter, Against: ContenderStunnel, Factor: 1.3},
		{Goal: "lower, missed by one", Table: "ping-pong", Key: "p99_us", Better: LowerIsBetter, Against: ContenderHAProxy, Factor: 1},
		{Goal: "added, met", Table: "http-1000", Key: "p99_us", Better: LowerIsBetter, Bound: 500, AddedVsDirect: true},
		{Goal: "added, missed", Table: "http-1000", Key: "p99_us", Better: LowerIsBetter, Bound: 399, AddedVsDirect: true},
		{Goal: "no reference contender", Table: "bulk-1", Key: "mbps", Better: HigherIsBetter, Against: ContenderHAProxy, Factor: 1},
		{Goal: "no table", Table: "memory", Key: "per_conn_kib", Better: LowerIsBetter, Bound: 12},
	}
	want := []struct {
		met   *bool
		value float64
	}{{ptr(true), 120}, {ptr(false), 120}, {ptr(false), 301}, {ptr(true), 400}, {ptr(false), 400}, {nil, 120}, {nil, 0}}
	got := evaluateTargets(tables, targets)
	for i, r := range got {
		if (r.Met == nil) != (want[i].met == nil) || (r.Met != nil && *r.Met != *want[i].met) {
			t.Errorf("%s: met = %v, want %v", r.Goal, deref(r.Met), deref(want[i].met))
		}
		if r.Value != nil && *r.Value != want[i].value {
			t.Errorf("%s: value = %v, want %v", r.Goal, *r.Value, want[i].value)
		}
	}
	if got[6].Value != nil || got[6].Reference == nil {
		t.Errorf("no table: value %v reference %v, want none and the bound", got[6].Value, got[6].Reference)
	}
}

func TestTargetsRendered(t *testing.T) {
	r := testReport(false)
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## meshproxy against its targets",
		"| bulk, 1 stream: ≥ go-tls | 250 | 1.00 × go-tls = 500 | **no** |",
		"| bulk, 1 stream: ≥ 1.1 × stunnel | 250 | 1.10 × stunnel = – | no data |",
		"| HTTP at 1000 rps: added p99 < 500 µs | +250 | 500 | yes |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func ptr(b bool) *bool { return &b }

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}
