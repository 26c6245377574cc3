//! The one execution of a key in this process: it claims the key, runs the handler (renewing
//! its lease), captures the response, stores it (or releases the key) and publishes the outcome
//! to its followers.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::FutureExt;

use super::handoff::{run_upstream, HeldClaim};
use super::prepare::Keyed;
use super::turn::{self, Claimant, Turn};
use super::{store_answer, Answer, Caller, Handled, Run};
use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::flight::{LeaderGuard, Shared};
use crate::observe::{self, Outcome};
use crate::record::{Completion, Record};
use crate::replay::{self, Captured};
use crate::store::FencingToken;
use crate::transaction::{self, Refused, Returned, Slot};

/// Leads the request's in-process flight. The request moves into the execution: a
/// middleware's inner service must route it while it is the only reference (actix-web panics
/// otherwise). A client that disconnects (RST) cannot cancel it: see [`super::Shielded`].
pub(super) fn lead(
    config: Idempotency,
    caller: Caller,
    req: HttpRequest,
    keyed: Keyed,
    run: Run,
    guard: LeaderGuard,
    adopted: Option<HeldClaim>,
) -> impl Future<Output = Answer> {
    let tracker = config.inner.tracker.clone();
    let leader = Leader {
        config,
        caller,
        keyed,
        guard,
        adopted: adopted.map(|held| (held.token, held.first_attempt)),
    };
    tracker.track_future(leader.lead(req, run))
}

struct Leader {
    config: Idempotency,
    caller: Caller,
    keyed: Keyed,
    guard: LeaderGuard,
    /// The middleware's claim this execution adopted: it claims nothing of its own.
    adopted: Option<(FencingToken, bool)>,
}

