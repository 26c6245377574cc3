//! Transactional completion against a real PostgreSQL, through real HTTP: the handler's
//! writes in its `Transaction` and the idempotency record commit together or not at all.
//!
//! The crash tests run the `transactional_orders` recipe as a process of its own and kill it
//! (SIGKILL) before, then after, the commit; the others mount the recipe (or handlers of their
//! own) in servers of this process. Every test checks the `orders` table itself, and counts the
//! sessions of its server in `pg_stat_activity` (each test gives its server's connections an
//! `application_name` of their own).
//!
//! PostgreSQL at 127.0.0.1:5432 (and PgBouncer at 127.0.0.1:6432 for one test, as
//! `scripts/ci-services.sh` starts it). Under `CI=true` a missing server fails the test;
//! elsewhere the test prints a skip notice and passes.
#![cfg(feature = "postgres")]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::tokio_postgres::{self, NoTls};
use idempotent_actix::{
    idempotent, CachedStore, Claim, FencingToken, Fingerprint, Idempotency, IdempotentMiddleware, Lookup, MemoryStore,
    PostgresStore, Record, RecordKey, Store, StoreError, Transaction, TransactionalStore,
};
use serde_json::{json, Value};

#[path = "support/managed.rs"]
mod managed;
#[path = "support/orders.rs"]
mod orders;
#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/services.rs"]
mod services;
#[path = "http/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../examples/recipes/transactional_orders.rs"]
mod transactional_orders;

use orders::Orders as Process;
use support::{send_concurrently, send_keyed, serve_unconfigured, Reply, TestServer};
use transactional_orders::State;

/// The lease of every server here: a dead or fenced execution's key frees up after it.
const LEASE: Duration = Duration::from_secs(1);
/// The longest a test waits for the database to show what it expects.
const SETTLE: Duration = Duration::from_secs(10);

fn available() -> bool {
    services::server_up("PostgreSQL", services::POSTGRES_ADDR)
}

/// The database, with `application` as the name of every connection made from this URL.
fn database_url(application: &str) -> String {
    format!(
        "{}?application_name={application}",
        services::postgres_url(services::POSTGRES_ADDR)
    )
}

/// A connection of the test's own, to look at the tables and sessions; the `orders` table
/// exists once it returns.
async fn database() -> tokio_postgres::Client {
    let url = database_url("idempotent-tests");
    transactional_orders::create_schema(&url)
        .await
        .expect("the orders table");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("PostgreSQL answers");
    actix_web::rt::spawn(connection);
    client
}

async fn count(db: &tokio_postgres::Client, sql: &str, param: &str) -> i64 {
    db.query_one(sql, &[&param]).await.expect("a count").get(0)
}

async fn orders_of(db: &tokio_postgres::Client, item: &str) -> i64 {
    count(db, "SELECT count(*) FROM orders WHERE item = $1", item).await
}

async fn order_ids_of(db: &tokio_postgres::Client, item: &str) -> Vec<i64> {
    let rows = db
        .query("SELECT id FROM orders WHERE item = $1", &[&item])
        .await
        .expect("orders");
    rows.iter().map(|row| row.get(0)).collect()
}

/// Sessions of `application` inside a transaction that is waiting for its client.
async fn idle_in_transaction(db: &tokio_postgres::Client, application: &str) -> i64 {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'";
    count(db, sql, application).await
}

/// Sessions of `application` whose open transaction has written something.
async fn writing_transactions(db: &tokio_postgres::Client, application: &str) -> i64 {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND backend_xid IS NOT NULL";
    count(db, sql, application).await
}

/// The state of `key`'s row (`running` or `completed`), as the recipe's store names it.
async fn record_state(db: &tokio_postgres::Client, key: &str) -> Option<String> {
    let store = PostgresStore::new(&database_url("unused")).expect("a valid URL");
    let id = store.record_id(&RecordKey::new("", None, key, None));
    let row = db
        .query_opt("SELECT state FROM idempotency_records WHERE id = $1", &[&id])
        .await
        .expect("a lookup");
    row.map(|row| row.get(0))
}

