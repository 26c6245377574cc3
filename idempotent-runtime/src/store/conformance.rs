//! The store conformance suite: the [contract](super) as executable checks (cargo feature
//! `conformance`).
//!
//! Every backend of this crate runs it against a real server. It is how the author of a
//! [`Store`] of their own tests it: enable the feature in the dev-dependencies only, so the
//! suite is built for the tests and never for the application,
//!
//! ```toml
//! [dependencies]
//! idempotent-actix = "0.1"
//!
//! [dev-dependencies]
//! idempotent-actix = { version = "0.1", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! and run [`run_all`] from a test, against the server the store talks to:
//!
//! ```
//! use std::sync::Arc;
//! use idempotent_runtime::store::{conformance, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a test of your own store: `#[tokio::test]` and `Arc::new(MyStore::connect(...))`.
//! conformance::run_all(Arc::new(MemoryStore::default())).await;
//! # }
//! ```
//!
//! Each check uses keys of its own under a fresh namespace ([`fresh_namespace`],
//! [`fresh_key`]: use them in checks of your own too), so the suite can run repeatedly against
//! one shared server. A failed check panics with what the contract demands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;

use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};
use crate::fingerprint::Fingerprint;
use crate::record::{Completion, Record, StoredResponse};

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(60);

/// Runs every check in turn.
pub async fn run_all(store: Arc<dyn Store>) {
    claim_of_an_absent_key_is_acquired(&*store).await;
    concurrent_claims_have_exactly_one_winner(Arc::clone(&store), 200).await;
    a_held_key_reports_the_holders_fingerprint(&*store).await;
    a_completed_record_is_returned_byte_for_byte(&*store).await;
    a_tombstone_is_kept(&*store).await;
    release_frees_the_key(&*store).await;
    a_stale_token_changes_nothing(&*store).await;
    renewal_keeps_a_claim_alive(&*store).await;
    a_lapsed_lease_is_taken_over_with_a_larger_token(&*store).await;
    a_claim_after_a_release_or_a_lapse_is_reacquired(&*store).await;
    a_completed_record_expires_after_its_ttl(&*store).await;
    records_are_isolated_by_scope_and_key(&*store).await;
    waiting_returns_once_the_key_completes(Arc::clone(&store)).await;
    a_forgotten_key_is_new(&*store).await;
    answers_at_once_as_it_answers_later(&*store).await;
    #[cfg(feature = "postgres")]
    a_completion_in_a_transaction_is_fenced_like_any_other(&*store).await;
}

/// A namespace no test has used before.
pub fn fresh_namespace() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance:{nanos}:{n}:")
}

/// A key no test has used before.
pub fn fresh_key(label: &str) -> RecordKey {
    RecordKey::new(&fresh_namespace(), Some("tenant-a"), label, None)
}

fn fingerprint(seed: u8) -> Fingerprint {
    Fingerprint([seed; 32])
}

fn response_record(seed: u8) -> Arc<Record> {
    Arc::new(Record {
        fingerprint: fingerprint(seed),
        completion: Completion::Response(StoredResponse {
            status: StatusCode::CREATED,
            headers: vec![
                (
                    HeaderName::from_static("location"),
                    HeaderValue::from_static("/orders/1"),
                ),
                (HeaderName::from_static("x-repeated"), HeaderValue::from_static("first")),
                (
                    HeaderName::from_static("x-repeated"),
                    HeaderValue::from_static("second"),
                ),
            ],
            body: Bytes::from(vec![seed; 4096]),
        }),
    })
}

async fn acquire(store: &dyn Store, key: &RecordKey, seed: u8, lease: Duration) -> FencingToken {
    match store.claim(key, fingerprint(seed), lease).await.expect("claim") {
        Claim::Acquired(token) | Claim::Reacquired(token) => token,
        other => panic!("claim of a free key must be acquired, got {other:?}"),
    }
}

