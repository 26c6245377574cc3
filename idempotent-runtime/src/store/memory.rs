//! The in-process store: claims, completed records and release marks in one sharded table
//! (`table.rs`), bounded in bytes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::table::{Evicted, KeyHash, Shard, Totals};
use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// How many released keys a store remembers at most, and for how long.
const RELEASED_KEPT: usize = 100_000;
const RELEASES_REMEMBERED: Duration = Duration::from_secs(24 * 60 * 60);

/// A full store evicts down to `capacity - capacity / EVICTION_BATCH`: records freed together
/// leave holes large enough for the next ones, where one at a time they leave holes that
/// smaller allocations split (resident memory then grew to twice the capacity, `benches/memory.rs`).
const EVICTION_BATCH: u64 = 64;

/// Default capacity: 64 MiB of records.
const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

/// Bookkeeping the store spends per record beyond its key and its bytes in a page, counted in
/// the weight so that the capacity bounds resident memory, not only payloads: the table's slot
/// and index entry (with the slack of their growth) and the key's own allocation. Pages count
/// whole, from when they are opened until their last record goes. `benches/memory.rs`:
/// 278-517 B resident per record beyond the body, key and headers included.
const ENTRY_OVERHEAD: usize = 448;

/// The in-process store (the default): one process, tests and development.
///
/// Claims, completed records and the marks of released keys live in one table split into
/// shards, each behind its own lock: a first execution takes a shard lock three times (look,
/// claim, complete), a replay once (twice if moving the record to the page being filled took
/// the store over its capacity). Records have a per-record ttl and share a capacity in bytes
/// (the pages holding the records' headers and bodies, plus the key and a fixed 448 bytes per
/// record, what the store really keeps per record, so the capacity bounds resident memory).
/// Each shard packs its responses one after another into pages of up to 64 KiB (a large
/// response gets its own), which keeps the allocator's work per request flat however many
/// records are held; a record used again moves to the page being filled, so pages empty in
/// the order records are evicted. When full, the store evicts the least recently used records
/// (the oldest of each shard in turn, down to 1/64 below the capacity), never a just-stored
/// response while another can go. Evicting a record before its ttl means a retry
/// of that key runs again: every such eviction is counted
/// ([`MemoryStore::evicted_live_records`]) and logged. Size the capacity for your traffic.
///
/// A released key is remembered for a day (at most 100,000 of them), so that its next claim is
/// [`Claim::Reacquired`]. A claim whose lease lapsed (its task was dropped) turns into such a
/// mark when the store next sweeps past it; expired records are swept the same way, a few
/// slots per claim, so nothing abandoned stays in memory.
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
    shards: Box<[Mutex<Shard>]>,
    capacity: u64,
    totals: Totals,
    evicted: AtomicU64,
    next_token: AtomicU64,
    changed: Notify,
    /// Callers in [`Store::wait_for_change`]: with none, a change notifies nobody.
    waiting: AtomicUsize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryStore {
    /// A store holding at most `capacity_bytes` of records: the pages of their headers and
    /// bodies, their keys and a fixed per-record cost of 448 bytes, what the store really
    /// keeps per record, so the capacity bounds resident memory.
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
        // A few shards per core keep two workers off each other's lock.
        let cores = std::thread::available_parallelism().map_or(4, usize::from);
        let shards = (cores * 4).next_power_of_two().clamp(8, 64);
        Self::build(capacity_bytes, shards, RELEASED_KEPT)
    }

    fn build(capacity_bytes: u64, shards: usize, released_kept: usize) -> Self {
        assert!(shards.is_power_of_two());
        let released_kept = released_kept.div_ceil(shards);
        let share = capacity_bytes / shards as u64;
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Mutex::new(Shard::new(share, released_kept, RELEASES_REMEMBERED)))
                    .collect(),
                capacity: capacity_bytes,
                totals: Totals::default(),
                evicted: AtomicU64::new(0),
                next_token: AtomicU64::new(1),
                changed: Notify::new(),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// How many records were evicted for lack of space before their ttl ran out.
    pub fn evicted_live_records(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// Completed records currently held.
    pub fn record_count(&self) -> u64 {
        self.inner.totals.records.load(Ordering::Relaxed)
    }

    /// Bytes currently accounted to completed records.
    pub fn weighted_size(&self) -> u64 {
        self.inner.totals.weight.load(Ordering::Relaxed)
    }

    /// Forgets `key`: its record, its claim or the mark of its release, so that its next claim
    /// is [`Claim::Acquired`], as for a key never used. `false` if the store held nothing for
    /// it. The holder of a forgotten claim can no longer complete, renew or release it.
    pub async fn forget(&self, key: &RecordKey) -> bool {
        let forgot = self.shard(key).forget(key, &self.inner.totals);
        self.changed();
        forgot
    }

    fn shard_index(&self, key: &RecordKey) -> usize {
        use std::hash::BuildHasher;
        // Bits the shard's own map does not use for its buckets (low bits) or tags (top bits).
        (KeyHash.hash_one(key) >> 32) as usize & (self.inner.shards.len() - 1)
    }

    fn shard(&self, key: &RecordKey) -> MutexGuard<'_, Shard> {
        self.lock(self.shard_index(key))
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic under the lock leaves the shard consistent: every method updates it in steps
        // that cannot fail halfway.
        self.inner.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn over_capacity(&self) -> bool {
        self.weighted_size() > self.inner.capacity
    }

    /// Evicts least recently used records, one shard after another, until the store is a
    /// little below its capacity; `kept` (just stored or just used) goes only if nothing else
    /// is left.
    fn make_room(&self, kept: &RecordKey) {
        let shards = self.inner.shards.len();
        let home = self.shard_index(kept);
        let now = Instant::now();
        let batch_end = self.inner.capacity - self.inner.capacity / EVICTION_BATCH;
        for (spare, target) in [(Some(kept), batch_end), (None, self.inner.capacity)] {
            let mut idle = 0;
            let mut index = home;
            while idle < shards && self.weighted_size() > target {
                index = (index + 1) % shards;
                match self.lock(index).evict_one(spare, now, &self.inner.totals) {
                    Some(evicted) => {
                        self.count(evicted);
                        idle = 0;
                    }
                    None => idle += 1,
                }
            }
        }
    }

    fn count(&self, evicted: Evicted) {
        if let Evicted::Live(key) = evicted {
            self.inner.evicted.fetch_add(1, Ordering::Relaxed);
            crate::observe::evicted();
            tracing::warn!(
                ?key,
                "idempotency record evicted before its ttl: a retry of this key will run again"
            );
        }
    }

    /// Wakes the callers of [`Store::wait_for_change`], if any.
    fn changed(&self) {
        if self.inner.waiting.load(Ordering::SeqCst) > 0 {
            self.inner.changed.notify_waiters();
        }
    }

    fn next_token(&self) -> FencingToken {
        FencingToken(self.inner.next_token.fetch_add(1, Ordering::Relaxed))
    }
}

