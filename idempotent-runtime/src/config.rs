//! The app-wide configuration: one [`Idempotency`] value registered with `App::app_data`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use tokio_util::task::TaskTracker;

use crate::error::IdempotencyError;
use crate::flight::Flights;
use crate::record::StoredResponse;
use crate::store::{MemoryStore, Store};
use crate::tenant::{TenantSource, Tenants};

type ErrorResponder = Arc<dyn Fn(&IdempotencyError, StatusCode, &HttpRequest) -> HttpResponse + Send + Sync>;
pub(crate) type ReplayHook = Arc<dyn Fn(&StoredResponse, &HttpRequest) -> Option<StoredResponse> + Send + Sync>;

/// The engine's configuration and state, shared by every annotated route of an app.
///
/// Without one, routes use a process-wide default ([`Idempotency::global`]): an in-memory
/// store and no tenant resolver. Register one to pick the store, resolve tenants and tune
/// limits. Clones share the same store, in-flight requests and counters.
///
/// ```
/// use actix_web::http::header::HeaderName;
/// use actix_web::{post, web, App, HttpResponse};
/// use idempotent_runtime::{Idempotency, MemoryStore};
///
/// let idempotency = Idempotency::builder()
///     .store(MemoryStore::with_capacity(128 * 1024 * 1024))
///     .tenant_from_header(HeaderName::from_static("x-tenant-id"))
///     .namespace("live:")
///     .build();
/// let app = App::new().app_data(idempotency.clone());
/// ```
#[derive(Clone)]
pub struct Idempotency {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tenants: Tenants,
    pub(crate) namespace: String,
    pub(crate) conflict_status: StatusCode,
    pub(crate) replay_header: HeaderName,
    pub(crate) error_responder: Option<ErrorResponder>,
    pub(crate) replay_hook: Option<ReplayHook>,
    pub(crate) lease: Duration,
    pub(crate) wait_timeout: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) capture_timeout: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) fail_open: bool,
    pub(crate) flights: Flights,
    pub(crate) tracker: TaskTracker,
    pub(crate) counters: Counters,
}

/// Events worth alerting on, counted since the configuration was built.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) responses_not_stored: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) fenced_completions: AtomicU64,
}

/// A snapshot of [`Idempotency`]'s counters.
///
/// `#[non_exhaustive]`: counters may be added; read the fields, or compare with a default whose
/// fields were set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Responses sent but not stored because they exceeded the maximum size or capture time;
    /// their keys hold a tombstone.
    pub responses_not_stored: u64,
    /// Store calls that failed or timed out.
    pub store_errors: u64,
    /// Completions refused because another execution had taken the key over after this one's
    /// lease lapsed.
    pub fenced_completions: u64,
}

impl fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Idempotency")
            .field("namespace", &inner.namespace)
            .field("tenant_resolver", &inner.tenants.is_configured())
            .field("lease", &inner.lease)
            .field("wait_timeout", &inner.wait_timeout)
            .field("max_response_bytes", &inner.max_response_bytes)
            .field("fail_open", &inner.fail_open)
            .finish_non_exhaustive()
    }
}

impl Default for Idempotency {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl Idempotency {
    /// Starts a configuration with the defaults documented on each builder method.
    pub fn builder() -> IdempotencyBuilder {
        IdempotencyBuilder::default()
    }

    /// The process-wide default used by routes of apps that register no configuration.
    pub fn global() -> &'static Idempotency {
        static GLOBAL: OnceLock<Idempotency> = OnceLock::new();
        GLOBAL.get_or_init(Idempotency::default)
    }

    /// The configuration registered for this request's app (as `Idempotency` or
    /// `web::Data<Idempotency>`), or the process-wide default.
    pub fn for_request(req: &HttpRequest) -> &Idempotency {
        if let Some(config) = req.app_data::<Idempotency>() {
            return config;
        }
        match req.app_data::<web::Data<Idempotency>>() {
            Some(data) => data.get_ref(),
            None => Self::global(),
        }
    }

