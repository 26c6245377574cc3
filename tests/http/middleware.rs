//! `IdempotentMiddleware`: the engine on every write route of a scope, and how it composes with
//! `#[idempotent]` handlers inside that scope.

use actix_web::http::header::HeaderName;
use actix_web::http::{Method, StatusCode};
use actix_web::{post, web, HttpResponse};
use futures_util::future::join_all;
use idempotent_actix::{idempotent, Idempotency, IdempotentMiddleware, Scope};
use serde_json::json;

use crate::support::{new_key, send, send_keyed, serve, serve_with, Runs};

/// An unannotated write handler: counts its runs and answers with a fresh id.
async fn create(runs: web::Data<Runs>, body: web::Bytes) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created().json(json!({ "run": run, "id": uuid::Uuid::new_v4().to_string(), "len": body.len() }))
}

async fn slow_create(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    HttpResponse::Created().json(json!({ "run": run, "id": uuid::Uuid::new_v4().to_string() }))
}

/// 422 under the attribute's `cache = "all"`: a retry replays it; the middleware's default
/// policy (2xx only) would run it again.
#[post("/special")]
#[idempotent(cache = "all")]
async fn special(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::UnprocessableEntity().json(json!({ "run": run }))
}

#[post("/events")]
#[idempotent(header = "X-Event-ID", required = true)]
async fn events(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Ok().json(json!({ "received": true, "run": run }))
}

#[post("/annotated")]
#[idempotent]
async fn annotated(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    HttpResponse::Created().json(json!({ "run": run, "id": uuid::Uuid::new_v4().to_string() }))
}

fn scope_with(middleware: IdempotentMiddleware) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/v1")
                .wrap(middleware.clone())
                .route("/orders", web::post().to(create))
                .route("/orders", web::put().to(create))
                .route("/orders", web::delete().to(create))
                .route("/orders", web::get().to(create))
                .route("/slow", web::post().to(slow_create))
                .route("/json", web::post().to(json_order))
                .service(special)
                .service(events)
                .service(annotated),
        )
        .route("/outside", web::post().to(create));
    }
}

#[derive(serde::Deserialize)]
struct Order {
    quantity: u32,
}

async fn json_order(runs: web::Data<Runs>, order: web::Json<Order>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created().json(json!({ "run": run, "quantity": order.quantity }))
}

#[actix_web::test]
async fn every_write_method_of_the_scope_replays_without_an_annotation() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    for (i, method) in [Method::POST, Method::PUT, Method::DELETE].into_iter().enumerate() {
        let key = new_key();
        let first = send_keyed(server.request(method.clone(), "/v1/orders"), &key, &json!({})).await;
        let retry = send_keyed(server.request(method.clone(), "/v1/orders"), &key, &json!({})).await;
        assert_eq!(first.status, StatusCode::CREATED, "{method}");
        assert!(!first.is_replay());
        assert!(retry.is_replay(), "{method}: {retry:?}");
        assert_eq!(retry.body, first.body, "{method}");
        assert_eq!(server.runs(), i + 1, "{method} ran once");
    }
}

#[actix_web::test]
async fn reads_unkeyed_writes_and_routes_outside_the_scope_pass_through() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    let key = new_key();
    send_keyed(server.request(Method::GET, "/v1/orders"), &key, &json!({})).await;
    send_keyed(server.request(Method::GET, "/v1/orders"), &key, &json!({})).await;
    send(server.post("/v1/orders"), "{}").await;
    let unkeyed = send(server.post("/v1/orders"), "{}").await;
    send_keyed(server.post("/outside"), &key, &json!({})).await;
    let outside = send_keyed(server.post("/outside"), &key, &json!({})).await;
    assert!(!unkeyed.is_replay());
    assert!(!outside.is_replay());
    assert_eq!(server.runs(), 6, "nothing was deduplicated");
}

