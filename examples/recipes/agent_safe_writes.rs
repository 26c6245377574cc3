//! Writes an autonomous agent can retry safely, webhooks it de-duplicates, and Sandbox kept
//! apart from Production: the "Safety & Idempotency" guide of the PacSpace API.
//!
//! The guide describes both sides: the API the agent writes to, and the agent's own webhook
//! endpoint. This recipe runs both in one server, plus the agent's client. The API speaks the
//! wire format of the official `pacspace-sdk` (0.7.0), so `pac.balance.emit(...)` works against
//! it unchanged (`PacSpace(api_key, base_url="http://127.0.0.1:8080")`): the API key in
//! `X-Api-Key`, answers in `{"success": true, "data": {...}}`, errors in
//! `{"success": false, "error": {"code", "message"}}`, and a key still being processed answered
//! 202 `{"code": "IDEMPOTENCY_PENDING", "retryAfterSeconds": n}`, which the SDK hands back to the
//! caller to call again later.
//!
//! | documented behaviour | how |
//! |---|---|
//! | write endpoints take `Idempotency-Key` | `#[idempotent(in_flight = "accept")]` on `POST /api/v1/balance/delta` and `POST /api/v1/balance/checkpoint` |
//! | a key still being processed: 202 Accepted | `in_flight = "accept"`: 202 `IDEMPOTENCY_PENDING` with `retryAfterSeconds` and `Retry-After` at once ([`pacspace_error`]); a later retry gets the original response |
//! | completed key, identical body: the original response | a replay, marked `Idempotency-Replayed: true` |
//! | completed key, different body: 409 Conflict | `on_mismatch = "reject"` (the default), 409 `IDEMPOTENCY_CONFLICT` in the API's error envelope |
//! | store down: retryable | 503 `SERVICE_UNAVAILABLE` with `retryAfterSeconds`, which the SDK retries after that delay |
//! | the key is derived from the agent's `referenceId` | [`idempotency_key`] in the agent's client |
//! | retries: at most 2, exponential with jitter, honouring `Retry-After`, within a time budget; 408, 429 and 5xx only, never other 4xx | [`agent_client`]: `RetryPolicy::default().max_attempts(3).max_elapsed(30 s)` and a 30 s timeout per attempt |
//! | webhook deliveries carry `X-Event-ID`; skip an event already processed, answering `{"received": true, "duplicate": true}` | `#[idempotent(header = "X-Event-ID", required = true, ttl = "7d")]` on the agent's webhook endpoint; [`mark_duplicate`] as the replay hook (`on_replay`) adds `"duplicate": true` to every redelivery's answer |
//! | webhook handlers answer 200 at once and process asynchronously | [`receive_webhook`] only queues the event |
//! | Sandbox (`pk_test_*`) and Production (`pk_live_*`) never share keys: `live:`/`test:` prefixes | server: one [`Environments`] config per environment, `namespace("live:")` / `namespace("test:")` in one shared store, picked by the API key in `X-Api-Key`; client: the key itself is prefixed |
//!
//! Differences and limits: the guide does not say how long keys or event ids are
//! remembered: 24 h (the default) for writes and 7 days for event ids, to outlast redeliveries,
//! are this recipe's choices. The project's client helper hands a 202 back as the final answer
//! (and `is_success()` holds for it): an agent must read 202 as "not done yet" (the first
//! request may still fail and release the key) and call again later with the same key, which
//! then gets the original response. Webhook signatures are left out: the guide names no scheme.
//!
//! A demo switch, not part of the API: `X-Demo-Delay-Ms: n` makes a delta take `n` ms.
//!
//! Try it (`cargo run --example agent_safe_writes --features client`, then in another terminal):
//!
//! ```console
//! $ delta() { curl -si localhost:8080/api/v1/balance/delta -H "X-Api-Key: $1" \
//!     -H 'Idempotency-Key: live:acme:emit:2024-06:7f3c' -H 'Content-Type: application/json' \
//!     -d '{"customerId": "cus_1", "delta": -1, "reason": "api-call", "referenceId": "acme:emit:2024-06:7f3c"}' "${@:2}"; }
//! $ delta pk_live_demo -H 'X-Demo-Delay-Ms: 3000' & delta pk_live_demo   # the second: 202 Accepted
//! $ delta pk_live_demo       # 201, the first answer, idempotency-replayed: true
//! $ delta pk_test_demo       # 201, a new delta: Sandbox does not see Production's key
//! $ curl -si localhost:8080/webhooks/pacspace/live -H 'X-Event-ID: evt_1' -d '{}'   # twice: one event queued, the second answer has "duplicate": true
//! $ cargo run --example agent_safe_writes --features client -- --call http://127.0.0.1:8080
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{error, guard, post, web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::client::reqwest_middleware::reqwest::{self, header::CONTENT_TYPE};
use idempotent_actix::client::reqwest_middleware::{self, ClientBuilder, ClientWithMiddleware};
use idempotent_actix::client::{IdempotentRetry, ResponseExt, RetryPolicy};
use idempotent_actix::{idempotent, Idempotency, IdempotencyError, MemoryStore, Store, StoredResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Environments

/// Sandbox or Production, told apart by the API key's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// `pk_live_*` keys.
    Live,
    /// `pk_test_*` keys (Sandbox).
    Test,
}

impl Environment {
    /// The environment of an API key, if it is a PacSpace-style key.
    pub fn of_api_key(api_key: &str) -> Option<Self> {
        if api_key.starts_with("pk_live_") {
            Some(Self::Live)
        } else if api_key.starts_with("pk_test_") {
            Some(Self::Test)
        } else {
            None
        }
    }

    /// The environment of a request's API key, sent in `X-Api-Key` as the SDK sends it.
    fn of_request(headers: &HeaderMap) -> Option<Self> {
        Self::of_api_key(headers.get("X-Api-Key")?.to_str().ok()?)
    }

    /// `live` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    /// The prefix of its keys: the server's namespace, and the agent's own key prefix.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::Live => "live:",
            Self::Test => "test:",
        }
    }
}

