//! What happens to a keyed write: the one place that decides to run, replay, wait or refuse.
//!
//! 1. Reads (GET, HEAD, OPTIONS) and requests without a key run untouched (or get 400 when
//!    the route requires a key).
//! 2. The key is validated, the tenant resolved, the body buffered and fingerprinted.
//! 3. A completed record held in this process is replayed at once.
//! 4. Otherwise the request joins the in-process flight of its key (`flight.rs`):
//!    - the **leader** claims the key in the store, runs the handler (renewing its lease),
//!      captures the response, stores it (or releases the key) and publishes the outcome;
//!    - **followers** wait for that outcome (woken, not polling) or answer at once, per the
//!      route's `in_flight` policy.
//!
//! # Concurrent calls on the same key
//!
//! However many duplicates arrive at once, in one process or across replicas sharing a store,
//! the handler runs once; duplicates get its response as a replay (`Idempotency-Replayed:
//! true`). A duplicate with a different fingerprint gets `idempotency_conflict`.
//!
//! # Cancellation
//!
//! A keyed request whose client goes away (actix-web then drops its future) carries on in a
//! task of its own: a started execution runs to completion and stores its result even if
//! every client went away. Use [`crate::Idempotency::drain`] on graceful shutdown.
//!
//! # Panics
//!
//! A panicking handler releases its key: its own client gets a 500 `idempotency_handler_failed`
//! problem, every waiting duplicate gets the same, and a later retry runs again.

//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `prepare` | key, tenant, body and fingerprint of one request |
//! | `decide` | what a completed record or a running execution means for a request |
//! | `turn` | claiming a key in the store, and waiting for another replica's execution |
//! | `leader` | the one execution of a key in this process |
//! | `follower` | its in-process duplicates |
//! | `handoff` | the middleware handing a request to an annotated handler |

