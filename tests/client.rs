//! The reqwest client helper (`idempotent_actix::client`) through real HTTP: against the
//! `orders` demo process (behind a TCP proxy that can lose answers) for what the server decides,
//! and against a small scripted actix server for what only the client decides (`Retry-After`,
//! caps, keys on the wire).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use idempotent_actix::client::reqwest_middleware::reqwest::header::HeaderName;
use idempotent_actix::client::reqwest_middleware::reqwest::{self, StatusCode};
use idempotent_actix::client::reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use idempotent_actix::client::{IdempotentRetry, ResponseExt, RetryPolicy};
use serde_json::{json, Value};

#[path = "support/orders.rs"]
mod orders;
#[path = "support/proxy.rs"]
mod proxy;
// The HTTP suite's server helpers; this binary uses some of them.
#[path = "support/logs.rs"]
mod logs;
#[path = "http/support.rs"]
mod support;

use orders::Orders;
use proxy::Proxy;

const JSON: &str = "application/json";

/// Short waits, so a test that retries a few times still takes milliseconds.
fn quick() -> RetryPolicy {
    RetryPolicy::default()
        .base_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
        .max_elapsed(Duration::from_secs(10))
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .build()
        .expect("a reqwest client")
}

fn client(retry: IdempotentRetry) -> ClientWithMiddleware {
    ClientBuilder::new(plain_client()).with(retry).build()
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.expect("a whole body")).expect("a JSON body")
}

/// How many times each demo handler ran.
async fn stats(demo: &Orders) -> Value {
    json_of(plain_client().get(demo.url("/stats")).send().await.expect("GET /stats")).await
}

// ---------------------------------------------------------------------------------------------
// Against the demo server

#[tokio::test]
async fn an_answer_lost_after_the_order_ran_is_retried_with_the_same_key_and_replayed() {
    let demo = Orders::start(&[]);
    let proxy = Proxy::start(demo.base.trim_start_matches("http://")).await;
    proxy.drop_answers(1);
    let client = client(IdempotentRetry::new(quick()));

    let mut response = None;
    let round_trips = proxy
        .round_trips_during(async {
            response = Some(
                client
                    .post(format!("http://{}/orders", proxy.addr()))
                    .header("X-Tenant-Id", "acme")
                    .header("content-type", JSON)
                    .body(json!({"item": "book", "quantity": 1}).to_string())
                    .send()
                    .await
                    .expect("the retry gets the answer"),
            );
        })
        .await;
    let response = response.unwrap();

    assert_eq!(round_trips, 2, "the lost answer, then the replay");
    assert_eq!(response.status(), StatusCode::CREATED);
    let outcome = response.retry_outcome().expect("a POST has an outcome").clone();
    assert_eq!(outcome.attempts(), 2);
    assert!(response.was_replayed(), "the second attempt got the stored answer");
    let order = json_of(response).await;
    assert_eq!(stats(&demo).await["orders"], 1, "exactly one execution");
    let stored = plain_client()
        .get(demo.url(&format!("/orders/{}", order["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::OK, "the replayed order is the one created");
}

#[tokio::test]
async fn a_503_is_retried_up_to_the_attempt_cap_and_then_returned() {
    let demo = Orders::start(&[]);
    let client =
        client(IdempotentRetry::new(quick().max_attempts(3)).key_header(HeaderName::from_static("x-idempotency-key")));

    let response = client
        .post(demo.url("/payments"))
        .header("content-type", JSON)
        .body(json!({"amount": 1, "fail": true}).to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.retry_outcome().unwrap().attempts(), 3);
    assert!(!response.was_replayed());
    assert_eq!(
        stats(&demo).await["payments"],
        3,
        "a 503 is not stored, so every attempt ran"
    );
}

#[tokio::test]
async fn a_400_is_returned_after_one_attempt() {
    let demo = Orders::start(&[]);
    let proxy = Proxy::start(demo.base.trim_start_matches("http://")).await;
    let client = client(IdempotentRetry::new(quick()));

    let mut response = None;
    let round_trips = proxy
        .round_trips_during(async {
            response = Some(
                client
                    .post(format!("http://{}/orders", proxy.addr()))
                    .header("X-Tenant-Id", "acme")
                    .header("content-type", JSON)
                    .body(json!({"item": "book"}).to_string())
                    .send()
                    .await
                    .unwrap(),
            );
        })
        .await;
    let response = response.unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.retry_outcome().unwrap().attempts(), 1);
    assert_eq!(round_trips, 1);
}

#[tokio::test]
async fn an_in_flight_409_is_retried_until_the_result_comes_back_as_a_replay() {
    let demo = Orders::start(&[]);
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"amount": 7, "delay_ms": 800}).to_string();
    let first = tokio::spawn({
        let (url, key, body) = (demo.url("/payments"), key.clone(), body.clone());
        async move {
            let response = plain_client()
                .post(url)
                .header("X-Idempotency-Key", key)
                .header("content-type", JSON)
                .body(body)
                .send()
                .await
                .unwrap();
            json_of(response).await
        }
    });
    while stats(&demo).await["payments"] != 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = client(IdempotentRetry::new(quick()).key_header(HeaderName::from_static("x-idempotency-key")));

    let response = client
        .post(demo.url("/payments"))
        .header("X-Idempotency-Key", &key)
        .header("content-type", JSON)
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.was_replayed());
    assert!(
        response.retry_outcome().unwrap().attempts() >= 2,
        "at least one 409 first"
    );
    let replayed = json_of(response).await;
    assert_eq!(replayed, first.await.unwrap(), "the first request's own answer");
    assert_eq!(stats(&demo).await["payments"], 1);
}

