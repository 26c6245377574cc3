//! What happens to a keyed write: the one place that decides to run, replay, wait or refuse.
//!
//! 1. Reads (GET, HEAD, OPTIONS) and requests without a key run untouched (or get 400 when
//!    the route requires a key).
//! 2. The key is validated, the tenant resolved, the body buffered and fingerprinted.
//! 3. A completed record held in this process is replayed at once.
//! 4. Otherwise the request joins the in-process flight of its key (`flight.rs`):
//!    - the **leader** runs in a task of its own, so a client that disconnects cannot cancel
//!      it: it claims the key in the store, runs the handler (renewing its lease), captures
//!      the response, stores it (or releases the key) and publishes the outcome;
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
//! Once the leader's task has started, it runs to completion and stores its result even if
//! every client went away. Use [`crate::Idempotency::drain`] on graceful shutdown.
//!
//! # Panics
//!
//! A panicking handler releases its key: its own client gets a 500 `idempotency_handler_failed`
//! problem, every waiting duplicate gets the same, and a later retry runs again.

use std::cell::Cell;
use std::future::Future;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::http::{header, Method};
use actix_web::{dev, web, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::fingerprint::Fingerprint;
use crate::flight::{Flight, LeaderGuard, Role, Shared, State};
use crate::key::{self, IdempotencyKey};
use crate::observe::{self, Outcome};
use crate::record::{Completion, Record};
use crate::replay::{self, Captured};
use crate::route::FingerprintMode;
use crate::route::{InFlight, OnMismatch, Route, Scope};
use crate::store::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};

/// Longest a waiter on another replica's execution sleeps between two looks at the store when
/// no notification arrives.
const FALLBACK_POLL: Duration = Duration::from_millis(200);

/// Runs one request to an annotated handler. Generated code calls this; `run` extracts the
/// handler's own arguments from the request and payload and calls the user's function.
pub async fn handle<F, Fut>(route: &'static Route, req: HttpRequest, payload: web::Payload, run: F) -> HttpResponse
where
    F: FnOnce(HttpRequest, dev::Payload) -> Fut + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let payload = payload.into_inner();
    let handoff = req.extensions_mut().remove::<Handoff>();
    let held = handoff.and_then(|handoff| handoff.take_over(&req, route));
    if is_read_only(req.method()) || !may_carry_key(route, &req) {
        if let Some(held) = held {
            held.release(Idempotency::for_request(&req)).await;
        }
        return run(req, payload).await;
    }
    let config = Idempotency::for_request(&req).clone();
    // Boxed, so the future of every request to the handler (keyed or not) stays the size of
    // the handler's own: actix allocates it per request.
    Box::pin(protect(config, route, req, payload, run, None, held)).await
}

/// Runs one write request through the engine with `route`'s options: the annotated handler's,
/// or the middleware's. `run` is the handler, or (with `upstream`, for the middleware) the rest
/// of the service chain, where an annotated handler may take the request over. `held` is the
/// middleware's claim of a request an annotated handler took over.
pub(crate) async fn protect<R, F, Fut>(
    config: Idempotency,
    route: R,
    req: HttpRequest,
    payload: dev::Payload,
    run: F,
    upstream: Option<Rc<Upstream>>,
    held: Option<HeldClaim>,
) -> HttpResponse
where
    R: Deref<Target = Route> + 'static,
    F: FnOnce(HttpRequest, dev::Payload) -> Fut + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let name = route.options().handler;
    let started = std::time::Instant::now();
    let span = observe::span(name);
    let prepared = prepare(&route, &config, &req, payload, upstream.as_deref())
        .instrument(span.clone())
        .await;
    // The middleware's claim is this request's own only under the same identity.
    let (adopted, foreign) = match (&prepared, held) {
        (Ok(Prepared::Keyed(keyed)), Some(held)) if held.covers(&keyed.id, &config) => (Some(held), None),
        (_, held) => (None, held),
    };
    if let Some(foreign) = foreign {
        foreign.release(&config).await;
    }
    let answer = match prepared {
        Ok(Prepared::Keyed(keyed)) => {
            execute_once(config, route, req, keyed, run, upstream, adopted)
                .instrument(span.clone())
                .await
        }
        Ok(Prepared::Unprotected(payload)) => {
            let handoff = upstream.map(|upstream| Handoff { upstream, claim: None });
            return run_upstream(req, payload, handoff, run).await;
        }
        Err(error) => Answer::refused(&config, &error, &req),
    };
    // A request an annotated handler took over was reported by that handler's engine.
    if let Some(outcome) = answer.outcome {
        span.in_scope(|| observe::outcome(name, outcome, started.elapsed()));
    }
    answer.response
}

