//! Observability: every outcome of a keyed request is a `metrics` counter (and a duration
//! histogram) labelled with its route, and a `tracing` event inside an `idempotency` span.
//!
//! One binary of its own: it installs a process-wide metrics recorder and tracing subscriber.
//! Each test uses routes of its own, so parallel tests never read each other's counters.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use futures_util::future::join_all;
use idempotent_actix::{idempotent, Idempotency, IdempotentMiddleware, MemoryStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;

#[path = "support/faulty_store.rs"]
mod faulty_store;
#[path = "support/logs.rs"]
mod logs;
#[path = "support/services.rs"]
mod services;

use faulty_store::FaultyStore;
#[path = "http/support.rs"]
mod support;

use support::{new_key, send, send_keyed, serve, serve_with, Runs};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the only recorder of this test binary");
        snapshotter
    })
}

/// A metric's name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

/// Every counter's total and every histogram's number of samples so far. A snapshot of the
/// debugging recorder drains what it reports, so parallel tests pool what each of them reads.
fn totals() -> std::sync::MutexGuard<'static, std::collections::HashMap<Series, u64>> {
    static TOTALS: OnceLock<Mutex<std::collections::HashMap<Series, u64>>> = OnceLock::new();
    let mut totals = TOTALS.get_or_init(Default::default).lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let mut labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort_unstable();
        let added = match value {
            DebugValue::Counter(count) => count,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => continue,
        };
        *totals.entry((key.key().name().to_owned(), labels)).or_default() += added;
    }
    totals
}

/// Counter `name` with exactly these labels, or the number of samples of histogram `name`.
fn total(name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort_unstable();
    totals().get(&(name.to_owned(), labels)).copied().unwrap_or(0)
}

fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    total(name, labels)
}

fn requests(route: &str, outcome: &str) -> u64 {
    total("idempotency_requests_total", &[("route", route), ("outcome", outcome)])
}

fn durations(route: &str, outcome: &str) -> u64 {
    total(
        "idempotency_request_duration_seconds",
        &[("route", route), ("outcome", outcome)],
    )
}

fn log_lines(route: &str) -> Vec<String> {
    let needle = format!("route=\"{route}\"");
    logs::text()
        .lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn install() {
    snapshotter();
    logs::capture();
}

#[post("/observed/executed")]
#[idempotent]
async fn observed_executed(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().body("created")
}

#[actix_web::test]
async fn an_execution_and_its_replay_are_counted_timed_and_logged() {
    install();
    let server = serve(|cfg: &mut web::ServiceConfig| {
        cfg.service(observed_executed);
    });
    let key = new_key();
    send_keyed(server.post("/observed/executed"), &key, &json!({})).await;
    send_keyed(server.post("/observed/executed"), &key, &json!({})).await;
    send_keyed(server.post("/observed/executed"), &key, &json!({})).await;
    assert_eq!(requests("observed_executed", "executed"), 1);
    assert_eq!(requests("observed_executed", "replayed"), 2);
    assert_eq!(durations("observed_executed", "replayed"), 2);
    assert_eq!(durations("observed_executed", "executed"), 1);

    let lines = log_lines("observed_executed");
    let outcomes = |outcome: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .count()
    };
    assert_eq!(outcomes("executed"), 1, "{lines:#?}");
    assert_eq!(outcomes("replayed"), 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("idempotency{route=\"observed_executed\"}")),
        "every event is inside the request's span: {lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains(&key)), "the key is never logged");
}

#[post("/observed/slow")]
#[idempotent]
async fn observed_waited(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    tokio::time::sleep(Duration::from_millis(300)).await;
    HttpResponse::Created().body("created")
}

#[post("/observed/reject")]
#[idempotent(in_flight = "reject")]
async fn observed_in_flight(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    tokio::time::sleep(Duration::from_millis(300)).await;
    HttpResponse::Created().body("created")
}

