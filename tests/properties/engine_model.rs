//! The engine through real HTTP, against a reference model of what each request may get.
//!
//! A server on 127.0.0.1:0 has one tenant-scoped route whose handler logs each execution
//! (tenant, key, body, outcome), then sleeps, answers 201 or 500, or panics, as the request's
//! `X-Outcome` and `X-Sleep-Ms` headers say. Headers are not part of the fingerprint, so a
//! retry of the same request can fail once and succeed later, like a transient failure. Every
//! answer the handler produces carries the tenant, key and body variant it ran for.
//!
//! A case is a batch of steps run in turn; a step is one request, or several sent at once on
//! the same tenant and key (duplicates, sometimes with a mismatched body or another outcome).
//! Keys come from a pool of three and are shared by two tenants. Invariants:
//!
//! - while a key's response is stored, the handler never runs again for it: duplicates get
//!   that response marked as a replay, a request with another body gets
//!   `idempotency_conflict`;
//! - a response only ever reaches a request with the same tenant, key and body;
//! - failures (500) and panics are not stored: a later retry runs again;
//! - every request is answered within a bound: a hang fails the case.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::HeaderName;
use actix_web::{post, web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::future::join_all;
use idempotent_actix::{idempotent, Idempotency, MemoryStore, Store};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::servers;

const TENANTS: [&str; 2] = ["tenant-1", "tenant-2"];
const KEYS: usize = 3;
const VARIANTS: [&str; 2] = ["A", "B"];
/// How long a duplicate waits for the first request's result.
const WAIT_BOUND: Duration = Duration::from_secs(5);
/// Every request is answered within this bound, or the case fails.
const REPLY_BOUND: Duration = Duration::from_secs(10);
const PANIC_MESSAGE: &str = "the request asked the handler to panic";

#[test]
fn memory_store_keeps_the_engine_invariants() {
    check(|| Arc::new(MemoryStore::default()), 32);
}

#[cfg(feature = "redis")]
#[test]
fn redis_store_keeps_the_engine_invariants() {
    if servers::server_up("Redis", servers::REDIS_ADDR) {
        check(|| Arc::new(servers::redis_store()), 12);
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store_keeps_the_engine_invariants() {
    if servers::server_up("PostgreSQL", servers::POSTGRES_ADDR) {
        // Migrate on a store of its own: the server's store opens its connections on the
        // server's workers.
        actix_web::rt::System::new().block_on(servers::postgres_store());
        let url = format!("postgres://postgres@{}/postgres", servers::POSTGRES_ADDR);
        check(
            move || Arc::new(idempotent_actix::store::PostgresStore::new(&url).expect("a valid URL")),
            12,
        );
    }
}

fn check(store: impl FnOnce() -> Arc<dyn Store> + Send + 'static, cases: u32) {
    silence_requested_panics();
    let server = Server::start(store);
    let system = actix_web::rt::System::new();
    let mut runner = servers::runner(cases, "tests/properties/regressions/engine_model.txt");
    let result = runner.run(&vec(step(), 1..=8), |steps| system.block_on(run_case(&server, &steps)));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Fail,
    Panic,
}

impl Outcome {
    fn header(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Fail => "fail",
            Self::Panic => "panic",
        }
    }
}

#[derive(Debug, Clone)]
struct Request {
    tenant: usize,
    key: usize,
    variant: usize,
    outcome: Outcome,
    sleep_ms: u64,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Created),
        2 => Just(Outcome::Fail),
        1 => Just(Outcome::Panic),
    ]
}

/// One request, or several at once on one tenant and key: mostly exact duplicates, some with
/// the other body or another outcome.
fn step() -> impl Strategy<Value = Vec<Request>> {
    let others = prop_oneof![
        Just(Vec::new()),
        vec(
            (prop::bool::weighted(0.2), prop::option::weighted(0.2, outcome())),
            1..=3
        ),
    ];
    let sleep_ms = prop_oneof![Just(0), Just(20), Just(60)];
    (
        0..TENANTS.len(),
        0..KEYS,
        0..VARIANTS.len(),
        outcome(),
        sleep_ms,
        others,
    )
        .prop_map(|(tenant, key, variant, outcome, sleep_ms, others)| {
            let first = Request {
                tenant,
                key,
                variant,
                outcome,
                sleep_ms,
            };
            let mut step = vec![first.clone()];
            step.extend(others.into_iter().map(|(mismatched, other_outcome)| Request {
                variant: if mismatched { 1 - variant } else { variant },
                outcome: other_outcome.unwrap_or(outcome),
                ..first.clone()
            }));
            step
        })
}

