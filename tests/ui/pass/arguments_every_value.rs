//! Every argument with every value it accepts, alone and all together.

use actix_web::{post, App, HttpResponse};
use idempotent_actix::idempotent;

macro_rules! handlers {
    ($($name:ident: #[idempotent $($args:tt)*])*) => {
        $(
            #[post("/x")]
            #[idempotent $($args)*]
            async fn $name() -> HttpResponse {
                HttpResponse::Ok().finish()
            }
        )*

        fn main() {
            let _ = App::new()$(.service($name))*;
        }
    };
}

handlers! {
    bare: #[idempotent]
    empty: #[idempotent()]
    trailing_comma: #[idempotent(ttl = "1h",)]
    ttl_seconds: #[idempotent(ttl = "30s")]
    ttl_minutes: #[idempotent(ttl = "15m")]
    ttl_hours: #[idempotent(ttl = "24h")]
    ttl_days: #[idempotent(ttl = "7d")]
    ttl_compound: #[idempotent(ttl = "1h30m")]
    scope_global: #[idempotent(scope = "global")]
    scope_tenant: #[idempotent(scope = "tenant")]
    header_custom: #[idempotent(header = "X-Idempotency-Key")]
    header_event_id: #[idempotent(header = "X-Event-ID")]
    required_true: #[idempotent(required = true)]
    required_false: #[idempotent(required = false)]
    in_flight_wait: #[idempotent(in_flight = "wait")]
    in_flight_reject: #[idempotent(in_flight = "reject")]
    in_flight_accept: #[idempotent(in_flight = "accept")]
    on_mismatch_reject: #[idempotent(on_mismatch = "reject")]
    on_mismatch_execute: #[idempotent(on_mismatch = "execute")]
    cache_success: #[idempotent(cache = "success")]
    cache_non_server_error: #[idempotent(cache = "non-server-error")]
    cache_all: #[idempotent(cache = "all")]
    fingerprint_body: #[idempotent(fingerprint = "body")]
    fingerprint_json: #[idempotent(fingerprint = "json")]
    key_from_field: #[idempotent(key_from = "/reference_id")]
    key_from_nested: #[idempotent(key_from = "/order/id")]
    key_from_escaped: #[idempotent(key_from = "/a~1b/c~0d")]
    crate_default: #[idempotent(crate = "::idempotent_actix")]
    in_flight_accept_with_cache_non_server_error: #[idempotent(in_flight = "accept", cache = "non-server-error")]
    everything: #[idempotent(
        ttl = "2d",
        scope = "tenant",
        header = "X-Idempotency-Key",
        required = true,
        in_flight = "reject",
        on_mismatch = "execute",
        cache = "non-server-error",
        fingerprint = "json",
        key_from = "/reference_id",
        crate = "idempotent_actix",
    )]
}
