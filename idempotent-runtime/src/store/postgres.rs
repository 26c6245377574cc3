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
//! pooled connection, or sent unnamed with their parameter types behind a transaction pooler,
//! [`PostgresStoreBuilder::transaction_pooler`]):
//!
//! - **claim**: reads the live row and, only if there is none, inserts one with a new token
//!   from a sequence; `ON CONFLICT (id) DO UPDATE ... WHERE expired` takes over a lapsed claim
//!   or an expired record in the same statement. The row lock the upsert takes is what makes
//!   the claim atomic across replicas. A claim that finds the key running marks the row
//!   `watched` in the same statement: a waiter is about to need a notification.
//! - **renew**, **complete**, **release**: `UPDATE`/`DELETE ... WHERE id = $1 AND token = $2
//!   AND state = 'running'`, so a stale token changes nothing; complete and release then
//!   `pg_notify('idempotency_changes', topic)`, delivered at commit, only if the row is
//!   `watched`: a `NOTIFY` serialises commits on a global lock, and most keys never have a
//!   waiter.
//! - **lookup**: one indexed `SELECT` of the live row.
//!
//! A listener task holds one extra connection in `LISTEN idempotency_changes` and wakes the
//! waiters of this process; a sweeper task deletes expired rows in small batches.
//!
//! # Marking before waiting
//!
//! The mark and the completion race on the row lock. If the mark commits first, the
//! completion sees it and notifies. If the completion commits first, the mark's `UPDATE`
//! re-reads the row, finds it no longer running and marks nothing; the claim then returns no
//! row and runs again, and sees the completed record. A waiter never waits for a notification
//! nobody will send (beyond the engine's fallback poll).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls, Row, Socket};

use super::cached::ExpiringStore;
use super::postgres_tls::{self, TlsOptions};
use super::remote::{fingerprint_from, reconnect_delay, topic_of, unexpected, Background, RemoteState, Waiters};
use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError, TransactionalStore};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// The schema: the `idempotency_records` table, its fencing-token sequence, its expiry index
/// and its `watched` column. Every statement is `IF NOT EXISTS`, so it can run on every start
/// ([`PostgresStore::migrate`]) or be applied by your own migration tool (the files are
/// `migrations/0001_idempotency_records.sql` and `migrations/0002_watched.sql` in this crate).
pub const MIGRATION: &str = concat!(
    include_str!("../../migrations/0001_idempotency_records.sql"),
    "\n",
    include_str!("../../migrations/0002_watched.sql"),
);

/// The files of [`MIGRATION`], which [`PostgresStore::migrate`] applies one transaction each.
const MIGRATION_STEPS: [&str; 2] = [
    include_str!("../../migrations/0001_idempotency_records.sql"),
    include_str!("../../migrations/0002_watched.sql"),
];

/// Serialises concurrent migrations of replicas starting together (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6964_656d_706f_7465; // "idempote"

/// Whether the schema has the last migration's column.
const UP_TO_DATE: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.columns
 WHERE table_schema = current_schema() AND table_name = 'idempotency_records' AND column_name = 'watched')";

const CHANNEL: &str = "idempotency_changes";

/// Rows the expiry sweep deletes per statement: short transactions, short row locks.
const SWEEP_BATCH: i64 = 500;

/// How long past its expiry a row stays before the sweep deletes it. Within it, a holder whose
/// lease lapsed unseen (nobody claimed the key since) may still complete.
const SWEEP_GRACE: Duration = Duration::from_secs(60);

/// A concurrent claim that committed after this statement's snapshot was taken is neither
/// seen by the read nor overwritten by the upsert; the next attempt sees it.
const CLAIM_ATTEMPTS: usize = 3;

/// A statement with the types of its parameters, so it can be sent unnamed (one round trip,
/// no prepared statement left on a pooled server connection).
struct Sql {
    text: &'static str,
    types: &'static [Type],
}