impl Leader {
    /// The execution. An `async` block rather than an `async fn`, and the steps below borrow
    /// the leader rather than take it: an `async fn` keeps each argument twice in its future,
    /// which is allocated with every request.
    #[allow(clippy::manual_async_fn, reason = "an async fn would keep its arguments twice")]
    fn lead(mut self, req: HttpRequest, run: Run) -> impl Future<Output = Answer> + 'static {
        async move { self.take_turn(req, run).await }
    }

    async fn take_turn(&mut self, req: HttpRequest, run: Run) -> Answer {
        if let Some((token, first_attempt)) = self.adopted {
            return self.execute(token, first_attempt, req, run).await;
        }
        let claimant = Claimant {
            config: &self.config,
            key: &self.keyed.id,
            fingerprint: self.keyed.fingerprint,
            alt: self.keyed.alt,
            policy: self.caller.route().options().in_flight,
        };
        match claimant.take_turn().await {
            Turn::Run { token, first_attempt } => self.execute(token, first_attempt, req, run).await,
            Turn::Completed { record, waited } => {
                let answer = Answer::of_record(&self.config, &req, &record, &self.keyed);
                self.guard.publish(Shared::Record(record));
                if waited {
                    answer.after_waiting()
                } else {
                    answer
                }
            }
            Turn::Refused(error) => {
                let shared = match error {
                    IdempotencyError::Conflict => Shared::Failed(IdempotencyError::Conflict),
                    _ => Shared::Busy,
                };
                self.guard.publish(shared);
                Answer::refused(&self.config, &error, &req)
            }
            Turn::StoreFailed => self.store_failed(req, run).await,
        }
    }

    async fn store_failed(&mut self, req: HttpRequest, run: Run) -> Answer {
        let error = self.config.store_unavailable();
        let handoff = self.caller.handoff();
        self.guard.publish(Shared::Failed(error.clone()));
        if self.config.inner.fail_open {
            tracing::warn!(
                handler = self.caller.route().options().handler,
                "idempotency store unavailable: running unprotected (fail open)"
            );
            self.keyed.expose(&req, self.caller.route(), true);
            let response = run_upstream(req, super::buffered(std::mem::take(&mut self.keyed.body)), handoff, run).await;
            return Answer::unless_taken_over(response.into_response(), Outcome::StoreError, &self.caller);
        }
        Answer::refused(&self.config, &error, &req)
    }

    /// The answer of an annotated handler that took the request over: its engine stored (or
    /// released) the record under its own options, and reported it. This execution's
    /// duplicates are not necessarily that handler's (another tenant, another fingerprint
    /// mode): each goes down the chain itself.
    fn delegated(&mut self, response: HttpResponse) -> Answer {
        self.guard.publish(Shared::Delegated);
        Answer {
            response,
            outcome: None,
        }
    }

    async fn execute(&mut self, token: FencingToken, first_attempt: bool, req: HttpRequest, run: Run) -> Answer {
        self.guard.running();
        let route = self.caller.route();
        self.keyed.expose(&req, route, first_attempt);
        let transaction = Slot::offer(&self.config, route.options().handler, &self.keyed.id, &req);
        // The app's hook needs the request, which moves into the handler (a middleware's inner
        // service routes it, which it may only do as its sole owner) and goes down with it if it
        // panics: with a hook, the answer to a panic is rendered now.
        let on_panic = self
            .config
            .has_error_hook()
            .then(|| Box::new(self.config.error_response(&IdempotencyError::HandlerFailed, &req)));
        let handoff = self.caller.handoff_holding(|| HeldClaim {
            store: Arc::clone(&self.config.inner.store),
            key: self.keyed.id.clone(),
            token,
            first_attempt,
        });
        let handler = AssertUnwindSafe(run_upstream(
            req,
            super::buffered(std::mem::take(&mut self.keyed.body)),
            handoff,
            run,
        ))
        .catch_unwind();
        let paused = || self.caller.taken_over();
        let Ok(handled) = turn::with_lease(&self.config, &self.keyed.id, token, paused, std::pin::pin!(handler)).await
        else {
            tracing::error!(
                handler = route.options().handler,
                "handler panicked: key released, a retry will run again"
            );
            // Rolled back before the key is free: the transaction the unwinding handler gave
            // back closes its connection.
            drop(transaction);
            self.release(token).await;
            self.guard.publish(Shared::Failed(IdempotencyError::HandlerFailed));
            let error = IdempotencyError::HandlerFailed;
            let response =
                on_panic.map_or_else(|| error.problem_response(error.default_status()), |response| *response);
            return Answer::new(response, Outcome::Released);
        };
        if self.caller.taken_over() {
            return self.delegated(handled.into_response());
        }
        let (response, storable) = match handled {
            Handled::Ran(response) => {
                let storable = route.options().cache.stores(response.status().as_u16());
                (response, storable)
            }
            Handled::Refused(response) => (response, false),
        };
        let transaction = match transaction::returned(transaction, storable, token).await {
            Ok(transaction) => transaction,
            Err(refused) => return self.transaction_refused(refused),
        };
        let inner = &self.config.inner;
        match replay::capture(response, inner.max_response_bytes, inner.capture_timeout).await {
            Captured::Complete { head, body } => {
                let (sent, kept) = if storable {
                    replay::compact(body)
                } else {
                    (body.clone(), body)
                };
                let stored = replay::to_stored(&head, kept);
                let (shared, outcome) = if storable {
                    let record = Record {
                        fingerprint: self.keyed.fingerprint,
                        completion: Completion::Response(stored),
                    };
                    match self.complete(token, Arc::new(record), transaction).await {
                        Ok(completed) => completed,
                        Err(refused) => return self.transaction_refused(refused),
                    }
                } else {
                    self.release(token).await;
                    (Shared::Response(Arc::new(stored)), Outcome::Released)
                };
                self.guard.publish(shared);
                Answer::new(head.set_body(BoxBody::new(sent)), outcome)
            }
            Captured::Partial { head, body, failed } => {
                let (shared, outcome) = if storable && !failed {
                    let handler = route.options().handler;
                    inner.counters.responses_not_stored.fetch_add(1, Ordering::Relaxed);
                    observe::response_not_stored(handler);
                    tracing::warn!(
                        handler,
                        limit = inner.max_response_bytes,
                        "response too large or too slow to store: the key keeps a tombstone"
                    );
                    let tombstone = Record {
                        fingerprint: self.keyed.fingerprint,
                        completion: Completion::Tombstone,
                    };
                    match self.complete(token, Arc::new(tombstone), transaction).await {
                        Ok(completed) => completed,
                        Err(refused) => return self.transaction_refused(refused),
                    }
                } else {
                    self.release(token).await;
                    (Shared::Busy, Outcome::Released)
                };
                self.guard.publish(shared);
                Answer::new(head.set_body(body), outcome)
            }
        }
    }

    /// Stores the record, in the handler's transaction when it gave one back; what followers
    /// get, and the outcome ([`Outcome::StoreError`] when the write failed and the key was
    /// released). `Err`: the handler's transaction did not commit.
    async fn complete(
        &self,
        token: FencingToken,
        record: Arc<Record>,
        transaction: Option<Returned>,
    ) -> Result<(Shared, Outcome), Refused> {
        let inner = &self.config.inner;
        let ttl = self.caller.route().options().ttl;
        if let Some(transaction) = transaction {
            transaction.complete(token, Arc::clone(&record), ttl).await?;
            return Ok((Shared::Record(record), Outcome::Executed));
        }
        let key = &self.keyed.id;
        let now = inner.store.complete_now(key, token, &record, ttl);
        let later = || inner.store.complete(key, token, Arc::clone(&record), ttl);
        let completed = match store_answer(&self.config, "complete", key, now, later).await {
            Ok(true) => (Shared::Record(record), Outcome::Executed),
            Ok(false) => {
                inner.counters.fenced_completions.fetch_add(1, Ordering::Relaxed);
                observe::fenced_completion(self.caller.route().options().handler);
                tracing::warn!(
                    ?key,
                    "lease lapsed and another execution took the key over: this result was not stored"
                );
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
        };
        Ok(completed)
    }

    /// The answer when the handler's transaction did not commit: the same refusal for its
    /// client and for every duplicate.
    fn transaction_refused(&mut self, refused: Refused) -> Answer {
        self.guard.publish(refused.shared);
        Answer::new(refused.response, refused.outcome)
    }

    async fn release(&self, token: FencingToken) {
        super::release(&self.config, &self.keyed.id, token).await;
    }
}