pub(crate) mod decide;
mod follower;
mod handoff;
mod leader;
mod prepare;
pub(crate) mod turn;

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use actix_web::http::Method;
use actix_web::{dev, web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::flight::Role;
use crate::observe::{self, Outcome};
use crate::record::Record;
use crate::replay;
use crate::route::Route;
use crate::store::{FencingToken, RecordKey, StoreError};

pub(crate) use handoff::{has_handoff, Upstream};
use handoff::{run_upstream, Handoff, HeldClaim};
use prepare::{Keyed, Prepared};

/// What the handler's side of a request produced: the handler's response, or the response of
/// one of its extractors that refused the request (the handler did not run, so whatever the
/// cache policy it is never stored and the corrected request may reuse the key).
pub enum Handled {
    /// The handler ran and answered this.
    Ran(HttpResponse),
    /// An extractor refused the request before the handler ran.
    Refused(HttpResponse),
}

impl Handled {
    fn into_response(self) -> HttpResponse {
        match self {
            Self::Ran(response) | Self::Refused(response) => response,
        }
    }
}

/// The handler's side of a request, type-erased: the engine is compiled once, not once per
/// handler.
pub(crate) type Run = Box<dyn FnOnce(HttpRequest, dev::Payload) -> LocalBoxFuture<'static, Handled>>;

/// Who runs the engine for a request.
pub(crate) enum Caller {
    /// An annotated handler, with its attribute's options.
    Handler(&'static Route),
    /// [`crate::IdempotentMiddleware`], which passes the request down the service chain, where
    /// an annotated handler may take it over.
    Middleware { route: Rc<Route>, upstream: Rc<Upstream> },
}

impl Caller {
    pub(crate) fn route(&self) -> &Route {
        match self {
            Self::Handler(route) => route,
            Self::Middleware { route, .. } => route,
        }
    }

    pub(crate) fn upstream(&self) -> Option<&Rc<Upstream>> {
        match self {
            Self::Handler(_) => None,
            Self::Middleware { upstream, .. } => Some(upstream),
        }
    }

    pub(crate) fn is_middleware(&self) -> bool {
        matches!(self, Self::Middleware { .. })
    }

    /// Whether an annotated handler down the middleware's chain took the request over.
    fn taken_over(&self) -> bool {
        self.upstream().is_some_and(|upstream| upstream.taken_over())
    }

    /// The mark that lets an annotated handler down the middleware's chain take the request over.
    fn handoff(&self) -> Option<Handoff> {
        let upstream = Rc::clone(self.upstream()?);
        Some(Handoff { upstream, claim: None })
    }

    /// The same mark, with the claim this execution holds (built only for the middleware).
    fn handoff_holding(&self, claim: impl FnOnce() -> HeldClaim) -> Option<Handoff> {
        let upstream = Rc::clone(self.upstream()?);
        Some(Handoff {
            upstream,
            claim: Some(claim()),
        })
    }
}

/// Runs one request to an annotated handler. Generated code calls this; `run` extracts the
/// handler's own arguments from the request and payload and calls the user's function.
pub async fn handle<F, Fut>(route: &'static Route, req: HttpRequest, payload: web::Payload, run: F) -> HttpResponse
where
    F: FnOnce(HttpRequest, dev::Payload) -> Fut + 'static,
    Fut: Future<Output = Handled> + 'static,
{
    let payload = payload.into_inner();
    let handoff = req.extensions_mut().remove::<Handoff>();
    let held = handoff.and_then(|handoff| handoff.take_over(&req, route));
    if is_read_only(req.method()) || !may_carry_key(route, &req) {
        if let Some(held) = held {
            held.release(Idempotency::for_request(&req)).await;
        }
        return run(req, payload).await.into_response();
    }
    let config = Idempotency::for_request(&req).clone();
    let run: Run = Box::new(move |req, payload| run(req, payload).boxed_local());
    protect(config, Caller::Handler(route), req, payload, run, held).await
}

/// Runs one write request through the engine with the caller's options. `run` is the handler,
/// or (for the middleware) the rest of the service chain, where an annotated handler may take
/// the request over. `held` is the middleware's claim of a request an annotated handler took
/// over.
pub(crate) fn protect(
    config: Idempotency,
    caller: Caller,
    req: HttpRequest,
    payload: dev::Payload,
    run: Run,
    held: Option<HeldClaim>,
) -> Shielded<HttpResponse> {
    let leading = Rc::new(Cell::new(false));
    let leads = Rc::clone(&leading);
    let future = async move {
        let name = caller.route().options().handler;
        let started = std::time::Instant::now();
        let span = observe::span(name);
        let prepared = observe::within(&span, prepare::prepare(&caller, &config, &req, payload)).await;
        // The middleware's claim is this request's own only under the same identity.
        let (adopted, foreign) = match (&prepared, held) {
            (Ok(Prepared::Keyed(keyed)), Some(held)) if held.covers(&keyed.id, &config) => (Some(held), None),
            (_, held) => (None, held),
        };
        if let Some(foreign) = foreign {
            Box::pin(foreign.release(&config)).await;
        }
        let answer = match prepared {
            Ok(Prepared::Keyed(keyed)) => {
                observe::within(&span, execute_once(config, caller, req, keyed, run, adopted, &leads)).await
            }
            Ok(Prepared::Unprotected(payload)) => {
                let handoff = caller.handoff();
                return run_upstream(req, payload, handoff, run).await.into_response();
            }
            Err(error) => Answer::refused(&config, &error, &req),
        };
        // A request an annotated handler took over was reported by that handler's engine.
        if let Some(outcome) = answer.outcome {
            observe::in_scope(&span, || observe::outcome(name, outcome, started.elapsed()));
        }
        answer.response
    };
    Shielded {
        future: Some(future.boxed_local()),
        leading,
    }
}

/// A request's future, polled by the request's own task, and moved into a task of its own if
/// the request is dropped (its client disconnected) while it leads an execution: a started
/// execution is never cancelled halfway, and the flight's duplicates get its outcome. A request
/// dropped before (while its body is read) or while it waits on a duplicate is dropped. Until
/// then it costs no task: no spawn, no join handle, no extra wake-up; the future is boxed
/// already, so moving it into a task moves a pointer.
pub(crate) struct Shielded<T: 'static> {
    future: Option<LocalBoxFuture<'static, T>>,
    /// Set once the request leads its flight.
    leading: Rc<Cell<bool>>,
}

impl<T: 'static> Future for Shielded<T> {
    type Output = T;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        let future = self
            .future
            .as_mut()
            .expect("a shielded future is not polled after it finished");
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        std::task::Poll::Ready(output)
    }
}

impl<T: 'static> Drop for Shielded<T> {
    fn drop(&mut self) {
        // While unwinding, a second panic would abort: the future is dropped instead (a claim
        // it holds lapses with its lease).
        let carry_on = self.leading.get() && !std::thread::panicking();
        if let Some(future) = self.future.take().filter(|_| carry_on) {
            // A runtime that shuts down drops the task at once.
            drop(actix_web::rt::spawn(future));
        }
    }
}

