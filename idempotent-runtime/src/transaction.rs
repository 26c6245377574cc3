//! A handler's database transaction, committed together with its idempotency record.
//!
//! A handler of a keyed write takes a `Transaction` (feature `postgres`, with a `PostgresStore`
//! as the store, alone or in a [`CachedStore`](crate::CachedStore)) and runs its statements in
//! it. Once the handler has returned and its response has been captured, the engine settles the
//! transaction itself:
//!
//! - **A response the route stores** (its cache policy keeps the status): the record is
//!   completed in the same transaction, then it commits. The handler's writes and the record
//!   become visible together or not at all, so a crash after the commit never runs the request
//!   again (the retry replays the record), and a crash before it leaves neither (the retry runs
//!   once, from scratch).
//! - **A response the route does not store** (a 500 under `cache = "success"`, a 4xx under the
//!   default): the transaction is rolled back, then the key is released. The handler's writes
//!   are undone; its client still gets the response, and a retry runs again.
//!
//! # When the transaction does not commit
//!
//! The client never gets a response whose writes were rolled back:
//!
//! - **Fenced**: the handler outlived its lease (renewals did not reach the store) and another
//!   execution took the key over. The transaction rolls back, and the client (and every
//!   duplicate waiting in this process) gets 409 `idempotency_in_flight` with `Retry-After`;
//!   its retry replays the other execution's response.
//! - **Store failure**: the completion or the `COMMIT` failed or timed out (the store timeout
//!   bounds both). The answer is 503 `idempotency_store_unavailable` and the key is released.
//!   Whether a failed `COMMIT` happened is unknown to this process: if it did, the record is
//!   completed and the retry replays it; if not, the retry runs.
//! - **Still held**: the handler returned while its `Transaction` lived on (moved into a
//!   task, a struct or the response body). It is rolled back, the key released, and the
//!   answer is 500 `idempotency_handler_failed`, logged as an `ERROR`. Whatever the holder runs
//!   in it later is never committed: once dropped, its connection is closed.
//! - **Panic**: the handler's transaction is rolled back and the key released (500
//!   `idempotency_handler_failed`, as for any panic).
//!
//! A connection whose transaction was neither committed nor rolled back never goes back to the
//! pool: it is closed, and the server rolls the transaction back.
//!
//! # Where a transaction is given
//!
//! To the handler of a request the engine executes once: a keyed write of an `#[idempotent]`
//! handler or of a handler behind [`IdempotentMiddleware`](crate::IdempotentMiddleware).
//! Anywhere else the extractor fails with 500 `idempotency_transaction_unavailable` (and a
//! `WARN`, once per reason, [`NoTransaction`]) and the handler does not run: a request without
//! a key (make such routes `required = true`), an unprotected route, a store that cannot open
//! transactions, a second `Transaction` in one handler, or the store down under
//! [`fail_open`](crate::IdempotencyBuilder::fail_open). It never falls back to a plain
//! transaction, which would commit without the record and lose the guarantee silently.
//!
//! # Limits
//!
//! - Only statements run in the transaction are covered, on the database that holds the
//!   records. Calls to other systems (a payment provider, a queue, another database) are not:
//!   forward the key to them ([`IdempotencyKey`](crate::IdempotencyKey)).
//! - Do not run `COMMIT`, `ROLLBACK` or `BEGIN` in it yourself (`SAVEPOINT`s are fine).
//! - Each running handler holds one connection of the store's pool until it is settled: size
//!   the pool (`PostgresStoreBuilder::pool_size`)
//!   above the handlers that run at once, with room for claims and lease renewals.
//! - It runs at the database's default isolation level (`READ COMMITTED` unless configured);
//!   a `SET TRANSACTION ISOLATION LEVEL` must be the handler's first statement. Under
//!   `REPEATABLE READ` or `SERIALIZABLE` a takeover during the handler can fail the commit
//!   (503) rather than fence it (409).
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # mod example {
//! use actix_web::{web, App, HttpResponse};
//! use idempotent_runtime::{Idempotency, IdempotentMiddleware, PostgresStore, Transaction};
//!
//! // With `#[idempotent(required = true)]`, take it the same way.
//! async fn create_order(tx: Transaction, order: web::Json<serde_json::Value>) -> HttpResponse {
//!     let row = tx
//!         .query_one("INSERT INTO orders (item) VALUES ($1) RETURNING id", &[&order["item"].as_str()])
//!         .await;
//!     match row {
//!         // Committed with the record once this response is captured.
//!         Ok(row) => HttpResponse::Created().json(serde_json::json!({ "id": row.get::<_, i64>(0) })),
//!         // Not stored: the transaction rolls back and a retry runs again.
//!         Err(_) => HttpResponse::ServiceUnavailable().finish(),
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let store = PostgresStore::new("postgres://app@db.internal/app").expect("a valid URL");
//! store.migrate().await.expect("the schema");
//! let idempotency = Idempotency::builder().store(store).build();
//! let app = move || {
//!     App::new().app_data(idempotency.clone()).service(
//!         web::scope("").wrap(IdempotentMiddleware::new().required(true)).route("/orders", web::post().to(create_order)),
//!     )
//! };
//! actix_web::HttpServer::new(app).bind("127.0.0.1:8080")?.run().await
//! # }
//! # }
//! ```