#[actix_web::test]
async fn duplicates_of_a_running_request_are_counted_as_waited_or_in_flight() {
    install();
    let server = serve(|cfg: &mut web::ServiceConfig| {
        cfg.service(observed_waited).service(observed_in_flight);
    });
    for path in ["/observed/slow", "/observed/reject"] {
        let key = new_key();
        let replies = join_all((0..20).map(|_| {
            let (req, key) = (server.post(path), key.clone());
            actix_web::rt::spawn(async move { send_keyed(req, &key, &json!({})).await })
        }))
        .await;
        assert!(replies.iter().all(|r| r.is_ok()));
    }
    assert_eq!(server.runs(), 2);
    assert_eq!(requests("observed_waited", "executed"), 1);
    assert_eq!(
        requests("observed_waited", "waited") + requests("observed_waited", "replayed"),
        19
    );
    assert!(
        requests("observed_waited", "waited") >= 1,
        "at least one duplicate waited"
    );
    assert_eq!(requests("observed_in_flight", "executed"), 1);
    assert_eq!(
        requests("observed_in_flight", "in_flight") + requests("observed_in_flight", "replayed"),
        19
    );
    assert!(requests("observed_in_flight", "in_flight") >= 1);
}

#[post("/observed/failing")]
#[idempotent(required = true)]
async fn observed_refusals(runs: web::Data<Runs>, body: web::Bytes) -> HttpResponse {
    runs.hit();
    if body.as_ref() == b"fail" {
        return HttpResponse::ServiceUnavailable().finish();
    }
    HttpResponse::Ok().finish()
}

#[actix_web::test]
async fn conflicts_refusals_and_released_keys_are_counted() {
    install();
    let server = serve(|cfg: &mut web::ServiceConfig| {
        cfg.service(observed_refusals);
    });
    let keyed = |key: &str| {
        server
            .post("/observed/failing")
            .insert_header(("Idempotency-Key", key.to_owned()))
    };
    let key = new_key();
    send(keyed(&key), "ok").await;
    let conflict = send(keyed(&key), "other").await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let missing = send(server.post("/observed/failing"), "ok").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let failed = new_key();
    send(keyed(&failed), "fail").await;
    send(keyed(&failed), "fail").await;

    assert_eq!(requests("observed_refusals", "executed"), 1);
    assert_eq!(requests("observed_refusals", "conflict"), 1);
    assert_eq!(requests("observed_refusals", "rejected"), 1);
    assert_eq!(
        requests("observed_refusals", "released"),
        2,
        "a 503 is not stored: both ran"
    );
    assert_eq!(server.runs(), 3);
}

#[post("/observed/down")]
#[idempotent]
async fn observed_store_down(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Ok().finish()
}

#[actix_web::test]
async fn store_failures_are_counted_by_operation_and_as_an_outcome() {
    install();
    let before = counter("idempotency_store_errors_total", &[("operation", "claim")]);
    let server = serve_with(
        Idempotency::builder()
            .store(FaultyStore::with(|faults| &faults.down))
            .build(),
        |cfg| {
            cfg.service(observed_store_down);
        },
    );
    let reply = send_keyed(server.post("/observed/down"), &new_key(), &json!({})).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(requests("observed_store_down", "store_error"), 1);
    assert!(counter("idempotency_store_errors_total", &[("operation", "claim")]) > before);
    assert!(
        log_lines("observed_store_down").iter().any(|l| l.contains("WARN")),
        "a store error is a warning"
    );
    assert_eq!(server.runs(), 0);
}

#[post("/observed/evicted")]
#[idempotent]
async fn observed_evicted(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Ok().body(vec![b'x'; 4096])
}

