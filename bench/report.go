package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// baselines are the contenders every other one is compared with: the limit
// (no proxy) and the Go TLS limit.
func baselines() []string { return []string{ContenderDirect, ContenderGoTLS} }

// Better says which direction of a metric is an improvement.
type Better string

// Directions of improvement.
const (
	HigherIsBetter Better = "higher"
	LowerIsBetter  Better = "lower"
)

// Metric is one column of a Table.
type Metric struct {
	Key    string `json:"key"`
	Title  string `json:"title"` // column header, with its unit
	Better Better `json:"better"`
	// Ratio adds columns with the contender's median over each baseline's.
	Ratio bool `json:"ratio,omitempty"`
	// Added adds a column with the contender's median minus direct's: the
	// latency a proxy adds.
	Added bool `json:"added,omitempty"`
}

// Table is the result of one measure: a row per contender, a column per
// metric.
type Table struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	Note  string `json:"note,omitempty"`
	// LoadBefore is the load average when the measure started: other
	// work on the machine shows there.
	LoadBefore string `json:"load_before,omitempty"`
	// OtherCPUs is how many CPUs, on average, work other than this run
	// kept busy during the measure: the noise it was measured under.
	OtherCPUs *float64 `json:"other_cpus,omitempty"`
	Metrics   []Metric `json:"metrics"`
	Rows      []*Row   `json:"rows"`
	byName    map[string]*Row
}

// Row is one contender's results in a Table. Samples holds every
// repetition; Summary is filled from them by Report.Finish.
type Row struct {
	Contender string               `json:"contender"`
	Samples   map[string][]float64 `json:"-"`
	Summary   map[string]Summary   `json:"summary"`
	Errors    []string             `json:"errors,omitempty"`
}

// NewTable returns an empty table with the given columns.
func NewTable(name, title, note string, metrics ...Metric) *Table {
	return &Table{Name: name, Title: title, Note: note, Metrics: metrics, byName: map[string]*Row{}}
}

// row returns the contender's row, adding it in first-seen order.
func (t *Table) row(contender string) *Row {
	if r, ok := t.byName[contender]; ok {
		return r
	}
	r := &Row{Contender: contender, Samples: map[string][]float64{}}
	if t.byName == nil {
		t.byName = map[string]*Row{}
	}
	t.byName[contender] = r
	t.Rows = append(t.Rows, r)
	return r
}

// Add records one repetition's value of metric key for a contender.
func (t *Table) Add(contender, key string, v float64) {
	r := t.row(contender)
	r.Samples[key] = append(r.Samples[key], v)
}

// Fail records that a repetition failed for a contender; the error is shown
// in the table instead of being lost or stopping the run.
func (t *Table) Fail(contender string, err error) {
	r := t.row(contender)
	r.Errors = append(r.Errors, err.Error())
}

// Median is the contender's median of metric key, NaN when it has none.
func (t *Table) Median(contender, key string) float64 {
	r, ok := t.byName[contender]
	if !ok {
		return nanValue()
	}
	s, ok := r.Summary[key]
	if !ok {
		return nanValue()
	}
	return s.Median
}

// finish computes every row's summaries.
func (t *Table) finish() {
	for _, r := range t.Rows {
		r.Summary = map[string]Summary{}
		for key, samples := range r.Samples {
			if s, ok := Summarize(samples); ok {
				r.Summary[key] = s
			}
		}
	}
}

// Machine describes where a run happened, because numbers mean little
// without it.
type Machine struct {
	CPU       string            `json:"cpu"`
	Cores     int               `json:"cores"`
	Kernel    string            `json:"kernel"`
	GoVersion string            `json:"go_version"`
	Versions  map[string]string `json:"versions"`
	LoadStart string            `json:"load_start"`
	LoadEnd   string            `json:"load_end"`
}

// Report is the outcome of a run.
type Report struct {
	// Smoke marks a run with reduced sizes and durations that checks the
	// tooling; its numbers are not results.
	Smoke    bool              `json:"smoke"`
	Started  time.Time         `json:"started"`
	Elapsed  time.Duration     `json:"elapsed_ns"`
	Machine  Machine           `json:"machine"`
	Settings map[string]string `json:"settings"`
	Notes    []string          `json:"notes,omitempty"`
	Tables   []*Table          `json:"tables"`
	// Targets are meshproxy's goals evaluated on the tables; Finish fills
	// them.
	Targets []TargetResult `json:"targets"`
}

// Finish computes the summaries of every table; call it before writing.
func (r *Report) Finish() {
	for _, t := range r.Tables {
		t.finish()
	}
	r.Targets = evaluateTargets(r.Tables, issueTargets())
}

// ReadReport reads a report that WriteJSON wrote, so that it can be
// rendered again.
func ReadReport(r io.Reader) (*Report, error) {
	var rep Report
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("bench: reading JSON: %w", err)
	}
	for _, t := range rep.Tables {
		t.byName = map[string]*Row{}
		for _, row := range t.Rows {
			t.byName[row.Contender] = row
			row.Samples = map[string][]float64{}
			for k, s := range row.Summary {
				row.Samples[k] = s.Samples
			}
		}
	}
	rep.Finish()
	return &rep, nil
}

// WriteJSON writes the report, with every sample, as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: writing JSON: %w", err)
	}
	return nil
}
