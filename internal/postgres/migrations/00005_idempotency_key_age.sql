-- +goose Up
-- Idempotency keys answer for a day (keyLifetime); the writer deletes older
-- ones a thousand at a time, found by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- +goose Down
DROP INDEX idempotency_keys_created_at;