#[actix_web::test]
async fn live_records_evicted_for_space_are_counted() {
    install();
    let before = counter("idempotency_evictions_total", &[]);
    let store = MemoryStore::with_capacity(64 * 1024);
    let server = serve_with(Idempotency::builder().store(store.clone()).build(), |cfg| {
        cfg.service(observed_evicted);
    });
    for _ in 0..64 {
        send_keyed(server.post("/observed/evicted"), &new_key(), &json!({})).await;
    }
    store.record_count(); // runs the cache's pending maintenance, where evictions happen
    let evicted = store.evicted_live_records();
    assert!(evicted > 0, "64 responses of 4 KiB do not fit in 64 KiB");
    assert!(counter("idempotency_evictions_total", &[]) >= before + evicted);
}

async fn unannotated(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().finish()
}

#[actix_web::test]
async fn the_middleware_reports_under_its_name() {
    install();
    let server = serve(|cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/api")
                .wrap(idempotent_actix::IdempotentMiddleware::new().name("observed_api"))
                .route("/things", web::post().to(unannotated)),
        );
    });
    let key = new_key();
    send_keyed(server.post("/api/things"), &key, &json!({})).await;
    send_keyed(server.post("/api/things"), &key, &json!({})).await;
    assert_eq!(requests("observed_api", "executed"), 1);
    assert_eq!(requests("observed_api", "replayed"), 1);
    assert_eq!(server.runs(), 1);
}

#[post("/annotated")]
#[idempotent(cache = "all")]
async fn annotated_behind_middleware(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().finish()
}

/// The attribute governs an annotated handler inside the middleware's scope: its executions are
/// reported once, under the handler's name, including the first, which the handler takes over
/// from the middleware.
#[actix_web::test]
async fn an_annotated_handler_behind_the_middleware_is_reported_once_under_its_own_name() {
    install();
    let server = serve(|cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::scope("/wrapped")
                .wrap(idempotent_actix::IdempotentMiddleware::new().name("wrapping_api"))
                .service(annotated_behind_middleware),
        );
    });
    for _ in 0..3 {
        let key = new_key();
        send_keyed(server.post("/wrapped/annotated"), &key, &json!({})).await;
        send_keyed(server.post("/wrapped/annotated"), &key, &json!({})).await;
    }
    assert_eq!(server.runs(), 3);
    assert_eq!(requests("annotated_behind_middleware", "executed"), 3);
    for outcome in ["executed", "released", "waited", "conflict"] {
        assert_eq!(requests("wrapping_api", outcome), 0, "{outcome}");
    }
    // A worker that has not yet seen the route run answers a replay from the record itself.
    let replays = requests("annotated_behind_middleware", "replayed") + requests("wrapping_api", "replayed");
    assert_eq!(replays, 3, "each retry reported once");
}

#[post("/tenant-orders")]
#[idempotent(scope = "tenant")]
async fn tenant_order(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    HttpResponse::Created().finish()
}

/// An authenticated caller, as an authentication middleware would insert it.
#[derive(Clone)]
struct Caller {
    org: String,
}

/// A stand-in for an authentication middleware: inserts the caller from `X-Api-Key`.
async fn authenticate(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if let Some(key) = req.headers().get("X-Api-Key").and_then(|v| v.to_str().ok()) {
        let org = key.to_owned();
        actix_web::HttpMessage::extensions_mut(&req).insert(Caller { org });
    }
    next.call(req).await
}

async fn tenant_missing_detail(server: &support::TestServer, path: &str) -> String {
    let reply = send(
        server
            .post(path)
            .insert_header(("Idempotency-Key", new_key()))
            .insert_header(("X-Api-Key", "acme")),
        "",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.problem_code(), "idempotency_tenant_missing");
    reply.json()["detail"].as_str().expect("a detail").to_owned()
}

