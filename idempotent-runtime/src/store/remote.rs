//! What the remote stores (Redis, PostgreSQL) share: record topics, the requests of this
//! process waiting for a key that another replica holds, and their background tasks.
//!
//! A remote store publishes a short *topic* (a digest of the record key) when a key completes or
//! is released; its listener task calls [`Waiters::wake`] with it. Waiting is always bounded by
//! the caller's timeout, so a notification lost while the listener reconnects costs at most one
//! fallback poll.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Claim, FencingToken, Lookup, RecordKey, StoreError};
use crate::fingerprint::{self, Fingerprint};
use crate::record::{DecodeError, Record};

/// The topic of a record: lower-case hex SHA-256 of its identity. It names the record in the
/// remote store (keys stay short, Redis hash tags cannot be broken by `{`/`}` in a client's key,
/// and keys, which are bearer-like secrets in global scope, never appear in server logs) and in
/// notifications.
pub(crate) fn topic_of(key: &RecordKey) -> String {
    fingerprint::hex(&Sha256::digest(key.as_str().as_bytes()).into())
}

/// What a remote store's claim or lookup statement found, with the remaining ttl of a completed
/// record (for [`super::CachedStore`]).
pub(crate) enum RemoteState {
    Acquired(FencingToken),
    /// Acquired, and an earlier claim of the key was released or lapsed.
    Reacquired(FencingToken),
    InFlight(Fingerprint),
    Completed(Arc<Record>, Option<Duration>),
    Absent,
}

impl RemoteState {
    /// The answer of a claim, which always leaves the key held or completed.
    pub(crate) fn into_claim(self) -> Result<(Claim, Option<Duration>), StoreError> {
        match self {
            Self::Acquired(token) => Ok((Claim::Acquired(token), None)),
            Self::Reacquired(token) => Ok((Claim::Reacquired(token), None)),
            Self::InFlight(fingerprint) => Ok((Claim::InFlight { fingerprint }, None)),
            Self::Completed(record, expires_in) => Ok((Claim::Completed(record), expires_in)),
            Self::Absent => Err(unexpected("claim left the key absent")),
        }
    }

    /// The answer of a lookup, which never acquires the key.
    pub(crate) fn into_lookup(self) -> Result<(Lookup, Option<Duration>), StoreError> {
        match self {
            Self::Absent => Ok((Lookup::Absent, None)),
            Self::InFlight(fingerprint) => Ok((Lookup::InFlight { fingerprint }, None)),
            Self::Completed(record, expires_in) => Ok((Lookup::Completed(record), expires_in)),
            Self::Acquired(_) | Self::Reacquired(_) => Err(unexpected("lookup acquired the key")),
        }
    }
}

/// A reply or row that is not what the store's own statements return (another program wrote
/// to its keys or table): a corrupt record, never a panic or a wrong replay.
pub(crate) fn unexpected(what: &'static str) -> StoreError {
    StoreError::Corrupt(DecodeError::new(what))
}

/// A stored fingerprint, which must be exactly 32 bytes.
pub(crate) fn fingerprint_from(bytes: &[u8]) -> Result<Fingerprint, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(Fingerprint)
        .map_err(|_| unexpected("bad fingerprint"))
}

/// Waiters of this process, by topic.
#[derive(Default)]
pub(crate) struct Waiters {
    by_topic: DashMap<String, Arc<Notify>>,
}

impl Waiters {
    /// Waits until `topic` is woken or `timeout` passes.
    ///
    /// # Cancellation
    ///
    /// Dropping the future unregisters the waiter.
    pub(crate) async fn wait(&self, topic: &str, timeout: Duration) {
        let notify = Arc::clone(&self.by_topic.entry(topic.to_owned()).or_default());
        let registration = Registration {
            waiters: self,
            topic,
            notify: Some(notify),
        };
        if let Some(notify) = &registration.notify {
            let _ = tokio::time::timeout(timeout, notify.notified()).await;
        }
    }

    /// Wakes every waiter of `topic` in this process.
    pub(crate) fn wake(&self, topic: &str) {
        if let Some(notify) = self.by_topic.get(topic) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter: the listener lost its connection, so any change may have been missed.
    pub(crate) fn wake_all(&self) {
        for notify in self.by_topic.iter() {
            notify.notify_waiters();
        }
    }
}

/// Removes the topic's entry when its last waiter leaves.
struct Registration<'a> {
    waiters: &'a Waiters,
    topic: &'a str,
    notify: Option<Arc<Notify>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // Drop our handle first: whichever waiter runs `remove_if` after every other handle is
        // gone sees a count of one (the map's) and removes the entry; a waiter that registers
        // meanwhile holds a handle, so its entry stays.
        self.notify = None;
        self.waiters
            .by_topic
            .remove_if(self.topic, |_, notify| Arc::strong_count(notify) == 1);
    }
}

/// A store's background task (notification listener, expiry sweep): started by the first
/// call that needs it, on the caller's runtime, and started again by a later call if that
/// runtime shut down (an actix worker is restarted after a panic). Stops when dropped.
#[derive(Default)]
pub(crate) struct Background {
    running: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Background {
    /// Starts the task unless it runs. Costs one atomic load when it does (every request).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub(crate) fn ensure<F>(&self, start: impl FnOnce() -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.running.load(Ordering::Acquire) {
            return;
        }
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if self.running.load(Ordering::Acquire) {
            return;
        }
        self.running.store(true, Ordering::Release);
        // Dropped with the task's future, however it ends: finished, aborted, or its runtime
        // shut down.
        let running = Running(Arc::clone(&self.running));
        let future = start();
        *task = Some(tokio::spawn(async move {
            let _running = running;
            future.await;
        }));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Delay before the next reconnection attempt of a listener: doubles from 100 ms up to 5 s.
pub(crate) fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_woken_topic_releases_its_waiter_and_leaves_no_entry() {
        let waiters = Arc::new(Waiters::default());
        let waiter = {
            let waiters = Arc::clone(&waiters);
            tokio::spawn(async move { waiters.wait("t", Duration::from_secs(30)).await })
        };
        while waiters.by_topic.is_empty() {
            tokio::task::yield_now().await;
        }
        waiters.wake("t");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert!(waiters.by_topic.is_empty());
    }

    #[tokio::test]
    async fn an_unwoken_waiter_returns_after_its_timeout() {
        let waiters = Waiters::default();
        waiters.wait("t", Duration::from_millis(20)).await;
        assert!(waiters.by_topic.is_empty());
    }

    #[test]
    fn a_background_task_whose_runtime_shut_down_is_started_again() {
        let background = Background::default();
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = || {
            starts.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        };
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                background.ensure(start);
                background.ensure(start);
                tokio::task::yield_now().await;
            });
        }
        assert_eq!(starts.load(Ordering::SeqCst), 2, "once per runtime, not once per call");
    }

    #[test]
    fn topics_are_hex_sha256_of_the_identity() {
        let topic = topic_of(&RecordKey::new("ns:", None, "k", None));
        assert_eq!(topic.len(), 64);
        assert!(topic.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(topic, topic_of(&RecordKey::new("ns:", None, "l", None)));
    }
}