// ---------------------------------------------------------------------------------------------
// The server

#[derive(Debug, Clone)]
struct Execution {
    id: u64,
    tenant: String,
    key: String,
    variant: String,
    outcome: String,
}

/// Every execution of the handler, in order.
#[derive(Default)]
struct Log(Mutex<Vec<Execution>>);

impl Log {
    fn record(&self, tenant: &str, key: &str, variant: &str, outcome: &str) -> u64 {
        let mut log = self.0.lock().expect("log");
        let id = log.len() as u64 + 1;
        log.push(Execution {
            id,
            tenant: tenant.to_owned(),
            key: key.to_owned(),
            variant: variant.to_owned(),
            outcome: outcome.to_owned(),
        });
        id
    }

    fn len(&self) -> usize {
        self.0.lock().expect("log").len()
    }

    fn since(&self, start: usize) -> Vec<Execution> {
        self.0.lock().expect("log")[start..].to_vec()
    }
}

#[derive(serde::Deserialize)]
struct Order {
    variant: String,
}

#[post("/orders")]
#[idempotent(scope = "tenant")]
async fn order(req: HttpRequest, order: web::Json<Order>, log: web::Data<Log>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (tenant, key, outcome) = (header("x-tenant-id"), header("idempotency-key"), header("x-outcome"));
    let execution = log.record(&tenant, &key, &order.variant, &outcome);
    let pause = header("x-sleep-ms").parse().unwrap_or(0);
    actix_web::rt::time::sleep(Duration::from_millis(pause)).await;
    let body = json!({ "execution": execution, "tenant": tenant, "key": key, "variant": order.variant });
    match outcome.as_str() {
        "panic" => std::panic::panic_any(PANIC_MESSAGE),
        "fail" => HttpResponse::InternalServerError().json(body),
        _ => HttpResponse::Created().json(body),
    }
}

/// Handler panics are part of the test: keep them out of the output.
fn silence_requested_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PANIC_MESSAGE) {
                report(info);
            }
        }));
    });
}

/// A server in a thread of its own; stopped when dropped.
struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    log: web::Data<Log>,
}

impl Server {
    /// Starts a server on a store that `store` builds in the server's own runtime.
    fn start(store: impl FnOnce() -> Arc<dyn Store> + Send + 'static) -> Self {
        let log = web::Data::new(Log::default());
        let app_log = log.clone();
        let (started, addr) = mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let idempotency = Idempotency::builder()
                    .shared_store(store())
                    .tenant_from_header(HeaderName::from_static("x-tenant-id"))
                    .namespace(format!("properties-{}:", uuid::Uuid::new_v4()))
                    .wait_timeout(WAIT_BOUND)
                    .build();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(idempotency.clone())
                        .app_data(app_log.clone())
                        .service(order)
                })
                .workers(2)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("bind 127.0.0.1:0");
                let addr = server.addrs()[0];
                let server = server.run();
                started.send((addr, server.handle())).expect("the test waits");
                server.await
            })
        });
        let (addr, handle) = addr.recv_timeout(REPLY_BOUND).expect("the server starts");
        Self { addr, handle, log }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `stop` sends its command at once; the server thread ends on its own.
        drop(self.handle.stop(false));
    }
}

// ---------------------------------------------------------------------------------------------
// One case

/// What a request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 201 from the handler's execution `id`.
    Created(u64),
    /// 500 from the handler's execution `id`.
    Failed(u64),
    /// 500 `idempotency_handler_failed`: the handler panicked.
    Crashed,
    /// 409 `idempotency_conflict`.
    Conflict,
}

