package readmodel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/jsonenc"
	"github.com/sprockets-api/sprockets/internal/publicid"
)

// mustJSON encodes values built from domain types, which cannot fail to
// encode; a failure is a programming error.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("readmodel: encode %T: %v", v, err))
	}
	return b
}

// SprocketBody is GET /v1/sprockets/{id}; ids makes its id.
func SprocketBody(ids *publicid.Codec, s domain.Sprocket) []byte {
	return appendSprocket(make([]byte, 0, 256), ids, s)
}

// appendSprocket appends s as the /v1 routes show a sprocket, alone or in a
// list: the compatibility item's fields, written by hand (see
// appendCompatSprocket), under its public id, with its version and times.
func appendSprocket(b []byte, ids *publicid.Codec, s domain.Sprocket) []byte {
	b = append(b, `{"id":`...)
	b = jsonenc.String(b, ids.Encode(publicid.Sprocket, s.ID))
	b = append(b, ',')
	b = jsonenc.SprocketSpec(b, s.SprocketSpec)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, s.Version, 10)
	b = append(b, `,"created_at":`...)
	b = jsonenc.Time(b, s.CreatedAt)
	b = append(b, `,"updated_at":`...)
	b = jsonenc.Time(b, s.UpdatedAt)
	return append(b, '}')
}

// SprocketCompatBody is GET /api/sprocket/{id}: the seed file's item shape
// with the id.
func SprocketCompatBody(s domain.Sprocket) []byte {
	return appendCompatSprocket(make([]byte, 0, 128), s)
}

