//! The runtime of [`idempotent-actix`](https://docs.rs/idempotent-actix): configuration, key
//! and scope extraction, fingerprinting, stores, single flight, response capture and replay.
//!
//! Use it through the `idempotent-actix` crate, which re-exports its public API next to the
//! `#[idempotent]` attribute.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the app-wide [`Idempotency`] value |
//! | [`key`] | reading and validating the key header |
//! | [`fingerprint`] | SHA-256 of method, path, query and body |
//! | [`store`] | the [`Store`] trait, its contract and the backends |
//! | [`error`] | every answer the engine gives instead of the handler |
//! | [`middleware`] | the engine for every write route of an `App` or `Scope` |
//! | [`observe`] | tracing spans and events, `metrics` counters and histograms |
//! | [`testing`] | an isolated configuration per test, and calling a handler without an app |
//! | [`profile`] | presets that answer in a known API's wire format (Stripe's) |
//! | [`work`] | idempotent work outside HTTP: queue consumers, jobs |
//! | `operate` | [`Idempotency::inspect`] and [`Idempotency::forget`], for operators |
//! | [`transaction`] | a handler's database transaction, committed with its record (feature `postgres`) |
#![warn(missing_docs)]

pub mod config;
mod engine;
pub mod error;
pub mod fingerprint;
mod flight;
pub mod key;
pub mod middleware;
pub mod observe;
mod operate;
pub mod profile;
pub mod record;
mod replay;
mod route;
pub mod store;
mod tenant;
pub mod testing;
pub mod transaction;
pub mod work;

pub use config::{Idempotency, IdempotencyBuilder, Stats};
pub use error::IdempotencyError;
pub use fingerprint::Fingerprint;
pub use key::IdempotencyKey;
pub use middleware::IdempotentMiddleware;
pub use observe::Outcome;
pub use record::{Completion, Record, StoredResponse};
pub use route::{CachePolicy, FingerprintMode, InFlight, OnMismatch, Scope};
pub use store::{CachedStore, Claim, ExpiringStore, FencingToken, Lookup, MemoryStore, RecordKey, Store, StoreError};
#[cfg(feature = "postgres")]
pub use store::{PostgresStore, PostgresStoreBuilder, PostgresTransaction, TransactionalStore};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder};
pub use tenant::MissingTenant;
/// The tokio-postgres this crate runs on (feature `postgres`): a [`Transaction`] dereferences
/// to its `Client`, and its types (`types::ToSql`, `Row`, `Error`) are those of the handler's
/// statements.
#[cfg(feature = "postgres")]
pub use tokio_postgres;
pub use transaction::NoTransaction;
#[cfg(feature = "postgres")]
pub use transaction::Transaction;

/// What generated code uses. Not public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::engine::{handle, Handled};
    pub use crate::route::{CachePolicy, FingerprintMode, InFlight, OnMismatch, Route, RouteOptions, Scope};
    pub use actix_web::dev::Payload as DevPayload;
    pub use actix_web::http::header::HeaderName;
    pub use actix_web::web::Payload;
    pub use actix_web::{FromRequest, HttpRequest, HttpResponse, Responder};

    /// The response an extractor's error produces, as actix-web would send it, marked so the
    /// engine never stores it: the handler did not run.
    pub fn extractor_error(error: impl Into<actix_web::Error>, _req: &HttpRequest) -> Handled {
        let error: actix_web::Error = error.into();
        Handled::Refused(error.error_response())
    }
}
