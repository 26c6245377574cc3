//! Completed records held in this process: a moka cache bounded in bytes (headers, body and a
//! fixed per-record cost), least recently used out first, each record kept until its deadline.
//! The memory store keeps its only copy of a record here; [`super::CachedStore`] keeps copies of
//! a remote store's records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;

use super::RecordKey;
use crate::record::Record;

/// Bookkeeping moka and this cache spend per record beyond its headers and body, counted in the
/// weight so a byte capacity bounds resident memory, not only payloads. Measured by
/// `benches/memory.rs`: 808–892 B resident beyond the body for records of 256 B to 16 KiB, of
/// which the key and headers (counted apart) are about 90 B and moka's own entry 342 B.
const ENTRY_OVERHEAD: usize = 768;

pub(crate) struct RecordCache {
    cache: Cache<RecordKey, Held>,
    evicted: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Held {
    record: Arc<Record>,
    expires_at: Instant,
}

struct UntilDeadline;

impl Expiry<RecordKey, Held> for UntilDeadline {
    fn expire_after_create(&self, _: &RecordKey, held: &Held, now: Instant) -> Option<Duration> {
        Some(held.expires_at.saturating_duration_since(now))
    }
}

impl RecordCache {
    /// A cache holding the only copy of its records: an eviction before the deadline means a
    /// retry of that key runs again, so each is counted and logged.
    pub(crate) fn authoritative(capacity_bytes: u64) -> Self {
        Self::build(capacity_bytes, true)
    }

    /// A cache of copies: an eviction only costs a round trip to the store that has the record.
    pub(crate) fn copies(capacity_bytes: u64) -> Self {
        Self::build(capacity_bytes, false)
    }

    fn build(capacity_bytes: u64, log_evictions: bool) -> Self {
        let evicted = Arc::new(AtomicU64::new(0));
        let on_evict = Arc::clone(&evicted);
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &RecordKey, held: &Held| {
                let weight = key.as_str().len() + held.record.payload_len() + ENTRY_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilDeadline)
            .eviction_listener(move |key, _, cause| {
                if cause == RemovalCause::Size {
                    on_evict.fetch_add(1, Ordering::Relaxed);
                    if log_evictions {
                        crate::observe::evicted();
                        tracing::warn!(
                            ?key,
                            "idempotency record evicted before its ttl: a retry of this key will run again"
                        );
                    }
                }
            })
            .build();
        Self { cache, evicted }
    }

    /// The record, unless it is absent or past its deadline (moka expires entries lazily, so the
    /// deadline is checked here: a record is never served after it).
    pub(crate) fn get(&self, key: &RecordKey) -> Option<Arc<Record>> {
        let held = self.cache.get(key)?;
        (held.expires_at > Instant::now()).then_some(held.record)
    }

    /// The record, looked for without counting a miss as an access: cheaper than [`Self::get`]
    /// when the caller has just missed it.
    pub(crate) fn get_if_present(&self, key: &RecordKey) -> Option<Arc<Record>> {
        if !self.cache.contains_key(key) {
            return None;
        }
        self.get(key)
    }

    /// Keeps `record` until `expires_at`.
    pub(crate) fn insert(&self, key: RecordKey, record: Arc<Record>, expires_at: Instant) {
        self.cache.insert(key, Held { record, expires_at });
    }

    /// Drops the record of `key`; whether one was held (and not past its deadline).
    pub(crate) fn remove(&self, key: &RecordKey) -> bool {
        self.cache
            .remove(key)
            .is_some_and(|held| held.expires_at > Instant::now())
    }

    /// Records evicted for lack of space before their deadline.
    pub(crate) fn evicted(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.evicted.load(Ordering::Relaxed)
    }

    /// Records held (exact: runs moka's pending maintenance first).
    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Bytes accounted to the records held.
    pub(crate) fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}
