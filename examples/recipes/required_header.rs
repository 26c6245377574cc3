//! A required `X-Idempotency-Key` on every side-effecting `POST`: an API like the one Alterscope
//! documents ("Idempotency" on docs.alterscope.org).
//!
//! What this configuration reproduces from that document:
//!
//! | documented behaviour | how |
//! |---|---|
//! | mutation, simulator and execution `POST`s require `X-Idempotency-Key`; 400 without | `header = "X-Idempotency-Key", required = true`: 400 `idempotency_key_missing`, the handler does not run |
//! | `GET` needs no key | reads are never protected (`GET /v2/usage`) |
//! | a completed request is replayed for 24 hours, byte for byte, marked `X-Idempotency-Replayed: true` | `ttl = "24h"` and `replay_header("X-Idempotency-Replayed")` |
//! | same key, different body: not a replay, a distinct request | `on_mismatch = "execute"` |
//! | only 2xx responses are cached; after a failure the same key runs again | `cache = "success"` (the default) |
//! | a duplicate while the first is running: 409 at once, `Retry-After: 1`, `{"error": "duplicate request in flight; ..."}` | `in_flight = "reject"`, `retry_after(1 s)` and [`error_body`] |
//! | execution endpoints also require `X-Decision-Trace-ID`; 400 without | the [`DecisionTrace`] extractor of `POST /v2/executions/steps`: its 400 is never cached |
//!
//! Every refusal uses the document's error body, `{"error": message}`, to which [`error_body`]
//! adds the library's stable `code` (`idempotency_key_missing`, `idempotency_in_flight`, ...)
//! for clients that branch on it. The document links its full status table from another page;
//! statuses here are the library's (400, 409, 503).
//!
//! The document's clients wait `Retry-After` and retry the in-flight 409 with the same key. The
//! project's reqwest helper (feature `client`) does so behind this envelope too: the engine adds
//! `Retry-After` to every in-flight answer, also one rendered by the app's error hook, and a
//! conflict never carries it.
//!
//! Two demo switches, not part of the API, let you see the in-flight and failure behaviour with
//! curl: `X-Demo-Delay-Ms: n` makes a handler take `n` ms, and `X-Demo-Fail: true` makes it
//! answer 503. Headers are not part of the request fingerprint: a retry without them is the
//! same request, which is what a real retry after a slow or failed attempt looks like.
//!
//! Try it (`cargo run --example required_header`, then in another terminal):
//!
//! ```console
//! $ simulate() { curl -si localhost:8080/v2/simulations -H 'Content-Type: application/json' \
//!     -d '{"scenario": "eth-depeg"}' "$@"; }
//! $ simulate                                           # 400 idempotency_key_missing
//! $ simulate -H 'X-Idempotency-Key: 3f8a1c2e-sim-1'    # 200, a new simulation
//! $ simulate -H 'X-Idempotency-Key: 3f8a1c2e-sim-1'    # 200, same body, x-idempotency-replayed: true
//! $ simulate -H 'X-Idempotency-Key: sim-2' -H 'X-Demo-Delay-Ms: 3000' & simulate -H 'X-Idempotency-Key: sim-2'
//! #   the second answers at once: 409, retry-after: 1, {"error": "duplicate request in flight; ..."}
//! $ simulate -H 'X-Idempotency-Key: sim-3' -H 'X-Demo-Fail: true'   # 503, not cached
//! $ simulate -H 'X-Idempotency-Key: sim-3'             # 200: the same key runs again
//! $ curl -s localhost:8080/v2/usage                    # how often each handler ran
//! ```

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::InternalError;
use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, App, FromRequest, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::{idempotent, Idempotency, IdempotencyError};
use serde::Deserialize;
use serde_json::json;

/// How many times each handler ran (what the side effects would have cost).
#[derive(Default)]
pub struct Usage {
    decisions: AtomicUsize,
    simulations: AtomicUsize,
    steps: AtomicUsize,
}

impl Usage {
    /// Runs of `POST /v2/decisions`, `POST /v2/simulations` and `POST /v2/executions/steps`.
    pub fn runs(&self) -> (usize, usize, usize) {
        (
            self.decisions.load(Ordering::SeqCst),
            self.simulations.load(Ordering::SeqCst),
            self.steps.load(Ordering::SeqCst),
        )
    }
}

/// Replays marked `X-Idempotency-Replayed: true`; refusals in the API's error body, with
/// `Retry-After: 1` on the in-flight 409.
pub fn idempotency() -> Idempotency {
    Idempotency::builder()
        .replay_header(HeaderName::from_static("x-idempotency-replayed"))
        .retry_after(Duration::from_secs(1))
        .error_response(error_body)
        .build()
}