const CLAIM: Sql = Sql {
    text: "
WITH prior AS (
    SELECT state FROM idempotency_records WHERE id = $1::text AND expires_at <= now()
), live AS (
    SELECT state, fingerprint, record, watched,
           extract(epoch FROM expires_at - now())::float8 AS expires_in
      FROM idempotency_records
     WHERE id = $1::text AND expires_at > now()
), marked AS (
    UPDATE idempotency_records
       SET watched = true
     WHERE id = $1::text AND state = 'running' AND expires_at > now()
       AND EXISTS (SELECT 1 FROM live WHERE state = 'running' AND NOT watched)
    RETURNING 1
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
SELECT CASE WHEN EXISTS (SELECT 1 FROM prior WHERE state = 'running') THEN 'reacquired' ELSE 'acquired' END
           AS state, token, NULL::bytea AS fingerprint, NULL::bytea AS record,
       NULL::float8 AS expires_in
  FROM claimed
UNION ALL
SELECT state, NULL, fingerprint, record, expires_in
  FROM live
 WHERE state = 'completed' OR watched OR EXISTS (SELECT 1 FROM marked)",
    types: &[Type::TEXT, Type::BYTEA, Type::FLOAT8],
};

const LOOKUP: Sql = Sql {
    text: "
SELECT state, NULL::bigint AS token, fingerprint, record,
       extract(epoch FROM expires_at - now())::float8 AS expires_in
  FROM idempotency_records
 WHERE id = $1::text AND expires_at > now()",
    types: &[Type::TEXT],
};

const FORGET: Sql = Sql {
    text: "
WITH gone AS (
    DELETE FROM idempotency_records
     WHERE id = $1::text
    RETURNING watched, state = 'running' OR expires_at > now() AS held
)
SELECT held, CASE WHEN watched THEN pg_notify($2::text, $1::text) END FROM gone",
    types: &[Type::TEXT, Type::TEXT],
};

const RENEW: Sql = Sql {
    text: "
UPDATE idempotency_records
   SET expires_at = now() + $3::float8 * interval '1 second'
 WHERE id = $1::text AND token = $2::int8 AND state = 'running'",
    types: &[Type::TEXT, Type::INT8, Type::FLOAT8],
};

/// One row when the token held the claim; `pg_notify` runs only for a watched row.
const COMPLETE: Sql = Sql {
    text: "
WITH done AS (
    UPDATE idempotency_records
       SET state = 'completed', record = $3::bytea, expires_at = now() + $4::float8 * interval '1 second'
     WHERE id = $1::text AND token = $2::int8 AND state = 'running'
    RETURNING watched
)
SELECT CASE WHEN watched THEN pg_notify($5::text, $1::text) END FROM done",
    types: &[Type::TEXT, Type::INT8, Type::BYTEA, Type::FLOAT8, Type::TEXT],
};

const RELEASE: Sql = Sql {
    text: "
WITH gone AS (
    -- Kept (lapsed, its token burnt) until the sweep, so the next claim is a reacquisition.
    UPDATE idempotency_records
       SET token = 0, expires_at = now()
     WHERE id = $1::text AND token = $2::int8 AND state = 'running'
    RETURNING watched
)
SELECT CASE WHEN watched THEN pg_notify($3::text, $1::text) END FROM gone",
    types: &[Type::TEXT, Type::INT8, Type::TEXT],
};

/// Locks only rows nobody else holds (`SKIP LOCKED`): a sweep never waits for a request, and a
/// request waits at most for one small batch.
const SWEEP: Sql = Sql {
    text: "
DELETE FROM idempotency_records
 WHERE id IN (SELECT id FROM idempotency_records
               WHERE expires_at < now() - $2::float8 * interval '1 second'
               ORDER BY expires_at
               LIMIT $1::int8
                 FOR UPDATE SKIP LOCKED)",
    types: &[Type::INT8, Type::FLOAT8],
};

/// The PostgreSQL store: several replicas sharing one PostgreSQL (10 or later) database.
///
/// - **Claim** is one statement racing on the table's primary key: of any number of
///   concurrent claims on any number of replicas exactly one inserts (or takes over an
///   expired row); the others get the holder's fingerprint or the completed record in the
///   same round trip.
/// - **Leases**: a running row expires at the end of its lease and then counts as absent; the
///   engine renews it while the handler runs, and a crashed replica's key frees up after it.
/// - **Fencing**: tokens come from a sequence; renew, complete and release match the token.
/// - **Waiting**: a claim that finds the key running marks the row `watched`; complete and
///   release `NOTIFY` when the row is watched (and only then: a first execution nobody waits
///   for sends none). [`Store::wait_for_change`] returns when the key's notification arrives
///   (one `LISTEN` connection per store, opened on the first claim and re-opened on its own
///   after a disconnection), or after its timeout.
/// - **Expiry sweep**: a background task deletes rows expired for over a minute, at most 500
///   per statement, skipping locked rows, every minute by default.
///
/// Connections come from a deadpool pool (16 by default), created on demand: an app can start
/// while the database is down, and the store recovers on its own when it is back. Run
/// [`PostgresStore::migrate`] once at startup (or apply [`MIGRATION`] with your migration
/// tool).
///
/// # TLS
///
/// With the `postgres-tls` feature, the URL's `sslmode` (`prefer`, `require`, `verify-ca`,
/// `verify-full`) and `sslrootcert` (a PEM file of trusted roots; the system's roots without
/// it) apply as libpq applies them, through rustls. A URL without `sslmode` connects
/// unencrypted, as without the feature; so does `sslmode=prefer` without the feature.
///
/// # Behind PgBouncer
///
/// In transaction pooling mode, set [`PostgresStoreBuilder::transaction_pooler`]: statements
/// are sent unnamed (PgBouncer before 1.21 cannot keep prepared statements), and notifications
/// come from [`PostgresStoreBuilder::notification_url`] (a direct connection) or, without one,
/// waiters look again every 200 ms.
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
    /// Where notifications come from; `None` when nothing can `LISTEN` (a transaction pooler
    /// without a direct notification URL).
    notifications: Option<Target>,
    /// Unnamed statements with explicit parameter types instead of prepared ones.
    unnamed_statements: bool,
    sweep_every: Duration,
    waiters: Arc<Waiters>,
    listener: Background,
    sweeper: Background,
}

