use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpMessage, HttpRequest, HttpResponse};
use idempotent_actix::{idempotent, Idempotency};
use serde_json::json;

use crate::support::{new_key, send, serve, serve_with, Reply, Runs, TestServer};

#[post("/orders")]
#[idempotent(scope = "tenant")]
async fn create_order(req: HttpRequest, runs: web::Data<Runs>) -> HttpResponse {
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    HttpResponse::Created().json(json!({ "run": runs.hit(), "tenant": tenant }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order);
}

fn tenant_from_header() -> Idempotency {
    Idempotency::builder()
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build()
}

async fn order(server: &TestServer, key: &str, tenant: Option<&str>) -> Reply {
    let mut req = server.post("/orders").insert_header(("Idempotency-Key", key));
    if let Some(tenant) = tenant {
        req = req.insert_header(("X-Tenant-Id", tenant));
    }
    send(req, "").await
}

#[actix_web::test]
async fn the_same_key_in_two_tenants_runs_once_per_tenant_and_each_replays_its_own() {
    let server = serve_with(tenant_from_header(), routes);
    let key = new_key();

    let acme = order(&server, &key, Some("acme")).await;
    let globex = order(&server, &key, Some("globex")).await;
    let acme_retry = order(&server, &key, Some("acme")).await;
    let globex_retry = order(&server, &key, Some("globex")).await;

    assert_eq!(server.runs(), 2);
    assert_eq!((acme.status, globex.status), (StatusCode::CREATED, StatusCode::CREATED));
    assert!(!acme.is_replay() && !globex.is_replay());
    assert_eq!(acme.json()["tenant"], "acme");
    assert_eq!(globex.json()["tenant"], "globex");
    assert!(acme_retry.is_replay() && globex_retry.is_replay());
    assert_eq!(acme_retry.body, acme.body);
    assert_eq!(globex_retry.body, globex.body);
}

#[actix_web::test]
async fn a_keyed_request_without_a_tenant_is_refused_with_400_tenant_missing() {
    let server = serve_with(tenant_from_header(), routes);
    let key = new_key();

    let missing = order(&server, &key, None).await;
    let empty = order(&server, &key, Some("")).await;

    assert_eq!(server.runs(), 0);
    for reply in [missing, empty] {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.problem_code(), "idempotency_tenant_missing");
    }
}

#[actix_web::test]
async fn a_missing_tenant_never_falls_back_to_the_global_namespace() {
    let server = serve_with(tenant_from_header(), routes);
    let key = new_key();

    order(&server, &key, Some("acme")).await;
    let without_tenant = order(&server, &key, None).await;

    assert_eq!(server.runs(), 1);
    assert_eq!(without_tenant.status, StatusCode::BAD_REQUEST);
    assert_eq!(without_tenant.problem_code(), "idempotency_tenant_missing");
}

#[actix_web::test]
async fn a_tenant_scoped_route_without_any_tenant_resolver_is_refused_with_400() {
    let server = serve(routes);
    let key = new_key();

    let reply = order(&server, &key, Some("acme")).await;

    assert_eq!(server.runs(), 0);
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.problem_code(), "idempotency_tenant_missing");
}

#[actix_web::test]
async fn a_tenant_resolved_by_a_function_scopes_keys() {
    let idempotency = Idempotency::builder()
        .tenant(|req| {
            req.headers()
                .get("authorization")?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
                .map(str::to_owned)
        })
        .build();
    let server = serve_with(idempotency, routes);
    let key = new_key();
    let as_user = |token: &str| {
        server
            .post("/orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("Authorization", format!("Bearer {token}")))
    };

    let alice = send(as_user("alice"), "").await;
    let bob = send(as_user("bob"), "").await;
    let alice_retry = send(as_user("alice"), "").await;

    assert_eq!(server.runs(), 2);
    assert!(!bob.is_replay());
    assert!(alice_retry.is_replay());
    assert_eq!(alice_retry.body, alice.body);
}

/// What an authentication middleware leaves on the request.
struct Authenticated {
    account: String,
}

#[actix_web::test]
async fn a_tenant_from_an_authentication_extension_scopes_keys() {
    let idempotency = Idempotency::builder()
        .tenant_from_extension(|auth: &Authenticated| auth.account.clone())
        .build();
    let server = serve_with(idempotency, |cfg| {
        cfg.service(
            web::scope("")
                .wrap_fn(|req, next| {
                    let account = req
                        .headers()
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .map(|k| format!("account-of-{k}"));
                    if let Some(account) = account {
                        req.extensions_mut().insert(Authenticated { account });
                    }
                    actix_web::dev::Service::call(next, req)
                })
                .service(create_order),
        );
    });
    let key = new_key();
    let as_caller = |api_key: &str| {
        server
            .post("/orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("X-Api-Key", api_key))
    };

    let first = send(as_caller("k1"), "").await;
    let other_account = send(as_caller("k2"), "").await;
    let retry = send(as_caller("k1"), "").await;
    let anonymous = send(
        server.post("/orders").insert_header(("Idempotency-Key", key.as_str())),
        "",
    )
    .await;

    assert_eq!(server.runs(), 2);
    assert!(!other_account.is_replay());
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(anonymous.status, StatusCode::BAD_REQUEST);
    assert_eq!(anonymous.problem_code(), "idempotency_tenant_missing");
}
