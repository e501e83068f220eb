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

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TABLE factory_samples;
DROP TABLE factories;
DROP TABLE sprockets;
DROP TABLE organizations;
