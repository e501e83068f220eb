// Package postgres is the system of record: the leader and its replicas, the
// repositories for sprockets and factories, the transaction that writes a
// change together with its outbox events, and the schema migrations.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq" // the driver behind sqlx

	"github.com/sprockets-api/sprockets/internal/domain"
)

// DB is a pool of connections to one Postgres server.
type DB = sqlx.DB

// Connect returns a pool for the Postgres at url without dialing it: a
// server that is down now is retried on each use.
func Connect(url string, maxConns int) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", Redact(url), err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return db, nil
}

// Open is Connect followed by a ping that must answer within timeout.
func Open(ctx context.Context, url string, maxConns int, timeout time.Duration) (*sqlx.DB, error) {
	db, err := Connect(url, maxConns)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping postgres %s: %w", Redact(url), err)
	}
	return db, nil
}

// Querier is what the read queries need: the leader, a replica or a
// transaction.
type Querier interface {
	sqlx.QueryerContext
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
}

const currentLSN = `SELECT pg_current_wal_lsn()::text`

// commitLSN is a write's consistency token, read after its commit: the
// insert position, not the write position of currentLSN. With
// synchronous_commit off a commit returns before its record is written out,
// so only the insert position is sure to be past it. (Replica lag is
// measured against the write position: a replica can only have what was
// written.)
const commitLSN = `SELECT pg_current_wal_insert_lsn()::text`

// CurrentLSN returns the leader's current WAL write position as text (e.g.
// "0/16B3748"), what replicas can have replayed at most.
func CurrentLSN(ctx context.Context, q Querier) (string, error) {
	var lsn string
	if err := q.GetContext(ctx, &lsn, currentLSN); err != nil {
		return "", fmt.Errorf("current lsn: %w", err)
	}
	return lsn, nil
}

// ParseLSN turns "X/Y" into a number that orders like the WAL position.
func ParseLSN(s string) (uint64, error) {
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	return uint64(hi)<<32 | uint64(lo), nil
}

// unavailable turns an error that says the database cannot answer right
// now (down, restarting, out of connections, a transaction the server
// rolled back to be retried) into an EUNAVAILABLE *domain.Error, which a
// client sees as 503 with Retry-After, keeping err as its cause. Any other
// error is returned as it is.
func unavailable(err error) error {
	var de *domain.Error
	if err == nil || errors.As(err, &de) || !transient(err) {
		return err
	}
	return &domain.Error{Code: domain.EUNAVAILABLE, Message: "the database is unavailable; retry shortly", Err: err}
}

// transient reports whether err is a failure of the database or of the way
// to it, rather than of the request.
func transient(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code.Class() {
		case "08", // connection exception
			"40", // transaction rollback: serialization failure, deadlock
			"53", // insufficient resources: too many connections, disk full
			"57": // operator intervention: shutdown, restart, recovery
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errStoreClosed)
}

// unknownLSN stands for the WAL position of a write that committed when
// the position could not be read afterwards (the leader went away in
// between): no replica ever reaches it, so a read that must see the write
// goes to the leader, which has it.
const unknownLSN = "FFFFFFFF/FFFFFFFF"

// isNoRows reports whether err means the query found nothing.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
