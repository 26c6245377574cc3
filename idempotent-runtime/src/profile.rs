//! Profiles: configurations that make the engine answer in a known API's wire format, so that
//! API's own client SDKs parse every answer and retry exactly the ones worth retrying.
//!
//! # Stripe ([`IdempotencyBuilder::stripe_compatible`])
//!
//! Stripe's SDKs read an error from `{"error": {"type", "code", "message"}}`, raise an
//! idempotency error for a 400 (or 404) whose `type` is `idempotency_error`, and decide whether to
//! retry from the `Stripe-Should-Retry` header first, then from the status (409 and 5xx are
//! retried). The profile answers:
//!
//! | error | status | `type` | `code` | `Stripe-Should-Retry` |
//! |---|---|---|---|---|
//! | [`Conflict`](IdempotencyError::Conflict) | 400 | `idempotency_error` | `idempotency_conflict` | `false` |
//! | [`ResponseNotStored`](IdempotencyError::ResponseNotStored) | 400 | `idempotency_error` | `idempotency_response_not_stored` | `false` |
//! | [`InFlight`](IdempotencyError::InFlight), [`Accepted`](IdempotencyError::Accepted) | 409, with `Retry-After` | `idempotency_error` | `idempotency_key_in_use` | `true` |
//! | [`StoreUnavailable`](IdempotencyError::StoreUnavailable) | 503, with `Retry-After` | `api_error` | `idempotency_store_unavailable` | `true` |
//! | [`HandlerFailed`](IdempotencyError::HandlerFailed) | 500 | `api_error` | `idempotency_handler_failed` | `true` |
//! | any other (missing or invalid key, tenant missing, body too large or unreadable) | the engine's (400, 413) | `invalid_request_error` | the error's [`code`](IdempotencyError::code) | `false` |
//!
//! A running duplicate is answered 409 even on a route with `in_flight = "accept"`: a Stripe SDK
//! takes any 2xx for the created object. `idempotency_key_in_use` is Stripe's own code for a key
//! still in use by another request; the other codes are the engine's stable codes. Replays carry
//! `Idempotent-Replayed: true`, Stripe's header.
//!
//! The profile shapes the engine's answers only: the handlers answer Stripe-shaped objects and
//! their own errors themselves (`examples/recipes/stripe_compatible.rs` shows both).

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::config::IdempotencyBuilder;
use crate::error::IdempotencyError;

/// The header Stripe's SDKs read before the status to decide whether to retry.
pub const STRIPE_SHOULD_RETRY: HeaderName = HeaderName::from_static("stripe-should-retry");

/// The header Stripe marks replayed responses with.
pub const STRIPE_REPLAY_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The Stripe profile, applied to `builder` (see the [module documentation](self)).
pub(crate) fn stripe(builder: IdempotencyBuilder) -> IdempotencyBuilder {
    builder
        .conflict_status(StatusCode::BAD_REQUEST)
        .replay_header(STRIPE_REPLAY_HEADER)
        .error_response(stripe_error_response)
}

#[derive(Serialize)]
struct StripeEnvelope<'a> {
    error: StripeError<'a>,
}

#[derive(Serialize)]
struct StripeError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
}

/// How Stripe would answer `error`: its status, error `type`, `code`, and whether a retry with
/// the same key can succeed.
fn stripe_answer(
    error: &IdempotencyError,
    engine_status: StatusCode,
) -> (StatusCode, &'static str, &'static str, bool) {
    match error {
        IdempotencyError::Conflict => (engine_status, "idempotency_error", error.code(), false),
        IdempotencyError::ResponseNotStored => (StatusCode::BAD_REQUEST, "idempotency_error", error.code(), false),
        IdempotencyError::InFlight { .. } | IdempotencyError::Accepted { .. } => (
            StatusCode::CONFLICT,
            "idempotency_error",
            "idempotency_key_in_use",
            true,
        ),
        IdempotencyError::StoreUnavailable { .. } | IdempotencyError::HandlerFailed => {
            (engine_status, "api_error", error.code(), true)
        }
        IdempotencyError::TransactionUnavailable { .. } => (engine_status, "api_error", error.code(), false),
        _ => (engine_status, "invalid_request_error", error.code(), false),
    }
}