/// Builds a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    notification_url: Option<String>,
    transaction_pooler: bool,
    pool_size: usize,
    connect_timeout: Duration,
    sweep_every: Duration,
}

/// A database to connect to: tokio-postgres' configuration and the TLS the URL asks for.
#[derive(Clone)]
struct Target {
    config: tokio_postgres::Config,
    tls: Tls,
}

#[derive(Clone)]
enum Tls {
    Plain,
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Target {
    fn parse(url: &str, connect_timeout: Duration) -> Result<Self, StoreError> {
        let (url, options) = postgres_tls::split_url(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(StoreError::unavailable)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        Ok(Self {
            config,
            tls: Tls::for_options(&options)?,
        })
    }

    fn manager(&self) -> Manager {
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        match &self.tls {
            Tls::Plain => Manager::from_config(self.config.clone(), NoTls, config),
            #[cfg(feature = "postgres-tls")]
            Tls::Rustls(tls) => Manager::from_config(self.config.clone(), tls.clone(), config),
        }
    }

    /// The listener task on this database.
    fn listen(&self, waiters: Arc<Waiters>) -> BoxFuture<'static, ()> {
        match &self.tls {
            Tls::Plain => Box::pin(listen(self.config.clone(), NoTls, waiters)),
            #[cfg(feature = "postgres-tls")]
            Tls::Rustls(tls) => Box::pin(listen(self.config.clone(), tls.clone(), waiters)),
        }
    }
}

impl Tls {
    #[cfg(feature = "postgres-tls")]
    fn for_options(options: &TlsOptions) -> Result<Self, StoreError> {
        if options.wants_tls() {
            postgres_tls::connector(options).map(Self::Rustls)
        } else {
            Ok(Self::Plain)
        }
    }

    /// Without rustls, `prefer` connects unencrypted (as tokio-postgres with `NoTls` always
    /// did); a mode that demands TLS is refused now rather than on every connection.
    #[cfg(not(feature = "postgres-tls"))]
    fn for_options(options: &TlsOptions) -> Result<Self, StoreError> {
        use postgres_tls::SslMode;
        match options.mode {
            Some(SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull) => Err(StoreError::Unavailable(
                "this sslmode needs TLS: enable the `postgres-tls` feature".into(),
            )),
            _ => Ok(Self::Plain),
        }
    }
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

    /// The URL goes through a pooler in transaction mode (PgBouncer's `pool_mode =
    /// transaction`), where one client's statements may run on different server connections
    /// (default `false`).
    ///
    /// Statements are then sent unnamed with their parameter types, still one round trip
    /// each, so no prepared statement is left on a server connection (PgBouncer before 1.21
    /// does not support protocol-level prepared statements). `LISTEN` cannot work through
    /// such a pooler: notifications come from [`notification_url`](Self::notification_url) if
    /// set; without it, waiters on another replica are answered by the engine's fallback poll
    /// (a lookup every 200 ms).
    ///
    /// ```no_run
    /// use idempotent_runtime::PostgresStore;
    ///
    /// # fn build() -> Result<(), idempotent_runtime::StoreError> {
    /// let store = PostgresStore::builder("postgres://app@pgbouncer.internal:6432/app")
    ///     .transaction_pooler(true)
    ///     .notification_url("postgres://app@db.internal:5432/app")
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn transaction_pooler(mut self, enabled: bool) -> Self {
        self.transaction_pooler = enabled;
        self
    }

