//! The mistakes a new user makes are either impossible or loud: each test here reproduces one
//! and checks that the promise (one execution per key) still holds, or that the answer says
//! what went wrong.

use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency, IdempotencyKey, IdempotentMiddleware, MemoryStore};
use serde_json::json;

use crate::support::{new_key, send, send_concurrently, serve_unconfigured_on, serve_with, Runs};

#[post("/slow-orders")]
#[idempotent]
async fn slow_order(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(Duration::from_millis(300)).await;
    HttpResponse::Created().json(json!({ "run": run, "id": uuid::Uuid::new_v4().to_string() }))
}

async fn duplicates_across_workers(configure: fn(&mut web::ServiceConfig)) -> (usize, Vec<u16>) {
    let server = serve_unconfigured_on(4, configure);
    let key = new_key();
    let replies = send_concurrently(100, || {
        let request = server
            .post("/slow-orders")
            .insert_header(("Idempotency-Key", key.as_str()));
        (request, String::new())
    })
    .await;
    let bodies: std::collections::HashSet<_> = replies.iter().map(|reply| reply.body.clone()).collect();
    assert_eq!(bodies.len(), 1, "every duplicate gets the one response");
    (
        server.runs(),
        replies.iter().map(|reply| reply.status.as_u16()).collect(),
    )
}

/// 100 duplicates on 4 workers each building its own `Idempotency` in the factory used to run
/// the handler once per worker: each had a private memory store.
#[actix_web::test]
async fn a_configuration_built_inside_the_server_factory_still_runs_a_duplicate_once() {
    let (runs, statuses) = duplicates_across_workers(|cfg| {
        cfg.app_data(Idempotency::builder().build()).service(slow_order);
    })
    .await;
    assert_eq!(runs, 1, "one execution across the four workers");
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
}

#[actix_web::test]
async fn a_memory_store_built_inside_the_server_factory_is_shared_by_the_workers() {
    let (runs, statuses) = duplicates_across_workers(|cfg| {
        let store = MemoryStore::with_capacity(32 * 1024 * 1024);
        cfg.app_data(Idempotency::builder().store(store).build())
            .service(slow_order);
    })
    .await;
    assert_eq!(runs, 1, "one execution across the four workers");
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
}

#[post("/json-orders")]
#[idempotent(fingerprint = "json")]
async fn json_order(runs: web::Data<Runs>, body: web::Json<serde_json::Value>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created().json(json!({ "run": run, "order": body.into_inner() }))
}

#[post("/tenant-orders")]
#[idempotent(scope = "tenant")]
async fn tenant_order(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created().json(json!({ "run": run }))
}

fn behind_the_middleware(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(IdempotentMiddleware::new())
            .service(json_order)
            .service(tenant_order),
    );
}

/// The middleware took the keyed request first and fingerprinted the raw body: a retry whose
/// JSON members came in another order got 409, although the handler asks for
/// `fingerprint = "json"`.
#[actix_web::test]
async fn inside_the_middlewares_scope_the_attributes_fingerprint_applies() {
    let server = serve_with(
        Idempotency::builder().store(MemoryStore::default()).build(),
        behind_the_middleware,
    );
    for attempt in 0..4 {
        let key = new_key();
        let first = send(
            server
                .post("/v1/json-orders")
                .insert_header(("Idempotency-Key", key.as_str()))
                .content_type("application/json"),
            r#"{"item":"book","quantity":2}"#,
        )
        .await;
        assert_eq!(first.status, 201, "attempt {attempt}");
        // Each retry on a connection of its own, so both workers (one of which may not have
        // seen this route yet) answer some of them.
        for _ in 0..4 {
            let retry = send(
                server
                    .post("/v1/json-orders")
                    .insert_header(("Idempotency-Key", key.as_str()))
                    .content_type("application/json"),
                r#"{ "quantity": 2, "item": "book" }"#,
            )
            .await;
            assert!(retry.is_replay(), "attempt {attempt}: {retry:?}");
            assert_eq!(retry.body, first.body);
        }
    }
    assert_eq!(server.runs(), 4);
}

