//! Every `POST` of an API made idempotent by one middleware, no handler annotated: the
//! `Idempotency-Key` support proposed in an Attestix issue ("Idempotency-Key header support on
//! POST endpoints").
//!
//! What this configuration reproduces from that proposal:
//!
//! | proposed behaviour | how |
//! |---|---|
//! | all `POST` endpoints honour `Idempotency-Key`, through one middleware | [`idempotency_middleware`] wraps the `/v1` scope; the handlers are plain actix-web functions |
//! | only `POST` is intercepted | `.methods([Method::POST])`: `DELETE /v1/identities/{id}` and `GET` pass through |
//! | same key and body: the cached 2xx response (no duplicate UAIT, no second credential) | a replay, marked `Idempotency-Replayed: true` |
//! | same key, different body: 409 Conflict | `OnMismatch::Reject` (the default); the problem body carries `detail`, as FastAPI's `HTTPException` does |
//! | only 2xx responses are cached | `CachePolicy::Success` (the default): a 400 from a bad body is not stored, and the corrected request may reuse the key |
//! | entries live 24 hours | `.ttl(24 h)` |
//! | a missing header behaves as today | requests without a key run unprotected |
//! | a pluggable store, in-memory by default | [`idempotency`] sets `MemoryStore`; the proposal's Postgres-backed cloud store is `PostgresStore` (feature `postgres`) |
//!
//! Differences from the proposal, on purpose: the proposal's cache key is `{key}:{path}`, so the
//! same key sent to two paths would be two entries; here a key is bound to its first request
//! (method, path, query and body), so the same key on another path is a 409 rather than a second
//! execution. The proposal's cloud variant scopes keys by workspace
//! (`(workspace_id, idempotency_key)`); with an authenticated workspace that is
//! `.scope(Scope::Tenant)` plus a tenant resolver (see the `tenant_scoped_api` recipe). The
//! proposal does not say what a duplicate gets while the first is still running; the
//! middleware's default is to wait for the first result and replay it. The CLI's
//! `--idempotency-key` flag (a UUID v4 when not given) is the client side: the project's
//! `client` feature generates keys the same way.
//!
//! The proposal wires the middleware "after CORS and before routers": with actix-web that is
//! `App::new().wrap(IdempotentMiddleware..).wrap(Cors..)` for the whole app (the last `wrap`
//! runs first), or, as here, `.wrap(..)` on the scope that holds the API.
//!
//! Try it (`cargo run --example middleware_all_posts`, then in another terminal):
//!
//! ```console
//! $ identity() { curl -si localhost:8080/v1/identities -H 'Content-Type: application/json' "$@"; }
//! $ identity -H 'Idempotency-Key: k-1' -d '{"display_name": "agent-7"}'   # 201, a new UAIT
//! $ identity -H 'Idempotency-Key: k-1' -d '{"display_name": "agent-7"}'   # 201, the same UAIT, idempotency-replayed: true
//! $ identity -H 'Idempotency-Key: k-1' -d '{"display_name": "agent-8"}'   # 409 idempotency_conflict
//! $ identity -d '{"display_name": "agent-7"}'                            # no key: runs, as today
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::{web, App, HttpResponse, HttpServer};
use idempotent_actix::{Idempotency, IdempotentMiddleware, MemoryStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the handlers share: the identities issued, and how often each handler ran.
#[derive(Default)]
pub struct State {
    identities: Mutex<HashMap<String, Identity>>,
    identity_runs: AtomicUsize,
    credential_runs: AtomicUsize,
    revocation_runs: AtomicUsize,
}

impl State {
    /// Runs of `POST /v1/identities`, `POST /v1/credentials/issue` and `DELETE /v1/identities/{id}`.
    pub fn runs(&self) -> (usize, usize, usize) {
        (
            self.identity_runs.load(Ordering::SeqCst),
            self.credential_runs.load(Ordering::SeqCst),
            self.revocation_runs.load(Ordering::SeqCst),
        )
    }
}

#[derive(Deserialize)]
struct NewIdentity {
    display_name: String,
}

#[derive(Clone, Serialize)]
struct Identity {
    uait_id: String,
    display_name: String,
}

#[derive(Deserialize)]
struct CredentialRequest {
    subject: String,
    claims: serde_json::Value,
}

/// The proposal's middleware: `POST` only, 24 h, everything else the attribute's defaults
/// (optional key, wait for a running duplicate, 409 on a reused key, store 2xx only).
pub fn idempotency_middleware() -> IdempotentMiddleware {
    IdempotentMiddleware::new()
        .methods([Method::POST])
        .ttl(Duration::from_secs(24 * 60 * 60))
        .name("attestix_api")
}

/// The in-memory store, as the proposal ships for single-process self-hosting.
pub fn idempotency() -> Idempotency {
    Idempotency::builder().store(MemoryStore::default()).build()
}

async fn create_identity(identity: web::Json<NewIdentity>, state: web::Data<State>) -> HttpResponse {
    state.identity_runs.fetch_add(1, Ordering::SeqCst);
    let identity = Identity {
        uait_id: format!("uait:{}", uuid::Uuid::new_v4()),
        display_name: identity.into_inner().display_name,
    };
    state
        .identities
        .lock()
        .unwrap()
        .insert(identity.uait_id.clone(), identity.clone());
    HttpResponse::Created().json(identity)
}

async fn get_identity(id: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    match state.identities.lock().unwrap().get(id.as_str()) {
        Some(identity) => HttpResponse::Ok().json(identity),
        None => HttpResponse::NotFound().json(json!({ "detail": "identity not found" })),
    }
}

/// Revoking twice is harmless, so the proposal leaves `DELETE` alone.
async fn revoke_identity(id: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    state.revocation_runs.fetch_add(1, Ordering::SeqCst);
    state.identities.lock().unwrap().remove(id.as_str());
    HttpResponse::NoContent().finish()
}

async fn issue_credential(request: web::Json<CredentialRequest>, state: web::Data<State>) -> HttpResponse {
    state.credential_runs.fetch_add(1, Ordering::SeqCst);
    let CredentialRequest { subject, claims } = request.into_inner();
    HttpResponse::Created().json(json!({
        "credential_id": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "subject": subject,
        "claims": claims,
    }))
}

/// The API's routes under one middleware; the app registers [`idempotency`] and a shared
/// [`State`] as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(idempotency_middleware())
            .route("/identities", web::post().to(create_identity))
            .route("/identities/{id}", web::get().to(get_identity))
            .route("/identities/{id}", web::delete().to(revoke_identity))
            .route("/credentials/issue", web::post().to(issue_credential)),
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
