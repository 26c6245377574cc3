use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{Idempotency, MemoryStore};
use serde_json::json;

use crate::faulty_store::FaultyStore;
use crate::support::{new_key, send, serve_with, Runs};

#[post("/orders")]
#[idempotent_actix::idempotent]
async fn create_order(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

#[post("/slow-orders")]
#[idempotent_actix::idempotent]
async fn create_order_slowly(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    tokio::time::sleep(Duration::from_millis(600)).await;
    HttpResponse::Created().json(json!({ "id": uuid::Uuid::new_v4().to_string() }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order).service(create_order_slowly);
}

#[actix_web::test]
async fn a_store_that_is_down_fails_closed_with_503_store_unavailable_and_retry_after() {
    let store = FaultyStore::default();
    store.faults.down.store(true, Ordering::SeqCst);
    let idempotency = Idempotency::builder().store(store).build();
    let server = serve_with(idempotency.clone(), routes);

    let reply = send(server.post("/orders").insert_header(("Idempotency-Key", new_key())), "").await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.problem_code(), "idempotency_store_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(server.runs(), 0);
    assert!(idempotency.stats().store_errors >= 1);
}

#[actix_web::test]
async fn fail_open_runs_the_handler_unprotected_when_the_store_is_down() {
    let store = FaultyStore::default();
    store.faults.down.store(true, Ordering::SeqCst);
    let server = serve_with(Idempotency::builder().store(store).fail_open(true).build(), routes);
    let key = new_key();

    let first = send(
        server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let retry = send(
        server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!((first.status, retry.status), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(!retry.is_replay());
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn a_store_call_slower_than_store_timeout_fails_closed_in_time() {
    let store = FaultyStore::default();
    store.faults.hanging.store(true, Ordering::SeqCst);
    let idempotency = Idempotency::builder()
        .store(store)
        .store_timeout(Duration::from_millis(100))
        .build();
    let server = serve_with(idempotency, routes);

    let started = Instant::now();
    let reply = send(server.post("/orders").insert_header(("Idempotency-Key", new_key())), "").await;

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.problem_code(), "idempotency_store_unavailable");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn a_failed_store_write_still_answers_the_client_and_releases_the_key_so_a_retry_runs_again() {
    let store = FaultyStore::default();
    store.faults.failing_writes.store(true, Ordering::SeqCst);
    let server = serve_with(Idempotency::builder().store(store.clone()).build(), routes);
    let key = new_key();

    let first = send(
        server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    store.faults.failing_writes.store(false, Ordering::SeqCst);
    let retry = send(
        server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let replay = send(
        server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(retry.json(), json!({ "run": 2 }));
    assert!(!retry.is_replay());
    assert!(replay.is_replay());
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn a_replica_whose_lease_lapsed_cannot_overwrite_the_record_of_the_one_that_took_over() {
    let shared = MemoryStore::default();
    let lapsing = FaultyStore {
        inner: shared.clone(),
        faults: Arc::default(),
    };
    lapsing.faults.failing_renewals.store(true, Ordering::SeqCst);
    let lease = Duration::from_millis(100);
    let idempotency_a = Idempotency::builder().store(lapsing).lease(lease).build();
    let a = serve_with(idempotency_a.clone(), routes);
    let b = serve_with(Idempotency::builder().store(shared).lease(lease).build(), routes);
    let key = new_key();
    let order = |server: &crate::support::TestServer| {
        server
            .post("/slow-orders")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    let first = actix_web::rt::spawn(send(order(&a), ""));
    a.wait_for_runs(1).await;
    tokio::time::sleep(lease * 3).await;
    let taken_over = send(order(&b), "").await;
    let first = first.await.unwrap();
    let retry_a = send(order(&a), "").await;
    let retry_b = send(order(&b), "").await;

    assert_eq!((a.runs(), b.runs()), (1, 1));
    assert_eq!(
        (first.status, taken_over.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_ne!(first.body, taken_over.body);
    assert_eq!(retry_a.body, taken_over.body);
    assert_eq!(retry_b.body, taken_over.body);
    assert_eq!(idempotency_a.stats().fenced_completions, 1);
}
