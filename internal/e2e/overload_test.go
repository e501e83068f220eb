package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// Overload is refused, not queued: with the leader's sprockets table locked
// (a database that takes no more work), creates and database reads beyond
// what an instance takes on at once get 503 with Retry-After within the
// admission wait, instead of waiting as long as the database is stuck. The
// ones admitted finish when it is free again, and a refused create wrote
// nothing.
func TestOverloadIsRefusedQuickly(t *testing.T) {
	s := newStack(t, stackOptions{env: []string{"MAX_IN_FLIGHT=4", "MAX_DB_READS=4", "ADMISSION_WAIT=100ms"}})
	ctx := context.Background()
	db := leader(t, s)
	before := count(t, db, `SELECT count(*) FROM sprockets`)

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `LOCK TABLE sprockets IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// The replica replays the lock once the WAL holding it is flushed (a
	// commit elsewhere nudges it; the stack commits asynchronously): the
	// replica is waited for up to the insert position, past the lock.
	var lsn string
	if err := db.GetContext(ctx, &lsn, `SELECT txid_current()::text`); err != nil {
		t.Fatal(err)
	}
	if err := db.GetContext(ctx, &lsn, `SELECT pg_current_wal_insert_lsn()::text`); err != nil {
		t.Fatal(err)
	}
	replica, err := sqlx.Open("postgres", s.ReplicaURL())
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	checkFor(t, 10*time.Second, func() string {
		var ok bool
		if err := replica.GetContext(ctx, &ok, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, lsn); err != nil || !ok {
			return fmt.Sprintf("the replica has not replayed the lock (%v)", err)
		}
		return ""
	})

	type answer struct {
		kind  string
		r     reply
		err   error
		after time.Duration
	}
	const each = 24
	answers := make(chan answer, 2*each)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < each; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r, err := call("POST", s.Writer.URL()+"/api/sprocket/create/5/6/4/7", nil)
			answers <- answer{"create", r, err, time.Since(start)}
		}()
		go func() {
			defer wg.Done()
			r, err := call("GET", s.Reader.URL()+"/v1/sprockets", nil)
			answers <- answer{"list", r, err, time.Since(start)}
		}()
	}

	// While the database is stuck, all but the admitted get their 503.
	refused := map[string]int{}
	deadline := time.After(3 * time.Second)
wait:
	for refused["create"]+refused["list"] < 2*(each-4) {
		select {
		case a := <-answers:
			switch {
			case a.err != nil:
				t.Errorf("%s: %v after %s", a.kind, a.err, a.after)
			case a.r.Status != 503:
				t.Errorf("%s answered %s while the database was stuck", a.kind, a.r)
			case a.r.Header.Get("Retry-After") == "" || a.r.Header.Get("Content-Type") != "application/problem+json":
				t.Errorf("%s: a 503 without Retry-After or a problem body: %v", a.kind, a.r.Header)
			case a.after > 2*time.Second:
				t.Errorf("%s refused only after %s", a.kind, a.after)
			default:
				refused[a.kind]++
			}
		case <-deadline:
			break wait
		}
	}
	if refused["create"] != each-4 || refused["list"] != each-4 {
		t.Fatalf("refused while the database was stuck: %v, want %d of each (4 of each admitted)", refused, each-4)
	}

	// Free again: the admitted ones finish, and only they wrote.
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(answers)
	created := 0
	for a := range answers {
		if a.err != nil || (a.r.Status != 201 && a.r.Status != 200) {
			t.Errorf("an admitted %s: %v %v", a.kind, a.r, a.err)
		}
		if a.kind == "create" && a.r.Status == 201 {
			created++
		}
	}
	if after := count(t, db, `SELECT count(*) FROM sprockets`); after-before != created {
		t.Errorf("%d sprockets written, %d creates acknowledged", after-before, created)
	}
}
