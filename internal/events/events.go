// Package events defines the events the writer records in its outbox and the
// projector consumes: their envelope, types, subjects and JSON encoding.
package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/jsonenc"
)

// Aggregate types.
const (
	Sprocket = "sprocket"
	Factory  = "factory"
)

// Event types, per aggregate.
const (
	Created         = "created"
	Updated         = "updated"
	Deleted         = "deleted"
	SamplesAppended = "samples_appended"
)

// SubjectPrefix is the first token of every event subject; the stream
// captures SubjectPrefix + ".>".
const SubjectPrefix = "events"

// Envelope is one event as published: who it is about, at which version of
// that aggregate, and what happened.
type Envelope struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	AggregateType string          `json:"aggregate_type"`
	AggregateID   int64           `json:"aggregate_id"`
	OrgID         int64           `json:"org_id"`
	Version       int64           `json:"version"`
	OccurredAt    time.Time       `json:"occurred_at"`
	Payload       json.RawMessage `json:"payload"`
}

// Subject returns events.<aggregate>.<id>.<type>.
func (e Envelope) Subject() string { return aggregateSubject(e.AggregateType, e.AggregateID) + e.Type }

// AggregateFilter returns the subject filter of every event of one
// aggregate: events.<aggregate>.<id>.>.
func AggregateFilter(aggregate string, id int64) string { return aggregateSubject(aggregate, id) + ">" }

func aggregateSubject(aggregate string, id int64) string {
	return SubjectPrefix + "." + aggregate + "." + strconv.FormatInt(id, 10) + "."
}

// SprocketPayload carries a sprocket's whole state after the change.
type SprocketPayload struct {
	Sprocket domain.Sprocket `json:"sprocket"`
}

// appendJSON appends the payload exactly as encoding/json writes it.
func (p SprocketPayload) appendJSON(b []byte) []byte {
	s := p.Sprocket
	b = append(b, `{"sprocket":{"id":`...)
	b = strconv.AppendInt(b, s.ID, 10)
	b = append(b, `,"org_id":`...)
	b = strconv.AppendInt(b, s.OrgID, 10)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, s.Version, 10)
	b = append(b, ',')
	b = jsonenc.SprocketSpec(b, s.SprocketSpec)
	b = append(b, `,"created_at":`...)
	b = jsonenc.Time(b, s.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = jsonenc.Time(b, s.UpdatedAt)
	if s.DeletedAt != nil {
		b = append(b, `,"deleted_at":`...)
		b = jsonenc.Time(b, *s.DeletedAt)
	}
	return append(b, "}}"...)
}

// FactoryPayload carries a factory's summary after the change and, for
// creation and appends, the samples that were added.
type FactoryPayload struct {
	Factory domain.Factory  `json:"factory"`
	Samples []domain.Sample `json:"samples,omitempty"`
}

// New returns an envelope with the payload encoded.
func New(id, typ, aggregate string, aggID, orgID, version int64, at time.Time, payload any) (Envelope, error) {
	var raw []byte
	if p, ok := payload.(SprocketPayload); ok {
		raw = p.appendJSON(make([]byte, 0, 256)) // every sprocket write has one
	} else {
		var err error
		if raw, err = json.Marshal(payload); err != nil {
			return Envelope{}, fmt.Errorf("encode %s.%s payload: %w", aggregate, typ, err)
		}
	}
	return Envelope{
		ID: id, Type: typ, AggregateType: aggregate, AggregateID: aggID,
		OrgID: orgID, Version: version, OccurredAt: at.UTC(), Payload: raw,
	}, nil
}

// Encode returns the envelope's JSON, byte for byte what encoding/json makes
// of it. It is written by hand: the relay encodes every event, and
// reflection and re-compacting the payload took most of that time.
func (e Envelope) Encode() ([]byte, error) {
	if !json.Valid(e.Payload) {
		return nil, fmt.Errorf("event %s: payload is not JSON: %q", e.ID, e.Payload)
	}
	if y := e.OccurredAt.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("event %s: occurred in year %d", e.ID, y)
	}
	b := make([]byte, 0, 160+len(e.Payload))
	b = append(b, `{"id":`...)
	b = jsonenc.String(b, e.ID)
	b = append(b, `,"type":`...)
	b = jsonenc.String(b, e.Type)
	b = append(b, `,"aggregate_type":`...)
	b = jsonenc.String(b, e.AggregateType)
	b = append(b, `,"aggregate_id":`...)
	b = strconv.AppendInt(b, e.AggregateID, 10)
	b = append(b, `,"org_id":`...)
	b = strconv.AppendInt(b, e.OrgID, 10)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, e.Version, 10)
	b = append(b, `,"occurred_at":`...)
	b = jsonenc.Time(b, e.OccurredAt)
	b = append(b, `,"payload":`...)
	payload := []byte(e.Payload)
	if !compact(payload) {
		var err error
		if payload, err = json.Marshal(e.Payload); err != nil {
			return nil, fmt.Errorf("event %s: payload: %w", e.ID, err)
		}
	}
	b = append(b, payload...)
	return append(b, '}'), nil
}

