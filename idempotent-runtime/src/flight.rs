//! In-process single flight: one leader per record key, every duplicate woken by its result.
//!
//! The leader's [`LeaderGuard`] publishes exactly once: the outcome, or (if the leader is
//! dropped or panics first) [`Shared::Failed`], so no follower waits forever.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::Notify;

use crate::error::IdempotencyError;
use crate::fingerprint::Fingerprint;
use crate::record::{Record, StoredResponse};
use crate::store::{KeyHash, RecordKey};

/// What a leader tells its followers.
#[derive(Debug, Clone)]
pub(crate) enum Shared {
    /// The key holds a completed record (new or earlier): replay it, or refuse a mismatch.
    Record(Arc<Record>),
    /// The leader executed but its response is not stored (outcome outside the cache policy,
    /// or the store write failed): followers get a copy, marked as a replay.
    Response(Arc<StoredResponse>),
    /// The key is held elsewhere and the route does not wait, or the key was released with
    /// nothing to share: the follower answers as if it found the key in flight.
    Busy,
    /// The engine's answer for every duplicate.
    Failed(IdempotencyError),
    /// An annotated handler took the middleware's request over: each duplicate goes down the
    /// chain itself.
    Delegated,
}

#[derive(Debug, Clone)]
pub(crate) enum State {
    /// The leader is asking the store; a completed record may still turn up.
    Claiming,
    /// The handler is running.
    Running,
    /// Final.
    Done(Shared),
}

/// One running request: its state, and the followers waiting for it to change. One
/// allocation per flight, and a change with nobody waiting wakes nobody.
pub(crate) struct Flight {
    state: Mutex<State>,
    changed: Notify,
}

impl Flight {
    fn new() -> Self {
        Self {
            state: Mutex::new(State::Claiming),
            changed: Notify::new(),
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The current state, and a future that completes at its next change (a change that
    /// happens after this call, even before the future is first polled, completes it).
    pub(crate) fn watch(&self) -> (State, impl std::future::Future<Output = ()> + '_) {
        let mut changed = Box::pin(self.changed.notified());
        changed.as_mut().enable();
        (self.state(), changed)
    }

    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.changed.notify_waiters();
    }
}

/// A flight is one request: its record key *and* fingerprint, and whether the middleware leads
/// it. A request with another body for the same key leads a flight of its own, and the store's
/// atomic claim tells a conflict from a retry of a request that already completed there. An
/// annotated handler that takes a request over from the middleware leads its own flight, never
/// a follower of the middleware's execution of that same request.
#[derive(Clone, PartialEq, Eq)]
struct FlightKey {
    key: RecordKey,
    fingerprint: Fingerprint,
    by_middleware: bool,
}

impl Hash for FlightKey {
    /// The record key's own (keyed) hash and eight bytes of the fingerprint, a SHA-256, folded
    /// together by [`KeyHash`]: no second pass of SipHash over 40 bytes per request.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        let [a, b, c, d, e, f, g, h, ..] = self.fingerprint.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]) ^ u64::from(self.by_middleware));
    }
}

/// The map of running requests of one [`crate::Idempotency`].
#[derive(Default, Clone)]
pub(crate) struct Flights {
    map: Arc<DashMap<FlightKey, Arc<Flight>, KeyHash>>,
}

pub(crate) enum Role {
    Leader(LeaderGuard),
    Follower(Arc<Flight>),
}

impl Flights {
    /// Leads the request if nobody in this process runs it, else follows the current leader.
    pub(crate) fn join(&self, key: &RecordKey, fingerprint: Fingerprint, by_middleware: bool) -> Role {
        let key = FlightKey {
            key: key.clone(),
            fingerprint,
            by_middleware,
        };
        match self.map.entry(key.clone()) {
            Entry::Occupied(running) => Role::Follower(Arc::clone(running.get())),
            Entry::Vacant(vacant) => {
                let flight = Arc::new(Flight::new());
                vacant.insert(Arc::clone(&flight));
                Role::Leader(LeaderGuard {
                    flights: self.clone(),
                    key,
                    flight,
                    published: false,
                })
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Held by the one execution of a key in this process.
pub(crate) struct LeaderGuard {
    flights: Flights,
    key: FlightKey,
    flight: Arc<Flight>,
    published: bool,
}

impl LeaderGuard {
    /// Marks the handler as running (followers that do not wait answer "in flight" from now).
    pub(crate) fn running(&self) {
        self.flight.set(State::Running);
    }

    /// Publishes the outcome and leaves the map; later arrivals go to the store.
    pub(crate) fn publish(&mut self, shared: Shared) {
        self.finish(shared);
    }

    fn finish(&mut self, shared: Shared) {
        if self.published {
            return;
        }
        self.published = true;
        self.flights
            .map
            .remove_if(&self.key, |_, flight| Arc::ptr_eq(flight, &self.flight));
        self.flight.set(State::Done(shared));
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.finish(Shared::Failed(IdempotencyError::HandlerFailed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RecordKey {
        RecordKey::new("", None, "k", None)
    }

    #[tokio::test]
    async fn a_dropped_leader_answers_its_followers() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join(&key(), Fingerprint([0; 32]), false) else {
            panic!("first joins lead")
        };
        let Role::Follower(flight) = flights.join(&key(), Fingerprint([0; 32]), false) else {
            panic!("second follows")
        };
        let (state, changed) = flight.watch();
        assert!(matches!(state, State::Claiming));
        drop(leader);
        changed.await;
        assert!(matches!(
            flight.state(),
            State::Done(Shared::Failed(IdempotencyError::HandlerFailed))
        ));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_published_key_is_led_again() {
        let flights = Flights::default();
        let Role::Leader(mut leader) = flights.join(&key(), Fingerprint([0; 32]), false) else {
            panic!()
        };
        leader.publish(Shared::Busy);
        assert!(matches!(
            flights.join(&key(), Fingerprint([0; 32]), false),
            Role::Leader(_)
        ));
    }

    #[tokio::test]
    async fn another_body_for_the_same_key_leads_its_own_flight() {
        let flights = Flights::default();
        let _first = flights.join(&key(), Fingerprint([0; 32]), false);
        assert!(
            matches!(flights.join(&key(), Fingerprint([1; 32]), false), Role::Leader(_)),
            "the store, not the flight map, decides whether another body conflicts"
        );
    }
}
