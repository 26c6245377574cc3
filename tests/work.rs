//! Idempotent work outside HTTP (`Idempotency::work`) and the operator API
//! (`Idempotency::inspect`, `Idempotency::forget`), on the in-memory store and on the real
//! Redis and PostgreSQL servers (skipped with a notice when one is missing, failed under
//! `CI=true`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{post, test, web, App, HttpResponse};
use idempotent_actix::store::Lookup;
use idempotent_actix::store::{PostgresStore, RedisStore};
use idempotent_actix::work::WorkError;
use idempotent_actix::{idempotent, Idempotency, IdempotencyError, MemoryStore};
use serde::{Deserialize, Serialize};

#[path = "support/services.rs"]
mod services;
use services::{postgres_url, redis_url, server_up, unique, POSTGRES_ADDR, REDIS_ADDR};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    invoice: u64,
    run: usize,
}

#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the card was declined")
    }
}

impl std::error::Error for Declined {}

/// Two configurations sharing one store, as two replicas would; `None` when its server is
/// missing (outside CI).
async fn replicas(store: &str) -> Option<(Idempotency, Idempotency)> {
    let namespace = unique("work");
    let build = |store: Arc<dyn idempotent_actix::Store>| {
        Idempotency::builder()
            .shared_store(store)
            .namespace(namespace.clone())
            .lease(Duration::from_millis(600))
            .wait_timeout(Duration::from_secs(10))
            .build()
    };
    match store {
        "memory" => {
            let store: Arc<dyn idempotent_actix::Store> = Arc::new(MemoryStore::default());
            Some((build(Arc::clone(&store)), build(store)))
        }
        "redis" => {
            if !server_up("Redis", REDIS_ADDR) {
                return None;
            }
            let prefix = format!("{}:", unique("work"));
            let redis = || -> Arc<dyn idempotent_actix::Store> {
                Arc::new(
                    RedisStore::builder(&redis_url(REDIS_ADDR))
                        .key_prefix(prefix.clone())
                        .build()
                        .unwrap(),
                )
            };
            Some((build(redis()), build(redis())))
        }
        "postgres" => {
            if !server_up("PostgreSQL", POSTGRES_ADDR) {
                return None;
            }
            let postgres = PostgresStore::new(&postgres_url(POSTGRES_ADDR)).unwrap();
            postgres.migrate().await.unwrap();
            let other = PostgresStore::new(&postgres_url(POSTGRES_ADDR)).unwrap();
            Some((build(Arc::new(postgres)), build(Arc::new(other))))
        }
        other => unreachable!("{other}"),
    }
}

