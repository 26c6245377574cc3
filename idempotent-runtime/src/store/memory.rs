//! The in-process store: completed records in a moka cache bounded in bytes, claims in a
//! sharded map.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::Notify;

use super::records::RecordCache;
use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// How many released keys a store remembers (about 100 bytes each).
const RELEASED_KEPT: u64 = 100_000;

/// Default capacity: 64 MiB of records.
const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

/// The in-process store (the default): one process, tests and development.
///
/// Completed records live in a [moka](https://docs.rs/moka) cache with a per-entry ttl and a
/// capacity in bytes (headers + body + a fixed per-entry cost). When full, the least recently
/// used record is evicted (LRU, so a just-stored response is never the one refused). Evicting a
/// record before its ttl means a retry of that key runs again: every such eviction is counted
/// ([`MemoryStore::evicted_live_records`]) and logged. Size the capacity for your traffic.
///
/// Clones share the same records.
///
/// # Built once per process
///
/// Build the store (and the [`Idempotency`](crate::Idempotency) that uses it) once, before
/// `HttpServer::new`, and clone it into the app factory: actix-web calls that factory once per
/// worker, and a store private to one worker cannot see the duplicates another worker runs.
/// So that this mistake never runs a handler twice, a memory store built *inside* the factory
/// (on a worker thread of actix-server) is the process-wide store of that capacity, shared by
/// every worker, and a `WARN` event says so once. It is shared by every server of the process
/// whose factory builds one of that capacity (and by stores built on threads of
/// `actix_rt::Arbiter`s, which is how workers run): build the store outside the factory to
/// give two servers stores of their own.
///
/// ```
/// use idempotent_runtime::MemoryStore;
///
/// let store = MemoryStore::with_capacity(256 * 1024 * 1024);
/// assert_eq!(store.evicted_live_records(), 0);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    completed: RecordCache,
    claims: DashMap<RecordKey, Claimed>,
    /// Keys whose claim was released, so that their next claim is [`Claim::Reacquired`];
    /// remembered for a day, at most [`RELEASED_KEPT`] of them.
    released: moka::sync::Cache<RecordKey, ()>,
    /// Whether any key was ever released: until then, first executions skip that cache.
    any_released: std::sync::atomic::AtomicBool,
    next_token: AtomicU64,
    changed: Notify,
}