/// The document's error body, `{"error": message}`, plus the library's stable `code`.
pub fn error_body(error: &IdempotencyError, status: StatusCode, _req: &HttpRequest) -> HttpResponse {
    let message = match error {
        IdempotencyError::InFlight { .. } => "duplicate request in flight; retry after a brief delay".to_owned(),
        other => other.to_string(),
    };
    // The engine adds the `Retry-After` an in-flight answer calls for.
    HttpResponse::build(status).json(json!({ "error": message, "code": error.code() }))
}

/// The `X-Decision-Trace-ID` an execution step must carry; without it the request gets 400
/// before the handler runs, and nothing is cached, so the corrected retry may reuse its key.
pub struct DecisionTrace(pub String);

impl FromRequest for DecisionTrace {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let trace = req
            .headers()
            .get("X-Decision-Trace-ID")
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.trim().is_empty())
            .map(|value| DecisionTrace(value.to_owned()));
        ready(trace.ok_or_else(|| {
            let body = json!({ "error": "execution requests require an X-Decision-Trace-ID header", "code": "decision_trace_missing" });
            InternalError::from_response("missing X-Decision-Trace-ID", HttpResponse::BadRequest().json(body)).into()
        }))
    }
}

/// The demo switches (`X-Demo-Delay-Ms`, `X-Demo-Fail`): a slow handler, or a failed one.
async fn demo_switches(req: &HttpRequest) -> Result<(), HttpResponse> {
    let header = |name| req.headers().get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = header("X-Demo-Delay-Ms").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if header("X-Demo-Fail") == Some("true") {
        return Err(HttpResponse::ServiceUnavailable().json(json!({ "error": "upstream node unavailable" })));
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewDecision {
    strategy: String,
    action: String,
}

#[derive(Deserialize)]
struct NewSimulation {
    scenario: String,
}

#[derive(Deserialize)]
struct NewStep {
    step: String,
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Mutation: records an autonomous decision.
#[post("/decisions")]
#[idempotent(
    ttl = "24h",
    header = "X-Idempotency-Key",
    required = true,
    in_flight = "reject",
    on_mismatch = "execute"
)]
async fn record_decision(req: HttpRequest, decision: web::Json<NewDecision>, usage: web::Data<Usage>) -> HttpResponse {
    usage.decisions.fetch_add(1, Ordering::SeqCst);
    if let Err(failed) = demo_switches(&req).await {
        return failed;
    }
    HttpResponse::Created().json(json!({
        "decision_id": fresh_id(),
        "strategy": decision.strategy,
        "action": decision.action,
    }))
}

/// Simulator: a billed simulation.
#[post("/simulations")]
#[idempotent(
    ttl = "24h",
    header = "X-Idempotency-Key",
    required = true,
    in_flight = "reject",
    on_mismatch = "execute"
)]
async fn run_simulation(
    req: HttpRequest,
    simulation: web::Json<NewSimulation>,
    usage: web::Data<Usage>,
) -> HttpResponse {
    usage.simulations.fetch_add(1, Ordering::SeqCst);
    if let Err(failed) = demo_switches(&req).await {
        return failed;
    }
    HttpResponse::Ok().json(json!({
        "simulation_id": fresh_id(),
        "scenario": simulation.scenario,
        "billed_units": 1,
    }))
}

/// Execution: submits one step of an execution plan.
#[post("/executions/steps")]
#[idempotent(
    ttl = "24h",
    header = "X-Idempotency-Key",
    required = true,
    in_flight = "reject",
    on_mismatch = "execute"
)]
async fn submit_step(
    req: HttpRequest,
    trace: DecisionTrace,
    step: web::Json<NewStep>,
    usage: web::Data<Usage>,
) -> HttpResponse {
    usage.steps.fetch_add(1, Ordering::SeqCst);
    if let Err(failed) = demo_switches(&req).await {
        return failed;
    }
    HttpResponse::Ok().json(json!({
        "step_id": fresh_id(),
        "step": step.step,
        "decision_trace_id": trace.0,
        "status": "submitted",
    }))
}

#[get("/usage")]
async fn usage_report(usage: web::Data<Usage>) -> HttpResponse {
    let (decisions, simulations, steps) = usage.runs();
    HttpResponse::Ok().json(json!({ "decisions": decisions, "simulations": simulations, "steps": steps }))
}

/// The API's routes; the app registers [`idempotency`] and a shared [`Usage`] as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v2")
            .service(record_decision)
            .service(run_simulation)
            .service(submit_step)
            .service(usage_report),
    );
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .skip_while(|arg| arg != "--bind")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let usage = web::Data::new(Usage::default());
    let idempotency = idempotency();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(usage.clone())
            .app_data(idempotency.clone())
            .configure(configure)
    })
    .bind(bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