#[tokio::test]
async fn a_409_conflict_is_returned_after_one_attempt() {
    let demo = Orders::start(&[]);
    let client = client(IdempotentRetry::new(quick()).key_header(HeaderName::from_static("x-idempotency-key")));
    let pay = |amount: i64| {
        client
            .post(demo.url("/payments"))
            .header("X-Idempotency-Key", "invoice-9")
            .header("content-type", JSON)
            .body(json!({ "amount": amount }).to_string())
            .send()
    };
    assert_eq!(pay(1).await.unwrap().status(), StatusCode::OK);

    let response = pay(2).await.unwrap();

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.retry_outcome().unwrap().attempts(), 1);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "the problem document read to judge the 409 is handed back whole"
    );
    assert_eq!(json_of(response).await["code"], "idempotency_conflict");
    assert_eq!(stats(&demo).await["payments"], 1);
}

// ---------------------------------------------------------------------------------------------
// Against a scripted server

/// One scripted answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request as the scripted server saw it.
struct Seen {
    at: Instant,
    key: Option<String>,
    replay_key: Option<String>,
}

/// Answers every request, whatever its method and path, with the next scripted answer, then
/// with `otherwise`; records each request's key headers and arrival time.
struct Script {
    answers: Mutex<VecDeque<Answer>>,
    otherwise: Answer,
    seen: Mutex<Vec<Seen>>,
}

impl Script {
    fn new(answers: impl IntoIterator<Item = Answer>, otherwise: Answer) -> Arc<Self> {
        Arc::new(Self {
            answers: Mutex::new(answers.into_iter().collect()),
            otherwise,
            seen: Mutex::default(),
        })
    }

    fn serve(self: &Arc<Self>) -> support::TestServer {
        let script = web::Data::from(Arc::clone(self));
        support::serve_unconfigured(move |cfg| {
            cfg.app_data(script.clone()).default_service(web::to(scripted));
        })
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn keys(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().iter().map(|seen| seen.key.clone()).collect()
    }

    fn gaps(&self) -> Vec<Duration> {
        let seen = self.seen.lock().unwrap();
        seen.windows(2).map(|pair| pair[1].at - pair[0].at).collect()
    }
}

async fn scripted(req: HttpRequest, script: web::Data<Script>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
    script.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        key: header("idempotency-key"),
        replay_key: header("x-idempotency-key"),
    });
    let answer = script
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| script.otherwise.clone());
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
    for (name, value) in answer.headers {
        response.insert_header((name, value));
    }
    response.body("{}")
}

#[tokio::test]
async fn retry_after_is_waited_for_even_when_longer_than_the_max_delay() {
    let script = Script::new([Answer::status(429).with("Retry-After", "1")], Answer::status(200));
    let server = script.serve();
    let started = Instant::now();

    let response = client(IdempotentRetry::new(quick()))
        .post(server.url("/"))
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.retry_outcome().unwrap().attempts(), 2);
    assert!(script.gaps()[0] >= Duration::from_secs(1), "{:?}", script.gaps());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_retry_after_beyond_the_elapsed_cap_returns_the_answer_at_once() {
    let script = Script::new([Answer::status(503).with("Retry-After", "5")], Answer::status(200));
    let server = script.serve();
    let started = Instant::now();

    let response = client(IdempotentRetry::new(quick().max_elapsed(Duration::from_secs(1))))
        .post(server.url("/"))
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.retry_outcome().unwrap().attempts(), 1);
    assert_eq!(
        response.headers()["retry-after"],
        "5",
        "the caller can still see when to come back"
    );
    assert_eq!(script.count(), 1);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_elapsed_cap_ends_retries_before_the_attempt_cap() {
    let script = Script::new([], Answer::status(503));
    let server = script.serve();
    let policy = RetryPolicy::default()
        .max_attempts(1000)
        .base_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(20))
        .max_elapsed(Duration::from_millis(300));
    let started = Instant::now();

    let response = client(IdempotentRetry::new(policy))
        .post(server.url("/"))
        .body("{}")
        .send()
        .await
        .unwrap();

    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let attempts = response.retry_outcome().unwrap().attempts();
    assert!((2..1000).contains(&attempts), "{attempts} attempts");
    assert_eq!(script.count(), attempts as usize);
    // No attempt starts after 300 ms; the last one is a loopback round trip.
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test]
async fn a_callers_key_is_sent_verbatim_on_every_attempt() {
    let script = Script::new(
        [Answer::status(503), Answer::status(502)],
        Answer::status(201).with("X-Idempotency-Replayed", "true"),
    );
    let server = script.serve();
    let retry = IdempotentRetry::new(quick())
        .key_header(HeaderName::from_static("x-idempotency-key"))
        .replay_header(HeaderName::from_static("x-idempotency-replayed"));

    let response = client(retry)
        .post(server.url("/payments"))
        .header("X-Idempotency-Key", "order-42/payment")
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let outcome = response.retry_outcome().unwrap();
    assert_eq!(outcome.key(), "order-42/payment");
    assert_eq!(outcome.attempts(), 3);
    assert!(outcome.replayed(), "read from the renamed replay header");
    let seen = script.seen.lock().unwrap();
    assert!(seen
        .iter()
        .all(|seen| seen.replay_key.as_deref() == Some("order-42/payment")));
    assert!(seen.iter().all(|seen| seen.key.is_none()), "only the configured header");
}