struct Claimed {
    token: FencingToken,
    fingerprint: Fingerprint,
    lease_until: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store holding at most `capacity_bytes` of records: key, headers, body and a fixed
    /// per-record cost of 768 bytes, what the cache really keeps per record, so the capacity
    /// bounds resident memory (a 64 MiB store grows the process by 64–65 MiB when full).
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        if crate::config::on_server_worker() {
            return Self::shared_by_workers(capacity_bytes);
        }
        Self::private(capacity_bytes)
    }

    /// The process-wide store of this capacity, for stores built inside `HttpServer::new`'s
    /// factory: one per process instead of one per worker.
    fn shared_by_workers(capacity_bytes: u64) -> Self {
        static SHARED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u64, MemoryStore>>> =
            std::sync::OnceLock::new();
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "a MemoryStore was built inside HttpServer::new's factory, which runs once per worker: \
                 every worker shares one process-wide store instead, so a duplicate still runs once; \
                 build the store and the Idempotency once before HttpServer::new and clone them in"
            );
        });
        let shared = SHARED.get_or_init(Default::default);
        let mut stores = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        stores
            .entry(capacity_bytes)
            .or_insert_with(|| Self::private(capacity_bytes))
            .clone()
    }

    /// A default-sized store that is never shared, even when built on a worker thread.
    pub(crate) fn private_default() -> Self {
        Self::private(DEFAULT_CAPACITY)
    }

    fn private(capacity_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                completed: RecordCache::authoritative(capacity_bytes),
                claims: DashMap::new(),
                released: moka::sync::Cache::builder()
                    .max_capacity(RELEASED_KEPT)
                    .time_to_live(Duration::from_secs(24 * 60 * 60))
                    .build(),
                any_released: std::sync::atomic::AtomicBool::new(false),
                next_token: AtomicU64::new(1),
                changed: Notify::new(),
            }),
        }
    }

    /// How many records were evicted for lack of space before their ttl ran out.
    pub fn evicted_live_records(&self) -> u64 {
        self.inner.completed.evicted()
    }

    /// Completed records currently held (exact: runs moka's pending maintenance first).
    pub fn record_count(&self) -> u64 {
        self.inner.completed.entry_count()
    }

    /// Bytes currently accounted to completed records.
    pub fn weighted_size(&self) -> u64 {
        self.inner.completed.weighted_size()
    }

    /// Removes the key's record or claim and the memory of its release: a later claim is
    /// [`Claim::Acquired`], as for a key never used. Whether anything was held.
    pub async fn forget(&self, key: &RecordKey) -> bool {
        let inner = &self.inner;
        let claimed = inner.claims.remove(key).is_some();
        let completed = inner.completed.remove(key);
        let released = inner.any_released.load(Ordering::Relaxed) && inner.released.remove(key).is_some();
        inner.changed.notify_waiters();
        claimed || completed || released
    }

    fn was_released(&self, key: &RecordKey) -> bool {
        self.inner.any_released.load(Ordering::Relaxed) && self.inner.released.contains_key(key)
    }

    fn completed(&self, key: &RecordKey) -> Option<Arc<Record>> {
        self.inner.completed.get(key)
    }

    /// Runs `f` on the claim if `token` still holds it; `false` otherwise.
    fn with_claim(&self, key: &RecordKey, token: FencingToken, f: impl FnOnce(Entry<'_, RecordKey, Claimed>)) -> bool {
        match self.inner.claims.entry(key.clone()) {
            Entry::Occupied(claim) if claim.get().token == token => {
                f(Entry::Occupied(claim));
                true
            }
            _ => false,
        }
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        // The engine has just looked for a completed record (`cached`), so it is looked for once
        // more only where it matters: under the shard lock, which orders this claim against
        // `complete` (it stores the record before it removes the claim).
        let claim = match self.inner.claims.entry(key.clone()) {
            Entry::Occupied(held) if held.get().lease_until > now => Claim::InFlight {
                fingerprint: held.get().fingerprint,
            },
            entry => {
                if let Some(record) = self.inner.completed.get_if_present(key) {
                    return Ok(Claim::Completed(record));
                }
                let token = FencingToken(self.inner.next_token.fetch_add(1, Ordering::Relaxed));
                let claimed = Claimed {
                    token,
                    fingerprint,
                    lease_until: now + lease,
                };
                match entry {
                    Entry::Occupied(mut lapsed) => {
                        lapsed.insert(claimed);
                        Claim::Reacquired(token)
                    }
                    Entry::Vacant(vacant) => {
                        vacant.insert(claimed);
                        match self.was_released(key) {
                            true => Claim::Reacquired(token),
                            false => Claim::Acquired(token),
                        }
                    }
                }
            }
        };
        Ok(claim)
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        Ok(self.with_claim(key, token, |claim| {
            if let Entry::Occupied(mut claim) = claim {
                claim.get_mut().lease_until = Instant::now() + lease;
            }
        }))
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let held = self.with_claim(key, token, |claim| {
            inner.completed.insert(key.clone(), record, Instant::now() + ttl);
            if let Entry::Occupied(claim) = claim {
                claim.remove();
            }
            if inner.any_released.load(Ordering::Relaxed) {
                inner.released.invalidate(key);
            }
        });
        inner.changed.notify_waiters();
        Ok(held)
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        let released = self.with_claim(key, token, |claim| {
            if let Entry::Occupied(claim) = claim {
                claim.remove();
            }
        });
        if released {
            self.inner.any_released.store(true, Ordering::Relaxed);
            self.inner.released.insert(key.clone(), ());
        }
        self.inner.changed.notify_waiters();
        Ok(released)
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        if let Some(record) = self.completed(key) {
            return Ok(Lookup::Completed(record));
        }
        let lookup = match self.inner.claims.get(key) {
            Some(claim) if claim.lease_until > Instant::now() => Lookup::InFlight {
                fingerprint: claim.fingerprint,
            },
            _ => self.completed(key).map_or(Lookup::Absent, Lookup::Completed),
        };
        Ok(lookup)
    }

    async fn wait_for_change(&self, _key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        let _ = tokio::time::timeout(timeout, self.inner.changed.notified()).await;
        Ok(())
    }

    fn cached(&self, key: &RecordKey) -> Option<Arc<Record>> {
        self.completed(key)
    }

    async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        Ok(MemoryStore::forget(self, key).await)
    }
}
