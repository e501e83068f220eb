package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sprockets-api/sprockets/internal/devstack"
	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
	"github.com/sprockets-api/sprockets/internal/postgres"
	"github.com/sprockets-api/sprockets/internal/postgres/pgtest"
	"github.com/sprockets-api/sprockets/internal/publicid"
	"github.com/sprockets-api/sprockets/internal/readmodel"
)

var pgLeader, pgReplica *devstack.Postgres

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// ids makes the /v1 ids of the bodies the tests build.
var ids = func() *publicid.Codec {
	c, err := publicid.New("the key of this package's tests, 32+ bytes")
	if err != nil {
		panic(err)
	}
	return c
}()

func testMain(m *testing.M) int {
	return pgtest.Main(m, true, func(leader, replica *devstack.Postgres) { pgLeader, pgReplica = leader, replica })
}

// fresh returns a store on a new, migrated database of its own.
func fresh(t *testing.T) (*postgres.Store, *sqlx.DB) {
	t.Helper()
	db, _ := pgtest.Fresh(t, pgLeader)
	if n, err := postgres.Migrate(context.Background(), db); err != nil || n != 0 {
		t.Fatalf("a second migrate applied %d: %v", n, err)
	}
	return pgtest.Store(t, db), db
}

// replicaOf waits until the replica has replayed what the leader has
// written, then connects to its copy of db's database.
func replicaOf(t *testing.T, db *sqlx.DB) *sqlx.DB {
	t.Helper()
	var name string
	if err := db.Get(&name, `SELECT current_database()`); err != nil {
		t.Fatal(err)
	}
	if err := devstack.WaitReplay(context.Background(), pgLeader, pgReplica, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	rdb, err := postgres.Connect(pgReplica.URL(name), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

var spec = domain.SprocketSpec{Teeth: 5, PitchDiameter: 6.35, OutsideDiameter: 7.1, Pitch: 0.1}

// outbox returns the events recorded so far, in order.
func outbox(t *testing.T, db *sqlx.DB) []events.Envelope {
	t.Helper()
	var after int64
	return pgtest.Events(t, db, &after)
}

// The bodies built from an event equal the bodies built from the row read
// back: the projector's fast path and every rebuild agree byte for byte.
func TestEventPayloadsRenderLikeRows(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	reads := postgres.NewReads(db)
	sp, r, err := s.CreateSprocket(ctx, domain.System(domain.DefaultOrgID, "test"), spec, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	if sp.ID == 0 || r.Version != 1 || r.LSN == "" {
		t.Fatalf("created %+v %+v", sp, r)
	}
	upd, _, err := s.UpdateSprocket(ctx, domain.System(domain.DefaultOrgID, "test"), sp.ID, 1, func(x domain.SprocketSpec) domain.SprocketSpec { x.Teeth = 9; return x })
	if err != nil {
		t.Fatal(err)
	}
	evs := outbox(t, db)
	if len(evs) != 2 || evs[0].Type != events.Created || evs[1].Type != events.Updated || evs[1].Version != 2 {
		t.Fatalf("events %+v", evs)
	}
	stored, err := reads.Sprocket(ctx, sp.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []domain.Sprocket{sp, upd} {
		raw, _ := evs[i].Encode()
		e, err := events.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.Sprocket()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := readmodel.SprocketBody(ids, p.Sprocket), readmodel.SprocketBody(ids, want); string(got) != string(want) {
			t.Errorf("event %d renders\n %s\nthe write returned\n %s", i, got, want)
		}
	}
	if got, want := readmodel.SprocketBody(ids, upd), readmodel.SprocketBody(ids, stored); string(got) != string(want) {
		t.Errorf("the row renders\n %s\nthe update returned\n %s", want, got)
	}
}

// The commit hook hands over the very events the outbox holds, so that the
// relay may publish them without reading them back: grouped creates (whose
// rows the database writes), a create that fails on its key (nothing to
// hand over), updates, deletes and factory writes.
func TestCommitHookHandsOverTheOutboxEvents(t *testing.T) {
	ctx := context.Background()
	db, _ := pgtest.Fresh(t, pgLeader)
	var (
		mu     sync.Mutex
		handed = map[string]events.Envelope{}
	)
	s, err := postgres.NewStore(ctx, db, postgres.WithCommitHook(func(envs []events.Envelope) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range envs {
			if _, ok := handed[e.ID]; ok {
				t.Errorf("event %s handed over twice", e.ID)
			}
			handed[e.ID] = e
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	actor := domain.System(domain.DefaultOrgID, "test")
	taken := domain.Idempotency{Key: "taken", Hash: []byte("first")}
	if _, _, err := s.CreateSprocket(ctx, actor, spec, taken); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 17 {
		wg.Go(func() {
			sp, idem := spec, domain.Idempotency{}
			sp.PitchDiameter += float64(i) / 3
			if i == 16 {
				idem = domain.Idempotency{Key: "taken", Hash: []byte("another")}
			}
			if _, _, err := s.CreateSprocket(ctx, actor, sp, idem); (err != nil) != (i == 16) {
				t.Errorf("create %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	sp, _, err := s.CreateSprocket(ctx, actor, spec, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UpdateSprocket(ctx, actor, sp.ID, 0, func(x domain.SprocketSpec) domain.SprocketSpec { x.Teeth = 9; return x }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteSprocket(ctx, actor, sp.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateFactory(ctx, actor, domain.FactorySpec{Name: "F"}, []domain.Sample{{Time: 7300, Actual: 2, Goal: 3}}, domain.Idempotency{}); err != nil {
		t.Fatal(err)
	}
	stored := outbox(t, db)
	mu.Lock()
	defer mu.Unlock()
	if len(stored) != 21 || len(handed) != len(stored) {
		t.Fatalf("the outbox holds %d events, %d were handed over; want 21", len(stored), len(handed))
	}
	for _, want := range stored {
		got, ok := handed[want.ID]
		if !ok {
			t.Errorf("event %s (%s) was not handed over", want.ID, want.Subject())
			continue
		}
		if got.Subject() != want.Subject() || got.Version != want.Version || got.OrgID != want.OrgID || !got.OccurredAt.Equal(want.OccurredAt) {
			t.Errorf("handed over %+v\nthe outbox holds %+v", got, want)
		}
		if g, w := renderPayload(t, got), renderPayload(t, want); g != w {
			t.Errorf("event %s: handed over\n %s\nthe outbox holds\n %s", want.ID, g, w)
		}
	}
}

// renderPayload renders what the projector would make of e's payload.
func renderPayload(t *testing.T, e events.Envelope) string {
	t.Helper()
	switch e.AggregateType {
	case events.Sprocket:
		p, err := e.Sprocket()
		if err != nil {
			t.Fatal(err)
		}
		return string(readmodel.SprocketBody(ids, p.Sprocket))
	default:
		p, err := e.Factory()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %+v", readmodel.FactoryBody(ids, p.Factory), p.Samples)
	}
}

func TestSprocketWrites(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	org := domain.DefaultOrgID
	sp, _, err := s.CreateSprocket(ctx, domain.System(org, "test"), spec, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	keep := func(x domain.SprocketSpec) domain.SprocketSpec { return x }
	tests := []struct {
		name    string
		do      func() error
		code    string
		version int64 // the version after
	}{
		{"an update that changes nothing writes nothing", func() error {
			_, r, err := s.UpdateSprocket(ctx, domain.System(org, "test"), sp.ID, 0, keep)
			if err == nil && r.Version != 1 {
				err = fmt.Errorf("version %d", r.Version)
			}
			return err
		}, "", 1},
		{"a stale If-Match", func() error {
			_, _, err := s.UpdateSprocket(ctx, domain.System(org, "test"), sp.ID, 5, keep)
			return err
		}, domain.ESTALE, 1},
		{"an invalid change", func() error {
			_, _, err := s.UpdateSprocket(ctx, domain.System(org, "test"), sp.ID, 0, func(x domain.SprocketSpec) domain.SprocketSpec { x.Pitch = -1; return x })
			return err
		}, domain.EINVALID, 1},
		{"another organization's sprocket", func() error {
			_, _, err := s.UpdateSprocket(ctx, domain.System(99, "test"), sp.ID, 0, keep)
			return err
		}, domain.ENOTFOUND, 1},
		{"an update", func() error {
			_, _, err := s.UpdateSprocket(ctx, domain.System(org, "test"), sp.ID, 1, func(x domain.SprocketSpec) domain.SprocketSpec { x.Teeth = 6; return x })
			return err
		}, "", 2},
		{"a delete with a stale If-Match", func() error { _, err := s.DeleteSprocket(ctx, domain.System(org, "test"), sp.ID, 1); return err }, domain.ESTALE, 2},
		{"a delete", func() error { _, err := s.DeleteSprocket(ctx, domain.System(org, "test"), sp.ID, 2); return err }, "", 3},
		{"a second delete", func() error { _, err := s.DeleteSprocket(ctx, domain.System(org, "test"), sp.ID, 0); return err }, domain.ENOTFOUND, 3},
		{"an update of a deleted sprocket", func() error {
			_, _, err := s.UpdateSprocket(ctx, domain.System(org, "test"), sp.ID, 0, keep)
			return err
		}, domain.ENOTFOUND, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(outbox(t, db))
			err := tc.do()
			if domain.ErrorCode(err) != tc.code {
				t.Fatalf("error %v, want code %q", err, tc.code)
			}
			got, err := postgres.NewReads(db).Sprocket(ctx, sp.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != tc.version {
				t.Errorf("version %d, want %d", got.Version, tc.version)
			}
			wantEvents := before
			if tc.code == "" && tc.version != int64(before) {
				wantEvents++
			}
			if n := len(outbox(t, db)); n != wantEvents {
				t.Errorf("%d events, want %d", n, wantEvents)
			}
		})
	}
	if gone, _ := postgres.NewReads(db).Sprocket(ctx, sp.ID); !gone.Deleted() {
		t.Errorf("the deleted sprocket is not a tombstone")
	}
}

func TestIdempotentCreates(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	idem := domain.Idempotency{Key: "k1", Hash: []byte("request-a")}
	first, r1, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, idem)
	if err != nil || r1.Replayed {
		t.Fatal(err, r1)
	}
	again, r2, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, idem)
	if err != nil || !r2.Replayed || again.ID != first.ID || string(readmodel.SprocketBody(ids, again)) != string(readmodel.SprocketBody(ids, first)) {
		t.Fatalf("replay %+v %+v %v", again, r2, err)
	}
	_, _, err = s.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{Key: "k1", Hash: []byte("request-b")})
	if domain.ErrorCode(err) != domain.EKEYREUSED {
		t.Fatalf("another request with the key: %v", err)
	}
	var wg sync.WaitGroup
	ids := make(chan int64, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp, _, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{Key: "burst", Hash: []byte("x")})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- sp.ID
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		seen[id] = true
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM sprockets`); err != nil || n != 2 || len(seen) != 1 {
		t.Fatalf("%d sprockets, %d distinct ids answered (%v)", n, len(seen), err)
	}
	f, r, err := s.CreateFactory(ctx, domain.System(1, "test"), domain.FactorySpec{Name: "F"}, nil, domain.Idempotency{Key: "k1", Hash: []byte("request-a")})
	if domain.ErrorCode(err) != domain.EKEYREUSED {
		t.Fatalf("a factory with a sprocket's key: %+v %+v %v", f, r, err)
	}

	// A key answers for a day; after it, it is free for a new request, and
	// the keys nobody can use any more are forgotten.
	if _, err := db.Exec(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'k1'`); err != nil {
		t.Fatal(err)
	}
	fresh, r3, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{Key: "k1", Hash: []byte("request-b")})
	if err != nil || r3.Replayed || fresh.ID == first.ID {
		t.Fatalf("a day-old key used again: %+v %+v %v, want a new sprocket", fresh, r3, err)
	}
	if _, r4, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{Key: "k1", Hash: []byte("request-b")}); err != nil || !r4.Replayed {
		t.Fatalf("the key taken anew does not replay: %+v %v", r4, err)
	}
	if _, err := db.Exec(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'burst'`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ForgetOldKeys(ctx); err != nil || n != 1 {
		t.Errorf("forgot %d keys (%v), want the one a day old", n, err)
	}
	if err := db.Get(&n, `SELECT count(*) FROM idempotency_keys`); err != nil || n != 1 {
		t.Errorf("%d keys left (%v), want k1", n, err)
	}
}

// A client repeating an idempotency key is answered from the key with one
// read, outside the create batches and their transactions: it does not
// wait for other creates, even stuck ones (here, behind a lock on the
// sprockets table).
func TestAReplayDoesNotWaitForCreates(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	idem := domain.Idempotency{Key: "again", Hash: []byte("request")}
	first, _, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, idem)
	if err != nil {
		t.Fatal(err)
	}
	factory, _, err := s.CreateFactory(ctx, domain.System(1, "test"), domain.FactorySpec{Name: "F"}, nil, idem)
	if domain.ErrorCode(err) != domain.EKEYREUSED {
		t.Fatalf("a factory with a sprocket's key: %+v %v", factory, err)
	}
	lock, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback() //nolint:errcheck
	if _, err := lock.Exec(`LOCK TABLE sprockets IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	stuck := make(chan error, 1)
	go func() {
		_, _, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{})
		stuck <- err
	}()
	time.Sleep(200 * time.Millisecond) // the create is in its batch, waiting for the lock
	quick, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	again, r, err := s.CreateSprocket(quick, domain.System(1, "test"), spec, idem)
	if err != nil || !r.Replayed || again.ID != first.ID || r.LSN == "" {
		t.Fatalf("a replay beside a stuck create: %+v %+v %v", again, r, err)
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-stuck; err != nil {
		t.Fatalf("the create that waited: %v", err)
	}
}

// Creates that arrive together are committed together, and each is still
// its own: its row, event and audit row carry its values, in two
// organizations at once. A create whose key is taken fails alone.
func TestConcurrentCreatesAreCommittedTogether(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	other, err := s.CreateOrganization(ctx, "other", nil)
	if err != nil {
		t.Fatal(err)
	}
	taken := domain.Idempotency{Key: "taken", Hash: []byte("first")}
	if _, _, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, taken); err != nil {
		t.Fatal(err)
	}
	const n = 64
	type answer struct {
		sp  domain.Sprocket
		r   domain.Receipt
		err error
	}
	answers := make([]answer, n+1)
	var wg sync.WaitGroup
	for i := range n + 1 {
		wg.Go(func() {
			actor := domain.Actor{OrgID: 1 + int64(i%2)*(other.ID-1), Kind: "test", RequestID: fmt.Sprintf("r%d", i)}
			sp := spec
			sp.Teeth = int64(100 + i)
			idem := domain.Idempotency{Key: fmt.Sprintf("k%d", i), Hash: []byte("x")}
			if i == n {
				idem = domain.Idempotency{Key: "taken", Hash: []byte("another")}
			}
			answers[i].sp, answers[i].r, answers[i].err = s.CreateSprocket(ctx, actor, sp, idem)
		})
	}
	wg.Wait()
	if domain.ErrorCode(answers[n].err) != domain.EKEYREUSED {
		t.Errorf("the create with a taken key: %v", answers[n].err)
	}
	batches := map[time.Time]bool{} // a batch's creates share their time
	for i, a := range answers[:n] {
		if a.err != nil {
			t.Fatalf("create %d: %v", i, a.err)
		}
		batches[a.sp.CreatedAt] = true
		var row struct {
			Org   int64  `db:"org_id"`
			Teeth int64  `db:"teeth"`
			Audit string `db:"request_id"`
		}
		err := db.Get(&row, `SELECT s.org_id, s.teeth, a.request_id FROM sprockets s
			JOIN audit_log a ON a.resource_type = 'sprocket' AND a.resource_id = s.id WHERE s.id = $1`, a.sp.ID)
		if err != nil || row.Teeth != int64(100+i) || row.Org != a.sp.OrgID || row.Audit != fmt.Sprintf("r%d", i) {
			t.Errorf("create %d answered %+v; stored %+v (%v)", i, a.sp, row, err)
		}
	}
	if len(batches) > n/2 {
		t.Errorf("%d creates sent together were committed in %d batches", n, len(batches))
	}
	created := map[int64]int64{} // sprocket id -> teeth in its event
	for _, e := range outbox(t, db) {
		p, err := e.Sprocket()
		sp := p.Sprocket
		if err != nil || e.AggregateID != sp.ID || e.OrgID != sp.OrgID {
			t.Fatalf("event %+v: %+v %v", e, sp, err)
		}
		created[sp.ID] = sp.Teeth
	}
	for i, a := range answers[:n] {
		if created[a.sp.ID] != int64(100+i) {
			t.Errorf("create %d (sprocket %d): its event has %d teeth", i, a.sp.ID, created[a.sp.ID])
		}
	}
	if len(created) != n+1 {
		t.Errorf("%d created events, want %d", len(created), n+1)
	}
}

func TestFactoryHistory(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	reads := postgres.NewReads(db)
	sample := func(tm, a int64) domain.Sample { return domain.Sample{Time: tm, Actual: a, Goal: 1} }
	f, _, err := s.CreateFactory(ctx, domain.System(1, "test"), domain.FactorySpec{Name: "F"}, []domain.Sample{sample(7300, 2), sample(100, 1)}, domain.Idempotency{})
	if err != nil {
		t.Fatal(err)
	}
	if f.SampleCount != 2 || *f.FirstTime != 100 || *f.LastTime != 7300 {
		t.Fatalf("summary %+v", f)
	}
	// A retried append is harmless; a contradicting one changes nothing.
	f2, added, r, err := s.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{sample(100, 1), sample(3700, 5)})
	if err != nil || added != 1 || r.Version != 2 || f2.SampleCount != 3 {
		t.Fatalf("append: %+v %d %+v %v", f2, added, r, err)
	}
	if _, added, r, err := s.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{sample(3700, 5)}); err != nil || added != 0 || r.Version != 2 {
		t.Fatalf("an append of known samples: %d %+v %v", added, r, err)
	}
	if _, _, _, err := s.AppendSamples(ctx, domain.System(1, "test"), f.ID, 0, []domain.Sample{sample(3800, 1), sample(3700, 6)}); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Fatalf("a contradicting append: %v", err)
	}
	got, samples, err := reads.FactoryHistory(ctx, domain.AnyOrg, f.ID)
	if err != nil || got.Version != 2 || len(samples) != 3 || samples[0].Time != 100 || samples[2].Time != 7300 {
		t.Fatalf("history %+v %v %v", got, samples, err)
	}
	// Whole buckets of what changed after version 1: only hour 1.
	_, changed, err := reads.FactoryBucketsSince(ctx, f.ID, 1, readmodel.ChartBucketSeconds)
	if err != nil || fmt.Sprint(changed) != fmt.Sprint([]domain.Sample{sample(3700, 5)}) {
		t.Fatalf("changed buckets %v %v", changed, err)
	}
	if _, all, _ := reads.FactoryBucketsSince(ctx, f.ID, 0, readmodel.ChartBucketSeconds); len(all) != 3 {
		t.Errorf("everything since 0: %v", all)
	}
	_, in, err := reads.FactorySamples(ctx, domain.AnyOrg, f.ID, 100, 3700, 0)
	if err != nil || len(in) != 2 {
		t.Errorf("range: %v %v", in, err)
	}
	if _, in, err := reads.FactorySamples(ctx, 1, f.ID, 100, 3700, 0); err != nil || len(in) != 2 {
		t.Errorf("range, as the owner: %v %v", in, err)
	}
	if _, in, err := reads.FactorySamples(ctx, 1, f.ID, 100, 3700, 1); err != nil || len(in) != 1 || in[0].Time != 100 {
		t.Errorf("range, limited to one sample: %v %v", in, err)
	}
	// As of version 1, a page at a time: 3700 came with version 2.
	if in, err := reads.SamplesAsOf(ctx, f.ID, 1, -1, 1); err != nil || fmt.Sprint(in) != fmt.Sprint([]domain.Sample{sample(100, 1)}) {
		t.Errorf("first page as of version 1: %v %v", in, err)
	}
	if in, err := reads.SamplesAsOf(ctx, f.ID, 1, 100, 10); err != nil || fmt.Sprint(in) != fmt.Sprint([]domain.Sample{sample(7300, 2)}) {
		t.Errorf("next page as of version 1: %v %v", in, err)
	}
	if in, err := reads.SamplesAsOf(ctx, f.ID, 2, 100, 10); err != nil || len(in) != 2 || in[0].Time != 3700 {
		t.Errorf("next page as of version 2: %v %v", in, err)
	}
	// Another organization learns the owner, for its 404, and nothing of
	// the history is read.
	if got, in, err := reads.FactorySamples(ctx, 2, f.ID, 0, domain.MaxSampleTime, 0); err != nil || got.OrgID != 1 || in != nil {
		t.Errorf("range, as another organization: %+v %v %v", got, in, err)
	}
	if got, in, err := reads.FactoryHistory(ctx, 2, f.ID); err != nil || got.OrgID != 1 || in != nil {
		t.Errorf("history, as another organization: %+v %v %v", got, in, err)
	}
	evs := outbox(t, db)
	var pl events.FactoryPayload
	if err := json.Unmarshal(evs[1].Payload, &pl); err != nil || len(pl.Samples) != 1 || pl.Factory.SampleCount != 3 {
		t.Errorf("append event %s", evs[1].Payload)
	}
}

func TestPages(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	for i := 0; i < 5; i++ {
		if _, _, err := s.CreateSprocket(ctx, domain.System(1, "test"), spec, domain.Idempotency{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DeleteSprocket(ctx, domain.System(1, "test"), 3, 0); err != nil {
		t.Fatal(err)
	}
	reads := postgres.NewReads(db)
	page, err := reads.ListSprockets(ctx, 1, domain.PageRequest{After: 1, Limit: 2})
	if err != nil || len(page) != 2 || page[0].ID != 2 || page[1].ID != 4 {
		t.Fatalf("page %v %v", page, err)
	}
	all, err := reads.SprocketsOfOrg(ctx, 1)
	if err != nil || len(all) != 5 || !all[2].Deleted() {
		t.Fatalf("all %v %v", all, err)
	}
	// The lean read of collection rebuilds gives the same collection.
	lean, err := reads.SprocketSpecsOfOrg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(readmodel.SprocketListRecords(readmodel.Layouts{}, 1, all)) != fmt.Sprint(readmodel.SprocketListRecords(readmodel.Layouts{}, 1, lean)) {
		t.Errorf("the lean read makes another list:\n %v\n %v", lean, all)
	}
	// So does reading a range of them, and only the org's.
	some, err := reads.SprocketSpecsInRange(ctx, 1, 3, 5)
	if err != nil || fmt.Sprint(some) != fmt.Sprint(lean[2:4]) {
		t.Errorf("range %v %v, want %v", some, err, lean[2:4])
	}
	if other, err := reads.SprocketSpecsInRange(ctx, 2, 0, 10); err != nil || len(other) != 0 {
		t.Errorf("another org's read %v %v", other, err)
	}
}

// postgres.Reads go to a fresh replica, to the leader when a token's write is not
// there yet, and to the leader when the replica fails.
func TestReadPool(t *testing.T) {
	ctx := context.Background()
	_, db := fresh(t)
	rdb := replicaOf(t, db)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := postgres.NewReadPool(db, map[string]*sqlx.DB{"r1": rdb}, time.Second, log, prometheus.NewRegistry())
	pool.Check(ctx)
	where := func(minLSN string) string {
		t.Helper()
		src, err := pool.Do(ctx, minLSN, func(r postgres.Reads) error { _, err := r.OrgIDs(ctx); return err })
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	if src := where(""); src != postgres.FromReplica {
		t.Fatalf("a fresh replica was not used: %s", src)
	}
	if src := where("FFFF/0"); src != postgres.FromLeader {
		t.Errorf("a write the replica lacks was read from %s", src)
	}
	rdb.Close() // the replica "fails"
	if src := where(""); src != postgres.FromLeader {
		t.Errorf("after the replica failed, read from %s", src)
	}
	if src := where(""); src != postgres.FromLeader {
		t.Errorf("a failed replica is used again before a good check: %s", src)
	}
}

// A write's consistency token covers the write: once a replica has replayed
// up to it, the replica holds the write. The test servers commit
// asynchronously (synchronous_commit off), where a commit can return before
// its record is written out: the token must still be past it.
func TestTokensCoverTheirWrites(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	rdb := replicaOf(t, db)
	actor := domain.System(1, "test")
	for i := range 20 {
		sp, r, err := s.CreateSprocket(ctx, actor, spec, domain.Idempotency{})
		if err == nil && i%2 == 1 { // and the transaction every other write uses
			sp, r, err = s.UpdateSprocket(ctx, actor, sp.ID, 0, func(o domain.SprocketSpec) domain.SprocketSpec {
				o.Teeth++
				return o
			})
		}
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		nudged := false
		for {
			var replayed bool
			if err := rdb.Get(&replayed, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, r.LSN); err != nil {
				t.Fatal(err)
			}
			if replayed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the replica never reached %s", r.LSN)
			}
			// When the commit's record ends a WAL page, the insert position
			// is past the next page's header, which a replica reaches only
			// with the next record: an idle test server may write none.
			if !nudged && time.Until(deadline) < 9*time.Second {
				if _, err := db.Exec(`SELECT pg_switch_wal()`); err != nil {
					t.Fatal(err)
				}
				nudged = true
			}
			time.Sleep(time.Millisecond)
		}
		var version int64
		if err := rdb.Get(&version, `SELECT version FROM sprockets WHERE id = $1`, sp.ID); err != nil || version != sp.Version {
			t.Fatalf("write %d: the replica at its token %s has version %d of sprocket %d, want %d (%v)",
				i, r.LSN, version, sp.ID, sp.Version, err)
		}
	}
}

// A create while its organization is being deleted is refused, never
// committed after the deletion: the deletion holds the organization's row,
// and a create that finds it held counts the organization as deleted
// rather than wait (other organizations' creates do not wait either). A
// key sent twice at once is answered by its first create.
func TestACreateDoesNotOutliveItsOrganization(t *testing.T) {
	ctx := context.Background()
	s, db := fresh(t)
	org, err := s.CreateOrganization(ctx, "doomed", nil)
	if err != nil {
		t.Fatal(err)
	}
	deletion, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer deletion.Rollback()
	if _, err := deletion.ExecContext(ctx, `SELECT id FROM organizations WHERE id = $1 FOR UPDATE`, org.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := deletion.ExecContext(ctx, `UPDATE organizations SET deleted_at = now() WHERE id = $1`, org.ID); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if domain.ErrorCode(err) != domain.EUNAUTHENTICATED {
			t.Errorf("%s for an organization being deleted: %v, want EUNAUTHENTICATED", what, err)
		}
	}
	// Two creates of the doomed organization and two of a live one, with
	// one key, sent together (one group or more).
	var wg sync.WaitGroup
	errs := make([]error, 4)
	ids := make([]int64, 4)
	for i, actor := range []domain.Actor{domain.System(org.ID, "test"), domain.System(org.ID, "test"), domain.System(1, "test"), domain.System(1, "test")} {
		wg.Go(func() {
			idem := domain.Idempotency{}
			if i >= 2 {
				idem = domain.Idempotency{Key: "twice", Hash: []byte("same")}
			}
			sp, _, err := s.CreateSprocket(ctx, actor, spec, idem)
			ids[i], errs[i] = sp.ID, err
		})
	}
	wg.Wait()
	refused("a sprocket create", errs[0])
	refused("a sprocket create", errs[1])
	if errs[2] != nil || errs[3] != nil || ids[2] != ids[3] || ids[2] == 0 {
		t.Errorf("the live organization's creates with one key: ids %d %d, errors %v %v", ids[2], ids[3], errs[2], errs[3])
	}
	_, _, err = s.CreateFactory(ctx, domain.System(org.ID, "test"), domain.FactorySpec{Name: "F"}, nil, domain.Idempotency{})
	refused("a factory create", err)
	if err := deletion.Commit(); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.CreateSprocket(ctx, domain.System(org.ID, "test"), spec, domain.Idempotency{})
	refused("a sprocket create after the deletion", err)
	for table, query := range map[string]string{
		"sprockets": `SELECT count(*) FROM sprockets WHERE org_id = $1`,
		"factories": `SELECT count(*) FROM factories WHERE org_id = $1`,
		"events":    `SELECT count(*) FROM outbox WHERE org_id = $1`,
		"audit":     `SELECT count(*) FROM audit_log WHERE org_id = $1`,
	} {
		var n int
		if err := db.Get(&n, query, org.ID); err != nil || n != 0 {
			t.Errorf("%d %s of the deleted organization (%v)", n, table, err)
		}
	}
}

// Rows keep their organization without foreign keys to it because an
// organization row is never removed.
func TestOrganizationsAreNeverRemoved(t *testing.T) {
	_, db := fresh(t)
	for _, stmt := range []string{`DELETE FROM organizations WHERE id = 1`, `TRUNCATE organizations CASCADE`} {
		var pqErr *pq.Error
		if _, err := db.Exec(stmt); !errors.As(err, &pqErr) || pqErr.Code.Name() != "restrict_violation" {
			t.Errorf("%s: %v", stmt, err)
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM organizations`); err != nil || n != 1 {
		t.Errorf("%d organizations remain (%v)", n, err)
	}
}

func TestLSN(t *testing.T) {
	for s, want := range map[string]uint64{"0/0": 0, "0/16B3748": 0x16B3748, "1A/FF": 0x1A<<32 | 0xFF, "FFFFFFFF/FFFFFFFF": 1<<64 - 1} {
		if n, err := postgres.ParseLSN(s); err != nil || n != want {
			t.Errorf("%s: %x %v, want %x", s, n, err, want)
		}
	}
	a, _ := postgres.ParseLSN("0/FFFFFFFF")
	b, _ := postgres.ParseLSN("1/0")
	if a >= b {
		t.Errorf("LSNs do not order")
	}
	if _, err := postgres.ParseLSN("nope"); err == nil {
		t.Errorf("parsed nonsense")
	}
}

// The first program records a setting; the others agree with it or are
// refused.
func TestAgreeOn(t *testing.T) {
	ctx := context.Background()
	_, db := fresh(t)
	if err := postgres.AgreeOn(ctx, db, "id_key", "A"); err != nil {
		t.Fatalf("the first: %v", err)
	}
	if err := postgres.AgreeOn(ctx, db, "id_key", "A"); err != nil {
		t.Fatalf("the same again: %v", err)
	}
	if err := postgres.AgreeOn(ctx, db, "id_key", "B"); !errors.Is(err, postgres.ErrDisagrees) {
		t.Fatalf("another: %v, want ErrDisagrees", err)
	}
	if err := postgres.AgreeOn(ctx, db, "other", "B"); err != nil {
		t.Fatalf("another setting: %v", err)
	}
}
