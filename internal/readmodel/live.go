package readmodel

import (
	"strconv"
	"strings"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// An organization's live changes are a log the projector appends to once
// each change is in the read model, and the readers send to dashboards as
// Server-Sent Events (GET /v1/stream). Each change carries what a client
// needs to apply it without another read: the resource as GET returns it,
// or the samples appended.

// The live logs' keys are not entries of the read model (verify and
// rebuild leave them be): each is a log of what happened, not a body.
const livePrefix = "live:org:"

// LiveKey holds organization org's log of changes (a Redis stream).
func LiveKey(org int64) string { return livePrefix + id(org) }

// LiveSeenKey holds, per aggregate, the newest version in org's log: a
// change is logged once, however often its event is delivered.
func LiveSeenKey(org int64) string { return livePrefix + id(org) + ":seen" }

// LiveTrimmedKey holds the id of the newest entry trimmed from org's log:
// a client that resumes after an older one has missed entries.
func LiveTrimmedKey(org int64) string { return livePrefix + id(org) + ":trimmed" }

// LiveOrg returns the organization whose log key is, and whether key is
// one.
func LiveOrg(key string) (int64, bool) {
	n, ok := strings.CutPrefix(key, livePrefix)
	if !ok {
		return 0, false
	}
	org, err := strconv.ParseInt(n, 10, 64)
	return org, err == nil && org > 0
}

// Kinds of live changes, as the stream's kinds filter names them.
const (
	LiveSprocket = "sprocket"
	LiveFactory  = "factory"
)

// Types of live changes: the SSE event names.
const (
	SprocketCreated = "sprocket.created"
	SprocketUpdated = "sprocket.updated"
	SprocketDeleted = "sprocket.deleted"
	FactoryCreated  = "factory.created"
	FactoryUpdated  = "factory.updated"
	FactoryDeleted  = "factory.deleted"
	// FactorySamples carries the samples appended to a factory.
	FactorySamples = "factory.samples"
	// FactoryRebuilt says that a factory's history changed in ways no
	// event describes (the projector rebuilt it after a gap, or more
	// samples were appended at once than a change carries): a client
	// should read its chart again.
	FactoryRebuilt = "factory.rebuilt"
)

// LiveReset is the type of a log entry that tells every stream to read
// again what it shows: changes were written that the log missed.
const LiveReset = "reset"

// LiveGap is the entry that says the log missed changes, at time now (its
// version: each one is logged).
func LiveGap(now time.Time) Change {
	return Change{Kind: LiveReset, Version: now.UnixNano(), Type: LiveReset, Data: []byte(`{"reason":"log_gap"}`)}
}

// Change is one entry of an organization's live log.
type Change struct {
	Kind    string // LiveSprocket or LiveFactory
	ID      int64  // the aggregate's id
	Version int64  // the aggregate's version after the change
	Type    string // what happened: SprocketCreated, ...
	Data    []byte // the SSE event's data: one line of JSON
}

// Aggregate names the change's aggregate, for the log's deduplication.
func (c Change) Aggregate() string { return c.Kind + ":" + id(c.ID) }

// SprocketChange is a change of sprocket s: its /v1 body, or for a
// deletion its id and version.
func SprocketChange(ids *publicid.Codec, typ string, s domain.Sprocket) Change {
	c := Change{Kind: LiveSprocket, ID: s.ID, Version: s.Version, Type: typ}
	if s.Deleted() {
		c.Type, c.Data = SprocketDeleted, deletedData(ids.Encode(publicid.Sprocket, s.ID), s.Version)
	} else {
		c.Data = SprocketBody(ids, s)
	}
	return c
}

// FactoryChange is a change of factory f. A FactorySamples change carries
// the samples appended, in the shape of GET /v1/factories/{id}/chart-data;
// the others carry f's /v1 body, or for a deletion its id and version.
func FactoryChange(ids *publicid.Codec, typ string, f domain.Factory, samples []domain.Sample) Change {
	c := Change{Kind: LiveFactory, ID: f.ID, Version: f.Version, Type: typ}
	switch {
	case f.Deleted():
		c.Type, c.Data = FactoryDeleted, deletedData(ids.Encode(publicid.Factory, f.ID), f.Version)
	case typ == FactorySamples:
		c.Data = mustJSON(struct {
			FactoryID string           `json:"factory_id"`
			Version   int64            `json:"version"`
			ChartData domain.ChartData `json:"chart_data"`
		}{ids.Encode(publicid.Factory, f.ID), f.Version, domain.ChartDataOf(samples)})
	default:
		c.Data = FactoryBody(ids, f)
	}
	return c
}

func deletedData(publicID string, version int64) []byte {
	return mustJSON(struct {
		ID      string `json:"id"`
		Version int64  `json:"version"`
		Deleted bool   `json:"deleted"`
	}{publicID, version, true})
}

// LiveEntry is a change as its log holds it, with the entry's id (a Redis
// stream id, "milliseconds-sequence"): the SSE event id.
type LiveEntry struct {
	ID string
	Change
}

// LiveLog is what an organization's live log holds past a position.
type LiveLog struct {
	// Exists is false when there is no log: nothing was ever logged, or
	// Redis lost it.
	Exists bool
	// Last is the id of the newest entry ever added; Trimmed that of the
	// newest trimmed ("0-0": none).
	Last, Trimmed string
	// HoldsAfter says whether the entry at the position read from is in
	// the log: one newer than Trimmed that is not was lost with Redis's
	// data (a restart without it, or from an older snapshot).
	HoldsAfter bool
	// Entries are the entries past the position, oldest first.
	Entries []LiveEntry
}
