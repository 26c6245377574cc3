//! Tenant-scoped keys and the API's own error body: an API like the Agnes security API that
//! Lasso documents ("Idempotency-Key" on docs.lasscyber.com).
//!
//! What this configuration reproduces from that document:
//!
//! | documented behaviour | how |
//! |---|---|
//! | every write call takes `Idempotency-Key`; reads ignore it | `#[idempotent]` on `POST /api/v1/policies/`; `GET` is never protected |
//! | a response is kept per (tenant, key, body hash) for 24 hours | `ttl = "24h", scope = "tenant"`; the tenant is the one the bearer API key belongs to |
//! | same key and body: the cached response, not processed again | a replay, marked `Idempotency-Replayed: true` |
//! | same key, other body: 409 with `detail`, `code: idempotency_conflict`, `request_id`, `doc_url` | `on_mismatch = "reject"` (the default) and [`error_body`] through `Idempotency::error_response` |
//! | another tenant with the same key sees no collision | `scope = "tenant"`: the record identity is (tenant, key) |
//! | `POST /api/v1/analyze/` deliberately does not de-duplicate | that handler has no attribute |
//! | an empty or whitespace-only key is ignored | such a request runs unprotected (the key is optional here) |
//!
//! The tenant comes from an identity the authentication middleware ([`authenticate`]) puts in
//! the request extensions, never from a header the client chooses, so one tenant cannot reach
//! another's records by sending its key. The demo knows two API keys: `ak_live_acme` (tenant
//! `acme`) and `ak_live_globex` (tenant `globex`); any other gets 401 before the idempotency
//! layer runs.
//!
//! Not reproduced here: the document's cache lives in PostgreSQL so that it survives
//! autoscaling. That is a one-line change of store (`.store(PostgresStore::new(url)?)` with the
//! `postgres` feature); this example keeps the in-memory store so it runs without a database.
//! The document's SDKs generate a key for retried writes on their own; see the
//! `sdk_create_operations` recipe for the client side.
//!
//! Try it (`cargo run --example tenant_scoped_api`, then in another terminal):
//!
//! ```console
//! $ policy() { curl -si localhost:8080/api/v1/policies/ -H "Authorization: Bearer $1" \
//!     -H 'Idempotency-Key: 6f1e3c00-2c5a-4c58-9b2c-2b6f7a4f3a9d' \
//!     -H 'Content-Type: application/json' -d "{\"name\": \"$2\", \"slug\": \"$2\"}"; }
//! $ policy ak_live_acme inbound-strict      # 201, a new policy
//! $ policy ak_live_acme inbound-strict      # 201 again, same id, idempotency-replayed: true
//! $ policy ak_live_acme outbound-lax        # 409 {"detail": ..., "code": "idempotency_conflict", ...}
//! $ policy ak_live_globex inbound-strict    # 201, globex's own policy: no collision with acme
//! $ curl -s localhost:8080/api/v1/policies/ -H 'Authorization: Bearer ak_live_acme'   # one policy
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{get, post, web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::{idempotent, Idempotency, IdempotencyError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The demo's API keys and the tenant each belongs to.
const API_KEYS: [(&str, &str); 2] = [("ak_live_acme", "acme"), ("ak_live_globex", "globex")];

/// The tenant of the caller's API key, put in the request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// What the handlers share: the policies created, and how often the analyzer ran.
#[derive(Default)]
pub struct State {
    policies: Mutex<Vec<Policy>>,
    analyses: AtomicUsize,
}

impl State {
    /// How many times `POST /api/v1/policies/` created a policy.
    pub fn policies_created(&self) -> usize {
        self.policies.lock().unwrap().len()
    }

    /// How many times `POST /api/v1/analyze/` ran.
    pub fn analyses_run(&self) -> usize {
        self.analyses.load(Ordering::SeqCst)
    }
}

#[derive(Deserialize)]
struct NewPolicy {
    name: String,
    slug: String,
}

#[derive(Clone, Serialize)]
struct Policy {
    id: String,
    tenant: String,
    name: String,
    slug: String,
}

#[derive(Deserialize)]
struct Analysis {
    prompt: String,
}

/// Tenant-scoped records; every refusal in the API's own error body.
pub fn idempotency() -> Idempotency {
    Idempotency::builder()
        .tenant_from_extension(|tenant: &Tenant| tenant.0.clone())
        .error_response(error_body)
        .build()
}

/// The API's error body: `detail`, `code`, `request_id` and `doc_url`, with the library's stable
/// codes (`idempotency_conflict`, ...) as `code`.
pub fn error_body(error: &IdempotencyError, status: StatusCode, _req: &HttpRequest) -> HttpResponse {
    let detail = match error {
        IdempotencyError::Conflict => "Idempotency-Key was reused with a different request body.".to_owned(),
        other => other.to_string(),
    };
    let mut response = HttpResponse::build(status);
    // The hook replaces the whole answer, so it carries the `Retry-After` itself.
    if let Some(after) = error.retry_after() {
        response.insert_header((header::RETRY_AFTER, after.as_secs().max(1)));
    }
    response.json(json!({
        "detail": detail,
        "code": error.code(),
        "request_id": uuid::Uuid::new_v4().to_string(),
        "doc_url": format!("https://docs.lasscyber.com/errors/{}", error.code()),
    }))
}

/// Resolves the bearer API key to its tenant, or answers 401.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let api_key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let tenant = API_KEYS
        .iter()
        .find(|(known, _)| Some(*known) == api_key)
        .map(|(_, tenant)| Tenant((*tenant).to_owned()));
    let Some(tenant) = tenant else {
        return Err(actix_web::error::ErrorUnauthorized("a valid API key is required"));
    };
    req.extensions_mut().insert(tenant);
    next.call(req).await
}

#[post("/policies/")]
#[idempotent(ttl = "24h", scope = "tenant")]
async fn create_policy(
    tenant: web::ReqData<Tenant>,
    policy: web::Json<NewPolicy>,
    state: web::Data<State>,
) -> HttpResponse {
    let NewPolicy { name, slug } = policy.into_inner();
    let policy = Policy {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: tenant.into_inner().0,
        name,
        slug,
    };
    state.policies.lock().unwrap().push(policy.clone());
    HttpResponse::Created().json(policy)
}

#[get("/policies/")]
async fn list_policies(tenant: web::ReqData<Tenant>, state: web::Data<State>) -> HttpResponse {
    let policies = state.policies.lock().unwrap();
    let own: Vec<&Policy> = policies.iter().filter(|policy| policy.tenant == tenant.0).collect();
    HttpResponse::Ok().json(own)
}

/// Each analysis is a fresh decision: no attribute, so a repeated key runs it again.
#[post("/analyze/")]
async fn analyze(analysis: web::Json<Analysis>, state: web::Data<State>) -> HttpResponse {
    state.analyses.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(json!({
        "analysis_id": uuid::Uuid::new_v4().to_string(),
        "prompt_chars": analysis.prompt.chars().count(),
        "verdict": "allow",
    }))
}

/// The API's routes; the app registers [`idempotency`] and a shared [`State`] as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .wrap(from_fn(authenticate))
            .service(create_policy)
            .service(list_policies)
            .service(analyze),
    );
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .skip_while(|arg| arg != "--bind")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let state = web::Data::new(State::default());
    let idempotency = idempotency();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(idempotency.clone())
            .configure(configure)
    })
    .bind(bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
