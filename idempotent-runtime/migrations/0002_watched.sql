-- idempotent-actix: notify only when someone waits.
--
-- A claim that finds the key running (a duplicate about to wait on another replica) sets
-- `watched`; completing or releasing the row sends NOTIFY only if it is set. NOTIFY takes a
-- global lock at commit, so sending it for every first execution costs throughput.
--
-- Safe to run again. The column is added only if missing: ALTER TABLE takes an exclusive lock
-- on the table even when IF NOT EXISTS makes it a no-op, which would queue every request (and
-- can deadlock with statements that read, then write the table) on each start. Adding it is
-- metadata-only on PostgreSQL 11 and later (a constant default).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = 'idempotency_records'::regclass
                      AND attname = 'watched' AND NOT attisdropped) THEN
        ALTER TABLE idempotency_records ADD COLUMN watched boolean NOT NULL DEFAULT false;
    END IF;
END
$$;