/// Waits until `check` holds, for up to [`SETTLE`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn new_order(item: &str) -> Value {
    json!({ "item": item, "quantity": 2 })
}

/// POSTs an order with `key` to `url` on a connection of its own.
async fn post_order(url: &str, key: &str, item: &str) -> Reply {
    let request = awc::Client::builder()
        .timeout(support::EXCHANGE_TIMEOUT)
        .finish()
        .post(url);
    send_keyed(request, key, &new_order(item)).await
}

/// The recipe's routes in a server of this process, on the store `idempotency` uses.
fn recipe_server(idempotency: Idempotency, state: State) -> (TestServer, web::Data<State>) {
    let state = web::Data::new(state);
    let server = support::serve_recipe(state.clone(), idempotency, transactional_orders::configure);
    (server, state)
}

/// The recipe's own configuration (a cached PostgreSQL store), its connections named `application`.
async fn recipe_idempotency(application: &str) -> Idempotency {
    transactional_orders::idempotency(&database_url(application), LEASE)
        .await
        .expect("the store migrates")
}

fn assert_created(reply: &Reply, item: &str) {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(reply.json()["item"], item);
}

// ---------------------------------------------------------------------------------------------
// Crashes: the recipe as a process, killed with SIGKILL

fn start_recipe(database_url: &str, extra: &[&str]) -> Process {
    let lease = LEASE.as_millis().to_string();
    let mut args = vec!["--database-url", database_url, "--lease-ms", &lease];
    args.extend_from_slice(extra);
    Process::start_example("transactional_orders", &args)
}

/// A request whose server is about to die: its outcome is whatever the connection gives.
fn doomed_request(url: String, key: &str, item: &str) -> actix_web::rt::task::JoinHandle<bool> {
    let body = new_order(item).to_string();
    let key = key.to_owned();
    actix_web::rt::spawn(async move {
        let request = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish()
            .post(url);
        let sent = request
            .insert_header(("Idempotency-Key", key))
            .content_type("application/json")
            .send_body(body)
            .await;
        sent.is_ok()
    })
}

#[actix_web::test]
async fn killed_before_the_commit_nothing_stays_and_the_retry_runs_once_from_scratch() {
    if !available() {
        return;
    }
    let db = database().await;
    let application = services::unique("tx-killed-before-commit");
    let url = database_url(&application);
    let (key, item) = (services::unique("order"), services::unique("lamp"));

    let mut server = start_recipe(&url, &["--pause-after-insert-ms", "60000"]);
    let doomed = doomed_request(server.url("/orders"), &key, &item);
    server.wait_for_line("inserted, not committed", SETTLE).await;
    assert_eq!(
        writing_transactions(&db, &application).await,
        1,
        "the order is inserted in an open transaction"
    );
    server.kill();
    assert!(
        !doomed.await.expect("the request task"),
        "the server died before answering"
    );

    eventually("the dead server's sessions end", || async {
        count(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &application,
        )
        .await
            == 0
    })
    .await;
    assert_eq!(orders_of(&db, &item).await, 0, "the insert was never committed");
    assert_eq!(
        record_state(&db, &key).await.as_deref(),
        Some("running"),
        "the record is still a claim"
    );

    let restarted = start_recipe(&url, &[]);
    let started = Instant::now();
    let retry = post_order(&restarted.url("/orders"), &key, &item).await;
    assert_created(&retry, &item);
    assert!(!retry.is_replay(), "the retry ran the request");
    assert_eq!(
        order_ids_of(&db, &item).await,
        vec![retry.json()["id"].as_i64().unwrap()]
    );
    assert_eq!(record_state(&db, &key).await.as_deref(), Some("completed"));
    eprintln!("retry answered {:?} after the restart", started.elapsed());

    let again = post_order(&restarted.url("/orders"), &key, &item).await;
    assert!(again.is_replay());
    assert_eq!(again.body, retry.body);
    assert_eq!(orders_of(&db, &item).await, 1);
}