/// What the middleware learns from one request it passed to the rest of the service chain:
/// whether an annotated handler took it over, and that handler's fingerprint mode.
pub(crate) struct Upstream {
    /// Records and claims fingerprinted in the other mode count as this request's own: an
    /// annotated handler with the other `fingerprint` mode may govern the route.
    pub(crate) alt: bool,
    pub(crate) reached: Cell<bool>,
    pub(crate) taken_over: Cell<Option<FingerprintMode>>,
}

impl Upstream {
    pub(crate) fn new(alt: bool) -> Self {
        Self {
            alt,
            reached: Cell::new(false),
            taken_over: Cell::new(None),
        }
    }

    fn taken_over(&self) -> bool {
        self.taken_over.get().is_some()
    }
}

/// Set on a request the middleware passes on to the rest of the chain, with the middleware's
/// claim if it holds one. An annotated handler that finds it takes the request over: its
/// attribute's options govern it. Under the same record identity it adopts the claim (and
/// completes it with its own fingerprint, ttl and cache policy); under another (another scope,
/// header or namespace) it releases it and claims its own. The middleware then stores nothing,
/// and its in-process duplicates go down the chain themselves.
struct Handoff {
    upstream: Rc<Upstream>,
    claim: Option<HeldClaim>,
}

/// The middleware's claim of a request, handed to the annotated handler that takes it over.
pub(crate) struct HeldClaim {
    store: Arc<dyn Store>,
    key: RecordKey,
    token: FencingToken,
    first_attempt: bool,
}

impl HeldClaim {
    fn covers(&self, key: &RecordKey, config: &Idempotency) -> bool {
        let same_store = std::ptr::addr_eq(Arc::as_ptr(&self.store), Arc::as_ptr(&config.inner.store));
        same_store && self.key == *key
    }

    /// Frees a claim the handler does not adopt; on failure it lapses with its lease.
    async fn release(self, config: &Idempotency) {
        // A failure is counted and logged; the claim then lapses with its lease.
        let _ = store_call(config, "release", &self.key, self.store.release(&self.key, self.token)).await;
    }
}

impl Handoff {
    /// Marks the request as taken over by `route` and hands back the middleware's claim.
    fn take_over(self, req: &HttpRequest, route: &Route) -> Option<HeldClaim> {
        self.upstream.taken_over.set(Some(route.options().fingerprint));
        // The middleware's view of the key; the handler's engine exposes its own.
        req.extensions_mut().remove::<IdempotencyKey>();
        tracing::debug!(
            handler = route.options().handler,
            "an #[idempotent] handler took over a request from IdempotentMiddleware: its attribute governs it"
        );
        self.claim
    }
}

pub(crate) fn has_handoff(req: &HttpRequest) -> bool {
    req.extensions().contains::<Handoff>()
}

/// Runs the handler; for the middleware, marks the request so that an annotated handler down
/// the chain can take it over.
async fn run_upstream<F, Fut>(req: HttpRequest, payload: dev::Payload, handoff: Option<Handoff>, run: F) -> HttpResponse
where
    F: FnOnce(HttpRequest, dev::Payload) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    if let Some(handoff) = handoff {
        handoff.upstream.reached.set(true);
        req.extensions_mut().insert(handoff);
    }
    run(req, payload).await
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

    /// A duplicate that had to wait reports [`Outcome::Waited`] instead of a plain replay.
    /// An answer the middleware reports only if no annotated handler took the request over (that
    /// handler's engine reported it).
    fn unless_taken_over(response: HttpResponse, outcome: Outcome, upstream: Option<&Upstream>) -> Self {
        let taken_over = upstream.is_some_and(Upstream::taken_over);
        Self {
            response,
            outcome: (!taken_over).then_some(outcome),
        }
    }

    fn after_waiting(mut self) -> Self {
        if self.outcome == Some(Outcome::Replayed) {
            self.outcome = Some(Outcome::Waited);
        }
        self
    }
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

/// Marks a response the handler did not produce (one of its extractors refused the request).
/// Nothing ran, so whatever the cache policy it is never stored: the corrected request may
/// reuse the key.
struct NotExecuted;