#[derive(Debug)]
struct Reply {
    answer: Answer,
    replayed: bool,
}

/// The response stored for a tenant and key.
#[derive(Debug, Clone, Copy)]
struct Stored {
    variant: usize,
    execution: u64,
}

async fn run_case(server: &Server, steps: &[Vec<Request>]) -> Result<(), TestCaseError> {
    static CASES: AtomicU64 = AtomicU64::new(0);
    let case = CASES.fetch_add(1, Ordering::Relaxed);
    let client = awc::Client::builder().timeout(REPLY_BOUND * 2).finish();
    let mut stored = HashMap::new();
    let first_execution = server.log.len();
    for (index, step) in steps.iter().enumerate() {
        let before = server.log.len();
        let replies = join_all(step.iter().map(|request| send(&client, server.addr, case, request))).await;
        let replies = replies.into_iter().collect::<Result<Vec<_>, _>>()?;
        let executions = server.log.since(before);
        check_step(&mut stored, case, step, &replies, &executions).map_err(|error| {
            TestCaseError::fail(format!(
                "step {index} {step:?}: {error}\nreplies: {replies:?}\nexecutions: {executions:?}"
            ))
        })?;
    }
    no_key_ran_after_its_response_was_stored(&server.log.since(first_execution))
}

fn key_name(case: u64, key: usize) -> String {
    format!("case-{case}-key-{key}")
}

async fn send(client: &awc::Client, addr: SocketAddr, case: u64, request: &Request) -> Result<Reply, TestCaseError> {
    let exchange = async {
        let mut response = client
            .post(format!("http://{addr}/orders"))
            .insert_header(("Idempotency-Key", key_name(case, request.key)))
            .insert_header(("X-Tenant-Id", TENANTS[request.tenant]))
            .insert_header(("X-Outcome", request.outcome.header()))
            .insert_header(("X-Sleep-Ms", request.sleep_ms.to_string()))
            .send_json(&json!({ "variant": VARIANTS[request.variant] }))
            .await
            .map_err(|error| error.to_string())?;
        let body = response.body().await.map_err(|error| error.to_string())?;
        let replayed = response
            .headers()
            .get("idempotency-replayed")
            .is_some_and(|v| v == "true");
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer = classify(response.status().as_u16(), &body, case, request)?;
        Ok::<_, String>(Reply { answer, replayed })
    };
    match tokio::time::timeout(REPLY_BOUND, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(TestCaseError::fail(format!("{request:?}: {error}"))),
        Err(_) => Err(TestCaseError::fail(format!(
            "{request:?} was left hanging: no answer within {REPLY_BOUND:?}"
        ))),
    }
}

/// Reads an answer, refusing any handler response made for another tenant, key or body.
fn classify(status: u16, body: &Value, case: u64, request: &Request) -> Result<Answer, String> {
    let code = body["code"].as_str().unwrap_or_default();
    match (status, body["execution"].as_u64()) {
        (201 | 500, Some(execution)) => {
            let sent = json!({
                "tenant": TENANTS[request.tenant],
                "key": key_name(case, request.key),
                "variant": VARIANTS[request.variant],
            });
            for field in ["tenant", "key", "variant"] {
                if body[field] != sent[field] {
                    return Err(format!("got the response of another request: {body}"));
                }
            }
            Ok(if status == 201 {
                Answer::Created(execution)
            } else {
                Answer::Failed(execution)
            })
        }
        (500, None) if code == "idempotency_handler_failed" => Ok(Answer::Crashed),
        (409, None) if code == "idempotency_conflict" => Ok(Answer::Conflict),
        _ => Err(format!("an unexpected answer: {status} {body}")),
    }
}

