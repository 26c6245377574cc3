//! Key validation: the header read and checks every keyed request pays.
//!
//! `cargo bench --bench key`.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use criterion::{criterion_group, criterion_main, Criterion};
use idempotent_actix::key;
use std::hint::black_box;

const UUID: &str = "5c1b0f0e-2b7c-4f4e-9d7e-1f6f3c2a9b10";

fn headers_with(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        HeaderName::from_static("idempotency-key"),
        HeaderValue::from_str(value).unwrap(),
    );
    headers
}

fn key_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("key");
    let name = HeaderName::from_static("idempotency-key");

    let bare = headers_with(UUID);
    group.bench_function("header_uuid", |b| {
        b.iter(|| key::from_headers(black_box(&bare), &name).map(|k| k.is_some()))
    });

    let quoted = headers_with(&format!("\"{UUID}\""));
    group.bench_function("header_quoted_uuid", |b| {
        b.iter(|| key::from_headers(black_box(&quoted), &name).map(|k| k.is_some()))
    });

    let absent = HeaderMap::new();
    group.bench_function("header_absent", |b| {
        b.iter(|| key::from_headers(black_box(&absent), &name).map(|k| k.is_some()))
    });

    let longest = "k".repeat(key::MAX_KEY_LEN);
    group.bench_function("parse_255_chars", |b| {
        b.iter(|| key::parse(black_box(longest.as_bytes())).map(|k| k.is_some()))
    });

    let invalid = format!("{UUID}\u{e9}");
    group.bench_function("parse_non_ascii", |b| {
        b.iter(|| key::parse(black_box(invalid.as_bytes())).is_err())
    });
    group.finish();
}

criterion_group!(benches, key_validation);
criterion_main!(benches);