pub(crate) fn not_executed(mut response: HttpResponse) -> HttpResponse {
    response.extensions_mut().insert(NotExecuted);
    response
}

enum Prepared {
    /// No key: the handler runs as if unannotated (with the buffered body if it was read).
    Unprotected(dev::Payload),
    Keyed(Keyed),
}

/// A keyed request, ready to run once.
struct Keyed {
    id: RecordKey,
    fingerprint: Fingerprint,
    /// The fingerprint in the other mode, while the middleware probes a route an annotated
    /// handler may govern.
    alt: Option<Fingerprint>,
    body: Bytes,
    /// The key when it came from the body; a header key is read again for the extractor.
    key_from_body: Option<String>,
    tenant: Option<String>,
}

impl Keyed {
    /// Makes the key available to the handler's [`IdempotencyKey`] extractor.
    fn expose(&self, req: &HttpRequest, route: &Route, first_attempt: bool) {
        let key = match &self.key_from_body {
            Some(key) => key.clone(),
            None => match key::from_headers(req.headers(), route.header()) {
                Ok(Some(key)) => key.into_owned(),
                _ => return,
            },
        };
        req.extensions_mut()
            .insert(IdempotencyKey::new(key, self.tenant.clone(), first_attempt));
    }

    /// Whether a record or claim with `fingerprint` was made by this same request.
    fn is_same_request(&self, fingerprint: Fingerprint) -> bool {
        fingerprint == self.fingerprint || Some(fingerprint) == self.alt
    }
}

async fn prepare(
    route: &Route,
    config: &Idempotency,
    req: &HttpRequest,
    payload: dev::Payload,
    upstream: Option<&Upstream>,
) -> Result<Prepared, IdempotencyError> {
    let options = route.options();
    let header_key = key::from_headers(req.headers(), route.header()).map_err(IdempotencyError::KeyInvalid)?;
    let missing = || IdempotencyError::KeyMissing {
        header: options.header.clone(),
    };
    let (key, tenant, body, from_body) = match (header_key, options.key_from) {
        (Some(key), _) => {
            let tenant = tenant(route, config, req, upstream.is_some())?;
            let body = read_body(payload, req, config.inner.max_request_bytes).await?;
            (key, tenant, body, false)
        }
        (None, None) if options.required => return Err(missing()),
        (None, None) => return Ok(Prepared::Unprotected(payload)),
        (None, Some(pointer)) => {
            let body = read_body(payload, req, config.inner.max_request_bytes).await?;
            match key_from_body(&body, pointer)? {
                Some(key) => (key.into(), tenant(route, config, req, upstream.is_some())?, body, true),
                None if options.required => return Err(missing()),
                None => return Ok(Prepared::Unprotected(dev::Payload::from(body))),
            }
        }
    };
    let fingerprint_in = |mode| Fingerprint::of(req.method().as_str(), req.path(), req.query_string(), &body, mode);
    let fingerprint = fingerprint_in(options.fingerprint);
    let alt = upstream.is_some_and(|upstream| upstream.alt).then(|| {
        fingerprint_in(match options.fingerprint {
            FingerprintMode::Body => FingerprintMode::Json,
            FingerprintMode::Json => FingerprintMode::Body,
        })
    });
    let variant = (options.on_mismatch == OnMismatch::Execute).then_some(&fingerprint);
    let id = RecordKey::new(&config.inner.namespace, tenant.as_deref(), &key, variant);
    Ok(Prepared::Keyed(Keyed {
        id,
        fingerprint,
        alt,
        body,
        key_from_body: from_body.then(|| key.into_owned()),
        tenant,
    }))
}

fn tenant(
    route: &Route,
    config: &Idempotency,
    req: &HttpRequest,
    by_middleware: bool,
) -> Result<Option<String>, IdempotencyError> {
    match route.options().scope {
        Scope::Global => Ok(None),
        Scope::Tenant => match config.inner.tenants.of(req, by_middleware) {
            Ok(tenant) => Ok(Some(tenant)),
            Err(reason) => Err(IdempotencyError::TenantMissing { reason }),
        },
    }
}

