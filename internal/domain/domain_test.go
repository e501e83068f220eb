package domain

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestSprocketSpecValidate(t *testing.T) {
	ok := SprocketSpec{Teeth: 5, PitchDiameter: 5, OutsideDiameter: 6, Pitch: 1}
	tests := []struct {
		name   string
		change func(*SprocketSpec)
		fields []string // the fields the error names; none when valid
	}{
		{"valid", func(*SprocketSpec) {}, nil},
		{"outside smaller than pitch diameter is allowed", func(s *SprocketSpec) { s.OutsideDiameter = 4 }, nil},
		{"largest values", func(s *SprocketSpec) { s.Teeth, s.Pitch = MaxTeeth, MaxMeasure }, nil},
		{"zero teeth", func(s *SprocketSpec) { s.Teeth = 0 }, []string{"teeth"}},
		{"negative teeth", func(s *SprocketSpec) { s.Teeth = -3 }, []string{"teeth"}},
		{"too many teeth", func(s *SprocketSpec) { s.Teeth = MaxTeeth + 1 }, []string{"teeth"}},
		{"zero pitch", func(s *SprocketSpec) { s.Pitch = 0 }, []string{"pitch"}},
		{"NaN diameter", func(s *SprocketSpec) { s.PitchDiameter = math.NaN() }, []string{"pitch_diameter"}},
		{"infinite diameter", func(s *SprocketSpec) { s.OutsideDiameter = math.Inf(1) }, []string{"outside_diameter"}},
		{"measure too large", func(s *SprocketSpec) { s.Pitch = MaxMeasure * 2 }, []string{"pitch"}},
		{"every field wrong at once", func(s *SprocketSpec) { *s = SprocketSpec{Pitch: -1, PitchDiameter: -1, OutsideDiameter: -1} },
			[]string{"teeth", "pitch_diameter", "outside_diameter", "pitch"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.change(&s)
			err := s.Validate()
			if got := fieldsOf(t, err); fmt.Sprint(got) != fmt.Sprint(tc.fields) {
				t.Fatalf("fields %v, want %v (err %v)", got, tc.fields, err)
			}
		})
	}
}

// fieldsOf returns the fields an EINVALID error names, nil for no error.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != EINVALID {
		t.Fatalf("error %v is not EINVALID", err)
	}
	var out []string
	for _, f := range e.Fields {
		if !strings.Contains(e.Message, f.Field) {
			t.Errorf("message %q does not name %s", e.Message, f.Field)
		}
		out = append(out, f.Field)
	}
	return out
}

func TestFactorySpecValidate(t *testing.T) {
	tests := []struct {
		name  string
		valid bool
	}{
		{"Plant 1", true},
		{"Ünïcödé plant", true},
		{"", false},
		{"   ", false},
		{strings.Repeat("x", MaxNameLen), true},
		{strings.Repeat("x", MaxNameLen+1), false},
		{"tab\there", false},
		{"bell\x07", false},
		{"\xff\xfe", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := (FactorySpec{Name: tc.name}).Validate() == nil; got != tc.valid {
				t.Fatalf("valid = %v, want %v", got, tc.valid)
			}
		})
	}
}

func TestValidateSamples(t *testing.T) {
	s := func(tm, a, g int64) Sample { return Sample{Time: tm, Actual: a, Goal: g} }
	many := make([]Sample, MaxSamplesPerWrite+1)
	for i := range many {
		many[i] = s(int64(i), 1, 1)
	}
	tests := []struct {
		name    string
		samples []Sample
		fields  []string
	}{
		{"none", nil, nil},
		{"valid", []Sample{s(1, 0, 0), s(2, 5, 6)}, nil},
		{"latest time", []Sample{s(MaxSampleTime, 1, 1)}, nil},
		{"negative time", []Sample{s(-1, 1, 1)}, []string{"samples[0].time"}},
		{"time after 9999", []Sample{s(MaxSampleTime+1, 1, 1)}, []string{"samples[0].time"}},
		{"negative actual", []Sample{s(1, -1, 1)}, []string{"samples[0].actual"}},
		{"negative goal", []Sample{s(1, 1, -1)}, []string{"samples[0].goal"}},
		{"repeated time", []Sample{s(1, 1, 1), s(1, 2, 2)}, []string{"samples[1].time"}},
		{"too many", many, []string{"samples"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fieldsOf(t, ValidateSamples(tc.samples)); fmt.Sprint(got) != fmt.Sprint(tc.fields) {
				t.Fatalf("fields %v, want %v", got, tc.fields)
			}
		})
	}
}