/// Counts a caller of [`Store::wait_for_change`] while it waits, however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a record weighs against the capacity beside its bytes in a page.
fn weight_of(key: &RecordKey) -> u32 {
    let weight = key.as_str().len() + ENTRY_OVERHEAD;
    u32::try_from(weight).unwrap_or(u32::MAX)
}

/// The store's answers, all without I/O: [`Store::claim_now`] and its siblings give them to the
/// engine directly, and the `async` methods give the same.
impl MemoryStore {
    fn claim_at_once(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Claim {
        let now = Instant::now();
        let claim = self.shard(key).claim(
            key,
            fingerprint,
            now,
            now + lease,
            || self.next_token(),
            &self.inner.totals,
        );
        if matches!(claim, Claim::Completed(_)) {
            self.after_use(key);
        }
        claim
    }

    /// A record used again moved to the page being filled, which may have opened a page:
    /// evicts if that took the store over its capacity.
    fn after_use(&self, key: &RecordKey) {
        if self.over_capacity() {
            self.make_room(key);
        }
    }

    fn complete_at_once(&self, key: &RecordKey, token: FencingToken, record: Arc<Record>, ttl: Duration) -> bool {
        let weight = weight_of(key);
        let expires_at = Instant::now() + ttl;
        let held = self
            .shard(key)
            .complete(key, token, record, expires_at, weight, &self.inner.totals);
        if held && self.over_capacity() {
            self.make_room(key);
        }
        self.changed();
        held
    }

    fn release_at_once(&self, key: &RecordKey, token: FencingToken) -> bool {
        let released = self.shard(key).release(key, token, Instant::now(), &self.inner.totals);
        self.changed();
        released
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        Ok(self.claim_at_once(key, fingerprint, lease))
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        Ok(self.shard(key).renew(key, token, Instant::now() + lease))
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.complete_at_once(key, token, record, ttl))
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        Ok(self.release_at_once(key, token))
    }