/// A first claim is [`Claim::Acquired`]; a claim after a release or after a lapsed lease is
/// [`Claim::Reacquired`], so the handler knows an earlier attempt started.
pub async fn a_claim_after_a_release_or_a_lapse_is_reacquired(store: &dyn Store) {
    let key = fresh_key("attempts");
    let first = store.claim(&key, fingerprint(9), LEASE).await.expect("claim");
    let Claim::Acquired(token) = first else {
        panic!("the first claim of a key must be Acquired, got {first:?}")
    };
    assert!(store.release(&key, token).await.expect("release"));
    let again = store
        .claim(&key, fingerprint(9), Duration::from_millis(200))
        .await
        .expect("claim");
    assert!(
        matches!(again, Claim::Reacquired(_)),
        "a claim after a release must be Reacquired, got {again:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after_lapse = store.claim(&key, fingerprint(9), LEASE).await.expect("claim");
    assert!(
        matches!(after_lapse, Claim::Reacquired(_)),
        "a claim after a lapsed lease must be Reacquired, got {after_lapse:?}"
    );
}

async fn lookup(store: &dyn Store, key: &RecordKey) -> Lookup {
    store.lookup(key).await.expect("lookup")
}

/// An unused key is acquired, and then looks in flight.
pub async fn claim_of_an_absent_key_is_acquired(store: &dyn Store) {
    let key = fresh_key("absent");
    assert!(
        matches!(lookup(store, &key).await, Lookup::Absent),
        "an unused key must be absent"
    );
    acquire(store, &key, 1, LEASE).await;
    match lookup(store, &key).await {
        Lookup::InFlight { fingerprint: f } => assert_eq!(f, fingerprint(1)),
        other => panic!("a claimed key must be in flight, got {other:?}"),
    }
}

/// Of `n` simultaneous claims of one key, exactly one wins.
pub async fn concurrent_claims_have_exactly_one_winner(store: Arc<dyn Store>, n: usize) {
    let key = fresh_key("race");
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let claims: Vec<_> = (0..n)
        .map(|_| {
            let (store, key, barrier) = (Arc::clone(&store), key.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(&key, fingerprint(2), LEASE).await.expect("claim")
            })
        })
        .collect();
    let mut acquired = 0;
    for claim in claims {
        match claim.await.expect("claim task") {
            Claim::Acquired(_) | Claim::Reacquired(_) => acquired += 1,
            Claim::InFlight { fingerprint: f } => assert_eq!(f, fingerprint(2)),
            Claim::Completed(_) => panic!("nothing completed this key"),
        }
    }
    assert_eq!(acquired, 1, "exactly one of {n} concurrent claims must win");
}

/// A second claim sees the first claim's fingerprint, so a mismatch can be told apart.
pub async fn a_held_key_reports_the_holders_fingerprint(store: &dyn Store) {
    let key = fresh_key("held");
    acquire(store, &key, 3, LEASE).await;
    match store.claim(&key, fingerprint(4), LEASE).await.expect("claim") {
        Claim::InFlight { fingerprint: f } => assert_eq!(f, fingerprint(3)),
        other => panic!("a held key must be reported in flight, got {other:?}"),
    }
}

/// Completing stores the record; later claims and lookups return it unchanged.
pub async fn a_completed_record_is_returned_byte_for_byte(store: &dyn Store) {
    let key = fresh_key("complete");
    let token = acquire(store, &key, 5, LEASE).await;
    let record = response_record(5);
    assert!(
        store
            .complete(&key, token, Arc::clone(&record), TTL)
            .await
            .expect("complete"),
        "holder completes"
    );
    match store.claim(&key, fingerprint(5), LEASE).await.expect("claim") {
        Claim::Completed(found) => assert_eq!(*found, *record, "claim must return the stored record unchanged"),
        other => panic!("a completed key must be reported completed, got {other:?}"),
    }
    match lookup(store, &key).await {
        Lookup::Completed(found) => assert_eq!(*found, *record, "lookup must return the stored record unchanged"),
        other => panic!("lookup of a completed key, got {other:?}"),
    }
}