/// `idempotency_tenant_missing` used to be one answer for three different mistakes.
#[actix_web::test]
async fn a_missing_tenant_says_whether_no_resolver_is_configured() {
    logs::capture();
    let server = serve_with(Idempotency::builder().store(MemoryStore::default()).build(), |cfg| {
        cfg.service(tenant_order);
    });
    let detail = tenant_missing_detail(&server, "/tenant-orders").await;
    assert!(detail.contains("server resolves no tenant"), "{detail}");
    tenant_missing_detail(&server, "/tenant-orders").await;
    let warnings = logs::text();
    assert_eq!(
        warnings.matches("has no tenant resolver").count(),
        1,
        "logged once: {warnings}"
    );
    assert!(warnings.contains("tenant_from_extension"), "the fix is named");
    assert_eq!(server.runs(), 0);
}

#[actix_web::test]
async fn a_missing_tenant_says_when_the_middleware_runs_before_authentication() {
    logs::capture();
    let config = Idempotency::builder()
        .store(MemoryStore::default())
        .tenant_from_extension(|caller: &Caller| caller.org.clone())
        .build();
    let server = serve_with(config, |cfg| {
        cfg.service(
            web::scope("/wrong-order")
                .wrap(actix_web::middleware::from_fn(authenticate))
                .wrap(IdempotentMiddleware::new().scope(idempotent_actix::Scope::Tenant))
                .route(
                    "/orders",
                    web::post().to(|runs: web::Data<Runs>| async move {
                        runs.hit();
                        HttpResponse::Created().finish()
                    }),
                ),
        )
        .service(
            web::scope("/right-order")
                .wrap(IdempotentMiddleware::new().scope(idempotent_actix::Scope::Tenant))
                .wrap(actix_web::middleware::from_fn(authenticate))
                .route(
                    "/orders",
                    web::post().to(|runs: web::Data<Runs>| async move {
                        runs.hit();
                        HttpResponse::Created().finish()
                    }),
                ),
        );
    });
    let detail = tenant_missing_detail(&server, "/wrong-order/orders").await;
    assert!(detail.contains("not authenticated before"), "{detail}");
    let warnings = logs::text();
    assert!(warnings.contains("IdempotentMiddleware without the"), "{warnings}");
    assert!(warnings.contains("Caller"), "the extension type is named");
    assert!(warnings.contains(".wrap(IdempotentMiddleware::..) before .wrap(<authentication>)"));

    let key = new_key();
    let keyed = || {
        server
            .post("/right-order/orders")
            .insert_header(("Idempotency-Key", key.as_str()))
            .insert_header(("X-Api-Key", "acme"))
    };
    assert_eq!(send(keyed(), "").await.status, 201);
    assert!(
        send(keyed(), "").await.is_replay(),
        "wrapped inside the authentication, the tenant is known"
    );
    assert_eq!(server.runs(), 1);
}

#[actix_web::test]
async fn a_missing_tenant_header_is_named() {
    let config = Idempotency::builder()
        .store(MemoryStore::default())
        .tenant_from_header(HeaderName::from_static("x-tenant-id"))
        .build();
    let server = serve_with(config, |cfg| {
        cfg.service(tenant_order);
    });
    let detail = tenant_missing_detail(&server, "/tenant-orders").await;
    assert!(detail.contains("`x-tenant-id` header"), "{detail}");
}

/// `migrate()` on every replica's start used to log PostgreSQL's "already exists, skipping"
/// notices (and take an ACCESS EXCLUSIVE lock) although there was nothing to do.
#[actix_web::test]
async fn migrating_an_up_to_date_database_logs_no_notice() {
    install();
    if !services::server_up("PostgreSQL", services::POSTGRES_ADDR) {
        return;
    }
    let store =
        idempotent_actix::store::PostgresStore::new(&services::postgres_url(services::POSTGRES_ADDR)).expect("store");
    store.migrate().await.expect("migrate");
    let notices = || logs::text().matches("already exists, skipping").count();
    let before = notices();
    store.migrate().await.expect("migrate again");
    store.migrate().await.expect("and again");
    tokio::time::sleep(Duration::from_millis(200)).await; // notices arrive on the connection's task
    assert_eq!(notices(), before, "no notice for a schema that is up to date");
}
