//! Idempotent work outside HTTP: a queue consumer, a scheduled job, a webhook processed off
//! the request path.
//!
//! [`Idempotency::work`] names a kind of work. [`Work::run`] runs a closure at most once per
//! key while the key is remembered (the ttl, 24 hours by default) and stores the value it
//! returns (anything `serde` can write as JSON); a later run with that key gets the stored
//! value back without running anything. It is the protocol of an HTTP request, on the same
//! store: an atomic claim, a lease renewed while the closure runs, fencing tokens, and
//! duplicates that wait for the running execution (woken by the store's notifications) on any
//! replica sharing the store.
//!
//! - The closure's `Err` releases the key: the next delivery of the message runs again.
//! - A panic releases the key, then resumes unwinding in the caller.
//! - With [`Work::input`], the key is bound to the input it was first used with: the same key
//!   with another input is refused (`idempotency_conflict`), as a reused HTTP key with another
//!   body is.
//! - Dropping the future of `run` (a consumer shutting down) abandons the execution: the key
//!   is freed when its lease lapses, and the next run sees
//!   [`Attempt::is_first_attempt`] `== false`.
//!
//! ```
//! use idempotent_runtime::Idempotency;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Receipt {
//!     invoice: u64,
//!     charged_cents: u64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let idempotency = Idempotency::builder().build();
//! let charge = idempotency.work("charge-invoice");
//!
//! // A message and its redelivery carry the same id: the charge runs once.
//! let first: Receipt = charge
//!     .run("message-17", |_attempt| async {
//!         // ... charge the card ...
//!         Ok::<_, std::io::Error>(Receipt { invoice: 42, charged_cents: 1999 })
//!     })
//!     .await?;
//! let redelivered: Receipt = charge
//!     .run("message-17", |_attempt| async { Err(std::io::Error::other("charged twice")) })
//!     .await?;
//! assert_eq!(first, redelivered);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Idempotency;
use crate::engine::decide;
use crate::engine::store_call;
use crate::engine::turn::{self, Claimant, Turn};
use crate::error::IdempotencyError;
use crate::fingerprint::Fingerprint;
use crate::key;
use crate::observe::{self, Outcome};
use crate::record::{Completion, Record, StoredResponse};
use crate::route::{FingerprintMode, InFlight};
use crate::store::{FencingToken, RecordKey};

/// One kind of idempotent work: its name, and how its keys are kept. Built by
/// [`Idempotency::work`]; cheap to clone and to keep.
#[derive(Clone)]
pub struct Work {
    config: Idempotency,
    name: &'static str,
    ttl: Duration,
    tenant: Option<String>,
    input: Option<Vec<u8>>,
    wait: bool,
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Work")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("tenant", &self.tenant)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// What the closure learns about its run.
#[derive(Debug, Clone)]
pub struct Attempt {
    key: String,
    first_attempt: bool,
}

impl Attempt {
    /// The key of this run.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `false` when an earlier run with this key started and did not complete (its closure
    /// failed or panicked, or its process died): check for partial effects before repeating
    /// them.
    pub fn is_first_attempt(&self) -> bool {
        self.first_attempt
    }
}

/// Why [`Work::run`] did not return a value.
#[derive(Debug)]
#[non_exhaustive]
pub enum WorkError<E> {
    /// The closure returned this error; the key was released and the next run executes again.
    Failed(E),
    /// Nothing ran: the key was used with another input (`idempotency_conflict`), is being run
    /// elsewhere and this run does not wait or waited out its bound (`idempotency_in_flight`),
    /// is invalid (`idempotency_key_invalid`), or the store is unavailable
    /// (`idempotency_store_unavailable`). [`IdempotencyError::code`] is stable.
    Refused(IdempotencyError),
    /// The value could not be written as JSON (the key was released), or a stored value could
    /// not be read back as the requested type (the key keeps it).
    Json(serde_json::Error),
}

impl<E: fmt::Display> fmt::Display for WorkError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "the work failed: {error}"),
            Self::Refused(error) => write!(f, "{error}"),
            Self::Json(error) => write!(f, "the work's value is not the stored JSON: {error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for WorkError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(error) => Some(error),
            Self::Refused(error) => Some(error),
            Self::Json(error) => Some(error),
        }
    }
}