/// A store that answers claims, completions and releases at once ([`Store::claim_now`],
/// [`Store::complete_now`], [`Store::release_now`]) answers as its `async` methods do, each
/// seeing what the other wrote. A store whose `claim_now` answers `None` passes trivially.
pub async fn answers_at_once_as_it_answers_later(store: &dyn Store) {
    let key = fresh_key("at-once");
    let Some(first) = store.claim_now(&key, fingerprint(9), LEASE) else {
        return;
    };
    let token = match first.expect("claim_now") {
        Claim::Acquired(token) => token,
        other => panic!("claim_now of a free key must be acquired, got {other:?}"),
    };
    match store.claim(&key, fingerprint(9), LEASE).await.expect("claim") {
        Claim::InFlight { fingerprint: held } => assert_eq!(held, fingerprint(9)),
        other => panic!("a key claimed at once must be held, got {other:?}"),
    }
    let stale = FencingToken(token.0.wrapping_sub(1));
    if let Some(released) = store.release_now(&key, stale) {
        assert!(
            !released.expect("release_now"),
            "release_now with another token changes nothing"
        );
    }
    let record = response_record(9);
    let completed = match store.complete_now(&key, token, &record, TTL) {
        Some(completed) => completed,
        None => store.complete(&key, token, Arc::clone(&record), TTL).await,
    };
    assert!(completed.expect("complete"), "the holder completes");
    match lookup(store, &key).await {
        Lookup::Completed(found) => assert_eq!(*found, *record, "a record completed at once is stored unchanged"),
        other => panic!("lookup after complete_now, got {other:?}"),
    }
    match store.claim_now(&key, fingerprint(9), LEASE).map(Result::unwrap) {
        Some(Claim::Completed(found)) => assert_eq!(*found, *record),
        other => panic!("claim_now of a completed key must report it, got {other:?}"),
    }

    let released = fresh_key("at-once-release");
    let token = acquire(store, &released, 10, LEASE).await;
    let release = match store.release_now(&released, token) {
        Some(released) => released,
        None => store.release(&released, token).await,
    };
    assert!(release.expect("release"), "the holder releases");
    match store.claim_now(&released, fingerprint(10), LEASE).map(Result::unwrap) {
        Some(Claim::Reacquired(_)) => {}
        other => panic!("claim_now after a release must be reacquired, got {other:?}"),
    }
}

/// A tombstone (response too large to keep) is a completion like any other.
pub async fn a_tombstone_is_kept(store: &dyn Store) {
    let key = fresh_key("tombstone");
    let token = acquire(store, &key, 6, LEASE).await;
    let tombstone = Arc::new(Record {
        fingerprint: fingerprint(6),
        completion: Completion::Tombstone,
    });
    assert!(store
        .complete(&key, token, Arc::clone(&tombstone), TTL)
        .await
        .expect("complete"));
    match lookup(store, &key).await {
        Lookup::Completed(found) => assert_eq!(*found, *tombstone),
        other => panic!("a tombstoned key must be completed, got {other:?}"),
    }
}

/// Releasing lets the next claim run.
pub async fn release_frees_the_key(store: &dyn Store) {
    let key = fresh_key("release");
    let first = acquire(store, &key, 7, LEASE).await;
    assert!(
        store.release(&key, first).await.expect("release"),
        "the holder can release"
    );
    assert!(
        matches!(lookup(store, &key).await, Lookup::Absent),
        "a released key must be absent"
    );
    let second = acquire(store, &key, 7, LEASE).await;
    assert!(second > first, "a new claim must carry a larger fencing token");
}

/// Renew, complete and release with a token that no longer holds the key are refused.
pub async fn a_stale_token_changes_nothing(store: &dyn Store) {
    let key = fresh_key("stale");
    let first = acquire(store, &key, 8, LEASE).await;
    assert!(store.release(&key, first).await.expect("release"));
    let second = acquire(store, &key, 9, LEASE).await;
    assert!(
        !store.renew(&key, first, LEASE).await.expect("renew"),
        "a stale token must not renew"
    );
    assert!(
        !store.release(&key, first).await.expect("release"),
        "a stale token must not release"
    );
    assert!(
        !store
            .complete(&key, first, response_record(8), TTL)
            .await
            .expect("complete"),
        "a stale token must not complete"
    );
    match lookup(store, &key).await {
        Lookup::InFlight { fingerprint: f } => assert_eq!(f, fingerprint(9), "the current holder keeps the key"),
        other => panic!("the key must still be held by the new claim, got {other:?}"),
    }
    assert!(store
        .complete(&key, second, response_record(9), TTL)
        .await
        .expect("complete"));
}