#[actix_web::test]
async fn killed_right_after_the_commit_the_retry_replays_and_no_second_order_exists() {
    if !available() {
        return;
    }
    let db = database().await;
    let application = services::unique("tx-killed-after-commit");
    let url = database_url(&application);
    let (key, item) = (services::unique("order"), services::unique("lamp"));

    let mut server = start_recipe(&url, &["--pause-after-insert-ms", "300"]);
    // The answer never reaches the client, whenever the kill lands: the crash is after the
    // commit and before the client heard anything.
    let to_server = proxy::Proxy::start(server.base.trim_start_matches("http://")).await;
    to_server.drop_answers(1);
    let request = doomed_request(format!("http://{}/orders", to_server.addr()), &key, &item);
    server.wait_for_line("inserted, not committed", SETTLE).await;
    assert_eq!(record_state(&db, &key).await.as_deref(), Some("running"));
    let deadline = Instant::now() + SETTLE;
    while record_state(&db, &key).await.as_deref() != Some("completed") {
        assert!(Instant::now() < deadline, "the record completes");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    assert!(!request.await.expect("the request task"), "the client got no answer");
    assert_eq!(orders_of(&db, &item).await, 1, "the order committed with the record");

    let restarted = start_recipe(&url, &[]);
    let retry = post_order(&restarted.url("/orders"), &key, &item).await;
    assert_created(&retry, &item);
    assert!(retry.is_replay(), "the retry replays the committed record");
    assert_eq!(
        order_ids_of(&db, &item).await,
        vec![retry.json()["id"].as_i64().unwrap()]
    );
}

// ---------------------------------------------------------------------------------------------
// Fencing, outcomes that are not stored, duplicates

/// A replica whose lease renewals never reach the store (a partition): its lease lapses while
/// its handler runs. Everything else, transactions included, is the PostgreSQL store's.
struct RenewalsLost(PostgresStore);

#[async_trait::async_trait]
impl Store for RenewalsLost {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        self.0.claim(key, fingerprint, lease).await
    }

    async fn renew(&self, _: &RecordKey, _: FencingToken, _: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.0.complete(key, token, record, ttl).await
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        self.0.release(key, token).await
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        self.0.lookup(key).await
    }

    fn transactions(&self) -> Option<&dyn TransactionalStore> {
        self.0.transactions()
    }
}

#[actix_web::test]
async fn a_fenced_completion_rolls_the_handlers_writes_back_and_answers_409() {
    if !available() {
        return;
    }
    let db = database().await;
    let application = services::unique("tx-fenced");
    let partitioned = PostgresStore::new(&database_url(&application)).expect("a valid URL");
    let slow = Idempotency::builder()
        .store(RenewalsLost(partitioned))
        .lease(LEASE)
        .build();
    let slow_state = State::default().pausing_after_insert(LEASE * 3);
    let (slow_replica, slow_runs) = recipe_server(slow.clone(), slow_state);
    let (other_replica, _) = recipe_server(recipe_idempotency(&application).await, State::default());
    let (key, item) = (services::unique("order"), services::unique("lamp"));

    let first = actix_web::rt::spawn({
        let (url, key, item) = (slow_replica.url("/orders"), key.clone(), item.clone());
        async move { post_order(&url, &key, &item).await }
    });
    support::wait_until(|| slow_runs.executions() == 1).await;
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    let takeover = post_order(&other_replica.url("/orders"), &key, &item).await;
    assert_created(&takeover, &item);
    assert!(!takeover.is_replay(), "the other replica ran the request itself");

    let first = first.await.expect("the first client");
    assert_eq!(first.status, StatusCode::CONFLICT, "{}", first.text());
    assert_eq!(first.problem_code(), "idempotency_in_flight");
    assert!(first.header("retry-after").is_some());
    assert_eq!(slow.stats().fenced_completions, 1);
    assert_eq!(
        order_ids_of(&db, &item).await,
        vec![takeover.json()["id"].as_i64().unwrap()],
        "only the other replica's order exists"
    );

    let retry = post_order(&slow_replica.url("/orders"), &key, &item).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, takeover.body);
}