/// Checks one step's replies and executions against the model, and updates it.
fn check_step(
    stored: &mut HashMap<(usize, usize), Stored>,
    case: u64,
    step: &[Request],
    replies: &[Reply],
    executions: &[Execution],
) -> Result<(), String> {
    let (tenant, key) = (step[0].tenant, step[0].key);
    for execution in executions {
        let sent = step.iter().any(|request| {
            execution.tenant == TENANTS[tenant]
                && execution.key == key_name(case, key)
                && execution.variant == VARIANTS[request.variant]
                && execution.outcome == request.outcome.header()
        });
        ensure(sent, "the handler ran a request nobody sent in this step")?;
    }
    if let Some(&Stored { variant, execution }) = stored.get(&(tenant, key)) {
        ensure(
            executions.is_empty(),
            "the handler ran again for a key whose response is stored",
        )?;
        for (request, reply) in step.iter().zip(replies) {
            if request.variant == variant {
                ensure(
                    reply.answer == Answer::Created(execution),
                    "a duplicate did not get the stored response",
                )?;
                ensure(reply.replayed, "a stored response was not marked as a replay")?;
            } else {
                ensure(
                    reply.answer == Answer::Conflict,
                    "another body on a stored key did not get idempotency_conflict",
                )?;
            }
        }
        return Ok(());
    }
    let ran = |outcome: Outcome| executions.iter().filter(move |e| e.outcome == outcome.header());
    let created: Vec<_> = ran(Outcome::Created).collect();
    ensure(!executions.is_empty(), "nothing ran for a key with no stored response")?;
    ensure(executions.len() <= step.len(), "more executions than requests")?;
    ensure(created.len() <= 1, "the handler ran twice to a stored response")?;
    let first_hand = |pick: fn(Answer) -> bool| replies.iter().filter(|r| !r.replayed && pick(r.answer)).count();
    ensure(
        first_hand(|a| matches!(a, Answer::Created(_))) == created.len(),
        "each successful execution answers its own request, unmarked; every other 201 is a replay",
    )?;
    ensure(
        first_hand(|a| matches!(a, Answer::Failed(_))) == ran(Outcome::Fail).count(),
        "each failed execution answers its own request, unmarked; every other 500 is a replay",
    )?;
    ensure(
        first_hand(|a| a == Answer::Crashed) >= ran(Outcome::Panic).count(),
        "each panicking execution answers its own request with idempotency_handler_failed",
    )?;
    for (request, reply) in step.iter().zip(replies) {
        let execution = |id: u64| executions.iter().find(|e| e.id == id);
        let fine = match reply.answer {
            Answer::Created(id) => created.first().is_some_and(|e| e.id == id),
            Answer::Failed(id) => execution(id).is_some_and(|e| e.outcome == Outcome::Fail.header()),
            Answer::Crashed => ran(Outcome::Panic).next().is_some(),
            Answer::Conflict => step.iter().any(|other| other.variant != request.variant),
        };
        ensure(fine, "an answer that no execution in this step explains")?;
    }
    let duplicates_only = step
        .iter()
        .all(|r| r.variant == step[0].variant && r.outcome == step[0].outcome);
    if duplicates_only && step[0].outcome == Outcome::Created {
        ensure(
            executions.len() == 1,
            "duplicates of a successful request ran more than once",
        )?;
    }
    if let Some(execution) = created.first() {
        let variant = VARIANTS
            .iter()
            .position(|v| *v == execution.variant)
            .expect("a known variant");
        stored.insert(
            (tenant, key),
            Stored {
                variant,
                execution: execution.id,
            },
        );
    }
    Ok(())
}

/// The invariant the model builds on, checked on the whole case: per tenant and key, nothing
/// runs after an execution whose response was stored.
fn no_key_ran_after_its_response_was_stored(executions: &[Execution]) -> Result<(), TestCaseError> {
    let mut completed: HashMap<(&str, &str), u64> = HashMap::new();
    for execution in executions {
        let identity = (execution.tenant.as_str(), execution.key.as_str());
        if let Some(first) = completed.get(&identity) {
            return Err(TestCaseError::fail(format!(
                "{identity:?} ran again (execution {}) after execution {first} was stored",
                execution.id
            )));
        }
        if execution.outcome == Outcome::Created.header() {
            completed.insert(identity, execution.id);
        }
    }
    Ok(())
}

fn ensure(condition: bool, what: &str) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}