/// A claim renewed before its lease ends stays held past the original lease.
pub async fn renewal_keeps_a_claim_alive(store: &dyn Store) {
    let key = fresh_key("renew");
    let lease = Duration::from_millis(600);
    let token = acquire(store, &key, 10, lease).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.renew(&key, token, lease).await.expect("renew"),
        "the holder can renew"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        matches!(
            store.claim(&key, fingerprint(10), lease).await.expect("claim"),
            Claim::InFlight { .. }
        ),
        "a renewed claim must outlive its first lease"
    );
}

/// After a lease lapses (its holder died), a new claim takes over with a larger token, and the
/// old holder can no longer complete.
pub async fn a_lapsed_lease_is_taken_over_with_a_larger_token(store: &dyn Store) {
    let key = fresh_key("lapse");
    let lease = Duration::from_millis(300);
    let first = acquire(store, &key, 11, lease).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = acquire(store, &key, 11, LEASE).await;
    assert!(second > first, "a takeover must carry a larger fencing token");
    assert!(
        !store
            .complete(&key, first, response_record(11), TTL)
            .await
            .expect("complete"),
        "fenced out"
    );
    assert!(store
        .complete(&key, second, response_record(12), TTL)
        .await
        .expect("complete"));
    match lookup(store, &key).await {
        Lookup::Completed(found) => assert_eq!(*found, *response_record(12), "the takeover's record stands"),
        other => panic!("expected the takeover's record, got {other:?}"),
    }
}

/// A record is gone once its ttl has passed, and the key can be claimed again.
pub async fn a_completed_record_expires_after_its_ttl(store: &dyn Store) {
    let key = fresh_key("ttl");
    let token = acquire(store, &key, 13, LEASE).await;
    assert!(store
        .complete(&key, token, response_record(13), Duration::from_secs(1))
        .await
        .expect("complete"));
    assert!(matches!(lookup(store, &key).await, Lookup::Completed(_)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        matches!(lookup(store, &key).await, Lookup::Absent),
        "an expired record must be absent"
    );
    assert!(
        store.cached(&key).is_none(),
        "an expired record must not be served from a local copy"
    );
    acquire(store, &key, 13, LEASE).await;
}

/// The same client key under another tenant or namespace is another record.
pub async fn records_are_isolated_by_scope_and_key(store: &dyn Store) {
    let namespace = fresh_namespace();
    let key = RecordKey::new(&namespace, Some("tenant-a"), "isolated", None);
    let token = acquire(store, &key, 14, LEASE).await;
    assert!(store
        .complete(&key, token, response_record(14), TTL)
        .await
        .expect("complete"));
    let others = [
        RecordKey::new(&namespace, Some("tenant-b"), "isolated", None),
        RecordKey::new(&namespace, None, "isolated", None),
        RecordKey::new(&fresh_namespace(), Some("tenant-a"), "isolated", None),
        RecordKey::new(&namespace, Some("tenant-a"), "isolated", Some(&fingerprint(14))),
    ];
    for other in &others {
        assert!(
            matches!(lookup(store, other).await, Lookup::Absent),
            "{other:?} must be another record"
        );
        acquire(store, other, 14, LEASE).await;
    }
}

/// A waiter on a held key sees the completion within a few seconds (at once with
/// notifications, at the fallback interval otherwise).
pub async fn waiting_returns_once_the_key_completes(store: Arc<dyn Store>) {
    let key = fresh_key("wait");
    let token = acquire(&*store, &key, 15, LEASE).await;
    let completer = {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store
                .complete(&key, token, response_record(15), TTL)
                .await
                .expect("complete")
        })
    };
    let started = Instant::now();
    loop {
        store
            .wait_for_change(&key, Duration::from_millis(500))
            .await
            .expect("wait");
        if let Lookup::Completed(_) = lookup(&*store, &key).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a waiter must see the completion"
        );
    }
    assert!(completer.await.expect("completer"));
}

