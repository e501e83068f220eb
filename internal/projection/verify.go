package projection

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/sprockets-api/sprockets/internal/readmodel"
)

// Drift is one key whose content differs from what Postgres says it should
// be.
type Drift struct {
	Key     string
	Problem string
	// ahead is the key's version when it is newer than what was read of
	// Postgres. Such a key was most likely written after that read, so it
	// is drift only if it stays the same while Postgres stays behind it
	// (see persisting).
	ahead int64
	// fix is what the key should hold; nil when it should not exist, or
	// when it was not kept (the first of two comparisons).
	fix *want
	// seen is the key's version when it was compared (0: it was missing).
	seen int64
}

func (d Drift) String() string { return d.Key + ": " + d.Problem }

// Verify compares every key with Postgres. Keys still in flight are not
// drift: a difference must persist after settle to be reported. With repair,
// each drifted key is rewritten (or, if it should not exist, deleted).
func (p *Projector) Verify(ctx context.Context, settle time.Duration, repair bool) ([]Drift, error) {
	var drifts []Drift
	for attempt := 0; attempt < 3; attempt++ {
		found, err := p.diff(ctx)
		if err != nil {
			return nil, err
		}
		if attempt > 0 {
			found, _ = persisting(drifts, found)
		}
		if drifts = found; len(drifts) == 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(settle):
		}
	}
	if repair {
		if _, _, err := p.repair(ctx, drifts); err != nil {
			return nil, err
		}
	}
	sort.Slice(drifts, func(i, j int) bool { return drifts[i].Key < drifts[j].Key })
	return drifts, nil
}

// repair rewrites each drifted key from what Postgres says, in one guarded
// write onto the version it held when compared (Exact: a key ahead of
// Postgres is set back, and a key written since is left to the next
// check), in the order they were found (a history's segments before its
// manifest); a key that should not exist is deleted. It returns how many
// keys it rewrote or deleted, and how many it left because they moved.
func (p *Projector) repair(ctx context.Context, drifts []Drift) (repaired, moved int, err error) {
	for _, d := range drifts {
		w := d.fix
		if w == nil {
			if err := p.cache.Delete(ctx, d.Key); err != nil {
				return repaired, moved, err
			}
			repaired++
			continue
		}
		res, err := p.cache.Apply(ctx, readmodel.Write{Org: w.Entry.Org, Rule: readmodel.Exact, Expected: []int64{d.seen},
			Records: []readmodel.Record{w.Record}, Index: w.index})
		if err != nil {
			return repaired, moved, err
		}
		if res[0][0] == readmodel.Written {
			repaired++
		} else {
			moved++
		}
	}
	return repaired, moved, nil
}

// diff compares every organization's keys with Postgres, and lists the keys
// that no organization should have.
func (p *Projector) diff(ctx context.Context) ([]Drift, error) {
	orgs, err := p.src.OrgIDs(ctx)
	if err != nil {
		return nil, err
	}
	known := make(map[string]bool)
	var drifts []Drift
	for _, org := range orgs {
		d, err := p.diffOrg(ctx, org, known, true, nil)
		if err != nil {
			return nil, err
		}
		drifts = append(drifts, d...)
	}
	keys, err := p.cache.Keys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if !known[k] {
			drifts = append(drifts, Drift{Key: k, Problem: "key should not exist"})
		}
	}
	return drifts, nil
}

// diffOrg compares org's keys with Postgres, in the order expected makes
// them, and adds them to known when it is not nil. With fixes, each drift
// keeps what its key should hold; nothing else is kept, so that what is
// held is the records of the keys that differ, not a whole history. Keys
// are read from Redis 500 at a time, in one round trip each. After each
// 500 keys, pace (when not nil) is told how long the step took (reading
// from Postgres what they should hold included).
func (p *Projector) diffOrg(ctx context.Context, org int64, known map[string]bool, fixes bool, pace func(took time.Duration) error) ([]Drift, error) {
	var drifts []Drift
	last := time.Now()
	err := p.expected(ctx, org, func(ws []want) error {
		for start := 0; start < len(ws); start += 500 {
			chunk := ws[start:min(start+500, len(ws))]
			keys := make([]string, len(chunk))
			for i, w := range chunk {
				keys[i] = w.Key
			}
			got, oks, err := p.cache.GetMany(ctx, keys)
			if err != nil {
				return err
			}
			for i, w := range chunk {
				if known != nil {
					known[w.Key] = true
				}
				if w.Entry.Members != nil { // a list's segment: its members too
					if got[i], oks[i], err = p.cache.Get(ctx, w.Key, true); err != nil {
						return err
					}
				}
				if problem := differs(got[i], oks[i], w); problem != "" {
					d := Drift{Key: w.Key, Problem: problem}
					if fixes {
						d.fix = &w
					}
					if oks[i] {
						d.seen = got[i].Version
					}
					if oks[i] && got[i].Org == w.Entry.Org && got[i].Version > w.Entry.Version {
						d.ahead = got[i].Version
					}
					drifts = append(drifts, d)
				}
			}
			if pace != nil {
				if err := pace(time.Since(last)); err != nil {
					return err
				}
				last = time.Now()
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify org %d: %w", org, err)
	}
	return drifts, nil
}

// persisting returns the drifts of next that were drifts in prev too, and
// how many of those it left out. A key ahead of Postgres persists only if
// it is the same version in both (so nothing wrote it in between) and
// still ahead of the later read: a key that moved was being written, and
// the check, whose reads of Postgres are older than its reads of Redis,
// must not set it back.
func persisting(prev, next []Drift) (out []Drift, moved int) {
	before := make(map[string]Drift, len(prev))
	for _, d := range prev {
		before[d.Key] = d
	}
	for _, d := range next {
		b, ok := before[d.Key]
		switch {
		case !ok:
		case b.ahead == d.ahead:
			out = append(out, d)
		default:
			moved++
		}
	}
	return out, moved
}

// differs says how got (ok: the key exists) differs from what w wants, or
// "" when it does not.
func differs(got readmodel.Entry, ok bool, w want) string {
	want := w.Entry
	switch {
	case !ok && want.Version == 0:
		return "" // a collection nothing was ever added to: the reader's fallback serves it
	case !ok:
		return "missing"
	case got.Org != want.Org: // never changes: whatever the versions, drift
		return fmt.Sprintf("owner %d, want %d", got.Org, want.Org)
	case got.Version > want.Version:
		return fmt.Sprintf("version %d, ahead of Postgres's %d", got.Version, want.Version)
	case !w.bodyOnly && got.Version != want.Version:
		return fmt.Sprintf("version %d, want %d", got.Version, want.Version)
	case got.Deleted != want.Deleted:
		return fmt.Sprintf("deleted %t, want %t", got.Deleted, want.Deleted)
	case !bytes.Equal(got.Body, want.Body):
		return "body differs"
	case got.ETag != want.ETag:
		return fmt.Sprintf("etag %s, want %s", got.ETag, want.ETag)
	case !equalPtr(got.First, want.First) || !equalPtr(got.Last, want.Last):
		return "history bounds differ"
	case !bytes.Equal(got.Members, want.Members):
		return "collection member versions differ"
	}
	return ""
}

func equalPtr(a, b *int64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
