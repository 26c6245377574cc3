-- One first execution on the PostgreSQL store, as pgbench runs it: the store's claim and
-- complete statements (idempotent-runtime/src/store/postgres.rs), each its own transaction,
-- on a fresh id, with nobody waiting (so no NOTIFY). Ids start with `bench` so
-- scripts/bench-postgres-notify.sh can delete them afterwards. Used with -M prepared.
\set n random(1, 9000000000000000)
WITH prior AS (
    SELECT state FROM idempotency_records
     WHERE id = 'bench' || lpad((:n)::text, 59, '0') AND expires_at <= now()
), live AS (
    SELECT state, fingerprint, record, watched,
           extract(epoch FROM expires_at - now())::float8 AS expires_in
      FROM idempotency_records
     WHERE id = 'bench' || lpad((:n)::text, 59, '0') AND expires_at > now()
), marked AS (
    UPDATE idempotency_records
       SET watched = true
     WHERE id = 'bench' || lpad((:n)::text, 59, '0') AND state = 'running' AND expires_at > now()
       AND EXISTS (SELECT 1 FROM live WHERE state = 'running' AND NOT watched)
    RETURNING 1
), claimed AS (
    INSERT INTO idempotency_records AS r (id, token, fingerprint, state, expires_at)
    SELECT 'bench' || lpad((:n)::text, 59, '0'), nextval('idempotency_fencing_tokens'),
           decode(repeat('07', 32), 'hex'), 'running', now() + 30::float8 * interval '1 second'
     WHERE NOT EXISTS (SELECT 1 FROM live)
    ON CONFLICT (id) DO UPDATE
       SET token = excluded.token, fingerprint = excluded.fingerprint, state = 'running',
           expires_at = excluded.expires_at, record = NULL
     WHERE r.expires_at <= now()
    RETURNING token
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM prior WHERE state = 'running') THEN 'reacquired' ELSE 'acquired' END
           AS state, token, NULL::bytea AS fingerprint, NULL::bytea AS record,
       NULL::float8 AS expires_in
  FROM claimed
UNION ALL
SELECT state, NULL, fingerprint, record, expires_in
  FROM live
 WHERE state = 'completed' OR watched OR EXISTS (SELECT 1 FROM marked)
\gset claim_
WITH done AS (
    UPDATE idempotency_records
       SET state = 'completed', record = decode(repeat('01', 40), 'hex'),
           expires_at = now() + 300::float8 * interval '1 second'
     WHERE id = 'bench' || lpad((:n)::text, 59, '0') AND token = :claim_token AND state = 'running'
    RETURNING watched
)
SELECT CASE WHEN watched THEN pg_notify('idempotency_changes', 'bench' || lpad((:n)::text, 59, '0')) END FROM done;