#[actix_web::test]
async fn an_outcome_that_is_not_stored_rolls_back_and_releases_so_the_retry_runs_again() {
    if !available() {
        return;
    }
    let db = database().await;
    let application = services::unique("tx-not-stored");
    let state = State::default().failing_first_attempts();
    let (server, runs) = recipe_server(recipe_idempotency(&application).await, state);
    let (key, item) = (services::unique("order"), services::unique("lamp"));

    let failed = post_order(&server.url("/orders"), &key, &item).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", failed.text());
    assert_eq!(orders_of(&db, &item).await, 0, "the 500's insert was rolled back");
    assert_ne!(record_state(&db, &key).await.as_deref(), Some("completed"));
    assert_eq!(idle_in_transaction(&db, &application).await, 0);

    let retry = post_order(&server.url("/orders"), &key, &item).await;
    assert_created(&retry, &item);
    assert!(!retry.is_replay(), "the key was released: the retry ran");
    assert_eq!(runs.executions(), 2);
    assert_eq!(
        order_ids_of(&db, &item).await,
        vec![retry.json()["id"].as_i64().unwrap()]
    );

    let replay = post_order(&server.url("/orders"), &key, &item).await;
    assert!(replay.is_replay());
    assert_eq!(orders_of(&db, &item).await, 1);
}

#[actix_web::test]
async fn a_connection_lost_before_the_commit_answers_503_and_the_retry_runs_once() {
    if !available() {
        return;
    }
    let db = database().await;
    let application = services::unique("tx-connection-lost");
    let mut to_database = proxy::Proxy::start(services::POSTGRES_ADDR).await;
    let url = format!(
        "{}?application_name={application}",
        services::postgres_url(&to_database.addr())
    );
    let idempotency = transactional_orders::idempotency(&url, LEASE)
        .await
        .expect("the store migrates");
    let state = State::default().pausing_after_insert(Duration::from_millis(500));
    let (server, runs) = recipe_server(idempotency, state);
    let (key, item) = (services::unique("order"), services::unique("lamp"));

    let first = actix_web::rt::spawn({
        let (url, key, item) = (server.url("/orders"), key.clone(), item.clone());
        async move { post_order(&url, &key, &item).await }
    });
    // Once the order is inserted (not committed): a cut before the insert fails the handler's own
    // query, which answers its own 503.
    support::wait_until(|| runs.inserts() == 1).await;
    // Every connection of the store, the handler's transaction among them, is cut mid-handler.
    to_database.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    to_database.resume().await;
    let first = first.await.expect("the first client");
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE, "{}", first.text());
    assert_eq!(first.problem_code(), "idempotency_store_unavailable");
    assert_eq!(orders_of(&db, &item).await, 0, "the cut transaction never committed");

    let retry = post_order(&server.url("/orders"), &key, &item).await;
    assert_created(&retry, &item);
    assert!(!retry.is_replay(), "the key was released: the retry ran");
    assert_eq!(
        order_ids_of(&db, &item).await,
        vec![retry.json()["id"].as_i64().unwrap()]
    );
}

#[actix_web::test]
async fn two_hundred_duplicates_over_two_replicas_run_one_transaction_and_insert_one_order() {
    if !available() {
        return;
    }
    let db = database().await;
    let application = services::unique("tx-duplicates");
    let state = || State::default().pausing_after_insert(Duration::from_millis(300));
    let (first, first_runs) = recipe_server(recipe_idempotency(&application).await, state());
    let (second, second_runs) = recipe_server(recipe_idempotency(&application).await, state());
    let (key, item) = (services::unique("order"), services::unique("lamp"));
    let body = new_order(&item).to_string();

    let next = std::cell::Cell::new(0);
    let replies = send_concurrently(200, || {
        next.set(next.get() + 1);
        let server = if next.get() % 2 == 0 { &first } else { &second };
        let request = server
            .post("/orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json");
        (request, body.clone())
    })
    .await;

    for reply in &replies {
        assert_created(reply, &item);
        assert_eq!(reply.json()["id"], replies[0].json()["id"]);
    }
    assert_eq!(replies.iter().filter(|reply| !reply.is_replay()).count(), 1);
    assert_eq!(
        first_runs.executions() + second_runs.executions(),
        1,
        "one handler execution"
    );
    assert_eq!(orders_of(&db, &item).await, 1);
}

