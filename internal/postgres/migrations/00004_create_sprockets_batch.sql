-- +goose Up
-- create_sprockets is create_sprocket for many creates at once: the writer
-- sends the creates that arrive while another batch is in the database
-- together, so that they share one round trip, one statement and one commit.
-- Each create gets its own sprocket, created event, audit row and, with a
-- key, idempotency record. The i-th element of every array is the i-th
-- create; the ids come back in the same order. A token id of 0 means none.
-- It must be CALLed outside a transaction. A taken key raises the unique
-- violation of idempotency_keys_pkey, and nothing of the batch is written.
-- +goose StatementBegin
CREATE PROCEDURE create_sprockets(
    p_org bigint[], p_teeth bigint[], p_pitch_diameter double precision[],
    p_outside_diameter double precision[], p_pitch double precision[],
    p_event_id uuid[], p_key text[], p_hash bytea[], p_token bigint[],
    p_actor text[], p_client text[], p_agent text[], p_request text[], p_at timestamptz,
    INOUT new_ids bigint[] DEFAULT NULL, INOUT commit_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    WITH input AS MATERIALIZED (
        SELECT nextval('sprockets_id_seq') AS id, u.*
        FROM unnest(p_org, p_teeth, p_pitch_diameter, p_outside_diameter, p_pitch, p_event_id,
                    p_key, p_hash, p_token, p_actor, p_client, p_agent, p_request)
             WITH ORDINALITY AS u(org_id, teeth, pitch_diameter, outside_diameter, pitch, event_id,
                                  key, hash, token_id, actor, client_addr, user_agent, request_id, n)),
    s AS (
        INSERT INTO sprockets (id, org_id, teeth, pitch_diameter, outside_diameter, pitch, created_at, updated_at)
        SELECT id, org_id, teeth, pitch_diameter, outside_diameter, pitch, p_at, p_at FROM input ORDER BY n
        RETURNING *),
    e AS (
        INSERT INTO outbox (event_id, subject, type, aggregate_type, aggregate_id, org_id, version, occurred_at, payload)
        SELECT i.event_id, 'events.sprocket.' || s.id || '.created', 'created', 'sprocket', s.id, s.org_id, s.version, p_at,
               jsonb_build_object('sprocket', to_jsonb(s))
        FROM s JOIN input i ON i.id = s.id ORDER BY i.n),
    a AS (
        INSERT INTO audit_log (org_id, token_id, actor, client_addr, user_agent, request_id,
                               action, resource_type, resource_id, version, changes, at)
        SELECT s.org_id, NULLIF(i.token_id, 0), i.actor, i.client_addr, i.user_agent, i.request_id,
               'sprocket.created', 'sprocket', s.id, s.version, jsonb_build_object('sprocket', to_jsonb(s)), p_at
        FROM s JOIN input i ON i.id = s.id ORDER BY i.n),
    k AS (
        INSERT INTO idempotency_keys (org_id, key, request_hash, resource_type, resource)
        SELECT s.org_id, i.key, i.hash, 'sprocket', to_jsonb(s)
        FROM s JOIN input i ON i.id = s.id WHERE i.key <> '')
    SELECT array_agg(id ORDER BY n) INTO new_ids FROM input;
    COMMIT;
    -- The insert position: past the commit even when it returned before its
    -- record was written out (synchronous_commit off).
    commit_lsn := pg_current_wal_insert_lsn()::text;
END $$;
-- +goose StatementEnd
DROP PROCEDURE create_sprocket;

-- +goose Down
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
DROP PROCEDURE create_sprockets;
