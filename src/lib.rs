//! Safe retries for actix-web write endpoints, with one attribute per handler.
//!
//! ```no_run
//! use actix_web::{post, web, App, HttpResponse, HttpServer};
//! use idempotent_actix::idempotent;
//!
//! #[post("/orders")]
//! #[idempotent(ttl = "24h")]
//! async fn create_order(body: web::Bytes) -> HttpResponse {
//!     // runs at most once per Idempotency-Key while the key is remembered
//!     HttpResponse::Created().body(body)
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     HttpServer::new(|| App::new().service(create_order)).bind("127.0.0.1:8080")?.run().await
//! }
//! ```
#![warn(missing_docs)]

pub use idempotent_macros::idempotent;
pub use idempotent_runtime::*;

#[doc(hidden)]
pub use idempotent_runtime::__private;
