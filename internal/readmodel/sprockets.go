package readmodel

import (
	"bytes"
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/jsonenc"
)

// The body of GET /api/sprockets holds every live sprocket of an
// organization, tens of thousands under load. Building it whole costs a read
// of every row, so a change is patched into the body instead: the items of
// the sprockets that changed are replaced, added or removed, the others are
// copied as they are. Both paths write items with appendCompatSprocket, so a
// patched body is byte for byte the body a full build gives.

const (
	sprocketsOpen  = `{"sprockets":[`
	sprocketsClose = `]}`
	itemOpen       = `{"id":`
)

// SprocketsCompatBody is GET /api/sprockets: the seed file's shape.
// Tombstones are left out; sprockets come in id order.
func SprocketsCompatBody(all []domain.Sprocket) []byte {
	b := make([]byte, 0, len(sprocketsOpen)+len(sprocketsClose)+96*len(all))
	b = append(b, sprocketsOpen...)
	for _, s := range sortedByID(all) {
		if !s.Deleted() {
			b = appendCompatSprocket(itemSeparator(b), s)
		}
	}
	return append(b, sprocketsClose...)
}

// OrgSprocketsRecord returns the entry of GET /api/sprockets for org, from
// every sprocket it ever had (tombstones give members, not items).
func OrgSprocketsRecord(org int64, all []domain.Sprocket) Record {
	all = sortedByID(all)
	e := Entry{Org: org, Members: make(Members, 16*len(all))}
	for i, s := range all {
		e.Members.set(i, s.ID, s.Version)
		e.Version += s.Version
	}
	e.Body = SprocketsCompatBody(all)
	e.ETag = HashETag(e.Body)
	return Record{OrgSprocketsKey(org), e}
}

// PatchOrgSprockets returns the entry of GET /api/sprockets for org that
// base becomes once the sprockets in changed, as they now are, replace what
// base holds of them. A sprocket base already holds at its version or a
// newer one is left as it is. ok is false when base was not written by this
// package (its body or members do not parse, or disagree): the caller must
// build the entry whole.
func PatchOrgSprockets(org int64, base Entry, changed []domain.Sprocket) (rec Record, ok bool) {
	if len(base.Members)%16 != 0 {
		return Record{}, false
	}
	n := base.Members.Len()
	items, ok := splitItems(base.Body, n)
	if !ok {
		return Record{}, false
	}
	changed = sortedByID(changed)
	e := Entry{Org: org, Members: make(Members, 0, len(base.Members)+16*len(changed))}
	body := make([]byte, 0, len(base.Body)+96*len(changed))
	body = append(body, sprocketsOpen...)
	member := func(id, version int64) {
		e.Members = e.Members.append(id, version)
		e.Version += version
	}
	// Walk the members, the items (the live members) and the changes
	// together, in id order.
	m, it, c := 0, 0, 0
	for m < n || c < len(changed) {
		var mid int64 = math.MaxInt64
		if m < n {
			mid = base.Members.id(m)
		}
		if it < len(items) && (m >= n || items[it].id < mid) {
			return Record{}, false // an item that is not a member
		}
		live := it < len(items) && items[it].id == mid
		if c < len(changed) && (changed[c].ID < mid ||
			changed[c].ID == mid && changed[c].Version > base.Members.version(m)) {
			// A sprocket new to the collection, or newer than base holds.
			s := changed[c]
			member(s.ID, s.Version)
			if !s.Deleted() {
				body = appendCompatSprocket(itemSeparator(body), s)
			}
			c = next(changed, c)
			if s.ID < mid {
				continue
			}
		} else {
			if c < len(changed) && changed[c].ID == mid {
				c = next(changed, c) // not newer than what base holds
			}
			member(mid, base.Members.version(m))
			if live {
				body = append(itemSeparator(body), items[it].text...)
			}
		}
		m++
		if live {
			it++
		}
	}
	if it != len(items) {
		return Record{}, false
	}
	e.Body = append(body, sprocketsClose...)
	e.ETag = HashETag(e.Body)
	return Record{OrgSprocketsKey(org), e}, true
}

// itemSeparator appends the comma that goes before an item of a body,
// unless the body holds no item yet.
func itemSeparator(body []byte) []byte {
	if len(body) > len(sprocketsOpen) {
		return append(body, ',')
	}
	return body
}

// next skips the other entries of changed[c]'s id (the newest is first).
func next(changed []domain.Sprocket, c int) int {
	id := changed[c].ID
	for c < len(changed) && changed[c].ID == id {
		c++
	}
	return c
}

type bodyItem struct {
	id   int64
	text []byte
}

// splitItems returns the items of a body SprocketsCompatBody wrote. The
// items are flat objects of numbers, so each ends at its first '}'.
func splitItems(body []byte, n int) ([]bodyItem, bool) {
	rest, found := bytes.CutPrefix(body, []byte(sprocketsOpen))
	if !found {
		return nil, false
	}
	rest, found = bytes.CutSuffix(rest, []byte(sprocketsClose))
	if !found {
		return nil, false
	}
	items := make([]bodyItem, 0, n)
	for len(rest) > 0 {
		if len(items) > 0 {
			if rest[0] != ',' {
				return nil, false
			}
			rest = rest[1:]
		}
		end := bytes.IndexByte(rest, '}')
		if end < 0 || !bytes.HasPrefix(rest, []byte(itemOpen)) {
			return nil, false
		}
		text := rest[:end+1]
		id, ok := leadingID(text[len(itemOpen):])
		if !ok || (len(items) > 0 && id <= items[len(items)-1].id) {
			return nil, false
		}
		items = append(items, bodyItem{id, text})
		rest = rest[end+1:]
	}
	return items, true
}

// leadingID parses the id that starts an item's text, up to its comma.
func leadingID(b []byte) (int64, bool) {
	var id int64
	for i, c := range b {
		switch {
		case c == ',' && i > 0:
			return id, true
		case c < '0' || c > '9' || i > 17:
			return 0, false
		}
		id = 10*id + int64(c-'0')
	}
	return 0, false
}

// appendCompatSprocket appends s as an item of the compatibility bodies,
// exactly as encoding/json writes compatSprocket.
func appendCompatSprocket(b []byte, s domain.Sprocket) []byte {
	b = append(b, itemOpen...)
	b = strconv.AppendInt(b, s.ID, 10)
	b = append(b, ',')
	b = jsonenc.SprocketSpec(b, s.SprocketSpec)
	return append(b, '}')
}

// sortedByID returns all in id order, newest version first among equal ids,
// sorting a copy only when it is not already so.
func sortedByID(all []domain.Sprocket) []domain.Sprocket {
	byID := func(a, b domain.Sprocket) int {
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(b.Version, a.Version)
	}
	if slices.IsSortedFunc(all, byID) {
		return all
	}
	all = slices.Clone(all)
	slices.SortFunc(all, byID)
	return all
}