// ---------------------------------------------------------------------------------------------
// The connection of a transaction that was neither committed nor rolled back

/// Keeps a transaction alive after the handler returned, as a holder that outlives it.
#[post("/held")]
#[idempotent(required = true)]
async fn insert_and_keep_holding(tx: Transaction, item: web::Json<String>) -> HttpResponse {
    tx.execute("INSERT INTO orders (item, quantity) VALUES ($1, 1)", &[&*item])
        .await
        .expect("the insert");
    actix_web::rt::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Still in the transaction, after the request was settled: never committed.
        let _ = tx
            .execute("INSERT INTO orders (item, quantity) VALUES ($1, 2)", &[&"late"])
            .await;
        drop(tx);
    });
    HttpResponse::Created().finish()
}

#[post("/panics")]
#[idempotent(required = true)]
async fn insert_and_panic(tx: Transaction, item: web::Json<String>) -> HttpResponse {
    tx.execute("INSERT INTO orders (item, quantity) VALUES ($1, 1)", &[&*item])
        .await
        .expect("the insert");
    panic!("the handler fails mid-transaction");
}

/// A server of one pooled connection: had the connection of a transaction gone back to the
/// pool open, the next request would run (and commit) inside it.
fn single_connection_server(application: &str) -> TestServer {
    let store = PostgresStore::builder(&database_url(application))
        .pool_size(1)
        .build()
        .expect("a valid URL");
    let idempotency = Idempotency::builder().store(store).build();
    let state = web::Data::new(State::default());
    serve_unconfigured(move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(idempotency.clone())
            .app_data(state.clone())
            .service(insert_and_keep_holding)
            .service(insert_and_panic);
        transactional_orders::configure(cfg);
    })
}

async fn post_json(server: &TestServer, path: &str, key: &str, body: &Value) -> Reply {
    send_keyed(server.post(path), key, body).await
}

/// After `path` fails mid-transaction: no session of the server stays in a transaction, the
/// failed insert never commits, and the next request on the one pooled connection works.
async fn a_failed_transaction_never_returns_to_the_pool(path: &str) {
    let db = database().await;
    let application = services::unique("tx-never-pooled");
    let server = single_connection_server(&application);
    PostgresStore::new(&database_url(&application))
        .expect("a valid URL")
        .migrate()
        .await
        .expect("the schema");
    let (key, item) = (services::unique("failing"), services::unique("held"));

    let failed = post_json(&server, path, &key, &json!(item)).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", failed.text());
    assert_eq!(failed.problem_code(), "idempotency_handler_failed");
    eventually("no session of the server is left in a transaction", || async {
        idle_in_transaction(&db, &application).await == 0
    })
    .await;

    let next_item = services::unique("next");
    let next = post_order(&server.url("/orders"), &services::unique("order"), &next_item).await;
    assert_created(&next, &next_item);
    assert_eq!(orders_of(&db, &next_item).await, 1);
    assert_eq!(
        orders_of(&db, &item).await,
        0,
        "the failed request's insert never committed"
    );
    assert_eq!(
        orders_of(&db, "late").await,
        0,
        "nor anything run in it after the request"
    );
    assert_eq!(idle_in_transaction(&db, &application).await, 0);

    let retry = post_json(&server, path, &key, &json!(item)).await;
    assert_eq!(
        retry.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the key was released: the retry ran"
    );
}

#[actix_web::test]
async fn a_transaction_held_past_the_handlers_return_fails_the_request_and_is_never_pooled() {
    if available() {
        a_failed_transaction_never_returns_to_the_pool("/held").await;
    }
}

