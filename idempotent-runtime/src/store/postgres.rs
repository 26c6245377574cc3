//! The PostgreSQL store: several replicas sharing one PostgreSQL database.
//!
//! # Schema
//!
//! One table, `idempotency_records` ([`MIGRATION`]): the hex SHA-256 of the record identity is
//! the primary key, so every claim of a key races on one unique constraint, and keys
//! (bearer-like secrets in global scope) never appear in the table or in statement logs. A row
//! is `running` (a claim: token, fingerprint, `expires_at` = end of the lease) or `completed`
//! (`record` = the [`Record::encode`] bytes, `expires_at` = end of the ttl). A row past
//! `expires_at` counts as absent in every statement; the expiry sweep deletes it later.
//!
//! # Statements
//!
//! Each store call is one statement, hence one round trip (statements are prepared once per
//! pooled connection):
//!
//! - **claim**: reads the live row and, only if there is none, inserts one with a new token
//!   from a sequence; `ON CONFLICT (id) DO UPDATE ... WHERE expired` takes over a lapsed claim
//!   or an expired record in the same statement. The row lock the upsert takes is what makes
//!   the claim atomic across replicas.
//! - **renew**, **complete**, **release**: `UPDATE`/`DELETE ... WHERE id = $1 AND token = $2
//!   AND state = 'running'`, so a stale token changes nothing; complete and release then
//!   `pg_notify('idempotency_changes', topic)`, delivered at commit.
//! - **lookup**: one indexed `SELECT` of the live row.
//!
//! A listener task holds one extra connection in `LISTEN idempotency_changes` and wakes the
//! waiters of this process; a sweeper task deletes expired rows in small batches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::cached::ExpiringStore;
use super::remote::{fingerprint_from, reconnect_delay, topic_of, unexpected, Background, RemoteState, Waiters};
use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// The schema: the `idempotency_records` table, its fencing-token sequence and its expiry
/// index. Every statement is `IF NOT EXISTS`, so it can run on every start
/// ([`PostgresStore::migrate`]) or be applied by your own migration tool (the file is
/// `migrations/0001_idempotency_records.sql` in this crate).
pub const MIGRATION: &str = include_str!("../../migrations/0001_idempotency_records.sql");

/// Serialises concurrent migrations of replicas starting together (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6964_656d_706f_7465; // "idempote"

const CHANNEL: &str = "idempotency_changes";

/// Rows the expiry sweep deletes per statement: short transactions, short row locks.
const SWEEP_BATCH: i64 = 500;

/// How long past its expiry a row stays before the sweep deletes it. Within it, a holder whose
/// lease lapsed unseen (nobody claimed the key since) may still complete.
const SWEEP_GRACE: Duration = Duration::from_secs(60);

/// A concurrent claim that committed after this statement's snapshot was taken is neither
/// seen by the read nor overwritten by the upsert; the next attempt sees it.
const CLAIM_ATTEMPTS: usize = 3;

const CLAIM: &str = "
WITH live AS (
    SELECT state, fingerprint, record, extract(epoch FROM expires_at - now())::float8 AS expires_in
      FROM idempotency_records
     WHERE id = $1::text AND expires_at > now()
), claimed AS (
    INSERT INTO idempotency_records AS r (id, token, fingerprint, state, expires_at)
    SELECT $1::text, nextval('idempotency_fencing_tokens'), $2::bytea, 'running',
           now() + $3::float8 * interval '1 second'
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
SELECT state, NULL, fingerprint, record, expires_in FROM live";

const LOOKUP: &str = "
SELECT state, NULL::bigint AS token, fingerprint, record,
       extract(epoch FROM expires_at - now())::float8 AS expires_in
  FROM idempotency_records
 WHERE id = $1::text AND expires_at > now()";

const RENEW: &str = "
UPDATE idempotency_records
   SET expires_at = now() + $3::float8 * interval '1 second'
 WHERE id = $1::text AND token = $2::int8 AND state = 'running'";

const COMPLETE: &str = "
WITH done AS (
    UPDATE idempotency_records
       SET state = 'completed', record = $3::bytea, expires_at = now() + $4::float8 * interval '1 second'
     WHERE id = $1::text AND token = $2::int8 AND state = 'running'
    RETURNING 1
)
SELECT pg_notify($5::text, $6::text) FROM done";

const RELEASE: &str = "
WITH gone AS (
    DELETE FROM idempotency_records
     WHERE id = $1::text AND token = $2::int8 AND state = 'running'
    RETURNING 1
)
SELECT pg_notify($3::text, $4::text) FROM gone";

/// Locks only rows nobody else holds (`SKIP LOCKED`): a sweep never waits for a request, and a
/// request waits at most for one small batch.
const SWEEP: &str = "
DELETE FROM idempotency_records
 WHERE id IN (SELECT id FROM idempotency_records
               WHERE expires_at < now() - $2::float8 * interval '1 second'
               ORDER BY expires_at
               LIMIT $1::int8
                 FOR UPDATE SKIP LOCKED)";

/// The PostgreSQL store: several replicas sharing one PostgreSQL (10 or later) database.
///
/// - **Claim** is one statement racing on the table's primary key: of any number of
///   concurrent claims on any number of replicas exactly one inserts (or takes over an
///   expired row); the others get the holder's fingerprint or the completed record in the
///   same round trip.
/// - **Leases**: a running row expires at the end of its lease and then counts as absent; the
///   engine renews it while the handler runs, and a crashed replica's key frees up after it.
/// - **Fencing**: tokens come from a sequence; renew, complete and release match the token.
/// - **Waiting**: complete and release `NOTIFY`; [`Store::wait_for_change`] returns when the
///   key's notification arrives (one `LISTEN` connection per store, opened on the first claim
///   and re-opened on its own after a disconnection), or after its timeout.
/// - **Expiry sweep**: a background task deletes rows expired for over a minute, at most 500
///   per statement, skipping locked rows, every minute by default.
///
/// Connections come from a deadpool pool (16 by default), created on demand: an app can start
/// while the database is down, and the store recovers on its own when it is back. Run
/// [`PostgresStore::migrate`] once at startup (or apply [`MIGRATION`] with your migration
/// tool). Connections are unencrypted (`NoTls`): reach the database over a private network or
/// a Unix socket.
///
/// Clones share the same pool and tasks; the tasks stop when the last clone is dropped.
///
/// ```no_run
/// use idempotent_runtime::{CachedStore, Idempotency, PostgresStore};
///
/// # async fn build() -> Result<(), idempotent_runtime::StoreError> {
/// let postgres = PostgresStore::new("postgres://app@db.internal/app")?;
/// postgres.migrate().await?;
/// let idempotency = Idempotency::builder().store(CachedStore::new(postgres, 64 * 1024 * 1024)).build();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    listen_config: tokio_postgres::Config,
    sweep_every: Duration,
    waiters: Arc<Waiters>,
    listener: Background,
    sweeper: Background,
}