#[tokio::test]
async fn a_generated_key_is_a_uuid_v4_kept_across_attempts_and_new_for_each_operation() {
    let script = Script::new([Answer::status(500), Answer::status(408)], Answer::status(200));
    let server = script.serve();
    let client = client(IdempotentRetry::new(quick()));

    let first = client.post(server.url("/")).body("{}").send().await.unwrap();
    let second = client.post(server.url("/")).body("{}").send().await.unwrap();

    let keys = script.keys();
    assert_eq!(keys.len(), 4, "three attempts, then one");
    let key = first.retry_outcome().unwrap().key();
    assert_eq!(uuid::Uuid::parse_str(key).unwrap().get_version_num(), 4);
    assert!(keys[..3].iter().all(|sent| sent.as_deref() == Some(key)), "{keys:?}");
    assert_eq!(keys[3].as_deref(), Some(second.retry_outcome().unwrap().key()));
    assert_ne!(keys[3].as_deref(), Some(key), "a new operation, a new key");
    assert!(!first.was_replayed());
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_server_is_back() {
    let script = Script::new([], Answer::status(200));
    let server = script.serve();
    let mut proxy = Proxy::start(&server.addr().to_string()).await;
    let url = format!("http://{}/", proxy.addr());
    proxy.cut();
    let back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.resume().await;
        proxy
    });
    let policy = quick()
        .max_attempts(50)
        .base_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(100));

    let response = client(IdempotentRetry::new(policy))
        .post(url)
        .body("{}")
        .send()
        .await
        .unwrap();

    let _proxy = back.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.retry_outcome().unwrap().attempts() >= 2);
    assert_eq!(script.count(), 1, "refused attempts never reached the server");
}

#[tokio::test]
async fn other_4xx_answers_are_returned_after_one_attempt() {
    for status in [400, 401, 403, 404, 409, 413, 422] {
        let script = Script::new([Answer::status(status)], Answer::status(200));
        let server = script.serve();

        let response = client(IdempotentRetry::new(quick()))
            .put(server.url("/"))
            .body("{}")
            .send()
            .await
            .unwrap();

        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.retry_outcome().unwrap().attempts(), 1, "{status}");
        assert_eq!(script.count(), 1, "{status}");
    }
}

#[tokio::test]
async fn safe_methods_pass_through_without_a_key_or_a_retry() {
    let script = Script::new([], Answer::status(503));
    let server = script.serve();

    let response = client(IdempotentRetry::new(quick()))
        .get(server.url("/"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.retry_outcome().is_none());
    assert_eq!(script.keys(), [None]);
}

#[tokio::test]
async fn a_streamed_body_gets_a_key_and_is_sent_once() {
    let script = Script::new([], Answer::status(503));
    let server = script.serve();

    let response = client(IdempotentRetry::new(quick()))
        .post(server.url("/"))
        .body(reqwest::Body::wrap(String::from("{}")))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.retry_outcome().unwrap().attempts(), 1);
    assert_eq!(script.count(), 1);
    assert!(script.keys()[0].is_some());
}

// ---------------------------------------------------------------------------------------------
// Logs

#[tokio::test]
async fn retries_are_logged_with_attempt_status_and_delay_but_never_the_key_or_body() {
    logs::capture();
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let (key, body) = (format!("secret-key-{secret}"), format!("secret-body-{secret}"));
    let script = Script::new([Answer::status(503)], Answer::status(200));
    let server = script.serve();
    let dropping = Proxy::start(&server.addr().to_string()).await;
    dropping.drop_answers(1);

    for url in [server.url("/"), format!("http://{}/", dropping.addr())] {
        let response = client(IdempotentRetry::new(quick()))
            .post(url)
            .header("Idempotency-Key", &key)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.retry_outcome().unwrap().attempts(), 2);
    }

    let logs = logs::text();
    assert!(logs.contains("retrying with the same idempotency key"), "{logs}");
    assert!(logs.contains("status=503"), "{logs}");
    assert!(logs.contains("connection closed before message completed"), "{logs}");
    assert!(logs.contains("delay_ms="), "{logs}");
    assert!(!logs.contains(&key), "the key appears in the logs");
    assert!(!logs.contains(&body), "the body appears in the logs");
}
