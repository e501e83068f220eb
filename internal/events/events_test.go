package events

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	s := domain.Sprocket{ID: 7, OrgID: 1, Version: 3, CreatedAt: at, UpdatedAt: at}
	e, err := New("id-1", Updated, Sprocket, 7, 1, 3, at, SprocketPayload{Sprocket: s})
	if err != nil {
		t.Fatal(err)
	}
	if e.Subject() != "events.sprocket.7.updated" {
		t.Errorf("subject %s", e.Subject())
	}
	raw, _ := e.Encode()
	back, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := back.Sprocket()
	if err != nil || p.Sprocket.ID != 7 || !back.OccurredAt.Equal(at) {
		t.Fatalf("decoded %+v %+v %v", back, p, err)
	}
	if _, err := back.Factory(); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("a sprocket event read as a factory's: %v", err)
	}
}

func TestDecodeRefusesBadEnvelopes(t *testing.T) {
	valid := `"id":"x","type":"created","aggregate_type":"sprocket","aggregate_id":1,"org_id":1,"version":1`
	tests := map[string]string{
		"not JSON":                        `{`,
		"no id":                           strings.Replace(`{`+valid+`,"payload":{}}`, `"id":"x",`, ``, 1),
		"unknown aggregate":               strings.Replace(`{`+valid+`,"payload":{}}`, `"sprocket"`, `"gear"`, 1),
		"unknown type":                    strings.Replace(`{`+valid+`,"payload":{}}`, `"created"`, `"exploded"`, 1),
		"appending samples to a sprocket": strings.Replace(`{`+valid+`,"payload":{}}`, `"created"`, `"samples_appended"`, 1),
		"zero version":                    strings.Replace(`{`+valid+`,"payload":{}}`, `"version":1`, `"version":0`, 1),
		"no payload":                      `{` + valid + `}`,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode([]byte(body)); domain.ErrorCode(err) != domain.EINVALID {
				t.Fatalf("Decode: %v, want EINVALID", err)
			}
		})
	}
	mismatch := `{` + valid + `,"payload":{"sprocket":{"id":2,"version":1}}}`
	e, err := Decode([]byte(mismatch))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Sprocket(); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("a payload about another sprocket: %v", err)
	}
}

// Encode writes what encoding/json writes, for any envelope: strings that
// need escaping, payloads with spaces, HTML characters and non-ASCII text.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "Z", "0", "-", " ", "\t", "\n", `"`, `\`, "<", ">", "&", "é", "\u2028", "\x01", "{", "}", "[", "]", ":", ","}
	text := func() string {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	for i := range 20000 {
		payload, _ := json.Marshal(map[string]any{text(): text(), "n": rng.Float64() * 1e6, "list": []any{rng.Int64(), text(), nil, true}})
		switch i % 3 {
		case 1:
			payload, _ = json.MarshalIndent(json.RawMessage(payload), " ", "  ")
		case 2: // compact, with one character encoding/json escapes written raw
			raw := []string{"<", ">", "&", "é", "\u2028", "\u2029", "plain"}
			payload = []byte(`{"a":"x` + raw[rng.IntN(len(raw))] + `y","b":[1,2.5e3]}`)
		}
		e := Envelope{
			ID: text(), Type: text(), AggregateType: text(),
			AggregateID: rng.Int64() - rng.Int64(), OrgID: rng.Int64N(100), Version: rng.Int64N(1 << 40),
			OccurredAt: time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC(), Payload: payload,
		}
		if i%3 == 0 {
			e.OccurredAt = e.OccurredAt.In(time.FixedZone("x", 3600*rng.IntN(12)))
		}
		got, err := e.Encode()
		want, werr := json.Marshal(e)
		if err != nil || werr != nil || string(got) != string(want) {
			t.Fatalf("envelope %d:\n got %s (%v)\nwant %s (%v)", i, got, err, want, werr)
		}
	}
	if _, err := (Envelope{ID: "x", Payload: json.RawMessage(`{"a":`)}).Encode(); err == nil {
		t.Error("an envelope whose payload is not JSON encoded")
	}
}

// Sprocket payloads, written by hand, are what encoding/json writes.
func TestSprocketPayloadMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	floats := []float64{0, 0.1, 6.35, 1e-7, 1e21, 123456789.125}
	float := func() float64 {
		if rng.IntN(2) == 0 {
			return floats[rng.IntN(len(floats))]
		}
		return rng.Float64() * math.Pow(10, float64(rng.IntN(40)-20))
	}
	for i := range 20000 {
		at := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9)).UTC()
		s := domain.Sprocket{
			ID: rng.Int64(), OrgID: rng.Int64N(1000), Version: rng.Int64N(1 << 40),
			SprocketSpec: domain.SprocketSpec{Teeth: rng.Int64() - rng.Int64(), PitchDiameter: float(), OutsideDiameter: float(), Pitch: -float()},
			CreatedAt:    at, UpdatedAt: at.Add(time.Duration(rng.Int64N(1e15))),
		}
		if i%3 == 0 {
			deleted := s.UpdatedAt.In(time.FixedZone("x", 3600))
			s.DeletedAt = &deleted
		}
		e, err := New("id", Updated, Sprocket, s.ID, s.OrgID, s.Version, at, SprocketPayload{Sprocket: s})
		want, werr := json.Marshal(SprocketPayload{Sprocket: s})
		if err != nil || werr != nil || string(e.Payload) != string(want) {
			t.Fatalf("sprocket %d:\n got %s (%v)\nwant %s (%v)", i, e.Payload, err, want, werr)
		}
	}
}

// Whatever a message carries (the projector trusts nothing that arrives),
// Decode and the payload accessors answer without panicking, every error
// is EINVALID (parked, not retried), and an envelope that decodes encodes
// back to one that decodes the same.
func FuzzDecode(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, e := range []struct {
		typ, aggregate string
		payload        any
	}{
		{Created, Sprocket, SprocketPayload{Sprocket: domain.Sprocket{ID: 1, OrgID: 1, Version: 1}}},
		{SamplesAppended, Factory, FactoryPayload{Factory: domain.Factory{ID: 2, OrgID: 1, Version: 3}, Samples: []domain.Sample{{Time: 1, Actual: 2, Goal: 3}}}},
		{Deleted, Organization, OrganizationPayload{Sprockets: []int64{1, 2}}},
	} {
		env, err := New("id-1", e.typ, e.aggregate, 1, 1, 1, at, e.payload)
		if err != nil {
			f.Fatal(err)
		}
		b, err := env.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"id":"x","type":"created","aggregate_type":"sprocket","aggregate_id":1,"org_id":1,"version":1,"payload":{"sprocket":{"id":2,"version":1}}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			if domain.ErrorCode(err) != domain.EINVALID {
				t.Fatalf("Decode: %v, want EINVALID", err)
			}
			return
		}
		for _, perr := range []error{errOf(e.Sprocket()), errOf(e.Factory()), errOf(e.Organization())} {
			if perr != nil && domain.ErrorCode(perr) != domain.EINVALID {
				t.Fatalf("a payload accessor: %v, want EINVALID", perr)
			}
		}
		b, err := e.Encode()
		if err != nil {
			return // a payload encoding/json would not write back (not one the writer sends)
		}
		again, err := Decode(b)
		if err != nil || again.ID != e.ID || again.Version != e.Version || again.AggregateID != e.AggregateID {
			t.Fatalf("%s encoded back to %s, which decodes to %+v, %v", data, b, again, err)
		}
	})
}

func errOf[T any](_ T, err error) error { return err }