/// The key at `pointer` in a JSON body: a string (validated like a header key) or a number.
fn key_from_body(body: &[u8], pointer: &str) -> Result<Option<String>, IdempotencyError> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    match json.pointer(pointer) {
        Some(serde_json::Value::String(text)) => key::parse(text.as_bytes())
            .map(|key| key.map(|k| k.into_owned()))
            .map_err(IdempotencyError::KeyInvalid),
        Some(serde_json::Value::Number(number)) => Ok(Some(number.to_string())),
        _ => Ok(None),
    }
}

/// Buffers the body up to `limit` bytes; a single-chunk body is kept without a copy.
async fn read_body(mut payload: dev::Payload, req: &HttpRequest, limit: usize) -> Result<Bytes, IdempotencyError> {
    let too_large = IdempotencyError::BodyTooLarge { limit };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large);
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| IdempotencyError::BodyUnreadable)?;
        let read = joined.as_ref().map_or(0, BytesMut::len) + first.as_ref().map_or(0, Bytes::len);
        if read + chunk.len() > limit {
            return Err(too_large);
        }
        match (&mut joined, first.take()) {
            (Some(buffer), _) => buffer.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(previous)) => {
                let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).max(previous.len() + chunk.len()));
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&chunk);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

async fn execute_once<R, F, Fut>(
    config: Idempotency,
    route: R,
    req: HttpRequest,
    keyed: Keyed,
    run: F,
    upstream: Option<Rc<Upstream>>,
    adopted: Option<HeldClaim>,
) -> Answer
where
    R: Deref<Target = Route> + 'static,
    F: FnOnce(HttpRequest, dev::Payload) -> Fut + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    if adopted.is_none() {
        if let Some(record) = config.inner.store.cached(&keyed.id) {
            return answer_with_record(&config, &req, &record, &keyed);
        }
    }
    match config
        .inner
        .flights
        .join(&keyed.id, keyed.fingerprint, upstream.is_some())
    {
        Role::Follower(flight) => {
            if let Some(adopted) = adopted {
                adopted.release(&config).await;
            }
            follow(&config, &route, req, keyed, &flight, run, upstream).await
        }
        Role::Leader(guard) => {
            let tracker = config.inner.tracker.clone();
            let leader = Leader {
                config: config.clone(),
                route,
                keyed,
                guard,
                upstream,
                adopted: adopted.map(|held| (held.token, held.first_attempt)),
            };
            // Spawned, so a client that disconnects (RST) cannot cancel a started execution.
            // The request moves into the task: a middleware's inner service must route it while
            // it is the only reference (actix-web panics otherwise).
            let task = tracker.track_future(leader.lead(req, run).in_current_span());
            match actix_web::rt::spawn(task).await {
                Ok(answer) => answer,
                // Only when the runtime shuts down under the task; the hook has no request here.
                Err(_) => {
                    let error = IdempotencyError::HandlerFailed;
                    Answer::new(error.problem_response(error.default_status()), Outcome::Released)
                }
            }
        }
    }
}

/// The answer to a request whose key already completed.
fn answer_with_record(config: &Idempotency, req: &HttpRequest, record: &Record, keyed: &Keyed) -> Answer {
    if !keyed.is_same_request(record.fingerprint) {
        return Answer::refused(config, &IdempotencyError::Conflict, req);
    }
    match &record.completion {
        Completion::Response(stored) => Answer::new(replay::replay(stored, config, req), Outcome::Replayed),
        Completion::Tombstone => Answer::refused(config, &IdempotencyError::ResponseNotStored, req),
    }
}

/// A duplicate of a request this process is already running.
async fn follow<F, Fut>(
    config: &Idempotency,
    route: &Route,
    req: HttpRequest,
    keyed: Keyed,
    flight: &Flight,
    run: F,
    upstream: Option<Rc<Upstream>>,
) -> Answer
where
    F: FnOnce(HttpRequest, dev::Payload) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let policy = route.options().in_flight;
    let deadline = Instant::now() + config.inner.wait_timeout;
    let mut state = flight.subscribe();
    let mut waited = false;
    loop {
        let current = state.borrow_and_update().clone();
        match (current, policy) {
            (State::Done(shared), _) => {
                let answer = answer_follower(config, route, req, keyed, shared, run, upstream).await;
                return if waited { answer.after_waiting() } else { answer };
            }
            (State::Running, InFlight::Reject) => return Answer::refused(config, &config.in_flight(), &req),
            (State::Running, InFlight::Accept) => return Answer::refused(config, &config.accepted(), &req),
            _ => {}
        }
        waited = true;
        match tokio::time::timeout_at(deadline, state.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Answer::refused(config, &IdempotencyError::HandlerFailed, &req),
            Err(_) => return Answer::refused(config, &config.in_flight(), &req),
        }
    }
}

