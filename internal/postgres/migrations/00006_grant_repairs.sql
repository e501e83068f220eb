-- +goose Up
-- A revocation commits here first: each revoked token's hash waits in
-- grant_repairs until Redis says it is revoked too. Instances look up these
-- tokens in Postgres, never in Redis or memory, for as long as they wait,
-- so that a revocation made while Redis cannot be reached still holds at
-- once (see auth.Repairer). Hashes only: a row says nothing of its token.
-- Every instance reads them, oldest first, twice a second: by the index.
CREATE TABLE grant_repairs (
    hash       bytea PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grant_repairs_created_at ON grant_repairs (created_at);

-- +goose Down
DROP TABLE grant_repairs;
