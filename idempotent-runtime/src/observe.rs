//! What the engine reports: one outcome per keyed request, as a `tracing` event and as
//! [`metrics`](https://docs.rs/metrics) counters and histograms.
//!
//! Nothing is exported unless the app installs a `tracing` subscriber or a `metrics` recorder
//! (for example `metrics-exporter-prometheus`); without one, recording costs an atomic load.
//!
//! # Metrics
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | `idempotency_requests_total` | counter | `route`, `outcome` | keyed requests, by [`Outcome`] |
//! | `idempotency_request_duration_seconds` | histogram | `route`, `outcome` | time from the request reaching the engine to its answer, handler included |
//! | `idempotency_store_errors_total` | counter | `operation` | store calls that failed or timed out (`claim`, `complete`, `release`, `renew`, `lookup`, `wait`; `begin`, `rollback` for a handler's transaction) |
//! | `idempotency_evictions_total` | counter | | completed records the memory store evicted for space before their ttl |
//! | `idempotency_responses_not_stored_total` | counter | `route` | responses too large or too slow to store (the key keeps a tombstone) |
//! | `idempotency_fenced_completions_total` | counter | `route` | results refused because another execution took the key over after a lapsed lease |
//!
//! `route` is the annotated handler's name, or the middleware's
//! [`name`](crate::middleware::IdempotentMiddleware::name). Keys, tenants and bodies never
//! appear in labels or log fields.
//!
//! # Tracing
//!
//! Every keyed request is answered inside a `DEBUG` span named `idempotency` with the field
//! `route`; its outcome is a `DEBUG` event (`WARN` for [`Outcome::StoreError`]) with the fields
//! `route`, `outcome` and `elapsed_ms`. Store failures, evictions of live records, tombstones
//! and lapsed leases are `WARN` events of their own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::Either;
use tracing::instrument::Instrumented;
use tracing::Instrument;

use crate::error::IdempotencyError;

/// What the engine did with one keyed request: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler ran and its response was stored for replay.
    Executed,
    /// The handler ran and its response was not stored (the cache policy excludes its status, or
    /// it panicked): the key was released and a retry runs again.
    Released,
    /// A completed response was replayed at once.
    Replayed,
    /// A duplicate waited for the first execution of its key, then got its response.
    Waited,
    /// The key was first used with a different request: `idempotency_conflict`.
    Conflict,
    /// The key's first request is still running: 409 `idempotency_in_flight` or 202.
    InFlight,
    /// The request was refused before any execution: key missing or invalid, tenant missing,
    /// body too large or unreadable, or the key's response was too large to have been stored.
    Rejected,
    /// The store failed: 503 `idempotency_store_unavailable`, or the handler ran unprotected
    /// under [`fail_open`](crate::IdempotencyBuilder::fail_open).
    StoreError,
}

impl Outcome {
    /// The label value, e.g. `"replayed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::Released => "released",
            Self::Replayed => "replayed",
            Self::Waited => "waited",
            Self::Conflict => "conflict",
            Self::InFlight => "in_flight",
            Self::Rejected => "rejected",
            Self::StoreError => "store_error",
        }
    }

    /// The outcome of answering with `error` instead of the handler.
    pub(crate) fn of_error(error: &IdempotencyError) -> Self {
        match error {
            IdempotencyError::Conflict => Self::Conflict,
            IdempotencyError::InFlight { .. } | IdempotencyError::Accepted { .. } => Self::InFlight,
            IdempotencyError::StoreUnavailable { .. } => Self::StoreError,
            IdempotencyError::HandlerFailed => Self::Released,
            IdempotencyError::KeyMissing { .. }
            | IdempotencyError::KeyInvalid(_)
            | IdempotencyError::TenantMissing { .. }
            | IdempotencyError::ResponseNotStored
            | IdempotencyError::BodyTooLarge { .. }
            | IdempotencyError::BodyUnreadable
            | IdempotencyError::TransactionUnavailable { .. } => Self::Rejected,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The span a keyed request is answered in.
pub(crate) fn span(route: &'static str) -> tracing::Span {
    tracing::debug_span!("idempotency", route)
}

/// `future` inside `span`, or as it is when no subscriber records the span: a disabled span
/// still checks the `log` crate's level each time it is entered, on every poll.
pub(crate) fn within<F: Future>(span: &tracing::Span, future: F) -> Either<F, Instrumented<F>> {
    if span.is_disabled() {
        Either::Left(future)
    } else {
        Either::Right(future.instrument(span.clone()))
    }
}

/// Runs `f` inside `span`, as [`within`] does.
pub(crate) fn in_scope<T>(span: &tracing::Span, f: impl FnOnce() -> T) -> T {
    if span.is_disabled() {
        f()
    } else {
        span.in_scope(f)
    }
}

/// Reports the answer to one keyed request.
pub(crate) fn outcome(route: &'static str, outcome: Outcome, elapsed: Duration) {
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    let label = outcome.as_str();
    let labels = labels(route, outcome);
    metrics::with_recorder(|recorder| {
        let requests = metrics::Key::from_static_parts("idempotency_requests_total", labels);
        recorder.register_counter(&requests, &METADATA).increment(1);
        let duration = metrics::Key::from_static_parts("idempotency_request_duration_seconds", labels);
        recorder
            .register_histogram(&duration, &METADATA)
            .record(elapsed.as_secs_f64());
    });
    let elapsed_ms = elapsed.as_secs_f64() * 1e3;
    if outcome == Outcome::StoreError {
        tracing::warn!(route, outcome = label, elapsed_ms, "idempotency request answered");
    } else {
        tracing::debug!(route, outcome = label, elapsed_ms, "idempotency request answered");
    }
}

/// The `route` and `outcome` labels, made once per process for each pair, so that recording an
/// outcome allocates nothing (`counter!` and `histogram!` build a label vector per call). The
/// recorder is still looked up on every call: one installed late records from then on.
fn labels(route: &'static str, outcome: Outcome) -> &'static [metrics::Label] {
    type Interned = HashMap<(usize, usize, u8), &'static [metrics::Label]>;
    static ALL: Mutex<Option<Interned>> = Mutex::new(None);
    thread_local! {
        static NEAR: RefCell<Interned> = RefCell::new(HashMap::new());
    }
    let id = (route.as_ptr() as usize, route.len(), outcome as u8);
    NEAR.with_borrow_mut(|near| {
        *near.entry(id).or_insert_with(|| {
            let mut all = ALL.lock().unwrap_or_else(PoisonError::into_inner);
            *all.get_or_insert_with(HashMap::new).entry(id).or_insert_with(|| {
                Box::leak(Box::new([
                    metrics::Label::from_static_parts("route", route),
                    metrics::Label::from_static_parts("outcome", outcome.as_str()),
                ]))
            })
        })
    })
}

/// A store call that failed or timed out.
pub(crate) fn store_error(operation: &'static str) {
    metrics::counter!("idempotency_store_errors_total", "operation" => operation).increment(1);
}

/// A live record the memory store evicted for space.
pub(crate) fn evicted() {
    metrics::counter!("idempotency_evictions_total").increment(1);
}

/// A response sent but not stored, for size or time.
pub(crate) fn response_not_stored(route: &'static str) {
    metrics::counter!("idempotency_responses_not_stored_total", "route" => route).increment(1);
}

/// A completion refused by fencing.
pub(crate) fn fenced_completion(route: &'static str) {
    metrics::counter!("idempotency_fenced_completions_total", "route" => route).increment(1);
}