use actix_web::HttpResponse;

use crate::flight::Shared;
use crate::observe::Outcome;

#[cfg(not(feature = "postgres"))]
pub(crate) use self::disabled::{returned, withdraw, Returned, Slot};
#[cfg(feature = "postgres")]
pub use self::enabled::Transaction;
#[cfg(feature = "postgres")]
pub(crate) use self::enabled::{returned, withdraw, Returned, Slot};

/// Why a handler's `Transaction` cannot be given: the reason of a 500
/// `idempotency_transaction_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoTransaction {
    /// The engine does not execute this request once: it carries no key, its route is neither
    /// `#[idempotent]` nor behind `IdempotentMiddleware`, or the store is down under
    /// `fail_open`.
    #[error(
        "the request is not executed once by the idempotency engine (no key: make the route `required = true`; \
         a route neither `#[idempotent]` nor behind `IdempotentMiddleware`; or the store is down under `fail_open`)"
    )]
    NotProtected,
    /// The configured store cannot open transactions.
    #[error("the idempotency store cannot open transactions: use `PostgresStore`, alone or in a `CachedStore`")]
    UnsupportedStore,
    /// The handler takes more than one `Transaction`.
    #[error("the handler takes more than one `Transaction`")]
    AlreadyTaken,
}

/// The answer when the handler's transaction did not commit: its client's response, what its
/// duplicates get, and the outcome. The key was already released when it had to be.
pub(crate) struct Refused {
    pub(crate) response: HttpResponse,
    pub(crate) shared: Shared,
    pub(crate) outcome: Outcome,
}

#[cfg(feature = "postgres")]
mod enabled {
    use std::cell::RefCell;
    use std::future::ready;
    use std::ops::Deref;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    use actix_web::{dev, FromRequest, HttpMessage, HttpRequest};
    use futures_util::future::LocalBoxFuture;

    use super::{NoTransaction, Refused};
    use crate::config::Idempotency;
    use crate::engine::store_call;
    use crate::error::IdempotencyError;
    use crate::flight::Shared;
    use crate::observe::{self, Outcome};
    use crate::record::Record;
    use crate::store::{FencingToken, PostgresTransaction, RecordKey, StoreError, TransactionalStore};

