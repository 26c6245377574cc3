//! What one annotated handler asked for: the validated arguments of `#[idempotent(...)]`.
//!
//! The option enums are public (re-exported at the crate root, and taken by
//! [`crate::IdempotentMiddleware`]); [`RouteOptions`] and [`Route`] are the engine's, reached by
//! generated code through `__private` only.

use std::time::Duration;

use actix_web::http::header::HeaderName;

/// The key namespace of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// One namespace for every caller: keys must be unguessable (UUID v4).
    Global,
    /// Keys are namespaced by the tenant that [`crate::IdempotencyBuilder::tenant`] resolves;
    /// a request whose tenant cannot be resolved is rejected, never treated as global.
    Tenant,
}

/// What a duplicate gets while the first request with its key is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum OnMismatch {
    /// 409 `idempotency_conflict` (status configurable, e.g. 422).
    Reject,
    /// Treat it as a distinct request: the fingerprint becomes part of the record identity.
    Execute,
}

/// Which outcomes are stored and replayed; any other outcome releases the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum FingerprintMode {
    /// The bytes as sent.
    Body,
    /// Canonical JSON (sorted keys, no insignificant whitespace); bytes as sent if not JSON.
    Json,
}

/// The arguments of one `#[idempotent(...)]` (or of one [`crate::IdempotentMiddleware`]).
///
/// Generated code cannot write a literal of this `#[non_exhaustive]` struct: it starts from
/// [`new`](Self::new) and sets every argument with the `const` setters, so the route stays a
/// `static`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouteOptions {
    /// The handler's name, for logs.
    pub handler: &'static str,
    /// How long a completed response is replayed.
    pub ttl: Duration,
    /// Key namespace.
    pub scope: Scope,
    /// Header the key is read from.
    pub header: HeaderName,
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
    /// The attribute's defaults for `handler`: `ttl = "24h"`, global scope, `Idempotency-Key`,
    /// optional key, wait, reject mismatches, store successes, fingerprint the raw body.
    pub const fn new(handler: &'static str) -> Self {
        Self {
            handler,
            ttl: Duration::from_secs(24 * 60 * 60),
            scope: Scope::Global,
            header: HeaderName::from_static("idempotency-key"),
            required: false,
            in_flight: InFlight::Wait,
            on_mismatch: OnMismatch::Reject,
            cache: CachePolicy::Success,
            fingerprint: FingerprintMode::Body,
            key_from: None,
        }
    }

    /// Sets `ttl`.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets `scope`.
    pub const fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Sets `header`.
    ///
    /// A `const fn` cannot drop the name it replaces, so it forgets it. Generated code calls
    /// this once, on the name [`new`](Self::new) set: a static name, which owns nothing.
    pub const fn header(mut self, header: HeaderName) -> Self {
        std::mem::forget(std::mem::replace(&mut self.header, header));
        self
    }

    /// Sets `required`.
    pub const fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Sets `in_flight`.
    pub const fn in_flight(mut self, in_flight: InFlight) -> Self {
        self.in_flight = in_flight;
        self
    }

    /// Sets `on_mismatch`.
    pub const fn on_mismatch(mut self, on_mismatch: OnMismatch) -> Self {
        self.on_mismatch = on_mismatch;
        self
    }

    /// Sets `cache`.
    pub const fn cache(mut self, cache: CachePolicy) -> Self {
        self.cache = cache;
        self
    }

    /// Sets `fingerprint`.
    pub const fn fingerprint(mut self, fingerprint: FingerprintMode) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Sets `key_from`.
    pub const fn key_from(mut self, key_from: Option<&'static str>) -> Self {
        self.key_from = key_from;
        self
    }
}

/// A route's options, as the engine runs them.
#[derive(Debug)]
pub struct Route {
    options: RouteOptions,
}

impl Route {
    /// Wraps options; `const` so generated code can keep it in a `static`.
    pub const fn new(options: RouteOptions) -> Self {
        Self { options }
    }

    /// The route's options.
    pub fn options(&self) -> &RouteOptions {
        &self.options
    }

    /// The key header.
    pub fn header(&self) -> &HeaderName {
        &self.options.header
    }
}
