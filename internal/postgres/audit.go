package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/sprockets-api/sprockets/internal/domain"
	"github.com/sprockets-api/sprockets/internal/events"
)

// audit records, in the writing transaction, who made the change e and
// what it changed.
func audit(ctx context.Context, tx *sqlx.Tx, actor domain.Actor, e events.Envelope) error {
	_, err := tx.ExecContext(ctx, `
		INSERT INTO audit_log (org_id, token_id, actor, client_addr, user_agent, request_id,
		                       action, resource_type, resource_id, version, changes, at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		e.OrgID, nullID(actor.TokenID), actor.Kind, actor.ClientAddr, actor.UserAgent, actor.RequestID,
		e.AggregateType+"."+e.Type, e.AggregateType, e.AggregateID, e.Version, []byte(e.Payload), e.OccurredAt)
	if err != nil {
		return fmt.Errorf("insert audit row: %w", err)
	}
	return nil
}

// nullID stores 0 as NULL.
func nullID(id int64) sql.NullInt64 { return sql.NullInt64{Int64: id, Valid: id != 0} }

// AuditLog returns a page of org's audit trail, oldest first.
func (r Reads) AuditLog(ctx context.Context, org int64, page domain.PageRequest) ([]domain.AuditEntry, error) {
	var rows []struct {
		ID           int64         `db:"id"`
		OrgID        int64         `db:"org_id"`
		TokenID      sql.NullInt64 `db:"token_id"`
		Actor        string        `db:"actor"`
		ClientAddr   string        `db:"client_addr"`
		UserAgent    string        `db:"user_agent"`
		RequestID    string        `db:"request_id"`
		Action       string        `db:"action"`
		ResourceType string        `db:"resource_type"`
		ResourceID   int64         `db:"resource_id"`
		Version      int64         `db:"version"`
		Changes      []byte        `db:"changes"`
		At           sql.NullTime  `db:"at"`
	}
	err := r.q.SelectContext(ctx, &rows, `
		SELECT id, org_id, token_id, actor, client_addr, user_agent, request_id, action, resource_type,
		       resource_id, version, changes, at
		FROM audit_log WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3`, org, page.After, page.Limit)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	out := make([]domain.AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = domain.AuditEntry{ID: r.ID, OrgID: r.OrgID, Actor: r.Actor, ClientAddr: r.ClientAddr,
			UserAgent: r.UserAgent, RequestID: r.RequestID, Action: r.Action, ResourceType: r.ResourceType,
			ResourceID: r.ResourceID, Version: r.Version, Changes: r.Changes, At: r.At.Time.UTC()}
		if r.TokenID.Valid {
			id := r.TokenID.Int64
			out[i].TokenID = &id
		}
	}
	return out, nil
}
