//! Security properties through real HTTP (the threat model is docs/THREAT-MODEL.md):
//!
//! - tenant isolation: a key from one tenant never replays another tenant's response, even
//!   when an attacker sends the victim's key and body, races it, or crafts tenant and key
//!   values around the record identity's separators;
//! - keys and bodies never appear in clear in any log event, at any level, from the library or
//!   from the store clients it drives;
//! - credentials in responses: `Set-Cookie` is never stored; everything else is replayed to
//!   whoever holds the key (and tenant);
//! - limits: oversized key headers are refused before anything runs;
//! - a store's record of another request is never replayed.
//!
//! Tested elsewhere and not repeated here (RELIABILITY.md lists them): the missing-tenant cases
//! (`tests/http/scope.rs`), keys over 255 characters or with control or non-ASCII characters
//! (400, `tests/http/keys.rs`), bodies over `max_request_bytes` (413) and responses over
//! `max_response_bytes` (a tombstone, `tests/http/limits.rs`), a single `Set-Cookie`
//! (`tests/http/replay.rs`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::http::StatusCode;
use actix_web::{post, web, HttpRequest, HttpResponse};
use idempotent_actix::{
    idempotent, Claim, Completion, FencingToken, Fingerprint, Idempotency, Lookup, MemoryStore, Record, RecordKey,
    Store, StoreError, StoredResponse,
};
use serde_json::{json, Value};

#[path = "support/services.rs"]
mod services;
// The HTTP suite's server and client helpers; this binary uses some of them.
#[path = "support/faulty_store.rs"]
mod faulty_store;
#[path = "support/logs.rs"]
mod logs;

use faulty_store::FaultyStore;
#[path = "http/support.rs"]
mod support;

use support::{new_key, send, send_keyed, serve_with, Reply, Runs, TestServer};

// ---------------------------------------------------------------------------------------------
// Tenant isolation

/// What a card-issuing endpoint answers: a credential that belongs to the calling tenant only.
#[post("/cards")]
#[idempotent(scope = "tenant")]
async fn issue_card(req: HttpRequest, runs: web::Data<Runs>) -> HttpResponse {
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let run = runs.hit();
    tokio::time::sleep(Duration::from_millis(200)).await;
    HttpResponse::Created().json(json!({
        "tenant": tenant,
        "card_token": format!("card-of-{tenant}-{}", uuid::Uuid::new_v4()),
        "run": run,
    }))
}

fn tenant_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(issue_card);
}

fn tenants() -> TestServer {
    serve_with(
        Idempotency::builder()
            .tenant_from_header(HeaderName::from_static("x-tenant-id"))
            .build(),
        tenant_routes,
    )
}

async fn issue(server: &TestServer, tenant: Option<&str>, key: &str, body: &Value) -> Reply {
    let mut req = server.post("/cards");
    if let Some(tenant) = tenant {
        req = req.insert_header(("X-Tenant-Id", tenant));
    }
    send_keyed(req, key, body).await
}

/// The attacker's own execution: its tenant, not a replay, nothing of the victim's.
fn assert_own_execution(reply: &Reply, tenant: &str, victim: &Reply) {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert!(!reply.is_replay(), "never a replay of another tenant's response");
    assert_eq!(reply.json()["tenant"], tenant);
    assert_ne!(reply.json()["card_token"], victim.json()["card_token"]);
}

#[actix_web::test]
async fn an_attacker_sending_the_victims_key_and_body_gets_its_own_execution_never_the_victims_response() {
    let server = tenants();
    let key = new_key();
    let body = json!({ "holder": "Ada", "limit": 500 });

    let victim = issue(&server, Some("acme"), &key, &body).await;
    let attacker = issue(&server, Some("evil"), &key, &body).await;
    let attacker_retry = issue(&server, Some("evil"), &key, &body).await;
    let without_tenant = issue(&server, None, &key, &body).await;
    let victim_retry = issue(&server, Some("acme"), &key, &body).await;

    assert_own_execution(&attacker, "evil", &victim);
    assert!(attacker_retry.is_replay() && attacker_retry.body == attacker.body);
    assert_eq!(without_tenant.status, StatusCode::BAD_REQUEST);
    assert_eq!(without_tenant.problem_code(), "idempotency_tenant_missing");
    assert!(victim_retry.is_replay() && victim_retry.body == victim.body);
    assert_eq!(server.runs(), 2, "one execution per tenant");
}