/// The idempotency configurations of one environment: the API's, which answers in the API's
/// error envelope, and the webhook endpoint's, which marks redeliveries as duplicates.
#[derive(Clone)]
struct Configs {
    api: Idempotency,
    webhooks: Idempotency,
}

/// One idempotency configuration per environment, both in one store: the namespace keeps a
/// Sandbox key from ever replaying (or conflicting with) a Production record, even when a
/// client forgets its own prefix.
#[derive(Clone)]
pub struct Environments {
    live: Configs,
    test: Configs,
}

impl Environments {
    /// Both environments in `store` (a `MemoryStore` here; Redis or PostgreSQL with several
    /// replicas), under the namespaces `live:` and `test:`.
    pub fn sharing(store: Arc<dyn Store>) -> Self {
        let configs = |environment: Environment| {
            let builder = || {
                Idempotency::builder()
                    .shared_store(Arc::clone(&store))
                    .namespace(environment.namespace())
            };
            Configs {
                api: builder().error_response(pacspace_error).build(),
                webhooks: builder().on_replay(mark_duplicate).build(),
            }
        };
        Self {
            live: configs(Environment::Live),
            test: configs(Environment::Test),
        }
    }

    fn each(&self) -> [(Environment, Configs); 2] {
        [
            (Environment::Live, self.live.clone()),
            (Environment::Test, self.test.clone()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// The wire format

/// A successful answer in the API's envelope: `{"success": true, "data": ...}`.
fn success(status: StatusCode, data: Value) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "success": true, "data": data }))
}

/// An error in the API's envelope: `{"success": false, "error": {"code", "message"}}`.
fn failure(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "success": false, "error": { "code": code, "message": message } }))
}

/// The engine's answers as the API gives them (the API config's `error_response` hook).
///
/// A key still being processed is 202 `{"code": "IDEMPOTENCY_PENDING", "retryAfterSeconds": n}`:
/// the SDK returns it to the caller, who calls again with the same key after `n` seconds. A store
/// outage is 503 `SERVICE_UNAVAILABLE` with `retryAfterSeconds`, which the SDK retries. Every
/// other error keeps the engine's status, with its stable code in capitals
/// (`IDEMPOTENCY_CONFLICT`, `IDEMPOTENCY_KEY_INVALID`, ...).
pub fn pacspace_error(error: &IdempotencyError, status: StatusCode, _req: &HttpRequest) -> HttpResponse {
    let message = error.to_string();
    let retry_after_seconds = error.retry_after().map(|after| after.as_secs().max(1));
    match error {
        IdempotencyError::InFlight { .. } | IdempotencyError::Accepted { .. } => HttpResponse::Accepted().json(json!({
            "code": "IDEMPOTENCY_PENDING",
            "retryAfterSeconds": retry_after_seconds,
            "message": message,
        })),
        IdempotencyError::StoreUnavailable { .. } => HttpResponse::build(status).json(json!({
            "success": false,
            "error": { "code": "SERVICE_UNAVAILABLE", "message": message, "retryAfterSeconds": retry_after_seconds },
        })),
        _ => failure(status, &error.code().to_ascii_uppercase(), &message),
    }
}