/// Builds a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: usize,
    connect_timeout: Duration,
    sweep_every: Duration,
}

impl PostgresStoreBuilder {
    /// Most connections the pool opens (default 16), plus one for notifications.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Bound on opening a connection and on waiting for a free one (default 2 s), unless the
    /// URL sets `connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Interval between two expiry sweeps of this replica (default 60 s).
    pub fn sweep_every(mut self, interval: Duration) -> Self {
        self.sweep_every = interval.max(Duration::from_secs(1));
        self
    }

    /// Finishes the store. No connection is opened yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is not a valid PostgreSQL connection string.
    pub fn build(self) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(StoreError::unavailable)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.connect_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .build()
            .map_err(StoreError::unavailable)?;
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                listen_config: config,
                sweep_every: self.sweep_every,
                waiters: Arc::default(),
                listener: Background::default(),
                sweeper: Background::default(),
            }),
        })
    }
}

impl PostgresStore {
    /// A store on the database at `url` (`postgres://user[:password]@host[:port]/db`, or
    /// `host=... user=...`), with the defaults of [`PostgresStoreBuilder`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is invalid. Nothing is connected yet.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).build()
    }

    /// Starts configuring a store on the database at `url`.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            sweep_every: Duration::from_secs(60),
        }
    }

    /// Creates the table, sequence and index if they do not exist ([`MIGRATION`]), in one
    /// transaction under an advisory lock, so replicas starting together do not collide.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached or refuses the schema
    /// (for instance, the user may not create tables).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        let transaction = client.transaction().await.map_err(StoreError::unavailable)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(StoreError::unavailable)?;
        transaction
            .batch_execute(MIGRATION)
            .await
            .map_err(StoreError::unavailable)?;
        transaction.commit().await.map_err(StoreError::unavailable)
    }

    /// The `id` of a record's row (the hex SHA-256 of its identity, also its notification
    /// topic), for operators inspecting or deleting one record.
    pub fn record_id(&self, key: &RecordKey) -> String {
        topic_of(key)
    }

    /// Deletes rows expired for over a minute, in batches of 500, until none is left; returns
    /// how many it deleted. The background sweep calls this; call it yourself to sweep from a
    /// scheduled job instead.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached.
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        sweep(&self.inner.pool).await
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.ensure_sweeper();
        let client = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        let statement = client.prepare_cached(sql).await.map_err(StoreError::unavailable)?;
        client.query(&statement, params).await.map_err(StoreError::unavailable)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.ensure_sweeper();
        let client = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        let statement = client.prepare_cached(sql).await.map_err(StoreError::unavailable)?;
        client
            .execute(&statement, params)
            .await
            .map_err(StoreError::unavailable)
    }

    fn ensure_sweeper(&self) {
        let inner = &self.inner;
        inner
            .sweeper
            .ensure(|| sweep_periodically(inner.pool.clone(), inner.sweep_every));
    }

    fn ensure_listener(&self) {
        let inner = &self.inner;
        inner
            .listener
            .ensure(|| listen(inner.listen_config.clone(), Arc::clone(&inner.waiters)));
    }
}