const STORES: [&str; 3] = ["memory", "redis", "postgres"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_runs_once_per_key_and_later_runs_get_the_stored_value() {
    for store in STORES {
        let Some((one, other)) = replicas(store).await else {
            continue;
        };
        let runs = AtomicUsize::new(0);
        let charge = |config: &Idempotency| config.work("charge");
        let work = |_attempt| async {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, Declined>(Receipt { invoice: 42, run })
        };
        let first: Receipt = charge(&one).run("message-1", work).await.unwrap();
        let again: Receipt = charge(&one).run("message-1", work).await.unwrap();
        let elsewhere: Receipt = charge(&other).run("message-1", work).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{store}: one execution per key");
        assert_eq!(first, Receipt { invoice: 42, run: 1 });
        assert_eq!(again, first, "{store}");
        assert_eq!(elsewhere, first, "{store}: another replica gets the stored value");
        let next: Receipt = charge(&other).run("message-2", work).await.unwrap();
        assert_eq!(next.run, 2, "{store}: another key runs");
        let refund: Receipt = one.work("refund").run("message-1", work).await.unwrap();
        assert_eq!(refund.run, 3, "{store}: another kind of work never shares keys");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_duplicates_on_two_replicas_run_once() {
    for store in STORES {
        let Some((one, other)) = replicas(store).await else {
            continue;
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..300 {
            let config = if i % 2 == 0 { one.clone() } else { other.clone() };
            let runs = Arc::clone(&runs);
            tasks.push(tokio::spawn(async move {
                config
                    .work("storm")
                    .run("the-only-key", |_| async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                        Ok::<_, Declined>(Receipt { invoice: 7, run })
                    })
                    .await
            }));
        }
        for task in tasks {
            let receipt: Receipt = task.await.unwrap().expect("every duplicate gets the value");
            assert_eq!(receipt, Receipt { invoice: 7, run: 1 }, "{store}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{store}: 300 duplicates, one execution");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_releases_its_key_and_the_next_run_knows_an_attempt_started() {
    for store in STORES {
        let Some((one, _)) = replicas(store).await else {
            continue;
        };
        let work = one.work("charge");
        let failed = work
            .run("message-3", |attempt| async move {
                assert!(attempt.is_first_attempt());
                assert_eq!(attempt.key(), "message-3");
                Err::<Receipt, _>(Declined)
            })
            .await;
        assert!(
            matches!(failed, Err(WorkError::Failed(Declined))),
            "{store}: {failed:?}"
        );
        let retried: Receipt = work
            .run("message-3", |attempt| async move {
                assert!(!attempt.is_first_attempt(), "the failed run started");
                Ok::<_, Declined>(Receipt { invoice: 3, run: 2 })
            })
            .await
            .unwrap();
        assert_eq!(retried.run, 2, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_another_input_is_a_conflict_and_runs_nothing() {
    for store in STORES {
        let Some((one, _)) = replicas(store).await else {
            continue;
        };
        let runs = AtomicUsize::new(0);
        let work = |_| async {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, Declined>(Receipt { invoice: 1, run })
        };
        let invoice = |amount: u64| {
            one.work("charge")
                .input(&serde_json::json!({ "amount": amount }))
                .unwrap()
        };
        let _: Receipt = invoice(1999).run("message-4", work).await.unwrap();
        let same: Receipt = invoice(1999).run("message-4", work).await.unwrap();
        assert_eq!(same.run, 1);
        let other = invoice(2999).run::<Receipt, _, _, _>("message-4", work).await;
        match other {
            Err(WorkError::Refused(error)) => assert_eq!(error.code(), "idempotency_conflict", "{store}"),
            other => panic!("{store}: expected a conflict, got {other:?}"),
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_does_not_wait_is_refused_while_its_key_runs() {
    let (one, _) = replicas("memory").await.unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let one = one.clone();
        async move {
            one.work("slow")
                .run("message-5", |_| async move {
                    started_tx.send(()).unwrap();
                    finish_rx.await.unwrap();
                    Ok::<_, Declined>(Receipt { invoice: 5, run: 1 })
                })
                .await
        }
    });
    started_rx.await.unwrap();
    let refused = one
        .work("slow")
        .wait(false)
        .run::<Receipt, Declined, _, _>("message-5", |_| async { unreachable!("the key is running") })
        .await;
    match refused {
        Err(WorkError::Refused(error @ IdempotencyError::InFlight { .. })) => {
            assert_eq!(error.code(), "idempotency_in_flight")
        }
        other => panic!("expected in flight, got {other:?}"),
    }
    finish_tx.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap().run, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_run_releases_its_key_and_unwinds_in_the_caller() {
    let (one, _) = replicas("memory").await.unwrap();
    let panicked = tokio::spawn({
        let one = one.clone();
        async move {
            one.work("fragile")
                .run::<Receipt, Declined, _, _>("message-6", |_| async { panic!("boom") })
                .await
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic(), "the panic reaches the caller");
    let retried: Receipt = one
        .work("fragile")
        .run("message-6", |attempt| async move {
            assert!(!attempt.is_first_attempt());
            Ok::<_, Declined>(Receipt { invoice: 6, run: 2 })
        })
        .await
        .unwrap();
    assert_eq!(retried.run, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blank_key_is_refused_and_a_stored_value_of_another_type_is_reported() {
    let (one, _) = replicas("memory").await.unwrap();
    let blank = one
        .work("charge")
        .run::<Receipt, Declined, _, _>("  ", |_| async { unreachable!() })
        .await;
    match blank {
        Err(WorkError::Refused(error)) => assert_eq!(error.code(), "idempotency_key_invalid"),
        other => panic!("expected an invalid key, got {other:?}"),
    }
    let _: Receipt = one
        .work("charge")
        .run("message-7", |_| async {
            Ok::<_, Declined>(Receipt { invoice: 7, run: 1 })
        })
        .await
        .unwrap();
    let wrong = one
        .work("charge")
        .run::<Vec<String>, Declined, _, _>("message-7", |_| async { unreachable!() })
        .await;
    assert!(matches!(wrong, Err(WorkError::Json(_))), "{wrong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_inspects_and_forgets_a_work_key() {
    for store in STORES {
        let Some((one, other)) = replicas(store).await else {
            continue;
        };
        let work = one.work("charge").tenant("tenant-9");
        let key = work.record_key("message-8");
        assert!(matches!(one.inspect(&key).await.unwrap(), Lookup::Absent), "{store}");
        let _: Receipt = work
            .run("message-8", |_| async {
                Ok::<_, Declined>(Receipt { invoice: 8, run: 1 })
            })
            .await
            .unwrap();
        match other.inspect(&key).await.unwrap() {
            Lookup::Completed(_) => {}
            lookup => panic!("{store}: expected a completed record, got {lookup:?}"),
        }
        assert!(other.forget(&key).await.unwrap(), "{store}: the record was held");
        assert!(!other.forget(&key).await.unwrap(), "{store}: nothing left to forget");
        let again: Receipt = work
            .run("message-8", |attempt| async move {
                assert!(attempt.is_first_attempt(), "a forgotten key is new");
                Ok::<_, Declined>(Receipt { invoice: 8, run: 2 })
            })
            .await
            .unwrap();
        assert_eq!(again.run, 2, "{store}: a forgotten key runs again");
    }
}

static HTTP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[post("/payments")]
#[idempotent(scope = "tenant", cache = "all")]
async fn pay() -> HttpResponse {
    let run = HTTP_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::PaymentRequired().body(format!("declined, run {run}"))
}

#[actix_web::test]
async fn an_operator_forgets_a_stored_http_response_so_the_retry_runs_again() {
    let config = Idempotency::builder()
        .store(MemoryStore::default())
        .namespace(unique("operator"))
        .tenant_from_header(actix_web::http::header::HeaderName::from_static("x-tenant"))
        .build();
    let app = test::init_service(App::new().app_data(config.clone()).service(pay)).await;
    let send = || {
        test::TestRequest::post()
            .uri("/payments")
            .insert_header(("x-tenant", "acme"))
            .insert_header(("idempotency-key", "pay-1"))
            .to_request()
    };
    let first = test::call_and_read_body(&app, send()).await;
    assert_eq!(first, web::Bytes::from("declined, run 1"));
    let replayed = test::call_service(&app, send()).await;
    assert_eq!(replayed.headers().get("idempotency-replayed").unwrap(), "true");
    let key = config.record_key(Some("acme"), "pay-1");
    assert!(matches!(config.inspect(&key).await.unwrap(), Lookup::Completed(_)));
    assert!(!config.forget(&config.record_key(Some("other"), "pay-1")).await.unwrap());
    assert!(config.forget(&key).await.unwrap());
    let after = test::call_and_read_body(&app, send()).await;
    assert_eq!(
        after,
        web::Bytes::from("declined, run 2"),
        "the forgotten key ran again"
    );
}

// ---------------------------------------------------------------------------------------------
// Work in a PostgreSQL transaction

/// A connection of the test's own, and a table of shipments for this test run.
async fn shipments() -> Option<(tokio_postgres::Client, String)> {
    if !server_up("PostgreSQL", POSTGRES_ADDR) {
        return None;
    }
    let (client, connection) = tokio_postgres::connect(&postgres_url(POSTGRES_ADDR), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS work_shipments (id bigserial PRIMARY KEY, tag text NOT NULL)")
        .await
        .unwrap();
    Some((client, unique("shipment")))
}

async fn count(client: &tokio_postgres::Client, tag: &str) -> i64 {
    let row = client
        .query_one("SELECT count(*) FROM work_shipments WHERE tag = $1", &[&tag])
        .await
        .unwrap();
    row.get(0)
}

const INSERT: &str = "INSERT INTO work_shipments (tag) VALUES ($1) RETURNING id";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_in_a_transaction_commits_its_writes_with_its_value_once() {
    let Some((client, tag)) = shipments().await else { return };
    let (one, other) = replicas("postgres").await.unwrap();
    let ship = |config: &Idempotency| {
        let tag = tag.clone();
        let config = config.clone();
        async move {
            config
                .work("ship")
                .run_in_transaction("message-1", async |_, tx| {
                    let row = tx.query_one(INSERT, &[&tag]).await?;
                    Ok::<i64, tokio_postgres::Error>(row.get(0))
                })
                .await
        }
    };
    let first = ship(&one).await.unwrap();
    assert_eq!(ship(&one).await.unwrap(), first);
    assert_eq!(
        ship(&other).await.unwrap(),
        first,
        "another replica gets the committed value"
    );
    assert_eq!(count(&client, &tag).await, 1, "one shipment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_duplicates_in_transactions_on_two_replicas_write_once() {
    let Some((client, tag)) = shipments().await else { return };
    let (one, other) = replicas("postgres").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let config = if i % 2 == 0 { one.clone() } else { other.clone() };
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            config
                .work("ship")
                .run_in_transaction("the-only-message", async |_, tx| {
                    let row = tx.query_one(INSERT, &[&tag]).await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<i64, tokio_postgres::Error>(row.get(0))
                })
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().expect("every duplicate gets the value"));
    }
    assert_eq!(ids.len(), 1, "every duplicate got the one shipment");
    assert_eq!(count(&client, &tag).await, 1, "200 duplicates, one committed shipment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_work_in_a_transaction_rolls_its_writes_back_and_runs_again() {
    let Some((client, tag)) = shipments().await else { return };
    let (one, _) = replicas("postgres").await.unwrap();
    let work = one.work("ship");
    let failed = work
        .run_in_transaction::<i64, _, _>("message-2", async |_, tx| {
            tx.query_one(INSERT, &[&tag]).await.unwrap();
            Err(Declined)
        })
        .await;
    assert!(matches!(failed, Err(WorkError::Failed(Declined))), "{failed:?}");
    assert_eq!(count(&client, &tag).await, 0, "the failed run's insert was rolled back");
    let id = work
        .run_in_transaction("message-2", async |attempt, tx| {
            assert!(!attempt.is_first_attempt());
            let row = tx.query_one(INSERT, &[&tag]).await.unwrap();
            Ok::<i64, Declined>(row.get(0))
        })
        .await
        .unwrap();
    assert!(id > 0);
    assert_eq!(count(&client, &tag).await, 1);
}

/// A replica on the PostgreSQL store, in namespace `namespace`.
fn postgres_replica(namespace: &str) -> Idempotency {
    Idempotency::builder()
        .store(PostgresStore::new(&postgres_url(POSTGRES_ADDR)).unwrap())
        .namespace(namespace)
        .lease(Duration::from_millis(600))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_that_lost_its_key_rolls_back_and_the_run_that_took_over_is_the_one_committed() {
    let Some((client, tag)) = shipments().await else { return };
    let namespace = unique("work");
    // The slow replica runs on a runtime of its own, which its handler blocks past the 600 ms
    // lease: no renewal reaches the store, as on a replica that stalled.
    let (claimed_tx, claimed_rx) = std::sync::mpsc::channel();
    let slow = std::thread::spawn({
        let (namespace, tag) = (namespace.clone(), tag.clone());
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                postgres_replica(&namespace)
                    .work("ship")
                    .run_in_transaction::<i64, Declined, _>("message-3", async |_, tx| {
                        let row = tx.query_one(INSERT, &[&tag]).await.unwrap();
                        claimed_tx.send(()).unwrap();
                        std::thread::sleep(Duration::from_millis(1500));
                        Ok(row.get(0))
                    })
                    .await
            })
        }
    });
    claimed_rx.recv().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let other = postgres_replica(&namespace);
    let taken_over = other
        .work("ship")
        .run_in_transaction("message-3", async |attempt, tx| {
            assert!(!attempt.is_first_attempt(), "the lapsed run had started");
            let row = tx.query_one(INSERT, &[&tag]).await.unwrap();
            Ok::<i64, Declined>(row.get(0))
        })
        .await
        .unwrap();
    match slow.join().unwrap() {
        Err(WorkError::Refused(error)) => assert_eq!(error.code(), "idempotency_in_flight"),
        other => panic!("the fenced run must be refused, got {other:?}"),
    }
    assert_eq!(count(&client, &tag).await, 1, "only the run that took over committed");
    let replayed: i64 = other
        .work("ship")
        .run("message-3", |_| async { Err::<i64, _>(Declined) })
        .await
        .unwrap();
    assert_eq!(replayed, taken_over);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_in_a_transaction_on_a_store_without_transactions_is_refused_and_releases_its_key() {
    let (one, _) = replicas("memory").await.unwrap();
    let refused = one
        .work("ship")
        .run_in_transaction::<i64, Declined, _>("message-4", async |_, _| unreachable!())
        .await;
    match refused {
        Err(WorkError::Refused(error)) => assert_eq!(error.code(), "idempotency_transaction_unavailable"),
        other => panic!("expected transaction unavailable, got {other:?}"),
    }
    let value: i64 = one
        .work("ship")
        .run("message-4", |_| async { Ok::<_, Declined>(4) })
        .await
        .unwrap();
    assert_eq!(value, 4, "the key was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_work_is_refused_or_runs_unprotected_when_failing_open() {
    // A port nothing listens on: every connection is refused at once.
    let down = || RedisStore::new("redis://127.0.0.1:1/").unwrap();
    let closed = Idempotency::builder()
        .store(down())
        .store_timeout(Duration::from_millis(500))
        .build();
    let runs = AtomicUsize::new(0);
    let work = |_| async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Declined>(1)
    };
    match closed.work("charge").run::<i32, _, _, _>("message-9", work).await {
        Err(WorkError::Refused(error)) => assert_eq!(error.code(), "idempotency_store_unavailable"),
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "failing closed runs nothing");
    let open = Idempotency::builder()
        .store(down())
        .store_timeout(Duration::from_millis(500))
        .fail_open(true)
        .build();
    let value: i32 = open.work("charge").run("message-9", work).await.unwrap();
    assert_eq!(
        (value, runs.load(Ordering::SeqCst)),
        (1, 1),
        "failing open runs unprotected"
    );
    let refused = open
        .work("charge")
        .run_in_transaction::<i32, Declined, _>("message-9", async |_, _| unreachable!())
        .await;
    assert!(
        matches!(&refused, Err(WorkError::Refused(error)) if error.code() == "idempotency_store_unavailable"),
        "a transaction on a failed store is refused even failing open: {refused:?}"
    );
}
