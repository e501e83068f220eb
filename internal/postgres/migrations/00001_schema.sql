-- +goose Up
CREATE TABLE organizations (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- The seeds belong to "default"; its id is fixed so that configuration and
-- tests can name it before access control assigns callers their own.
INSERT INTO organizations (id, name) VALUES (1, 'default');
SELECT setval('organizations_id_seq', 1);

-- Rows are never removed by the API: a delete leaves a tombstone whose
-- version keeps growing, so that the read model can tell a late event from a
-- new one and a rebuild never resurrects what was deleted.
CREATE TABLE sprockets (
    id               bigserial PRIMARY KEY,
    org_id           bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    version          bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    teeth            bigint NOT NULL CHECK (teeth > 0),
    pitch_diameter   double precision NOT NULL CHECK (pitch_diameter > 0 AND pitch_diameter < 'Infinity'),
    outside_diameter double precision NOT NULL CHECK (outside_diameter > 0 AND outside_diameter < 'Infinity'),
    pitch            double precision NOT NULL CHECK (pitch > 0 AND pitch < 'Infinity'),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted_at       timestamptz
);
CREATE INDEX sprockets_org_id ON sprockets (org_id, id);

CREATE TABLE factories (
    id           bigserial PRIMARY KEY,
    org_id       bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    version      bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    name         text NOT NULL,
    sample_count bigint NOT NULL DEFAULT 0,
    first_time   bigint,
    last_time    bigint,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz
);
CREATE INDEX factories_org_id ON factories (org_id, id);

-- version is the factory version that added the sample: a projector that
-- missed events rebuilds only the time buckets changed since the version it
-- holds.
CREATE TABLE factory_samples (
    factory_id bigint NOT NULL REFERENCES factories (id) ON DELETE CASCADE,
    time       bigint NOT NULL CHECK (time >= 0),
    actual     bigint NOT NULL CHECK (actual >= 0),
    goal       bigint NOT NULL CHECK (goal >= 0),
    version    bigint NOT NULL,
    PRIMARY KEY (factory_id, time)
);
CREATE INDEX factory_samples_version ON factory_samples (factory_id, version);

-- One row per event, with the envelope's fields; the relay encodes the
-- envelope. A create's payload is its inserted row (to_jsonb), so the row
-- and its event go in one statement.
-- Rows are deleted once the broker has stored their event; the stream keeps
-- events for its retention period.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    subject        text NOT NULL,
    type           text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   bigint NOT NULL,
    org_id         bigint NOT NULL,
    version        bigint NOT NULL,
    occurred_at    timestamptz NOT NULL,
    payload        jsonb NOT NULL
);

-- One row per Idempotency-Key, written in the transaction that creates the
-- resource, so a retried create can never create twice.
CREATE TABLE idempotency_keys (
    org_id        bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    resource_type text NOT NULL,
    resource      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, key)
);

-- create_sprocket is the writer's hottest path in one round trip: it inserts
-- a sprocket, its created event (whose payload is the inserted row, whose
-- columns are the domain's JSON fields) and, with a key, its idempotency
-- record in one statement; commits; and returns the new id and the WAL
-- position after the commit, for the consistency token. It must be CALLed
-- outside a transaction. A taken key raises the unique violation of
-- idempotency_keys_pkey.
-- +goose StatementBegin
CREATE PROCEDURE create_sprocket(
    p_org bigint, p_teeth bigint, p_pitch_diameter double precision,
    p_outside_diameter double precision, p_pitch double precision,
    p_at timestamptz, p_event_id uuid, p_key text, p_hash bytea,
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
    k AS (
        INSERT INTO idempotency_keys (org_id, key, request_hash, resource_type, resource)
        SELECT s.org_id, p_key, p_hash, 'sprocket', to_jsonb(s) FROM s WHERE p_key <> '')
    SELECT s.id INTO new_id FROM s;
    COMMIT;
    commit_lsn := pg_current_wal_lsn()::text;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP PROCEDURE IF EXISTS create_sprocket;
DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TABLE factory_samples;
DROP TABLE factories;
DROP TABLE sprockets;
DROP TABLE organizations;