    fn claim_now(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Option<Result<Claim, StoreError>> {
        Some(Ok(self.claim_at_once(key, fingerprint, lease)))
    }

    fn complete_now(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: &Arc<Record>,
        ttl: Duration,
    ) -> Option<Result<bool, StoreError>> {
        Some(Ok(self.complete_at_once(key, token, Arc::clone(record), ttl)))
    }

    fn release_now(&self, key: &RecordKey, token: FencingToken) -> Option<Result<bool, StoreError>> {
        Some(Ok(self.release_at_once(key, token)))
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        let lookup = self.shard(key).lookup(key, Instant::now(), &self.inner.totals);
        if matches!(lookup, Lookup::Completed(_)) {
            self.after_use(key);
        }
        Ok(lookup)
    }

    async fn wait_for_change(&self, _key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        let _waiting = Waiting::new(&self.inner.waiting);
        let _ = tokio::time::timeout(timeout, self.inner.changed.notified()).await;
        Ok(())
    }

    fn cached(&self, key: &RecordKey) -> Option<Arc<Record>> {
        let record = self.shard(key).record(key, Instant::now(), &self.inner.totals);
        if record.is_some() {
            self.after_use(key);
        }
        record
    }

    async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        Ok(MemoryStore::forget(self, key).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Completion, StoredResponse};
    use actix_web::http::StatusCode;

    const LEASE: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(60);
    const FINGERPRINT: Fingerprint = Fingerprint([1; 32]);

    fn key(n: usize) -> RecordKey {
        RecordKey::new("test:", None, &format!("key-{n}"), None)
    }

    fn record(body_len: usize) -> Arc<Record> {
        Arc::new(Record {
            fingerprint: FINGERPRINT,
            completion: Completion::Response(StoredResponse {
                status: StatusCode::CREATED,
                headers: Vec::new(),
                body: vec![b'x'; body_len].into(),
            }),
        })
    }

    /// What a record with a body of `body_len` bytes weighs, packed alone.
    fn weight_of_alone(key: &RecordKey, body_len: usize) -> u64 {
        let Completion::Response(response) = &record(body_len).completion else {
            unreachable!()
        };
        u64::from(weight_of(key)) + super::super::pages::packed_len(response) as u64
    }

    impl MemoryStore {
        /// Whether `key` has a record, without using it (which would move it).
        fn holds(&self, key: &RecordKey) -> bool {
            self.shard(key).holds_record(key)
        }

        /// Keys held in any state, release marks included.
        fn entries(&self) -> usize {
            (0..self.inner.shards.len()).map(|index| self.lock(index).len()).sum()
        }
    }

    async fn acquire(store: &MemoryStore, key: &RecordKey, lease: Duration) -> FencingToken {
        match store.claim(key, FINGERPRINT, lease).await.unwrap() {
            Claim::Acquired(token) => token,
            other => panic!("a fresh key is acquired, got {other:?}"),
        }
    }

    async fn store_record(store: &MemoryStore, key: &RecordKey, body_len: usize, ttl: Duration) {
        let token = acquire(store, key, LEASE).await;
        assert!(store.complete(key, token, record(body_len), ttl).await.unwrap());
    }

    #[tokio::test]
    async fn a_forgotten_record_is_absent_and_its_key_is_acquired_again() {
        let store = MemoryStore::default();
        store_record(&store, &key(1), 16, TTL).await;
        assert!(store.forget(&key(1)).await);
        assert!(matches!(store.lookup(&key(1)).await.unwrap(), Lookup::Absent));
        assert!(store.cached(&key(1)).is_none());
        assert_eq!((store.record_count(), store.weighted_size()), (0, 0));
        acquire(&store, &key(1), LEASE).await;
        assert!(!store.forget(&key(2)).await, "nothing to forget");
    }

    #[tokio::test]
    async fn a_forgotten_release_makes_the_next_claim_a_first_attempt() {
        let store = MemoryStore::default();
        let token = acquire(&store, &key(1), LEASE).await;
        assert!(store.release(&key(1), token).await.unwrap());
        assert!(store.forget(&key(1)).await, "the release mark is forgotten");
        acquire(&store, &key(1), LEASE).await;
    }

    #[tokio::test]
    async fn a_forgotten_claim_fences_out_its_holder() {
        let store = MemoryStore::default();
        let token = acquire(&store, &key(1), LEASE).await;
        assert!(store.forget(&key(1)).await);
        assert!(!store.renew(&key(1), token, LEASE).await.unwrap());
        assert!(!store.complete(&key(1), token, record(16), TTL).await.unwrap());
        assert!(!store.release(&key(1), token).await.unwrap());
        let again = acquire(&store, &key(1), LEASE).await;
        assert!(again > token);
    }

    #[tokio::test]
    async fn lapsed_claims_are_swept_into_release_marks() {
        let store = MemoryStore::default();
        for n in 0..1000 {
            acquire(&store, &key(n), Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Claims of other keys sweep past every lapsed claim; each becomes a release mark.
        for n in 1000..3000 {
            let token = acquire(&store, &key(n), LEASE).await;
            assert!(store.complete(&key(n), token, record(16), TTL).await.unwrap());
        }
        for n in 0..1000 {
            let again = store.claim(&key(n), FINGERPRINT, LEASE).await.unwrap();
            assert!(
                matches!(again, Claim::Reacquired(_)),
                "a lapsed claim leaves a release mark, got {again:?}"
            );
        }
    }

    #[tokio::test]
    async fn abandoned_claims_and_expired_records_do_not_stay_in_memory() {
        let store = MemoryStore::default();
        for n in 0..1000 {
            acquire(&store, &key(n), Duration::from_millis(1)).await;
            store_record(&store, &key(n + 1000), 16, Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for n in 2000..4000 {
            let token = acquire(&store, &key(n), LEASE).await;
            assert!(store.release(&key(n), token).await.unwrap());
            assert!(store.forget(&key(n)).await);
        }
        assert_eq!(store.record_count(), 0, "expired records are swept");
        assert_eq!(store.weighted_size(), 0);
        assert_eq!(store.entries(), 1000, "only the marks of the lapsed claims are left");
    }

    #[tokio::test]
    async fn release_marks_are_bounded_oldest_out_first() {
        let store = MemoryStore::build(DEFAULT_CAPACITY, 1, 100);
        for n in 0..300 {
            let token = acquire(&store, &key(n), LEASE).await;
            assert!(store.release(&key(n), token).await.unwrap());
        }
        assert_eq!(store.entries(), 100);
        let newest = store.claim(&key(299), FINGERPRINT, LEASE).await.unwrap();
        assert!(matches!(newest, Claim::Reacquired(_)), "{newest:?}");
        acquire(&store, &key(0), LEASE).await;
    }

    #[tokio::test]
    async fn a_full_store_keeps_within_its_capacity_and_counts_every_eviction() {
        let weight = weight_of_alone(&key(0), 1000);
        let store = MemoryStore::build(10 * weight, 8, RELEASED_KEPT);
        for n in 0..100 {
            store_record(&store, &key(n), 1000, TTL).await;
            assert!(store.weighted_size() <= 10 * weight);
            assert!(store.cached(&key(n)).is_some(), "the newest record is kept");
        }
        assert_eq!(store.record_count() + store.evicted_live_records(), 100);
        assert!(store.record_count() >= 9, "held {}", store.record_count());
    }

    #[tokio::test]
    async fn the_least_recently_used_records_are_evicted_first() {
        let weight = weight_of_alone(&key(100), 100);
        let store = MemoryStore::build(100 * weight, 1, RELEASED_KEPT);
        let mut stored = 0;
        while store.evicted_live_records() == 0 {
            store_record(&store, &key(stored), 100, TTL).await;
            stored += 1;
            assert!(store.cached(&key(0)).is_some(), "key 0 is kept the most recently used");
        }
        assert!(stored > 50, "evicted after {stored} records");
        let evicted = store.evicted_live_records() as usize;
        // The oldest page's records.
        assert!(
            (1..stored / 2).contains(&evicted),
            "a small batch is evicted: {evicted}"
        );
        for n in 1..=evicted {
            assert!(!store.holds(&key(n)), "key {n} was among the least recently used");
        }
        for n in (evicted + 1..stored).chain([0]) {
            assert!(store.holds(&key(n)), "key {n} is kept");
        }
    }

    #[tokio::test]
    async fn records_used_again_in_any_order_keep_the_store_within_its_capacity() {
        let weight = weight_of_alone(&key(0), 300);
        let capacity = 200 * weight;
        let store = MemoryStore::build(capacity, 2, RELEASED_KEPT);
        let mut stored = 0;
        while store.evicted_live_records() == 0 {
            store_record(&store, &key(stored), 300, TTL).await;
            stored += 1;
        }
        // The newest first: every page is drained from its far end while new ones fill.
        for n in (0..stored).rev() {
            let _ = store.cached(&key(n));
            assert!(
                store.weighted_size() <= capacity,
                "{} > {capacity}",
                store.weighted_size()
            );
            let _ = store.lookup(&key(n)).await.unwrap();
            let _ = store.claim(&key(n), FINGERPRINT, LEASE).await.unwrap();
            assert!(
                store.weighted_size() <= capacity,
                "{} > {capacity}",
                store.weighted_size()
            );
        }
        assert!(store.record_count() > 100, "held {}", store.record_count());
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_packed_is_weighed_with_its_headers_and_body() {
        let store = MemoryStore::build(DEFAULT_CAPACITY, 1, RELEASED_KEPT);
        let mut secret = actix_web::http::header::HeaderValue::from_static("token-1");
        secret.set_sensitive(true);
        let name = actix_web::http::header::HeaderName::from_static("x-secret");
        let record = Arc::new(Record::new(
            FINGERPRINT,
            Completion::Response(StoredResponse::new(
                StatusCode::OK,
                vec![(name, secret)],
                vec![b'x'; 500].into(),
            )),
        ));
        let token = acquire(&store, &key(1), LEASE).await;
        assert!(store.complete(&key(1), token, record, TTL).await.unwrap());
        assert_eq!(store.weighted_size(), u64::from(weight_of(&key(1))) + 8 + 7 + 500);
    }

    #[tokio::test]
    async fn a_record_larger_than_the_store_is_not_kept() {
        let store = MemoryStore::build(1024, 8, RELEASED_KEPT);
        store_record(&store, &key(1), 4096, TTL).await;
        assert_eq!((store.record_count(), store.weighted_size()), (0, 0));
        assert_eq!(store.evicted_live_records(), 1);
    }

    #[tokio::test]
    async fn an_expired_record_is_never_served_and_its_key_is_acquired_again() {
        let store = MemoryStore::default();
        store_record(&store, &key(1), 16, Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store.cached(&key(1)).is_none());
        assert!(matches!(store.lookup(&key(1)).await.unwrap(), Lookup::Absent));
        acquire(&store, &key(1), LEASE).await;
        assert_eq!(store.record_count(), 0);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_completion() {
        let store = MemoryStore::default();
        let token = acquire(&store, &key(1), LEASE).await;
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                store.wait_for_change(&key(1), Duration::from_secs(10)).await.unwrap();
                started.elapsed()
            })
        };
        while store.inner.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(store.complete(&key(1), token, record(16), TTL).await.unwrap());
        assert!(waiter.await.unwrap() < Duration::from_secs(5));
        assert_eq!(store.inner.waiting.load(Ordering::SeqCst), 0);
    }
}
