//! The engine as an actix-web middleware: every write route of an `App` or a `Scope`, without
//! annotating each handler.
//!
//! ```
//! use actix_web::{web, App, HttpResponse};
//! use idempotent_runtime::{IdempotentMiddleware, Scope};
//!
//! async fn create_identity() -> HttpResponse {
//!     HttpResponse::Created().body("created")
//! }
//!
//! let app = App::new().service(
//!     web::scope("/v1")
//!         // POST, PUT, PATCH and DELETE of this scope replay on a repeated Idempotency-Key.
//!         .wrap(IdempotentMiddleware::new().ttl(std::time::Duration::from_secs(24 * 3600)))
//!         .route("/identities", web::post().to(create_identity)),
//! );
//! ```
//!
//! It takes the same options as `#[idempotent(...)]` (the defaults are the attribute's), runs
//! the same engine with the same guarantees (one execution per key across concurrent
//! duplicates and replicas, byte-for-byte replay, handler shielded from disconnects), and reads
//! the app's [`Idempotency`] configuration the same way.
//!
//! # With `#[idempotent]` handlers inside
//!
//! The attribute wins for the requests the middleware takes: a request that reaches an
//! annotated handler is executed and stored under that handler's attribute (its scope,
//! fingerprint, cache policy, ttl), once. actix-web routes a request only after its middleware
//! ran, so the middleware claims the key first, then passes the request on with a mark; an
//! annotated handler that finds the mark takes the request over:
//!
//! - under the same record identity (same namespace, scope and key), it adopts the
//!   middleware's claim and completes it with its own fingerprint, ttl and cache policy: no
//!   extra store call;
//! - under another identity (a tenant-scoped handler behind a global middleware), it frees the
//!   middleware's claim and runs the engine on its own;
//! - the middleware then stores nothing, and its in-process duplicates of that request go down
//!   the chain themselves, where the handler's engine groups them by its own options.
//!
//! A handler without the attribute is protected by the middleware's claim and options. Since
//! the middleware does not know in advance which handler a request reaches, it treats a
//! stored record fingerprinted in the other mode (`"body"` or `"json"`) as the request's own
//! until this worker has seen the route (method and resource pattern) run with the
//! middleware's mode, so a retry of a record an annotated handler stored is a replay, never a
//! conflict. Replays found by the middleware are answered (and reported) by the middleware.
//!
//! What the middleware refuses before any handler runs stays refused: with
//! [`required`](IdempotentMiddleware::required), a request without its key; a key it finds
//! invalid; a tenant it cannot resolve under [`Scope::Tenant`]. A request without the
//! middleware's key passes through untouched, so an annotated handler reading another header
//! (`X-Event-ID`) protects it. [`except`](IdempotentMiddleware::except) leaves a path to its
//! handlers without the middleware looking at it at all.
//!
//! Responses of the inner service are stored under the cache policy like a handler's. As with
//! the attribute, the errors of actix-web's extractors (`web::Json`, `web::Path`, `web::Query`,
//! `web::Form`, the payload and header extractors) are never stored, whatever the policy: the
//! handler did not run. (A handler that returns one of these error types itself, with a 4xx
//! status, is treated the same way.) The errors of your own extractors, and of the
//! payload extractors (`web::Bytes`, `String`), are responses like any other.
//!
//! # Panics
//!
//! [`key_from`](IdempotentMiddleware::key_from) panics on a pointer that does not start with
//! `/`: a constant of the app, caught on its first start.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::header::HeaderName;
use actix_web::http::Method;
use actix_web::{Error, HttpResponse};
use futures_util::future::LocalBoxFuture;

use crate::config::Idempotency;
use crate::engine::{self, Caller, Handled, Upstream};
use crate::route::{CachePolicy, FingerprintMode, InFlight, OnMismatch, Route, RouteOptions, Scope};

/// Applies the idempotency engine to every write route of the `App` or `Scope` it wraps.
///
/// Built like the attribute: `IdempotentMiddleware::new()` has `#[idempotent]`'s defaults
/// (24 h, global scope, `Idempotency-Key`, optional key, wait for a running duplicate, 409 on
/// a reused key, store 2xx, fingerprint the raw body) and protects `POST`, `PUT`, `PATCH` and
/// `DELETE`. See the [module documentation](self) for how it composes with annotated handlers.
#[derive(Debug, Clone)]
pub struct IdempotentMiddleware {
    options: RouteOptions,
    methods: Vec<Method>,
    except: Vec<String>,
    config: Option<Idempotency>,
}

