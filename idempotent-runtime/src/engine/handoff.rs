//! The middleware handing a request to an annotated handler down its service chain.
//!
//! The middleware claims first, then marks the request with a [`Handoff`]. An annotated
//! handler that finds the mark takes the request over: its attribute's options govern it.
//! Under the same record identity it adopts the claim (and completes it with its own
//! fingerprint, ttl and cache policy); under another (another scope, header or namespace) it
//! releases it and claims its own. The middleware then stores nothing, and its in-process
//! duplicates go down the chain themselves.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::{dev, HttpMessage, HttpRequest};

use super::{store_call, Handled, Run};
use crate::config::Idempotency;
use crate::key::Exposed;
use crate::route::{FingerprintMode, Route};
use crate::store::{FencingToken, RecordKey, Store};
use crate::transaction;

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

    pub(super) fn taken_over(&self) -> bool {
        self.taken_over.get().is_some()
    }
}

/// Set on a request the middleware passes on to the rest of the chain, with the middleware's
/// claim if it holds one.
pub(super) struct Handoff {
    pub(super) upstream: Rc<Upstream>,
    pub(super) claim: Option<HeldClaim>,
}

/// The middleware's claim of a request, handed to the annotated handler that takes it over.
pub(crate) struct HeldClaim {
    pub(super) store: Arc<dyn Store>,
    pub(super) key: RecordKey,
    pub(super) token: FencingToken,
    pub(super) first_attempt: bool,
}

impl HeldClaim {
    pub(super) fn covers(&self, key: &RecordKey, config: &Idempotency) -> bool {
        let same_store = std::ptr::addr_eq(Arc::as_ptr(&self.store), Arc::as_ptr(&config.inner.store));
        same_store && self.key == *key
    }

    /// Frees a claim the handler does not adopt.
    pub(super) async fn release(self, config: &Idempotency) {
        // A failure is counted and logged; the claim then lapses with its lease.
        let _ = store_call(config, "release", &self.key, self.store.release(&self.key, self.token)).await;
    }
}

impl Handoff {
    /// Marks the request as taken over by `route` and hands back the middleware's claim.
    pub(super) fn take_over(self, req: &HttpRequest, route: &Route) -> Option<HeldClaim> {
        self.upstream.taken_over.set(Some(route.options().fingerprint));
        // The middleware's view of the key and its transaction; the handler's engine offers its own.
        req.extensions_mut().remove::<Exposed>();
        transaction::withdraw(req);
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
pub(super) async fn run_upstream(
    req: HttpRequest,
    payload: dev::Payload,
    handoff: Option<Handoff>,
    run: Run,
) -> Handled {
    if let Some(handoff) = handoff {
        handoff.upstream.reached.set(true);
        req.extensions_mut().insert(handoff);
    }
    run(req, payload).await
}
