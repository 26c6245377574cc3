use std::time::Duration;

use actix_web::{post, web, HttpResponse};
use idempotent_actix::idempotent;
use serde_json::json;

use crate::support::{new_key, send, serve, Runs};

#[post("/quotes")]
#[idempotent(ttl = "1s")]
async fn create_quote(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

#[actix_web::test]
async fn a_key_is_replayed_within_its_ttl_and_runs_again_after_it() {
    let server = serve(|cfg| {
        cfg.service(create_quote);
    });
    let key = new_key();
    let quote = || server.post("/quotes").insert_header(("Idempotency-Key", key.as_str()));

    let first = send(quote(), "").await;
    let within_ttl = send(quote(), "").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after_ttl = send(quote(), "").await;
    let after_ttl_retry = send(quote(), "").await;

    assert!(within_ttl.is_replay());
    assert_eq!(within_ttl.body, first.body);
    assert!(!after_ttl.is_replay());
    assert_eq!(after_ttl.json(), json!({ "run": 2 }));
    assert!(after_ttl_retry.is_replay());
    assert_eq!(server.runs(), 2);
}