impl Idempotency {
    /// Idempotent work named `name` (a label of logs and metrics, and part of every key's
    /// identity: two kinds of work never share keys). See the [module documentation](crate::work).
    pub fn work(&self, name: &'static str) -> Work {
        Work {
            config: self.clone(),
            name,
            ttl: Duration::from_secs(24 * 60 * 60),
            tenant: None,
            input: None,
            wait: true,
        }
    }
}

impl Work {
    /// How long a completed run's value is kept and returned (default 24 hours).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keys of this work are the tenant's own, as with `scope = "tenant"`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Binds each key to this input (its canonical JSON): a run with a key first used with
    /// another input is refused with [`IdempotencyError::Conflict`].
    ///
    /// # Errors
    ///
    /// The input cannot be written as JSON.
    pub fn input(mut self, input: &impl Serialize) -> Result<Self, serde_json::Error> {
        self.input = Some(serde_json::to_vec(input)?);
        Ok(self)
    }

    /// Whether a run whose key is running elsewhere waits for it (the default, bounded by
    /// [`crate::IdempotencyBuilder::wait_timeout`]) or is refused at once with
    /// [`IdempotencyError::InFlight`].
    pub fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// The store identity of `key` for this work, for [`Idempotency::inspect`] and
    /// [`Idempotency::forget`].
    pub fn record_key(&self, key: &str) -> RecordKey {
        let namespace = format!("{}work{}:{}:", self.config.inner.namespace, self.name.len(), self.name);
        RecordKey::new(&namespace, self.tenant.as_deref(), key, None)
    }

    fn fingerprint(&self) -> Fingerprint {
        let input = self.input.as_deref().unwrap_or_default();
        Fingerprint::of("WORK", self.name, "", input, FingerprintMode::Json)
    }