    /// The store this configuration uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let counters = &self.inner.counters;
        Stats {
            responses_not_stored: counters.responses_not_stored.load(Ordering::Relaxed),
            store_errors: counters.store_errors.load(Ordering::Relaxed),
            fenced_completions: counters.fenced_completions.load(Ordering::Relaxed),
        }
    }

    /// How many handlers are running to completion right now (including those whose client
    /// has gone).
    pub fn running(&self) -> usize {
        self.inner.tracker.len()
    }

    /// Waits until every handler started so far has finished and stored its result, or until
    /// `timeout`; returns `true` when all finished.
    ///
    /// Call it during graceful shutdown *before* stopping the server: actix drops the tasks of
    /// stopped workers, so a handler whose client already disconnected would otherwise be cut
    /// off and its result lost.
    ///
    /// ```no_run
    /// # async fn run(server: actix_web::dev::Server, idempotency: idempotent_runtime::Idempotency) {
    /// use std::time::Duration;
    ///
    /// let handle = server.handle();
    /// tokio::signal::ctrl_c().await.unwrap();
    /// handle.pause().await; // stop accepting connections
    /// idempotency.drain(Duration::from_secs(30)).await;
    /// handle.stop(true).await;
    /// # }
    /// ```
    pub async fn drain(&self, timeout: Duration) -> bool {
        let tracker = &self.inner.tracker;
        tracker.close();
        let finished = tokio::time::timeout(timeout, tracker.wait()).await.is_ok();
        tracker.reopen();
        finished
    }

    /// The answer for `error`, through the app's hook if it set one.
    pub fn error_response(&self, error: &IdempotencyError, req: &HttpRequest) -> HttpResponse {
        let status = match error {
            IdempotencyError::Conflict => self.inner.conflict_status,
            other => other.default_status(),
        };
        match &self.inner.error_responder {
            Some(responder) => with_retry_after(responder(error, status, req), error),
            None => error.problem_response(status),
        }
    }

    pub(crate) fn has_error_hook(&self) -> bool {
        self.inner.error_responder.is_some()
    }

    pub(crate) fn in_flight(&self) -> IdempotencyError {
        IdempotencyError::InFlight {
            retry_after: self.inner.retry_after,
        }
    }

    pub(crate) fn accepted(&self) -> IdempotencyError {
        IdempotencyError::Accepted {
            retry_after: self.inner.retry_after,
        }
    }

    pub(crate) fn store_unavailable(&self) -> IdempotencyError {
        IdempotencyError::StoreUnavailable {
            retry_after: self.inner.retry_after,
        }
    }
}

/// Whether this thread is one of actix-server's workers: what is built here was built inside
/// `HttpServer::new`'s factory, once per worker. Workers run on actix-rt arbiters (threads
/// named `actix-rt|system:N|arbiter:M`) under an actix system, or on threads named
/// `actix-server worker N` under a plain tokio runtime.
pub(crate) fn on_server_worker() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("actix-server worker") || name.contains("|arbiter:"))
}

