package domain

import (
	"math"
	"time"
)

// Limits on sprocket specifications. They are generous for real parts and
// keep every value exactly representable and safe to store.
const (
	MaxTeeth   = 100_000
	MaxMeasure = 1_000_000.0
)

// SprocketSpec is what a client chooses about a sprocket.
type SprocketSpec struct {
	Teeth           int64   `json:"teeth"`
	PitchDiameter   float64 `json:"pitch_diameter"`
	OutsideDiameter float64 `json:"outside_diameter"`
	Pitch           float64 `json:"pitch"`
}

// Validate returns an EINVALID *Error naming every field that breaks a rule:
// teeth a positive integer, the three measures positive finite decimals.
func (s SprocketSpec) Validate() error {
	var v validation
	if s.Teeth < 1 || s.Teeth > MaxTeeth {
		v.add("teeth", "must be an integer from 1 to %d", MaxTeeth)
	}
	checkMeasure(&v, "pitch_diameter", s.PitchDiameter)
	checkMeasure(&v, "outside_diameter", s.OutsideDiameter)
	checkMeasure(&v, "pitch", s.Pitch)
	return v.err()
}

func checkMeasure(v *validation, field string, x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 || x > MaxMeasure {
		v.add(field, "must be a positive finite number no greater than %g", MaxMeasure)
	}
}

// Sprocket is a stored sprocket specification.
type Sprocket struct {
	ID      int64 `json:"id"`
	OrgID   int64 `json:"org_id"`
	Version int64 `json:"version"`
	SprocketSpec
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
}

// Deleted reports whether the sprocket is a tombstone.
func (s Sprocket) Deleted() bool { return s.DeletedAt != nil }

// SprocketPatch is a partial update: nil fields are left as they are.
type SprocketPatch struct {
	Teeth           *int64   `json:"teeth"`
	PitchDiameter   *float64 `json:"pitch_diameter"`
	OutsideDiameter *float64 `json:"outside_diameter"`
	Pitch           *float64 `json:"pitch"`
}

// Apply returns spec with the patch's fields replaced.
func (p SprocketPatch) Apply(spec SprocketSpec) SprocketSpec {
	if p.Teeth != nil {
		spec.Teeth = *p.Teeth
	}
	if p.PitchDiameter != nil {
		spec.PitchDiameter = *p.PitchDiameter
	}
	if p.OutsideDiameter != nil {
		spec.OutsideDiameter = *p.OutsideDiameter
	}
	if p.Pitch != nil {
		spec.Pitch = *p.Pitch
	}
	return spec
}