/// [`Store::forget`] leaves the key as if never used, whatever it held: a completed record, a
/// running claim (whose token can then no longer complete it), or the memory of a release. A
/// store that does not offer the operation (the trait's default) passes.
pub async fn a_forgotten_key_is_new(store: &dyn Store) {
    let key = fresh_key("forget");
    match store.forget(&key).await {
        Err(StoreError::Unsupported(_)) => return,
        Ok(held) => assert!(!held, "forgetting an unused key must report that nothing was held"),
        Err(error) => panic!("forget failed: {error}"),
    }
    let token = acquire(store, &key, 3, LEASE).await;
    assert!(store
        .complete(&key, token, response_record(3), TTL)
        .await
        .expect("complete"));
    assert!(store.forget(&key).await.expect("forget"), "a completed key was held");
    assert!(
        matches!(lookup(store, &key).await, Lookup::Absent),
        "a forgotten record must be absent"
    );
    let claim = store.claim(&key, fingerprint(4), LEASE).await.expect("claim");
    let Claim::Acquired(running) = claim else {
        panic!("the claim of a forgotten key must be Acquired, got {claim:?}")
    };
    assert!(store.forget(&key).await.expect("forget"), "a running claim was held");
    assert!(
        !store
            .complete(&key, running, response_record(4), TTL)
            .await
            .expect("complete"),
        "the token of a forgotten claim must not complete"
    );
    let released = acquire(store, &key, 5, LEASE).await;
    assert!(store.release(&key, released).await.expect("release"));
    assert!(
        store.forget(&key).await.expect("forget"),
        "a released key is remembered"
    );
    let claim = store.claim(&key, fingerprint(5), LEASE).await.expect("claim");
    assert!(
        matches!(claim, Claim::Acquired(_)),
        "a forgotten release must not make the next claim Reacquired, got {claim:?}"
    );
}

/// For a store with transactions ([`Store::transactions`]; nothing to check otherwise): a
/// record completed in a transaction is stored once it commits, a stale token completes
/// nothing, and a transaction dropped open or rolled back leaves the claim as it was.
#[cfg(feature = "postgres")]
pub async fn a_completion_in_a_transaction_is_fenced_like_any_other(store: &dyn Store) {
    let Some(transactions) = store.transactions() else {
        return;
    };
    let begin = || async { transactions.begin().await.expect("begin") };

    let key = fresh_key("transaction");
    let token = acquire(store, &key, 3, LEASE).await;
    let record = response_record(3);
    let completed = transactions
        .complete_in(begin().await, &key, token, Arc::clone(&record), TTL)
        .await
        .expect("complete in a transaction");
    assert!(completed, "the holder's token completes in a transaction");
    match lookup(store, &key).await {
        Lookup::Completed(stored) => assert_eq!(*stored, *record, "the committed record is returned as stored"),
        other => panic!("a record completed in a transaction must be completed, got {other:?}"),
    }

    let key = fresh_key("transaction-stale");
    let stale = acquire(store, &key, 8, LEASE).await;
    assert!(store.release(&key, stale).await.expect("release"));
    let current = acquire(store, &key, 9, LEASE).await;
    let completed = transactions
        .complete_in(begin().await, &key, stale, response_record(8), TTL)
        .await
        .expect("complete in a transaction");
    assert!(!completed, "a stale token must not complete in a transaction");
    drop(begin().await);
    begin().await.rollback().await.expect("rollback");
    match lookup(store, &key).await {
        Lookup::InFlight { fingerprint: f } => assert_eq!(f, fingerprint(9), "the current holder keeps the key"),
        other => panic!("the key must still be held by the new claim, got {other:?}"),
    }
    assert!(transactions
        .complete_in(begin().await, &key, current, response_record(9), TTL)
        .await
        .expect("complete in a transaction"));
}
