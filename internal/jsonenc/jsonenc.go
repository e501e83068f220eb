// Package jsonenc appends JSON values byte for byte as encoding/json writes
// them, without reflection: for the few hot encoders (events, read-model
// bodies) that are written by hand and tested against encoding/json.
package jsonenc

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
)

// Float appends f as encoding/json does: plain decimals, exponents only for
// very small or very large magnitudes, and "e-7" not "e-07". f must be
// finite (encoding/json refuses NaN and infinities).
func Float(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// String appends s as a JSON string, escaped as encoding/json escapes it
// (HTML characters included).
func String(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Time appends t as encoding/json does (RFC 3339 with nanoseconds, in
// quotes). t's year must be within 0 to 9999, as encoding/json requires.
func Time(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// SprocketSpec appends s's fields, without braces, exactly as encoding/json
// writes them inside an object that embeds the spec: events and read-model
// bodies write sprockets with it.
func SprocketSpec(b []byte, s domain.SprocketSpec) []byte {
	b = append(b, `"teeth":`...)
	b = strconv.AppendInt(b, s.Teeth, 10)
	b = append(b, `,"pitch_diameter":`...)
	b = Float(b, s.PitchDiameter)
	b = append(b, `,"outside_diameter":`...)
	b = Float(b, s.OutsideDiameter)
	b = append(b, `,"pitch":`...)
	return Float(b, s.Pitch)
}
