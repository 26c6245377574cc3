use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use futures_util::future::join_all;
use idempotent_actix::{idempotent, Idempotency, MemoryStore};
use serde_json::json;

use crate::support::{bounded, new_key, send_keyed, serve_with, Reply, TestServer};

const HANDLER_TIME: Duration = Duration::from_millis(500);

#[post("/orders")]
#[idempotent]
async fn create_order(body: web::Json<serde_json::Value>, runs: web::Data<crate::support::Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(HANDLER_TIME).await;
    HttpResponse::Created()
        .json(json!({ "run": run, "order": body.into_inner(), "id": uuid::Uuid::new_v4().to_string() }))
}

#[post("/reject")]
#[idempotent(in_flight = "reject")]
async fn create_order_rejecting_duplicates(runs: web::Data<crate::support::Runs>) -> HttpResponse {
    let run = runs.hit();
    tokio::time::sleep(HANDLER_TIME).await;
    HttpResponse::Created().json(json!({ "run": run }))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order).service(create_order_rejecting_duplicates);
}

/// Two servers, each with its own configuration (own in-process flights), sharing one store:
/// replicas behind a load balancer.
fn replicas(configure: impl Fn() -> idempotent_actix::IdempotencyBuilder) -> (TestServer, TestServer) {
    let store = MemoryStore::default();
    let a = serve_with(configure().store(store.clone()).build(), routes);
    let b = serve_with(configure().store(store).build(), routes);
    (a, b)
}

async fn keyed(
    server: &TestServer,
    path: &str,
    key: &str,
    body: &serde_json::Value,
) -> actix_web::rt::task::JoinHandle<Reply> {
    let (req, key, body) = (server.post(path), key.to_owned(), body.clone());
    actix_web::rt::spawn(async move { send_keyed(req, &key, &body).await })
}

#[actix_web::test]
async fn duplicates_spread_over_two_replicas_sharing_a_store_run_the_handler_once() {
    let (a, b) = replicas(Idempotency::builder);
    let key = new_key();
    let body = json!({ "item": "book" });

    let mut requests = Vec::new();
    for _ in 0..50 {
        requests.push(keyed(&a, "/orders", &key, &body).await);
        requests.push(keyed(&b, "/orders", &key, &body).await);
    }
    let replies: Vec<Reply> = join_all(requests).await.into_iter().map(Result::unwrap).collect();

    assert_eq!(a.runs() + b.runs(), 1);
    assert!(replies
        .iter()
        .all(|r| r.status == StatusCode::CREATED && r.body == replies[0].body));
    assert_eq!(replies.iter().filter(|r| !r.is_replay()).count(), 1);
}

#[actix_web::test]
async fn a_handler_slower_than_its_lease_still_runs_once_across_replicas() {
    let (a, b) = replicas(|| Idempotency::builder().lease(Duration::from_millis(100)));
    let key = new_key();
    let body = json!({ "item": "pen" });

    let first = keyed(&a, "/orders", &key, &body).await;
    a.wait_for_runs(1).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let duplicate = bounded(keyed(&b, "/orders", &key, &body).await).await.unwrap();
    let first = first.await.unwrap();

    assert_eq!((a.runs(), b.runs()), (1, 0));
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(duplicate.is_replay());
    assert_eq!(duplicate.body, first.body);
}

#[actix_web::test]
async fn in_flight_reject_answers_409_on_another_replica_while_the_first_runs() {
    let (a, b) = replicas(Idempotency::builder);
    let key = new_key();
    let body = json!({});

    let first = keyed(&a, "/reject", &key, &body).await;
    a.wait_for_runs(1).await;
    let duplicate = keyed(&b, "/reject", &key, &body).await.await.unwrap();
    let first = first.await.unwrap();

    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.problem_code(), "idempotency_in_flight");
    assert!(duplicate.header("retry-after").is_some());
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(a.runs() + b.runs(), 1);
}

#[actix_web::test]
async fn a_mismatch_on_another_replica_while_the_first_runs_is_a_conflict() {
    let (a, b) = replicas(Idempotency::builder);
    let key = new_key();

    let first = keyed(&a, "/orders", &key, &json!({ "amount": 5 })).await;
    a.wait_for_runs(1).await;
    let mismatch = keyed(&b, "/orders", &key, &json!({ "amount": 6 })).await.await.unwrap();
    first.await.unwrap();

    assert_eq!(mismatch.status, StatusCode::CONFLICT);
    assert_eq!(mismatch.problem_code(), "idempotency_conflict");
    assert_eq!(a.runs() + b.runs(), 1);
}

#[actix_web::test]
async fn a_replica_that_stops_mid_request_holds_the_key_only_for_its_lease() {
    let (a, b) = replicas(|| Idempotency::builder().lease(Duration::from_millis(300)));
    let key = new_key();
    let body = json!({ "item": "lamp" });

    let abandoned = keyed(&a, "/orders", &key, &body).await;
    a.wait_for_runs(1).await;
    drop(a);
    let retry = bounded(keyed(&b, "/orders", &key, &body).await).await.unwrap();
    abandoned.abort();

    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(!retry.is_replay());
    assert_eq!(b.runs(), 1);
}
