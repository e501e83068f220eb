// Package events defines the events the writer records in its outbox and the
// projector consumes: their envelope, types, subjects and JSON encoding.
package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
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
func (e Envelope) Subject() string {
	return SubjectPrefix + "." + e.AggregateType + "." + strconv.FormatInt(e.AggregateID, 10) + "." + e.Type
}

// SprocketPayload carries a sprocket's whole state after the change.
type SprocketPayload struct {
	Sprocket domain.Sprocket `json:"sprocket"`
}

// FactoryPayload carries a factory's summary after the change and, for
// creation and appends, the samples that were added.
type FactoryPayload struct {
	Factory domain.Factory  `json:"factory"`
	Samples []domain.Sample `json:"samples,omitempty"`
}

// New returns an envelope with the payload encoded.
func New(id, typ, aggregate string, aggID, orgID, version int64, at time.Time, payload any) (Envelope, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s.%s payload: %w", aggregate, typ, err)
	}
	return Envelope{
		ID: id, Type: typ, AggregateType: aggregate, AggregateID: aggID,
		OrgID: orgID, Version: version, OccurredAt: at.UTC(), Payload: raw,
	}, nil
}

// Encode returns the envelope's JSON.
func (e Envelope) Encode() ([]byte, error) { return json.Marshal(e) }

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
