-- +goose Up
-- Organizations get a request budget and can be deleted: a deleted one keeps
-- this row, so that nothing of it is ever brought back.
ALTER TABLE organizations
    ADD COLUMN rate_limit integer CHECK (rate_limit > 0), -- requests per second per token; NULL: the default
    ADD COLUMN deleted_at timestamptz;

-- A token is stored only as the SHA-256 of its secret: the secret is shown
-- once, at creation.
CREATE TABLE tokens (
    id         bigserial PRIMARY KEY,
    org_id     bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name       text NOT NULL DEFAULT '',
    hash       bytea NOT NULL UNIQUE,
    prefix     text NOT NULL,
    scopes     text[] NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokens_org_id ON tokens (org_id, id);

-- One row per change, written in the transaction that makes it.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    org_id        bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    token_id      bigint REFERENCES tokens (id) ON DELETE SET NULL,
    actor         text NOT NULL,
    client_addr   text NOT NULL DEFAULT '',
    user_agent    text NOT NULL DEFAULT '',
    request_id    text NOT NULL DEFAULT '',
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   bigint NOT NULL,
    version       bigint NOT NULL,
    changes       jsonb NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX audit_log_org_id ON audit_log (org_id, id);

-- create_sprocket is the writer's hottest path in one round trip: it inserts
-- a sprocket, its created event (whose payload is the inserted row, whose
-- columns are the domain's JSON fields), its audit row and, with a key, its
-- idempotency record in one statement; commits; and returns the new id and
-- the WAL position after the commit, for the consistency token. It must be
-- CALLed outside a transaction. A taken key raises the unique violation of
-- idempotency_keys_pkey.
-- +goose StatementBegin
CREATE PROCEDURE create_sprocket(
    p_org bigint, p_teeth bigint, p_pitch_diameter double precision,
    p_outside_diameter double precision, p_pitch double precision,
    p_at timestamptz, p_event_id uuid, p_key text, p_hash bytea,
    p_token bigint, p_actor text, p_client text, p_agent text, p_request text,
    INOUT new_id bigint DEFAULT NULL, INOUT commit_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    WITH s AS (
        INSERT INTO sprockets (org_id, teeth, pitch_diameter, outside_diameter, pitch, created_at, updated_at)
        VALUES (p_org, p_teeth, p_pitch_diameter, p_outside_diameter, p_pitch, p_at, p_at)
        RETURNING *),
    e AS (
        INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
        SELECT p_event_id, 'events.sprocket.' || s.id || '.created', 'created', 'sprocket', s.id, s.org_id, s.version, p_at,
               jsonb_build_object('sprocket', to_jsonb(s))
        FROM s),
    a AS (
        INSERT INTO audit_log (org_id, token_id, actor, client_addr, user_agent, request_id,
                               action, resource_type, resource_id, version, changes, at)
        SELECT s.org_id, p_token, p_actor, p_client, p_agent, p_request,
               'sprocket.created', 'sprocket', s.id, s.version, jsonb_build_object('sprocket', to_jsonb(s)), p_at
        FROM s),
    k AS (
        INSERT INTO idempotency_keys (org_id, key, request_hash, resource_type, resource)
        SELECT s.org_id, p_key, p_hash, 'sprocket', to_jsonb(s) FROM s WHERE p_key <> '')
    SELECT s.id INTO new_id FROM s;
    COMMIT;
    commit_lsn := pg_current_wal_lsn()::text;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP PROCEDURE create_sprocket;
DROP TABLE audit_log;
DROP TABLE tokens;
ALTER TABLE organizations DROP COLUMN deleted_at, DROP COLUMN rate_limit;