    /// The database transaction of the request a handler is running for, as an extractor
    /// (feature `postgres`): run the handler's statements in it (it dereferences to a
    /// [`tokio_postgres::Client`]), and the engine commits them together with the idempotency
    /// record, or rolls them back. See the [module documentation](super) for what happens
    /// when, and where it is available.
    ///
    /// Drop it before the handler returns (taken as an argument, it is): one still held then
    /// fails the request and is rolled back. It is `Send` and `Sync`, so the handler can pass
    /// `&Transaction` (or the client it dereferences to) into `Send` futures.
    ///
    /// # Errors
    ///
    /// As an extractor: 500 `idempotency_transaction_unavailable` where no transaction can be
    /// given ([`NoTransaction`]); 503 `idempotency_store_unavailable` when `BEGIN` fails or no
    /// connection can be had within the store timeout. The handler does not run, and the key
    /// is released.
    pub struct Transaction {
        /// `Some` until dropped, when it goes back to the engine.
        transaction: Option<PostgresTransaction>,
        held: Arc<Mutex<Held>>,
    }

    impl Deref for Transaction {
        type Target = tokio_postgres::Client;

        fn deref(&self) -> &tokio_postgres::Client {
            self.transaction
                .as_deref()
                .expect("a Transaction holds its transaction until it is dropped")
        }
    }