type v1Factory struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Version     int64     `json:"version"`
	SampleCount int64     `json:"sample_count"`
	FirstTime   *int64    `json:"first_time"`
	LastTime    *int64    `json:"last_time"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func v1FactoryOf(ids *publicid.Codec, f domain.Factory) v1Factory {
	return v1Factory{ID: ids.Encode(publicid.Factory, f.ID), Name: f.Name, Version: f.Version, SampleCount: f.SampleCount,
		FirstTime: f.FirstTime, LastTime: f.LastTime, CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt}
}

// FactoryBody is GET /v1/factories/{id}: the factory and a summary of its
// history (the history itself is at .../chart-data).
func FactoryBody(ids *publicid.Codec, f domain.Factory) []byte { return mustJSON(v1FactoryOf(ids, f)) }

// The original routes' factory bodies hold whole histories (17 MB at a
// million samples): they are sent in pieces, most of them the columns of
// a history's segments (see history.go), byte for byte what encoding/json
// makes of the seed file's shape (the tests compare them), never joined
// into one buffer.

// Piece is a run of an answer's bytes, sent as it is. A piece that is a
// segment's column names the segment's key, the column and the segment's
// hash, so that its compressed forms can be kept; fixed text names none.
type Piece struct {
	Segment string // "" for fixed text
	Column  byte   // 'a', 'g' or 't' for a history's columns, 's' for sprockets
	Hash    uint64
	Bytes   []byte
}

// HeldSegment is a segment's columns, with its key and hash.
type HeldSegment struct {
	Key  string
	Hash uint64
	Columns
}

// Fixed pieces of the original routes' factory bodies.
var (
	pieceActual    = Piece{Bytes: []byte(`{"sprocket_production_actual":[`)}
	pieceGoal      = Piece{Bytes: []byte(`],"sprocket_production_goal":[`)}
	pieceTime      = Piece{Bytes: []byte(`],"time":[`)}
	pieceChartEnd  = Piece{Bytes: []byte(`]}`)}
	pieceComma     = Piece{Bytes: []byte(`,`)}
	pieceFactoryTo = Piece{Bytes: []byte(`}}`)}
	pieceListOpen  = Piece{Bytes: []byte(`{"factories":[`)}
	pieceListEnd   = Piece{Bytes: []byte(`]}`)}
)

// AppendChartPieces appends the chart_data object of a history whose
// segments are segs, in time order: GET /api/factory/{id}/chart-data.
func AppendChartPieces(out []Piece, segs []HeldSegment) []Piece {
	column := func(out []Piece, open Piece, col byte, pick func(Columns) []byte) []Piece {
		out = append(out, open)
		for i, s := range segs {
			if i > 0 {
				out = append(out, pieceComma)
			}
			out = append(out, Piece{Segment: s.Key, Column: col, Hash: s.Hash, Bytes: pick(s.Columns)})
		}
		return out
	}
	out = column(out, pieceActual, 'a', func(c Columns) []byte { return c.Actual })
	out = column(out, pieceGoal, 'g', func(c Columns) []byte { return c.Goal })
	out = column(out, pieceTime, 't', func(c Columns) []byte { return c.Time })
	return append(out, pieceChartEnd)
}

// AppendFactoryPieces appends the factory item of the original routes, for
// factory id whose history's segments are segs: GET /api/factory/{id}.
func AppendFactoryPieces(out []Piece, id int64, segs []HeldSegment) []Piece {
	out = append(out, Piece{Bytes: factoryHead(id)})
	out = AppendChartPieces(out, segs)
	return append(out, pieceFactoryTo)
}

// factoryHead is what comes before a factory's chart data.
func factoryHead(id int64) []byte {
	b := append([]byte(`{"factory":{"id":`), strconv.AppendInt(nil, id, 10)...)
	return append(b, `,"chart_data":`...)
}

// ChartSize is the length of the chart data of a history laid out as m.
func ChartSize(m Manifest) int {
	n := len(pieceActual.Bytes) + len(pieceGoal.Bytes) + len(pieceTime.Bytes) + len(pieceChartEnd.Bytes)
	for i, it := range m {
		n += it.Size
		if i > 0 {
			n += 3 * len(pieceComma.Bytes) // one in each column
		}
	}
	return n
}

// FactorySize is the length of the factory item of factory id, whose
// history is laid out as m.
func FactorySize(id int64, m Manifest) int {
	return len(factoryHead(id)) + ChartSize(m) + len(pieceFactoryTo.Bytes)
}

// FactoryHistory is one factory of GET /api/factories.
type FactoryHistory struct {
	ID       int64
	Segments []HeldSegment
}

// FactoriesPieces is GET /api/factories: the seed file's shape, with ids,
// for the live factories in order.
func FactoriesPieces(all []FactoryHistory) []Piece {
	out := []Piece{pieceListOpen}
	for i, f := range all {
		if i > 0 {
			out = append(out, pieceComma)
		}
		out = AppendFactoryPieces(out, f.ID, f.Segments)
	}
	return append(out, pieceListEnd)
}

// Size returns how many bytes pieces hold.
func Size(pieces []Piece) int {
	n := 0
	for _, p := range pieces {
		n += len(p.Bytes)
	}
	return n
}

// Join returns pieces as one body.
func Join(pieces []Piece) []byte {
	b := make([]byte, 0, Size(pieces))
	for _, p := range pieces {
		b = append(b, p.Bytes...)
	}
	return b
}

// ChartRangeBody is GET /v1/factories/{id}/chart-data?from=&to=: samples,
// and when the range holds more than one answer gives, nextFrom, the from
// of the rest (nil on the last page).
func ChartRangeBody(ids *publicid.Codec, factoryID, from, to int64, samples []domain.Sample, nextFrom *int64) []byte {
	return mustJSON(struct {
		FactoryID string           `json:"factory_id"`
		From      int64            `json:"from"`
		To        int64            `json:"to"`
		ChartData domain.ChartData `json:"chart_data"`
		NextFrom  *int64           `json:"next_from,omitempty"`
	}{ids.Encode(publicid.Factory, factoryID), from, to, domain.ChartDataOf(samples), nextFrom})
}

// SprocketListBody is a page of GET /v1/sprockets. next is the cursor of
// the following page, "" on the last.
func SprocketListBody(ids *publicid.Codec, items []domain.Sprocket, next string) []byte {
	b := append(make([]byte, 0, 64+200*len(items)), `{"items":[`...)
	for i, s := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendSprocket(b, ids, s)
	}
	b = append(b, `],"next_cursor":`...)
	if next == "" {
		b = append(b, "null"...)
	} else {
		b = jsonenc.String(b, next)
	}
	return append(b, '}')
}

// FactoryListBody is a page of GET /v1/factories.
func FactoryListBody(ids *publicid.Codec, items []domain.Factory, next string) []byte {
	out := make([]v1Factory, len(items))
	for i, f := range items {
		out[i] = v1FactoryOf(ids, f)
	}
	return listBody(out, next)
}

func listBody[T any](items []T, next string) []byte {
	var cursor *string
	if next != "" {
		cursor = &next
	}
	return mustJSON(struct {
		Items      []T     `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}{items, cursor})
}