#[actix_web::test]
async fn three_hundred_concurrent_duplicates_run_the_handler_once() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    let key = new_key();
    let replies = join_all((0..300).map(|_| {
        let (req, key) = (server.post("/v1/slow"), key.clone());
        actix_web::rt::spawn(async move { send_keyed(req, &key, &json!({ "item": "book" })).await })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(|r| r.expect("client task")).collect();
    assert_eq!(server.runs(), 1);
    assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
    assert!(replies.iter().all(|r| r.body == replies[0].body));
    assert_eq!(replies.iter().filter(|r| r.is_replay()).count(), 299);
}

#[actix_web::test]
async fn a_reused_key_with_another_body_is_a_conflict() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    let key = new_key();
    send_keyed(server.post("/v1/orders"), &key, &json!({ "quantity": 1 })).await;
    let other = send_keyed(server.post("/v1/orders"), &key, &json!({ "quantity": 2 })).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.problem_code(), "idempotency_conflict");
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_required_key_is_refused_before_any_handler_runs() {
    let server = serve(scope_with(IdempotentMiddleware::new().required(true)));
    let refused = send(server.post("/v1/orders"), "{}").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.problem_code(), "idempotency_key_missing");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn an_extractor_error_is_not_stored_and_the_corrected_request_runs() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    let key = new_key();
    let bad = send_keyed(server.post("/v1/json"), &key, &json!({ "quantity": -1 })).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad_again = send_keyed(server.post("/v1/json"), &key, &json!({ "quantity": -1 })).await;
    assert!(!bad_again.is_replay(), "a 4xx is not stored under the default policy");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn only_the_configured_methods_are_protected() {
    let server = serve(scope_with(IdempotentMiddleware::new().methods([Method::POST])));
    let key = new_key();
    send_keyed(server.request(Method::PUT, "/v1/orders"), &key, &json!({})).await;
    let put = send_keyed(server.request(Method::PUT, "/v1/orders"), &key, &json!({})).await;
    assert!(!put.is_replay());
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn tenant_scope_uses_the_apps_tenant_resolver() {
    let config = Idempotency::builder()
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build();
    let server = serve_with(config, scope_with(IdempotentMiddleware::new().scope(Scope::Tenant)));
    let key = new_key();
    let keyed = |tenant: &'static str| server.post("/v1/orders").insert_header(("X-Tenant-Id", tenant));
    send_keyed(keyed("acme"), &key, &json!({})).await;
    let other_tenant = send_keyed(keyed("globex"), &key, &json!({})).await;
    let same_tenant = send_keyed(keyed("acme"), &key, &json!({})).await;
    assert!(!other_tenant.is_replay(), "another tenant's key is another record");
    assert!(same_tenant.is_replay());
    let anonymous = send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    assert_eq!(anonymous.problem_code(), "idempotency_tenant_missing");
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn its_own_configuration_overrides_the_apps() {
    let own = Idempotency::builder()
        .replay_header(HeaderName::from_static("x-replayed"))
        .build();
    let server = serve(scope_with(IdempotentMiddleware::new().config(own)));
    let key = new_key();
    send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    let retry = send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    assert_eq!(retry.header("x-replayed"), Some("true"));
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn an_annotated_handler_the_middleware_took_runs_once_without_a_second_claim() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    let key = new_key();
    let replies = join_all((0..200).map(|_| {
        let (req, key) = (server.post("/v1/annotated"), key.clone());
        actix_web::rt::spawn(async move { send_keyed(req, &key, &json!({})).await })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(|r| r.expect("client task")).collect();
    assert_eq!(server.runs(), 1);
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::CREATED && r.body == replies[0].body),
        "no request conflicted with its own claim"
    );
    assert_eq!(replies.iter().filter(|r| r.is_replay()).count(), 199);
}

#[actix_web::test]
async fn an_attribute_with_its_own_key_header_wins_inside_the_scope() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    let event = new_key();
    let keyed = || server.post("/v1/events").insert_header(("X-Event-ID", event.as_str()));
    let first = send(keyed(), "{}").await;
    let retry = send(keyed(), "{}").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        retry.is_replay(),
        "deduplicated by X-Event-ID, which the middleware does not read"
    );
    let missing = send(server.post("/v1/events"), "{}").await;
    assert_eq!(
        missing.problem_code(),
        "idempotency_key_missing",
        "the attribute's `required` applies"
    );
    assert_eq!(server.runs(), 1);
}

/// The middleware used to take the keyed request first: its 2xx-only policy applied and the
/// 422 ran again on every retry.
#[actix_web::test]
async fn an_annotated_handler_inside_the_scope_is_governed_by_its_attribute() {
    let server = serve(scope_with(IdempotentMiddleware::new()));
    for _ in 0..3 {
        let key = new_key();
        let first = send_keyed(server.post("/v1/special"), &key, &json!({})).await;
        let retry = send_keyed(server.post("/v1/special"), &key, &json!({})).await;
        assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(retry.is_replay(), "the attribute's cache = \"all\" applies");
    }
    assert_eq!(server.runs(), 3);
}

#[actix_web::test]
async fn an_excepted_path_is_governed_by_its_attribute() {
    let server = serve(scope_with(IdempotentMiddleware::new().except("/v1/special")));
    let key = new_key();
    let first = send_keyed(server.post("/v1/special"), &key, &json!({})).await;
    let retry = send_keyed(server.post("/v1/special"), &key, &json!({})).await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(retry.is_replay(), "the attribute's cache = \"all\" applies");
    assert_eq!(server.runs(), 1);
    let key = new_key();
    send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    let other = send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    assert!(other.is_replay(), "`except` leaves the rest of the scope protected");
}

#[actix_web::test]
async fn nested_middlewares_protect_a_request_once() {
    let server = serve(|cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("").wrap(IdempotentMiddleware::new()).service(
                web::scope("/v1")
                    .wrap(IdempotentMiddleware::new().in_flight(idempotent_actix::InFlight::Reject))
                    .route("/slow", web::post().to(slow_create)),
            ),
        );
    });
    let key = new_key();
    let replies = join_all((0..50).map(|_| {
        let (req, key) = (server.post("/v1/slow"), key.clone());
        actix_web::rt::spawn(async move { send_keyed(req, &key, &json!({})).await })
    }))
    .await;
    let replies: Vec<_> = replies.into_iter().map(|r| r.expect("client task")).collect();
    assert_eq!(server.runs(), 1);
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "the outer middleware's `wait` applies; the inner one stepped aside"
    );
}

