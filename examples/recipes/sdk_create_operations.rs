//! Create operations that an SDK retries with one key: the server and client halves of the
//! idempotency guide of the Atlas SDK and its Control Plane.
//!
//! What this recipe reproduces from that guide:
//!
//! | documented behaviour | how |
//! |---|---|
//! | create operations accept an optional idempotency key | `#[idempotent(ttl = "48h")]` on `POST /api/v1/deployments` and `POST /api/v1/plans/{plan_id}/tasks` (an append that must not double-append) |
//! | the server returns the first result for later requests with the same key | a replay, marked `Idempotency-Replayed: true` |
//! | a request with a key still being processed waits for the original and gets its result | `in_flight = "wait"` (the default), bounded by `wait_timeout(30 s)`, then 409 + `Retry-After`, which the client retries |
//! | results are kept for a configurable retention, typically 24–48 hours | `ttl = "48h"` |
//! | keys of 1–255 characters | the library's key rules: longer keys get 400 `idempotency_key_invalid` |
//! | the SDK keeps the same key on every retry of 502, 503, 504 and connection errors | [`sdk_client`]: `IdempotentRetry` sends one key on every attempt of a `send` |
//! | `idempotency_key="auto"`: a UUID v4, fresh for each call | [`create_deployment`] with `None`: the helper generates a UUID v4 once per call |
//! | meaningful keys (`deploy-my-deployment-2024-01-15`) for retries across code executions | [`create_deployment`] with `Some(key)`: the caller's key is kept as is |
//!
//! Differences and limits: the guide names no header, so this uses `Idempotency-Key`. Its
//! retention is "configurable", while the attribute's `ttl` is a compile-time literal; a
//! retention read from configuration at startup needs `IdempotentMiddleware::ttl` instead. The
//! client helper retries more than the SDK's list: also 500, 408, 429 and the in-flight 409 (its
//! `RetryPolicy` has no per-status switch). The SDK logs keys at debug level; the helper never
//! logs keys, on purpose. The guide does not say what a reused key with a different body gets;
//! this uses the library's default, 409 `idempotency_conflict`. Keys here are global: the guide
//! recommends business keys such as `deploy-v1`, which are guessable, so a control plane shared
//! by several customers should add `scope = "tenant"` with a tenant resolver.
//!
//! A demo switch, not part of the API: `X-Demo-Delay-Ms: n` makes a deployment take `n` ms, to
//! see a duplicate wait for it.
//!
//! Try it (`cargo run --example sdk_create_operations --features client`, then in another
//! terminal):
//!
//! ```console
//! $ deploy() { curl -si localhost:8080/api/v1/deployments -H 'Content-Type: application/json' \
//!     -d '{"agent_definition_id": "def-1", "name": "my-deployment", "environment": "production"}' "$@"; }
//! $ deploy -H 'Idempotency-Key: deploy-v1' -H 'X-Demo-Delay-Ms: 3000' & deploy -H 'Idempotency-Key: deploy-v1'
//! #                     # both 201 with the same id after 3 s; the second is marked idempotency-replayed
//! $ cargo run --example sdk_create_operations --features client -- --call http://127.0.0.1:8080
//! #                     # the SDK side: a business key, then "auto", each sent with the retrying client
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{post, web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::client::reqwest_middleware::reqwest::{self, header::CONTENT_TYPE};
use idempotent_actix::client::reqwest_middleware::{self, ClientBuilder, ClientWithMiddleware};
use idempotent_actix::client::{IdempotentRetry, ResponseExt, RetryPolicy};
use idempotent_actix::{idempotent, Idempotency};
use serde::{Deserialize, Serialize};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The Control Plane (server)

/// What the handlers share: the plans' tasks, and how often each handler ran.
#[derive(Default)]
pub struct ControlPlane {
    plans: Mutex<HashMap<String, Vec<String>>>,
    deployments_created: AtomicUsize,
    appends: AtomicUsize,
}

impl ControlPlane {
    /// Runs of `POST /api/v1/deployments`.
    pub fn deployments_created(&self) -> usize {
        self.deployments_created.load(Ordering::SeqCst)
    }

    /// Runs of `POST /api/v1/plans/{plan_id}/tasks`.
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }
}

/// The SDK's `DeploymentCreate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentCreate {
    pub agent_definition_id: String,
    pub name: String,
    pub environment: String,
}

#[derive(Deserialize)]
struct NewTasks {
    tasks: Vec<String>,
}

