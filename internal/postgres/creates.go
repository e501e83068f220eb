package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
)

// Sprocket creates are committed in groups (group commit in the writer):
// workers take creates from a queue, each taking every create that is
// waiting when it is free, and write them in one transaction of
// Store.write, like every other write, with one statement per table for
// the whole group. A create that arrives while a worker is idle goes
// alone, at once; under load, creates share their round trips and one
// commit instead of paying for them each.
//
// One worker makes the largest groups. Measured with the create phase of
// `make bench` at 16 clients on two cores, as a share of the bare-INSERT
// baseline: 1 worker, 0.47 to 0.54 over three runs; 2 workers, 0.46 twice;
// 3 workers, 0.45 twice; 4 workers, 0.41 (most creates then go alone).
// Again after the relay's deletions were grouped: 1 worker 0.49, 0.48,
// 0.55; 2 workers 0.46, 0.46, 0.44, with 10% more CPU per create. Once
// creates went through Store.write (five statements a group where the
// procedure took one call), peak to peak: 1 worker 0.73, 2 workers 0.71
// with 10% more CPU per create at 64 clients.
const (
	createWorkers  = 1  // batches in the database at once
	createBatchMax = 64 // creates per batch
	createTimeout  = 30 * time.Second
)

// createReq is one create waiting for its batch.
type createReq struct {
	ctx   context.Context
	actor domain.Actor
	spec  domain.SprocketSpec
	idem  domain.Idempotency
	done  chan createResult // buffered: the worker never waits for the caller
}

type createResult struct {
	sprocket domain.Sprocket
	lsn      string
	err      error
}

