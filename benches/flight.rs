//! Single flight through the engine: concurrent duplicates of one key (one leader, the rest
//! woken by its result) against as many distinct keys, on one worker; then unique keys on
//! one worker against two workers sharing one configuration, which shows whether anything
//! shared across workers (the in-flight map, the store) serialises them.
//!
//! `cargo bench --bench flight`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use actix_web::rt::System;
use actix_web::test::TestRequest;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpResponse};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
// The engine driven as generated code drives it, through the hidden path it uses.
use idempotent_actix::__private::{handle, Handled, Route, RouteOptions};
use idempotent_actix::{Idempotency, MemoryStore};

static ROUTE: Route = Route::new(RouteOptions::new("handler"));
static RESPONSE: [u8; 1024] = [b'x'; 1024];
static REQUEST: &[u8] = br#"{"item":"widget","quantity":3}"#;

fn config() -> Idempotency {
    Idempotency::builder()
        .store(MemoryStore::with_capacity(256 << 20))
        .build()
}

/// One request to an annotated route; the handler waits until `arrived` reaches `wait_for`,
/// so every duplicate has joined the flight before the leader finishes.
async fn request(config: &Idempotency, key: &str, arrived: Rc<Cell<usize>>, wait_for: usize) -> HttpResponse {
    let (req, mut payload) = TestRequest::post()
        .uri("/orders")
        .insert_header(("idempotency-key", key))
        .app_data(config.clone())
        .set_payload(Bytes::from_static(REQUEST))
        .to_http_parts();
    let payload = web::Payload::from_request(&req, &mut payload).await.unwrap();
    handle(&ROUTE, req, payload, move |_, _| async move {
        while arrived.get() < wait_for {
            tokio::task::yield_now().await;
        }
        Handled::Ran(HttpResponse::Created().body(Bytes::from_static(&RESPONSE)))
    })
    .await
}

/// `n` concurrent requests, on `keys` distinct keys (1 = all duplicates).
async fn burst(config: &Idempotency, round: u64, n: usize, keys: usize) {
    let arrived = Rc::new(Cell::new(0));
    let requests = (0..n).map(|i| {
        let arrived = Rc::clone(&arrived);
        let key = format!("{round}-{}", i % keys);
        async move {
            arrived.set(arrived.get() + 1);
            request(config, &key, arrived, n).await
        }
    });
    for response in join_all(requests).await {
        assert_eq!(response.status(), 201);
    }
}

fn one_worker(c: &mut Criterion) {
    let mut group = c.benchmark_group("flight");
    let system = System::new();
    let config = config();
    let mut round = 0u64;
    for n in [10usize, 100, 1000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("duplicates_of_one_key", n), |b| {
            b.iter(|| {
                round += 1;
                system.block_on(burst(&config, round, n, 1));
            })
        });
        group.bench_function(BenchmarkId::new("distinct_keys", n), |b| {
            b.iter(|| {
                round += 1;
                system.block_on(burst(&config, round, n, n));
            })
        });
    }
    group.finish();
}

/// Runs `iters` unique-key requests split over `workers` threads, each its own actix system,
/// all sharing one configuration; returns the wall time.
fn unique_keys_on(workers: u64, iters: u64, config: &Idempotency, round: &AtomicU64) -> Duration {
    let start = Arc::new(Barrier::new(workers as usize + 1));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (config, start) = (config.clone(), Arc::clone(&start));
            let first = round.fetch_add(iters, Ordering::Relaxed);
            std::thread::spawn(move || {
                let system = System::new();
                start.wait();
                system.block_on(async {
                    for i in 0..iters / workers {
                        let response = request(&config, &(first + i).to_string(), Rc::default(), 0).await;
                        assert_eq!(response.status(), 201);
                    }
                });
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    threads.into_iter().for_each(|thread| thread.join().unwrap());
    began.elapsed()
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("flight/unique_keys");
    group.throughput(Throughput::Elements(1));
    let config = config();
    let round = AtomicU64::new(1 << 40);
    for workers in [1u64, 2] {
        group.bench_function(BenchmarkId::new("workers", workers), |b| {
            b.iter_custom(|iters| unique_keys_on(workers, iters.max(workers), &config, &round))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = one_worker, contention
}
criterion_main!(benches);
