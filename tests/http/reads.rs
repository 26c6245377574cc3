use actix_web::http::{Method, StatusCode};
use actix_web::{route, web, HttpResponse};
use idempotent_actix::idempotent;
use serde_json::json;

use crate::support::{new_key, send, serve, Runs};

#[route(
    "/r",
    method = "GET",
    method = "HEAD",
    method = "OPTIONS",
    method = "POST",
    method = "PUT",
    method = "PATCH",
    method = "DELETE"
)]
#[idempotent]
async fn read_or_write(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "run": runs.hit() }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(read_or_write);
}

#[actix_web::test]
async fn get_head_and_options_ignore_the_key_and_run_every_time() {
    let server = serve(routes);
    let key = new_key();

    for (i, method) in [
        Method::GET,
        Method::GET,
        Method::HEAD,
        Method::HEAD,
        Method::OPTIONS,
        Method::OPTIONS,
    ]
    .into_iter()
    .enumerate()
    {
        let reply = send(
            server
                .request(method.clone(), "/r")
                .insert_header(("Idempotency-Key", key.as_str())),
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{method}");
        assert!(!reply.is_replay(), "{method}");
        assert_eq!(server.runs(), i + 1, "{method}");
    }
}

#[actix_web::test]
async fn a_key_used_by_a_read_does_not_affect_a_write_with_it() {
    let server = serve(routes);
    let key = new_key();
    let request = |method| {
        server
            .request(method, "/r")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    send(request(Method::GET), "").await;
    let write = send(request(Method::POST), "").await;
    let write_retry = send(request(Method::POST), "").await;
    let read_after = send(request(Method::GET), "").await;

    assert_eq!(write.json(), json!({ "run": 2 }));
    assert!(write_retry.is_replay());
    assert_eq!(read_after.json(), json!({ "run": 3 }));
    assert!(!read_after.is_replay());
    assert_eq!(server.runs(), 3);
}

#[actix_web::test]
async fn put_patch_and_delete_are_writes_and_are_replayed() {
    let server = serve(routes);

    for (i, method) in [Method::PUT, Method::PATCH, Method::DELETE].into_iter().enumerate() {
        let key = new_key();
        let first = send(
            server
                .request(method.clone(), "/r")
                .insert_header(("Idempotency-Key", key.as_str())),
            "",
        )
        .await;
        let retry = send(
            server
                .request(method.clone(), "/r")
                .insert_header(("Idempotency-Key", key.as_str())),
            "",
        )
        .await;
        assert!(retry.is_replay(), "{method}");
        assert_eq!(retry.body, first.body, "{method}");
        assert_eq!(server.runs(), i + 1, "{method}");
    }
}

#[actix_web::test]
async fn the_same_key_with_another_write_method_is_a_conflict() {
    let server = serve(routes);
    let key = new_key();

    send(
        server
            .request(Method::POST, "/r")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let delete = send(
        server
            .request(Method::DELETE, "/r")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(delete.status, StatusCode::CONFLICT);
    assert_eq!(delete.problem_code(), "idempotency_conflict");
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_read_ignores_even_an_invalid_key() {
    let server = serve(routes);

    let reply = send(
        server
            .request(Method::GET, "/r")
            .insert_header(("Idempotency-Key", "k".repeat(300))),
        "",
    )
    .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(server.runs(), 1);
}
