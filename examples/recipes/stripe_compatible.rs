//! A write endpoint Stripe's own SDKs can call and retry: `Idempotency::builder().stripe_compatible()`
//! and a handler that answers Stripe-shaped objects.
//!
//! Stripe's SDKs send an `Idempotency-Key` on every `POST` (one per call, kept across that
//! call's retries), retry connection errors, 409 and 5xx (or whatever `Stripe-Should-Retry`
//! says), and read errors from `{"error": {"type", "code", "message"}}`.
//!
//! | behaviour | how |
//! |---|---|
//! | the SDK's retry after a lost answer gets the first object, and the customer is created once | `#[idempotent]` on `POST /v1/customers`; replays marked `Idempotent-Replayed: true` |
//! | a key reused with other parameters: `stripe.IdempotencyError`, not retried | the profile's 400 `idempotency_error`, `Stripe-Should-Retry: false` |
//! | a duplicate while the first call runs: retried by the SDK until it gets the object | `in_flight = "reject"`: 409 `idempotency_key_in_use` with `Stripe-Should-Retry: true` at once, as Stripe answers |
//! | store down: the SDK retries | the profile's 503 `api_error`, `Stripe-Should-Retry: true` |
//! | a request without a secret key: `stripe.AuthenticationError` | [`has_secret_key`] guards the routes; the others answer 401 in Stripe's envelope |
//!
//! Differences and limits: the parameters are form-encoded as the SDKs send them; only `email`,
//! `name`, `description` and `metadata[...]` are read. Keys are remembered 24 h, as Stripe does.
//! Stripe also answers a replay with the original `Request-Id`; this server sends no request ids.
//!
//! A demo switch, not part of the API: `metadata[demo_delay_ms]=n` makes a create take `n` ms.
//!
//! Try it (`cargo run --example stripe_compatible`, then in another terminal):
//!
//! ```console
//! $ create() { curl -si localhost:8080/v1/customers -H 'Authorization: Bearer sk_test_demo' -H 'Idempotency-Key: k1' -d "email=$1"; }
//! $ create jenny@example.com     # 200, a customer
//! $ create jenny@example.com     # 200, the same customer, idempotent-replayed: true
//! $ create other@example.com     # 400 {"error": {"type": "idempotency_error", ...}}
//! ```
//!
//! or with Stripe's Python SDK: `stripe.api_base = "http://127.0.0.1:8080"`,
//! `stripe.api_key = "sk_test_demo"`, `stripe.Customer.create(email="jenny@example.com")`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HeaderMap};
use actix_web::{guard, post, web, App, HttpResponse, HttpServer};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

/// How many customers the handler created.
#[derive(Default)]
pub struct Customers {
    created: AtomicUsize,
}

impl Customers {
    /// Runs of `POST /v1/customers`.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }
}

/// The configuration: Stripe's error envelope, statuses and replay header.
pub fn idempotency() -> Idempotency {
    Idempotency::builder().stripe_compatible().build()
}

/// Whether a request carries a secret key as Stripe's SDKs send it
/// (`Authorization: Bearer sk_...`). Requests without one never reach the idempotent handler.
pub fn has_secret_key(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok()?.strip_prefix("Bearer "))
        .is_some_and(|key| key.starts_with("sk_"))
}

async fn authentication_error() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({
        "error": {
            "type": "invalid_request_error",
            "message": "You did not provide a valid API key; use a secret key (sk_...)."
        }
    }))
}

/// Creates a customer from Stripe's form-encoded parameters and answers Stripe's object.
#[post("/customers")]
#[idempotent(in_flight = "reject")]
async fn create_customer(params: web::Form<Vec<(String, String)>>, customers: web::Data<Customers>) -> HttpResponse {
    customers.created.fetch_add(1, Ordering::SeqCst);
    let params = params.into_inner();
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let metadata: BTreeMap<&str, &str> = params
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix("metadata[")?.strip_suffix(']')?, value.as_str())))
        .collect();
    if let Some(ms) = metadata.get("demo_delay_ms").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    HttpResponse::Ok().json(json!({
        "id": format!("cus_{}", uuid::Uuid::new_v4().simple()),
        "object": "customer",
        "created": created,
        "email": param("email"),
        "name": param("name"),
        "description": param("description"),
        "metadata": metadata,
        "livemode": false,
    }))
}

/// The routes; the app registers [`Customers`] and [`idempotency`] as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let authenticated = guard::fn_guard(|ctx| has_secret_key(ctx.head().headers()));
    cfg.service(web::scope("/v1").guard(authenticated).service(create_customer))
        .service(web::scope("/v1").default_service(web::to(authentication_error)));
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .skip_while(|arg| arg != "--bind")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let customers = web::Data::new(Customers::default());
    let idempotency = idempotency();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(customers.clone())
            .app_data(idempotency.clone())
            .configure(configure)
    })
    .bind(bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