func TestChartData(t *testing.T) {
	samples := []Sample{{Time: 10, Actual: 1, Goal: 2}, {Time: 20, Actual: 3, Goal: 4}}
	c := ChartDataOf(samples)
	if fmt.Sprint(c.Time, c.Actual, c.Goal) != "[10 20] [1 3] [2 4]" {
		t.Fatalf("columns %v %v %v", c.Time, c.Actual, c.Goal)
	}
	back, err := c.Samples()
	if err != nil || fmt.Sprint(back) != fmt.Sprint(samples) {
		t.Fatalf("round trip %v, %v", back, err)
	}
	if empty := ChartDataOf(nil); empty.Time == nil || empty.Actual == nil || empty.Goal == nil {
		t.Errorf("an empty history must give empty arrays, not null")
	}
	c.Goal = c.Goal[:1]
	if _, err := c.Samples(); ErrorCode(err) != EINVALID {
		t.Errorf("uneven columns: %v, want EINVALID", err)
	}
}

func TestPatches(t *testing.T) {
	teeth, pitch := int64(9), 2.5
	got := SprocketPatch{Teeth: &teeth, Pitch: &pitch}.Apply(SprocketSpec{Teeth: 1, PitchDiameter: 2, OutsideDiameter: 3, Pitch: 4})
	if want := (SprocketSpec{Teeth: 9, PitchDiameter: 2, OutsideDiameter: 3, Pitch: 2.5}); got != want {
		t.Errorf("sprocket patch gave %+v, want %+v", got, want)
	}
	name := "new"
	if got := (FactoryPatch{Name: &name}).Apply(FactorySpec{Name: "old"}); got.Name != "new" {
		t.Errorf("factory patch gave %q", got.Name)
	}
	if got := (FactoryPatch{}).Apply(FactorySpec{Name: "old"}); got.Name != "old" {
		t.Errorf("empty factory patch gave %q", got.Name)
	}
}

func TestErrorHelpers(t *testing.T) {
	tests := []struct {
		err     error
		code    string
		message string
	}{
		{nil, "", "internal error"},
		{Errorf(ENOTFOUND, "sprocket %d not found", 4), ENOTFOUND, "sprocket 4 not found"},
		{fmt.Errorf("wrapped: %w", Errorf(ESTALE, "old")), ESTALE, "old"},
		{errors.New("connection refused to 10.0.0.1"), EINTERNAL, "internal error"},
	}
	for _, tc := range tests {
		if got := ErrorCode(tc.err); got != tc.code {
			t.Errorf("ErrorCode(%v) = %q, want %q", tc.err, got, tc.code)
		}
		if tc.err != nil {
			if got := ErrorMessage(tc.err); got != tc.message {
				t.Errorf("ErrorMessage(%v) = %q, want %q", tc.err, got, tc.message)
			}
		}
	}
}

// Sums of an aggregate stop at the largest int64 rather than wrap.
func TestAggregateSumsSaturate(t *testing.T) {
	var a Aggregate
	big := Sample{Time: 1, Actual: MaxProductionAmount, Goal: 1}
	for range 10_000_000 / 1000 {
		a.Merge(Aggregate{Count: 1_000_000, SumActual: 1_000_000 * MaxProductionAmount, MinActual: big.Actual, MaxActual: big.Actual, SumGoal: 1, MinGoal: 1, MaxGoal: 1})
	}
	if a.SumActual != math.MaxInt64 || a.Count != 10_000_000_000 || a.SumGoal != 10_000 {
		t.Fatalf("%+v", a)
	}
}
