use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

use crate::support::{new_key, send, send_keyed, serve, serve_with, Runs};

#[post("/payments")]
#[idempotent]
async fn pay(body: web::Bytes, runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created().json(json!({ "run": run, "body": String::from_utf8_lossy(&body) }))
}

#[post("/refunds")]
#[idempotent]
async fn refund(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "refund_run": runs.hit() }))
}

#[post("/canonical")]
#[idempotent(fingerprint = "json")]
async fn pay_canonical(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

#[post("/distinct")]
#[idempotent(on_mismatch = "execute")]
async fn pay_distinct(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit(), "amount": body["amount"] }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(pay)
        .service(refund)
        .service(pay_canonical)
        .service(pay_distinct);
}

#[actix_web::test]
async fn the_same_key_with_another_body_is_a_409_conflict_problem() {
    let server = serve(routes);
    let key = new_key();

    let first = send_keyed(server.post("/payments"), &key, &json!({ "amount": 5 })).await;
    let other = send_keyed(server.post("/payments"), &key, &json!({ "amount": 6 })).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.header("content-type"), Some("application/problem+json"));
    let problem = other.json();
    assert_eq!(problem["code"], "idempotency_conflict");
    assert_eq!(problem["status"], 409);
    assert!(
        problem["type"].as_str().is_some_and(|t| t.starts_with("https://")),
        "{problem}"
    );
    assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{problem}");
    assert!(!other.is_replay());
}

#[actix_web::test]
async fn the_original_request_still_replays_after_a_conflict() {
    let server = serve(routes);
    let key = new_key();

    let first = send_keyed(server.post("/payments"), &key, &json!({ "amount": 5 })).await;
    send_keyed(server.post("/payments"), &key, &json!({ "amount": 6 })).await;
    let retry = send_keyed(server.post("/payments"), &key, &json!({ "amount": 5 })).await;

    assert_eq!(server.runs(), 1);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn the_default_fingerprint_is_byte_exact_so_reformatted_json_is_a_conflict() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/payments")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    send(req(), r#"{"amount":5}"#).await;
    let reformatted = send(req(), r#"{ "amount": 5 }"#).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(reformatted.status, StatusCode::CONFLICT);
    assert_eq!(reformatted.problem_code(), "idempotency_conflict");
}

#[actix_web::test]
async fn a_key_reused_on_another_route_is_a_conflict_never_an_execution() {
    let server = serve(routes);
    let key = new_key();

    let first = send(
        server
            .post("/payments")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let other_route = send(
        server.post("/refunds").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(server.runs(), 1);
    assert_eq!(other_route.status, StatusCode::CONFLICT);
    assert_eq!(other_route.problem_code(), "idempotency_conflict");
}

#[actix_web::test]
async fn the_same_key_with_another_query_string_is_a_conflict() {
    let server = serve(routes);
    let key = new_key();

    let five = send(
        server
            .post("/payments?amount=5")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let six = send(
        server
            .post("/payments?amount=6")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let five_again = send(
        server
            .post("/payments?amount=5")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(server.runs(), 1);
    assert_eq!(five.status, StatusCode::CREATED);
    assert_eq!(six.status, StatusCode::CONFLICT);
    assert_eq!(six.problem_code(), "idempotency_conflict");
    assert!(five_again.is_replay());
}

#[actix_web::test]
async fn json_fingerprints_treat_reordered_keys_and_whitespace_as_the_same_request() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/canonical")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json")
    };

    let first = send(req(), r#"{"amount":5,"currency":"eur","meta":{"a":1,"b":[1,2]}}"#).await;
    let reordered = send(
        req(),
        "{ \"meta\": { \"b\": [1, 2], \"a\": 1 },\n  \"currency\": \"eur\", \"amount\": 5 }",
    )
    .await;
    let changed = send(req(), r#"{"amount":6,"currency":"eur","meta":{"a":1,"b":[1,2]}}"#).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(reordered.is_replay());
    assert_eq!(reordered.body, first.body);
    assert_eq!(changed.status, StatusCode::CONFLICT);
    assert_eq!(changed.problem_code(), "idempotency_conflict");
}

#[actix_web::test]
async fn on_mismatch_execute_runs_each_distinct_request_once_and_replays_each() {
    let server = serve(routes);
    let key = new_key();

    let five = send_keyed(server.post("/distinct"), &key, &json!({ "amount": 5 })).await;
    let six = send_keyed(server.post("/distinct"), &key, &json!({ "amount": 6 })).await;
    let five_again = send_keyed(server.post("/distinct"), &key, &json!({ "amount": 5 })).await;
    let six_again = send_keyed(server.post("/distinct"), &key, &json!({ "amount": 6 })).await;

    assert_eq!(server.runs(), 2);
    assert_eq!(five.json(), json!({ "run": 1, "amount": 5 }));
    assert_eq!(six.json(), json!({ "run": 2, "amount": 6 }));
    assert!(five_again.is_replay() && six_again.is_replay());
    assert_eq!(five_again.body, five.body);
    assert_eq!(six_again.body, six.body);
}

#[actix_web::test]
async fn a_configured_conflict_status_of_422_is_used_for_mismatches() {
    let idempotency = Idempotency::builder()
        .conflict_status(StatusCode::UNPROCESSABLE_ENTITY)
        .build();
    let server = serve_with(idempotency, routes);
    let key = new_key();

    send_keyed(server.post("/payments"), &key, &json!({ "amount": 5 })).await;
    let other = send_keyed(server.post("/payments"), &key, &json!({ "amount": 6 })).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.problem_code(), "idempotency_conflict");
    assert_eq!(other.json()["status"], 422);
}
