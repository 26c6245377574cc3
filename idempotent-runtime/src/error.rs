//! Every way the engine answers instead of the handler, mapped to HTTP in one place.
//!
//! Responses are RFC 9457 problem documents (`application/problem+json`) with a stable `code`
//! member; an app can replace the envelope with [`crate::IdempotencyBuilder::error_response`].

use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::key::KeyError;
use crate::tenant::MissingTenant;
use crate::transaction::NoTransaction;

/// Why the engine answered a request itself. Each variant has a stable [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// The route requires a key and none was sent.
    #[error("this request requires an idempotency key in the `{header}` header")]
    KeyMissing {
        /// The header the key is read from.
        header: HeaderName,
    },
    /// The key header is malformed; the handler did not run.
    #[error("the idempotency key is invalid: {0}")]
    KeyInvalid(KeyError),
    /// The key was first used with a different request (method, path, query or body).
    #[error("this idempotency key was already used with a different request")]
    Conflict,
    /// A request with this key is still running.
    #[error("a request with this idempotency key is still being processed; retry later")]
    InFlight {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// A request with this key is still running; the duplicate is accepted (202) for later retrieval.
    #[error("a request with this idempotency key is being processed; retry later to get its result")]
    Accepted {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// The route is tenant-scoped and no tenant was found; `reason` says why (no resolver
    /// configured, the header or authentication extension it reads is absent, or it found
    /// nothing). Each reason is also logged once as a `WARN` event with the fix.
    #[error("this request must identify its tenant to use an idempotency key: {}", reason.detail())]
    TenantMissing {
        /// Why no tenant was found.
        reason: MissingTenant,
    },
    /// The store could not be reached (fail-closed mode).
    #[error("the idempotency store is unavailable; retry later")]
    StoreUnavailable {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// The original request ran, but its response was too large (or too slow) to keep.
    #[error("the request with this idempotency key was processed, but its response was too large to store")]
    ResponseNotStored,
    /// The request body exceeds the size the engine fingerprints.
    #[error("the request body exceeds the {limit} bytes that can be fingerprinted")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The request body could not be read (the client went away or sent a broken body).
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// The handler panicked, or returned while it still held its [`Transaction`]; the key was
    /// released, so a retry runs again.
    ///
    /// [`Transaction`]: crate::transaction
    #[error("the request failed; it was not stored and a retry will run again")]
    HandlerFailed,
    /// The handler takes a `Transaction` and none can be given; `reason` says why. The handler
    /// does not run. Also logged once per reason as a `WARN` event.
    #[error("no transaction for this request: {reason}")]
    TransactionUnavailable {
        /// Why no transaction can be given.
        reason: NoTransaction,
    },
}

/// As an extractor's error ([`crate::IdempotencyKey`]): the problem document, with the
/// error's default status.
impl actix_web::ResponseError for IdempotencyError {
    fn status_code(&self) -> StatusCode {
        self.default_status()
    }

    fn error_response(&self) -> HttpResponse {
        self.problem_response(self.default_status())
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
}

impl IdempotencyError {
    /// The stable machine-readable code, e.g. `idempotency_conflict`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::KeyMissing { .. } => "idempotency_key_missing",
            Self::KeyInvalid(_) => "idempotency_key_invalid",
            Self::Conflict => "idempotency_conflict",
            Self::InFlight { .. } | Self::Accepted { .. } => "idempotency_in_flight",
            Self::TenantMissing { .. } => "idempotency_tenant_missing",
            Self::StoreUnavailable { .. } => "idempotency_store_unavailable",
            Self::ResponseNotStored => "idempotency_response_not_stored",
            Self::BodyTooLarge { .. } => "idempotency_body_too_large",
            Self::BodyUnreadable => "idempotency_body_unreadable",
            Self::HandlerFailed => "idempotency_handler_failed",
            Self::TransactionUnavailable { .. } => "idempotency_transaction_unavailable",
        }
    }

    /// The variant's name: the anchor of its documentation, used in the problem `type` URI.
    fn variant(&self) -> &'static str {
        match self {
            Self::KeyMissing { .. } => "KeyMissing",
            Self::KeyInvalid(_) => "KeyInvalid",
            Self::Conflict => "Conflict",
            Self::InFlight { .. } => "InFlight",
            Self::Accepted { .. } => "Accepted",
            Self::TenantMissing { .. } => "TenantMissing",
            Self::StoreUnavailable { .. } => "StoreUnavailable",
            Self::ResponseNotStored => "ResponseNotStored",
            Self::BodyTooLarge { .. } => "BodyTooLarge",
            Self::BodyUnreadable => "BodyUnreadable",
            Self::HandlerFailed => "HandlerFailed",
            Self::TransactionUnavailable { .. } => "TransactionUnavailable",
        }
    }

    /// A short, fixed summary of the problem type.
    pub fn title(&self) -> &'static str {
        match self {
            Self::KeyMissing { .. } => "Idempotency key missing",
            Self::KeyInvalid(_) => "Idempotency key invalid",
            Self::Conflict => "Idempotency key reused with a different request",
            Self::InFlight { .. } => "Request with this idempotency key in progress",
            Self::Accepted { .. } => "Request with this idempotency key accepted",
            Self::TenantMissing { .. } => "Tenant missing",
            Self::StoreUnavailable { .. } => "Idempotency store unavailable",
            Self::ResponseNotStored => "Original response not stored",
            Self::BodyTooLarge { .. } => "Request body too large",
            Self::BodyUnreadable => "Request body unreadable",
            Self::HandlerFailed => "Request failed",
            Self::TransactionUnavailable { .. } => "Transaction unavailable",
        }
    }

    /// The status used unless the app overrides it (`conflict_status`).
    pub fn default_status(&self) -> StatusCode {
        match self {
            Self::KeyMissing { .. } | Self::KeyInvalid(_) | Self::TenantMissing { .. } | Self::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Self::Conflict | Self::InFlight { .. } | Self::ResponseNotStored => StatusCode::CONFLICT,
            Self::Accepted { .. } => StatusCode::ACCEPTED,
            Self::StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HandlerFailed | Self::TransactionUnavailable { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` this answer carries, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::InFlight { retry_after }
            | Self::Accepted { retry_after }
            | Self::StoreUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The default RFC 9457 response, with `status` (the app may have overridden the default).
    pub fn problem_response(&self, status: StatusCode) -> HttpResponse {
        let problem = Problem {
            kind: format!(
                "https://docs.rs/idempotent-actix/latest/idempotent_actix/enum.IdempotencyError.html#variant.{}",
                self.variant()
            ),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code(),
        };
        let body = serde_json::to_vec(&problem).expect("a problem document always serialises");
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if let Some(after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, after.as_secs().max(1)));
        }
        response.body(body)
    }
}
