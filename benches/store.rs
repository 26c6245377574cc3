//! Store operations on the paths a request takes: claim then complete (first execution),
//! claim then release (an outcome that is not stored), and the three ways a replay finds its
//! record (`cached`, `claim`, `lookup`). Then the same first-execution and replay costs in
//! stores full of 10^3 to 10^6 live keys.
//!
//! `cargo bench --bench store`; with `--features redis,postgres` also the Redis and PostgreSQL
//! stores, bare and behind the in-process cache (`CachedStore`), on the servers at
//! `IDEMPOTENT_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/`) and
//! `IDEMPOTENT_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); a
//! server that does not answer is skipped with a notice. Their records live for a minute.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use idempotent_actix::{Claim, Completion, Fingerprint, MemoryStore, Record, RecordKey, Store, StoredResponse};
use tokio::runtime::Runtime;

const LEASE: Duration = Duration::from_secs(30);
/// Long enough that no record expires during a run; remote stores keep theirs a minute only.
const TTL: Duration = Duration::from_secs(24 * 60 * 60);
#[cfg(any(feature = "redis", feature = "postgres"))]
const REMOTE_TTL: Duration = Duration::from_secs(60);
const FINGERPRINT: Fingerprint = Fingerprint([7; 32]);

fn record(body_len: usize) -> Arc<Record> {
    Arc::new(Record::new(
        FINGERPRINT,
        Completion::Response(StoredResponse::new(
            StatusCode::CREATED,
            vec![
                (
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static("location"),
                    HeaderValue::from_static("/orders/8f14e45f"),
                ),
            ],
            Bytes::from(vec![b'x'; body_len]),
        )),
    ))
}

/// A key shaped like a real one: a UUID-length key in global scope, under a namespace of this
/// run so runs against one shared server never meet.
fn key(n: u64) -> RecordKey {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        format!(
            "bench:{}:",
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
        )
    });
    RecordKey::new(run, None, &format!("{n:08x}-0000-4000-8000-{n:012x}"), None)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn claim_complete(rt: &Runtime, store: &dyn Store, key: &RecordKey, record: &Arc<Record>, ttl: Duration) {
    rt.block_on(async {
        let Claim::Acquired(token) = store.claim(key, FINGERPRINT, LEASE).await.unwrap() else {
            panic!("a fresh key is acquired");
        };
        assert!(store.complete(key, token, Arc::clone(record), ttl).await.unwrap());
    });
}

/// The operations of one store, with 1 KiB bodies.
fn operations(c: &mut Criterion, name: &str, store: Arc<dyn Store>, rt: &Runtime, ttl: Duration) {
    let mut group = c.benchmark_group(format!("store/{name}"));
    let body = record(1024);
    // Keys no other group uses, so stores sharing one server never see each other's records.
    static NEXT: AtomicU64 = AtomicU64::new(1 << 32);
    let fresh = || key(NEXT.fetch_add(1, Ordering::Relaxed));

    group.bench_function("claim_complete", |b| {
        b.iter_batched(
            fresh,
            |key| claim_complete(rt, &*store, &key, &body, ttl),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("claim_release", |b| {
        b.iter_batched(
            fresh,
            |key| {
                rt.block_on(async {
                    let Claim::Acquired(token) = store.claim(&key, FINGERPRINT, LEASE).await.unwrap() else {
                        panic!("a fresh key is acquired");
                    };
                    store.release(&key, token).await.unwrap()
                })
            },
            BatchSize::SmallInput,
        )
    });

    let done = fresh();
    claim_complete(rt, &*store, &done, &body, ttl);
    group.bench_function("replay_cached", |b| b.iter(|| store.cached(black_box(&done))));
    group.bench_function("replay_claim", |b| {
        b.iter(|| rt.block_on(store.claim(black_box(&done), FINGERPRINT, LEASE)).unwrap())
    });
    group.bench_function("replay_lookup", |b| {
        b.iter(|| rt.block_on(store.lookup(black_box(&done))).unwrap())
    });
    group.finish();
}

/// A memory store sized to hold exactly `live` records of `body` (so each new record evicts
/// the oldest, the steady state of a busy server), filled.
fn full_memory_store(rt: &Runtime, live: u64, body: &Arc<Record>) -> (MemoryStore, Vec<RecordKey>) {
    let probe = MemoryStore::with_capacity(u64::MAX / 2);
    claim_complete(rt, &probe, &key(0), body, TTL);
    let store = MemoryStore::with_capacity(probe.weighted_size() * live);
    let keys: Vec<RecordKey> = (0..live).map(key).collect();
    for key in &keys {
        claim_complete(rt, &store, key, body, TTL);
    }
    (store, keys)
}

/// How first execution and replay grow with the number of live keys.
fn live_keys(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("store/memory/live_keys");
    group.throughput(Throughput::Elements(1));
    let body = record(64);
    for live in [1_000u64, 10_000, 100_000, 1_000_000] {
        let (store, keys) = full_memory_store(rt, live, &body);
        // A cheap scramble so replays hit keys all over the table, not in insertion order.
        let mut probe = 0usize;
        group.bench_function(BenchmarkId::new("replay_cached", live), |b| {
            b.iter(|| {
                probe = (probe + 7_919) % keys.len();
                store.cached(&keys[probe]).expect("a live key is held")
            })
        });
        let mut next = live;
        group.bench_function(BenchmarkId::new("claim_complete_evicting", live), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    key(next)
                },
                |key| claim_complete(rt, &store, &key, &body, TTL),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Store cost by body size: complete copies nothing, so it should stay flat.
fn body_sizes(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("store/memory/body_size");
    let store = MemoryStore::with_capacity(1 << 30);
    let mut next = 0u64;
    for len in [1usize << 10, 16 << 10, 64 << 10, 1 << 20] {
        let body = record(len);
        group.bench_function(BenchmarkId::new("claim_complete", len), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    key(next)
                },
                |key| claim_complete(rt, &store, &key, &body, TTL),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A remote store, bare and behind the in-process cache, if its server answers.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn remote<S: idempotent_actix::ExpiringStore + Clone>(c: &mut Criterion, name: &str, rt: &Runtime, store: S) {
    let probe = rt.block_on(store.lookup(&key(0)));
    if let Err(error) = probe {
        eprintln!("skipped: the {name} store does not answer: {error}");
        return;
    }
    operations(c, name, Arc::new(store.clone()), rt, REMOTE_TTL);
    let cached = idempotent_actix::CachedStore::new(store, 64 << 20);
    operations(c, &format!("{name}_cached"), Arc::new(cached), rt, REMOTE_TTL);
}

#[cfg(any(feature = "redis", feature = "postgres"))]
fn url(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    operations(c, "memory", Arc::new(MemoryStore::default()), &rt, TTL);
    body_sizes(c, &rt);
    live_keys(c, &rt);
    #[cfg(feature = "redis")]
    {
        let url = url("IDEMPOTENT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/");
        let store = rt
            .block_on(async { idempotent_actix::store::RedisStore::new(&url) })
            .unwrap();
        remote(c, "redis", &rt, store);
    }
    #[cfg(feature = "postgres")]
    {
        let url = url(
            "IDEMPOTENT_BENCH_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let store = rt
            .block_on(async { idempotent_actix::store::PostgresStore::new(&url) })
            .unwrap();
        match rt.block_on(store.migrate()) {
            Ok(()) => remote(c, "postgres", &rt, store),
            Err(error) => eprintln!("skipped: the postgres store does not answer: {error}"),
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = stores
}
criterion_main!(benches);
