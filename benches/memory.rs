//! Resident memory of the memory store, measured (VmRSS from /proc/self/status), each
//! measurement in a fresh child process so one does not inherit another's heap.
//!
//! `cargo bench --bench memory`
//!
//! - **per record**: an unbounded store filled with records of one body size; resident bytes
//!   per record beyond its body (key, headers, the record and the cache's own bookkeeping).
//!   Target: at most 256 bytes.
//! - **64 MiB store**: a store of 64 MiB capacity fed four times its capacity in records;
//!   the share of the capacity held as response bodies at the end (target: at least 90%) and
//!   the largest growth of resident memory seen (target: never past 64 MiB).
//! - **through the engine**: records made by an annotated handler answering 1 KiB of JSON,
//!   so the body is whatever buffer the handler's serialiser left.
//! - **floors**: what the store keeps per key holding only a claim, and, for comparison, what
//!   moka keeps per entry as `CachedStore` configures it.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::rt::System;
use actix_web::web::Bytes;
use actix_web::{test, App, HttpResponse};
use futures_util::FutureExt;
use idempotent_actix::{
    idempotent, Claim, Completion, Fingerprint, Idempotency, MemoryStore, Record, RecordKey, Store, StoredResponse,
};

const CAPACITY: u64 = 64 << 20;
const FINGERPRINT: Fingerprint = Fingerprint([7; 32]);
const PER_RECORD_TARGET: f64 = 256.0;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// A UUID-shaped key in global scope, as a client would send.
fn key(n: u64) -> RecordKey {
    RecordKey::new(
        "",
        None,
        &format!("{:08x}-{:04x}-4000-8000-{n:012x}", n as u32, n >> 32),
        None,
    )
}

/// A 201 with a JSON body of `len` bytes in an allocation of exactly that size.
fn record(len: usize, n: u64) -> Arc<Record> {
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
                    HeaderValue::from_str(&format!("/orders/{n}")).unwrap(),
                ),
            ],
            Bytes::from(vec![b'x'; len]),
        )),
    ))
}

/// Claims and completes `key` (the memory store finishes at once, so no runtime is needed).
fn store_one(store: &MemoryStore, key: &RecordKey, record: Arc<Record>) {
    let lease = Duration::from_secs(30);
    let ttl = Duration::from_secs(24 * 60 * 60);
    let Some(Ok(Claim::Acquired(token))) = store.claim(key, FINGERPRINT, lease).now_or_never() else {
        panic!("a fresh key is acquired at once");
    };
    assert!(store.complete(key, token, record, ttl).now_or_never().unwrap().unwrap());
}

fn per_record(body_len: usize) -> String {
    let count = ((48u64 << 20) / body_len as u64).clamp(1_000, 200_000);
    let store = MemoryStore::with_capacity(u64::MAX / 4);
    store_one(&store, &key(u64::MAX), record(body_len, 0));
    let before = rss_bytes();
    for n in 0..count {
        store_one(&store, &key(n), record(body_len, n));
    }
    assert_eq!(store.record_count(), count + 1);
    let grown = rss_bytes().saturating_sub(before) as f64;
    let beyond_body = grown / count as f64 - body_len as f64;
    let accounted = store.weighted_size() as f64 / (count + 1) as f64 - body_len as f64;
    format!(
        "| store | {body_len} B | {count} | {beyond_body:.0} B | {accounted:.0} B | {} |",
        verdict(beyond_body <= PER_RECORD_TARGET)
    )
}

fn bounded(body_len: usize) -> String {
    let store = MemoryStore::with_capacity(CAPACITY);
    store_one(&store, &key(u64::MAX), record(body_len, 0));
    let before = rss_bytes();
    let total = 4 * CAPACITY / body_len as u64;
    let mut peak = 0;
    for n in 0..total {
        store_one(&store, &key(n), record(body_len, n));
        if n % 1024 == 0 {
            peak = peak.max(rss_bytes().saturating_sub(before));
        }
    }
    let records = store.record_count();
    peak = peak.max(rss_bytes().saturating_sub(before));
    let bodies = records as f64 * body_len as f64 / CAPACITY as f64;
    format!(
        "| {body_len} B | {records} of {total} | {} | {:.1}% ({}) | {:.1} MiB ({}) |",
        store.evicted_live_records(),
        bodies * 100.0,
        verdict(bodies >= 0.90),
        peak as f64 / f64::from(1 << 20),
        verdict(peak <= CAPACITY)
    )
}

#[idempotent]
async fn create_order(body: actix_web::web::Bytes) -> HttpResponse {
    let note = "x".repeat(1024 - 40);
    HttpResponse::Created().json(serde_json::json!({ "id": body.len(), "item": "widget", "note": note }))
}

