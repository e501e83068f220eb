-- +goose Up
-- What every program of the service must agree on, recorded by the first
-- to start: the fingerprint of ID_KEY (an id made with it), so that a
-- program started with another key refuses to run instead of writing or
-- reading /v1 ids no other program can.
CREATE TABLE service_settings (
    name   text PRIMARY KEY,
    value  text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE service_settings;
