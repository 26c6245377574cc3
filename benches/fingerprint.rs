//! Fingerprinting cost by body size, raw bytes and canonical JSON.
//!
//! `cargo bench --bench fingerprint`. Throughput is reported in bytes of body per second; the
//! target is at least 1 GB/s on large bodies in `body` mode.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use idempotent_actix::{Fingerprint, FingerprintMode};
use std::hint::black_box;

const SIZES: [usize; 5] = [1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// A JSON object of about `len` bytes: a few fields and a padding string.
fn json_body(len: usize) -> Vec<u8> {
    let prefix = r#"{"item":"widget","quantity":3,"customer":{"id":42,"tier":"gold"},"note":""#;
    let padding = len.saturating_sub(prefix.len() + 2);
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(prefix.as_bytes());
    body.extend(std::iter::repeat_n(b'x', padding));
    body.extend_from_slice(br#""}"#);
    body
}

fn fingerprint(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint");
    for len in SIZES {
        let body = json_body(len);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("body", len), &body, |b, body| {
            b.iter(|| Fingerprint::of("POST", "/orders", "", black_box(body), FingerprintMode::Body))
        });
    }
    for len in [1 << 10, 64 << 10] {
        let body = json_body(len);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("json", len), &body, |b, body| {
            b.iter(|| Fingerprint::of("POST", "/orders", "", black_box(body), FingerprintMode::Json))
        });
    }
    group.finish();
}

criterion_group!(benches, fingerprint);
criterion_main!(benches);
