//! Copies of a remote store's completed records held in this process, for
//! [`super::CachedStore`]: a moka cache bounded in bytes (headers, body and a fixed per-record
//! cost), least recently used out first, each record kept until its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A cache of copies: an eviction only costs a round trip to the store that has the record.
    pub(crate) fn copies(capacity_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &RecordKey, held: &Held| {
                let weight = key.as_str().len() + held.record.payload_len() + ENTRY_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilDeadline)
            .build();
        Self { cache }
    }

    /// The record, unless it is absent or past its deadline (moka expires entries lazily, so the
    /// deadline is checked here: a record is never served after it).
    pub(crate) fn get(&self, key: &RecordKey) -> Option<Arc<Record>> {
        let held = self.cache.get(key)?;
        (held.expires_at > Instant::now()).then_some(held.record)
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

    /// Records held (exact: runs moka's pending maintenance first).
    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
