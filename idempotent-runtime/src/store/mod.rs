//! Where records live: the [`Store`] trait, its contract, and the backends.
//!
//! # Contract
//!
//! A store keeps, per [`RecordKey`], either nothing, an in-flight claim (fingerprint, fencing
//! token, lease deadline) or a completed [`Record`] with an expiry. Every backend must provide:
//!
//! - **Atomic claim**: of any number of concurrent [`Store::claim`] calls on an absent key, in
//!   any number of processes, exactly one gets [`Claim::Acquired`]. No read-then-write races.
//! - **Leases**: a claim whose lease lapsed (its holder died) may be taken over by a new claim,
//!   which gets a new, larger fencing token. [`Store::renew`] extends a live claim.
//! - **Attempts**: a claim of a key whose earlier claim was released or lapsed (and that has not
//!   completed since) is [`Claim::Reacquired`]; the claim of a key never claimed is
//!   [`Claim::Acquired`]. A store remembers released keys for at least a day.
//! - **Fencing**: [`Store::complete`], [`Store::renew`] and [`Store::release`] act only if the
//!   token still holds the claim; a stale token changes nothing and gets `Ok(false)`.
//! - **Expiry**: a completed record is never returned after its ttl; the key is then absent.
//! - **Waiting**: [`Store::wait_for_change`] returns when the key may have changed, or after its
//!   timeout at the latest; callers re-read with [`Store::lookup`].
//!
//! A store may also complete records inside a database transaction of the application's
//! (`TransactionalStore`, feature `postgres`), so the application's writes and the record
//! commit together.
//!
//! The conformance suite (module `conformance`, cargo feature `conformance`) checks all of this;
//! every backend of this crate runs it against a real server, and a store of your own can too.

mod cached;
#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
mod pages;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_tls;
mod records;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod remote;
mod table;

pub(crate) use table::KeyHash;

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresStore, PostgresStoreBuilder, PostgresTransaction, MIGRATION};
#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, RedisStoreBuilder};
pub use cached::{CachedStore, ExpiringStore};
pub use memory::MemoryStore;

use crate::fingerprint::Fingerprint;
use crate::record::{DecodeError, Record};

/// The identity of a record: namespace, scope and key (and, for `on_mismatch = "execute"`, the
/// fingerprint), encoded injectively into one string.
///
/// Hashed once, when built: the in-process maps a request goes through (record cache, claims,
/// flights) hash it several times, and each then hashes one `u64`. The hash is keyed per
/// process, so a client cannot aim keys at one bucket.
#[derive(Clone)]
pub struct RecordKey {
    id: Arc<str>,
    hash: u64,
}

impl Claim {
    /// The token when the caller now holds the key ([`Claim::Acquired`] or
    /// [`Claim::Reacquired`]).
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            Self::Acquired(token) | Self::Reacquired(token) => Some(*token),
            Self::InFlight { .. } | Self::Completed(_) => None,
        }
    }
}

impl PartialEq for RecordKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for RecordKey {}

impl std::hash::Hash for RecordKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl RecordKey {
    /// Builds the identity. `tenant` is `None` for global scope; `variant` is the fingerprint
    /// when a mismatched request counts as a distinct request.
    pub fn new(namespace: &str, tenant: Option<&str>, key: &str, variant: Option<&Fingerprint>) -> Self {
        thread_local! {
            /// Where an identity is written before it moves into its one allocation.
            static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        SCRATCH.with_borrow_mut(|id| {
            id.clear();
            id.push_str(namespace);
            let mut digits = itoa::Buffer::new();
            // Length prefixes keep (tenant "a:b", key "c") apart from (tenant "a", key "b:c").
            match tenant {
                Some(tenant) => {
                    id.push('t');
                    id.push_str(digits.format(tenant.len()));
                    id.push(':');
                    id.push_str(tenant);
                }
                None => id.push('g'),
            }
            id.push(':');
            id.push_str(digits.format(key.len()));
            id.push(':');
            id.push_str(key);
            if let Some(fingerprint) = variant {
                id.push('#');
                id.push_str(&fingerprint.to_hex());
            }
            Self::from_id(Arc::from(id.as_str()))
        })
    }

    fn from_id(id: Arc<str>) -> Self {
        static KEYED: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
        let hash = std::hash::BuildHasher::hash_one(KEYED.get_or_init(Default::default), &*id);
        Self { id, hash }
    }

    /// The encoded identity; stores use it as (part of) their key.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for RecordKey {
    /// Keys are bearer-like secrets in global scope: logs see only a short hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.id.hash(&mut hasher);
        write!(f, "RecordKey({:016x})", hasher.finish())
    }
}

/// A claim's fencing token: strictly larger for each new claim of the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

/// The answer to [`Store::claim`].
#[derive(Debug, Clone)]
pub enum Claim {
    /// The caller holds the key and must run the handler, then complete or release.
    Acquired(FencingToken),
    /// The caller holds the key, and an earlier execution of it started and did not complete:
    /// it was released (an outcome outside the cache policy, a panic) or its lease lapsed (its
    /// replica died). The handler learns it through `IdempotencyKey::is_first_attempt`.
    Reacquired(FencingToken),
    /// Another execution holds the key; its fingerprint tells a duplicate from a mismatch.
    InFlight {
        /// Fingerprint of the running request.
        fingerprint: Fingerprint,
    },
    /// The key completed earlier.
    Completed(Arc<Record>),
}

/// The answer to [`Store::lookup`].
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Nothing is known about the key (never used, released, expired, or its lease lapsed).
    Absent,
    /// An execution holds the key.
    InFlight {
        /// Fingerprint of the running request.
        fingerprint: Fingerprint,
    },
    /// The key completed.
    Completed(Arc<Record>),
}

