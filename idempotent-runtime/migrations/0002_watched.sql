-- idempotent-actix: notify only when someone waits.
--
-- A claim that finds the key running (a duplicate about to wait on another replica) sets
-- `watched`; completing or releasing the row sends NOTIFY only if it is set. NOTIFY takes a
-- global lock at commit, so sending it for every first execution costs throughput.
-- Metadata-only on PostgreSQL 11 and later (a constant default); safe to run again.
ALTER TABLE idempotency_records ADD COLUMN IF NOT EXISTS watched boolean NOT NULL DEFAULT false;
