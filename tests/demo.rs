//! The `orders` demo's contract (SPEC "Demo server contract"), checked against the real binary.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

#[path = "support/orders.rs"]
mod orders;

use orders::{orders_binary, Orders as Demo};

impl Demo {
    fn started() -> Self {
        Self::start(&[])
    }
}

struct Reply {
    status: u16,
    replayed: bool,
    retry_after: Option<String>,
    body: Value,
}

async fn send(demo: &Demo, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let client = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
    let mut request = client.request(method.parse().expect("method"), demo.url(path));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut response = match body {
        Some(body) => {
            request
                .content_type("application/json")
                .send_body(body.to_owned())
                .await
        }
        None => request.send().await,
    }
    .expect("request to the demo");
    let bytes = response.body().limit(4 * 1024 * 1024).await.expect("response body");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Reply {
        status: response.status().as_u16(),
        replayed: header("idempotency-replayed").as_deref() == Some("true"),
        retry_after: header("retry-after"),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn stats(demo: &Demo) -> Value {
    send(demo, "GET", "/stats", &[], None).await.body
}

#[actix_web::test]
async fn orders_are_created_once_per_tenant_and_key_and_can_be_read_back() {
    let demo = Demo::started();
    let headers = [("X-Tenant-Id", "acme"), ("Idempotency-Key", "order-1")];
    let body = r#"{"item": "book", "quantity": 2}"#;

    let first = send(&demo, "POST", "/orders", &headers, Some(body)).await;
    assert_eq!(first.status, 201);
    assert!(!first.replayed);
    let id = first.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        first.body,
        json!({"id": id, "tenant": "acme", "item": "book", "quantity": 2})
    );

    let retry = send(&demo, "POST", "/orders", &headers, Some(body)).await;
    assert_eq!((retry.status, retry.replayed), (201, true));
    assert_eq!(retry.body, first.body);

    let other_tenant = send(
        &demo,
        "POST",
        "/orders",
        &[("X-Tenant-Id", "globex"), ("Idempotency-Key", "order-1")],
        Some(body),
    )
    .await;
    assert_eq!(other_tenant.status, 201);
    assert_ne!(other_tenant.body["id"], first.body["id"]);

    let conflict = send(
        &demo,
        "POST",
        "/orders",
        &headers,
        Some(r#"{"item": "pen", "quantity": 1}"#),
    )
    .await;
    assert_eq!(
        (conflict.status, conflict.body["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );

    let read = send(&demo, "GET", &format!("/orders/{id}"), &[], None).await;
    assert_eq!((read.status, read.body.clone()), (200, first.body.clone()));
    assert_eq!(send(&demo, "GET", "/orders/no-such-order", &[], None).await.status, 404);

    let unkeyed = send(&demo, "POST", "/orders", &[("X-Tenant-Id", "acme")], Some(body)).await;
    assert_eq!(unkeyed.status, 201);
    assert_eq!(stats(&demo).await["orders"], 3);
}

#[actix_web::test]
async fn invalid_order_bodies_get_400() {
    let demo = Demo::started();
    for (i, body) in [
        r#"{"item": "book"}"#,
        r#"{"item": "book", "quantity": 0}"#,
        r#"{"item": "book", "quantity": -3}"#,
        r#"{"item": "book", "quantity": 1.5}"#,
        r#"{"item": 7, "quantity": 1}"#,
        "not json",
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("bad-{i}");
        let reply = send(
            &demo,
            "POST",
            "/orders",
            &[("X-Tenant-Id", "acme"), ("Idempotency-Key", &key)],
            Some(body),
        )
        .await;
        assert_eq!(reply.status, 400, "body {body}");
    }
}

#[actix_web::test]
async fn a_delayed_order_is_waited_for_by_its_duplicate() {
    let demo = Demo::started();
    let headers = [("X-Tenant-Id", "acme"), ("Idempotency-Key", "slow-order")];
    let body = r#"{"item": "book", "quantity": 1, "delay_ms": 600}"#;
    let (first, duplicate) = futures_util::future::join(send(&demo, "POST", "/orders", &headers, Some(body)), async {
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        send(&demo, "POST", "/orders", &headers, Some(body)).await
    })
    .await;
    assert_eq!((first.status, duplicate.status), (201, 201));
    assert!(duplicate.replayed);
    assert_eq!(first.body, duplicate.body);
    assert_eq!(stats(&demo).await["orders"], 1);
}

#[actix_web::test]
async fn payments_require_a_key_reject_duplicates_in_flight_and_do_not_store_failures() {
    let demo = Demo::started();
    let missing = send(&demo, "POST", "/payments", &[], Some(r#"{"amount": 5}"#)).await;
    assert_eq!(
        (missing.status, missing.body["code"].as_str()),
        (400, Some("idempotency_key_missing"))
    );
    let wrong_header = send(
        &demo,
        "POST",
        "/payments",
        &[("Idempotency-Key", "p0")],
        Some(r#"{"amount": 5}"#),
    )
    .await;
    assert_eq!(wrong_header.status, 400);

    let key = [("X-Idempotency-Key", "pay-1")];
    let paid = send(&demo, "POST", "/payments", &key, Some(r#"{"amount": 500}"#)).await;
    assert_eq!(paid.status, 200);
    assert_eq!(paid.body["amount"], 500);
    assert!(paid.body["payment_id"].is_string());
    let again = send(&demo, "POST", "/payments", &key, Some(r#"{"amount": 500}"#)).await;
    assert_eq!(
        (again.status, again.replayed, again.body.clone()),
        (200, true, paid.body.clone())
    );

    let failing = [("X-Idempotency-Key", "pay-fail")];
    let failed = send(
        &demo,
        "POST",
        "/payments",
        &failing,
        Some(r#"{"amount": 7, "fail": true}"#),
    )
    .await;
    assert_eq!((failed.status, failed.replayed), (503, false));
    let failed_again = send(
        &demo,
        "POST",
        "/payments",
        &failing,
        Some(r#"{"amount": 7, "fail": true}"#),
    )
    .await;
    assert_eq!(
        (failed_again.status, failed_again.replayed),
        (503, false),
        "a 503 is not stored: the retry runs"
    );

    let slow = [("X-Idempotency-Key", "pay-slow")];
    let body = r#"{"amount": 9, "delay_ms": 800}"#;
    let (first, duplicate) = futures_util::future::join(send(&demo, "POST", "/payments", &slow, Some(body)), async {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        send(&demo, "POST", "/payments", &slow, Some(body)).await
    })
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(
        (duplicate.status, duplicate.body["code"].as_str()),
        (409, Some("idempotency_in_flight"))
    );
    assert!(duplicate.retry_after.is_some(), "an in-flight 409 carries Retry-After");
    assert_eq!(stats(&demo).await["payments"], 4);
}

#[actix_web::test]
async fn webhooks_are_deduplicated_by_event_id() {
    let demo = Demo::started();
    let event = [("X-Event-ID", "evt_1")];
    for _ in 0..3 {
        let reply = send(&demo, "POST", "/webhooks", &event, Some(r#"{"type": "invoice.paid"}"#)).await;
        assert_eq!((reply.status, reply.body.clone()), (200, json!({"received": true})));
    }
    let missing = send(&demo, "POST", "/webhooks", &[], Some("{}")).await;
    assert_eq!(
        (missing.status, missing.body["code"].as_str()),
        (400, Some("idempotency_key_missing"))
    );
    assert_eq!(stats(&demo).await["webhooks"], 1);
}

#[actix_web::test]
async fn quotes_are_remembered_for_two_seconds() {
    let demo = Demo::started();
    let key = [("Idempotency-Key", "quote-1")];
    let first = send(&demo, "POST", "/quotes", &key, None).await;
    assert_eq!(first.status, 201);
    assert!(first.body["quote_id"].is_string());
    let replay = send(&demo, "POST", "/quotes", &key, None).await;
    assert_eq!((replay.replayed, replay.body.clone()), (true, first.body.clone()));
    actix_web::rt::time::sleep(Duration::from_millis(2300)).await;
    let later = send(&demo, "POST", "/quotes", &key, None).await;
    assert_eq!((later.status, later.replayed), (201, false));
    assert_ne!(later.body["quote_id"], first.body["quote_id"]);
    assert_eq!(
        stats(&demo).await,
        json!({"orders": 0, "payments": 0, "webhooks": 0, "quotes": 2})
    );
}

#[actix_web::test]
async fn sigterm_lets_a_running_order_finish_before_exit() {
    let mut demo = Demo::started();
    let headers = [("X-Tenant-Id", "acme"), ("Idempotency-Key", "order-during-shutdown")];
    let body = r#"{"item": "book", "quantity": 1, "delay_ms": 800}"#;
    let (reply, status) = futures_util::future::join(send(&demo, "POST", "/orders", &headers, Some(body)), async {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        actix_web::rt::task::spawn_blocking({
            let pid = demo.child.id().to_string();
            move || Command::new("kill").args(["-TERM", &pid]).status()
        })
        .await
    })
    .await;
    assert!(status.expect("kill").expect("kill -TERM").success());
    assert_eq!(
        reply.status, 201,
        "the running order completes during graceful shutdown"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = demo.child.try_wait().expect("poll the demo") {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "the demo must exit after SIGTERM");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "graceful shutdown exits with 0, got {exit}");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for args in [&["--store", "mongodb://x"][..], &["--lease", "soon"], &["--frobnicate"]] {
        let output = Command::new(orders_binary())
            .args(args)
            .output()
            .expect("run the orders example");
        assert_eq!(output.status.code(), Some(2), "{args:?} must exit with 2");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(args[0]),
            "{args:?}: the message names the flag: {stderr}"
        );
    }
}