/// A body the API cannot read is 400 `VALIDATION_ERROR`, as the SDK expects.
fn invalid_body(error: error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let response = failure(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &error.to_string());
    error::InternalError::from_response(error, response).into()
}

/// The webhook endpoint's replay hook: a redelivered event gets the first answer with
/// `"duplicate": true` added, as the guide's handler answers `{"received": true, "duplicate": true}`.
pub fn mark_duplicate(stored: &StoredResponse, _req: &HttpRequest) -> Option<StoredResponse> {
    let mut answer: Value = serde_json::from_slice(&stored.body).ok()?;
    answer.as_object_mut()?.insert("duplicate".into(), Value::Bool(true));
    let mut replay = stored.clone();
    replay.body = serde_json::to_vec(&answer).ok()?.into();
    Some(replay)
}

// ---------------------------------------------------------------------------------------------
// The API

/// What the handlers share: how often each ran, and the webhook events queued for processing.
#[derive(Default)]
pub struct Ledger {
    deltas: AtomicUsize,
    checkpoints: AtomicUsize,
    events: Mutex<Vec<String>>,
}

impl Ledger {
    /// Runs of `POST /api/v1/balance/delta`, in both environments.
    pub fn deltas(&self) -> usize {
        self.deltas.load(Ordering::SeqCst)
    }

    /// Runs of `POST /api/v1/balance/checkpoint`, in both environments.
    pub fn checkpoints(&self) -> usize {
        self.checkpoints.load(Ordering::SeqCst)
    }

    /// Event ids the webhook endpoint queued, in order.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

/// A balance delta, serialised the same way on every attempt (struct fields in a fixed order),
/// so a retry never differs from the original. The SDK also sends `metadata` and `adjusts`
/// when given; they are part of the fingerprint, and this recipe ignores them otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    pub customer_id: String,
    pub delta: f64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
}

#[derive(Deserialize)]
struct NewCheckpoint {
    period: String,
}

#[post("/balance/delta")]
#[idempotent(in_flight = "accept")]
async fn emit_delta(
    req: HttpRequest,
    delta: web::Json<Delta>,
    environment: web::Data<Environment>,
    ledger: web::Data<Ledger>,
) -> HttpResponse {
    ledger.deltas.fetch_add(1, Ordering::SeqCst);
    let delay_ms = req
        .headers()
        .get("X-Demo-Delay-Ms")
        .and_then(|value| value.to_str().ok()?.parse().ok());
    if let Some(ms) = delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let Delta {
        customer_id,
        delta,
        reason,
        reference_id,
    } = delta.into_inner();
    let record = json!({
        "recordId": uuid::Uuid::new_v4().to_string(),
        "status": "QUEUED",
        "customerId": customer_id,
        "delta": delta,
        "reason": reason,
        "referenceId": reference_id,
        "livemode": **environment == Environment::Live,
    });
    success(StatusCode::CREATED, record)
}

#[post("/balance/checkpoint")]
#[idempotent(in_flight = "accept")]
async fn checkpoint(
    new_checkpoint: web::Json<NewCheckpoint>,
    environment: web::Data<Environment>,
    ledger: web::Data<Ledger>,
) -> HttpResponse {
    ledger.checkpoints.fetch_add(1, Ordering::SeqCst);
    let checkpoint = json!({
        "checkpointId": uuid::Uuid::new_v4().to_string(),
        "period": new_checkpoint.into_inner().period,
        "livemode": **environment == Environment::Live,
    });
    success(StatusCode::CREATED, checkpoint)
}

async fn unknown_api_key() -> HttpResponse {
    failure(
        StatusCode::UNAUTHORIZED,
        "INVALID_API_KEY",
        "send a pk_live_* or pk_test_* API key in X-Api-Key",
    )
}

/// The agent's webhook endpoint: queue the event for asynchronous processing and answer at
/// once. A redelivered `X-Event-ID` gets the first answer back, marked as a duplicate by
/// [`mark_duplicate`], without running this again.
#[idempotent(header = "X-Event-ID", required = true, ttl = "7d")]
pub async fn receive_webhook(req: HttpRequest, ledger: web::Data<Ledger>) -> HttpResponse {
    let event_id = req.headers().get("X-Event-ID").and_then(|id| id.to_str().ok());
    ledger
        .events
        .lock()
        .unwrap()
        .push(event_id.unwrap_or_default().to_owned());
    HttpResponse::Ok().json(json!({ "received": true }))
}

