//! Helpers for testing annotated handlers: a configuration of their own per test, and a way to
//! call a handler without writing an `App`.
//!
//! Without a registered [`Idempotency`], every app of a process shares one process-wide memory
//! store, so two tests that send the same key replay each other's responses. Register
//! [`isolated()`] in each test's app instead:
//!
//! ```
//! use actix_web::{post, test, App, HttpResponse};
//! use idempotent_runtime::testing;
//! # use idempotent_runtime::IdempotentMiddleware as _;
//!
//! # async fn charge() -> HttpResponse { HttpResponse::Created().finish() }
//! # #[actix_web::main]
//! # async fn main() {
//! // With `#[post("/charges")] #[idempotent] async fn charge(..)`: `.service(charge)`.
//! let app = test::init_service(
//!     App::new().app_data(testing::isolated()).route("/charges", actix_web::web::post().to(charge)),
//! )
//! .await;
//! # }
//! ```
//!
//! An annotated handler's signature is rewritten (it takes the request and its payload), so a
//! test cannot call `create_order(web::Json(order))` directly. [`call`] runs a handler
//! registered with `web::to` (any handler that is not a route macro's service) through a
//! one-route app with its own store, and [`call_with`] with a configuration the test keeps, to
//! send a retry after the first call:
//!
//! ```
//! use actix_web::{test::TestRequest, web, HttpResponse};
//! use idempotent_runtime::testing;
//!
//! // With `#[idempotent]` on it, this handler takes the request and its payload instead.
//! async fn create_order(order: web::Json<serde_json::Value>) -> HttpResponse {
//!     HttpResponse::Created().json(order.into_inner())
//! }
//!
//! # #[actix_web::main]
//! # async fn main() {
//! let order = serde_json::json!({"item": "book"});
//! let response = testing::call(create_order, TestRequest::post().set_json(&order)).await;
//! assert_eq!(response.status(), 201);
//! # }
//! ```
//!
//! The crate documentation of `idempotent-actix` (section *Testing*) and its
//! `tests/testing.rs` show both with an annotated handler, including a retry.
//!
//! To unit-test the logic itself, keep it in a plain function the handler calls: that function
//! is then a function like any other.

use actix_web::dev::ServiceResponse;
use actix_web::test::{self, TestRequest};
use actix_web::{web, App, FromRequest, Handler, Responder};

use crate::config::Idempotency;
use crate::store::MemoryStore;

/// A configuration with a memory store of its own (64 MiB), shared with no other app or test.
/// Register it with `App::app_data`; clones share its store. Build it once per test, outside
/// any `HttpServer::new` factory: built inside one, each worker would get a store of its own.
pub fn isolated() -> Idempotency {
    Idempotency::builder().store(MemoryStore::private_default()).build()
}

/// Sends `request` to `handler`, alone in an app with an [`isolated()`] configuration; the
/// request's path and method do not matter.
pub async fn call<F, Args>(handler: F, request: TestRequest) -> ServiceResponse
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    call_with(&isolated(), handler, request).await
}

/// Sends `request` to `handler`, alone in an app with `idempotency`: calls with the same
/// configuration share its store, so a second call with the same key is a replay.
pub async fn call_with<F, Args>(idempotency: &Idempotency, handler: F, request: TestRequest) -> ServiceResponse
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let app = App::new()
        .app_data(idempotency.clone())
        .default_service(web::to(handler));
    let app = test::init_service(app).await;
    test::call_service(&app, request.to_request()).await
}
