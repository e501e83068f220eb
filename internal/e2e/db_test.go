package e2e

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/sprockets-api/sprockets/internal/devstack"
)

// leader opens the stack's leader database for assertions.
func leader(t *testing.T, s *devstack.Stack) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open("postgres", s.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// fingerprint summarizes every row the API can change, so that a test can
// show a request changed nothing. Every write changes a row or its version;
// the outbox is left out because the relay drains it at its own pace.
func fingerprint(t *testing.T, db *sqlx.DB) string {
	t.Helper()
	var fp string
	err := db.GetContext(context.Background(), &fp, `SELECT concat_ws('|',
		(SELECT md5(coalesce(string_agg(s::text, ',' ORDER BY id), '')) FROM sprockets s),
		(SELECT md5(coalesce(string_agg(f::text, ',' ORDER BY id), '')) FROM factories f),
		(SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY factory_id, time), '')) FROM factory_samples x),
		(SELECT md5(coalesce(string_agg(k::text, ',' ORDER BY org_id, key), '')) FROM idempotency_keys k))`)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

func count(t *testing.T, db *sqlx.DB, query string) int {
	t.Helper()
	var n int
	if err := db.GetContext(context.Background(), &n, query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
