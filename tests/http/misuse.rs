//! The mistakes a new user makes are either impossible or loud: each test here reproduces one
//! and checks that the promise (one execution per key) still holds, or that the answer says
//! what went wrong.

use std::time::Duration;

use actix_web::{post, web, HttpResponse};
use idempotent_actix::{idempotent, Idempotency, MemoryStore};
use serde_json::json;

use crate::support::{new_key, send_concurrently, serve_unconfigured_on, Runs};

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