/// The profile's error hook: `error` in Stripe's envelope, status and retry header.
pub fn stripe_error_response(error: &IdempotencyError, status: StatusCode, _req: &HttpRequest) -> HttpResponse {
    let (status, kind, code, should_retry) = stripe_answer(error, status);
    let message = error.to_string();
    let envelope = StripeEnvelope {
        error: StripeError {
            kind,
            code,
            message: &message,
        },
    };
    HttpResponse::build(status)
        .insert_header((
            STRIPE_SHOULD_RETRY,
            HeaderValue::from_static(if should_retry { "true" } else { "false" }),
        ))
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(serde_json::to_vec(&envelope).expect("an error envelope always serialises"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::body::to_bytes;
    use actix_web::test::TestRequest;

    use super::*;
    use crate::Idempotency;

    async fn answer(error: IdempotencyError) -> (StatusCode, Option<String>, Option<String>, serde_json::Value) {
        let config = Idempotency::builder().stripe_compatible().build();
        let response = config.error_response(&error, &TestRequest::default().to_http_request());
        let header = |name: &str| {
            let value = response.headers().get(name)?;
            Some(value.to_str().unwrap().to_owned())
        };
        let (should_retry, retry_after) = (header(STRIPE_SHOULD_RETRY.as_str()), header("retry-after"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let status = response.status();
        let body = to_bytes(response.into_body()).await.unwrap();
        (
            status,
            should_retry,
            retry_after,
            serde_json::from_slice(&body).unwrap(),
        )
    }

    #[actix_web::test]
    async fn a_conflict_is_400_idempotency_error_and_not_retried() {
        let (status, should_retry, retry_after, body) = answer(IdempotencyError::Conflict).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(should_retry.as_deref(), Some("false"));
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["type"], "idempotency_error");
        assert_eq!(body["error"]["code"], "idempotency_conflict");
        assert!(body["error"]["message"].as_str().unwrap().contains("different request"));
    }

    #[actix_web::test]
    async fn a_running_duplicate_is_409_to_retry_even_where_the_route_accepts_it() {
        let retry_after = Duration::from_secs(2);
        for error in [
            IdempotencyError::InFlight { retry_after },
            IdempotencyError::Accepted { retry_after },
        ] {
            let (status, should_retry, retry_after, body) = answer(error).await;

            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(should_retry.as_deref(), Some("true"));
            assert_eq!(retry_after.as_deref(), Some("2"));
            assert_eq!(body["error"]["type"], "idempotency_error");
            assert_eq!(body["error"]["code"], "idempotency_key_in_use");
        }
    }

    #[actix_web::test]
    async fn a_store_outage_is_503_api_error_to_retry() {
        let error = IdempotencyError::StoreUnavailable {
            retry_after: Duration::from_secs(1),
        };
        let (status, should_retry, retry_after, body) = answer(error).await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(should_retry.as_deref(), Some("true"));
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["type"], "api_error");
        assert_eq!(body["error"]["code"], "idempotency_store_unavailable");
    }

    #[actix_web::test]
    async fn a_response_not_stored_is_an_idempotency_error_not_retried() {
        let (status, should_retry, _, body) = answer(IdempotencyError::ResponseNotStored).await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(should_retry.as_deref(), Some("false"));
        assert_eq!(body["error"]["type"], "idempotency_error");
    }

    #[actix_web::test]
    async fn a_bad_key_is_an_invalid_request_error_with_the_engines_code() {
        let (status, should_retry, _, body) = answer(IdempotencyError::KeyMissing {
            header: HeaderName::from_static("idempotency-key"),
        })
        .await;

        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(should_retry.as_deref(), Some("false"));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "idempotency_key_missing");
    }

    #[actix_web::test]
    async fn a_later_conflict_status_overrides_the_profiles() {
        let config = Idempotency::builder()
            .stripe_compatible()
            .conflict_status(StatusCode::UNPROCESSABLE_ENTITY)
            .build();

        let response = config.error_response(&IdempotencyError::Conflict, &TestRequest::default().to_http_request());

        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