#[actix_web::test]
async fn inside_the_middlewares_scope_the_attributes_tenant_scope_applies() {
    let config = Idempotency::builder()
        .store(MemoryStore::default())
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build();
    let server = serve_with(config, behind_the_middleware);
    let key = new_key();
    let as_tenant = |tenant: &str| {
        server
            .post("/v1/tenant-orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("X-Tenant-Id", tenant.to_owned()))
    };
    for _ in 0..3 {
        send(as_tenant("acme"), "").await;
        send(as_tenant("globex"), "").await;
    }
    assert_eq!(
        server.runs(),
        2,
        "one execution per tenant: the attribute's scope, not the middleware's global one"
    );
    let anonymous = send(
        server
            .post("/v1/tenant-orders")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    assert_eq!(anonymous.problem_code(), "idempotency_tenant_missing");
}

#[actix_web::test]
async fn concurrent_first_requests_to_an_annotated_handler_behind_the_middleware_run_it_once() {
    let server = serve_with(
        Idempotency::builder().store(MemoryStore::default()).build(),
        behind_the_middleware,
    );
    let key = new_key();
    let replies = send_concurrently(200, || {
        let request = server
            .post("/v1/json-orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json");
        (request, r#"{"item":"book"}"#.to_owned())
    })
    .await;
    assert_eq!(server.runs(), 1);
    assert!(
        replies
            .iter()
            .all(|reply| reply.status == 201 && reply.body == replies[0].body),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

#[post("/forwarding")]
#[idempotent(scope = "tenant")]
async fn forwarding(runs: web::Data<Runs>, key: IdempotencyKey) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().json(json!({ "key": key.key(), "tenant": key.tenant() }))
}

async fn forwarding_unannotated(key: IdempotencyKey) -> HttpResponse {
    HttpResponse::Created().json(json!({ "key": key.key(), "tenant": key.tenant() }))
}

#[actix_web::test]
async fn a_handler_reads_its_key_and_tenant_to_forward_them_downstream() {
    let config = Idempotency::builder()
        .store(MemoryStore::default())
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build();
    let server = serve_with(config, |cfg| {
        cfg.service(forwarding).service(
            web::scope("/mw")
                .wrap(IdempotentMiddleware::new())
                .route("/forwarding", web::post().to(forwarding_unannotated)),
        );
    });
    let key = new_key();
    for path in ["/forwarding", "/mw/forwarding"] {
        let reply = send(
            server
                .post(path)
                .insert_header(("Idempotency-Key", format!("\"{key}\"")))
                .insert_header(("X-Tenant-Id", "acme")),
            "",
        )
        .await;
        assert_eq!(reply.status, 201, "{path}");
        let expected_tenant = if path == "/forwarding" {
            json!("acme")
        } else {
            json!(null)
        };
        assert_eq!(
            reply.json(),
            json!({ "key": key, "tenant": expected_tenant }),
            "{path}: unquoted key"
        );
    }
    let unkeyed = send(server.post("/mw/forwarding"), "").await;
    assert_eq!(
        unkeyed.problem_code(),
        "idempotency_key_missing",
        "no key to forward: the handler did not run"
    );
}

#[post("/flaky-charges")]
#[idempotent(required = true)]
async fn flaky_charge(runs: web::Data<Runs>, key: IdempotencyKey) -> HttpResponse {
    let run = runs.hit();
    let body = json!({ "run": run, "first_attempt": key.is_first_attempt() });
    match run {
        1 => HttpResponse::ServiceUnavailable().json(body), // not stored: the key is released
        _ => HttpResponse::Created().json(body),
    }
}

/// A re-execution after a released attempt (here a 503 outside the cache policy) tells the
/// handler that an earlier attempt started, so it can check downstream before repeating.
#[actix_web::test]
async fn a_handler_learns_whether_an_earlier_attempt_of_its_key_started() {
    let server = serve_with(testing_config(), |cfg| {
        cfg.service(flaky_charge);
    });
    let key = new_key();
    let attempt = || {
        send(
            server
                .post("/flaky-charges")
                .insert_header(("Idempotency-Key", key.as_str())),
            "",
        )
    };
    let first = attempt().await;
    assert_eq!(
        (first.status.as_u16(), first.json()["first_attempt"].clone()),
        (503, json!(true))
    );
    let second = attempt().await;
    assert_eq!(
        (second.status.as_u16(), second.json()["first_attempt"].clone()),
        (201, json!(false))
    );
    let replay = attempt().await;
    assert!(replay.is_replay());
    assert_eq!(server.runs(), 2);
    let other = send(
        server
            .post("/flaky-charges")
            .insert_header(("Idempotency-Key", new_key())),
        "",
    )
    .await;
    assert_eq!(other.json()["first_attempt"], json!(true), "another key starts afresh");
}

fn testing_config() -> Idempotency {
    idempotent_actix::testing::isolated()
}

#[post("/slow-tenant-orders")]
#[idempotent(scope = "tenant")]
async fn slow_tenant_order(runs: web::Data<Runs>, req: actix_web::HttpRequest) -> HttpResponse {
    runs.hit();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tenant = req
        .headers()
        .get("X-Tenant-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    HttpResponse::Created().json(json!({ "tenant": tenant }))
}

/// While the middleware ran the first request, a duplicate by its (global) identity from
/// another tenant followed it in process and was given the first tenant's response.
#[actix_web::test]
async fn behind_a_global_middleware_two_tenants_sending_one_key_at_once_get_their_own_responses() {
    let config = Idempotency::builder()
        .store(MemoryStore::default())
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build();
    let server = serve_unconfigured_on(1, move |cfg| {
        cfg.app_data(config.clone()).service(
            web::scope("/v1")
                .wrap(IdempotentMiddleware::new())
                .service(slow_tenant_order),
        );
    });
    for _ in 0..2 {
        let key = new_key();
        let as_tenant = |tenant: &'static str| {
            server
                .post("/v1/slow-tenant-orders")
                .insert_header(("Idempotency-Key", key.as_str()))
                .insert_header(("X-Tenant-Id", tenant))
        };
        let (acme, globex) = futures_util::join!(send(as_tenant("acme"), ""), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            send(as_tenant("globex"), "").await
        });
        assert_eq!(acme.json()["tenant"], "acme");
        assert_eq!(globex.json()["tenant"], "globex", "never another tenant's response");
    }
    assert_eq!(server.runs(), 4, "one execution per tenant and key");
}

#[idempotent]
async fn versioned_annotated(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().json(json!({ "id": uuid::Uuid::new_v4().to_string() }))
}

async fn versioned_plain(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().json(json!({ "id": uuid::Uuid::new_v4().to_string() }))
}

/// Two routes of one pattern, told apart by a guard: once the middleware had seen the
/// annotated one, it let the plain one's keyed requests through unprotected.
#[actix_web::test]
async fn a_plain_route_sharing_its_pattern_with_an_annotated_one_stays_protected() {
    let server = serve_with(testing_config(), |cfg| {
        cfg.service(
            web::scope("/v1").wrap(IdempotentMiddleware::new()).service(
                web::resource("/versioned")
                    .route(
                        web::post()
                            .guard(actix_web::guard::Header("x-version", "2"))
                            .to(versioned_annotated),
                    )
                    .route(web::post().to(versioned_plain)),
            ),
        );
    });
    for _ in 0..2 {
        let v2 = server
            .post("/v1/versioned")
            .insert_header(("Idempotency-Key", new_key()))
            .insert_header(("x-version", "2"));
        send(v2, "").await;
    }
    let key = new_key();
    send(
        server
            .post("/v1/versioned")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    let retry = send(
        server
            .post("/v1/versioned")
            .insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;
    assert!(retry.is_replay(), "the plain route's retry is a replay: {retry:?}");
    assert_eq!(server.runs(), 3);
}

/// Freeing the middleware's claim failed once, and the annotated handler then found that claim
/// and answered its own first request 409: the handler now adopts the claim instead.
#[actix_web::test]
async fn a_request_taken_over_from_the_middleware_never_conflicts_with_the_middlewares_claim() {
    let store = crate::faulty_store::FaultyStore::with(|faults| &faults.failing_releases);
    let config = Idempotency::builder()
        .store(store)
        .wait_timeout(Duration::from_secs(2))
        .build();
    let server = serve_with(config, behind_the_middleware);
    let key = new_key();
    let order = || {
        server
            .post("/v1/json-orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .content_type("application/json")
    };
    let first = send(order(), r#"{"item":"book","quantity":1}"#).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let retry = send(order(), r#"{"quantity":1,"item":"book"}"#).await;
    assert!(retry.is_replay(), "{retry:?}");
    assert_eq!(server.runs(), 1);
}

async fn forwarding_fail_open(key: IdempotencyKey) -> HttpResponse {
    HttpResponse::Created().body(key.key().to_owned())
}

/// With the store down and `fail_open(true)`, a handler taking `IdempotencyKey` answered 400
/// `idempotency_key_missing` although the client sent the key.
#[actix_web::test]
async fn a_handler_running_unprotected_after_a_store_failure_still_gets_its_key() {
    let store = crate::faulty_store::FaultyStore::with(|faults| &faults.down);
    let config = Idempotency::builder()
        .store(store)
        .fail_open(true)
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build();
    let server = serve_with(config, |cfg| {
        cfg.service(
            web::scope("/mw")
                .wrap(IdempotentMiddleware::new())
                .route("/forward", web::post().to(forwarding_fail_open)),
        )
        .service(forwarding);
    });
    let reply = send(server.post("/mw/forward").insert_header(("Idempotency-Key", "k-1")), "").await;
    assert_eq!((reply.status.as_u16(), reply.text()), (201, "k-1"));
    let reply = send(
        server
            .post("/forwarding")
            .insert_header(("Idempotency-Key", "k-2"))
            .insert_header(("X-Tenant-Id", "acme")),
        "",
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["key"], "k-2");
}
