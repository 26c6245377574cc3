//! How to test an app that uses `#[idempotent]`: copy what you need.
//!
//! - Give each test's app a configuration of its own with `testing::isolated()`: apps without
//!   one share a process-wide store, and tests that reuse a key would replay each other.
//! - Call a handler registered with `web::to` through `testing::call` / `testing::call_with`;
//!   test a route macro's handler (`#[post(..)]`) as a service with `actix_web::test`.
//! - Read the key in the handler with the `IdempotencyKey` extractor.

use actix_web::test::{self, TestRequest};
use actix_web::{post, web, App, HttpResponse};
use idempotent_actix::{idempotent, testing, IdempotencyKey};
use std::sync::atomic::{AtomicUsize, Ordering};

static ORDERS: AtomicUsize = AtomicUsize::new(0);

#[derive(serde::Deserialize, serde::Serialize)]
struct NewOrder {
    item: String,
}

/// Registered with `web::resource("/orders").route(web::post().to(create_order))` in the app.
#[idempotent(required = true)]
async fn create_order(key: IdempotencyKey, order: web::Json<NewOrder>) -> HttpResponse {
    let number = ORDERS.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Created().json(serde_json::json!({ "number": number, "item": order.item, "key": key.key() }))
}

#[post("/charges")]
#[idempotent]
async fn charge(key: Option<IdempotencyKey>) -> HttpResponse {
    HttpResponse::Ok().body(key.map_or("unprotected".to_owned(), |key| key.key().to_owned()))
}

fn order(key: &str) -> TestRequest {
    TestRequest::post()
        .insert_header(("Idempotency-Key", key))
        .set_json(NewOrder { item: "book".into() })
}

#[actix_web::test]
async fn a_handler_is_called_through_a_one_route_app_and_its_retry_replays() {
    let idempotency = testing::isolated();
    let first = testing::call_with(&idempotency, create_order, order("order-1")).await;
    assert_eq!(first.status(), 201);
    let first_body = test::read_body(first).await;
    let retry = testing::call_with(&idempotency, create_order, order("order-1")).await;
    assert_eq!(retry.headers().get("idempotency-replayed").unwrap(), "true");
    assert_eq!(test::read_body(retry).await, first_body);
    let body: serde_json::Value = serde_json::from_slice(&first_body).unwrap();
    assert_eq!(body["key"], "order-1", "the handler read its key");
}

/// The process-wide store used to leak between tests: two tests that both sent `order-1`
/// replayed each other's orders. Each isolated configuration is a store of its own.
#[actix_web::test]
async fn isolated_configurations_do_not_share_records() {
    let one = testing::call(create_order, order("order-1")).await;
    let other = testing::call(create_order, order("order-1")).await;
    assert!(one.headers().get("idempotency-replayed").is_none());
    assert!(
        other.headers().get("idempotency-replayed").is_none(),
        "another test's record"
    );
}

#[actix_web::test]
async fn a_route_macro_handler_is_tested_as_a_service() {
    let app = test::init_service(App::new().app_data(testing::isolated()).service(charge)).await;
    let keyed = TestRequest::post()
        .uri("/charges")
        .insert_header(("Idempotency-Key", "c-1"))
        .to_request();
    assert_eq!(test::call_and_read_body(&app, keyed).await, "c-1");
    let unkeyed = TestRequest::post().uri("/charges").to_request();
    assert_eq!(
        test::call_and_read_body(&app, unkeyed).await,
        "unprotected",
        "no key, no IdempotencyKey"
    );
}

#[actix_web::test]
async fn a_handler_that_takes_the_key_refuses_a_request_without_one() {
    let response = testing::call(
        create_order,
        TestRequest::post().set_json(NewOrder { item: "pen".into() }),
    )
    .await;
    assert_eq!(response.status(), 400, "required = true");
}