/// Replays a completed record held in this process, or runs the request as the leader or a
/// follower of its in-process flight.
async fn execute_once(
    config: Idempotency,
    caller: Caller,
    req: HttpRequest,
    keyed: Keyed,
    run: Run,
    adopted: Option<HeldClaim>,
    leading: &Cell<bool>,
) -> Answer {
    if adopted.is_none() {
        if let Some(record) = config.inner.store.cached(&keyed.id) {
            return Answer::of_record(&config, &req, &record, &keyed);
        }
    }
    match config
        .inner
        .flights
        .join(&keyed.id, keyed.fingerprint, caller.is_middleware())
    {
        // Boxed: a duplicate is rarer than a first execution, whose future would otherwise be
        // as large as a follower's.
        Role::Follower(flight) => {
            Box::pin(async move {
                if let Some(adopted) = adopted {
                    adopted.release(&config).await;
                }
                follower::follow(&config, &caller, req, keyed, &flight, run).await
            })
            .await
        }
        Role::Leader(guard) => {
            leading.set(true);
            leader::lead(config, caller, req, keyed, run, guard, adopted).await
        }
    }
}

/// The engine's answer to a keyed request, and what it did to produce it (`None`: an annotated
/// handler took the request over and reported it).
struct Answer {
    response: HttpResponse,
    outcome: Option<Outcome>,
}

impl Answer {
    fn new(response: HttpResponse, outcome: Outcome) -> Self {
        Self {
            response,
            outcome: Some(outcome),
        }
    }

    fn refused(config: &Idempotency, error: &IdempotencyError, req: &HttpRequest) -> Self {
        Self::new(config.error_response(error, req), Outcome::of_error(error))
    }

    /// The answer to a request whose key already completed: its replay, or a refusal.
    fn of_record(config: &Idempotency, req: &HttpRequest, record: &Record, keyed: &Keyed) -> Self {
        match decide::completed(record, keyed.is_same_request(record.fingerprint)) {
            Ok(stored) => Self::new(replay::replay(stored, config, req), Outcome::Replayed),
            Err(error) => Self::refused(config, &error, req),
        }
    }

    /// The answer of the handler when the middleware's request may have been taken over by an
    /// annotated handler, which then reported it.
    fn unless_taken_over(response: HttpResponse, outcome: Outcome, caller: &Caller) -> Self {
        Self {
            response,
            outcome: (!caller.taken_over()).then_some(outcome),
        }
    }

    /// A duplicate that had to wait reports [`Outcome::Waited`] instead of a plain replay.
    fn after_waiting(mut self) -> Self {
        if self.outcome == Some(Outcome::Replayed) {
            self.outcome = Some(Outcome::Waited);
        }
        self
    }
}

/// The buffered body as the handler's payload, in one allocation (`Payload::from(Bytes)` builds
/// an HTTP/1 payload channel around it, two).
pub(crate) fn buffered(body: bytes::Bytes) -> dev::Payload {
    if body.is_empty() {
        return dev::Payload::None;
    }
    let chunk: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(futures_util::stream::once(std::future::ready(Ok(body))));
    dev::Payload::Stream { payload: chunk }
}

pub(crate) fn is_read_only(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request may be keyed. `false` (no key header, on a route that neither requires
/// a key nor takes it from the body) lets an unkeyed write skip the configuration lookup.
pub(crate) fn may_carry_key(route: &Route, req: &HttpRequest) -> bool {
    let options = route.options();
    options.required || options.key_from.is_some() || req.headers().contains_key(route.header())
}

/// Frees the claim `token` holds on `key` so a retry runs again. A failure is counted and
/// logged; the claim then lapses with its lease.
pub(crate) async fn release(config: &Idempotency, key: &RecordKey, token: FencingToken) {
    let store = &config.inner.store;
    let now = store.release_now(key, token);
    let _ = store_answer(config, "release", key, now, || store.release(key, token)).await;
}

/// The store's answer: the one it gave at once (`now`, from [`crate::Store::claim_now`] and its
/// siblings), or else that of the `async` call `later` makes, bounded by the timeout (boxed:
/// the rarer path's future would otherwise size every execution's). Failures are counted and
/// logged either way.
pub(crate) async fn store_answer<T, F>(
    config: &Idempotency,
    operation: &'static str,
    key: &RecordKey,
    now: Option<Result<T, StoreError>>,
    later: impl FnOnce() -> F,
) -> Result<T, StoreError>
where
    F: Future<Output = Result<T, StoreError>>,
{
    match now {
        Some(result) => counted(config, operation, key, result),
        None => Box::pin(store_call(config, operation, key, later())).await,
    }
}

/// Bounds a store call by the configured timeout and counts and logs its failure.
pub(crate) async fn store_call<T>(
    config: &Idempotency,
    operation: &'static str,
    key: &RecordKey,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let timeout = config.inner.store_timeout;
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(timeout)),
    };
    counted(config, operation, key, result)
}

/// Counts and logs the failure of a store call.
fn counted<T>(
    config: &Idempotency,
    operation: &'static str,
    key: &RecordKey,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    if let Err(error) = &result {
        config.inner.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        observe::store_error(operation);
        tracing::warn!(%error, operation, ?key, "idempotency store call failed");
    }
    result
}