impl Default for IdempotentMiddleware {
    fn default() -> Self {
        Self::new()
    }
}

impl IdempotentMiddleware {
    /// The attribute's defaults, on `POST`, `PUT`, `PATCH` and `DELETE`.
    pub fn new() -> Self {
        Self {
            options: RouteOptions::new("middleware"),
            methods: vec![Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
            except: Vec::new(),
            config: None,
        }
    }

    /// The methods it protects (default `POST`, `PUT`, `PATCH`, `DELETE`). `GET`, `HEAD` and
    /// `OPTIONS` are never protected, even if listed.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Leaves requests under `path` (the path itself, or anything below `path/`) to the
    /// handlers: an annotated handler there keeps its own options. May be called repeatedly.
    pub fn except(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.except.push(path.trim_end_matches('/').to_owned());
        self
    }

    /// The `route` label of its metrics and logs (default `"middleware"`).
    pub fn name(mut self, name: &'static str) -> Self {
        self.options.handler = name;
        self
    }

    /// How long a completed response is replayed (the attribute's `ttl`, default 24 h).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// Key namespace (the attribute's `scope`, default [`Scope::Global`]).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.options.scope = scope;
        self
    }

    /// The header the key is read from (the attribute's `header`, default `Idempotency-Key`).
    ///
    /// A name is checked where it is made: `HeaderName::from_static("x-idempotency-key")` (in
    /// lowercase) for a constant, `HeaderName::try_from(name)` (any case, with an error to
    /// handle) for a name read from configuration.
    pub fn header(mut self, name: HeaderName) -> Self {
        self.options.header = name;
        self
    }

    /// Whether a write without a key is refused with 400 `idempotency_key_missing` (the
    /// attribute's `required`, default `false`).
    pub fn required(mut self, required: bool) -> Self {
        self.options.required = required;
        self
    }

    /// What a duplicate of a running request gets (the attribute's `in_flight`).
    pub fn in_flight(mut self, policy: InFlight) -> Self {
        self.options.in_flight = policy;
        self
    }

    /// What a reused key with another request gets (the attribute's `on_mismatch`).
    pub fn on_mismatch(mut self, policy: OnMismatch) -> Self {
        self.options.on_mismatch = policy;
        self
    }

    /// Which outcomes are stored (the attribute's `cache`).
    pub fn cache(mut self, policy: CachePolicy) -> Self {
        self.options.cache = policy;
        self
    }

    /// How the body enters the fingerprint (the attribute's `fingerprint`).
    pub fn fingerprint(mut self, mode: FingerprintMode) -> Self {
        self.options.fingerprint = mode;
        self
    }

    /// A JSON Pointer to a body field that supplies the key when the header is absent (the
    /// attribute's `key_from`): the body of every protected request is then read.
    ///
    /// # Panics
    ///
    /// If `pointer` does not start with `/`.
    pub fn key_from(mut self, pointer: &'static str) -> Self {
        assert!(
            pointer.starts_with('/'),
            "`{pointer}` is not a JSON Pointer: it must start with `/`"
        );
        self.options.key_from = Some(pointer);
        self
    }

    /// Uses `config` instead of the one registered with `App::app_data` (or the process-wide
    /// default).
    ///
    /// Without it, a middleware wrapping a scope finds an `Idempotency` registered with that
    /// scope's `app_data` first, then the app's.
    pub fn config(mut self, config: Idempotency) -> Self {
        self.config = Some(config);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for IdempotentMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = IdempotentService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let methods = self
            .methods
            .iter()
            .filter(|method| !engine::is_read_only(method))
            .cloned()
            .collect();
        ready(Ok(IdempotentService {
            service: Rc::new(service),
            shared: Rc::new(Shared {
                route: Rc::new(Route::new(self.options.clone())),
                methods,
                except: self.except.clone(),
                config: self.config.clone(),
                governors: RefCell::default(),
            }),
        }))
    }
}

/// What every request of one worker's service shares.
struct Shared {
    route: Rc<Route>,
    methods: Vec<Method>,
    except: Vec<String>,
    config: Option<Idempotency>,
    /// The fingerprint mode of the handler behind each route (method and resource pattern)
    /// this worker has seen executed: the attribute's, or the middleware's own.
    governors: RefCell<HashMap<RouteId, FingerprintMode>>,
}

/// A route as the app's resource map knows it before routing: method and pattern.
type RouteId = (Method, String);

