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
	// fix is what the key should hold; nil when it should not exist.
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
			found = persisting(drifts, found)
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
		return drifts, p.repair(ctx, drifts)
	}
	return drifts, nil
}

// repair rewrites each drifted key from what Postgres says (under the Newer
// rule, after deleting it, so that a key ahead of Postgres is set back), or
// deletes it when it should not exist. A key whose version is no longer
// the one compared was written since: it is left to the next check.
func (p *Projector) repair(ctx context.Context, drifts []Drift) error {
	for _, d := range drifts {
		if d.fix != nil {
			now, ok, err := p.cache.Get(ctx, d.Key, false)
			if err != nil {
				return err
			}
			if ok && now.Version != d.seen || !ok && d.seen != 0 {
				continue
			}
		}
		if err := p.cache.Delete(ctx, d.Key); err != nil {
			return err
		}
		if w := d.fix; w != nil {
			if _, err := p.cache.Apply(ctx, readmodel.Write{Org: w.Entry.Org, Rule: readmodel.Newer, Records: []readmodel.Record{w.Record}, Index: w.index}); err != nil {
				return err
			}
		}
	}
	return nil
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
		d, err := p.diffOrg(ctx, org, known, nil)
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
	sort.Slice(drifts, func(i, j int) bool { return drifts[i].Key < drifts[j].Key })
	return drifts, nil
}

// diffOrg compares org's keys with Postgres, and adds them to known when
// it is not nil; each drift keeps what its key should hold, and nothing
// else is kept, so that a long history is never held whole. Keys are read
// from Redis 500 at a time, in one round trip each. After each 500 keys,
// pace (when not nil) is told how long the step took (reading from
// Postgres what they should hold included).
func (p *Projector) diffOrg(ctx context.Context, org int64, known map[string]bool, pace func(took time.Duration) error) ([]Drift, error) {
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
					d := Drift{Key: w.Key, Problem: problem, fix: &w}
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

// persisting returns the drifts of next that were drifts in prev too. A
// key ahead of Postgres persists only if it is the same version in both
// (so nothing wrote it in between) and still ahead of the later read: a
// key that moved was being written, and the check, whose reads of
// Postgres are older than its reads of Redis, must not set it back.
func persisting(prev, next []Drift) []Drift {
	before := make(map[string]Drift, len(prev))
	for _, d := range prev {
		before[d.Key] = d
	}
	var out []Drift
	for _, d := range next {
		if b, ok := before[d.Key]; ok && b.ahead == d.ahead {
			out = append(out, d)
		}
	}
	return out
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
