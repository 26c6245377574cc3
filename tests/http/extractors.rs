use std::future::{ready, Ready};

use actix_web::http::StatusCode;
use actix_web::{dev, post, web, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use idempotent_actix::idempotent;
use serde::Deserialize;
use serde_json::json;

use crate::support::{new_key, send, serve, Runs};

/// A custom extractor: the caller named in `X-User`, or 401.
struct Caller(String);

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
        let user = req.headers().get("x-user").and_then(|v| v.to_str().ok());
        ready(
            user.map(|u| Caller(u.to_owned()))
                .ok_or_else(|| actix_web::error::ErrorUnauthorized("who are you?")),
        )
    }
}

#[derive(Deserialize)]
struct Page {
    size: u32,
}

#[derive(Deserialize)]
struct Transfer {
    amount: u64,
}

#[post("/accounts/{account}/transfers")]
#[idempotent]
async fn transfer(
    caller: Caller,
    account: web::Path<u32>,
    page: web::Query<Page>,
    transfer: web::Json<Transfer>,
    runs: web::Data<Runs>,
) -> HttpResponse {
    HttpResponse::Created().json(json!({
        "run": runs.hit(),
        "caller": caller.0,
        "account": account.into_inner(),
        "size": page.size,
        "amount": transfer.amount,
    }))
}

#[post("/uploads")]
#[idempotent]
async fn upload(mut payload: web::Payload, runs: web::Data<Runs>) -> actix_web::Result<HttpResponse> {
    let mut received = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        received.extend_from_slice(&chunk?);
    }
    Ok(HttpResponse::Created().json(json!({ "run": runs.hit(), "received": received.len() })))
}

#[post("/references")]
#[idempotent(key_from = "/reference_id")]
async fn create_by_reference(body: web::Json<serde_json::Value>, runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit(), "reference_id": body["reference_id"] }))
}

#[post("/strict-transfers")]
#[idempotent(cache = "non-server-error")]
async fn transfer_storing_client_errors(body: web::Json<Transfer>, runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit(), "amount": body.amount }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(transfer)
        .service(upload)
        .service(create_by_reference)
        .service(transfer_storing_client_errors);
}

#[actix_web::test]
async fn custom_path_query_and_json_extractors_see_the_request_and_the_result_is_replayed() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/accounts/42/transfers?size=3")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("X-User", "alice"))
            .content_type("application/json")
    };

    let first = send(req(), r#"{"amount":100}"#).await;
    let retry = send(req(), r#"{"amount":100}"#).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        first.json(),
        json!({ "run": 1, "caller": "alice", "account": 42, "size": 3, "amount": 100 })
    );
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_handler_taking_web_payload_reads_the_whole_body_and_is_replayed() {
    let server = serve(routes);
    let key = new_key();
    let req = || server.post("/uploads").insert_header(("Idempotency-Key", key.as_str()));

    let first = send(req(), vec![7u8; 300 * 1024]).await;
    let retry = send(req(), vec![7u8; 300 * 1024]).await;

    assert_eq!(first.json(), json!({ "run": 1, "received": 300 * 1024 }));
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_handler_taking_web_payload_without_a_key_reads_the_body() {
    let server = serve(routes);

    let reply = send(server.post("/uploads"), vec![7u8; 1000]).await;

    assert_eq!(reply.json(), json!({ "run": 1, "received": 1000 }));
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn an_extractor_failure_is_actix_own_400_is_not_stored_and_a_retry_with_a_good_body_runs() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/accounts/42/transfers?size=3")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("X-User", "alice"))
            .content_type("application/json")
    };

    let bad = send(req(), r#"{"amount":"#).await;
    let good = send(req(), r#"{"amount":100}"#).await;
    let retry = send(req(), r#"{"amount":100}"#).await;

    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_ne!(bad.header("content-type"), Some("application/problem+json"));
    assert_eq!(good.status, StatusCode::CREATED);
    assert!(!good.is_replay());
    assert!(retry.is_replay());
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn an_extractor_failure_is_not_stored_even_when_the_cache_policy_stores_client_errors() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/strict-transfers")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json")
    };

    let bad = send(req(), r#"{"amount":"#).await;
    let bad_again = send(req(), r#"{"amount":"#).await;
    let corrected = send(req(), r#"{"amount":100}"#).await;

    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(!bad_again.is_replay());
    assert_eq!(corrected.status, StatusCode::CREATED);
    assert_eq!(corrected.json(), json!({ "run": 1, "amount": 100 }));
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_custom_extractor_failure_is_its_own_response_and_is_not_stored() {
    let server = serve(routes);
    let key = new_key();
    let req = || {
        server
            .post("/accounts/42/transfers?size=3")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json")
    };

    let anonymous = send(req(), r#"{"amount":100}"#).await;
    let identified = send(req().insert_header(("X-User", "bob")), r#"{"amount":100}"#).await;

    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(identified.status, StatusCode::CREATED);
    assert!(!identified.is_replay());
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn key_from_takes_the_key_from_the_body_when_the_header_is_absent() {
    let server = serve(routes);
    let reference = new_key();
    let body = json!({ "reference_id": reference, "amount": 5 });
    let req = || server.post("/references").content_type("application/json");

    let first = send(req(), body.to_string()).await;
    let retry = send(req(), body.to_string()).await;
    let other = send(req(), json!({ "reference_id": new_key(), "amount": 5 }).to_string()).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert!(!other.is_replay());
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn key_from_with_the_same_reference_and_another_body_is_a_conflict() {
    let server = serve(routes);
    let reference = new_key();
    let req = || server.post("/references").content_type("application/json");

    send(req(), json!({ "reference_id": reference, "amount": 5 }).to_string()).await;
    let other = send(req(), json!({ "reference_id": reference, "amount": 6 }).to_string()).await;

    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.problem_code(), "idempotency_conflict");
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn key_from_without_the_field_runs_unprotected() {
    let server = serve(routes);
    let body = json!({ "amount": 5 }).to_string();
    let req = || server.post("/references").content_type("application/json");

    let first = send(req(), body.clone()).await;
    let second = send(req(), body).await;

    assert!(!first.is_replay() && !second.is_replay());
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn key_from_gives_way_to_the_header_key_when_both_are_present() {
    let server = serve(routes);
    let header_key = new_key();
    let req = |reference: String| {
        let body = json!({ "reference_id": reference, "amount": 5 }).to_string();
        send(
            server
                .post("/references")
                .insert_header(("Idempotency-Key", header_key.as_str()))
                .content_type("application/json"),
            body,
        )
    };

    let first = req(new_key()).await;
    let other_reference_same_header = req(new_key()).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(other_reference_same_header.problem_code(), "idempotency_conflict");
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn key_from_with_an_invalid_key_in_the_body_is_400_key_invalid() {
    let server = serve(routes);
    let body = json!({ "reference_id": "r".repeat(256) }).to_string();

    let reply = send(server.post("/references").content_type("application/json"), body).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.problem_code(), "idempotency_key_invalid");
    assert_eq!(server.runs(), 0);
}