/// Adds the `Retry-After` an answer calls for when an app's error hook left it out: clients
/// (and the `client` helper) rely on it to come back after an in-flight or store-down answer.
fn with_retry_after(mut response: HttpResponse, error: &IdempotencyError) -> HttpResponse {
    if let Some(after) = error.retry_after() {
        if !response.headers().contains_key(header::RETRY_AFTER) {
            let seconds = HeaderValue::from(after.as_secs().max(1));
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
    }
    response
}

/// Builds an [`Idempotency`]. Every setting has a default.
pub struct IdempotencyBuilder {
    store: Option<Arc<dyn Store>>,
    tenant: Option<TenantSource>,
    namespace: String,
    conflict_status: StatusCode,
    replay_header: HeaderName,
    error_responder: Option<ErrorResponder>,
    replay_hook: Option<ReplayHook>,
    lease: Duration,
    wait_timeout: Duration,
    retry_after: Duration,
    max_request_bytes: usize,
    max_response_bytes: usize,
    capture_timeout: Duration,
    store_timeout: Duration,
    fail_open: bool,
}

impl Default for IdempotencyBuilder {
    fn default() -> Self {
        Self {
            store: None,
            tenant: None,
            namespace: String::new(),
            conflict_status: StatusCode::CONFLICT,
            replay_header: HeaderName::from_static("idempotency-replayed"),
            error_responder: None,
            replay_hook: None,
            lease: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(1),
            max_request_bytes: 16 * 1024 * 1024,
            max_response_bytes: 1024 * 1024,
            capture_timeout: Duration::from_secs(30),
            store_timeout: Duration::from_secs(5),
            fail_open: false,
        }
    }
}

impl IdempotencyBuilder {
    /// The store (default: a [`MemoryStore`] of 64 MiB).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The store, already shared.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// How `scope = "tenant"` routes find the tenant. `None` (or an empty string) rejects the
    /// request with 400 `idempotency_tenant_missing`; it never falls back to global scope.
    /// Resolve from something the client cannot forge for another tenant (an authenticated
    /// identity), not from a bare header, in production.
    pub fn tenant<F>(mut self, resolver: F) -> Self
    where
        F: Fn(&HttpRequest) -> Option<String> + Send + Sync + 'static,
    {
        self.tenant = Some(TenantSource::custom(resolver));
        self
    }

    /// Tenant from a request header, e.g. one set by an authenticating gateway:
    /// `HeaderName::from_static("x-tenant-id")` (a constant, in lowercase), or
    /// `HeaderName::try_from(name)` for a name read from configuration.
    pub fn tenant_from_header(mut self, name: HeaderName) -> Self {
        self.tenant = Some(TenantSource::header(name));
        self
    }

    /// Tenant from a request extension that authentication middleware inserted.
    ///
    /// The authentication must run before the engine. With [`crate::IdempotentMiddleware`],
    /// wrap it *inside* the authentication: actix-web runs the last `.wrap()` first.
    ///
    /// ```
    /// use actix_web::{web, App};
    /// use idempotent_runtime::{Idempotency, IdempotentMiddleware};
    /// # #[derive(Clone)] struct User { org: String }
    /// # async fn handler() -> &'static str { "" }
    /// # fn authenticate() -> actix_web::middleware::Identity { actix_web::middleware::Identity::default() }
    ///
    /// let idempotency = Idempotency::builder().tenant_from_extension(|user: &User| user.org.clone()).build();
    /// let app = App::new().app_data(idempotency).service(
    ///     web::scope("/v1")
    ///         .wrap(IdempotentMiddleware::new()) // runs second: the user is known
    ///         .wrap(authenticate())              // runs first: inserts the `User` extension
    ///         .route("/orders", web::post().to(handler)),
    /// );
    /// ```
    pub fn tenant_from_extension<T, F>(mut self, tenant_of: F) -> Self
    where
        T: 'static,
        F: Fn(&T) -> String + Send + Sync + 'static,
    {
        self.tenant = Some(TenantSource::extension(tenant_of));
        self
    }

    /// A prefix for every record key, e.g. `"live:"` / `"test:"` to keep environments apart
    /// in one store (default: none).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Status of `idempotency_conflict` (default 409; the IETF draft suggests 422).
    pub fn conflict_status(mut self, status: StatusCode) -> Self {
        self.conflict_status = status;
        self
    }

    /// Header that marks a replayed response (default `Idempotency-Replayed: true`), e.g.
    /// `HeaderName::from_static("x-idempotency-replayed")`.
    pub fn replay_header(mut self, name: HeaderName) -> Self {
        self.replay_header = name;
        self
    }

    /// Answers the way Stripe's API does, so Stripe's own SDKs parse every answer and retry the
    /// ones worth retrying: errors in Stripe's envelope
    /// (`{"error": {"type", "code", "message"}}`), a reused key with another request as 400
    /// `idempotency_error`, a running duplicate as 409 with `Stripe-Should-Retry: true`, a store
    /// outage as 503 `api_error` with `Stripe-Should-Retry: true`, and replays marked
    /// `Idempotent-Replayed: true`. The mapping of every error is in [`crate::profile`].
    ///
    /// It sets [`conflict_status`](Self::conflict_status), [`replay_header`](Self::replay_header)
    /// and [`error_response`](Self::error_response); a later call to one of them overrides
    /// that part of the profile.
    ///
    /// ```
    /// use idempotent_runtime::Idempotency;
    ///
    /// let idempotency = Idempotency::builder().stripe_compatible().build();
    /// ```
    pub fn stripe_compatible(self) -> Self {
        crate::profile::stripe(self)
    }

    /// Replaces the RFC 9457 problem body with the app's own error envelope. The hook gets
    /// the error (its [`code`](IdempotencyError::code) is stable), the status the engine would
    /// use, and the request. When the answer calls for a `Retry-After` (in flight, accepted,
    /// store unavailable) and the hook's response has none, the engine adds it.
    pub fn error_response<F>(mut self, responder: F) -> Self
    where
        F: Fn(&IdempotencyError, StatusCode, &HttpRequest) -> HttpResponse + Send + Sync + 'static,
    {
        self.error_responder = Some(Arc::new(responder));
        self
    }

    /// Changes what a replay sends, e.g. to mark a duplicate in the body as well as in the
    /// replay header. The hook gets the stored response and the request being answered; it
    /// returns `None` to replay the stored response as it is, or the response to send instead
    /// (a clone of `stored` with another body keeps the status and headers). The replay
    /// header is added after the hook, whatever it returns.
    ///
    /// It runs on every replay and only there: a retry after completion, and a duplicate that
    /// waited for the running original in this process. It never runs on the first execution,
    /// and the record in the store keeps the original response. It runs on the request's own
    /// task, so it must be quick and must not panic; a panic drops that request's connection
    /// as a handler's would.
    ///
    /// ```
    /// use actix_web::http::header::HeaderName;
    /// use actix_web::{test, web, App, HttpResponse};
    /// use idempotent_runtime::{Idempotency, IdempotentMiddleware, StoredResponse};
    /// use serde_json::json;
    ///
    /// // A redelivered webhook event gets the first answer with `"duplicate": true` added.
    /// let idempotency = Idempotency::builder()
    ///     .on_replay(|stored: &StoredResponse, _req| {
    ///         let mut body: serde_json::Value = serde_json::from_slice(&stored.body).ok()?;
    ///         body["duplicate"] = json!(true);
    ///         let mut replay = stored.clone();
    ///         replay.body = body.to_string().into();
    ///         Some(replay)
    ///     })
    ///     .build();
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let receive = || async { HttpResponse::Ok().json(json!({ "received": true })) };
    /// let app = test::init_service(
    ///     App::new().app_data(idempotency).service(
    ///         web::resource("/webhooks")
    ///             .wrap(IdempotentMiddleware::new().header(HeaderName::from_static("x-event-id")))
    ///             .route(web::post().to(receive)),
    ///     ),
    /// )
    /// .await;
    /// let deliver = || test::TestRequest::post().uri("/webhooks").insert_header(("X-Event-ID", "evt_1"));
    ///
    /// let first = test::call_service(&app, deliver().to_request()).await;
    /// assert!(first.headers().get("idempotency-replayed").is_none());
    /// assert_eq!(test::read_body(first).await, r#"{"received":true}"#);
    ///
    /// let redelivery = test::call_service(&app, deliver().to_request()).await;
    /// assert_eq!(redelivery.status(), 200);
    /// assert_eq!(redelivery.headers().get("content-type").unwrap(), "application/json");
    /// assert_eq!(redelivery.headers().get("idempotency-replayed").unwrap(), "true");
    /// assert_eq!(test::read_body(redelivery).await, r#"{"duplicate":true,"received":true}"#);
    /// # });
    /// ```
    pub fn on_replay<F>(mut self, hook: F) -> Self
    where
        F: Fn(&StoredResponse, &HttpRequest) -> Option<StoredResponse> + Send + Sync + 'static,
    {
        self.replay_hook = Some(Arc::new(hook));
        self
    }

    /// How long a distributed claim lives without renewal (default 30 s). A running handler
    /// renews it every third of the lease; a crashed replica's key frees up after it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How long `in_flight = "wait"` duplicates wait for the first result before a 409
    /// (default 10 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// `Retry-After` on 409 in-flight, 202 accepted and 503 store-unavailable answers
    /// (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Largest request body the engine buffers to fingerprint (default 16 MiB); larger keyed
    /// requests get 413 `idempotency_body_too_large`. The handler's own extractor limits
    /// (`JsonConfig`, `PayloadConfig`) still apply on top.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Largest response stored for replay (default 1 MiB). A larger response is still sent;
    /// its key keeps a tombstone and retries get `idempotency_response_not_stored`.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Longest time spent collecting a streamed response for storage (default 30 s); a stream
    /// still running then is sent on and treated like an oversized response.
    pub fn capture_timeout(mut self, timeout: Duration) -> Self {
        self.capture_timeout = timeout;
        self
    }

    /// Bound on every store call (default 5 s); a call past it is a store error.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// When the store fails: `false` (default) answers 503 `idempotency_store_unavailable`;
    /// `true` runs the handler without protection.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// Finishes the configuration.
    ///
    /// Build it once, before `HttpServer::new`, and clone it into the app factory: the factory
    /// runs once per worker. A configuration built inside the factory logs a `WARN` event
    /// once; its default memory store is then shared by every worker (see [`MemoryStore`]),
    /// so duplicates still run once, but each worker keeps its own counters and
    /// [`Idempotency::drain`] sees only its own worker's handlers.
    pub fn build(self) -> Idempotency {
        if on_server_worker() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "Idempotency was built inside HttpServer::new's factory, which runs once per worker: \
                     build it once before HttpServer::new and clone it in (memory stores built there \
                     are shared by the workers, but drain() and stats() see one worker only)"
                );
            });
        }
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::default()));
        Idempotency {
            inner: Arc::new(Inner {
                store,
                tenants: Tenants::new(self.tenant),
                namespace: self.namespace,
                conflict_status: self.conflict_status,
                replay_header: self.replay_header,
                error_responder: self.error_responder,
                replay_hook: self.replay_hook,
                lease: self.lease,
                wait_timeout: self.wait_timeout,
                retry_after: self.retry_after,
                max_request_bytes: self.max_request_bytes,
                max_response_bytes: self.max_response_bytes,
                capture_timeout: self.capture_timeout,
                store_timeout: self.store_timeout,
                fail_open: self.fail_open,
                flights: Flights::default(),
                tracker: TaskTracker::new(),
                counters: Counters::default(),
            }),
        }
    }
}