    /// Where the notification connection (`LISTEN`) goes, when it must not go to the main URL:
    /// the database itself, or a session-mode pool, when the main URL is a transaction pooler.
    /// Same URL syntax and TLS options as the main URL. Default: the main URL, unless
    /// [`transaction_pooler`](Self::transaction_pooler) is set.
    pub fn notification_url(mut self, url: impl Into<String>) -> Self {
        self.notification_url = Some(url.into());
        self
    }

    /// Finishes the store. No connection is opened yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if a URL is not a valid PostgreSQL connection string, its
    /// `sslmode` is unknown, or the TLS it asks for cannot be set up (an unreadable
    /// `sslrootcert`, or no `postgres-tls` feature for `require`, `verify-ca`, `verify-full`).
    pub fn build(self) -> Result<PostgresStore, StoreError> {
        let target = Target::parse(&self.url, self.connect_timeout)?;
        let notifications = match &self.notification_url {
            Some(url) => Some(Target::parse(url, self.connect_timeout)?),
            None if self.transaction_pooler => None,
            None => Some(target.clone()),
        };
        let pool = Pool::builder(target.manager())
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
                notifications,
                unnamed_statements: self.transaction_pooler,
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
            notification_url: None,
            transaction_pooler: false,
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            sweep_every: Duration::from_secs(60),
        }
    }

    /// Creates the table, sequence, index and columns that do not exist ([`MIGRATION`]): each
    /// migration file in a transaction of its own, under an advisory lock, so replicas starting
    /// together do not collide.
    ///
    /// One transaction per file because a file that adds a column to a table in use (an
    /// upgrade) takes an exclusive lock on it: taken first thing in its transaction it only
    /// waits for running statements, while taken after the previous file's `CREATE INDEX IF
    /// NOT EXISTS` (which holds a share lock) it would deadlock with requests that read, then
    /// write the table.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached or refuses the schema
    /// (for instance, the user may not create tables).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        // Up to date (every replica's start but the first): no DDL at all, so no lock against
        // running requests, and none of PostgreSQL's "already exists, skipping" notices in the
        // app's logs.
        let current = client.simple_query(UP_TO_DATE).await.map_err(StoreError::unavailable)?;
        let up_to_date = current
            .iter()
            .any(|message| matches!(message, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t")));
        if up_to_date {
            return Ok(());
        }
        for step in MIGRATION_STEPS {
            let transaction = client.transaction().await.map_err(StoreError::unavailable)?;
            // Simple protocol: no prepared statement, so it also runs through a transaction
            // pooler.
            transaction
                .batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                .await
                .map_err(StoreError::unavailable)?;
            transaction
                .batch_execute(&format!("SET LOCAL client_min_messages = warning; {step}"))
                .await
                .map_err(StoreError::unavailable)?;
            transaction.commit().await.map_err(StoreError::unavailable)?;
        }
        Ok(())
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
        sweep(&self.inner.pool, self.inner.unnamed_statements).await
    }

    async fn query(&self, sql: &Sql, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.ensure_sweeper();
        let client = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        query(&client, self.inner.unnamed_statements, sql, params).await
    }

    async fn execute(&self, sql: &Sql, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.ensure_sweeper();
        let client = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        execute(&client, self.inner.unnamed_statements, sql, params).await
    }

    fn ensure_sweeper(&self) {
        let inner = &self.inner;
        inner
            .sweeper
            .ensure(|| sweep_periodically(inner.pool.clone(), inner.sweep_every, inner.unnamed_statements));
    }

    fn ensure_listener(&self) {
        let inner = &self.inner;
        if let Some(target) = &inner.notifications {
            inner.listener.ensure(|| target.listen(Arc::clone(&inner.waiters)));
        }
    }
}

impl PostgresStore {
    /// Opens a transaction on one of the store's pooled connections (`BEGIN`), for the
    /// application's own statements; [`PostgresStore::complete_in`] then completes a record in
    /// it and commits. The `Transaction` extractor of `#[idempotent]` handlers does this for
    /// you.
    ///
    /// The connection stays out of the pool until the transaction is committed or rolled back;
    /// dropped before that, it is closed (the server rolls the transaction back), never pooled
    /// with the transaction open.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when no connection can be had within the connect timeout,
    /// or `BEGIN` fails.
    pub async fn begin(&self) -> Result<PostgresTransaction, StoreError> {
        let connection = self.inner.pool.get().await.map_err(StoreError::unavailable)?;
        let transaction = PostgresTransaction {
            connection: Some(connection),
            unnamed_statements: self.inner.unnamed_statements,
        };
        // Simple protocol: no prepared statement, so it also runs through a transaction pooler.
        transaction
            .batch_execute("BEGIN")
            .await
            .map_err(StoreError::unavailable)?;
        Ok(transaction)
    }

