use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{connect_and_write, new_key, post_head, read_to_close, send, serve, serve_with, Runs, TestServer};

const HANDLER_TIME: Duration = Duration::from_millis(300);

/// Counts only executions that ran to their end.
#[post("/slow")]
#[idempotent]
async fn slow_order(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    tokio::time::sleep(HANDLER_TIME).await;
    HttpResponse::Created().json(json!({ "completed_run": runs.hit(), "order": body.into_inner() }))
}

/// The same handler without the attribute: what actix does on its own.
#[post("/unprotected")]
async fn slow_unprotected_order(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    tokio::time::sleep(HANDLER_TIME).await;
    HttpResponse::Created().json(json!({ "completed_run": runs.hit(), "order": body.into_inner() }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(slow_order).service(slow_unprotected_order);
}

const ORDER: &str = r#"{"item":"book"}"#;

/// Sends a keyed order and returns the connection once its handler is running.
async fn send_order_and_wait_until_running(server: &TestServer, key: &str) -> TcpStream {
    send_and_wait_until_running(server, "/slow", key).await
}

async fn send_and_wait_until_running(server: &TestServer, path: &str, key: &str) -> TcpStream {
    let headers = [("Idempotency-Key", key), ("Content-Type", "application/json")];
    let mut request = post_head(server.addr(), path, &headers, ORDER.len()).into_bytes();
    request.extend_from_slice(ORDER.as_bytes());
    let stream = connect_and_write(server.addr(), &request).await;
    tokio::time::sleep(HANDLER_TIME / 3).await;
    stream
}

async fn assert_completed_once_and_replayed(server: &TestServer, key: &str) {
    assert_eq!(server.runs(), 0, "the client left before the handler finished");
    server.wait_for_runs(1).await;
    let retry = send(
        server
            .post("/slow")
            .insert_header(("Idempotency-Key", key))
            .content_type("application/json"),
        ORDER,
    )
    .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.is_replay());
    assert_eq!(retry.json(), json!({ "completed_run": 1, "order": { "item": "book" } }));
    tokio::time::sleep(HANDLER_TIME).await;
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_client_that_closes_with_fin_mid_request_does_not_cancel_the_handler_and_a_retry_gets_the_replay() {
    let server = serve(routes);
    let key = new_key();

    let mut stream = send_order_and_wait_until_running(&server, &key).await;
    stream.shutdown().await.expect("FIN");
    drop(stream);

    assert_completed_once_and_replayed(&server, &key).await;
}

#[actix_web::test]
async fn a_client_that_resets_with_rst_mid_request_does_not_cancel_the_handler_and_a_retry_gets_the_replay() {
    let server = serve(routes);
    let key = new_key();

    let stream = send_order_and_wait_until_running(&server, &key).await;
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);

    assert_completed_once_and_replayed(&server, &key).await;
}

#[actix_web::test]
async fn a_client_that_half_closes_still_receives_the_response() {
    let server = serve(routes);
    let key = new_key();

    let mut stream = send_order_and_wait_until_running(&server, &key).await;
    stream.shutdown().await.expect("FIN");
    let response = read_to_close(&mut stream).await;

    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(
        response.ends_with(r#"{"completed_run":1,"order":{"item":"book"}}"#),
        "{response}"
    );
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_client_that_resets_mid_upload_leaves_the_key_free_for_a_retry() {
    let server = serve(routes);
    let key = new_key();
    let headers = [("Idempotency-Key", key.as_str()), ("Content-Type", "application/json")];

    let mut partial = post_head(server.addr(), "/slow", &headers, ORDER.len() + 100).into_bytes();
    partial.extend_from_slice(ORDER.as_bytes());
    let stream = connect_and_write(server.addr(), &partial).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let retry = send(
        server
            .post("/slow")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json"),
        ORDER,
    )
    .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.is_replay());
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn without_the_attribute_a_client_reset_cancels_the_handler() {
    let server = serve(routes);

    let stream = send_and_wait_until_running(&server, "/unprotected", &new_key()).await;
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);
    tokio::time::sleep(HANDLER_TIME * 2).await;

    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn drain_waits_for_a_handler_whose_client_has_gone() {
    let idempotency = Idempotency::default();
    let server = serve_with(idempotency.clone(), routes);
    let key = new_key();

    let stream = send_order_and_wait_until_running(&server, &key).await;
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);
    assert_eq!(idempotency.running(), 1);
    let drained = idempotency.drain(Duration::from_secs(5)).await;

    assert!(drained);
    assert_eq!(idempotency.running(), 0);
    assert_eq!(server.runs(), 1);
    let retry = send(
        server
            .post("/slow")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json"),
        ORDER,
    )
    .await;
    assert!(retry.is_replay());
}
