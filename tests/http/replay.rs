use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

use crate::support::{new_key, send, send_keyed, serve, serve_with, Runs};

#[post("/orders")]
#[idempotent]
async fn create_order(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created()
        .insert_header(("Location", format!("/orders/{run}")))
        .append_header(("X-A", "1"))
        .append_header(("X-A", "2"))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Set-Cookie", "session=first-caller; HttpOnly"))
        .json(json!({ "run": run, "item": body["item"] }))
}

#[post("/hops")]
#[idempotent]
async fn answer_with_hop_by_hop_headers(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Ok()
        .insert_header(("Connection", "x-hop"))
        .insert_header(("X-Hop", "this connection only"))
        .insert_header(("Keep-Alive", "timeout=5"))
        .insert_header(("X-End-To-End", "kept"))
        .body("ok")
}

#[post("/binary")]
#[idempotent]
async fn answer_with_binary(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body((0..=255u8).rev().collect::<Vec<u8>>())
}

#[post("/no-content")]
#[idempotent]
async fn answer_with_no_content(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::NoContent().insert_header(("X-Deleted", "yes")).finish()
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order)
        .service(answer_with_hop_by_hop_headers)
        .service(answer_with_binary)
        .service(answer_with_no_content);
}

#[actix_web::test]
async fn a_retry_gets_the_original_status_headers_and_body_byte_for_byte() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "book" });

    let first = send_keyed(server.post("/orders"), &key, &body).await;
    let retry = send_keyed(server.post("/orders"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(retry.status, first.status);
    assert_eq!(retry.body, first.body);
    assert_eq!(first.json(), json!({ "run": 1, "item": "book" }));
    let volatile = ["date", "set-cookie", "idempotency-replayed"];
    assert_eq!(retry.header_list(&volatile), first.header_list(&volatile));
}

#[actix_web::test]
async fn repeated_headers_are_replayed_with_every_value_in_order() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "pen" });

    let first = send_keyed(server.post("/orders"), &key, &body).await;
    let retry = send_keyed(server.post("/orders"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.header_values("x-a"), ["1", "2"]);
    assert_eq!(retry.header_values("x-a"), ["1", "2"]);
}

#[actix_web::test]
async fn a_replayed_201_keeps_its_location() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "lamp" });

    let first = send_keyed(server.post("/orders"), &key, &body).await;
    let retry = send_keyed(server.post("/orders"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(first.header("location"), Some("/orders/1"));
    assert_eq!(retry.header("location"), Some("/orders/1"));
}

#[actix_web::test]
async fn only_the_replay_is_marked_idempotency_replayed() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "cup" });

    let first = send_keyed(server.post("/orders"), &key, &body).await;
    let second = send_keyed(server.post("/orders"), &key, &body).await;
    let third = send_keyed(server.post("/orders"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.header("idempotency-replayed"), None);
    assert_eq!(second.header("idempotency-replayed"), Some("true"));
    assert_eq!(third.header("idempotency-replayed"), Some("true"));
}

#[actix_web::test]
async fn the_replay_marker_uses_the_configured_header_name() {
    let idempotency = Idempotency::builder()
        .replay_header(HeaderName::from_static("x-idempotency-replayed"))
        .build();
    let server = serve_with(idempotency, routes);
    let key = new_key();
    let body = json!({ "item": "mug" });

    let first = send_keyed(server.post("/orders"), &key, &body).await;
    let retry = send_keyed(server.post("/orders"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.header("x-idempotency-replayed"), None);
    assert_eq!(retry.header("x-idempotency-replayed"), Some("true"));
    assert_eq!(retry.header("idempotency-replayed"), None);
}

#[actix_web::test]
async fn set_cookie_goes_to_the_first_caller_only_and_is_never_replayed() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "item": "hat" });

    let first = send_keyed(server.post("/orders"), &key, &body).await;
    let retry = send_keyed(server.post("/orders"), &key, &body).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.header("set-cookie"), Some("session=first-caller; HttpOnly"));
    assert_eq!(retry.header("set-cookie"), None);
    assert_eq!(retry.body, first.body);
}

#[actix_web::test]
async fn requests_without_a_key_are_never_replayed() {
    let server = serve(routes);
    let body = json!({ "item": "box" });

    let first = send(
        server.post("/orders").content_type("application/json"),
        body.to_string(),
    )
    .await;
    let second = send(
        server.post("/orders").content_type("application/json"),
        body.to_string(),
    )
    .await;

    assert_eq!(server.runs(), 2);
    assert!(!first.is_replay() && !second.is_replay());
    assert_ne!(first.body, second.body);
}

#[actix_web::test]
async fn hop_by_hop_headers_are_never_replayed_and_end_to_end_headers_are() {
    let server = serve(routes);
    let key = new_key();

    let first = send(
        server.post("/hops").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let retry = send(
        server.post("/hops").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.header("x-hop"), Some("this connection only"));
    assert!(retry.is_replay());
    assert_eq!(retry.header("x-hop"), None);
    assert_eq!(retry.header("keep-alive"), None);
    assert_eq!(retry.header("x-end-to-end"), Some("kept"));
}

#[actix_web::test]
async fn a_binary_body_is_replayed_byte_for_byte() {
    let server = serve(routes);
    let key = new_key();

    let first = send(
        server.post("/binary").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let retry = send(
        server.post("/binary").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(server.runs(), 1);
    assert_eq!(first.body.len(), 256);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("content-type"), Some("application/octet-stream"));
}

#[actix_web::test]
async fn a_204_is_replayed_with_its_headers_and_no_body() {
    let server = serve(routes);
    let key = new_key();

    send(
        server
            .post("/no-content")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let retry = send(
        server
            .post("/no-content")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(server.runs(), 1);
    assert_eq!(retry.status, StatusCode::NO_CONTENT);
    assert!(retry.is_replay());
    assert_eq!(retry.header("x-deleted"), Some("yes"));
    assert!(retry.body.is_empty());
}
