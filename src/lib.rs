//! Safe retries for actix-web write endpoints, with one attribute per handler.
//!
//! A client that sends `Idempotency-Key: <k>` on a write and retries after a timeout, a reset
//! connection or a 502 gets the original response back instead of a second side effect.
//!
//! ```
//! use actix_web::{post, test, web, App, HttpResponse};
//! use idempotent_actix::idempotent;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//!
//! static CHARGES: AtomicUsize = AtomicUsize::new(0);
//!
//! #[post("/charges")]
//! #[idempotent(ttl = "24h")]
//! async fn charge(amount: web::Json<u64>) -> HttpResponse {
//!     let n = CHARGES.fetch_add(1, Ordering::SeqCst) + 1;
//!     HttpResponse::Created().json(serde_json::json!({ "charge": n, "amount": *amount }))
//! }
//!
//! # #[actix_web::main]
//! # async fn main() {
//! let app = test::init_service(App::new().service(charge)).await;
//! let request = || {
//!     test::TestRequest::post()
//!         .uri("/charges")
//!         .insert_header(("Idempotency-Key", "5c1b0f0e-2b7c-4f4e-9d7e-1f6f3c2a9b10"))
//!         .set_json(500)
//!         .to_request()
//! };
//!
//! let first = test::call_service(&app, request()).await;
//! assert_eq!(first.status(), 201);
//! let first_body = test::read_body(first).await;
//!
//! // The retry is answered from the record: same status and body, marked as a replay.
//! let retry = test::call_service(&app, request()).await;
//! assert_eq!(retry.headers().get("idempotency-replayed").unwrap(), "true");
//! assert_eq!(test::read_body(retry).await, first_body);
//! assert_eq!(CHARGES.load(Ordering::SeqCst), 1);
//! # }
//! ```
//!
//! # The attribute
//!
//! [`#[idempotent(...)]`](idempotent) goes on an `async fn` handler, above or below `#[post]`,
//! `#[put]`, `#[patch]`, `#[delete]` or `#[route]`, or on a handler registered with
//! `web::resource(..).route(web::post().to(handler))`. The handler keeps its own extractors
//! and their limits. Every argument is optional and validated at compile time:
//!
//! | argument | values | default | meaning |
//! |---|---|---|---|
//! | `ttl` | `"30s"`, `"15m"`, `"24h"`, `"7d"`, `"1h30m"` | `"24h"` | how long a completed response is replayed |
//! | `scope` | `"global"`, `"tenant"` | `"global"` | key namespace; `"tenant"` uses the app's tenant resolver and rejects requests without a tenant |
//! | `header` | header name | `"Idempotency-Key"` | where the key comes from |
//! | `required` | `true`, `false` | `false` | missing key → 400 `idempotency_key_missing` |
//! | `in_flight` | `"wait"`, `"reject"`, `"accept"` | `"wait"` | a duplicate of a running request waits for its result, gets 409 + `Retry-After`, or gets 202 |
//! | `on_mismatch` | `"reject"`, `"execute"` | `"reject"` | same key, other request: 409 `idempotency_conflict`, or a distinct request |
//! | `cache` | `"success"`, `"non-server-error"`, `"all"` | `"success"` | which outcomes are stored; others release the key |
//! | `fingerprint` | `"body"`, `"json"` | `"body"` | `"json"` canonicalises the body before hashing |
//! | `key_from` | JSON Pointer | none | key from this body field when the header is absent |
//! | `crate` | path | `::idempotent_actix` | where generated code finds the runtime |
//!
//! # Configuration
//!
//! Without configuration a process-wide in-memory store is used. Register one [`Idempotency`]
//! with `App::app_data` to choose the store, resolve tenants and tune limits:
//!
//! ```
//! use actix_web::http::header::HeaderName;
//! use actix_web::{post, test, web, App, HttpResponse};
//! use idempotent_actix::{idempotent, Idempotency};
//!
//! #[post("/orders")]
//! #[idempotent(scope = "tenant")]
//! async fn create_order(body: web::Bytes) -> HttpResponse {
//!     HttpResponse::Created().body(body)
//! }
//!
//! # #[actix_web::main]
//! # async fn main() {
//! let idempotency = Idempotency::builder().tenant_from_header(HeaderName::from_static("x-tenant-id")).build();
//! let app = test::init_service(App::new().app_data(idempotency).service(create_order)).await;
//!
//! // A tenant-scoped route never falls back to a global key space.
//! let anonymous = test::TestRequest::post().uri("/orders").insert_header(("Idempotency-Key", "k1")).to_request();
//! let response = test::call_service(&app, anonymous).await;
//! assert_eq!(response.status(), 400);
//! # }
//! ```
//!
//! # Concurrent calls on the same key
//!
//! However many duplicates arrive at once, in one process or across replicas sharing a store,
//! the handler runs once; duplicates get its response as a replay (`Idempotency-Replayed:
//! true`), or wait, 409 or 202 as the route's `in_flight` says. A duplicate with a different
//! fingerprint gets `idempotency_conflict`.
//!
//! # Cancellation
//!
//! Once a keyed request's handler has started, it runs to completion in a task of its own and
//! its result is stored even if every client went away. Use [`Idempotency::drain`] on graceful
//! shutdown.
//!
//! # Panics
//!
//! A panicking handler releases its key: its own client gets a 500 `idempotency_handler_failed`
//! problem, every waiting duplicate gets the same, and a later retry runs again.
//!
//! # Errors
//!
//! Answers given instead of the handler are RFC 9457 problem documents with a stable `code`;
//! see [`IdempotencyError`]. Replace the envelope with
//! [`IdempotencyBuilder::error_response`].
//!
//! # Stores
//!
//! [`MemoryStore`] (default); Redis and PostgreSQL behind the `redis` and `postgres` features.
//! Every store implements [`Store`] and passes the conformance suite, [`store::conformance`]
//! (feature `conformance`), which a store of your own can run in its tests. With PostgreSQL, a
//! handler can also take a `Transaction` whose writes commit together with the record: see
//! [`transaction`].
//!
//! # Middleware: every write route of a scope
//!
//! [`IdempotentMiddleware`] runs the same engine, with the same options, on every `POST`,
//! `PUT`, `PATCH` and `DELETE` of the `App` or `Scope` it wraps:
//!
//! ```
//! use actix_web::{test, web, App, HttpResponse};
//! use idempotent_actix::IdempotentMiddleware;
//!
//! async fn create_identity() -> HttpResponse {
//!     HttpResponse::Created().body(uuid_like())
//! }
//! # fn uuid_like() -> String { format!("{:?}", std::time::Instant::now()) }
//!
//! # #[actix_web::main]
//! # async fn main() {
//! let app = test::init_service(
//!     App::new().service(
//!         web::scope("/v1")
//!             .wrap(IdempotentMiddleware::new().required(true))
//!             .route("/identities", web::post().to(create_identity)),
//!     ),
//! )
//! .await;
//! let request = || {
//!     test::TestRequest::post()
//!         .uri("/v1/identities")
//!         .insert_header(("Idempotency-Key", "2f1e6c1a-7d8b-4c55-9a0e-55c1d1f0a7b3"))
//!         .to_request()
//! };
//! let first = test::read_body(test::call_service(&app, request()).await).await;
//! let retry = test::read_body(test::call_service(&app, request()).await).await;
//! assert_eq!(retry, first);
//!
//! let unkeyed = test::TestRequest::post().uri("/v1/identities").to_request();
//! assert_eq!(test::call_service(&app, unkeyed).await.status(), 400);
//! # }
//! ```
//!
//! A request goes through the engine once, and an annotated handler inside the middleware's
//! scope is governed by its own attribute: see [`middleware`] for how the middleware learns
//! which routes lead to annotated handlers.
//!
//! # Testing
//!
//! Apps without a registered configuration share one process-wide store, so tests that reuse
//! a key would replay each other's responses: register [`testing::isolated()`] in each test's
//! app. An annotated handler's signature is rewritten, so it cannot be called as a plain
//! function; [`testing::call_with`] sends a request to it through a one-route app:
//!
//! ```
//! use actix_web::{test::TestRequest, web, HttpResponse};
//! use idempotent_actix::{idempotent, testing, IdempotencyKey};
//!
//! #[idempotent(required = true)]
//! async fn create_order(key: IdempotencyKey, order: web::Json<serde_json::Value>) -> HttpResponse {
//!     HttpResponse::Created().json(serde_json::json!({ "key": key.key(), "order": order.into_inner() }))
//! }
//!
//! # #[actix_web::main]
//! # async fn main() {
//! let idempotency = testing::isolated();
//! let request = || TestRequest::post().insert_header(("Idempotency-Key", "k1")).set_json(serde_json::json!({"item": "book"}));
//! let first = testing::call_with(&idempotency, create_order, request()).await;
//! assert_eq!(first.status(), 201);
//! let retry = testing::call_with(&idempotency, create_order, request()).await;
//! assert_eq!(retry.headers().get("idempotency-replayed").unwrap(), "true");
//! # }
//! ```
//!
//! A `#[post("/orders")]` handler is a service: test it with
//! `actix_web::test::init_service(App::new().app_data(testing::isolated()).service(create_order))`.
//! [`IdempotencyKey`] gives the handler the key (and tenant), e.g. to forward it downstream.
//!
//! # Observability
//!
//! Every keyed request ends in one [`Outcome`] (`executed`, `replayed`, `waited`, `conflict`,
//! `in_flight`, `released`, `rejected`, `store_error`), reported as a `tracing` event in an
//! `idempotency` span and as `metrics` counters and histograms labelled by route; evictions of
//! live records, store errors, tombstones and fenced completions have counters of their own.
//! Install any `metrics` exporter and `tracing` subscriber to collect them; names and labels are
//! listed in [`observe`].
//!
//! # Feature flags
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `redis` | no | [`RedisStore`]: several replicas sharing Redis, Valkey or Redis Cluster |
//! | `redis-tls` | no | `rediss://` URLs for [`RedisStore`], through rustls; a private CA with `RedisStoreBuilder::tls_ca_file` |
//! | `postgres` | no | [`PostgresStore`]: several replicas sharing PostgreSQL, with a shipped migration; `Transaction`: a handler's writes committed in the same transaction as its record ([`transaction`]) |
//! | `postgres-tls` | no | TLS for [`PostgresStore`] through rustls: `sslmode` (up to `verify-full`) and `sslrootcert` in the URL |
//! | `client` | no | [`client`] (the `idempotent-client` crate): a reqwest-middleware middleware that retries writes with one key per operation |
//! | `conformance` | no | [`store::conformance`]: the `Store` contract as executable checks, for the tests of a store of your own |
//!
//! The memory store, the attribute, the middleware and observability need no feature.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.89, the version actix-web 4.18 requires. Raising it is a minor-version change,
//! noted in the changelog.
#![warn(missing_docs)]

