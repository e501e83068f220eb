package domain

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on factories and their samples.
const (
	MaxNameLen          = 200
	MaxSamplesPerWrite  = 10_000
	MaxSamplesPerRead   = 10_000       // a chart range answers at most this many, and says where the rest starts
	MaxSampleTime       = 253402300799 // 9999-12-31T23:59:59Z
	MaxProductionAmount = 1_000_000_000_000
)

// Sample is one production reading of a factory at a point in time.
type Sample struct {
	Time   int64 `json:"time"`
	Actual int64 `json:"actual"`
	Goal   int64 `json:"goal"`
}

// FactorySpec is what a client chooses about a factory.
type FactorySpec struct {
	Name string `json:"name"`
}

// Validate returns an EINVALID *Error when the name is empty, too long or
// holds control characters.
func (s FactorySpec) Validate() error {
	var v validation
	validateName(&v, s.Name)
	return v.err()
}

func validateName(v *validation, name string) {
	switch {
	case strings.TrimSpace(name) == "":
		v.add("name", "must not be empty")
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameLen:
		v.add("name", "must be valid UTF-8 of at most %d characters", MaxNameLen)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		v.add("name", "must not contain control characters")
	}
}

// ValidateSamples returns an EINVALID *Error when samples is empty or too
// long, or a sample has a negative or out-of-range value, or two samples
// share a time.
func ValidateSamples(samples []Sample) error {
	var v validation
	if len(samples) > MaxSamplesPerWrite {
		v.add("samples", "at most %d samples per request", MaxSamplesPerWrite)
		return v.err()
	}
	seen := make(map[int64]struct{}, len(samples))
	for i, s := range samples {
		switch {
		case s.Time < 0 || s.Time > MaxSampleTime:
			v.add(sampleField(i, "time"), "must be unix seconds from 0 to %d", MaxSampleTime)
		case s.Actual < 0 || s.Actual > MaxProductionAmount:
			v.add(sampleField(i, "actual"), "must be an integer from 0 to %d", MaxProductionAmount)
		case s.Goal < 0 || s.Goal > MaxProductionAmount:
			v.add(sampleField(i, "goal"), "must be an integer from 0 to %d", MaxProductionAmount)
		}
		if _, dup := seen[s.Time]; dup {
			v.add(sampleField(i, "time"), "repeats an earlier sample's time")
		}
		seen[s.Time] = struct{}{}
		if len(v.fields) >= 20 {
			break // enough to act on; do not build a megabyte of errors
		}
	}
	return v.err()
}

func sampleField(i int, name string) string {
	return "samples[" + strconv.Itoa(i) + "]." + name
}

// Factory is a stored factory with a summary of its production history.
type Factory struct {
	ID          int64  `json:"id"`
	OrgID       int64  `json:"org_id"`
	Version     int64  `json:"version"`
	Name        string `json:"name"`
	SampleCount int64  `json:"sample_count"`
	// FirstTime and LastTime bound the history; nil while it is empty.
	FirstTime *int64     `json:"first_time"`
	LastTime  *int64     `json:"last_time"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// Deleted reports whether the factory is a tombstone.
func (f Factory) Deleted() bool { return f.DeletedAt != nil }

// FactoryPatch is a partial update: nil fields are left as they are.
type FactoryPatch struct {
	Name *string `json:"name"`
}

// Apply returns spec with the patch's fields replaced.
func (p FactoryPatch) Apply(spec FactorySpec) FactorySpec {
	if p.Name != nil {
		spec.Name = *p.Name
	}
	return spec
}

// ChartData is a factory's history in the column shape the original service
// served: three arrays of equal length, ordered by time.
type ChartData struct {
	Actual []int64 `json:"sprocket_production_actual"`
	Goal   []int64 `json:"sprocket_production_goal"`
	Time   []int64 `json:"time"`
}

// ChartDataOf returns samples (ordered by time) in the column shape. Empty
// histories give empty arrays, never null.
func ChartDataOf(samples []Sample) ChartData {
	c := ChartData{
		Actual: make([]int64, len(samples)),
		Goal:   make([]int64, len(samples)),
		Time:   make([]int64, len(samples)),
	}
	for i, s := range samples {
		c.Actual[i], c.Goal[i], c.Time[i] = s.Actual, s.Goal, s.Time
	}
	return c
}

// Samples returns the chart data as samples, or an EINVALID *Error when its
// arrays differ in length.
func (c ChartData) Samples() ([]Sample, error) {
	if len(c.Actual) != len(c.Time) || len(c.Goal) != len(c.Time) {
		return nil, Errorf(EINVALID, "chart_data: time, sprocket_production_actual and sprocket_production_goal must have the same length")
	}
	out := make([]Sample, len(c.Time))
	for i := range c.Time {
		out[i] = Sample{Time: c.Time[i], Actual: c.Actual[i], Goal: c.Goal[i]}
	}
	return out, nil
}

// Aggregate summarizes the samples of one time bucket: how many, and the
// sum, least and greatest of their actual and goal counts.
type Aggregate struct {
	Start                           int64 // the bucket's first second
	Count                           int64
	SumActual, MinActual, MaxActual int64
	SumGoal, MinGoal, MaxGoal       int64
}

// Add counts s in.
func (a *Aggregate) Add(s Sample) {
	a.Merge(Aggregate{Count: 1, SumActual: s.Actual, MinActual: s.Actual, MaxActual: s.Actual,
		SumGoal: s.Goal, MinGoal: s.Goal, MaxGoal: s.Goal})
}

// Merge counts b's samples in.
func (a *Aggregate) Merge(b Aggregate) {
	if b.Count == 0 {
		return
	}
	if a.Count == 0 {
		a.MinActual, a.MaxActual, a.MinGoal, a.MaxGoal = b.MinActual, b.MaxActual, b.MinGoal, b.MaxGoal
	}
	a.Count += b.Count
	a.SumActual = saturatingAdd(a.SumActual, b.SumActual)
	a.SumGoal = saturatingAdd(a.SumGoal, b.SumGoal)
	a.MinActual, a.MaxActual = min(a.MinActual, b.MinActual), max(a.MaxActual, b.MaxActual)
	a.MinGoal, a.MaxGoal = min(a.MinGoal, b.MinGoal), max(a.MaxGoal, b.MaxGoal)
}

// saturatingAdd adds non-negative sums, stopping at the largest int64: a
// 52-week bucket of a sample a second at MaxProductionAmount would pass it.
func saturatingAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