    /// Completes the claim `token` holds with `record`, kept for `ttl`, inside `transaction`,
    /// and commits: the application's writes in it and the completed record become visible
    /// together, or neither does. The same fenced `UPDATE` as [`Store::complete`]: when `token`
    /// no longer holds the claim (its lease lapsed and another execution took the key over),
    /// the transaction is rolled back, application's writes included, and the answer is
    /// `Ok(false)`.
    ///
    /// Waiters on other replicas are notified at the commit, as after [`Store::complete`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when a statement fails. If it is the `COMMIT` that failed,
    /// or the call was cancelled during it, whether it committed is unknown: the record then
    /// says (completed, or still the claim of `token`, which [`Store::release`] frees). An
    /// error before the `COMMIT` leaves nothing written. Either way the connection is closed,
    /// not pooled.
    pub async fn complete_in(
        &self,
        transaction: PostgresTransaction,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (id, encoded) = (self.record_id(key), record.encode());
        let params: [&(dyn ToSql + Sync); 5] = [&id, &token_param(token)?, &&encoded[..], &ttl.as_secs_f64(), &CHANNEL];
        let connection = transaction.connection();
        let completed = !query(connection, transaction.unnamed_statements, &COMPLETE, &params)
            .await?
            .is_empty();
        if !completed {
            // Nothing of it may stay; a failed rollback closes the connection, which rolls back too.
            let _ = transaction.finish("ROLLBACK").await;
            return Ok(false);
        }
        transaction.finish("COMMIT").await?;
        Ok(true)
    }
}

/// A transaction open on one pooled connection of a [`PostgresStore`] ([`PostgresStore::begin`]),
/// for the application's own statements: it dereferences to the connection's
/// [`tokio_postgres::Client`]. [`PostgresStore::complete_in`] completes an idempotency record
/// in it and commits; [`PostgresTransaction::rollback`] undoes it.
///
/// Do not run `COMMIT`, `ROLLBACK` or `BEGIN` through it yourself: the record would then not
/// commit together with your writes. `SAVEPOINT`s are fine.
///
/// # Dropped while open
///
/// A transaction dropped before it was committed or rolled back (a panic, a cancelled future)
/// closes its connection instead of returning it to the pool, so the server rolls it back and
/// no later request ever runs inside it.
pub struct PostgresTransaction {
    /// `None` only once committed or rolled back.
    connection: Option<deadpool_postgres::Object>,
    unnamed_statements: bool,
}

impl PostgresTransaction {
    /// Rolls back every statement run in the transaction and returns the connection to the
    /// pool.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when `ROLLBACK` fails; the connection is then closed, which
    /// rolls the transaction back as well.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.finish("ROLLBACK").await
    }

    fn connection(&self) -> &deadpool_postgres::Object {
        self.connection
            .as_ref()
            .expect("a transaction keeps its connection until it is committed or rolled back")
    }

    /// Ends the transaction with `statement` and pools the connection again. Until `statement`
    /// succeeded the connection stays in `self`, so an error or a cancellation drops it closed.
    async fn finish(mut self, statement: &str) -> Result<(), StoreError> {
        self.connection()
            .batch_execute(statement)
            .await
            .map_err(StoreError::unavailable)?;
        drop(self.connection.take());
        Ok(())
    }
}

impl std::ops::Deref for PostgresTransaction {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        self.connection()
    }
}

impl Drop for PostgresTransaction {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Detached from the pool and dropped, the connection closes and the server rolls
            // the open transaction back; pooled, the next request would run inside it.
            drop(deadpool_postgres::Object::take(connection));
        }
    }
}