pub use idempotent_macros::idempotent;

// Configuration, and what a handler can ask for.
pub use idempotent_runtime::{Idempotency, IdempotencyBuilder, IdempotencyKey, Stats};
// The options of the attribute, as the middleware takes them.
pub use idempotent_runtime::{CachePolicy, FingerprintMode, IdempotentMiddleware, InFlight, OnMismatch, Scope};
// Answers given instead of the handler, and what is observed.
pub use idempotent_runtime::{IdempotencyError, MissingTenant, Outcome};
// Stores: the trait, what crosses it, and the backends.
pub use idempotent_runtime::record::DecodeError;
pub use idempotent_runtime::{CachedStore, ExpiringStore, MemoryStore, Store, StoreError};
pub use idempotent_runtime::{Claim, Completion, FencingToken, Fingerprint, Lookup, Record, RecordKey, StoredResponse};
#[cfg(feature = "postgres")]
pub use idempotent_runtime::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use idempotent_runtime::{RedisStore, RedisStoreBuilder};

// A handler's database transaction, committed with its record.
pub use idempotent_runtime::NoTransaction;
#[cfg(feature = "postgres")]
pub use idempotent_runtime::{tokio_postgres, PostgresTransaction, Transaction, TransactionalStore};

pub use idempotent_runtime::{key, middleware, observe, profile, store, testing, transaction, work};

#[cfg(feature = "client")]
pub use idempotent_client as client;

#[doc(hidden)]
pub use idempotent_runtime::__private;
