//! The server `scripts/bench-http.sh` loads: one handler served bare and annotated.
//!
//! `cargo run --release --example bench_server -- [--bare ADDR] [--annotated ADDR] [--workers N]
//! [--capacity-mib N] [--max-response-bytes N] [--store memory|null]`
//!
//! Two servers in one process, so both handlers are the first route of their app and pay the
//! same routing cost:
//!
//! - `POST /bare` on `--bare` (default 127.0.0.1:8088): the handler without the attribute;
//! - `POST /annotated` on `--annotated` (default 127.0.0.1:8089): the same handler with
//!   `#[idempotent]` (defaults: global scope, `Idempotency-Key`, memory store). Sent without a
//!   key it runs unprotected; with a new key per request it executes and stores every time;
//!   with one key it replays;
//! - `GET /stats` on both: how often each handler body ran, and the store's record count,
//!   evictions and accounted bytes.
//!
//! `--store null` puts a store that keeps nothing behind the annotated handler (every claim is
//! acquired, every completion accepted and dropped): what the engine costs with a store that
//! costs nothing, the ceiling any store can reach on this handler. Replays then execute again.
//!
//! The handlers are in `benches/support/orders.rs`, shared with `benches/engine.rs`.

#[path = "../benches/support/orders.rs"]
mod orders;

use std::sync::atomic::Ordering;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{get, web, App, HttpResponse, HttpServer};
use idempotent_actix::{
    Claim, FencingToken, Fingerprint, Idempotency, Lookup, MemoryStore, Record, RecordKey, Store, StoreError,
};
use orders::{annotated, bare, Runs};

/// Keeps nothing: every claim is acquired and every completion dropped.
struct NullStore;

#[async_trait::async_trait]
impl Store for NullStore {
    async fn claim(&self, _: &RecordKey, _: Fingerprint, _: Duration) -> Result<Claim, StoreError> {
        Ok(Claim::Acquired(FencingToken(1)))
    }

    async fn renew(&self, _: &RecordKey, _: FencingToken, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn complete(&self, _: &RecordKey, _: FencingToken, _: Arc<Record>, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn release(&self, _: &RecordKey, _: FencingToken) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn lookup(&self, _: &RecordKey) -> Result<Lookup, StoreError> {
        Ok(Lookup::Absent)
    }
}

#[get("/stats")]
async fn stats(runs: web::Data<Runs>, store: web::Data<MemoryStore>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "bare": runs.bare.load(Ordering::Relaxed),
        "annotated": runs.annotated.load(Ordering::Relaxed),
        "records": store.record_count(),
        "evicted_live_records": store.evicted_live_records(),
        "weighted_bytes": store.weighted_size(),
    }))
}

struct Args {
    bare: String,
    annotated: String,
    workers: usize,
    capacity_mib: u64,
    max_response_bytes: Option<usize>,
    null_store: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bare: "127.0.0.1:8088".into(),
        annotated: "127.0.0.1:8089".into(),
        workers: 1,
        capacity_mib: 64,
        max_response_bytes: None,
        null_store: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: `{text}` is not a number"))
        };
        match flag.as_str() {
            "--bare" => args.bare = value()?,
            "--annotated" => args.annotated = value()?,
            "--workers" => args.workers = number(value()?)? as usize,
            "--capacity-mib" => args.capacity_mib = number(value()?)?,
            "--max-response-bytes" => args.max_response_bytes = Some(number(value()?)? as usize),
            "--store" => {
                args.null_store = match value()?.as_str() {
                    "memory" => false,
                    "null" => true,
                    other => return Err(format!("--store: `{other}`; expected memory or null")),
                }
            }
            "-h" | "--help" => {
                return Err("usage: bench_server [--bare ADDR] [--annotated ADDR] [--workers N] [--capacity-mib N] \
                            [--max-response-bytes N] [--store memory|null]"
                    .into())
            }
            other => {
                return Err(format!(
                    "unknown flag `{other}`; expected --bare, --annotated, --workers, --capacity-mib, --max-response-bytes or --store"
                ))
            }
        }
    }
    Ok(args)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = parse_args().unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2);
    });
    let store = MemoryStore::with_capacity(args.capacity_mib << 20);
    let mut builder = match args.null_store {
        true => Idempotency::builder().store(NullStore),
        false => Idempotency::builder().store(store.clone()),
    };
    if let Some(bytes) = args.max_response_bytes {
        builder = builder.max_response_bytes(bytes);
    }
    let idempotency = builder.build();
    let runs = web::Data::new(Runs::default());
    let store = web::Data::new(store);
    let (bare_runs, bare_store) = (runs.clone(), store.clone());
    let bare_server = HttpServer::new(move || {
        App::new()
            .app_data(bare_runs.clone())
            .app_data(bare_store.clone())
            .service(bare)
            .service(stats)
    })
    .workers(args.workers)
    .bind(&args.bare)?;
    let annotated_server = HttpServer::new(move || {
        App::new()
            .app_data(idempotency.clone())
            .app_data(runs.clone())
            .app_data(store.clone())
            .service(annotated)
            .service(stats)
    })
    .workers(args.workers)
    .bind(&args.annotated)?;
    for addr in bare_server.addrs().into_iter().chain(annotated_server.addrs()) {
        println!("listening on http://{addr}");
    }
    let (bare_result, annotated_result) = futures_util::future::join(bare_server.run(), annotated_server.run()).await;
    bare_result.and(annotated_result)
}
