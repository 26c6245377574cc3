//! The store contract as a reference model: random sequences of claims (alone and many at
//! once), renewals, completions and releases with current or stale tokens, lookups and pauses
//! that outlast short leases and ttls, over the same client key in three scopes and a second
//! key. Every answer of the store must be one the model allows:
//!
//! - of any number of claims of a free key exactly one acquires, and its token is larger than
//!   every earlier token of that key;
//! - a held key reports its holder's fingerprint; a completed key returns exactly the record
//!   stored under that identity (records are unique, so one returned to another scope or key
//!   would differ);
//! - renew, complete and release act only with the token that holds the key; a stale token
//!   changes nothing;
//! - a lapsed lease can be taken over, an expired record is gone, and neither happens early.
//!
//! Time is real: the model knows each lease and ttl only as "ends between these two instants"
//! (the store call that set it ran between them), and an observation that falls too close to
//! an end may go either way; the store's answer then tells the model which.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use futures_util::future::join_all;
use idempotent_actix::store::conformance::fresh_namespace;
use idempotent_actix::{
    Claim, Completion, FencingToken, Fingerprint, Lookup, MemoryStore, Record, RecordKey, Store, StoreError,
    StoredResponse,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use crate::servers;

/// A lease or ttl that a long pause outlasts.
const SHORT: Duration = Duration::from_millis(120);
/// A lease or ttl that outlives every case.
const LONG: Duration = Duration::from_secs(30);
/// How far the store's clock may disagree with this process's (moka's clock, the server's,
/// rounding to milliseconds).
const SLACK: Duration = Duration::from_millis(30);
/// The longest one store call may take before the case fails.
const CALL_BOUND: Duration = Duration::from_secs(10);

/// Record identities: one client key under two tenants and global scope, and a second key.
const SLOTS: [(Option<&str>, &str); 4] = [
    (Some("tenant-a"), "k1"),
    (Some("tenant-b"), "k1"),
    (None, "k1"),
    (Some("tenant-a"), "k2"),
];

#[test]
fn memory_store_answers_as_the_contract_allows() {
    let runtime = runtime();
    check(&runtime, &MemoryStore::default(), 48);
}

#[cfg(feature = "redis")]
#[test]
fn redis_store_answers_as_the_contract_allows() {
    if servers::server_up("Redis", servers::REDIS_ADDR) {
        let runtime = runtime();
        let store = runtime.block_on(async { servers::redis_store() });
        check(&runtime, &store, 32);
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store_answers_as_the_contract_allows() {
    if servers::server_up("PostgreSQL", servers::POSTGRES_ADDR) {
        let runtime = runtime();
        let store = runtime.block_on(servers::postgres_store());
        check(&runtime, &store, 32);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

fn check(runtime: &tokio::runtime::Runtime, store: &dyn Store, cases: u32) {
    let mut runner = servers::runner(cases, "tests/properties/regressions/store_model.txt");
    let result = runner.run(&vec(op(), 1..24), |ops| runtime.block_on(run_case(store, &ops)));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy)]
enum Span {
    Short,
    Long,
}

impl Span {
    fn duration(self) -> Duration {
        match self {
            Self::Short => SHORT,
            Self::Long => LONG,
        }
    }
}

/// Which token of a key an operation uses: the newest it was given, or any earlier one.
#[derive(Debug, Clone, Copy)]
enum TokenPick {
    Newest,
    Earlier(Index),
}

/// Requests are 1 or 2: two fingerprints, so a duplicate can be told from a mismatch.
#[derive(Debug, Clone)]
enum Op {
    Claim {
        slot: usize,
        request: u8,
        lease: Span,
    },
    ClaimTogether {
        slot: usize,
        requests: Vec<u8>,
        lease: Span,
    },
    Renew {
        slot: usize,
        token: TokenPick,
        lease: Span,
    },
    Complete {
        slot: usize,
        token: TokenPick,
        ttl: Span,
        tombstone: bool,
    },
    Release {
        slot: usize,
        token: TokenPick,
    },
    Lookup {
        slot: usize,
    },
    Pause(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    let slot = || 0..SLOTS.len();
    let request = || 1..=2u8;
    prop_oneof![
        4 => (slot(), request(), span())
            .prop_map(|(slot, request, lease)| Op::Claim { slot, request, lease }),
        1 => (slot(), vec(request(), 2..=5), span())
            .prop_map(|(slot, requests, lease)| Op::ClaimTogether { slot, requests, lease }),
        2 => (slot(), token(), span())
            .prop_map(|(slot, token, lease)| Op::Renew { slot, token, lease }),
        3 => (slot(), token(), span(), prop::bool::weighted(0.25))
            .prop_map(|(slot, token, ttl, tombstone)| Op::Complete { slot, token, ttl, tombstone }),
        2 => (slot(), token()).prop_map(|(slot, token)| Op::Release { slot, token }),
        2 => slot().prop_map(|slot| Op::Lookup { slot }),
        1 => prop_oneof![Just(SHORT / 2), Just(SHORT + 2 * SLACK)].prop_map(Op::Pause),
    ]
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![Just(Span::Short), Just(Span::Long)]
}

fn token() -> impl Strategy<Value = TokenPick> {
    prop_oneof![3 => Just(TokenPick::Newest), 1 => any::<Index>().prop_map(TokenPick::Earlier)]
}

fn fingerprint(request: u8) -> Fingerprint {
    Fingerprint([request; 32])
}

// ---------------------------------------------------------------------------------------------
// The model

/// When a store call ran: the store acted at some instant in between.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// The end of a lease or ttl, as far as this process can know it.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// Beyond the end of the case.
    Never,
    /// At some instant between these two.
    Between(Instant, Instant),
    /// Observed to have passed.
    Passed,
}

enum Alive {
    Yes,
    No,
    Maybe,
}

impl Deadline {
    /// The end of `span` granted by the store call that ran during `call`.
    fn after(span: Span, call: Window) -> Self {
        match span {
            Span::Long => Self::Never,
            Span::Short => Self::Between(call.start + SHORT, call.end + SHORT),
        }
    }

    fn alive_during(self, call: Window) -> Alive {
        match self {
            Self::Never => Alive::Yes,
            Self::Passed => Alive::No,
            Self::Between(earliest, _) if call.end + SLACK < earliest => Alive::Yes,
            Self::Between(_, latest) if latest + SLACK < call.start => Alive::No,
            Self::Between(..) => Alive::Maybe,
        }
    }
}

#[derive(Debug)]
enum State {
    Absent,
    Held {
        token: FencingToken,
        request: u8,
        lease: Deadline,
    },
    Completed {
        record: Arc<Record>,
        expiry: Deadline,
    },
}

/// What a claim or lookup saw.
#[derive(Debug)]
enum Seen {
    Nothing,
    InFlight(Fingerprint),
    Completed(Arc<Record>),
}

struct Slot {
    key: RecordKey,
    state: State,
    /// Every token a claim of this key was given, oldest first.
    tokens: Vec<FencingToken>,
}

impl Slot {
    /// Whether what the key held may still be there during `call`, and whether it may be gone.
    fn presence(&self, call: Window) -> (bool, bool) {
        let deadline = match &self.state {
            State::Absent => return (false, true),
            State::Held { lease, .. } => lease,
            State::Completed { expiry, .. } => expiry,
        };
        match deadline.alive_during(call) {
            Alive::Yes => (true, false),
            Alive::No => (false, true),
            Alive::Maybe => (true, true),
        }
    }

    /// Checks a claim's or lookup's answer against what the key held before `call`.
    fn expect(&self, seen: &Seen, call: Window) -> Result<(), TestCaseError> {
        let (may_be_there, may_be_gone) = self.presence(call);
        match (seen, &self.state) {
            (Seen::Nothing, _) => {
                prop_assert!(may_be_gone, "found nothing, but the key holds {:?}", self.state)
            }
            (Seen::InFlight(found), State::Held { request, .. }) => {
                prop_assert!(may_be_there, "found a lapsed claim in flight");
                prop_assert_eq!(*found, fingerprint(*request), "in flight with another fingerprint");
            }
            (Seen::Completed(found), State::Completed { record, .. }) => {
                prop_assert!(may_be_there, "found an expired record");
                prop_assert_eq!(&**found, &**record, "a record other than the one stored");
            }
            (seen, state) => {
                return Err(TestCaseError::fail(format!(
                    "found {seen:?}, but the key holds {state:?}"
                )))
            }
        }
        Ok(())
    }

    /// The key was seen empty: a claim's lease lapsed (its token still holds until someone
    /// else claims), a record expired.
    fn seen_empty(&mut self) {
        match &mut self.state {
            State::Held { lease, .. } => *lease = Deadline::Passed,
            State::Completed { .. } => self.state = State::Absent,
            State::Absent => {}
        }
    }

    fn acquired(&mut self, token: FencingToken, request: u8, lease: Span, call: Window) -> Result<(), TestCaseError> {
        if let Some(last) = self.tokens.last() {
            prop_assert!(
                token > *last,
                "a new claim got token {token:?}, not larger than {last:?}"
            );
        }
        self.tokens.push(token);
        self.state = State::Held {
            token,
            request,
            lease: Deadline::after(lease, call),
        };
        Ok(())
    }

    fn pick(&self, pick: TokenPick) -> FencingToken {
        match (pick, self.tokens.last()) {
            (_, None) => FencingToken(0),
            (TokenPick::Newest, Some(newest)) => *newest,
            (TokenPick::Earlier(index), Some(_)) => self.tokens[index.index(self.tokens.len())],
        }
    }

    /// The holder's request, if `token` holds the key.
    /// Whether the key holds a claim whose lease lasts through `call`.
    fn holds_a_live_claim(&self, call: Window) -> bool {
        matches!(&self.state, State::Held { lease, .. } if matches!(lease.alive_during(call), Alive::Yes))
    }

    fn held_by(&self, token: FencingToken) -> Option<u8> {
        match self.state {
            State::Held {
                token: holder, request, ..
            } if holder == token => Some(request),
            _ => None,
        }
    }
}

fn seen_by_claim(claim: &Claim) -> Seen {
    match claim {
        Claim::Acquired(_) | Claim::Reacquired(_) => Seen::Nothing,
        Claim::InFlight { fingerprint } => Seen::InFlight(*fingerprint),
        Claim::Completed(record) => Seen::Completed(Arc::clone(record)),
    }
}

// ---------------------------------------------------------------------------------------------
// One case

async fn run_case(store: &dyn Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let namespace = fresh_namespace();
    let mut slots: Vec<Slot> = SLOTS
        .iter()
        .map(|&(tenant, key)| Slot {
            key: RecordKey::new(&namespace, tenant, key, None),
            state: State::Absent,
            tokens: Vec::new(),
        })
        .collect();
    for (index, op) in ops.iter().enumerate() {
        apply(store, &mut slots, &namespace, index, op)
            .await
            .map_err(|error| TestCaseError::fail(format!("operation {index} ({op:?}): {error}")))?;
    }
    Ok(())
}

async fn apply(
    store: &dyn Store,
    slots: &mut [Slot],
    namespace: &str,
    index: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    match *op {
        Op::Claim { slot, request, lease } => {
            let slot = &mut slots[slot];
            let (claim, call) = timed(store.claim(&slot.key, fingerprint(request), lease.duration())).await?;
            slot.expect(&seen_by_claim(&claim), call)?;
            if let Some(token) = claim.token() {
                slot.acquired(token, request, lease, call)?;
            }
        }
        Op::ClaimTogether {
            slot,
            ref requests,
            lease,
        } => {
            let slot = &mut slots[slot];
            let claims = requests
                .iter()
                .map(|&request| store.claim(&slot.key, fingerprint(request), lease.duration()));
            let (claims, call) =
                timed(async { join_all(claims).await.into_iter().collect::<Result<Vec<_>, _>>() }).await?;
            claimed_together(slot, requests, &claims, lease, call)?;
        }
        Op::Renew { slot, token, lease } => {
            let slot = &mut slots[slot];
            let token = slot.pick(token);
            let (renewed, call) = timed(store.renew(&slot.key, token, lease.duration())).await?;
            let held = match &mut slot.state {
                State::Held {
                    token: holder, lease, ..
                } if *holder == token => lease,
                _ => {
                    prop_assert!(!renewed, "a token that does not hold the key renewed it");
                    return Ok(());
                }
            };
            if let Alive::Yes = held.alive_during(call) {
                prop_assert!(renewed, "the holder of a live claim could not renew it");
            }
            // A lapsed claim nobody took over may be renewed (memory, PostgreSQL) or not (Redis).
            *held = if renewed {
                Deadline::after(lease, call)
            } else {
                Deadline::Passed
            };
        }
        Op::Complete {
            slot: at,
            token,
            ttl,
            tombstone,
        } => {
            let slot = &mut slots[at];
            let token = slot.pick(token);
            let holder = slot.held_by(token);
            let record = Arc::new(record(namespace, at, index, holder.unwrap_or(1), tombstone));
            let (completed, call) =
                timed(store.complete(&slot.key, token, Arc::clone(&record), ttl.duration())).await?;
            if holder.is_none() || slot.holds_a_live_claim(call) {
                prop_assert_eq!(
                    completed,
                    holder.is_some(),
                    "complete acts exactly when the token holds the key"
                );
            }
            if completed {
                slot.state = State::Completed {
                    record,
                    expiry: Deadline::after(ttl, call),
                };
            } else if holder.is_some() {
                // A lapsed claim the store gave up (the memory store's sweep turns it into the
                // mark of a released key).
                slot.state = State::Absent;
            }
        }
        Op::Release { slot, token } => {
            let slot = &mut slots[slot];
            let token = slot.pick(token);
            let (released, call) = timed(store.release(&slot.key, token)).await?;
            let held = slot.held_by(token).is_some();
            if !held || slot.holds_a_live_claim(call) {
                prop_assert_eq!(released, held, "release acts exactly when the token holds the key");
            }
            if held {
                // Released, or a lapsed claim the store gave up: free either way.
                slot.state = State::Absent;
            }
        }
        Op::Lookup { slot } => {
            let slot = &mut slots[slot];
            let (lookup, call) = timed(store.lookup(&slot.key)).await?;
            let seen = match lookup {
                Lookup::Absent => Seen::Nothing,
                Lookup::InFlight { fingerprint } => Seen::InFlight(fingerprint),
                Lookup::Completed(record) => Seen::Completed(record),
            };
            slot.expect(&seen, call)?;
            if let Seen::Nothing = seen {
                slot.seen_empty();
            }
        }
        Op::Pause(pause) => tokio::time::sleep(pause).await,
    }
    Ok(())
}

/// Claims that ran at once: exactly one acquires if the key was free, none if it was held or
/// completed, and more than one only if the winner's short lease could lapse while they ran
/// (a takeover, with a larger token). Every other claim sees what the key held before, or the
/// claim of a winner.
fn claimed_together(
    slot: &mut Slot,
    requests: &[u8],
    claims: &[Claim],
    lease: Span,
    call: Window,
) -> Result<(), TestCaseError> {
    let mut winners: Vec<_> = claims
        .iter()
        .zip(requests)
        .filter_map(|(claim, &request)| Some((claim.token()?, request)))
        .collect();
    winners.sort_unstable();
    let lease_could_lapse = matches!(lease, Span::Short) && call.end + SLACK >= call.start + SHORT;
    prop_assert!(
        winners.len() <= 1 || lease_could_lapse,
        "{} of {} concurrent claims acquired the key within {:?}, shorter than the lease",
        winners.len(),
        claims.len(),
        call.end - call.start
    );
    let saw_a_winner = |seen: &Seen| {
        winners
            .iter()
            .any(|&(_, request)| matches!(seen, Seen::InFlight(found) if *found == fingerprint(request)))
    };
    for claim in claims.iter().filter(|claim| claim.token().is_none()) {
        let seen = seen_by_claim(claim);
        if !saw_a_winner(&seen) {
            slot.expect(&seen, call)?;
        }
    }
    if !winners.is_empty() {
        slot.expect(&Seen::Nothing, call)?;
    }
    for (token, request) in winners {
        slot.acquired(token, request, lease, call)?;
    }
    Ok(())
}

/// A record no other slot, operation or case stores.
fn record(namespace: &str, slot: usize, index: usize, request: u8, tombstone: bool) -> Record {
    let completion = if tombstone {
        Completion::Tombstone
    } else {
        Completion::Response(StoredResponse::new(
            StatusCode::CREATED,
            vec![
                (HeaderName::from_static("x-slot"), HeaderValue::from(slot)),
                (HeaderName::from_static("x-op"), HeaderValue::from(index)),
                (HeaderName::from_static("x-op"), HeaderValue::from_static("repeated")),
            ],
            Bytes::from(format!("{namespace} slot {slot} operation {index}")),
        ))
    };
    // A tombstone is told apart by its fingerprint alone.
    let mut print = fingerprint(request);
    print.0[1..9].copy_from_slice(&(index as u64).to_be_bytes());
    print.0[9] = slot as u8;
    Record::new(print, completion)
}

/// Runs one store call (or several at once), bounded in time, and says when it ran.
async fn timed<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<(T, Window), TestCaseError> {
    let start = Instant::now();
    let answer = tokio::time::timeout(CALL_BOUND, call)
        .await
        .map_err(|_| TestCaseError::fail(format!("no answer within {CALL_BOUND:?}")))?
        .map_err(|error| TestCaseError::fail(format!("store error: {error}")))?;
    Ok((
        answer,
        Window {
            start,
            end: Instant::now(),
        },
    ))
}