    /// Runs `work` unless a run with `key` completed (its stored value is returned) or is
    /// running (waited for, then its value is returned).
    ///
    /// # Errors
    ///
    /// [`WorkError::Failed`] with the closure's error (the key is released), or
    /// [`WorkError::Refused`] / [`WorkError::Json`] as documented there.
    pub async fn run<T, E, F, Fut>(&self, key: &str, work: F) -> Result<T, WorkError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.reported(async {
            match self.start(key).await {
                Start::Done(result, outcome) => (result, outcome),
                Start::Claimed(claimed) => self.execute(claimed, work).await,
                Start::Unprotected(attempt) => match work(attempt).await {
                    Ok(value) => (Ok(value), Outcome::StoreError),
                    Err(error) => (Err(WorkError::Failed(error)), Outcome::StoreError),
                },
            }
        })
        .await
    }

    /// [`run`](Self::run), with the closure's statements in a transaction of the PostgreSQL
    /// store (feature `postgres`, with a `PostgresStore` alone or in a `CachedStore`): the
    /// stored value is completed in the same transaction, which then commits. A crash before
    /// the commit leaves neither the writes nor the record (the next run executes once); a
    /// crash after it leaves both (the next run gets the value).
    ///
    /// An `Err` from the closure, a panic, or a value that cannot be written as JSON rolls the
    /// transaction back and releases the key. If another execution took the key over while
    /// the closure ran (its lease lapsed), the transaction rolls back and the run is refused
    /// with [`IdempotencyError::InFlight`]: the next run gets the other execution's value.
    /// Never run `COMMIT`, `ROLLBACK` or `BEGIN` in it yourself.
    ///
    /// ```no_run
    /// use idempotent_runtime::{Idempotency, PostgresStore};
    ///
    /// # async fn consume(message_id: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PostgresStore::new("postgres://app@db.internal/app")?;
    /// let idempotency = Idempotency::builder().store(store).build();
    /// let shipment: i64 = idempotency
    ///     .work("ship-order")
    ///     .run_in_transaction(message_id, async |_attempt, tx| {
    ///         let row = tx.query_one("INSERT INTO shipments DEFAULT VALUES RETURNING id", &[]).await?;
    ///         Ok::<_, tokio_postgres::Error>(row.get(0))
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run); [`IdempotencyError::TransactionUnavailable`] when the store
    /// cannot open transactions; [`IdempotencyError::StoreUnavailable`] when `BEGIN`, the
    /// completion or the `COMMIT` fails (after a failed `COMMIT` the writes may have committed
    /// with the record: the next run then gets the value). Under
    /// [`fail_open`](crate::IdempotencyBuilder::fail_open) a store outage refuses the run
    /// too: its transaction would be on the failed store.
    #[cfg(feature = "postgres")]
    pub async fn run_in_transaction<T, E, F>(&self, key: &str, work: F) -> Result<T, WorkError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: AsyncFnOnce(Attempt, &crate::store::PostgresTransaction) -> Result<T, E>,
    {
        self.reported(async {
            match self.start(key).await {
                Start::Done(result, outcome) => (result, outcome),
                Start::Claimed(claimed) => self.execute_in_transaction(claimed, work).await,
                Start::Unprotected(_) => refused(self.config.store_unavailable()),
            }
        })
        .await
    }

    /// Runs one settlement inside this work's span and reports its outcome.
    async fn reported<T, E>(
        &self,
        settle: impl Future<Output = (Result<T, WorkError<E>>, Outcome)>,
    ) -> Result<T, WorkError<E>> {
        let started = Instant::now();
        let span = observe::span(self.name);
        let (result, outcome) = observe::within(&span, settle).await;
        observe::in_scope(&span, || observe::outcome(self.name, outcome, started.elapsed()));
        result
    }

    /// Validates the key and takes this run's turn: a value to return, a refusal, or the claim.
    async fn start<T: DeserializeOwned, E>(&self, key: &str) -> Start<T, E> {
        let key = match key::parse(key.as_bytes()) {
            Ok(Some(key)) => key.into_owned(),
            Ok(None) => return Start::refused(IdempotencyError::KeyInvalid(key::KeyError::Empty)),
            Err(error) => return Start::refused(IdempotencyError::KeyInvalid(error)),
        };
        let config = &self.config;
        let id = self.record_key(&key);
        let fingerprint = self.fingerprint();
        if let Some(record) = config.inner.store.cached(&id) {
            let (result, outcome) = stored_value(&record, fingerprint, Outcome::Replayed);
            return Start::Done(result, outcome);
        }
        let claimant = Claimant {
            config,
            key: &id,
            fingerprint,
            alt: None,
            policy: if self.wait { InFlight::Wait } else { InFlight::Reject },
        };
        match claimant.take_turn().await {
            Turn::Run { token, first_attempt } => Start::Claimed(Claimed {
                id,
                token,
                attempt: Attempt { key, first_attempt },
            }),
            Turn::Completed { record, waited } => {
                let outcome = if waited { Outcome::Waited } else { Outcome::Replayed };
                let (result, outcome) = stored_value(&record, fingerprint, outcome);
                Start::Done(result, outcome)
            }
            Turn::Refused(error) => Start::refused(error),
            Turn::StoreFailed if config.inner.fail_open => {
                tracing::warn!(
                    work = self.name,
                    "idempotency store unavailable: running unprotected (fail open)"
                );
                Start::Unprotected(Attempt {
                    key,
                    first_attempt: true,
                })
            }
            Turn::StoreFailed => Start::refused(config.store_unavailable()),
        }
    }

    async fn execute<T, E, F, Fut>(&self, claimed: Claimed, work: F) -> (Result<T, WorkError<E>>, Outcome)
    where
        T: Serialize,
        F: FnOnce(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Claimed { id, token, attempt } = claimed;
        let config = &self.config;
        let store = &config.inner.store;
        let running = AssertUnwindSafe(work(attempt)).catch_unwind();
        let value = match turn::with_lease(config, &id, token, || false, std::pin::pin!(running)).await {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                self.release(&id, token).await;
                return (Err(WorkError::Failed(error)), Outcome::Released);
            }
            Err(panic) => {
                tracing::error!(work = self.name, "work panicked: key released, a retry will run again");
                self.release(&id, token).await;
                std::panic::resume_unwind(panic);
            }
        };
        let record = match self.record_of(&value) {
            Ok(record) => record,
            Err(error) => {
                self.release(&id, token).await;
                return (Err(WorkError::Json(error)), Outcome::Released);
            }
        };
        match store_call(config, "complete", &id, store.complete(&id, token, record, self.ttl)).await {
            Ok(true) => (Ok(value), Outcome::Executed),
            Ok(false) => {
                self.fenced(&id);
                (Ok(value), Outcome::Executed)
            }
            // The work ran; only its record is missing, so a later run executes again.
            Err(_) => {
                self.release(&id, token).await;
                (Ok(value), Outcome::StoreError)
            }
        }
    }

    #[cfg(feature = "postgres")]
    async fn execute_in_transaction<T, E, F>(&self, claimed: Claimed, work: F) -> (Result<T, WorkError<E>>, Outcome)
    where
        T: Serialize,
        F: AsyncFnOnce(Attempt, &crate::store::PostgresTransaction) -> Result<T, E>,
    {
        use crate::transaction::NoTransaction;

        let Claimed { id, token, attempt } = claimed;
        let config = &self.config;
        let Some(transactions) = config.inner.store.transactions() else {
            self.release(&id, token).await;
            return refused(IdempotencyError::TransactionUnavailable {
                reason: NoTransaction::UnsupportedStore,
            });
        };
        let Ok(transaction) = store_call(config, "begin", &id, transactions.begin()).await else {
            self.release(&id, token).await;
            return refused(config.store_unavailable());
        };
        let running = AssertUnwindSafe(work(attempt, &transaction)).catch_unwind();
        let ran = turn::with_lease(config, &id, token, || false, std::pin::pin!(running)).await;
        let value = match ran {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                let _ = store_call(config, "rollback", &id, transaction.rollback()).await;
                self.release(&id, token).await;
                return (Err(WorkError::Failed(error)), Outcome::Released);
            }
            Err(panic) => {
                tracing::error!(work = self.name, "work panicked: transaction rolled back, key released");
                // Dropped open, it closes its connection (which rolls it back) before the key is
                // free.
                drop(transaction);
                self.release(&id, token).await;
                std::panic::resume_unwind(panic);
            }
        };
        let record = match self.record_of(&value) {
            Ok(record) => record,
            Err(error) => {
                let _ = store_call(config, "rollback", &id, transaction.rollback()).await;
                self.release(&id, token).await;
                return (Err(WorkError::Json(error)), Outcome::Released);
            }
        };
        let completion = transactions.complete_in(transaction, &id, token, record, self.ttl);
        match store_call(config, "complete", &id, completion).await {
            Ok(true) => (Ok(value), Outcome::Executed),
            Ok(false) => {
                self.fenced(&id);
                refused(config.in_flight())
            }
            Err(_) => {
                self.release(&id, token).await;
                refused(config.store_unavailable())
            }
        }
    }

    fn record_of<T: Serialize>(&self, value: &T) -> Result<Arc<Record>, serde_json::Error> {
        Ok(Arc::new(Record {
            fingerprint: self.fingerprint(),
            completion: Completion::Response(StoredResponse {
                status: StatusCode::OK,
                headers: vec![(
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                )],
                body: serde_json::to_vec(value)?.into(),
            }),
        }))
    }

    async fn release(&self, id: &RecordKey, token: FencingToken) {
        crate::engine::release(&self.config, id, token).await;
    }

    fn fenced(&self, id: &RecordKey) {
        self.config
            .inner
            .counters
            .fenced_completions
            .fetch_add(1, Ordering::Relaxed);
        observe::fenced_completion(self.name);
        tracing::warn!(key = ?id, "lease lapsed and another execution took the key over: this value was not stored");
    }
}

