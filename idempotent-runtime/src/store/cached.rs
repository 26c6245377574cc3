//! An in-process cache of completed records in front of a remote store, so a hot replay costs
//! no round trip.
//!
//! A completed record never changes until it expires, so a local copy is exact as long as it
//! is dropped no later than the remote record. [`ExpiringStore`] gives the cache the remaining
//! ttl of every completed record the remote store returns, in the same round trip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::records::RecordCache;
use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};
#[cfg(feature = "postgres")]
use super::{PostgresTransaction, TransactionalStore};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// A store that reports how long each completed record it returns has left to live, so that a
/// local copy ([`CachedStore`]) never outlives it.
///
/// The answers are those of [`Store::claim`] and [`Store::lookup`], plus `Some(remaining ttl)`
/// when the key is completed (`None` otherwise), measured by the server in the same round trip.
#[async_trait::async_trait]
pub trait ExpiringStore: Store {
    /// [`Store::claim`], with the remaining ttl of a completed record.
    ///
    /// # Errors
    ///
    /// As [`Store::claim`].
    async fn claim_expiring(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<(Claim, Option<Duration>), StoreError>;

    /// [`Store::lookup`], with the remaining ttl of a completed record.
    ///
    /// # Errors
    ///
    /// As [`Store::lookup`].
    async fn lookup_expiring(&self, key: &RecordKey) -> Result<(Lookup, Option<Duration>), StoreError>;
}

/// A remote store with an in-process cache of completed records in front of it.
///
/// Every completed record this process stores or reads is kept locally until the remote
/// record's expiry (measured conservatively: from before the call that reported it), within a
/// capacity in bytes (headers + body + 768 bytes per record; least recently used first
/// out). A replay of a cached key answers from [`Store::cached`] with no I/O; every other call
/// goes to the remote store. Claims, leases and fencing are the remote store's alone, so the
/// cache never weakens them.
///
/// An eviction only costs a round trip on the next replay of that key: the remote record is
/// still there.
///
/// # When the remote store loses records
///
/// A local copy is exact only while the remote record exists. If the remote store loses it (a
/// Redis restarted without persistence, a failover to a replica that had not received it), a
/// retry on another replica runs the handler again and stores a second response, while this
/// replica keeps replaying the first. So no copy is kept longer than the local ttl
/// ([`CachedStore::local_ttl`], 60 s by default): after it, every replica asks the remote store
/// again and all replay the same response. The local ttl bounds how long replicas can disagree
/// after such a loss; it cannot undo the second execution itself.
///
/// Clones share the same cache.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # fn build() -> Result<(), idempotent_runtime::StoreError> {
/// use idempotent_runtime::{CachedStore, Idempotency, RedisStore};
///
/// let store = CachedStore::new(RedisStore::new("redis://127.0.0.1:6379/")?, 64 * 1024 * 1024);
/// let idempotency = Idempotency::builder().store(store).build();
/// # Ok(())
/// # }
/// ```
pub struct CachedStore<S> {
    inner: Arc<S>,
    records: Arc<RecordCache>,
    local_ttl: Duration,
}

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            records: Arc::clone(&self.records),
            local_ttl: self.local_ttl,
        }
    }
}

/// How long a local copy lives at most, unless [`CachedStore::local_ttl`] says otherwise.
const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(60);

impl<S: ExpiringStore> CachedStore<S> {
    /// Puts a cache of at most `capacity_bytes` of completed records in front of `inner`.
    pub fn new(inner: S, capacity_bytes: u64) -> Self {
        Self {
            inner: Arc::new(inner),
            records: Arc::new(RecordCache::copies(capacity_bytes)),
            local_ttl: DEFAULT_LOCAL_TTL,
        }
    }

