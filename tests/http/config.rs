use actix_web::http::header::HeaderName;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency, MemoryStore};
use serde_json::json;

use crate::support::{new_key, send, serve_unconfigured, serve_with, Runs};

#[post("/orders")]
#[idempotent]
async fn create_order(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

#[actix_web::test]
async fn an_app_without_any_idempotency_configuration_still_replays() {
    let server = serve_unconfigured(|cfg| {
        cfg.service(create_order);
    });
    let key = new_key();
    let req = || server.post("/orders").insert_header(("Idempotency-Key", key.as_str()));

    let first = send(req(), "").await;
    let retry = send(req(), "").await;

    assert!(!first.is_replay());
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_configuration_registered_as_web_data_is_used() {
    let idempotency = web::Data::new(
        Idempotency::builder()
            .replay_header(HeaderName::from_static("x-replayed-from-data"))
            .build(),
    );
    let server = serve_unconfigured(move |cfg| {
        cfg.app_data(idempotency.clone()).service(create_order);
    });
    let key = new_key();
    let req = || server.post("/orders").insert_header(("Idempotency-Key", key.as_str()));

    let first = send(req(), "").await;
    let retry = send(req(), "").await;

    assert_eq!(retry.header("x-replayed-from-data"), Some("true"));
    assert_eq!(retry.header("idempotency-replayed"), None);
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn two_apps_with_their_own_configuration_do_not_share_records() {
    let server_a = crate::support::serve(|cfg| {
        cfg.service(create_order);
    });
    let server_b = crate::support::serve(|cfg| {
        cfg.service(create_order);
    });
    let key = new_key();

    send(
        server_a
            .post("/orders")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let other_app = send(
        server_b
            .post("/orders")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert!(!other_app.is_replay());
    assert_eq!((server_a.runs(), server_b.runs()), (1, 1));
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order);
}

#[actix_web::test]
async fn namespaces_keep_environments_apart_in_one_store() {
    let store = MemoryStore::default();
    let live = serve_with(
        Idempotency::builder().store(store.clone()).namespace("live:").build(),
        routes,
    );
    let test = serve_with(
        Idempotency::builder().store(store.clone()).namespace("test:").build(),
        routes,
    );
    let live_again = serve_with(Idempotency::builder().store(store).namespace("live:").build(), routes);
    let key = new_key();
    let order = |server: &crate::support::TestServer| {
        send(
            server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
            "",
        )
    };

    let in_live = order(&live).await;
    let in_test = order(&test).await;
    let in_live_again = order(&live_again).await;

    assert!(!in_live.is_replay());
    assert!(!in_test.is_replay());
    assert!(in_live_again.is_replay());
    assert_eq!(in_live_again.body, in_live.body);
    assert_eq!((live.runs(), test.runs(), live_again.runs()), (1, 1, 0));
}