// AuditListBody is a page of GET /v1/audit: entries as v1AuditEntryOf
// shows them.
func AuditListBody(ids *publicid.Codec, items []domain.AuditEntry, next string) []byte {
	out := make([]v1AuditEntry, len(items))
	for i, e := range items {
		out[i] = v1AuditEntryOf(ids, e)
	}
	return listBody(out, next)
}

// v1AuditEntry is an audit entry on /v1: no number the service counts up
// shows (they would count every organization's writes), so the entry, the
// token and the resource are named by opaque ids, and the organization
// (the caller's own) is left out.
type v1AuditEntry struct {
	ID           string          `json:"id"`
	TokenID      *string         `json:"token_id"`
	Actor        string          `json:"actor"`
	ClientAddr   string          `json:"client_addr"`
	UserAgent    string          `json:"user_agent"`
	RequestID    string          `json:"request_id"`
	Action       string          `json:"action"`
	ResourceType string          `json:"resource_type"`
	ResourceID   *string         `json:"resource_id"`
	Version      int64           `json:"version"`
	Changes      json.RawMessage `json:"changes"`
	At           time.Time       `json:"at"`
}

// resourceKinds names the kinds of ids of the resources /v1 shows.
var resourceKinds = map[string]publicid.Kind{events.Sprocket: publicid.Sprocket, events.Factory: publicid.Factory}

func v1AuditEntryOf(ids *publicid.Codec, e domain.AuditEntry) v1AuditEntry {
	out := v1AuditEntry{ID: ids.Encode(publicid.Audit, e.ID), Actor: e.Actor, ClientAddr: e.ClientAddr,
		UserAgent: e.UserAgent, RequestID: e.RequestID, Action: e.Action, ResourceType: e.ResourceType,
		Version: e.Version, Changes: e.Changes, At: e.At}
	if e.TokenID != nil {
		t := ids.Encode(publicid.Token, *e.TokenID)
		out.TokenID = &t
	}
	if kind, ok := resourceKinds[e.ResourceType]; ok {
		r := ids.Encode(kind, e.ResourceID)
		out.ResourceID = &r
		out.Changes = v1Changes(ids, kind, e.Changes)
	}
	return out
}

// v1Changes shows a change as /v1 shows its resource: every object in it
// with an "id" and an "org_id" is a resource of kind, whose number becomes
// its id and whose organization goes.
func v1Changes(ids *publicid.Codec, kind publicid.Kind, changes json.RawMessage) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(changes))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return json.RawMessage("null") // not JSON: nothing of it is shown
	}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if n, ok := x["id"].(json.Number); ok {
				if _, resource := x["org_id"]; resource {
					if id, err := n.Int64(); err == nil {
						x["id"] = ids.Encode(kind, id)
					} else {
						delete(x, "id")
					}
					delete(x, "org_id")
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return mustJSON(v)
}
