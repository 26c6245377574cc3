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
use tracing::Instrument;

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
        let started = Instant::now();
        let span = observe::span(self.name);
        let (result, outcome) = self.run_once(key, work).instrument(span.clone()).await;
        span.in_scope(|| observe::outcome(self.name, outcome, started.elapsed()));
        result
    }

    async fn run_once<T, E, F, Fut>(&self, key: &str, work: F) -> (Result<T, WorkError<E>>, Outcome)
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let refused = |error: IdempotencyError| {
            let outcome = Outcome::of_error(&error);
            (Err(WorkError::Refused(error)), outcome)
        };
        let key = match key::parse(key.as_bytes()) {
            Ok(Some(key)) => key.into_owned(),
            Ok(None) => return refused(IdempotencyError::KeyInvalid(key::KeyError::Empty)),
            Err(error) => return refused(IdempotencyError::KeyInvalid(error)),
        };
        let config = &self.config;
        let id = self.record_key(&key);
        let fingerprint = self.fingerprint();
        if let Some(record) = config.inner.store.cached(&id) {
            return stored_value(&record, fingerprint, Outcome::Replayed);
        }
        let claimant = Claimant {
            config,
            key: &id,
            fingerprint,
            alt: None,
            policy: if self.wait { InFlight::Wait } else { InFlight::Reject },
        };
        match claimant.take_turn().await {
            Turn::Run { token, first_attempt } => self.execute(&id, token, key, first_attempt, work).await,
            Turn::Completed { record, waited } => stored_value(
                &record,
                fingerprint,
                if waited { Outcome::Waited } else { Outcome::Replayed },
            ),
            Turn::Refused(error) => refused(error),
            Turn::StoreFailed if config.inner.fail_open => {
                tracing::warn!(
                    work = self.name,
                    "idempotency store unavailable: running unprotected (fail open)"
                );
                let attempt = Attempt {
                    key,
                    first_attempt: true,
                };
                match work(attempt).await {
                    Ok(value) => (Ok(value), Outcome::StoreError),
                    Err(error) => (Err(WorkError::Failed(error)), Outcome::StoreError),
                }
            }
            Turn::StoreFailed => refused(config.store_unavailable()),
        }
    }

    async fn execute<T, E, F, Fut>(
        &self,
        id: &RecordKey,
        token: FencingToken,
        key: String,
        first_attempt: bool,
        work: F,
    ) -> (Result<T, WorkError<E>>, Outcome)
    where
        T: Serialize,
        F: FnOnce(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let config = &self.config;
        let store = &config.inner.store;
        let attempt = Attempt { key, first_attempt };
        let running = AssertUnwindSafe(work(attempt)).catch_unwind();
        let release = || async {
            let _ = store_call(config, "release", id, store.release(id, token)).await;
        };
        let value = match turn::with_lease(config, id, token, || false, running).await {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => {
                release().await;
                return (Err(WorkError::Failed(error)), Outcome::Released);
            }
            Err(panic) => {
                tracing::error!(work = self.name, "work panicked: key released, a retry will run again");
                release().await;
                std::panic::resume_unwind(panic);
            }
        };
        let body = match serde_json::to_vec(&value) {
            Ok(body) => body,
            Err(error) => {
                release().await;
                return (Err(WorkError::Json(error)), Outcome::Released);
            }
        };
        let record = Arc::new(Record {
            fingerprint: self.fingerprint(),
            completion: Completion::Response(StoredResponse {
                status: StatusCode::OK,
                headers: vec![(
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                )],
                body: body.into(),
            }),
        });
        match store_call(config, "complete", id, store.complete(id, token, record, self.ttl)).await {
            Ok(true) => (Ok(value), Outcome::Executed),
            Ok(false) => {
                config.inner.counters.fenced_completions.fetch_add(1, Ordering::Relaxed);
                observe::fenced_completion(self.name);
                tracing::warn!(key = ?id, "lease lapsed and another execution took the key over: this value was not stored");
                (Ok(value), Outcome::Executed)
            }
            // The work ran; only its record is missing, so a later run executes again.
            Err(_) => {
                release().await;
                (Ok(value), Outcome::StoreError)
            }
        }
    }
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
