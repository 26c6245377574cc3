//! Two `orders` processes sharing one store, as two replicas behind a load balancer would:
//! duplicates spread over both run the handler once, `in_flight = "reject"` answers the same on
//! either replica, and a replica killed mid-request frees its key once its lease lapses.
//!
//! The stores are the real servers on this machine: Redis at 127.0.0.1:6379 and PostgreSQL at
//! postgres://postgres@127.0.0.1:5432/postgres (`.ci/run` starts them). A test whose server
//! does not answer prints a skip notice and passes, except under `CI=true`, where it fails.
#![cfg(any(feature = "redis", feature = "postgres"))]

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use serde_json::{json, Value};

#[path = "support/orders.rs"]
mod orders;

const LEASE: &str = "2s";

#[cfg(feature = "redis")]
const REDIS: (&str, &str) = ("127.0.0.1:6379", "redis://127.0.0.1:6379/");
#[cfg(feature = "postgres")]
const POSTGRES: (&str, &str) = ("127.0.0.1:5432", "postgres://postgres@127.0.0.1:5432/postgres");

/// Whether the store's server answers. Under `CI=true` a missing server fails the test;
/// elsewhere the test is skipped with a notice.
fn server_up((addr, url): (&str, &str)) -> bool {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => true,
        Err(error) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{url} does not answer ({error}); CI=true requires it (.ci/run starts it)")
        }
        Err(error) => {
            eprintln!("skipped: {url} does not answer ({error})");
            false
        }
    }
}

type Replica = orders::Orders;

/// One replica on `store`, with the test lease.
fn replica(store: &str) -> Replica {
    Replica::start(&["--store", store, "--lease", LEASE])
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(60)).finish()
}

struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

async fn post(replica: &Replica, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
    let mut request = client().post(replica.url(path));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request.send_json(body).await.expect("the replica answers");
    let replayed = response.headers().contains_key("idempotency-replayed");
    let bytes = response.body().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status: response.status(),
        replayed,
        body,
    }
}

async fn runs(replica: &Replica, handler: &str) -> u64 {
    let mut response = client().get(replica.url("/stats")).send().await.expect("stats");
    let stats: Value = response.json().await.expect("stats JSON");
    stats[handler].as_u64().expect("a run count")
}

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4())
}

/// 20 simultaneous duplicates, alternating between the two replicas, run the handler once in
/// total; every answer carries the same order.
async fn duplicates_over_two_replicas_run_once(store: &str) {
    let (a, b) = (replica(store), replica(store));
    let (tenant, key) = (unique("tenant"), unique("order"));
    let headers = [("X-Tenant-Id", tenant.as_str()), ("Idempotency-Key", key.as_str())];
    let body = json!({"item": "book", "quantity": 2, "delay_ms": 500});
    let requests = (0..20).map(|i| post(if i % 2 == 0 { &a } else { &b }, "/orders", &headers, &body));
    let answers = futures_util::future::join_all(requests).await;

    let ids: Vec<&Value> = answers.iter().map(|answer| &answer.body["id"]).collect();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    assert!(ids[0].is_string(), "an order id: {}", answers[0].body);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every duplicate gets the one order: {ids:?}"
    );
    assert_eq!(
        answers.iter().filter(|answer| !answer.replayed).count(),
        1,
        "one original answer, the rest replays"
    );
    assert_eq!(
        runs(&a, "orders").await + runs(&b, "orders").await,
        1,
        "the handler ran once across both replicas"
    );
}