async fn sweep(pool: &Pool) -> Result<u64, StoreError> {
    let client = pool.get().await.map_err(StoreError::unavailable)?;
    let statement = client.prepare_cached(SWEEP).await.map_err(StoreError::unavailable)?;
    let mut deleted = 0;
    loop {
        let batch = client
            .execute(&statement, &[&SWEEP_BATCH, &SWEEP_GRACE.as_secs_f64()])
            .await
            .map_err(StoreError::unavailable)?;
        deleted += batch;
        if batch < SWEEP_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
        // Leave room for requests between two batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sweep_periodically(pool: Pool, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match sweep(&pool).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "idempotency store: expired records swept"),
            Err(error) => tracing::debug!(%error, "idempotency store: expiry sweep skipped"),
        }
    }
}

/// Keeps one connection in `LISTEN` and wakes local waiters, reconnecting after any failure.
/// Runs until the store is dropped.
async fn listen(config: tokio_postgres::Config, waiters: Arc<Waiters>) {
    let mut failures = 0;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {CHANNEL}");
                let listen = client.batch_execute(&statement);
                tokio::pin!(listen);
                let mut listening = false;
                loop {
                    tokio::select! {
                        subscribed = &mut listen, if !listening => match subscribed {
                            Ok(()) => {
                                listening = true;
                                failures = 0;
                                // Changes made while nobody listened were not announced.
                                waiters.wake_all();
                            }
                            Err(_) => break,
                        },
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(notification))) => waiters.wake(notification.payload()),
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        },
                    }
                }
                if listening {
                    tracing::warn!("idempotency store: PostgreSQL notification connection lost; reconnecting");
                    waiters.wake_all();
                }
                failures += u32::from(!listening);
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(%error, "idempotency store: cannot listen for PostgreSQL notifications yet");
            }
        }
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

fn parse_state(row: &Row) -> Result<RemoteState, StoreError> {
    let column = |e: tokio_postgres::Error| StoreError::unavailable(e);
    let state: &str = row.try_get(0).map_err(column)?;
    match state {
        "acquired" => {
            let token: i64 = row.try_get(1).map_err(column)?;
            let token = u64::try_from(token).map_err(|_| unexpected("negative fencing token"))?;
            Ok(RemoteState::Acquired(FencingToken(token)))
        }
        "running" => {
            let fingerprint: &[u8] = row.try_get(2).map_err(column)?;
            fingerprint_from(fingerprint).map(RemoteState::InFlight)
        }
        "completed" => {
            let record: &[u8] = row.try_get(3).map_err(column)?;
            let record = Record::decode(Bytes::copy_from_slice(record))?;
            let expires_in: Option<f64> = row.try_get(4).map_err(column)?;
            let expires_in = expires_in.and_then(|secs| Duration::try_from_secs_f64(secs).ok());
            Ok(RemoteState::Completed(Arc::new(record), expires_in))
        }
        _ => Err(unexpected("unknown state")),
    }
}

fn token_param(token: FencingToken) -> Result<i64, StoreError> {
    i64::try_from(token.0).map_err(|_| unexpected("fencing token out of range"))
}

#[async_trait::async_trait]
impl ExpiringStore for PostgresStore {
    async fn claim_expiring(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<(Claim, Option<Duration>), StoreError> {
        // Listening before the first duplicate has to wait, so its first notification is not missed.
        self.ensure_listener();
        let (id, fingerprint_bytes, lease) = (self.record_id(key), &fingerprint.0[..], lease.as_secs_f64());
        for _ in 0..CLAIM_ATTEMPTS {
            let rows = self.query(CLAIM, &[&id, &fingerprint_bytes, &lease]).await?;
            let Some(row) = rows.first() else { continue };
            return parse_state(row)?.into_claim();
        }
        Err(unexpected("claim did not settle under contention"))
    }

    async fn lookup_expiring(&self, key: &RecordKey) -> Result<(Lookup, Option<Duration>), StoreError> {
        let rows = self.query(LOOKUP, &[&self.record_id(key)]).await?;
        rows.first().map_or(Ok(RemoteState::Absent), parse_state)?.into_lookup()
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        Ok(self.claim_expiring(key, fingerprint, lease).await?.0)
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        let renewed = self
            .execute(
                RENEW,
                &[&self.record_id(key), &token_param(token)?, &lease.as_secs_f64()],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (id, encoded) = (self.record_id(key), record.encode());
        let params: [&(dyn ToSql + Sync); 6] = [
            &id,
            &token_param(token)?,
            &&encoded[..],
            &ttl.as_secs_f64(),
            &CHANNEL,
            &id,
        ];
        Ok(!self.query(COMPLETE, &params).await?.is_empty())
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        let id = self.record_id(key);
        let params: [&(dyn ToSql + Sync); 4] = [&id, &token_param(token)?, &CHANNEL, &id];
        Ok(!self.query(RELEASE, &params).await?.is_empty())
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        Ok(self.lookup_expiring(key).await?.0)
    }

    /// Returns when the key's completion or release is announced, or after `timeout`.
    ///
    /// # Errors
    ///
    /// None: while the notification connection is down, this simply waits for the timeout
    /// (the caller's next lookup reports the outage).
    async fn wait_for_change(&self, key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        self.ensure_listener();
        self.inner.waiters.wait(&topic_of(key), timeout).await;
        Ok(())
    }
}
