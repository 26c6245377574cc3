use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

use crate::support::{new_key, send, serve_with, Runs};

#[post("/orders")]
#[idempotent(required = true)]
async fn create_order(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order);
}

/// The app's own error envelope, built from the engine's stable codes.
fn own_envelope() -> Idempotency {
    Idempotency::builder()
        .error_response(|err, status, req| {
            HttpResponse::build(status)
                .insert_header(("X-Error-Code", err.code()))
                .json(json!({ "error": { "code": err.code(), "message": err.to_string(), "path": req.path() } }))
        })
        .build()
}

#[actix_web::test]
async fn the_error_hook_replaces_the_problem_envelope_and_keeps_the_code_and_status() {
    let server = serve_with(own_envelope(), routes);
    let key = new_key();
    let req = || {
        server
            .post("/orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("text/plain")
    };

    send(req(), "first").await;
    let conflict = send(req(), "second").await;

    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.header("content-type"), Some("application/json"));
    assert_eq!(conflict.header("x-error-code"), Some("idempotency_conflict"));
    let envelope = conflict.json();
    assert_eq!(envelope["error"]["code"], "idempotency_conflict");
    assert_eq!(envelope["error"]["path"], "/orders");
    assert!(envelope.get("type").is_none());
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn the_error_hook_answers_every_refusal_the_engine_makes() {
    let server = serve_with(own_envelope(), routes);

    let missing = send(server.post("/orders"), "").await;
    let invalid = send(
        server
            .post("/orders")
            .insert_header(("Idempotency-Key", "k".repeat(256))),
        "",
    )
    .await;

    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["error"]["code"], "idempotency_key_missing");
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.json()["error"]["code"], "idempotency_key_invalid");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn the_error_hook_receives_the_configured_conflict_status() {
    let idempotency = Idempotency::builder()
        .conflict_status(StatusCode::UNPROCESSABLE_ENTITY)
        .error_response(|err, status, _| HttpResponse::build(status).body(err.code()))
        .build();
    let server = serve_with(idempotency, routes);
    let key = new_key();
    let req = || server.post("/orders").insert_header(("Idempotency-Key", key.as_str()));

    send(req(), "first").await;
    let conflict = send(req(), "second").await;

    assert_eq!(conflict.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(conflict.text(), "idempotency_conflict");
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_default_problem_body_carries_type_title_status_detail_and_code() {
    let server = serve_with(Idempotency::default(), routes);

    let missing = send(server.post("/orders"), "").await;

    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
    let problem = missing.json();
    let members: Vec<&str> = problem.as_object().unwrap().keys().map(String::as_str).collect();
    for member in ["type", "title", "status", "detail", "code"] {
        assert!(members.contains(&member), "{member} in {problem}");
    }
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["code"], "idempotency_key_missing");
    assert!(
        problem["detail"].as_str().unwrap().contains("`idempotency-key`"),
        "{problem}"
    );
    assert_eq!(server.runs(), 0);
}

#[post("/slow")]
#[idempotent(in_flight = "reject")]
async fn slow_order(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    HttpResponse::Created().json(json!({ "run": run }))
}

#[actix_web::test]
async fn an_in_flight_answer_from_the_error_hook_still_carries_retry_after() {
    let config = Idempotency::builder()
        .retry_after(std::time::Duration::from_secs(2))
        .error_response(|err, status, _| HttpResponse::build(status).json(json!({ "error": err.code() })))
        .build();
    let server = serve_with(config, |cfg| {
        cfg.service(slow_order);
    });
    let key = new_key();
    let keyed = || server.post("/slow").insert_header(("Idempotency-Key", key.clone()));
    let first = actix_web::rt::spawn(send(keyed(), ""));
    server.wait_for_runs(1).await;
    let duplicate = send(keyed(), "").await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.json()["error"], "idempotency_in_flight");
    assert_eq!(duplicate.header("retry-after"), Some("2"), "added by the engine");
    let another_key = send(server.post("/slow").insert_header(("Idempotency-Key", new_key())), "").await;
    assert_eq!(another_key.status, StatusCode::CREATED, "other keys are not held up");
    first.await.expect("the first request");
}