#[actix_web::test]
async fn a_handler_panicking_mid_transaction_leaves_no_open_transaction_in_the_pool() {
    if available() {
        a_failed_transaction_never_returns_to_the_pool("/panics").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Where a transaction is given

async fn create_identity(tx: Transaction, item: web::Json<String>) -> HttpResponse {
    let row = tx
        .query_one(
            "INSERT INTO orders (item, quantity) VALUES ($1, 1) RETURNING id",
            &[&*item],
        )
        .await
        .expect("the insert");
    HttpResponse::Created().json(json!({ "id": row.get::<_, i64>(0) }))
}

#[actix_web::test]
async fn a_handler_behind_the_middleware_commits_its_transaction_with_the_record() {
    if !available() {
        return;
    }
    let db = database().await;
    let idempotency = recipe_idempotency(&services::unique("tx-middleware")).await;
    let server = serve_unconfigured(move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(idempotency.clone()).service(
            web::scope("")
                .wrap(IdempotentMiddleware::new().required(true))
                .route("/identities", web::post().to(create_identity)),
        );
    });
    let (key, item) = (services::unique("identity"), services::unique("identity"));

    let first = post_json(&server, "/identities", &key, &json!(item)).await;
    let retry = post_json(&server, "/identities", &key, &json!(item)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(orders_of(&db, &item).await, 1);
}

#[post("/optional-key")]
#[idempotent]
async fn optional_key(tx: Transaction) -> HttpResponse {
    let _ = &*tx;
    HttpResponse::Created().finish()
}

#[actix_web::test]
async fn without_a_key_or_with_a_store_that_cannot_the_extractor_refuses_and_the_handler_does_not_run() {
    let unprotected = serve_unconfigured(move |cfg: &mut web::ServiceConfig| {
        let store = PostgresStore::new(&database_url("tx-unkeyed")).expect("a valid URL");
        cfg.app_data(Idempotency::builder().store(store).build())
            .service(optional_key);
    });
    let unkeyed = support::send(unprotected.post("/optional-key"), "").await;
    assert_eq!(unkeyed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(unkeyed.problem_code(), "idempotency_transaction_unavailable");
    assert!(unkeyed.text().contains("required = true"), "{}", unkeyed.text());

    let in_memory = serve_unconfigured(move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(Idempotency::builder().store(MemoryStore::default()).build())
            .service(optional_key);
    });
    let key = services::unique("k");
    let refused = send_keyed(in_memory.post("/optional-key"), &key, &json!({})).await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(refused.problem_code(), "idempotency_transaction_unavailable");
    assert!(refused.text().contains("PostgresStore"), "{}", refused.text());
    // Not stored: the request did not run.
    let again = send_keyed(in_memory.post("/optional-key"), &key, &json!({})).await;
    assert!(!again.is_replay());
}

#[actix_web::test]
async fn through_pgbouncer_in_transaction_mode_behind_a_local_cache_the_order_commits_once() {
    let urls = [managed::pgbouncer_url(), managed::postgres_url()];
    if !managed::available("PgBouncer (transaction pooling)", &urls, false) {
        return;
    }
    let db = database().await;
    let store = PostgresStore::builder(&managed::pgbouncer_url())
        .transaction_pooler(true)
        .build()
        .expect("a valid URL");
    store.migrate().await.expect("the migration runs through PgBouncer");
    let cached = CachedStore::new(store, 1 << 20);
    let idempotency = Idempotency::builder().store(cached.clone()).lease(LEASE).build();
    let (server, runs) = recipe_server(idempotency, State::default());
    let (key, item) = (services::unique("order"), services::unique("lamp"));

    let first = post_order(&server.url("/orders"), &key, &item).await;
    assert_created(&first, &item);
    assert_eq!(cached.cached_records(), 1, "the committed record is kept locally");
    let retry = post_order(&server.url("/orders"), &key, &item).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(runs.executions(), 1);
    assert_eq!(orders_of(&db, &item).await, 1);
}
