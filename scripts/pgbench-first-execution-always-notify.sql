-- The same first execution with the statements as they were before NOTIFY depended on a
-- waiter: no `marked` step in the claim, and a NOTIFY on every completion.
\set n random(1, 9000000000000000)
WITH live AS (
    SELECT state, fingerprint, record, extract(epoch FROM expires_at - now())::float8 AS expires_in
      FROM idempotency_records
     WHERE id = 'bench' || lpad((:n)::text, 59, '0') AND expires_at > now()
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
SELECT 'acquired' AS state, token, NULL::bytea AS fingerprint, NULL::bytea AS record,
       NULL::float8 AS expires_in
  FROM claimed
UNION ALL
SELECT state, NULL, fingerprint, record, expires_in FROM live
\gset claim_
WITH done AS (
    UPDATE idempotency_records
       SET state = 'completed', record = decode(repeat('01', 40), 'hex'),
           expires_at = now() + 300::float8 * interval '1 second'
     WHERE id = 'bench' || lpad((:n)::text, 59, '0') AND token = :claim_token AND state = 'running'
    RETURNING 1
)
SELECT pg_notify('idempotency_changes', 'bench' || lpad((:n)::text, 59, '0')) FROM done;