    /// Keeps a local copy for at most `ttl` (default 60 s), and never past the remote record's
    /// expiry. Shorter: replicas agree again sooner after the remote store lost records; longer:
    /// fewer round trips for keys replayed over a long time. Copies kept before the call keep
    /// their expiry.
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # fn build() -> Result<(), idempotent_runtime::StoreError> {
    /// use std::time::Duration;
    /// use idempotent_runtime::{CachedStore, RedisStore};
    ///
    /// let store = CachedStore::new(RedisStore::new("redis://127.0.0.1:6379/")?, 64 * 1024 * 1024)
    ///     .local_ttl(Duration::from_secs(10));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl = ttl;
        self
    }

    /// The remote store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Completed records held locally (exact: runs the cache's pending maintenance first).
    pub fn cached_records(&self) -> u64 {
        self.records.entry_count()
    }

    /// Keeps `record` until `expires_in` after `asked` (when the remote store was asked, so the
    /// copy expires no later than the original), or for the local ttl if that is shorter.
    fn keep(&self, key: &RecordKey, record: &Arc<Record>, asked: Instant, expires_in: Option<Duration>) {
        let Some(expires_at) = expires_in.and_then(|ttl| asked.checked_add(ttl.min(self.local_ttl))) else {
            return;
        };
        if expires_at > Instant::now() {
            self.records.insert(key.clone(), Arc::clone(record), expires_at);
        }
    }
}

#[async_trait::async_trait]
impl<S: ExpiringStore> Store for CachedStore<S> {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        if let Some(record) = self.cached(key) {
            return Ok(Claim::Completed(record));
        }
        let asked = Instant::now();
        let (claim, expires_in) = self.inner.claim_expiring(key, fingerprint, lease).await?;
        if let Claim::Completed(record) = &claim {
            self.keep(key, record, asked, expires_in);
        }
        Ok(claim)
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        self.inner.renew(key, token, lease).await
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let asked = Instant::now();
        let stored = self.inner.complete(key, token, Arc::clone(&record), ttl).await?;
        if stored {
            self.keep(key, &record, asked, Some(ttl));
        }
        Ok(stored)
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        self.inner.release(key, token).await
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        if let Some(record) = self.cached(key) {
            return Ok(Lookup::Completed(record));
        }
        let asked = Instant::now();
        let (lookup, expires_in) = self.inner.lookup_expiring(key).await?;
        if let Lookup::Completed(record) = &lookup {
            self.keep(key, record, asked, expires_in);
        }
        Ok(lookup)
    }

    async fn wait_for_change(&self, key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_change(key, timeout).await
    }

    fn cached(&self, key: &RecordKey) -> Option<Arc<Record>> {
        self.records.get(key)
    }

    /// Forgets the remote record and this process's copy. Other processes' copies stay until
    /// their local ttl ([`CachedStore::local_ttl`]).
    async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let local = self.records.remove(key);
        Ok(self.inner.forget(key).await? || local)
    }

    #[cfg(feature = "postgres")]
    fn transactions(&self) -> Option<&dyn TransactionalStore> {
        self.inner.transactions()?;
        Some(self)
    }
}

/// The remote store's transactions; a record completed in one is kept locally once committed.
#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl<S: ExpiringStore> TransactionalStore for CachedStore<S> {
    async fn begin(&self) -> Result<PostgresTransaction, StoreError> {
        self.remote_transactions()?.begin().await
    }

    async fn complete_in(
        &self,
        transaction: PostgresTransaction,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let asked = Instant::now();
        let stored = self
            .remote_transactions()?
            .complete_in(transaction, key, token, Arc::clone(&record), ttl)
            .await?;
        if stored {
            self.keep(key, &record, asked, Some(ttl));
        }
        Ok(stored)
    }
}

#[cfg(feature = "postgres")]
impl<S: ExpiringStore> CachedStore<S> {
    fn remote_transactions(&self) -> Result<&dyn TransactionalStore, StoreError> {
        self.inner
            .transactions()
            .ok_or_else(|| StoreError::Unavailable("the store behind this cache cannot open transactions".into()))
    }
}
