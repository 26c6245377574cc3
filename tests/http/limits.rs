use std::io::Write;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{post, web, HttpResponse};
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_util::{stream, StreamExt};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

use crate::support::{bounded, new_key, send, serve, serve_with, Runs};

#[post("/documents")]
#[idempotent]
async fn store_document(doc: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    let data = doc["data"].as_str().unwrap_or_default();
    HttpResponse::Created().json(json!({ "run": runs.hit(), "len": data.len(), "head": &data[..data.len().min(8)] }))
}

#[idempotent]
async fn store_small_document(doc: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit(), "doc": doc.into_inner() }))
}

#[post("/reports")]
#[idempotent]
async fn create_report(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Ok().body(report())
}

#[post("/streamed-reports")]
#[idempotent]
async fn stream_report(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    let chunks = report()
        .chunks(1024)
        .map(|c| Ok::<_, actix_web::Error>(Bytes::copy_from_slice(c)))
        .collect::<Vec<_>>();
    HttpResponse::Ok().streaming(stream::iter(chunks))
}

#[post("/streamed-small")]
#[idempotent]
async fn stream_small(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    let chunks = [format!("run {run}: "), "part one, ".to_owned(), "part two".to_owned()];
    HttpResponse::Ok().streaming(stream::iter(chunks.map(|c| Ok::<_, actix_web::Error>(Bytes::from(c)))))
}

#[post("/slow-stream")]
#[idempotent]
async fn stream_slowly(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    let chunks = stream::iter(["first part, ", "second part"]).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, actix_web::Error>(Bytes::from_static(chunk.as_bytes()))
    });
    HttpResponse::Ok().streaming(chunks)
}

#[post("/broken-stream")]
#[idempotent]
async fn stream_then_fail(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    let chunks: [Result<Bytes, actix_web::Error>; 2] = [
        Ok(Bytes::from_static(b"partial")),
        Err(actix_web::error::ErrorInternalServerError("disk gone")),
    ];
    HttpResponse::Ok().streaming(stream::iter(chunks))
}

#[post("/echo")]
#[idempotent]
async fn echo(body: web::Bytes, runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Ok().body(body)
}