fn through_engine(count: u64) -> String {
    System::new().block_on(async move {
        let store = MemoryStore::with_capacity(u64::MAX / 4);
        let config = Idempotency::builder().store(store.clone()).build();
        let app = test::init_service(
            App::new()
                .app_data(config)
                .route("/orders", actix_web::web::post().to(create_order)),
        )
        .await;
        let call = |n: u64| {
            let request = test::TestRequest::post()
                .uri("/orders")
                .insert_header(("idempotency-key", format!("{:08x}-0000-4000-8000-{n:012x}", n as u32)))
                .set_payload(r#"{"item":"widget"}"#)
                .to_request();
            test::call_service(&app, request)
        };
        let first = call(u64::MAX).await;
        let body_len = test::read_body(first).await.len();
        let before = rss_bytes();
        for n in 0..count {
            assert_eq!(call(n).await.status(), 201);
        }
        assert_eq!(store.record_count(), count + 1);
        let beyond_body = rss_bytes().saturating_sub(before) as f64 / count as f64 - body_len as f64;
        format!(
            "| engine, serde_json body | {body_len} B | {count} | {beyond_body:.0} B | | {} |",
            verdict(beyond_body <= PER_RECORD_TARGET)
        )
    })
}

/// What moka alone keeps per entry, configured as `CachedStore` configures its local copies
/// (byte weigher, LRU, per-entry expiry), holding a `u64` key and an empty value: for comparison
/// with the memory store's own table.
fn moka_floor(count: u64) -> String {
    use moka::policy::EvictionPolicy;

    struct Forever;
    impl moka::Expiry<u64, ()> for Forever {
        fn expire_after_create(&self, _: &u64, _: &(), _: std::time::Instant) -> Option<Duration> {
            Some(Duration::from_secs(24 * 60 * 60))
        }
    }
    let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::builder()
        .max_capacity(u64::MAX / 4)
        .weigher(|_: &u64, _: &()| 1)
        .eviction_policy(EvictionPolicy::lru())
        .expire_after(Forever)
        .build();
    cache.insert(u64::MAX, ());
    cache.run_pending_tasks();
    let before = rss_bytes();
    for n in 0..count {
        cache.insert(n, ());
    }
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), count + 1);
    let per_entry = rss_bytes().saturating_sub(before) as f64 / count as f64;
    format!("| moka alone (`u64` key, empty value) | — | {count} | {per_entry:.0} B | | floor |")
}

/// What the memory store keeps per key before any record: `count` claims that are never
/// completed (the table's slot and index entry, and the key).
fn claims_floor(count: u64) -> String {
    let store = MemoryStore::with_capacity(u64::MAX / 4);
    let lease = Duration::from_secs(3600);
    let claim = |n| {
        store
            .claim(&key(n), FINGERPRINT, lease)
            .now_or_never()
            .unwrap()
            .unwrap()
    };
    claim(u64::MAX);
    let before = rss_bytes();
    for n in 0..count {
        assert!(matches!(claim(n), Claim::Acquired(_)));
    }
    let per_key = rss_bytes().saturating_sub(before) as f64 / count as f64;
    format!("| store, claims only (UUID key, no record) | — | {count} | {per_key:.0} B | | floor |")
}

fn verdict(held: bool) -> &'static str {
    if held {
        "holds"
    } else {
        "FAILS"
    }
}

fn measure(what: &str, arg: u64) -> String {
    match what {
        "per-record" => per_record(arg as usize),
        "bounded" => bounded(arg as usize),
        "engine" => through_engine(arg),
        "moka-floor" => moka_floor(arg),
        "claims-floor" => claims_floor(arg),
        other => panic!("unknown measurement {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--measure") {
        println!("{}", measure(&args[at + 1], args[at + 2].parse().unwrap()));
        return;
    }
    let me = std::env::current_exe().unwrap();
    let run = |what: &str, arg: u64| {
        let output = Command::new(&me)
            .args(["--measure", what, &arg.to_string()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{what} {arg}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
    };
    println!("Per record (target: at most {PER_RECORD_TARGET} B resident beyond the body)\n");
    println!("| made by | body | records | resident beyond the body | accounted beyond the body | target |");
    println!("|---|---|---|---|---|---|");
    for body_len in [256, 1024, 4096, 16384, 65536] {
        run("per-record", body_len);
    }
    run("engine", 50_000);
    run("claims-floor", 200_000);
    run("moka-floor", 200_000);
    println!("\nA store of 64 MiB fed four times its capacity (targets: bodies at least 90% of it, RSS growth at most 64 MiB)\n");
    println!("| body | records held of stored | evicted live | bodies / capacity | peak RSS growth |");
    println!("|---|---|---|---|---|");
    for body_len in [1024, 4096, 16384] {
        run("bounded", body_len);
    }
}