/// `in_flight = "reject"`: a duplicate that reaches the other replica while the first runs gets
/// 409 `idempotency_in_flight` with Retry-After at once, and the result once it is stored.
async fn a_duplicate_on_the_other_replica_is_rejected_while_in_flight(store: &str) {
    let (a, b) = (replica(store), replica(store));
    let key = unique("payment");
    let headers = [("X-Idempotency-Key", key.as_str())];
    let body = json!({"amount": 1200, "delay_ms": 1500});
    let first = post(&a, "/payments", &headers, &body);
    let duplicate = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let started = Instant::now();
        let answer = post(&b, "/payments", &headers, &body).await;
        (answer, started.elapsed())
    };
    let (first, (duplicate, waited)) = futures_util::join!(first, duplicate);
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(duplicate.status, StatusCode::CONFLICT, "{}", duplicate.body);
    assert_eq!(duplicate.body["code"], "idempotency_in_flight");
    assert!(
        waited < Duration::from_millis(1000),
        "rejected at once, not after {waited:?}"
    );

    let replay = post(&b, "/payments", &headers, &body).await;
    assert_eq!(
        (replay.status, replay.replayed),
        (StatusCode::OK, true),
        "{}",
        replay.body
    );
    assert_eq!(replay.body["payment_id"], first.body["payment_id"]);
    assert_eq!(runs(&a, "payments").await + runs(&b, "payments").await, 1);
}

/// Replica A dies (SIGKILL) once its handler has started a 5 s request. A retry on replica B cannot run while
/// A's lease holds the key; once the lease (2 s) lapses, B runs the request itself and answers
/// 201.
async fn a_killed_replica_frees_its_key_after_the_lease(store: &str) {
    let (mut a, b) = (replica(store), replica(store));
    let (tenant, key) = (unique("tenant"), unique("order"));
    let headers = [("X-Tenant-Id", tenant.as_str()), ("Idempotency-Key", key.as_str())];
    let body = json!({"item": "lamp", "quantity": 1, "delay_ms": 5000});

    let doomed = actix_web::rt::spawn({
        let request = client()
            .post(a.url("/orders"))
            .insert_header(headers[0])
            .insert_header(headers[1]);
        let body = body.clone();
        async move { request.send_json(&body).await.map(|response| response.status()) }
    });
    // The first claim on a fresh replica also prepares statements or loads scripts: wait for
    // the handler to start rather than for a fixed time.
    let started = Instant::now();
    while runs(&a, "orders").await == 0 {
        assert!(started.elapsed() < Duration::from_secs(4), "A started the handler");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill();
    let killed = Instant::now();
    assert!(doomed.await.expect("request task").is_err(), "A died before answering");

    let retry = post(&b, "/orders", &headers, &body).await;
    let elapsed = killed.elapsed();
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert!(!retry.replayed, "B ran the request itself");
    assert_eq!(runs(&b, "orders").await, 1, "B's handler ran once");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "B waited for A's lease to lapse (answered after {elapsed:?})"
    );

    let replay = post(&b, "/orders", &headers, &body).await;
    assert_eq!((replay.status, replay.replayed), (StatusCode::CREATED, true));
    assert_eq!(replay.body["id"], retry.body["id"]);
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_twenty_duplicates_over_two_replicas_run_the_handler_once() {
    if server_up(REDIS) {
        duplicates_over_two_replicas_run_once(REDIS.1).await;
    }
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_in_flight_reject_answers_409_on_the_other_replica() {
    if server_up(REDIS) {
        a_duplicate_on_the_other_replica_is_rejected_while_in_flight(REDIS.1).await;
    }
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_a_killed_replica_frees_its_key_after_the_lease() {
    if server_up(REDIS) {
        a_killed_replica_frees_its_key_after_the_lease(REDIS.1).await;
    }
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_twenty_duplicates_over_two_replicas_run_the_handler_once() {
    if server_up(POSTGRES) {
        duplicates_over_two_replicas_run_once(POSTGRES.1).await;
    }
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_in_flight_reject_answers_409_on_the_other_replica() {
    if server_up(POSTGRES) {
        a_duplicate_on_the_other_replica_is_rejected_while_in_flight(POSTGRES.1).await;
    }
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_a_killed_replica_frees_its_key_after_the_lease() {
    if server_up(POSTGRES) {
        a_killed_replica_frees_its_key_after_the_lease(POSTGRES.1).await;
    }
}