    impl std::fmt::Debug for Transaction {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Transaction").finish_non_exhaustive()
        }
    }

    impl Drop for Transaction {
        fn drop(&mut self) {
            let Some(transaction) = self.transaction.take() else {
                return;
            };
            let late = {
                let mut held = lock(&self.held);
                match *held {
                    Held::Lent => {
                        *held = Held::Returned(transaction);
                        None
                    }
                    _ => Some(transaction),
                }
            };
            // Given back after the engine settled the request: dropped, it closes its
            // connection, so nothing run in it since is ever committed.
            drop(late);
        }
    }

    impl FromRequest for Transaction {
        type Error = IdempotencyError;
        type Future = LocalBoxFuture<'static, Result<Self, IdempotencyError>>;

        fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
            let offered = req.extensions().get::<Offered>().map(|offered| Rc::clone(&offered.0));
            match offered {
                Some(offer) => Box::pin(offer.lend(req.clone())),
                None => Box::pin(ready(Err(unavailable(not_offered(req))))),
            }
        }
    }

    /// Why a request has no offer: the store of its app's configuration tells a store that
    /// cannot open transactions from a request the engine does not execute.
    fn not_offered(req: &HttpRequest) -> NoTransaction {
        match Idempotency::for_request(req).store().transactions() {
            Some(_) => NoTransaction::NotProtected,
            None => NoTransaction::UnsupportedStore,
        }
    }

    fn unavailable(reason: NoTransaction) -> IdempotencyError {
        static WARNED: [AtomicBool; 3] = [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)];
        let index = match reason {
            NoTransaction::NotProtected => 0,
            NoTransaction::UnsupportedStore => 1,
            NoTransaction::AlreadyTaken => 2,
        };
        if !WARNED[index].swap(true, Ordering::Relaxed) {
            tracing::warn!("a handler takes a `Transaction` and none can be given: {reason} (logged once)");
        }
        IdempotencyError::TransactionUnavailable { reason }
    }

    /// Where the handler's transaction is, shared by the extractor and the engine.
    // One per execution, already behind an `Arc`: boxing the transaction would only add an
    // allocation.
    #[allow(clippy::large_enum_variant)]
    enum Held {
        /// The handler has taken none (yet).
        Idle,
        /// The handler holds it.
        Lent,
        /// The handler dropped it: the engine settles it.
        Returned(PostgresTransaction),
        /// The engine has settled the request; one given back now is dropped (closed).
        Closed,
    }

    fn lock(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
        held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the engine offers the handler of one execution.
    struct Offer {
        config: Idempotency,
        handler: &'static str,
        key: RecordKey,
        held: Arc<Mutex<Held>>,
        /// Set by the extractor, for the app's error hook when the transaction does not commit
        /// (the engine's own request went into the handler). It points back at the extensions
        /// that hold the offer: the engine's [`Slot`] takes it out when it is dropped.
        request: RefCell<Option<HttpRequest>>,
    }

    /// In the request's extensions while the engine runs the handler.
    struct Offered(Rc<Offer>);

    impl Offer {
        async fn lend(self: Rc<Self>, req: HttpRequest) -> Result<Transaction, IdempotencyError> {
            {
                let mut held = lock(&self.held);
                if !matches!(*held, Held::Idle) {
                    return Err(unavailable(NoTransaction::AlreadyTaken));
                }
                *held = Held::Lent;
            }
            let begun = match self.store() {
                Ok(store) => store_call(&self.config, "begin", &self.key, store.begin()).await,
                Err(error) => Err(error),
            };
            let Ok(transaction) = begun else {
                *lock(&self.held) = Held::Idle;
                return Err(self.config.store_unavailable());
            };
            *self.request.borrow_mut() = Some(req);
            Ok(Transaction {
                transaction: Some(transaction),
                held: Arc::clone(&self.held),
            })
        }

        fn store(&self) -> Result<&dyn TransactionalStore, StoreError> {
            self.config
                .store()
                .transactions()
                .ok_or_else(|| StoreError::Unavailable("the store cannot open transactions".into()))
        }
    }

    /// The engine's end of an offer: settles the handler's transaction, and closes the offer
    /// when dropped.
    pub(crate) struct Slot {
        offer: Rc<Offer>,
    }

    impl Slot {
        /// Offers a transaction to `handler`, about to run for `key`, when the store can open
        /// one: the [`Transaction`] extractor finds the offer in the request's extensions.
        /// Other stores cost nothing.
        pub(crate) fn offer(
            config: &Idempotency,
            handler: &'static str,
            key: &RecordKey,
            req: &HttpRequest,
        ) -> Option<Self> {
            config.store().transactions()?;
            let offer = Rc::new(Offer {
                config: config.clone(),
                handler,
                key: key.clone(),
                held: Arc::new(Mutex::new(Held::Idle)),
                request: RefCell::new(None),
            });
            req.extensions_mut().insert(Offered(Rc::clone(&offer)));
            Some(Self { offer })
        }

        /// The answer for `error`, through the app's hook when the extractor left the request.
        fn refused(&self, error: &IdempotencyError, shared: Shared, outcome: Outcome) -> Refused {
            let response = match &*self.offer.request.borrow() {
                Some(req) => self.offer.config.error_response(error, req),
                None => error.problem_response(error.default_status()),
            };
            Refused {
                response,
                shared,
                outcome,
            }
        }

        async fn release(&self, token: FencingToken) {
            crate::engine::release(&self.offer.config, &self.offer.key, token).await;
        }

        async fn roll_back(&self, transaction: PostgresTransaction) {
            // A failure is counted and logged, and closes the connection: rolled back as well.
            let _ = store_call(&self.offer.config, "rollback", &self.offer.key, transaction.rollback()).await;
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            drop(self.offer.request.borrow_mut().take());
            // A transaction given back but not settled (a panic, a capture that failed): dropped,
            // it closes its connection, which rolls it back.
            let left = std::mem::replace(&mut *lock(&self.offer.held), Held::Closed);
            drop(left);
        }
    }

    /// The handler's transaction once the handler returned, to complete the record in.
    pub(crate) struct Returned {
        transaction: PostgresTransaction,
        slot: Slot,
    }

    /// Settles what the handler left once it returned: `Ok(Some)` is a transaction to complete
    /// a `storable` outcome in, `Ok(None)` means there is none (the handler took none, or its
    /// outcome is not stored and it was rolled back: release the key as usual). A transaction
    /// the handler still holds fails the request: the key is released, `Err` is the answer.
    pub(crate) async fn returned(
        slot: Option<Slot>,
        storable: bool,
        token: FencingToken,
    ) -> Result<Option<Returned>, Refused> {
        match slot {
            None => Ok(None),
            // Boxed, so that the future of every execution is not as large as this one.
            Some(slot) => Box::pin(settle(slot, storable, token)).await,
        }
    }

    async fn settle(slot: Slot, storable: bool, token: FencingToken) -> Result<Option<Returned>, Refused> {
        let held = std::mem::replace(&mut *lock(&slot.offer.held), Held::Closed);
        match held {
            Held::Idle | Held::Closed => Ok(None),
            Held::Returned(transaction) if storable => Ok(Some(Returned { transaction, slot })),
            Held::Returned(transaction) => {
                slot.roll_back(transaction).await;
                Ok(None)
            }
            Held::Lent => {
                tracing::error!(
                    handler = slot.offer.handler,
                    "the handler returned while still holding its Transaction: rolled back, key released, a retry will run again"
                );
                slot.release(token).await;
                let error = IdempotencyError::HandlerFailed;
                Err(slot.refused(&error, Shared::Failed(error.clone()), Outcome::Released))
            }
        }
    }

    impl Returned {
        /// Completes the record in the handler's transaction and commits. `Err`: it did not
        /// commit (fenced, or the store failed; the key was then released), and the answer.
        pub(crate) async fn complete(
            self,
            token: FencingToken,
            record: Arc<Record>,
            ttl: Duration,
        ) -> Result<(), Refused> {
            // Boxed, so that the future of every execution is not as large as this one.
            Box::pin(self.commit(token, record, ttl)).await
        }

        async fn commit(self, token: FencingToken, record: Arc<Record>, ttl: Duration) -> Result<(), Refused> {
            let Self { transaction, slot } = self;
            let Offer {
                config, handler, key, ..
            } = &*slot.offer;
            let completed = match slot.offer.store() {
                Ok(store) => {
                    let completion = store.complete_in(transaction, key, token, record, ttl);
                    store_call(config, "complete", key, completion).await
                }
                Err(error) => Err(error),
            };
            match completed {
                Ok(true) => Ok(()),
                Ok(false) => {
                    config.inner.counters.fenced_completions.fetch_add(1, Ordering::Relaxed);
                    observe::fenced_completion(handler);
                    tracing::warn!(
                        ?key,
                        "lease lapsed and another execution took the key over: the handler's transaction was rolled back"
                    );
                    Err(slot.refused(&config.in_flight(), Shared::Busy, Outcome::InFlight))
                }
                Err(_) => {
                    slot.release(token).await;
                    let error = config.store_unavailable();
                    Err(slot.refused(&error, Shared::Failed(error.clone()), Outcome::StoreError))
                }
            }
        }
    }

    /// Takes the middleware's offer away from a request an annotated handler takes over: that
    /// handler's engine offers its own, or, running the request unprotected, none.
    pub(crate) fn withdraw(req: &HttpRequest) {
        req.extensions_mut().remove::<Offered>();
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_transaction_can_be_used_from_send_futures() {
            fn send_and_sync<T: Send + Sync>() {}
            send_and_sync::<Transaction>();
        }
    }
}

/// Without the `postgres` feature no store can open transactions: nothing is ever offered.
#[cfg(not(feature = "postgres"))]
mod disabled {
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::HttpRequest;

    use super::Refused;
    use crate::config::Idempotency;
    use crate::record::Record;
    use crate::store::{FencingToken, RecordKey};

    pub(crate) enum Slot {}

    impl Slot {
        pub(crate) fn offer(_: &Idempotency, _: &'static str, _: &RecordKey, _: &HttpRequest) -> Option<Self> {
            None
        }
    }

    /// As the enabled slot's, whose drop closes the offer (the engine drops it on a panic).
    impl Drop for Slot {
        fn drop(&mut self) {
            match *self {}
        }
    }

    pub(crate) enum Returned {}

    pub(crate) async fn returned(slot: Option<Slot>, _: bool, _: FencingToken) -> Result<Option<Returned>, Refused> {
        match slot {
            None => Ok(None),
            Some(slot) => match slot {},
        }
    }

    impl Returned {
        pub(crate) async fn complete(self, _: FencingToken, _: Arc<Record>, _: Duration) -> Result<(), Refused> {
            match self {}
        }
    }

    pub(crate) fn withdraw(_: &HttpRequest) {}
}