/// 10 KiB that are not all the same byte.
fn report() -> Vec<u8> {
    (0..10 * 1024).map(|i| b'a' + (i % 26) as u8).collect()
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(store_document)
        .service(create_report)
        .service(stream_report)
        .service(stream_small)
        .service(echo)
        .service(stream_slowly)
        .service(stream_then_fail)
        .service(
            web::resource("/small-documents")
                .app_data(web::JsonConfig::default().limit(1024))
                .route(web::post().to(store_small_document)),
        );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[actix_web::test]
async fn a_one_mib_json_body_within_web_json_limit_is_accepted_and_replayed() {
    let server = serve(routes);
    let key = new_key();
    let body = json!({ "data": "x".repeat(1024 * 1024) }).to_string();
    let req = || {
        server
            .post("/documents")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json")
    };

    let first = send(req(), body.clone()).await;
    let retry = send(req(), body).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        first.json(),
        json!({ "run": 1, "len": 1024 * 1024, "head": "xxxxxxxx" })
    );
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn the_handlers_own_json_limit_still_applies_and_its_error_is_actix_not_ours() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/small-documents")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json")
    };

    let too_large = send(req(), json!({ "data": "x".repeat(2048) }).to_string()).await;
    let small = send(req(), json!({ "data": "x" }).to_string()).await;

    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_ne!(too_large.header("content-type"), Some("application/problem+json"));
    assert_eq!(small.status, StatusCode::CREATED);
    assert_eq!(small.json(), json!({ "run": 1, "doc": { "data": "x" } }));
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_keyed_body_larger_than_max_request_bytes_gets_413_body_too_large_and_does_not_run() {
    let server = serve_with(Idempotency::builder().max_request_bytes(1024).build(), routes);
    let key = new_key();

    let reply = send(
        server.post("/echo").insert_header(("Idempotency-Key", key.as_str())),
        vec![b'x'; 4096],
    )
    .await;

    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.problem_code(), "idempotency_body_too_large");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn a_chunked_keyed_body_larger_than_max_request_bytes_gets_413_body_too_large_and_does_not_run() {
    let server = serve_with(Idempotency::builder().max_request_bytes(1024).build(), routes);
    let key = new_key();
    let chunks = (0..8).map(|_| Ok::<_, actix_web::Error>(Bytes::from(vec![b'x'; 512])));
    let req = server.post("/echo").insert_header(("Idempotency-Key", key.as_str()));

    let reply = crate::support::bounded(async {
        let mut response = req.send_stream(stream::iter(chunks)).await.expect("a response");
        (response.status(), response.body().await.expect("a body"))
    })
    .await;

    assert_eq!(reply.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(std::str::from_utf8(&reply.1)
        .unwrap()
        .contains("idempotency_body_too_large"));
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn an_unkeyed_body_larger_than_max_request_bytes_runs_unprotected() {
    let server = serve_with(Idempotency::builder().max_request_bytes(1024).build(), routes);

    let reply = send(server.post("/echo"), vec![b'x'; 4096]).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 4096);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_response_over_max_response_bytes_is_sent_whole_and_a_retry_gets_response_not_stored() {
    let idempotency = Idempotency::builder().max_response_bytes(1024).build();
    let server = serve_with(idempotency.clone(), routes);
    let key = new_key();
    let req = || server.post("/reports").insert_header(("Idempotency-Key", key.as_str()));

    let first = send(req(), "").await;
    let retry = send(req(), "").await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, report());
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert_eq!(retry.problem_code(), "idempotency_response_not_stored");
    assert_eq!(server.runs(), 1);
    assert_eq!(idempotency.stats().responses_not_stored, 1);
}

#[actix_web::test]
async fn a_streamed_response_over_max_response_bytes_is_sent_whole_and_a_retry_gets_response_not_stored() {
    let idempotency = Idempotency::builder().max_response_bytes(1024).build();
    let server = serve_with(idempotency.clone(), routes);
    let key = new_key();
    let req = || {
        server
            .post("/streamed-reports")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    let first = send(req(), "").await;
    let retry = send(req(), "").await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, report());
    assert_eq!(retry.problem_code(), "idempotency_response_not_stored");
    assert_eq!(server.runs(), 1);
    assert_eq!(idempotency.stats().responses_not_stored, 1);
}

#[actix_web::test]
async fn a_streamed_response_within_max_response_bytes_is_replayed_with_the_same_bytes() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/streamed-small")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    let first = send(req(), "").await;
    let retry = send(req(), "").await;

    assert_eq!(first.body, "run 1: part one, part two");
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_gzip_request_body_is_decompressed_once_for_the_handler_and_replayed() {
    let server = serve(routes);
    let key = new_key();
    let compressed = gzip(json!({ "data": "compressed document" }).to_string().as_bytes());
    let req = || {
        server
            .post("/documents")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("Content-Encoding", "gzip"))
            .content_type("application/json")
    };

    let first = send(req(), compressed.clone()).await;
    let retry = send(req(), compressed).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json(), json!({ "run": 1, "len": 19, "head": "compress" }));
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_gzip_request_body_reaches_a_bytes_extractor_decompressed() {
    let server = serve(routes);
    let key = new_key();
    let req = server
        .post("/echo")
        .insert_header(("Idempotency-Key", key.as_str()))
        .insert_header(("Content-Encoding", "gzip"));

    let reply = send(req, gzip(b"plain text, sent compressed")).await;

    assert_eq!(reply.body, "plain text, sent compressed");
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_streamed_response_slower_than_capture_timeout_is_sent_whole_and_a_retry_gets_response_not_stored() {
    let idempotency = Idempotency::builder()
        .capture_timeout(Duration::from_millis(100))
        .build();
    let server = serve_with(idempotency.clone(), routes);
    let key = new_key();
    let req = || {
        server
            .post("/slow-stream")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    let first = send(req(), "").await;
    let retry = send(req(), "").await;

    assert_eq!(first.body, "first part, second part");
    assert_eq!(retry.problem_code(), "idempotency_response_not_stored");
    assert_eq!(server.runs(), 1);
    assert_eq!(idempotency.stats().responses_not_stored, 1);
}

#[actix_web::test]
async fn a_response_stream_that_fails_is_not_stored_and_a_retry_runs_again() {
    let server = serve(routes);
    let key = new_key();
    let attempt = || async {
        let req = server
            .post("/broken-stream")
            .insert_header(("Idempotency-Key", key.as_str()));
        bounded(async move {
            match req.send().await {
                Ok(mut response) => response.body().await.is_ok(),
                Err(_) => false,
            }
        })
        .await
    };

    let first_complete = attempt().await;
    let retry_complete = attempt().await;

    assert!(
        !first_complete,
        "the broken body reaches the client broken, as without the attribute"
    );
    assert!(
        !retry_complete,
        "a retry runs again rather than replaying a broken body"
    );
    assert_eq!(server.runs(), 2);
}