#[actix_web::test]
async fn an_attacker_racing_the_victims_running_request_with_its_key_runs_on_its_own() {
    let server = tenants();
    let key = new_key();
    let body = json!({ "holder": "Ada", "limit": 500 });

    let (victim, attacker) = futures_util::join!(issue(&server, Some("acme"), &key, &body), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        issue(&server, Some("evil"), &key, &body).await
    });

    assert_eq!(victim.json()["tenant"], "acme");
    assert_own_execution(&attacker, "evil", &victim);
    assert_eq!(server.runs(), 2);
}

#[actix_web::test]
async fn probing_another_tenants_key_with_another_body_reveals_nothing_and_runs_as_a_new_request() {
    let server = tenants();
    let key = new_key();

    let victim = issue(&server, Some("acme"), &key, &json!({ "holder": "Ada" })).await;
    let probe = issue(&server, Some("evil"), &key, &json!({ "holder": "Mallory" })).await;

    // A 409 would tell the attacker that the victim used this key.
    assert_own_execution(&probe, "evil", &victim);
    assert_eq!(server.runs(), 2);
}

/// Tenant and key pairs that a naive `tenant:key` join would map to the same record.
#[actix_web::test]
async fn tenants_and_keys_built_around_the_identity_separators_never_reach_another_tenants_record() {
    let server = tenants();
    let body = json!({ "holder": "Ada" });
    let unique = uuid::Uuid::new_v4();
    let pairs = [
        (
            format!("acme:x-{unique}"),
            "k".to_owned(),
            "acme".to_owned(),
            format!("x-{unique}:k"),
        ),
        (
            format!("a-{unique}"),
            "b:c".to_owned(),
            format!("a-{unique}:b"),
            "c".to_owned(),
        ),
        (
            format!("t4:{unique}"),
            "1:k".to_owned(),
            "t4".to_owned(),
            format!("{unique}:1:k"),
        ),
    ];

    for (victim_tenant, victim_key, attacker_tenant, attacker_key) in &pairs {
        let victim = issue(&server, Some(victim_tenant), victim_key, &body).await;
        let attacker = issue(&server, Some(attacker_tenant), attacker_key, &body).await;
        assert_own_execution(&attacker, attacker_tenant, &victim);
    }
    assert_eq!(server.runs(), 2 * pairs.len());
}

// ---------------------------------------------------------------------------------------------
// Credentials in responses

#[post("/sessions")]
#[idempotent]
async fn open_session(runs: web::Data<Runs>) -> HttpResponse {
    let run = runs.hit();
    HttpResponse::Created()
        .append_header(("Set-Cookie", "session=s3cr3t; HttpOnly; Secure"))
        .append_header(("Set-Cookie", "csrf=t0k3n; Secure"))
        .insert_header(("X-Api-Token", format!("api-token-{run}")))
        .json(json!({ "run": run, "refresh_token": format!("refresh-{run}") }))
}