/// A store failure; the engine fails closed (503) or open, as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or refused the operation.
    #[error("idempotency store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The call did not finish within the configured store timeout.
    #[error("idempotency store call timed out after {0:?}")]
    Timeout(Duration),
    /// The store does not implement this operation.
    #[error("this idempotency store does not support `{0}`")]
    Unsupported(&'static str),
    /// A stored record could not be decoded.
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(error))
    }
}

/// A place to keep idempotency records. See the [module documentation](self) for the contract
/// every implementation must keep.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Atomically claims `key` for one execution, or reports who holds it or what it left.
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError>;

    /// Extends the lease of a live claim; `Ok(false)` when `token` no longer holds it.
    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError>;

    /// Replaces the claim with the completed record, kept for `ttl`; `Ok(false)` (and nothing
    /// written) when `token` no longer holds the claim.
    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Drops the claim so a retry runs again; `Ok(false)` when `token` no longer holds it.
    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError>;

    /// Reads the key's state.
    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError>;

    /// Returns when `key` may have changed, or after `timeout`. The default sleeps for the
    /// timeout; backends with notifications return sooner.
    async fn wait_for_change(&self, key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        let _ = key;
        tokio::time::sleep(timeout).await;
        Ok(())
    }

    /// Deletes whatever the store holds for `key` (completed record, claim, the memory of a
    /// released claim): the key behaves as if never used, and its next claim is
    /// [`Claim::Acquired`]. `Ok(false)` when nothing was held. For operators (see
    /// [`crate::Idempotency::forget`]); a running execution of the key can no longer complete
    /// it (its token is fenced out).
    ///
    /// The default refuses with [`StoreError::Unsupported`]: a third-party store opts in.
    async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let _ = key;
        Err(StoreError::Unsupported("forget"))
    }

    /// [`claim`](Self::claim) answered at once, for a store that needs no I/O to answer: the
    /// engine then neither awaits nor times the call. `None` (the default) sends the claim
    /// through `claim`. A store that answers here answers exactly as `claim` would.
    fn claim_now(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Option<Result<Claim, StoreError>> {
        let _ = (key, fingerprint, lease);
        None
    }

    /// [`complete`](Self::complete) answered at once, as [`claim_now`](Self::claim_now) is;
    /// `None` (the default) sends the completion through `complete`.
    fn complete_now(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: &Arc<Record>,
        ttl: Duration,
    ) -> Option<Result<bool, StoreError>> {
        let _ = (key, token, record, ttl);
        None
    }

    /// [`release`](Self::release) answered at once, as [`claim_now`](Self::claim_now) is;
    /// `None` (the default) sends the release through `release`.
    fn release_now(&self, key: &RecordKey, token: FencingToken) -> Option<Result<bool, StoreError>> {
        let _ = (key, token);
        None
    }

    /// A completed record held in this process, without I/O: the hot replay path. Backends
    /// without a local copy return `None` (the default).
    fn cached(&self, key: &RecordKey) -> Option<Arc<Record>> {
        let _ = key;
        None
    }

    /// The store's transactional completion, if it has one: [`PostgresStore`] does, and so
    /// does a [`CachedStore`] in front of it; `None` (the default) for every other store. A
    /// wrapper around another store forwards it.
    #[cfg(feature = "postgres")]
    fn transactions(&self) -> Option<&dyn TransactionalStore> {
        None
    }
}

/// A store whose completions can join a database transaction of the application's: the
/// application's writes and the completed record commit together, or neither does (feature
/// `postgres`). [`Store::transactions`] gives it.
///
/// With it, a crash after the commit never runs the request again (the retry replays the
/// record), and a crash before leaves neither the writes nor the record (the retry runs once,
/// from scratch). It covers the statements run in the transaction only, on the database that
/// holds the records.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use idempotent_runtime::store::{RecordKey, Store, TransactionalStore};
/// use idempotent_runtime::{Claim, Completion, Fingerprint, PostgresStore, Record, StoreError};
///
/// # async fn run(store: PostgresStore, fingerprint: Fingerprint, response: idempotent_runtime::StoredResponse) -> Result<(), StoreError> {
/// let key = RecordKey::new("jobs:", None, "import-2024-05", None);
/// if let Claim::Acquired(token) = store.claim(&key, fingerprint, Duration::from_secs(30)).await? {
///     let transaction = store.begin().await?;
///     transaction.execute("INSERT INTO imports (name) VALUES ($1)", &[&"2024-05"]).await.map_err(StoreError::unavailable)?;
///     let record = Arc::new(Record::new(fingerprint, Completion::Response(response)));
///     let stored = store.complete_in(transaction, &key, token, record, Duration::from_secs(86_400)).await?;
///     // `false`: the lease lapsed and another execution took the key over; the insert was rolled back.
///     assert!(stored);
/// }
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "postgres")]
#[async_trait::async_trait]
pub trait TransactionalStore: Send + Sync {
    /// Opens a transaction on one of the store's connections, for the application's statements.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when no connection can be had or `BEGIN` fails.
    async fn begin(&self) -> Result<PostgresTransaction, StoreError>;

    /// Completes the claim `token` holds with `record` (kept for `ttl`) inside `transaction`,
    /// and commits. `Ok(false)` when `token` no longer holds the claim: the transaction was
    /// rolled back, the application's writes with it, and nothing was written.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when a statement fails; after a failed `COMMIT` whether the
    /// transaction committed is unknown (see [`PostgresStore::complete_in`]).
    async fn complete_in(
        &self,
        transaction: PostgresTransaction,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
}
