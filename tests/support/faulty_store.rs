//! A memory store whose calls can be made to fail, hang or refuse, the way a remote store's
//! outage, stall or lost lease looks to the engine. Faults can be switched on and off while a
//! server uses the store.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idempotent_actix::{Claim, FencingToken, Fingerprint, Lookup, MemoryStore, Record, RecordKey, Store, StoreError};

#[derive(Clone, Default)]
pub struct FaultyStore {
    pub inner: MemoryStore,
    pub faults: Arc<Faults>,
}

#[derive(Default)]
pub struct Faults {
    /// Every call fails as if the server were unreachable.
    pub down: AtomicBool,
    /// Every call hangs (for a minute: the engine's store timeout ends it first).
    pub hanging: AtomicBool,
    /// `complete` fails.
    pub failing_writes: AtomicBool,
    /// `renew` fails.
    pub failing_renewals: AtomicBool,
    /// `complete` answers that the claim was taken over.
    pub refusing_completions: AtomicBool,
    /// `renew` answers that the claim was lost.
    pub refusing_renewals: AtomicBool,
    /// `release` fails.
    pub failing_releases: AtomicBool,
}

impl FaultyStore {
    /// A fresh store with one fault on, e.g. `FaultyStore::with(|faults| &faults.down)`.
    pub fn with(fault: fn(&Faults) -> &AtomicBool) -> Self {
        let store = Self::default();
        fault(&store.faults).store(true, Ordering::SeqCst);
        store
    }

    fn on(&self, fault: fn(&Faults) -> &AtomicBool) -> bool {
        fault(&self.faults).load(Ordering::SeqCst)
    }

    async fn check(&self) -> Result<(), StoreError> {
        if self.on(|f| &f.hanging) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        if self.on(|f| &f.down) {
            return Err(StoreError::unavailable(std::io::Error::other("connection refused")));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        self.check().await?;
        self.inner.claim(key, fingerprint, lease).await
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        self.check().await?;
        if self.on(|f| &f.failing_renewals) {
            return Err(StoreError::unavailable(std::io::Error::other("renewal lost")));
        }
        Ok(!self.on(|f| &f.refusing_renewals) && self.inner.renew(key, token, lease).await?)
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.check().await?;
        if self.on(|f| &f.failing_writes) {
            return Err(StoreError::unavailable(std::io::Error::other("write failed")));
        }
        Ok(!self.on(|f| &f.refusing_completions) && self.inner.complete(key, token, record, ttl).await?)
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        self.check().await?;
        if self.on(|f| &f.failing_releases) {
            return Err(StoreError::unavailable(std::io::Error::other("release failed")));
        }
        self.inner.release(key, token).await
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        self.check().await?;
        self.inner.lookup(key).await
    }
}