async fn answer_follower<F, Fut>(
    config: &Idempotency,
    route: &Route,
    req: HttpRequest,
    keyed: Keyed,
    shared: Shared,
    run: F,
    upstream: Option<Rc<Upstream>>,
) -> Answer
where
    F: FnOnce(HttpRequest, dev::Payload) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let policy = route.options().in_flight;
    match shared {
        Shared::Record(record) => answer_with_record(config, &req, &record, &keyed),
        Shared::Response(stored) => Answer::new(replay::replay(&stored, config, &req), Outcome::Replayed),
        // An annotated handler took the leader's request over: this duplicate goes down the
        // chain too, where that handler's engine groups it by its own options.
        Shared::Delegated => match upstream {
            Some(upstream) => {
                let handoff = Some(Handoff { upstream, claim: None });
                let response = run_upstream(req, dev::Payload::from(keyed.body), handoff, run).await;
                Answer {
                    response,
                    outcome: None,
                }
            }
            None => Answer::refused(config, &config.in_flight(), &req),
        },
        Shared::Busy if policy == InFlight::Accept => Answer::refused(config, &config.accepted(), &req),
        Shared::Busy => Answer::refused(config, &config.in_flight(), &req),
        Shared::Failed(IdempotencyError::StoreUnavailable { .. }) if config.inner.fail_open => {
            keyed.expose(&req, route, true);
            let handoff = upstream.clone().map(|upstream| Handoff { upstream, claim: None });
            let response = run_upstream(req, dev::Payload::from(keyed.body), handoff, run).await;
            Answer::unless_taken_over(response, Outcome::StoreError, upstream.as_deref())
        }
        Shared::Failed(error) => Answer::refused(config, &error, &req),
    }
}

/// The one execution of a key in this process.
struct Leader<R> {
    config: Idempotency,
    route: R,
    keyed: Keyed,
    guard: LeaderGuard,
    upstream: Option<Rc<Upstream>>,
    /// The middleware's claim this execution adopted: it claims nothing of its own.
    adopted: Option<(FencingToken, bool)>,
}

enum RemoteWait {
    Completed(Arc<Record>),
    Released,
    TimedOut,
}

impl<R: Deref<Target = Route>> Leader<R> {
    async fn lead<F, Fut>(self, req: HttpRequest, run: F) -> Answer
    where
        F: FnOnce(HttpRequest, dev::Payload) -> Fut,
        Fut: Future<Output = HttpResponse>,
    {
        if let Some((token, first_attempt)) = self.adopted {
            return self.execute(token, first_attempt, req, run).await;
        }
        let inner = &self.config.inner;
        let deadline = Instant::now() + inner.wait_timeout;
        loop {
            let claim = self
                .store_call(
                    "claim",
                    inner.store.claim(&self.keyed.id, self.keyed.fingerprint, inner.lease),
                )
                .await;
            let held_elsewhere = match claim {
                Ok(Claim::Acquired(token)) => return self.execute(token, true, req, run).await,
                Ok(Claim::Reacquired(token)) => return self.execute(token, false, req, run).await,
                Ok(Claim::Completed(record)) => return self.finish_with_record(record, &req),
                Ok(Claim::InFlight { fingerprint }) => fingerprint,
                Err(_) => return self.store_failed(req, run).await,
            };
            if !self.keyed.is_same_request(held_elsewhere) {
                return self.refuse(
                    IdempotencyError::Conflict,
                    Shared::Failed(IdempotencyError::Conflict),
                    &req,
                );
            }
            let (in_flight, accepted) = (self.config.in_flight(), self.config.accepted());
            match self.route.options().in_flight {
                InFlight::Reject => return self.refuse(in_flight, Shared::Busy, &req),
                InFlight::Accept => return self.refuse(accepted, Shared::Busy, &req),
                InFlight::Wait => {}
            }
            match self.wait_elsewhere(deadline).await {
                Ok(RemoteWait::Completed(record)) => return self.finish_with_record(record, &req).after_waiting(),
                Ok(RemoteWait::Released) => continue,
                Ok(RemoteWait::TimedOut) => return self.refuse(in_flight, Shared::Busy, &req),
                Err(_) => return self.store_failed(req, run).await,
            }
        }
    }

