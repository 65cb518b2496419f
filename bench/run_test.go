package bench

import (
	"slices"
	"strings"
	"testing"
)

func TestRotate(t *testing.T) {
	s := []string{"a", "b", "c"}
	for n, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := rotate(s, n); !slices.Equal(got, want) {
			t.Errorf("rotate(%d) = %v, want %v", n, got, want)
		}
	}
	if !slices.Equal(s, []string{"a", "b", "c"}) {
		t.Errorf("rotate changed its input: %v", s)
	}
	if rotate(nil, 2) != nil {
		t.Error("rotate(nil) is not nil")
	}
}

func TestOnlyKeepsOrder(t *testing.T) {
	got := only(AllContenders(), ContenderMeshproxy, ContenderDirect, "nope")
	if !slices.Equal(got, []string{ContenderDirect, ContenderMeshproxy}) {
		t.Errorf("only = %v", got)
	}
}

func TestConnBudget(t *testing.T) {
	tests := []struct {
		limit uint64
		want  int
	}{{20000, 9750}, {200000, 99750}, {400, 100}}
	for _, tt := range tests {
		got := connBudget(tt.limit)
		if got != tt.want {
			t.Errorf("connBudget(%d) = %d, want %d", tt.limit, got, tt.want)
		}
		if uint64(2*got) > tt.limit {
			t.Errorf("connBudget(%d) = %d: two sockets each do not fit", tt.limit, got)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	good := func() Options {
		o := DefaultOptions()
		o.Meshproxy, o.Self, o.Dir = "/bin/meshproxy", "/bin/meshbench", "/tmp/x"
		return o
	}
	if o := good(); o.Validate() != nil {
		t.Fatalf("default options rejected: %v", o.Validate())
	}
	tests := []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"no binary", func(o *Options) { o.Meshproxy = "" }, "required"},
		{"no repetitions", func(o *Options) { o.Repeat = 0 }, "repeat"},
		{"no time", func(o *Options) { o.MaxTime = 0 }, "MaxTime"},
		{"tiny bulk", func(o *Options) { o.BulkBytes = 10 }, "bulk size"},
		{"no streams", func(o *Options) { o.BulkStreams = []int{1, 0} }, "streams"},
		{"no connections", func(o *Options) { o.HTTPConns = 0 }, "positive"},
		{"unknown contender", func(o *Options) { o.Contenders = []string{"envoy"} }, "unknown contender"},
	}
	for _, tt := range tests {
		o := good()
		tt.change(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one about %q", tt.name, err, tt.want)
		}
	}
}

func TestQuickIsLabelledAndSmaller(t *testing.T) {
	full, quick := DefaultOptions(), DefaultOptions()
	quick.Quick()
	if !quick.Smoke || full.Smoke {
		t.Error("Quick must mark the run as a smoke run, and only Quick")
	}
	if quick.BulkBytes >= full.BulkBytes || quick.HTTPTime >= full.HTTPTime || quick.IdleConns >= full.IdleConns || quick.Repeat > full.Repeat {
		t.Errorf("quick options are not smaller: %+v", quick)
	}
}

func TestParseRoute(t *testing.T) {
	r, err := ParseRoute("127.0.0.1:1=127.0.0.1:2")
	if err != nil || r.Listen != "127.0.0.1:1" || r.Connect != "127.0.0.1:2" {
		t.Errorf("ParseRoute = %+v, %v", r, err)
	}
	for _, bad := range []string{"", "a", "=b", "a="} {
		if _, err := ParseRoute(bad); err == nil {
			t.Errorf("ParseRoute(%q): no error", bad)
		}
	}
}

func TestSelected(t *testing.T) {
	tests := []struct {
		name string
		sel  []string
		want bool
	}{
		{"http-1000", nil, true},
		{"http-1000", []string{"http"}, true},
		{"http-4000", []string{"grpc", "http-4000"}, true},
		{"bulk-1", []string{"http", "grpc"}, false},
		{"bulk-1", []string{""}, false},
	}
	for _, tt := range tests {
		if got := selected(tt.name, tt.sel); got != tt.want {
			t.Errorf("selected(%q, %q) = %v, want %v", tt.name, tt.sel, got, tt.want)
		}
	}
}