// compact reports whether valid JSON raw has no whitespace outside its
// strings, so that encoding/json would copy it as it is.
func compact(raw []byte) bool {
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case inString && c == '\\':
			i++ // the escaped byte
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		case c == '<' || c == '>' || c == '&' || c >= 0x80:
			return false // escaped by encoding/json: leave it to encoding/json
		}
	}
	return true
}

// Decode parses and checks an envelope. A malformed one is an EINVALID
// *domain.Error: redelivering it cannot help.
func Decode(data []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return Envelope{}, domain.Errorf(domain.EINVALID, "decode event: %v", err)
	}
	if err := e.check(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

func (e Envelope) check() error {
	known := map[string][]string{
		Sprocket:     {Created, Updated, Deleted},
		Factory:      {Created, Updated, Deleted, SamplesAppended},
		Organization: {Deleted},
	}
	types, ok := known[e.AggregateType]
	switch {
	case e.ID == "":
		return domain.Errorf(domain.EINVALID, "event has no id")
	case !ok:
		return domain.Errorf(domain.EINVALID, "event %s: unknown aggregate type %q", e.ID, e.AggregateType)
	case !contains(types, e.Type):
		return domain.Errorf(domain.EINVALID, "event %s: unknown type %q for %s", e.ID, e.Type, e.AggregateType)
	case e.AggregateID < 1 || e.OrgID < 1 || e.Version < 1:
		return domain.Errorf(domain.EINVALID, "event %s: aggregate id, org id and version must be positive", e.ID)
	case len(e.Payload) == 0:
		return domain.Errorf(domain.EINVALID, "event %s: no payload", e.ID)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Sprocket decodes the payload of a sprocket event.
func (e Envelope) Sprocket() (SprocketPayload, error) {
	var p SprocketPayload
	if err := decodePayload(e, Sprocket, &p); err != nil {
		return p, err
	}
	if p.Sprocket.ID != e.AggregateID || p.Sprocket.Version != e.Version {
		return p, domain.Errorf(domain.EINVALID, "event %s: payload disagrees with envelope", e.ID)
	}
	return p, nil
}

// Factory decodes the payload of a factory event.
func (e Envelope) Factory() (FactoryPayload, error) {
	var p FactoryPayload
	if err := decodePayload(e, Factory, &p); err != nil {
		return p, err
	}
	if p.Factory.ID != e.AggregateID || p.Factory.Version != e.Version {
		return p, domain.Errorf(domain.EINVALID, "event %s: payload disagrees with envelope", e.ID)
	}
	return p, nil
}

func decodePayload(e Envelope, aggregate string, into any) error {
	if e.AggregateType != aggregate {
		return domain.Errorf(domain.EINVALID, "event %s is about a %s, not a %s", e.ID, e.AggregateType, aggregate)
	}
	if err := json.Unmarshal(e.Payload, into); err != nil {
		return domain.Errorf(domain.EINVALID, "event %s: decode payload: %v", e.ID, err)
	}
	return nil
}

// Outgoing is an encoded event on its way to the broker.
type Outgoing struct {
	ID      string // the event id, used as the broker's de-duplication id
	Subject string
	Body    []byte
}

// Organization is the aggregate type of organization events; its one event
// is Deleted, in parts when the organization owned much.
const Organization = "organization"

// OrganizationPayload lists what a deleted organization owned, so that the
// projector removes every key of it.
type OrganizationPayload struct {
	Organization domain.Organization `json:"organization"`
	Sprockets    []int64             `json:"sprockets"`
	Factories    []domain.Factory    `json:"factories"`
}

// Organization decodes the payload of an organization event.
func (e Envelope) Organization() (OrganizationPayload, error) {
	var p OrganizationPayload
	if err := decodePayload(e, Organization, &p); err != nil {
		return p, err
	}
	if p.Organization.ID != e.AggregateID {
		return p, domain.Errorf(domain.EINVALID, "event %s: payload disagrees with envelope", e.ID)
	}
	return p, nil
}
