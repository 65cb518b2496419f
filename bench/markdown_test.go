package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func testReport(smoke bool) *Report {
	tput := NewTable("bulk-1", "Bulk", "a note",
		Metric{Key: "mbps", Title: "MB/s", Better: HigherIsBetter, Ratio: true})
	for _, v := range []float64{1000, 900, 1100} {
		tput.Add(ContenderDirect, "mbps", v)
	}
	for _, v := range []float64{500, 400, 600} {
		tput.Add(ContenderGoTLS, "mbps", v)
	}
	for _, v := range []float64{250, 240, 260} {
		tput.Add(ContenderMeshproxy, "mbps", v)
	}
	tput.Fail(ContenderStunnel, errors.New("stunnel: exit status 1:\nsome | log"))

	lat := NewTable("http-1000", "HTTP", "",
		Metric{Key: "p99_us", Title: "p99 µs", Better: LowerIsBetter, Added: true})
	lat.Add(ContenderDirect, "p99_us", 200)
	lat.Add(ContenderMeshproxy, "p99_us", 450)
	r := &Report{
		Smoke:    smoke,
		Started:  time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		Elapsed:  90 * time.Second,
		Machine:  Machine{CPU: "Test CPU", Cores: 2, Kernel: "6.1", GoVersion: "go1.26", Versions: map[string]string{"haproxy": "HAProxy 2.6"}},
		Settings: map[string]string{"repetitions": "3"},
		Notes:    []string{"a run note"},
		Tables:   []*Table{tput, lat},
	}
	r.Finish()
	return r
}

func TestMarkdownHasRatiosAndAddedLatency(t *testing.T) {
	var b bytes.Buffer
	if err := testReport(false).WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| CPU | Test CPU |",
		"| haproxy | HAProxy 2.6 |",
		"- `repetitions`: 3",
		"- a run note",
		"## Bulk",
		"| contender | MB/s (higher is better) | MB/s vs direct | MB/s vs go-tls |",
		"| direct | 1000 (900–1100) | 1.00× | 2.00× |",
		"| go-tls | 500 (400–600) | 0.50× | 1.00× |",
		"| meshproxy | 250 (240–260) | 0.25× | 0.50× |",
		"| stunnel (1 failed, see below) | – | – | – |",
		"- stunnel failed: stunnel: exit status 1: some | log",
		"| contender | p99 µs (lower is better) | added p99 µs vs direct |",
		"| direct | 200 | +0 |",
		"| meshproxy | 450 | +250 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "SMOKE RUN") {
		t.Error("a full run is labelled as a smoke run")
	}
}

func TestMarkdownLabelsSmokeRuns(t *testing.T) {
	var b bytes.Buffer
	if err := testReport(true).WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "**SMOKE RUN**") {
		t.Errorf("smoke run not labelled:\n%s", b.String())
	}
}

func TestJSONKeepsSamplesAndSummaries(t *testing.T) {
	var b bytes.Buffer
	if err := testReport(true).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Smoke  bool `json:"smoke"`
		Tables []struct {
			Name string `json:"name"`
			Rows []struct {
				Contender string             `json:"contender"`
				Summary   map[string]Summary `json:"summary"`
				Errors    []string           `json:"errors"`
			} `json:"rows"`
		} `json:"tables"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Smoke || len(got.Tables) != 2 || got.Tables[0].Name != "bulk-1" {
		t.Fatalf("decoded %+v", got)
	}
	direct := got.Tables[0].Rows[0]
	s := direct.Summary["mbps"]
	if direct.Contender != ContenderDirect || s.Median != 1000 || s.Min != 900 || s.Max != 1100 || len(s.Samples) != 3 {
		t.Errorf("direct row %+v", direct)
	}
	if stunnel := got.Tables[0].Rows[3]; stunnel.Contender != ContenderStunnel || len(stunnel.Errors) != 1 {
		t.Errorf("stunnel row %+v, want its error", stunnel)
	}
}

func TestFormatNum(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1234.6, "1235"}, {123.4, "123"}, {12.34, "12.3"}, {1.234, "1.23"}, {0.1234, "0.123"}, {-12.34, "-12.3"},
	}
	for _, tt := range tests {
		if got := formatNum(tt.v); got != tt.want {
			t.Errorf("formatNum(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestShorten(t *testing.T) {
	if got := shorten("a\n  b\tc", 100); got != "a b c" {
		t.Errorf("shorten joined lines to %q", got)
	}
	if got := shorten(strings.Repeat("x", 10), 4); got != "xxxx…" {
		t.Errorf("shorten cut to %q", got)
	}
}

func TestReadReportRendersTheSame(t *testing.T) {
	orig := testReport(false)
	other := 0.42
	orig.Tables[0].OtherCPUs = &other
	var js, want bytes.Buffer
	if err := orig.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := orig.WriteMarkdown(&want); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(&js)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := back.WriteMarkdown(&got); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("re-rendered markdown differs:\n%s\n---- want ----\n%s", got.String(), want.String())
	}
	if !strings.Contains(got.String(), "about 0.42 CPUs on average") {
		t.Error("the noise of a measure is not shown")
	}
	if _, err := ReadReport(strings.NewReader("{")); err == nil {
		t.Error("no error for truncated JSON")
	}
}