/// A duplicate waits up to 30 s for the original (deployments can be slow) before it gets a
/// 409 that the client retries.
pub fn idempotency() -> Idempotency {
    Idempotency::builder().wait_timeout(Duration::from_secs(30)).build()
}

#[post("/deployments")]
#[idempotent(ttl = "48h")]
async fn create_deployment_route(
    req: HttpRequest,
    deployment: web::Json<DeploymentCreate>,
    control_plane: web::Data<ControlPlane>,
) -> HttpResponse {
    control_plane.deployments_created.fetch_add(1, Ordering::SeqCst);
    let delay_ms = req
        .headers()
        .get("X-Demo-Delay-Ms")
        .and_then(|value| value.to_str().ok()?.parse().ok());
    if let Some(ms) = delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let DeploymentCreate {
        agent_definition_id,
        name,
        environment,
    } = deployment.into_inner();
    HttpResponse::Created().json(json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "agent_definition_id": agent_definition_id,
        "name": name,
        "environment": environment,
        "status": "provisioning",
    }))
}

/// Appending twice would run the tasks twice: the replay says how many the plan had after the
/// first append.
#[post("/plans/{plan_id}/tasks")]
#[idempotent(ttl = "48h")]
async fn append_tasks(
    plan_id: web::Path<String>,
    new: web::Json<NewTasks>,
    control_plane: web::Data<ControlPlane>,
) -> HttpResponse {
    control_plane.appends.fetch_add(1, Ordering::SeqCst);
    let plan_id = plan_id.into_inner();
    let mut plans = control_plane.plans.lock().unwrap();
    let tasks = plans.entry(plan_id.clone()).or_default();
    tasks.extend(new.into_inner().tasks);
    HttpResponse::Ok().json(json!({ "plan_id": plan_id, "total_tasks": tasks.len() }))
}

/// The Control Plane's routes; the app registers [`idempotency`] and a shared [`ControlPlane`]
/// as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .service(create_deployment_route)
            .service(append_tasks),
    );
}

// ---------------------------------------------------------------------------------------------
// The SDK (client)

/// The SDK's HTTP client: every create is sent with one idempotency key, kept across every
/// retry of 5xx, 408, 429, the in-flight 409 and connection errors, with bounded, jittered
/// backoff (by default 5 attempts within 30 s). Each attempt is bounded by a 30 s timeout.
pub fn sdk_client() -> ClientWithMiddleware {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a reqwest client");
    ClientBuilder::new(http)
        .with(IdempotentRetry::new(RetryPolicy::default()))
        .build()
}

/// `ControlPlaneClient.create_deployment(deployment, idempotency_key=...)`.
///
/// `Some(key)` sends the caller's key (a meaningful one such as
/// `deploy-my-deployment-2024-01-15`, which a later run can send again to find the result);
/// `None` is the SDK's `"auto"`: the helper generates a UUID v4 for this call, kept across its
/// retries and readable afterwards with `response.retry_outcome().unwrap().key()`.
pub async fn create_deployment(
    client: &ClientWithMiddleware,
    base_url: &str,
    deployment: &DeploymentCreate,
    idempotency_key: Option<&str>,
) -> reqwest_middleware::Result<reqwest::Response> {
    let body = serde_json::to_vec(deployment).expect("a deployment serialises");
    let mut request = client
        .post(format!("{base_url}/api/v1/deployments"))
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await
}

/// `--call URL`: what the SDK does against a running Control Plane.
async fn call(base_url: &str) -> Result<(), reqwest_middleware::Error> {
    let client = sdk_client();
    let deployment = DeploymentCreate {
        agent_definition_id: "def-1".into(),
        name: "my-deployment".into(),
        environment: "production".into(),
    };
    for key in [
        Some("deploy-my-deployment-2024-01-15"),
        Some("deploy-my-deployment-2024-01-15"),
        None,
    ] {
        let response = create_deployment(&client, base_url, &deployment, key).await?;
        let outcome = response
            .retry_outcome()
            .cloned()
            .expect("a POST goes through IdempotentRetry");
        println!(
            "key {:?}: {} after {} attempt(s), replayed: {}, {}",
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
    let control_plane = web::Data::new(ControlPlane::default());
    let idempotency = idempotency();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(control_plane.clone())
            .app_data(idempotency.clone())
            .configure(configure)
    })
    .bind(arg("--bind").unwrap_or_else(|| "127.0.0.1:8080".to_owned()))?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