impl std::fmt::Debug for PostgresTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTransaction").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TransactionalStore for PostgresStore {
    async fn begin(&self) -> Result<PostgresTransaction, StoreError> {
        PostgresStore::begin(self).await
    }

    async fn complete_in(
        &self,
        transaction: PostgresTransaction,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        PostgresStore::complete_in(self, transaction, key, token, record, ttl).await
    }
}

/// `params` paired with the statement's parameter types, for an unnamed statement.
fn typed<'a>(sql: &Sql, params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(sql.types.iter().cloned()).collect()
}

async fn query(
    client: &deadpool_postgres::Client,
    unnamed: bool,
    sql: &Sql,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    if unnamed {
        return client
            .query_typed(sql.text, &typed(sql, params))
            .await
            .map_err(StoreError::unavailable);
    }
    let statement = client.prepare_cached(sql.text).await.map_err(StoreError::unavailable)?;
    client.query(&statement, params).await.map_err(StoreError::unavailable)
}

async fn execute(
    client: &deadpool_postgres::Client,
    unnamed: bool,
    sql: &Sql,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    if unnamed {
        return client
            .execute_typed(sql.text, &typed(sql, params))
            .await
            .map_err(StoreError::unavailable);
    }
    let statement = client.prepare_cached(sql.text).await.map_err(StoreError::unavailable)?;
    client
        .execute(&statement, params)
        .await
        .map_err(StoreError::unavailable)
}

async fn sweep(pool: &Pool, unnamed: bool) -> Result<u64, StoreError> {
    let client = pool.get().await.map_err(StoreError::unavailable)?;
    let mut deleted = 0;
    loop {
        let batch = execute(&client, unnamed, &SWEEP, &[&SWEEP_BATCH, &SWEEP_GRACE.as_secs_f64()]).await?;
        deleted += batch;
        if batch < SWEEP_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
        // Leave room for requests between two batches.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sweep_periodically(pool: Pool, every: Duration, unnamed: bool) {
    loop {
        tokio::time::sleep(every).await;
        match sweep(&pool, unnamed).await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "idempotency store: expired records swept"),
            Err(error) => tracing::debug!(%error, "idempotency store: expiry sweep skipped"),
        }
    }
}

/// Keeps one connection in `LISTEN` and wakes local waiters, reconnecting after any failure.
/// Runs until the store is dropped.
async fn listen<T>(config: tokio_postgres::Config, tls: T, waiters: Arc<Waiters>)
where
    T: MakeTlsConnect<Socket> + Clone + Send + 'static,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut failures = 0;
    loop {
        match config.connect(tls.clone()).await {
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
        kind @ ("acquired" | "reacquired") => {
            let token: i64 = row.try_get(1).map_err(column)?;
            let token = FencingToken(u64::try_from(token).map_err(|_| unexpected("negative fencing token"))?);
            Ok(match kind {
                "acquired" => RemoteState::Acquired(token),
                _ => RemoteState::Reacquired(token),
            })
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
            let rows = self.query(&CLAIM, &[&id, &fingerprint_bytes, &lease]).await?;
            let Some(row) = rows.first() else { continue };
            return parse_state(row)?.into_claim();
        }
        Err(unexpected("claim did not settle under contention"))
    }

    async fn lookup_expiring(&self, key: &RecordKey) -> Result<(Lookup, Option<Duration>), StoreError> {
        let rows = self.query(&LOOKUP, &[&self.record_id(key)]).await?;
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
                &RENEW,
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
        let params: [&(dyn ToSql + Sync); 5] = [&id, &token_param(token)?, &&encoded[..], &ttl.as_secs_f64(), &CHANNEL];
        Ok(!self.query(&COMPLETE, &params).await?.is_empty())
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        let id = self.record_id(key);
        let params: [&(dyn ToSql + Sync); 3] = [&id, &token_param(token)?, &CHANNEL];
        Ok(!self.query(&RELEASE, &params).await?.is_empty())
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        Ok(self.lookup_expiring(key).await?.0)
    }

    /// Deletes the key's row (completed, running, or kept after a release): the next claim is
    /// [`Claim::Acquired`]. Waiters on another replica are notified and claim again.
    async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let id = self.record_id(key);
        let rows = self.query(&FORGET, &[&id, &CHANNEL]).await?;
        Ok(rows.first().is_some_and(|row| row.get::<_, bool>(0)))
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

    fn transactions(&self) -> Option<&dyn TransactionalStore> {
        Some(self)
    }
}