/// How a run starts.
enum Start<T, E> {
    /// Answered without running: a stored value, or a refusal.
    Done(Result<T, WorkError<E>>, Outcome),
    /// This run holds the key.
    Claimed(Claimed),
    /// The store is down and the configuration fails open.
    Unprotected(Attempt),
}

impl<T, E> Start<T, E> {
    fn refused(error: IdempotencyError) -> Self {
        let (result, outcome) = refused(error);
        Self::Done(result, outcome)
    }
}

struct Claimed {
    id: RecordKey,
    token: FencingToken,
    attempt: Attempt,
}

fn refused<T, E>(error: IdempotencyError) -> (Result<T, WorkError<E>>, Outcome) {
    let outcome = Outcome::of_error(&error);
    (Err(WorkError::Refused(error)), outcome)
}

/// The value a completed run stored, for a run with `fingerprint`.
fn stored_value<T: DeserializeOwned, E>(
    record: &Record,
    fingerprint: Fingerprint,
    outcome: Outcome,
) -> (Result<T, WorkError<E>>, Outcome) {
    match decide::completed(record, record.fingerprint == fingerprint) {
        Ok(stored) => match serde_json::from_slice(&stored.body) {
            Ok(value) => (Ok(value), outcome),
            Err(error) => (Err(WorkError::Json(error)), Outcome::Rejected),
        },
        Err(error) => {
            let outcome = Outcome::of_error(&error);
            (Err(WorkError::Refused(error)), outcome)
        }
    }
}
