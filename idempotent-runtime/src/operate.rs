//! For operators: look at what the store holds for a key, and forget it.
//!
//! A support engineer asked "did this request go through?", or a client stuck with a stored
//! error response that should be retried after a fix, needs to reach one record. These work
//! on every store of this crate (a store of your own opts in through [`Store::forget`](crate::Store::forget)).
//!
//! ```
//! use idempotent_runtime::store::Lookup;
//! use idempotent_runtime::Idempotency;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), idempotent_runtime::StoreError> {
//! let idempotency = Idempotency::builder().build();
//! let key = idempotency.record_key(Some("tenant-7"), "3f1c8a2e-order-retry");
//! match idempotency.inspect(&key).await? {
//!     Lookup::Absent => println!("never used, expired or released"),
//!     Lookup::InFlight { .. } => println!("running now"),
//!     Lookup::Completed(record) => println!("completed: {:?}", record.completion),
//! }
//! let was_held = idempotency.forget(&key).await?;
//! assert!(!was_held);
//! # Ok(())
//! # }
//! ```
//!
//! Routes with `on_mismatch = "execute"` keep one record per (key, request): their identity
//! includes the request's fingerprint and is not reachable from the key alone. Work records
//! are reached through [`crate::work::Work::record_key`].

use crate::config::Idempotency;
use crate::store::{Lookup, RecordKey, StoreError};

impl Idempotency {
    /// The store identity of an HTTP request's key under this configuration's namespace:
    /// `tenant` as the tenant resolver returns it for `scope = "tenant"` routes, `None` for
    /// global ones.
    pub fn record_key(&self, tenant: Option<&str>, key: &str) -> RecordKey {
        RecordKey::new(&self.inner.namespace, tenant, key, None)
    }

    /// What the store holds for `key`: nothing, a running execution, or a completed record
    /// (the stored response, or a tombstone).
    ///
    /// # Errors
    ///
    /// The store's, e.g. [`StoreError::Unavailable`].
    pub async fn inspect(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        self.inner.store.lookup(key).await
    }

    /// Deletes the record, claim or memory of a release that the store holds for `key`, so
    /// the next request with the key runs as if it were new. Returns whether anything was held.
    ///
    /// A running execution of the key is not stopped, but can no longer store its result.
    /// Copies held by [`crate::CachedStore`] in other processes stay until their local ttl.
    ///
    /// # Errors
    ///
    /// The store's; [`StoreError::Unsupported`] for a store that does not implement
    /// [`Store::forget`](crate::Store::forget).
    pub async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let forgotten = self.inner.store.forget(key).await?;
        tracing::info!(?key, forgotten, "idempotency key forgotten by an operator");
        Ok(forgotten)
    }
}