/// The routes of both environments: `/api/v1/...` picks the environment from the API key,
/// `/webhooks/pacspace/{live,test}` is the agent's endpoint per environment. The app registers
/// a shared [`Ledger`] as app data.
pub fn configure(environments: Environments) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        for (environment, configs) in environments.each() {
            let picked =
                move |ctx: &guard::GuardContext<'_>| Environment::of_request(ctx.head().headers()) == Some(environment);
            cfg.service(
                web::scope("/api/v1")
                    .guard(guard::fn_guard(picked))
                    .app_data(configs.api)
                    .app_data(web::Data::new(environment))
                    .app_data(web::JsonConfig::default().error_handler(invalid_body))
                    .service(emit_delta)
                    .service(checkpoint),
            );
            cfg.service(
                web::resource(format!("/webhooks/pacspace/{}", environment.name()))
                    .app_data(configs.webhooks)
                    .route(web::post().to(receive_webhook)),
            );
        }
        cfg.service(web::scope("/api/v1").default_service(web::to(unknown_api_key)));
    }
}

// ---------------------------------------------------------------------------------------------
// The agent (client)

/// The agent's HTTP client: at most 2 retries (3 attempts) within 30 s, exponential backoff with
/// full jitter, at least `Retry-After`; retries 408, 429, 5xx and connection errors, never
/// 400, 401, 403, 404 or a 409 conflict. Each attempt is bounded by a 30 s timeout.
pub fn agent_client() -> ClientWithMiddleware {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a reqwest client");
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .max_elapsed(Duration::from_secs(30));
    ClientBuilder::new(http).with(IdempotentRetry::new(policy)).build()
}

/// The key for a delta: its environment and its `referenceId`, both things the agent can
/// recompute, so a retry in this call or in a later run sends the same key.
pub fn idempotency_key(environment: Environment, reference_id: &str) -> String {
    format!("{}{}", environment.namespace(), reference_id)
}

/// Emits `delta` with the environment of `api_key`, as the SDK sends it.
///
/// # Panics
///
/// If `api_key` is neither a `pk_live_` nor a `pk_test_` key, or `delta` has no `referenceId`
/// (the agent's key is built from it).
pub async fn emit(
    client: &ClientWithMiddleware,
    base_url: &str,
    api_key: &str,
    delta: &Delta,
) -> reqwest_middleware::Result<reqwest::Response> {
    let environment = Environment::of_api_key(api_key).expect("a pk_live_ or pk_test_ API key");
    let reference_id = delta.reference_id.as_deref().expect("a delta with a referenceId");
    client
        .post(format!("{base_url}/api/v1/balance/delta"))
        .header("X-Api-Key", api_key)
        .header("Idempotency-Key", idempotency_key(environment, reference_id))
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(delta).expect("a delta serialises"))
        .send()
        .await
}

/// `--call URL`: the same delta emitted twice in Production, then once in Sandbox.
async fn call(base_url: &str) -> Result<(), reqwest_middleware::Error> {
    let client = agent_client();
    let delta = Delta {
        customer_id: "cus_1".into(),
        delta: -1.0,
        reason: "api-call".into(),
        reference_id: Some(format!("acme:emit:2024-06:{}", uuid::Uuid::new_v4())),
    };
    for api_key in ["pk_live_demo", "pk_live_demo", "pk_test_demo"] {
        let response = emit(&client, base_url, api_key, &delta).await?;
        let outcome = response
            .retry_outcome()
            .cloned()
            .expect("a POST goes through IdempotentRetry");
        println!(
            "{api_key} key {:?}: {} after {} attempt(s), replayed: {}, {}",
            outcome.key(),
            response.status(),
            outcome.attempts(),
            outcome.replayed(),
            response.text().await?
        );
    }
    Ok(())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let arg = |name: &str| std::env::args().skip_while(|arg| arg != name).nth(1);
    if let Some(base_url) = arg("--call") {
        return call(&base_url).await.map_err(std::io::Error::other);
    }
    let ledger = web::Data::new(Ledger::default());
    let environments = Environments::sharing(Arc::new(MemoryStore::default()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(ledger.clone())
            .configure(configure(environments.clone()))
    })
    .bind(arg("--bind").unwrap_or_else(|| "127.0.0.1:8080".to_owned()))?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
