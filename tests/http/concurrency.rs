use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use futures_util::future::join_all;
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

use crate::support::{new_key, send_keyed, serve, serve_with, Reply, Runs, TestServer};

const HANDLER_TIME: Duration = Duration::from_millis(300);

async fn slow_order(body: serde_json::Value, runs: &Runs) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(HANDLER_TIME).await;
    HttpResponse::Created().json(json!({ "run": run, "order": body, "id": uuid::Uuid::new_v4().to_string() }))
}

#[post("/wait")]
#[idempotent]
async fn wait_for_first(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    slow_order(body.into_inner(), &runs).await
}

#[post("/reject")]
#[idempotent(in_flight = "reject")]
async fn reject_duplicates(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    slow_order(body.into_inner(), &runs).await
}

#[post("/accept")]
#[idempotent(in_flight = "accept")]
async fn accept_duplicates(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    slow_order(body.into_inner(), &runs).await
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(wait_for_first)
        .service(reject_duplicates)
        .service(accept_duplicates);
}

/// Sends `count` copies of one keyed request at once, each on a connection of its own.
async fn send_concurrently(
    server: &TestServer,
    path: &str,
    key: &str,
    body: &serde_json::Value,
    count: usize,
) -> Vec<Reply> {
    let requests = (0..count).map(|_| {
        let (req, key, body) = (server.post(path), key.to_owned(), body.clone());
        actix_web::rt::spawn(async move { send_keyed(req, &key, &body).await })
    });
    join_all(requests)
        .await
        .into_iter()
        .map(|reply| reply.expect("the client task finished"))
        .collect()
}

/// Starts one keyed request and returns once its handler is running.
async fn start_first(
    server: &TestServer,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> actix_web::rt::task::JoinHandle<Reply> {
    let (req, key, body) = (server.post(path), key.to_owned(), body.clone());
    let first = actix_web::rt::spawn(async move { send_keyed(req, &key, &body).await });
    server.wait_for_runs(1).await;
    first
}

#[actix_web::test]
async fn two_hundred_concurrent_duplicates_run_the_handler_exactly_once() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "book" });

    let replies = send_concurrently(&server, "/wait", &key, &body, 200).await;

    assert_eq!(server.runs(), 1);
    let first = &replies[0];
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(replies
        .iter()
        .all(|r| r.status == StatusCode::CREATED && r.body == first.body));
    assert_eq!(replies.iter().filter(|r| !r.is_replay()).count(), 1);
    assert_eq!(replies.iter().filter(|r| r.is_replay()).count(), 199);
}

#[actix_web::test]
async fn duplicates_that_wait_are_answered_when_the_first_finishes() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "pen" });

    let first = start_first(&server, "/wait", &key, &body).await;
    let started = Instant::now();
    let duplicates = send_concurrently(&server, "/wait", &key, &body, 5).await;
    let waited = started.elapsed();
    let first = first.await.unwrap();

    assert_eq!(server.runs(), 1);
    assert!(
        waited < HANDLER_TIME + Duration::from_millis(200),
        "woken by the result, waited {waited:?}"
    );
    assert!(duplicates
        .iter()
        .all(|r| r.is_replay() && r.status == StatusCode::CREATED && r.body == first.body));
    assert!(!first.is_replay());
}

#[actix_web::test]
async fn in_flight_reject_answers_duplicates_409_with_retry_after_while_the_first_runs() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "lamp" });

    let first = start_first(&server, "/reject", &key, &body).await;
    let duplicates = send_concurrently(&server, "/reject", &key, &body, 10).await;
    let first = first.await.unwrap();

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    for duplicate in &duplicates {
        assert_eq!(duplicate.status, StatusCode::CONFLICT);
        assert_eq!(duplicate.problem_code(), "idempotency_in_flight");
        assert_eq!(duplicate.header("retry-after"), Some("1"));
    }
    let retry = send_keyed(server.post("/reject"), &key, &body).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn in_flight_accept_answers_duplicates_202_and_a_later_retry_gets_the_result() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "cup" });

    let first = start_first(&server, "/accept", &key, &body).await;
    let duplicates = send_concurrently(&server, "/accept", &key, &body, 10).await;
    let first = first.await.unwrap();
    let retry = send_keyed(server.post("/accept"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    for duplicate in &duplicates {
        assert_eq!(duplicate.status, StatusCode::ACCEPTED);
        assert_eq!(duplicate.problem_code(), "idempotency_in_flight");
        assert!(duplicate.header("retry-after").is_some());
    }
    assert!(retry.is_replay());
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn a_duplicate_waiting_longer_than_wait_timeout_gets_409_with_retry_after() {
    let idempotency = Idempotency::builder()
        .wait_timeout(Duration::from_millis(50))
        .retry_after(Duration::from_secs(2))
        .build();
    let server = serve_with(idempotency, routes);
    let key = new_key();
    let body = json!({ "item": "hat" });

    let first = start_first(&server, "/wait", &key, &body).await;
    let started = Instant::now();
    let duplicate = send_keyed(server.post("/wait"), &key, &body).await;
    let waited = started.elapsed();
    let first = first.await.unwrap();
    let retry = send_keyed(server.post("/wait"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert!(
        waited < HANDLER_TIME,
        "gave up before the first finished, waited {waited:?}"
    );
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.problem_code(), "idempotency_in_flight");
    assert_eq!(duplicate.header("retry-after"), Some("2"));
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn a_mismatched_request_arriving_while_the_first_runs_is_a_conflict_at_once() {
    let server = serve(routes);
    let key = new_key();

    let first = start_first(&server, "/wait", &key, &json!({ "amount": 5 })).await;
    let started = Instant::now();
    let mismatch = send_keyed(server.post("/wait"), &key, &json!({ "amount": 6 })).await;
    let waited = started.elapsed();
    let first = first.await.unwrap();

    assert_eq!(server.runs(), 1);
    assert!(waited < HANDLER_TIME, "refused without waiting, waited {waited:?}");
    assert_eq!(mismatch.status, StatusCode::CONFLICT);
    assert_eq!(mismatch.problem_code(), "idempotency_conflict");
    assert_eq!(first.status, StatusCode::CREATED);
}
