//! What the engine finds for a key, and what it means for the request at hand. Every path
//! that finds a completed record or a running execution (this process's copy, the flight it
//! joined, the store's claim, a lookup while waiting) decides through these two functions.

use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::record::{Completion, Record, StoredResponse};
use crate::route::InFlight;

/// What a request does about a running execution of its key.
#[derive(Debug)]
pub(crate) enum Running {
    /// Wait for its outcome.
    Wait,
    /// Answer now (a mismatch, or a route that does not wait).
    Refuse(IdempotencyError),
}

/// A completed record, for a request with its key: the response to replay, or why not.
/// `same_request` is `false` when the record's request had another fingerprint (a mismatch).
pub(crate) fn completed(record: &Record, same_request: bool) -> Result<&StoredResponse, IdempotencyError> {
    if !same_request {
        return Err(IdempotencyError::Conflict);
    }
    match &record.completion {
        Completion::Response(stored) => Ok(stored),
        Completion::Tombstone => Err(IdempotencyError::ResponseNotStored),
    }
}

/// An execution of the key is running, for a request with `policy`. `same_request` is `false`
/// when the running request has another fingerprint (a mismatch).
pub(crate) fn running(config: &Idempotency, same_request: bool, policy: InFlight) -> Running {
    if !same_request {
        return Running::Refuse(IdempotencyError::Conflict);
    }
    match policy {
        InFlight::Wait => Running::Wait,
        InFlight::Reject | InFlight::Accept => Running::Refuse(busy(config, policy)),
    }
}

/// The answer when the key stays held and the request waits no more (its route does not wait,
/// or its wait ran out): 409 `idempotency_in_flight`, or 202 under `in_flight = "accept"`.
pub(crate) fn busy(config: &Idempotency, policy: InFlight) -> IdempotencyError {
    match policy {
        InFlight::Accept => config.accepted(),
        InFlight::Wait | InFlight::Reject => config.in_flight(),
    }
}