    fn finish_with_record(self, record: Arc<Record>, req: &HttpRequest) -> Answer {
        let answer = answer_with_record(&self.config, req, &record, &self.keyed);
        self.guard.publish(Shared::Record(record));
        answer
    }

    fn refuse(self, error: IdempotencyError, shared: Shared, req: &HttpRequest) -> Answer {
        self.guard.publish(shared);
        Answer::refused(&self.config, &error, req)
    }

    /// Waits for the execution that holds the key on another replica.
    async fn wait_elsewhere(&self, deadline: Instant) -> Result<RemoteWait, StoreError> {
        let store = &self.config.inner.store;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(RemoteWait::TimedOut);
            }
            self.store_call("wait", store.wait_for_change(&self.keyed.id, left.min(FALLBACK_POLL)))
                .await?;
            match self.store_call("lookup", store.lookup(&self.keyed.id)).await? {
                Lookup::Completed(record) => return Ok(RemoteWait::Completed(record)),
                Lookup::Absent => return Ok(RemoteWait::Released),
                Lookup::InFlight { .. } => {}
            }
        }
    }

    async fn store_failed<F, Fut>(self, req: HttpRequest, run: F) -> Answer
    where
        F: FnOnce(HttpRequest, dev::Payload) -> Fut,
        Fut: Future<Output = HttpResponse>,
    {
        let error = self.config.store_unavailable();
        let handoff = self.handoff(None, true);
        self.guard.publish(Shared::Failed(error.clone()));
        if self.config.inner.fail_open {
            tracing::warn!(
                handler = self.route.options().handler,
                "idempotency store unavailable: running unprotected (fail open)"
            );
            self.keyed.expose(&req, &self.route, true);
            let response = run_upstream(req, dev::Payload::from(self.keyed.body), handoff, run).await;
            return Answer::unless_taken_over(response, Outcome::StoreError, self.upstream.as_deref());
        }
        Answer::refused(&self.config, &error, &req)
    }

    /// The mark that lets an annotated handler down the middleware's chain take over.
    fn handoff(&self, token: Option<FencingToken>, first_attempt: bool) -> Option<Handoff> {
        let upstream = Rc::clone(self.upstream.as_ref()?);
        let claim = token.map(|token| HeldClaim {
            store: Arc::clone(&self.config.inner.store),
            key: self.keyed.id.clone(),
            token,
            first_attempt,
        });
        Some(Handoff { upstream, claim })
    }

    fn taken_over(&self) -> bool {
        self.upstream.as_deref().is_some_and(Upstream::taken_over)
    }

    /// The answer of an annotated handler that took the request over: its engine stored (or
    /// released) the record under its own options, and reported it. This execution's
    /// duplicates are not necessarily that handler's (another tenant, another fingerprint
    /// mode): each goes down the chain itself.
    fn delegated(self, response: HttpResponse) -> Answer {
        self.guard.publish(Shared::Delegated);
        Answer {
            response,
            outcome: None,
        }
    }

    async fn execute<F, Fut>(self, token: FencingToken, first_attempt: bool, req: HttpRequest, run: F) -> Answer
    where
        F: FnOnce(HttpRequest, dev::Payload) -> Fut,
        Fut: Future<Output = HttpResponse>,
    {
        self.guard.running();
        self.keyed.expose(&req, &self.route, first_attempt);
        // The app's hook needs the request, which moves into the handler (a middleware's inner
        // service routes it, which it may only do as its sole owner) and goes down with it if it
        // panics: with a hook, the answer to a panic is rendered now.
        let on_panic = self
            .config
            .has_error_hook()
            .then(|| self.config.error_response(&IdempotencyError::HandlerFailed, &req));
        let handoff = self.handoff(Some(token), first_attempt);
        let handler = AssertUnwindSafe(run_upstream(
            req,
            dev::Payload::from(self.keyed.body.clone()),
            handoff,
            run,
        ))
        .catch_unwind();
        let Ok(response) = self.with_lease(token, handler).await else {
            tracing::error!(
                handler = self.route.options().handler,
                "handler panicked: key released, a retry will run again"
            );
            self.release(token).await;
            self.guard.publish(Shared::Failed(IdempotencyError::HandlerFailed));
            let error = IdempotencyError::HandlerFailed;
            let response = on_panic.unwrap_or_else(|| error.problem_response(error.default_status()));
            return Answer::new(response, Outcome::Released);
        };
        if self.taken_over() {
            return self.delegated(response);
        }
        let inner = &self.config.inner;
        let executed = response.extensions().get::<NotExecuted>().is_none();
        let storable = executed && self.route.options().cache.stores(response.status().as_u16());
        match replay::capture(response, inner.max_response_bytes, inner.capture_timeout).await {
            Captured::Complete { head, body } => {
                let body = if storable { replay::compact(body) } else { body };
                let stored = replay::to_stored(&head, body.clone());
                let (shared, outcome) = if storable {
                    let record = Record {
                        fingerprint: self.keyed.fingerprint,
                        completion: Completion::Response(stored),
                    };
                    self.complete(token, Arc::new(record)).await
                } else {
                    self.release(token).await;
                    (Shared::Response(Arc::new(stored)), Outcome::Released)
                };
                self.guard.publish(shared);
                Answer::new(head.set_body(BoxBody::new(body)), outcome)
            }
            Captured::Partial { head, body, failed } => {
                let (shared, outcome) = if storable && !failed {
                    let route = self.route.options().handler;
                    inner.counters.responses_not_stored.fetch_add(1, Ordering::Relaxed);
                    observe::response_not_stored(route);
                    tracing::warn!(
                        handler = route,
                        limit = inner.max_response_bytes,
                        "response too large or too slow to store: the key keeps a tombstone"
                    );
                    let tombstone = Record {
                        fingerprint: self.keyed.fingerprint,
                        completion: Completion::Tombstone,
                    };
                    self.complete(token, Arc::new(tombstone)).await
                } else {
                    self.release(token).await;
                    (Shared::Busy, Outcome::Released)
                };
                self.guard.publish(shared);
                Answer::new(head.set_body(body), outcome)
            }
        }
    }

    /// Stores the record; what followers get, and the outcome ([`Outcome::StoreError`] when
    /// the write failed and the key was released).
    async fn complete(&self, token: FencingToken, record: Arc<Record>) -> (Shared, Outcome) {
        let inner = &self.config.inner;
        let ttl = self.route.options().ttl;
        match self
            .store_call(
                "complete",
                inner.store.complete(&self.keyed.id, token, Arc::clone(&record), ttl),
            )
            .await
        {
            Ok(true) => (Shared::Record(record), Outcome::Executed),
            Ok(false) => {
                inner.counters.fenced_completions.fetch_add(1, Ordering::Relaxed);
                observe::fenced_completion(self.route.options().handler);
                tracing::warn!(key = ?self.keyed.id, "lease lapsed and another execution took the key over: this result was not stored");
                (Shared::Record(record), Outcome::Executed)
            }
            Err(_) => {
                self.release(token).await;
                let shared = match &record.completion {
                    Completion::Response(stored) => Shared::Response(Arc::new(stored.clone())),
                    Completion::Tombstone => Shared::Busy,
                };
                (shared, Outcome::StoreError)
            }
        }
    }

    async fn release(&self, token: FencingToken) {
        let _ = self
            .store_call("release", self.config.inner.store.release(&self.keyed.id, token))
            .await;
    }

    /// Runs `future` while renewing the claim every third of the lease.
    async fn with_lease<T>(&self, token: FencingToken, future: impl Future<Output = T>) -> T {
        let inner = &self.config.inner;
        let period = inner.lease / 3;
        let mut future = pin!(future);
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tokio::select! {
                biased;
                output = &mut future => return output,
                _ = ticker.tick(), if !self.taken_over() => {
                    if let Ok(false) = self.store_call("renew", inner.store.renew(&self.keyed.id, token, inner.lease)).await {
                        tracing::warn!(key = ?self.keyed.id, "lease lost while the handler runs");
                    }
                }
            }
        }
    }

    /// Bounds a store call by the configured timeout and counts failures.
    async fn store_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        store_call(&self.config, operation, &self.keyed.id, call).await
    }
}

/// Bounds a store call by the configured timeout and counts and logs its failure.
async fn store_call<T>(
    config: &Idempotency,
    operation: &'static str,
    key: &RecordKey,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let inner = &config.inner;
    let result = match tokio::time::timeout(inner.store_timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(inner.store_timeout)),
    };
    if let Err(error) = &result {
        inner.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        observe::store_error(operation);
        tracing::warn!(%error, operation, ?key, "idempotency store call failed");
    }
    result
}
