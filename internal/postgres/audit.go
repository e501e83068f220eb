package postgres

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/sprockets-api/sprockets/internal/domain"
)

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