#[actix_web::test]
async fn a_middleware_wrapping_a_scope_reads_the_scopes_configuration() {
    let scoped = Idempotency::builder()
        .replay_header(HeaderName::from_static("x-scope-replayed"))
        .build();
    let server = serve(move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/v1")
                .app_data(scoped.clone())
                .wrap(IdempotentMiddleware::new())
                .route("/orders", web::post().to(create)),
        );
    });
    let key = new_key();
    send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    let retry = send_keyed(server.post("/v1/orders"), &key, &json!({})).await;
    assert_eq!(retry.header("x-scope-replayed"), Some("true"));
}

/// Under `cache = "non-server-error"` the middleware used to store an extractor's 400, while
/// the attribute never stores one: the corrected request with the same key got the 400 back.
#[actix_web::test]
async fn an_extractor_error_is_not_stored_under_any_policy_as_with_the_attribute() {
    let middleware = IdempotentMiddleware::new().cache(idempotent_actix::CachePolicy::NonServerError);
    let server = serve(scope_with(middleware));
    let key = new_key();
    let bad = send_keyed(server.post("/v1/json"), &key, &json!({ "quantity": -1 })).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let corrected = send_keyed(server.post("/v1/json"), &key, &json!({ "quantity": 1 })).await;
    assert_eq!(corrected.status, StatusCode::CREATED, "{corrected:?}");
    assert!(!corrected.is_replay());
    assert_eq!(server.runs(), 1);
}
