//! Claiming a key in the store, and waiting for an execution on another replica: the part of
//! the protocol that knows nothing of HTTP, shared by requests and [`crate::work`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::decide::{self, Running};
use super::{store_answer, store_call};
use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::fingerprint::Fingerprint;
use crate::record::Record;
use crate::route::InFlight;
use crate::store::{Claim, FencingToken, Lookup, RecordKey, StoreError};

/// Longest a waiter on another replica's execution sleeps between two looks at the store when
/// no notification arrives.
const FALLBACK_POLL: Duration = Duration::from_millis(200);

/// The outcome of asking the store for a key.
pub(crate) enum Turn {
    /// This execution holds the key; `first_attempt` is `false` when an earlier execution of it
    /// started and did not complete.
    Run { token: FencingToken, first_attempt: bool },
    /// The key completed (`waited`: after waiting for an execution on another replica).
    Completed { record: Arc<Record>, waited: bool },
    /// The key is held by another request (a mismatch), or by this request elsewhere and this
    /// one waits no more.
    Refused(IdempotencyError),
    /// The store failed (counted and logged).
    StoreFailed,
}

/// One request's claim of a key.
pub(crate) struct Claimant<'a> {
    pub(crate) config: &'a Idempotency,
    pub(crate) key: &'a RecordKey,
    pub(crate) fingerprint: Fingerprint,
    /// The fingerprint in the other mode that also counts as this request (see the middleware).
    pub(crate) alt: Option<Fingerprint>,
    pub(crate) policy: InFlight,
}

enum RemoteWait {
    Completed(Arc<Record>),
    Released,
    TimedOut,
}

impl Claimant<'_> {
    fn is_same_request(&self, fingerprint: Fingerprint) -> bool {
        fingerprint == self.fingerprint || Some(fingerprint) == self.alt
    }

    /// Claims the key; while another execution of the same request holds it and the policy
    /// waits, waits for it (woken by the store's notifications) and claims again if it is
    /// released, until the configured wait timeout.
    pub(crate) async fn take_turn(&self) -> Turn {
        let inner = &self.config.inner;
        let deadline = Instant::now() + inner.wait_timeout;
        loop {
            let now = inner.store.claim_now(self.key, self.fingerprint, inner.lease);
            let later = || inner.store.claim(self.key, self.fingerprint, inner.lease);
            let claim = store_answer(self.config, "claim", self.key, now, later).await;
            let held_elsewhere = match claim {
                Ok(Claim::Acquired(token)) => {
                    return Turn::Run {
                        token,
                        first_attempt: true,
                    }
                }
                Ok(Claim::Reacquired(token)) => {
                    return Turn::Run {
                        token,
                        first_attempt: false,
                    }
                }
                Ok(Claim::Completed(record)) => return Turn::Completed { record, waited: false },
                Ok(Claim::InFlight { fingerprint }) => fingerprint,
                Err(_) => return Turn::StoreFailed,
            };
            if let Running::Refuse(error) =
                decide::running(self.config, self.is_same_request(held_elsewhere), self.policy)
            {
                return Turn::Refused(error);
            }
            match Box::pin(self.wait_elsewhere(deadline)).await {
                Ok(RemoteWait::Completed(record)) => return Turn::Completed { record, waited: true },
                Ok(RemoteWait::Released) => continue,
                Ok(RemoteWait::TimedOut) => return Turn::Refused(self.config.in_flight()),
                Err(_) => return Turn::StoreFailed,
            }
        }
    }

    /// Waits for the execution that holds the key on another replica.
    async fn wait_elsewhere(&self, deadline: Instant) -> Result<RemoteWait, StoreError> {
        let store = &self.config.inner.store;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(RemoteWait::TimedOut);
            }
            self.store_call("wait", store.wait_for_change(self.key, left.min(FALLBACK_POLL)))
                .await?;
            match self.store_call("lookup", store.lookup(self.key)).await? {
                Lookup::Completed(record) => return Ok(RemoteWait::Completed(record)),
                Lookup::Absent => return Ok(RemoteWait::Released),
                Lookup::InFlight { .. } => {}
            }
        }
    }

    async fn store_call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        store_call(self.config, operation, self.key, call).await
    }
}

/// Runs `future` (pinned by the caller) while renewing the claim every third of the lease;
/// `paused` stops renewing (a request an annotated handler took over renews its own claim).
///
/// An `async` block rather than an `async fn`, which would keep each argument twice in the
/// future of every execution.
#[allow(clippy::manual_async_fn, reason = "an async fn would keep its arguments twice")]
pub(crate) fn with_lease<'a, F: std::future::Future>(
    config: &'a Idempotency,
    key: &'a RecordKey,
    token: FencingToken,
    paused: impl Fn() -> bool + 'a,
    mut future: std::pin::Pin<&'a mut F>,
) -> impl std::future::Future<Output = F::Output> + 'a {
    async move {
        let inner = &config.inner;
        let period = inner.lease / 3;
        // A handler that answers at once needs no lease timer; one that does not is renewed on
        // the schedule that began with it, however long its first poll took.
        let started = Instant::now();
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(output) = first {
            return output;
        }
        let mut ticker = tokio::time::interval_at(started + period, period);
        loop {
            tokio::select! {
                biased;
                output = &mut future => return output,
                _ = ticker.tick(), if !paused() => {
                    let renewal = store_call(config, "renew", key, inner.store.renew(key, token, inner.lease));
                    if let Ok(false) = Box::pin(renewal).await {
                        tracing::warn!(?key, "lease lost while the handler runs");
                    }
                }
            }
        }
    }
}