/// No `Set-Cookie` of a response is stored, however many it sets; credentials in other headers
/// or in the body are part of the response and are replayed to whoever presents the same key
/// (and tenant) with the same request, which is why global keys must be unguessable.
#[actix_web::test]
async fn every_set_cookie_is_dropped_and_other_credentials_are_replayed_to_the_key_holder() {
    let server = serve_with(Idempotency::default(), |cfg| {
        cfg.service(open_session);
    });
    let key = new_key();
    let post = || {
        server
            .post("/sessions")
            .insert_header(("Idempotency-Key", key.as_str()))
    };

    let first = send(post(), "").await;
    let retry = send(post(), "").await;

    assert_eq!(first.header_values("set-cookie").len(), 2);
    assert!(retry.is_replay());
    assert!(retry.header_values("set-cookie").is_empty(), "no cookie is replayed");
    assert_eq!(retry.header("x-api-token"), first.header("x-api-token"));
    assert_eq!(retry.body, first.body);
    assert_eq!(server.runs(), 1);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[post("/charges")]
#[idempotent]
async fn charge(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Created().json(json!({ "run": runs.hit() }))
}

/// A key of 40 KiB reaches the engine and is refused as invalid (400) before the body is read
/// or the store is asked; a request head of 200 KiB is refused by actix-web itself (431, or a
/// reset once it stops reading). Nothing runs either way.
#[actix_web::test]
async fn an_oversized_key_header_is_refused_before_anything_runs() {
    let server = serve_with(Idempotency::default(), |cfg| {
        cfg.service(charge);
    });

    let long = "k".repeat(40 * 1024);
    let reply = send(server.post("/charges").insert_header(("Idempotency-Key", long)), "").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.problem_code(), "idempotency_key_invalid");

    let huge = "k".repeat(200 * 1024);
    let head = support::post_head(server.addr(), "/charges", &[("Idempotency-Key", &huge)], 0);
    let mut stream = support::connect_and_write(server.addr(), head.as_bytes()).await;
    let mut answer = Vec::new();
    let read = support::bounded(tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431") || (answer.is_empty() && read.is_err()),
        "refused by the server: {:?}",
        answer.lines().next()
    );
    assert_eq!(server.runs(), 0);
}

// ---------------------------------------------------------------------------------------------
// A store holding a record of another request

/// A store that answers every key with one record: what a corrupted, misconfigured or hostile
/// store could return.
struct ForeignRecordStore {
    record: Arc<Record>,
}

#[async_trait::async_trait]
impl Store for ForeignRecordStore {
    async fn claim(&self, _: &RecordKey, _: Fingerprint, _: Duration) -> Result<Claim, StoreError> {
        Ok(Claim::Completed(Arc::clone(&self.record)))
    }

    async fn renew(&self, _: &RecordKey, _: FencingToken, _: Duration) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn complete(&self, _: &RecordKey, _: FencingToken, _: Arc<Record>, _: Duration) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn release(&self, _: &RecordKey, _: FencingToken) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn lookup(&self, _: &RecordKey) -> Result<Lookup, StoreError> {
        Ok(Lookup::Completed(Arc::clone(&self.record)))
    }
}

/// A record whose fingerprint is not the request's is refused as a conflict, whether it comes
/// from a claim or from the in-process copy, and its response is never sent.
#[actix_web::test]
async fn a_record_of_another_request_returned_by_the_store_is_never_replayed() {
    let record = Arc::new(Record::new(
        Fingerprint([7; 32]),
        Completion::Response(StoredResponse::new(
            StatusCode::OK,
            Vec::new(),
            "someone else's response".into(),
        )),
    ));
    let store = ForeignRecordStore { record };
    let server = serve_with(Idempotency::builder().store(store).build(), |cfg| {
        cfg.service(charge);
    });

    let reply = send(
        server.post("/charges").insert_header(("Idempotency-Key", new_key())),
        "",
    )
    .await;

    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.problem_code(), "idempotency_conflict");
    assert!(!reply.text().contains("someone else"));
    assert_eq!(server.runs(), 0);
}

// ---------------------------------------------------------------------------------------------
// Keys and bodies never logged in clear

/// Secrets recognisable in the logs: a key, a request body and a response body.
struct Secrets {
    key: String,
    body: String,
    response: String,
}

impl Secrets {
    fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            key: format!("secret-key-{id}"),
            body: format!("secret-body-{id}"),
            response: format!("secret-response-{id}"),
        }
    }

    fn key(&self, n: usize) -> String {
        format!("{}-{n}", self.key)
    }

    fn assert_absent_from(&self, logs: &str) {
        for secret in [&self.key, &self.body, &self.response] {
            let at = logs.find(secret.as_str());
            assert!(
                at.is_none(),
                "`{secret}` appears in clear in the logs: …{}…",
                at.map(|i| &logs[i.saturating_sub(300)..(i + 100).min(logs.len())])
                    .unwrap_or_default()
            );
        }
    }
}

