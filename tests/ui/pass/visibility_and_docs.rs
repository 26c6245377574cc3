//! Visibility, doc comments and other attributes stay on the handler.
#![deny(missing_docs)]

use actix_web::{post, App, HttpResponse};
use idempotent_actix::idempotent;

/// Handlers exposed to the rest of the crate.
pub mod handlers {
    use super::{idempotent, post, HttpResponse};

    /// Creates an order.
    ///
    /// Retries with the same `Idempotency-Key` get the first response back.
    #[post("/orders")]
    #[idempotent(ttl = "24h")]
    pub async fn create_order() -> HttpResponse {
        HttpResponse::Created().finish()
    }

    /// Creates a refund.
    #[idempotent(required = true)]
    #[post("/refunds")]
    pub async fn create_refund() -> HttpResponse {
        HttpResponse::Created().finish()
    }

    /// Visible in the crate only.
    #[idempotent]
    #[must_use]
    pub(crate) async fn create_note() -> HttpResponse {
        HttpResponse::Created().finish()
    }
}

fn main() {
    let _ = App::new()
        .service(handlers::create_order)
        .service(handlers::create_refund)
        .route("/notes", actix_web::web::post().to(handlers::create_note));
}
