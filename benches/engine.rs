//! What the attribute adds to one request, in process (no sockets, no load generator): the
//! same handler called bare, annotated without a key, annotated on a new key each time, and
//! annotated on a key that already completed (a replay), for request bodies of 1 KiB to 1 MiB.
//!
//! `cargo bench --bench engine`. The difference between a variant and `bare` at the same size
//! is the engine's cost on that path; the HTTP benchmark (scripts/bench-http.sh) adds the
//! server's fixed cost per request on top of both.

#[path = "support/orders.rs"]
mod orders;

use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::rt::System;
use actix_web::test::{self, TestRequest};
use actix_web::web::Data;
use actix_web::{App, Error};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use idempotent_actix::{Idempotency, MemoryStore};
use orders::{annotated, bare, Runs};

const SIZES: [usize; 4] = [1 << 10, 16 << 10, 128 << 10, 1 << 20];

/// A JSON order of `len` bytes (padded in `note`), as the wrk script sends it.
fn order_body(len: usize) -> String {
    let (head, tail) = (r#"{"item":"widget","quantity":3,"note":""#, r#""}"#);
    format!(
        "{head}{}{tail}",
        "x".repeat(len.saturating_sub(head.len() + tail.len()))
    )
}

#[derive(Clone, Copy)]
enum Variant {
    Bare,
    NoKey,
    UniqueKeys,
    Replay,
}

impl Variant {
    const ALL: [Variant; 4] = [Variant::Bare, Variant::NoKey, Variant::UniqueKeys, Variant::Replay];

    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::NoKey => "annotated_no_key",
            Variant::UniqueKeys => "annotated_unique_keys",
            Variant::Replay => "annotated_replay",
        }
    }

    fn request(self, body: &str, n: u64) -> TestRequest {
        let request = TestRequest::post()
            .insert_header(("content-type", "application/json"))
            .set_payload(body.to_owned());
        match self {
            Variant::Bare => request.uri("/bare"),
            Variant::NoKey => request.uri("/annotated"),
            Variant::UniqueKeys => request
                .uri("/annotated")
                .insert_header(("idempotency-key", format!("unique-{n}"))),
            Variant::Replay => request
                .uri("/annotated")
                .insert_header(("idempotency-key", format!("replay-{}", body.len()))),
        }
    }
}

fn engine(c: &mut Criterion) {
    let system = System::new();
    let runs = Data::new(Runs::default());
    let idempotency = Idempotency::builder()
        .store(MemoryStore::default())
        .max_response_bytes(4 << 20)
        .build();
    // One app per handler, so both are their app's first route and pay the same routing cost.
    let bare_app = system.block_on(test::init_service(App::new().app_data(runs.clone()).service(bare)));
    let annotated_app = system.block_on(test::init_service(
        App::new().app_data(idempotency).app_data(runs).service(annotated),
    ));
    let call = |variant: Variant, request| {
        let response: Result<ServiceResponse, Error> = match variant {
            Variant::Bare => system.block_on(bare_app.call(request)),
            _ => system.block_on(annotated_app.call(request)),
        };
        assert_eq!(response.unwrap().status(), 201);
    };
    let mut group = c.benchmark_group("engine");
    let mut n = 0u64;
    for len in SIZES {
        let body = order_body(len);
        group.throughput(Throughput::Bytes(len as u64));
        for variant in Variant::ALL {
            group.bench_function(BenchmarkId::new(variant.name(), len), |b| {
                b.iter_batched(
                    || {
                        n += 1;
                        variant.request(&body, n).to_request()
                    },
                    |request| call(variant, request),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = engine
}
criterion_main!(benches);
