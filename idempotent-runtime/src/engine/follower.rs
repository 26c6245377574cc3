//! The in-process duplicates of a running request: woken by the leader's outcome, not
//! polling, or answered at once per the route's `in_flight` policy.

use actix_web::HttpRequest;
use tokio::time::Instant;

use super::decide::{self, Running};
use super::handoff::run_upstream;
use super::prepare::Keyed;
use super::{Answer, Caller, Run};
use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::flight::{Flight, Shared, State};
use crate::observe::Outcome;
use crate::replay;

/// A duplicate of a request this process is already running.
pub(super) async fn follow(
    config: &Idempotency,
    caller: &Caller,
    req: HttpRequest,
    keyed: Keyed,
    flight: &Flight,
    run: Run,
) -> Answer {
    let policy = caller.route().options().in_flight;
    let deadline = Instant::now() + config.inner.wait_timeout;
    let mut waited = false;
    loop {
        let (current, changed) = flight.watch();
        match current {
            State::Done(shared) => {
                let answer = answer(config, caller, req, keyed, shared, run).await;
                return if waited { answer.after_waiting() } else { answer };
            }
            // The flight is this very request: same fingerprint.
            State::Running => {
                if let Running::Refuse(error) = decide::running(config, true, policy) {
                    return Answer::refused(config, &error, &req);
                }
            }
            // The leader is still asking the store: a completed record may turn up.
            State::Claiming => {}
        }
        waited = true;
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Answer::refused(config, &config.in_flight(), &req);
        }
    }
}

/// A follower's answer from its leader's outcome.
async fn answer(
    config: &Idempotency,
    caller: &Caller,
    req: HttpRequest,
    keyed: Keyed,
    shared: Shared,
    run: Run,
) -> Answer {
    match shared {
        Shared::Record(record) => Answer::of_record(config, &req, &record, &keyed),
        Shared::Response(stored) => Answer::new(replay::replay(&stored, config, &req), Outcome::Replayed),
        // An annotated handler took the leader's request over: this duplicate goes down the
        // chain too, where that handler's engine groups it by its own options.
        Shared::Delegated => match caller.handoff() {
            handoff @ Some(_) => {
                let response = run_upstream(req, super::buffered(keyed.body), handoff, run).await;
                Answer {
                    response: response.into_response(),
                    outcome: None,
                }
            }
            None => Answer::refused(config, &config.in_flight(), &req),
        },
        Shared::Busy => Answer::refused(config, &decide::busy(config, caller.route().options().in_flight), &req),
        Shared::Failed(IdempotencyError::StoreUnavailable { .. }) if config.inner.fail_open => {
            keyed.expose(&req, caller.route(), true);
            let response = run_upstream(req, super::buffered(keyed.body), caller.handoff(), run).await;
            Answer::unless_taken_over(response.into_response(), Outcome::StoreError, caller)
        }
        Shared::Failed(error) => Answer::refused(config, &error, &req),
    }
}
