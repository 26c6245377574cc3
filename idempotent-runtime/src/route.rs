//! What one annotated handler asked for: the validated arguments of `#[idempotent(...)]`.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::header::HeaderName;

/// The key namespace of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One namespace for every caller: keys must be unguessable (UUID v4).
    Global,
    /// Keys are namespaced by the tenant that [`crate::IdempotencyBuilder::tenant`] resolves;
    /// a request whose tenant cannot be resolved is rejected, never treated as global.
    Tenant,
}

/// What a duplicate gets while the first request with its key is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    /// Wait for the first result (bounded by [`crate::IdempotencyBuilder::wait_timeout`]) and
    /// replay it; 409 + `Retry-After` when the bound is reached.
    Wait,
    /// 409 `idempotency_in_flight` + `Retry-After` at once.
    Reject,
    /// 202 Accepted at once; a later retry gets the result.
    Accept,
}

/// What a request gets when its key was first used with a different request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    /// 409 `idempotency_conflict` (status configurable, e.g. 422).
    Reject,
    /// Treat it as a distinct request: the fingerprint becomes part of the record identity.
    Execute,
}

/// Which outcomes are stored and replayed; any other outcome releases the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// 2xx only.
    Success,
    /// Everything below 500.
    NonServerError,
    /// Every status.
    All,
}

impl CachePolicy {
    /// Whether a response with this status is remembered.
    pub fn stores(self, status: u16) -> bool {
        match self {
            Self::Success => (200..300).contains(&status),
            Self::NonServerError => status < 500,
            Self::All => true,
        }
    }
}

/// How the request body enters the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintMode {
    /// The bytes as sent.
    Body,
    /// Canonical JSON (sorted keys, no insignificant whitespace); bytes as sent if not JSON.
    Json,
}

/// The arguments of one `#[idempotent(...)]`, as generated code writes them.
#[derive(Debug, Clone, Copy)]
pub struct RouteOptions {
    /// The handler's name, for logs.
    pub handler: &'static str,
    /// How long a completed response is replayed.
    pub ttl: Duration,
    /// Key namespace.
    pub scope: Scope,
    /// Header name the key is read from, as written in the attribute (matched case-insensitively).
    pub header: &'static str,
    /// Whether a request without a key is refused with 400 `idempotency_key_missing`.
    pub required: bool,
    /// Behaviour for duplicates of a running request.
    pub in_flight: InFlight,
    /// Behaviour for a reused key with another request.
    pub on_mismatch: OnMismatch,
    /// Which outcomes are stored.
    pub cache: CachePolicy,
    /// How the body is fingerprinted.
    pub fingerprint: FingerprintMode,
    /// JSON Pointer to a body field that supplies the key when the header is absent.
    pub key_from: Option<&'static str>,
}

impl RouteOptions {
    /// The attribute's defaults: `ttl = "24h"`, global scope, `Idempotency-Key`, optional key,
    /// wait, reject mismatches, store successes, fingerprint the raw body.
    pub const DEFAULT: Self = Self {
        handler: "handler",
        ttl: Duration::from_secs(24 * 60 * 60),
        scope: Scope::Global,
        header: "Idempotency-Key",
        required: false,
        in_flight: InFlight::Wait,
        on_mismatch: OnMismatch::Reject,
        cache: CachePolicy::Success,
        fingerprint: FingerprintMode::Body,
        key_from: None,
    };
}

/// A route's options plus what is derived from them once (the parsed header name).
#[derive(Debug)]
pub struct Route {
    options: RouteOptions,
    header: OnceLock<HeaderName>,
}

impl Route {
    /// Wraps options; `const` so generated code can keep it in a `static`.
    pub const fn new(options: RouteOptions) -> Self {
        Self {
            options,
            header: OnceLock::new(),
        }
    }

    /// The route's options.
    pub fn options(&self) -> &RouteOptions {
        &self.options
    }

    /// The key header, parsed on first use.
    pub fn header(&self) -> &HeaderName {
        self.header.get_or_init(|| {
            HeaderName::from_bytes(self.options.header.as_bytes()).expect("the attribute validates header names")
        })
    }
}