/// The secret response, small enough to be stored, or (with `?large=1`) too large to be.
#[post("/secrets")]
#[idempotent]
async fn answer_secret(req: HttpRequest, runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    let response = req.headers().get("x-secret-response").cloned();
    let response = response.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default();
    let padding = if req.query_string() == "large=1" { 4096 } else { 0 };
    HttpResponse::Created().body(format!("{response}{}", " ".repeat(padding)))
}

#[post("/secrets/slow")]
#[idempotent]
async fn answer_secret_slowly(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    tokio::time::sleep(Duration::from_millis(250)).await;
    HttpResponse::Created().finish()
}

#[post("/secrets/panic")]
#[idempotent]
async fn panic_with_a_secret_request(runs: web::Data<Runs>) -> HttpResponse {
    runs.hit();
    panic!("the handler fails");
}

fn secret_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(answer_secret)
        .service(answer_secret_slowly)
        .service(panic_with_a_secret_request);
}

/// Sends the secret request (key, body, and the response the handler should give).
async fn send_secret(server: &TestServer, path: &str, key: &str, secrets: &Secrets, body: &str) -> Reply {
    let req = server
        .post(path)
        .insert_header(("Idempotency-Key", key))
        .insert_header(("X-Secret-Response", secrets.response.as_str()))
        .content_type("application/json");
    send(req, json!({ "card": body }).to_string()).await
}

/// Conflicts, tombstones, panics, evictions, store outages and timeouts, fail-open runs, lost
/// leases and fenced completions, all with a recognisable key and body: every event is
/// captured at TRACE, and neither the key, the request body nor the response body appears.
#[actix_web::test]
async fn keys_and_bodies_never_appear_in_any_log_event_even_at_trace() {
    logs::capture();
    let secrets = Secrets::new();
    let other_body = format!("{}-other", secrets.body);

    // Replay, conflict, tombstone, panic; evictions from a store of 4 KiB.
    let small_store = MemoryStore::with_capacity(4 * 1024);
    let memory = serve_with(
        Idempotency::builder()
            .store(small_store.clone())
            .max_response_bytes(1024)
            .build(),
        secret_routes,
    );
    let first = send_secret(&memory, "/secrets", &secrets.key(0), &secrets, &secrets.body).await;
    let replay = send_secret(&memory, "/secrets", &secrets.key(0), &secrets, &secrets.body).await;
    let conflict = send_secret(&memory, "/secrets", &secrets.key(0), &secrets, &other_body).await;
    let large = send_secret(&memory, "/secrets?large=1", &secrets.key(1), &secrets, &secrets.body).await;
    let tombstone = send_secret(&memory, "/secrets?large=1", &secrets.key(1), &secrets, &secrets.body).await;
    let panicked = send_secret(&memory, "/secrets/panic", &secrets.key(2), &secrets, &secrets.body).await;
    assert_eq!(first.text(), secrets.response);
    assert!(replay.is_replay());
    assert_eq!(conflict.problem_code(), "idempotency_conflict");
    assert_eq!(large.status, StatusCode::CREATED);
    assert_eq!(tombstone.problem_code(), "idempotency_response_not_stored");
    assert_eq!(panicked.problem_code(), "idempotency_handler_failed");
    for n in 3..40 {
        send_secret(&memory, "/secrets", &secrets.key(n), &secrets, &secrets.body).await;
    }
    // moka evicts (and logs) during its maintenance, which this runs now.
    assert!(small_store.evicted_live_records() > 0, "a 4 KiB store evicted");

    // A store that is down, fails open, hangs past its timeout, loses the lease, or refuses a
    // completion because another execution took the key over.
    let unreliable = |store: FaultyStore| {
        Idempotency::builder()
            .store(store)
            .store_timeout(Duration::from_millis(100))
            .lease(Duration::from_millis(150))
    };
    let cases: [(Idempotency, &str, u16); 5] = [
        (
            unreliable(FaultyStore::with(|faults| &faults.down)).build(),
            "/secrets",
            503,
        ),
        (
            unreliable(FaultyStore::with(|faults| &faults.down))
                .fail_open(true)
                .build(),
            "/secrets",
            201,
        ),
        (
            unreliable(FaultyStore::with(|faults| &faults.hanging)).build(),
            "/secrets",
            503,
        ),
        (
            unreliable(FaultyStore::with(|faults| &faults.refusing_renewals)).build(),
            "/secrets/slow",
            201,
        ),
        (
            unreliable(FaultyStore::with(|faults| &faults.refusing_completions)).build(),
            "/secrets",
            201,
        ),
    ];
    for (idempotency, path, status) in cases {
        let server = serve_with(idempotency, secret_routes);
        let reply = send_secret(&server, path, &secrets.key(99), &secrets, &secrets.body).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {}", reply.text());
    }

    // A Redis store whose server is down: the client library's own errors and logs.
    let redis = idempotent_actix::store::RedisStore::new("redis://127.0.0.1:1/").expect("a valid URL");
    let server = serve_with(Idempotency::builder().store(redis).build(), secret_routes);
    let reply = send_secret(&server, "/secrets", &secrets.key(100), &secrets, &secrets.body).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let logs = logs::text();
    for event in [
        "response too large or too slow to store",
        "handler panicked",
        "idempotency record evicted before its ttl",
        "idempotency store call failed",
        "running unprotected (fail open)",
        "lease lost while the handler runs",
        "lease lapsed and another execution took the key over",
    ] {
        assert!(logs.contains(event), "the event `{event}` was captured");
    }
    assert!(logs.contains("RecordKey("), "keys are logged as a short hash");
    secrets.assert_absent_from(&logs);
}

