-- idempotent-actix: the PostgreSQL store's schema.
--
-- Safe to run again (every statement is IF NOT EXISTS); PostgresStore::migrate runs it in one
-- transaction under an advisory lock, so replicas starting together apply it once.

-- Fencing tokens: one sequence for every record, so a new claim of a key always carries a
-- larger token than any earlier claim of it. CACHE 1 keeps values increasing across sessions.
CREATE SEQUENCE IF NOT EXISTS idempotency_fencing_tokens AS bigint CACHE 1;

CREATE TABLE IF NOT EXISTS idempotency_records (
    -- Hex SHA-256 of the record identity (namespace, scope, key), so keys never appear in
    -- clear: the unique constraint every claim races on.
    id          text COLLATE "C" PRIMARY KEY,
    -- Token of the claim that holds (or completed) the row.
    token       bigint NOT NULL,
    -- SHA-256 of the request that claimed the key.
    fingerprint bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    state       text NOT NULL CHECK (state IN ('running', 'completed')),
    -- A running row: the end of its lease. A completed row: the end of its ttl. Past it, the
    -- row counts as absent in every query, and a new claim takes it over.
    expires_at  timestamptz NOT NULL,
    -- The completed record (Record::encode); NULL while running.
    record      bytea,
    CHECK ((state = 'completed') = (record IS NOT NULL))
);

-- The expiry sweep deletes the oldest expired rows first, in small batches.
CREATE INDEX IF NOT EXISTS idempotency_records_expires_at ON idempotency_records (expires_at);
