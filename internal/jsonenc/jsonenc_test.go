package jsonenc

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
)

func same(t *testing.T, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("\n got %s\nwant %s", got, want)
	}
}

func TestFloat(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	floats := []float64{0, 1, 5, 6.35, 0.1, 1e-6, 9.99e-7, 1e-7, 1.5e-10, 1e20, 1e21, 123456789.125, 1e300, 5e-324, math.MaxFloat64}
	for range 20000 {
		floats = append(floats, r.Float64()*math.Pow(10, float64(r.IntN(50)-25)))
	}
	for _, f := range floats {
		same(t, Float(nil, f), f)
		same(t, Float(nil, -f), -f)
	}
}

func TestString(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pieces := []string{"a", "Z", "0", " ", "\t", "\n", `"`, `\`, "<", ">", "&", "é", "\u2028", "\u2029", "\x01", "\x7f", "\xff"}
	for range 20000 {
		var s strings.Builder
		for range r.IntN(8) {
			s.WriteString(pieces[r.IntN(len(pieces))])
		}
		same(t, String(nil, s.String()), s.String())
	}
}

func TestTime(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 20000 {
		at := time.Unix(r.Int64N(253402300799), r.Int64N(1e9))
		switch i % 4 {
		case 0:
			at = at.UTC()
		case 1:
			at = at.In(time.FixedZone("x", 60*(r.IntN(1680)-840)))
		case 2:
			at = at.UTC().Truncate(time.Microsecond)
		}
		same(t, Time(nil, at), at)
	}
}

func TestSprocketSpec(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		s := domain.SprocketSpec{Teeth: r.Int64N(domain.MaxTeeth) + 1,
			PitchDiameter: r.Float64() * 100, OutsideDiameter: r.Float64() * domain.MaxMeasure, Pitch: 1e-7 + r.Float64()}
		b := append(SprocketSpec([]byte("{"), s), '}')
		same(t, b, s)
	}
}
