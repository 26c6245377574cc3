//! Writes an autonomous agent can retry safely, webhooks it de-duplicates, and Sandbox kept
//! apart from Production: the "Safety & Idempotency" guide of the PacSpace API.
//!
//! The guide describes both sides: the API the agent writes to, and the agent's own webhook
//! endpoint. This recipe runs both in one server, plus the agent's client.
//!
//! | documented behaviour | how |
//! |---|---|
//! | write endpoints take `Idempotency-Key` | `#[idempotent(in_flight = "accept")]` on `POST /api/v1/balance/delta` and `POST /api/v1/balance/checkpoint` |
//! | a key still being processed: 202 Accepted | `in_flight = "accept"`: 202 with `Retry-After` at once; a later retry gets the original response |
//! | completed key, identical body: the original response | a replay, marked `Idempotency-Replayed: true` |
//! | completed key, different body: 409 Conflict | `on_mismatch = "reject"` (the default), 409 `idempotency_conflict` |
//! | the key is derived from the agent's `referenceId` | [`idempotency_key`] in the agent's client |
//! | retries: at most 2, exponential with jitter, honouring `Retry-After`, within a time budget; 408, 429 and 5xx only, never other 4xx | [`agent_client`]: `RetryPolicy::default().max_attempts(3).max_elapsed(30 s)` and a 30 s timeout per attempt |
//! | webhook deliveries carry `X-Event-ID`; skip an event already processed | `#[idempotent(header = "X-Event-ID", required = true, ttl = "7d")]` on the agent's webhook endpoint |
//! | webhook handlers answer 200 at once and process asynchronously | [`receive_webhook`] only queues the event |
//! | Sandbox (`pk_test_*`) and Production (`pk_live_*`) never share keys: `live:`/`test:` prefixes | server: one [`Environments`] config per environment, `namespace("live:")` / `namespace("test:")` in one shared store, picked by the API key; client: the key itself is prefixed |
//!
//! Differences and limits: the guide's duplicate webhook answer is
//! `{"received": true, "duplicate": true}`; the library replays the first answer byte for byte
//! (`{"received": true}`) and marks it with `Idempotency-Replayed: true` instead, so a handler
//! cannot add the `duplicate` member. The guide does not say how long keys or event ids are
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
//! $ delta() { curl -si localhost:8080/api/v1/balance/delta -H "Authorization: Bearer $1" \
//!     -H 'Idempotency-Key: live:acme:emit:2024-06:7f3c' -H 'Content-Type: application/json' \
//!     -d '{"customerId": "cus_1", "delta": -1, "reason": "api-call", "referenceId": "acme:emit:2024-06:7f3c"}' "${@:2}"; }
//! $ delta pk_live_demo -H 'X-Demo-Delay-Ms: 3000' & delta pk_live_demo   # the second: 202 Accepted
//! $ delta pk_live_demo       # 201, the first answer, idempotency-replayed: true
//! $ delta pk_test_demo       # 201, a new delta: Sandbox does not see Production's key
//! $ curl -si localhost:8080/webhooks/pacspace/live -H 'X-Event-ID: evt_1' -d '{}'   # twice: one event queued
//! $ cargo run --example agent_safe_writes --features client -- --call http://127.0.0.1:8080
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::{guard, post, web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::client::reqwest_middleware::reqwest::{self, header::CONTENT_TYPE};
use idempotent_actix::client::reqwest_middleware::{self, ClientBuilder, ClientWithMiddleware};
use idempotent_actix::client::{IdempotentRetry, ResponseExt, RetryPolicy};
use idempotent_actix::{idempotent, Idempotency, MemoryStore, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

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

    fn of_request(headers: &HeaderMap) -> Option<Self> {
        let bearer = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        Self::of_api_key(bearer)
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

/// One idempotency configuration per environment, both in one store: the namespace keeps a
/// Sandbox key from ever replaying (or conflicting with) a Production record, even when a
/// client forgets its own prefix.
#[derive(Clone)]
pub struct Environments {
    live: Idempotency,
    test: Idempotency,
}

impl Environments {
    /// Both environments in `store` (a `MemoryStore` here; Redis or PostgreSQL with several
    /// replicas), under the namespaces `live:` and `test:`.
    pub fn sharing(store: Arc<dyn Store>) -> Self {
        let config = |environment: Environment| {
            Idempotency::builder()
                .shared_store(Arc::clone(&store))
                .namespace(environment.namespace())
                .build()
        };
        Self {
            live: config(Environment::Live),
            test: config(Environment::Test),
        }
    }

    fn each(&self) -> [(Environment, Idempotency); 2] {
        [
            (Environment::Live, self.live.clone()),
            (Environment::Test, self.test.clone()),
        ]
    }
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
/// so a retry never differs from the original.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    pub customer_id: String,
    pub delta: i64,
    pub reason: String,
    pub reference_id: String,
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
        reference_id,
        ..
    } = delta.into_inner();
    HttpResponse::Created().json(json!({
        "deltaId": uuid::Uuid::new_v4().to_string(),
        "customerId": customer_id,
        "delta": delta,
        "referenceId": reference_id,
        "livemode": **environment == Environment::Live,
    }))
}

#[post("/balance/checkpoint")]
#[idempotent(in_flight = "accept")]
async fn checkpoint(
    new_checkpoint: web::Json<NewCheckpoint>,
    environment: web::Data<Environment>,
    ledger: web::Data<Ledger>,
) -> HttpResponse {
    ledger.checkpoints.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Created().json(json!({
        "checkpointId": uuid::Uuid::new_v4().to_string(),
        "period": new_checkpoint.into_inner().period,
        "livemode": **environment == Environment::Live,
    }))
}

async fn unknown_api_key() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "use a pk_live_* or pk_test_* API key" }))
}

/// The agent's webhook endpoint: queue the event for asynchronous processing and answer at
/// once. A redelivered `X-Event-ID` gets the first answer back without running this again.
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
        for (environment, idempotency) in environments.each() {
            let picked =
                move |ctx: &guard::GuardContext<'_>| Environment::of_request(ctx.head().headers()) == Some(environment);
            cfg.service(
                web::scope("/api/v1")
                    .guard(guard::fn_guard(picked))
                    .app_data(idempotency.clone())
                    .app_data(web::Data::new(environment))
                    .service(emit_delta)
                    .service(checkpoint),
            );
            cfg.service(
                web::resource(format!("/webhooks/pacspace/{}", environment.name()))
                    .app_data(idempotency)
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

/// The key for `delta`: its environment and its `referenceId`, both things the agent can
/// recompute, so a retry in this call or in a later run sends the same key.
pub fn idempotency_key(environment: Environment, delta: &Delta) -> String {
    format!("{}{}", environment.namespace(), delta.reference_id)
}

/// Emits `delta` with the environment of `api_key`.
///
/// # Panics
///
/// If `api_key` is neither a `pk_live_` nor a `pk_test_` key.
pub async fn emit(
    client: &ClientWithMiddleware,
    base_url: &str,
    api_key: &str,
    delta: &Delta,
) -> reqwest_middleware::Result<reqwest::Response> {
    let environment = Environment::of_api_key(api_key).expect("a pk_live_ or pk_test_ API key");
    client
        .post(format!("{base_url}/api/v1/balance/delta"))
        .bearer_auth(api_key)
        .header("Idempotency-Key", idempotency_key(environment, delta))
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
        delta: -1,
        reason: "api-call".into(),
        reference_id: format!("acme:emit:2024-06:{}", uuid::Uuid::new_v4()),
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
