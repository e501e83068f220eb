package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/sprockets-api/sprockets/internal/publicid"
)

// ErrDisagrees says a program's setting differs from the one the service
// recorded (see AgreeOn).
var ErrDisagrees = errors.New("differs from the one this service recorded")

// AgreeOn records value as the service's setting name unless one is
// recorded, and returns ErrDisagrees when the recorded one differs: every
// program calls it at start with what it was configured with.
func AgreeOn(ctx context.Context, q Querier, name, value string) error {
	var recorded string
	var err error
	// Twice: a program that starts at the same moment as the first may
	// neither insert nor, in its statement's snapshot, see the row; the
	// next statement does.
	for range 2 {
		err = q.GetContext(ctx, &recorded, `
			WITH ins AS (
				INSERT INTO service_settings (name, value) VALUES ($1, $2)
				ON CONFLICT (name) DO NOTHING RETURNING value)
			SELECT value FROM ins UNION ALL SELECT value FROM service_settings WHERE name = $1
			LIMIT 1`, name, value)
		if !isNoRows(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
	}
	if recorded != value {
		return fmt.Errorf("setting %s %w", name, ErrDisagrees)
	}
	return nil
}

// AgreeOnIDKey refuses a program whose ID_KEY is not the key the service's
// /v1 ids were first made with: it would write or read ids no other
// program can. Every writer, reader and projector calls it at start.
func AgreeOnIDKey(ctx context.Context, q Querier, ids *publicid.Codec) error {
	if err := AgreeOn(ctx, q, "id_key", ids.Fingerprint()); err != nil {
		return fmt.Errorf("ID_KEY: %w: every writer, reader and projector needs the key the service started with", err)
	}
	return nil
}
