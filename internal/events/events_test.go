package events

import (
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
