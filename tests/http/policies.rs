use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use futures_util::future::join_all;
use idempotent_actix::idempotent;
use serde::Deserialize;
use serde_json::json;

use crate::support::{new_key, send, serve, Reply, Runs, TestServer};

#[derive(Deserialize)]
struct Outcome {
    status: u16,
}

fn respond_with(outcome: &Outcome, runs: &Runs) -> HttpResponse {
    let status = StatusCode::from_u16(outcome.status).expect("a valid status");
    HttpResponse::build(status).json(json!({ "run": runs.hit() }))
}

#[post("/success")]
#[idempotent(cache = "success")]
async fn store_successes(outcome: web::Query<Outcome>, runs: web::Data<Runs>) -> HttpResponse {
    respond_with(&outcome, &runs)
}

#[post("/non-server-error")]
#[idempotent(cache = "non-server-error")]
async fn store_non_server_errors(outcome: web::Query<Outcome>, runs: web::Data<Runs>) -> HttpResponse {
    respond_with(&outcome, &runs)
}

#[post("/all")]
#[idempotent(cache = "all")]
async fn store_all(outcome: web::Query<Outcome>, runs: web::Data<Runs>) -> HttpResponse {
    respond_with(&outcome, &runs)
}

#[post("/slow-failure")]
#[idempotent]
async fn fail_slowly(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(Duration::from_millis(200)).await;
    HttpResponse::ServiceUnavailable().json(json!({ "run": run }))
}

#[post("/panics-once")]
#[idempotent]
async fn panic_on_first_run(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(Duration::from_millis(200)).await;
    if run == 1 {
        panic!("the first run fails");
    }
    HttpResponse::Created().json(json!({ "run": run }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(store_successes)
        .service(store_non_server_errors)
        .service(store_all)
        .service(fail_slowly)
        .service(panic_on_first_run);
}

async fn post_twice(server: &TestServer, path: &str) -> (Reply, Reply) {
    let key = new_key();
    let first = send(server.post(path).insert_header(("Idempotency-Key", key.as_str())), "").await;
    let retry = send(server.post(path).insert_header(("Idempotency-Key", key.as_str())), "").await;
    (first, retry)
}

/// The first request, and `count` duplicates sent while its handler runs.
async fn first_and_duplicates(server: &TestServer, path: &str, key: &str, count: usize) -> Vec<Reply> {
    let request = || send(server.post(path).insert_header(("Idempotency-Key", key)), "");
    let first = actix_web::rt::spawn(request());
    server.wait_for_runs(1).await;
    let duplicates = join_all((0..count).map(|_| request())).await;
    let mut replies = vec![first.await.expect("the first request finished")];
    replies.extend(duplicates);
    replies
}

#[actix_web::test]
async fn cache_success_does_not_store_a_500_so_a_retry_runs_again() {
    let server = serve(routes);

    let (first, retry) = post_twice(&server, "/success?status=500").await;

    assert_eq!(server.runs(), 2);
    assert_eq!(
        (first.status, retry.status),
        (StatusCode::INTERNAL_SERVER_ERROR, StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(!retry.is_replay());
    assert_eq!(retry.json(), json!({ "run": 2 }));
}

#[actix_web::test]
async fn cache_success_does_not_store_a_503_so_a_retry_runs_again() {
    let server = serve(routes);

    let (first, retry) = post_twice(&server, "/success?status=503").await;

    assert_eq!(server.runs(), 2);
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!retry.is_replay());
}

#[actix_web::test]
async fn cache_success_does_not_store_a_400_so_a_retry_runs_again() {
    let server = serve(routes);

    let (first, retry) = post_twice(&server, "/success?status=400").await;

    assert_eq!(server.runs(), 2);
    assert_eq!(first.status, StatusCode::BAD_REQUEST);
    assert!(!retry.is_replay());
}

#[actix_web::test]
async fn cache_success_stores_a_2xx() {
    let server = serve(routes);

    let (first, retry) = post_twice(&server, "/success?status=202").await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert!(retry.is_replay());
    assert_eq!(retry.status, StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn cache_non_server_error_stores_a_400() {
    let server = serve(routes);

    let (first, retry) = post_twice(&server, "/non-server-error?status=400").await;

    assert_eq!(server.runs(), 1);
    assert_eq!(retry.status, StatusCode::BAD_REQUEST);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn cache_non_server_error_does_not_store_a_500() {
    let server = serve(routes);

    let (_, retry) = post_twice(&server, "/non-server-error?status=500").await;

    assert_eq!(server.runs(), 2);
    assert!(!retry.is_replay());
    assert_eq!(retry.json(), json!({ "run": 2 }));
}

#[actix_web::test]
async fn cache_all_stores_a_500() {
    let server = serve(routes);

    let (first, retry) = post_twice(&server, "/all?status=500").await;

    assert_eq!(server.runs(), 1);
    assert_eq!(retry.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn waiters_on_an_outcome_outside_the_cache_policy_get_it_and_a_later_retry_runs_again() {
    let server = serve(routes);
    let key = new_key();

    let replies = first_and_duplicates(&server, "/slow-failure", &key, 5).await;
    let retry = send(
        server
            .post("/slow-failure")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert!(replies
        .iter()
        .all(|r| r.status == StatusCode::SERVICE_UNAVAILABLE && r.body == replies[0].body));
    assert_eq!(replies.iter().filter(|r| !r.is_replay()).count(), 1);
    assert_eq!(retry.json(), json!({ "run": 2 }));
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn a_panicking_handler_answers_500_handler_failed_to_everyone_and_a_retry_runs_again() {
    let server = serve(routes);
    let key = new_key();

    let replies = first_and_duplicates(&server, "/panics-once", &key, 5).await;

    assert_eq!(server.runs(), 1);
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.problem_code(), "idempotency_handler_failed");
    }
    let retry = send(
        server
            .post("/panics-once")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.is_replay());
    assert_eq!(server.runs(), 2);
    let replay = send(
        server
            .post("/panics-once")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    assert!(replay.is_replay());
    assert_eq!(replay.body, retry.body);
    assert_eq!(server.runs(), 2);
}