// creates batches sprocket creates; see the constants above.
type creates struct {
	store *Store
	queue chan *createReq
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newCreates(store *Store) *creates {
	c := &creates{store: store, queue: make(chan *createReq), stop: make(chan struct{})}
	for range createWorkers {
		c.wg.Go(c.work)
	}
	return c
}

// close stops the workers once their batches are done. Creates that were
// not taken yet fail.
func (c *creates) close() {
	close(c.stop)
	c.wg.Wait()
}

var errStoreClosed = errors.New("store closed")

// do queues r and returns its result.
func (c *creates) do(r *createReq) createResult {
	select {
	case c.queue <- r:
	case <-r.ctx.Done():
		return createResult{err: r.ctx.Err()}
	case <-c.stop:
		return createResult{err: errStoreClosed}
	}
	return <-r.done
}

func (c *creates) work() {
	for {
		var first *createReq
		select {
		case <-c.stop:
			return
		case first = <-c.queue:
		}
		batch := []*createReq{first}
	more:
		for len(batch) < createBatchMax {
			select {
			case r := <-c.queue:
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.run(batch)
	}
}

// run writes batch and answers each create in it; creates whose callers
// have gone are dropped first.
func (c *creates) run(batch []*createReq) {
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- createResult{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) > 0 {
		c.answer(live)
	}
}

// answer writes batch and answers each create in it.
func (c *creates) answer(batch []*createReq) {
	for i, res := range c.write(batch) {
		batch[i].done <- res
	}
}

// write writes batch in one transaction and returns one result per
// create. A create whose organization was deleted meanwhile (the deletion
// locks the organization's row first) is refused, and one whose key is
// taken (earlier, or by a create before it in the batch) is answered
// errKeyTaken, to be replayed once the batch is committed; the others go
// on, so that one client repeating a key slows nobody else's creates.
func (c *creates) write(batch []*createReq) []createResult {
	results := make([]createResult, len(batch))
	// The batch is written for all its callers: none of them can cancel it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), createTimeout)
	defer cancel()
	lsn, err := c.store.write(ctx, domain.Actor{}, func(tx *sqlx.Tx, rec *recorder) error {
		live, ids, err := c.liveOrgsAndIDs(ctx, tx, batch)
		if err != nil {
			return err
		}
		var todo []int // indexes of the creates to write
		for i, r := range batch {
			if !live[r.actor.OrgID] {
				results[i].err = domain.Errorf(domain.EUNAUTHENTICATED, "the token's organization was deleted")
				continue
			}
			todo = append(todo, i)
		}
		var (
			claims  []keyClaim
			claimed []int // the batch index of each claim
			first   = map[keyOf]bool{}
		)
		for _, i := range todo {
			r := batch[i]
			results[i].sprocket = domain.Sprocket{ID: ids[i], OrgID: r.actor.OrgID, Version: 1, SprocketSpec: r.spec,
				CreatedAt: rec.at, UpdatedAt: rec.at}
			if r.idem.Key == "" {
				continue
			}
			k := keyOf{r.actor.OrgID, r.idem.Key}
			if first[k] {
				results[i].err = errKeyTaken // by the create before it: replayed after the commit
				continue
			}
			first[k] = true
			claims = append(claims, keyClaim{org: k.org, idem: r.idem, kind: events.Sprocket, resource: results[i].sprocket})
			claimed = append(claimed, i)
		}
		taken, err := claimKeys(ctx, tx, claims)
		if err != nil {
			return err
		}
		for _, n := range taken {
			results[claimed[n]].err = errKeyTaken
		}
		var sps []domain.Sprocket
		for _, i := range todo {
			if results[i].err == nil {
				sps = append(sps, results[i].sprocket)
			}
		}
		if err := c.insert(ctx, tx, sps, rec.at); err != nil {
			return err
		}
		for _, i := range todo {
			if sp := results[i].sprocket; results[i].err == nil {
				if err := rec.recordBy(batch[i].actor, events.Created, events.Sprocket, sp.ID, sp.OrgID, sp.Version,
					events.SprocketPayload{Sprocket: sp}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for i := range results {
		if err != nil {
			results[i] = createResult{err: err}
		} else if results[i].err == nil {
			results[i].lsn = lsn
		}
	}
	return results
}

// keyOf names an idempotency key: they are per organization.
type keyOf struct {
	org int64
	key string
}

// insertSprockets inserts new sprockets, ids chosen: the i-th element of
// each array is the i-th sprocket's.
const insertSprockets = `
		INSERT INTO sprockets (id, org_id, teeth, pitch_diameter, outside_diameter, pitch, created_at, updated_at)
		SELECT u.*, $7, $7 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[], $5::float8[], $6::float8[]) AS u`

// insert inserts new sprockets, ids chosen, in one statement.
func (c *creates) insert(ctx context.Context, tx *sqlx.Tx, sps []domain.Sprocket, at time.Time) error {
	if len(sps) == 0 {
		return nil
	}
	n := len(sps)
	ids, orgs, teeth := make([]int64, n), make([]int64, n), make([]int64, n)
	pds, ods, pitches := make([]float64, n), make([]float64, n), make([]float64, n)
	for i, sp := range sps {
		ids[i], orgs[i], teeth[i] = sp.ID, sp.OrgID, sp.Teeth
		pds[i], ods[i], pitches[i] = sp.PitchDiameter, sp.OutsideDiameter, sp.Pitch
	}
	if _, err := c.store.stmt(ctx, tx, insertSprockets).ExecContext(ctx,
		pq.Array(ids), pq.Array(orgs), pq.Array(teeth), pq.Array(pds), pq.Array(ods), pq.Array(pitches), at); err != nil {
		return fmt.Errorf("insert sprockets: %w", err)
	}
	return nil
}

// lockOrgsTakeIDs: see liveOrgsAndIDs.
const lockOrgsTakeIDs = `
		WITH live AS (SELECT id FROM organizations WHERE id = ANY($1) AND deleted_at IS NULL ORDER BY id FOR KEY SHARE SKIP LOCKED)
		SELECT array(SELECT id FROM live) AS live,
		       array(SELECT nextval('sprockets_id_seq') FROM generate_series(1, $2)) AS ids`

// liveOrgsAndIDs returns which of the batch's organizations are not
// deleted, holding their rows (FOR KEY SHARE) until the commit, and an id
// for each create of the batch (those of creates that write nothing are
// left unused), in one round trip. A deletion takes the row FOR UPDATE: it
// waits for a batch that holds it, and a batch skips a row a deletion
// holds, counting the organization as deleted, rather than waiting with
// every other tenant's creates for a deletion that may take long.
func (c *creates) liveOrgsAndIDs(ctx context.Context, tx *sqlx.Tx, batch []*createReq) (map[int64]bool, []int64, error) {
	orgs := make([]int64, len(batch))
	for i, r := range batch {
		orgs[i] = r.actor.OrgID
	}
	var row struct {
		Live pq.Int64Array `db:"live"`
		IDs  pq.Int64Array `db:"ids"`
	}
	if err := c.store.stmt(ctx, tx, lockOrgsTakeIDs).GetContext(ctx, &row,
		pq.Array(orgs), len(batch)); err != nil {
		return nil, nil, fmt.Errorf("lock organizations, take ids: %w", err)
	}
	if len(row.IDs) != len(batch) {
		return nil, nil, fmt.Errorf("%d ids for %d creates", len(row.IDs), len(batch))
	}
	live := make(map[int64]bool, len(row.Live))
	for _, id := range row.Live {
		live[id] = true
	}
	return live, row.IDs, nil
}