/// Regression: the PostgreSQL store used the record identity (namespace, tenant and key) in
/// clear as the row id, so keys were readable in the table, in PostgreSQL's statement and
/// error logs, and in tokio-postgres' DEBUG log of statement parameters. Rows are now keyed by
/// the SHA-256 digest of the identity, as Redis keys are.
#[actix_web::test]
async fn postgres_rows_and_statement_logs_never_hold_the_key_in_clear() {
    if !services::server_up("PostgreSQL", services::POSTGRES_ADDR) {
        return;
    }
    logs::capture();
    let secrets = Secrets::new();
    let store =
        idempotent_actix::store::PostgresStore::new(&services::postgres_url(services::POSTGRES_ADDR)).expect("URL");
    store.migrate().await.expect("migration");
    let namespace = format!("{}:", services::unique("security"));
    let server = serve_with(
        Idempotency::builder()
            .store(store.clone())
            .namespace(namespace.clone())
            .build(),
        secret_routes,
    );

    let first = send_secret(&server, "/secrets", &secrets.key(0), &secrets, &secrets.body).await;
    let replay = send_secret(&server, "/secrets", &secrets.key(0), &secrets, &secrets.body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(replay.is_replay());

    let id = store.record_id(&RecordKey::new(&namespace, None, &secrets.key(0), None));
    assert!(!id.contains(&secrets.key), "the row id is a digest: {id}");
    let rows = psql(&format!(
        "SELECT count(*) FROM idempotency_records WHERE id = '{id}' AND state = 'completed'"
    ));
    assert_eq!(rows.trim(), "1", "the record is stored under the digest");
    let leaked = psql(&format!(
        "SELECT count(*) FROM idempotency_records WHERE strpos(id, '{}') > 0",
        secrets.key
    ));
    assert_eq!(leaked.trim(), "0", "no row id holds the key");

    let logs = logs::text();
    assert!(
        logs.contains("executing statement"),
        "tokio-postgres' DEBUG statement log was captured"
    );
    secrets.assert_absent_from(&logs);
}

/// Runs one SQL statement on the PostgreSQL server under test and returns its unaligned output.
fn psql(sql: &str) -> String {
    let (host, port) = services::POSTGRES_ADDR.split_once(':').expect("host:port");
    let output = std::process::Command::new("psql")
        .args(["-h", host, "-p", port, "-U", "postgres", "-d", "postgres", "-XAtq"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
