use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::idempotent;
use serde_json::json;

use crate::support::{new_key, send, serve, Reply, Runs, TestServer};

#[post("/charges")]
#[idempotent]
async fn charge(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

#[post("/required")]
#[idempotent(required = true)]
async fn charge_with_required_key(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

#[post("/webhooks")]
#[idempotent(header = "X-Event-ID")]
async fn receive_webhook(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "run": runs.hit() }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(charge)
        .service(charge_with_required_key)
        .service(receive_webhook);
}

async fn post_with_key(server: &TestServer, path: &str, key: impl Into<HeaderValue>) -> Reply {
    send(server.post(path).insert_header(("Idempotency-Key", key.into())), "").await
}

#[actix_web::test]
async fn a_bare_key_and_the_same_key_as_a_quoted_string_are_one_key() {
    let server = serve(routes);
    let key = new_key();

    let bare = post_with_key(&server, "/charges", HeaderValue::from_str(&key).unwrap()).await;
    let quoted = post_with_key(
        &server,
        "/charges",
        HeaderValue::from_str(&format!("\"{key}\"")).unwrap(),
    )
    .await;

    assert_eq!(server.runs(), 1);
    assert_eq!(bare.status, StatusCode::CREATED);
    assert!(quoted.is_replay());
    assert_eq!(quoted.body, bare.body);
}

#[actix_web::test]
async fn a_quoted_key_is_unescaped_before_use() {
    let server = serve(routes);
    let key = new_key();
    let quoted = format!(r#""{key}\"q\\b""#);
    let bare = format!(r#"{key}"q\b"#);

    let first = post_with_key(&server, "/charges", HeaderValue::from_str(&quoted).unwrap()).await;
    let retry = post_with_key(&server, "/charges", HeaderValue::from_str(&bare).unwrap()).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn a_quoted_key_with_an_unknown_escape_is_invalid_and_does_not_run() {
    let server = serve(routes);

    let reply = post_with_key(&server, "/charges", HeaderValue::from_static(r#""a\nb""#)).await;

    assert_eq!(server.runs(), 0);
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.problem_code(), "idempotency_key_invalid");
}

#[actix_web::test]
async fn an_absent_key_runs_unprotected_every_time() {
    let server = serve(routes);

    let first = send(server.post("/charges"), "").await;
    let second = send(server.post("/charges"), "").await;

    assert_eq!(server.runs(), 2);
    assert_eq!(
        (first.status, second.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert!(!first.is_replay() && !second.is_replay());
}

#[actix_web::test]
async fn an_empty_key_runs_unprotected_every_time() {
    let server = serve(routes);

    let first = post_with_key(&server, "/charges", HeaderValue::from_static("")).await;
    let second = post_with_key(&server, "/charges", HeaderValue::from_static("")).await;

    assert_eq!(server.runs(), 2);
    assert!(!first.is_replay() && !second.is_replay());
}

#[actix_web::test]
async fn a_whitespace_only_key_runs_unprotected_every_time() {
    let server = serve(routes);

    let first = post_with_key(&server, "/charges", HeaderValue::from_static("   ")).await;
    let second = post_with_key(&server, "/charges", HeaderValue::from_static("\"  \"")).await;

    assert_eq!(server.runs(), 2);
    assert!(!first.is_replay() && !second.is_replay());
}

#[actix_web::test]
async fn a_required_key_that_is_absent_empty_or_blank_is_refused_with_400_key_missing() {
    let server = serve(routes);

    let absent = send(server.post("/required"), "").await;
    let empty = post_with_key(&server, "/required", HeaderValue::from_static("")).await;
    let blank = post_with_key(&server, "/required", HeaderValue::from_static("  ")).await;

    assert_eq!(server.runs(), 0);
    for reply in [absent, empty, blank] {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.problem_code(), "idempotency_key_missing");
    }
}

#[actix_web::test]
async fn a_required_key_that_is_present_is_replayed() {
    let server = serve(routes);
    let key = new_key();

    let first = post_with_key(&server, "/required", HeaderValue::from_str(&key).unwrap()).await;
    let retry = post_with_key(&server, "/required", HeaderValue::from_str(&key).unwrap()).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(retry.is_replay());
}

#[actix_web::test]
async fn a_key_of_255_characters_is_accepted() {
    let server = serve(routes);
    let key = format!("{}{}", new_key(), "k".repeat(255 - 36));

    let first = post_with_key(&server, "/charges", HeaderValue::from_str(&key).unwrap()).await;
    let retry = post_with_key(&server, "/charges", HeaderValue::from_str(&key).unwrap()).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(retry.is_replay());
}

fn assert_invalid_and_not_run(server: &TestServer, reply: Reply) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.problem_code(), "idempotency_key_invalid");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn a_key_of_256_characters_is_invalid_and_does_not_run() {
    let server = serve(routes);

    let reply = post_with_key(&server, "/charges", HeaderValue::from_str(&"k".repeat(256)).unwrap()).await;

    assert_invalid_and_not_run(&server, reply);
}

#[actix_web::test]
async fn a_key_with_a_control_character_is_invalid_and_does_not_run() {
    let server = serve(routes);

    let reply = post_with_key(&server, "/charges", HeaderValue::from_static("abc\tdef")).await;

    assert_invalid_and_not_run(&server, reply);
}

#[actix_web::test]
async fn a_key_with_a_non_ascii_character_is_invalid_and_does_not_run() {
    let server = serve(routes);

    let reply = post_with_key(&server, "/charges", HeaderValue::from_bytes("café".as_bytes()).unwrap()).await;

    assert_invalid_and_not_run(&server, reply);
}

#[actix_web::test]
async fn a_key_header_sent_twice_is_invalid_and_does_not_run() {
    let server = serve(routes);
    let key = new_key();
    let req = server
        .post("/charges")
        .append_header(("Idempotency-Key", key.as_str()))
        .append_header(("Idempotency-Key", key.as_str()));

    let reply = send(req, "").await;

    assert_invalid_and_not_run(&server, reply);
}

#[actix_web::test]
async fn a_route_with_a_custom_key_header_reads_the_key_from_it() {
    let server = serve(routes);
    let event = new_key();

    let first = send(
        server.post("/webhooks").insert_header(("X-Event-ID", event.as_str())),
        "",
    )
    .await;
    let retry = send(
        server.post("/webhooks").insert_header(("x-event-id", event.as_str())),
        "",
    )
    .await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::OK);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn a_route_with_a_custom_key_header_ignores_idempotency_key() {
    let server = serve(routes);
    let key = new_key();

    let first = post_with_key(&server, "/webhooks", HeaderValue::from_str(&key).unwrap()).await;
    let second = post_with_key(&server, "/webhooks", HeaderValue::from_str(&key).unwrap()).await;

    assert_eq!(server.runs(), 2);
    assert!(!first.is_replay() && !second.is_replay());
}