impl Shared {
    fn takes(&self, req: &ServiceRequest) -> bool {
        self.methods.contains(req.method())
            && !self.excepts(req.path())
            && engine::may_carry_key(&self.route, req.request())
            && !engine::has_handoff(req.request())
    }

    /// The route the request will reach, and whether records of it may carry a fingerprint in
    /// the other mode: unless this worker saw the route run with the middleware's own mode.
    /// What is learnt only saves that second fingerprint; it never skips the middleware's
    /// claim (two routes of one pattern may differ by a guard).
    fn route_of(&self, req: &ServiceRequest) -> (Option<RouteId>, bool) {
        let Some(pattern) = req.request().match_pattern() else {
            // No resource matches (a default service): no annotated handler behind it.
            return (None, false);
        };
        let route = (req.method().clone(), pattern);
        let learnt = self.governors.borrow().get(&route).copied();
        let alt = learnt != Some(self.route.options().fingerprint);
        (Some(route), alt)
    }

    fn learn(&self, route: Option<RouteId>, upstream: &Upstream) {
        if let (Some(route), true) = (route, upstream.reached.get()) {
            let mode = upstream.taken_over.get().unwrap_or(self.route.options().fingerprint);
            self.governors.borrow_mut().insert(route, mode);
        }
    }

    fn excepts(&self, path: &str) -> bool {
        self.except.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// Whether actix-web answered with one of its extractors' errors (a body, path, query or form
/// the handler's arguments refused): the handler did not run, so, as with `#[idempotent]`,
/// the answer is never stored and the corrected request may reuse the key.
fn refused_by_an_extractor(response: &HttpResponse) -> bool {
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
    let Some(error) = response.error().filter(|_| response.status().is_client_error()) else {
        return false;
    };
    error.as_error::<JsonPayloadError>().is_some()
        || error.as_error::<PathError>().is_some()
        || error.as_error::<QueryPayloadError>().is_some()
        || error.as_error::<UrlencodedError>().is_some()
}

/// The service [`IdempotentMiddleware`] wraps around an `App` or `Scope`.
pub struct IdempotentService<S> {
    service: Rc<S>,
    shared: Rc<Shared>,
}

impl<S, B> Service<ServiceRequest> for IdempotentService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if !self.shared.takes(&req) {
            let passed = self.service.call(req);
            return Box::pin(async move { passed.await.map(ServiceResponse::map_into_left_body) });
        }
        let (route, alt) = self.shared.route_of(&req);
        let upstream = Rc::new(Upstream::new(alt));
        let (request, payload) = req.into_parts();
        let config = match &self.shared.config {
            Some(config) => config.clone(),
            None => Idempotency::for_request(&request).clone(),
        };
        // The request the answer is sent with. actix-web routes a request only while nothing
        // else holds it, so the handler's turn takes this copy away before the inner service
        // routes the engine's, and keeps the routed request it gets back.
        let kept = Rc::new(RefCell::new(Some(request.clone())));
        let run = {
            let (service, kept) = (Rc::clone(&self.service), Rc::clone(&kept));
            move |request, payload| -> LocalBoxFuture<'static, Handled> {
                drop(kept.borrow_mut().take());
                let inner = service.call(ServiceRequest::from_parts(request, payload));
                Box::pin(async move {
                    match inner.await {
                        Ok(response) => {
                            let (request, response) = response.into_parts();
                            *kept.borrow_mut() = Some(request);
                            let response = response.map_into_boxed_body();
                            match refused_by_an_extractor(&response) {
                                true => Handled::Refused(response),
                                false => Handled::Ran(response),
                            }
                        }
                        Err(error) => Handled::Ran(HttpResponse::from_error(error)),
                    }
                })
            }
        };
        let shared = Rc::clone(&self.shared);
        let caller = Caller::Middleware {
            route: Rc::clone(&shared.route),
            upstream: Rc::clone(&upstream),
        };
        let response = engine::protect(config, caller, request, payload, Box::new(run), None);
        Box::pin(async move {
            let response = response.await;
            shared.learn(route, &upstream);
            let kept = kept.borrow_mut().take();
            match kept {
                Some(request) => Ok(ServiceResponse::new(request, response).map_into_right_body()),
                // The inner service failed or the handler panicked with the request: the answer
                // is complete, only the request to send it with is gone.
                None => Err(InternalError::from_response("idempotency", response).into()),
            }
        })
    }
}
