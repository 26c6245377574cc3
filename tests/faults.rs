//! Faults against the real servers, under a load of keyed requests through a real actix server
//! on 127.0.0.1:
//!
//! - Redis killed (SIGKILL) and restarted on the same port mid-load, without persistence and
//!   with an append-only file fsynced on every write;
//! - every PostgreSQL connection cut mid-load (the server looks down), then the server back;
//! - a store that stalls: it accepts connections and then forwards nothing;
//! - a memory store filled past its capacity.
//!
//! For each, the test states what the client sees and checks, from a ledger of every handler
//! execution and of every completion the store acknowledged: no key runs again after its
//! completion was stored while the store still keeps it, no stored response is lost while the
//! store keeps it, and the app recovers without a restart.
//!
//! A replica killed mid-request is proven in `tests/replicas.rs`
//! (`redis_a_killed_replica_frees_its_key_after_the_lease` and its PostgreSQL twin).
//!
//! Redis runs as a throwaway `redis-server` child on a free port: the machine's own Redis is
//! never restarted. PostgreSQL is reached through a TCP proxy that cuts and restores every
//! connection. Under `CI=true` a missing server or program fails the test; elsewhere the test
//! prints a skip notice and passes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{post, web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::{
    idempotent, Claim, Completion, FencingToken, Fingerprint, Idempotency, Lookup, MemoryStore, Record, RecordKey,
    Store, StoreError,
};
use serde_json::{json, Value};

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/services.rs"]
mod services;

use proxy::Proxy;
use services::{free_port, program_available, server_up, unique};

/// How long every handler takes: long enough that a fault lands while some are running.
const HANDLER_TIME: Duration = Duration::from_millis(20);
/// The claim lease: a claim orphaned by a lost reply frees up after it.
const LEASE: Duration = Duration::from_secs(1);
/// Client tasks of the load; tasks `i` and `i + PAIRS` send the same key at the same time.
const CLIENTS: usize = 10;
const PAIRS: usize = CLIENTS / 2;
/// Keys each pair of tasks goes through, in order and then again from the first.
const KEYS_PER_PAIR: usize = 60;
const KEYS: usize = PAIRS * KEYS_PER_PAIR;
/// How many requests in a row each task of a pair sends with one key before the next: the
/// first two race, the others are retries.
const REPEATS: usize = 4;
/// Upper bound on the requests of one client task.
const MAX_REQUESTS_PER_CLIENT: usize = 400;
/// How long a client waits after a 503 before its next request.
const BACKOFF: Duration = Duration::from_millis(20);
/// The bound on each store call during the outage tests.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest any single exchange may take before the test fails.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The app under load, and the ledger of executions and acknowledged completions

#[derive(Clone, Copy, Debug)]
struct Run {
    id: u64,
    started: Instant,
}

/// Every execution of the handlers, by key.
#[derive(Default)]
struct Runs {
    next: AtomicU64,
    by_key: Mutex<HashMap<String, Vec<Run>>>,
}

impl Runs {
    fn start(&self, key: &str) -> u64 {
        let run = Run {
            id: self.next.fetch_add(1, Ordering::SeqCst) + 1,
            started: Instant::now(),
        };
        self.by_key.lock().unwrap().entry(key.to_owned()).or_default().push(run);
        run.id
    }

    fn of(&self, key: &str) -> Vec<Run> {
        self.by_key.lock().unwrap().get(key).cloned().unwrap_or_default()
    }
}

fn key_of(req: &HttpRequest) -> String {
    req.headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[post("/orders")]
#[idempotent]
async fn create_order(req: HttpRequest, runs: web::Data<Runs>) -> HttpResponse {
    let key = key_of(&req);
    let run = runs.start(&key);
    tokio::time::sleep(HANDLER_TIME).await;
    HttpResponse::Created().json(json!({ "key": key, "run": run }))
}

#[post("/slow-orders")]
#[idempotent]
async fn create_order_slowly(req: HttpRequest, runs: web::Data<Runs>) -> HttpResponse {
    let key = key_of(&req);
    let run = runs.start(&key);
    tokio::time::sleep(Duration::from_millis(400)).await;
    HttpResponse::Created().json(json!({ "key": key, "run": run }))
}

/// A completion the store acknowledged (`complete` returned `Ok(true)`), and when.
#[derive(Clone, Debug)]
struct Acknowledged {
    at: Instant,
    body: Bytes,
}

/// The store under test, noting every completion it acknowledged.
struct Ledger {
    inner: Arc<dyn Store>,
    acknowledged: Mutex<HashMap<RecordKey, Vec<Acknowledged>>>,
}

impl Ledger {
    fn acknowledged(&self, key: &RecordKey) -> Vec<Acknowledged> {
        self.acknowledged.lock().unwrap().get(key).cloned().unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Store for Ledger {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(key, fingerprint, lease).await
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        self.inner.renew(key, token, lease).await
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let body = match &record.completion {
            Completion::Response(response) => response.body.clone(),
            Completion::Tombstone => Bytes::new(),
        };
        let stored = self.inner.complete(key, token, record, ttl).await?;
        if stored {
            let acknowledged = Acknowledged {
                at: Instant::now(),
                body,
            };
            self.acknowledged
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .push(acknowledged);
        }
        Ok(stored)
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        self.inner.release(key, token).await
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        self.inner.lookup(key).await
    }

    async fn wait_for_change(&self, key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        self.inner.wait_for_change(key, timeout).await
    }

    fn cached(&self, key: &RecordKey) -> Option<Arc<Record>> {
        self.inner.cached(key)
    }
}

/// What one keyed request got.
#[derive(Debug, Clone)]
enum Outcome {
    /// The handler's own response (201, not marked).
    Executed { run: u64 },
    /// A replay of an earlier execution of the same key (201, `Idempotency-Replayed: true`).
    Replayed { run: u64, body: Bytes },
    /// 503 `idempotency_store_unavailable` with `Retry-After`: the handler did not run.
    StoreUnavailable,
}

#[derive(Debug)]
struct Answer {
    key: String,
    /// When the answer arrived, and how long after the request.
    at: Instant,
    took: Duration,
    outcome: Outcome,
}

/// A server with the two routes on `store` (wrapped in a ledger), on a port of its own.
struct LoadApp {
    base: String,
    namespace: String,
    runs: web::Data<Runs>,
    ledger: Arc<Ledger>,
    idempotency: Idempotency,
    server: actix_web::dev::ServerHandle,
}

impl LoadApp {
    async fn start(store: Arc<dyn Store>, store_timeout: Duration) -> Self {
        let runs = web::Data::new(Runs::default());
        let ledger = Arc::new(Ledger {
            inner: store,
            acknowledged: Mutex::default(),
        });
        let namespace = format!("{}:", unique("faults"));
        let idempotency = Idempotency::builder()
            .shared_store(Arc::clone(&ledger) as Arc<dyn Store>)
            .namespace(namespace.clone())
            .lease(LEASE)
            .store_timeout(store_timeout)
            .build();
        let (app_runs, app_idempotency) = (runs.clone(), idempotency.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_idempotency.clone())
                .app_data(app_runs.clone())
                .service(create_order)
                .service(create_order_slowly)
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind the test app");
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base,
            namespace,
            runs,
            ledger,
            idempotency,
            server: handle,
        }
    }

    fn record_key(&self, key: &str) -> RecordKey {
        RecordKey::new(&self.namespace, None, key, None)
    }

    /// Sends a keyed POST to `path` and classifies the answer; anything outside [`Outcome`]
    /// fails the test.
    async fn post(&self, client: &awc::Client, path: &str, key: &str) -> Answer {
        let sent = Instant::now();
        let exchange = async {
            let mut response = client
                .post(format!("{}{path}", self.base))
                .insert_header(("Idempotency-Key", key))
                .send()
                .await
                .unwrap_or_else(|error| panic!("key {key}: no answer: {error}"));
            let body = response.body().await.expect("a complete body");
            (response.status(), response.headers().clone(), body)
        };
        let (status, headers, body) = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("key {key}: no answer within {EXCHANGE_TIMEOUT:?}"));
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let replayed = headers.get("idempotency-replayed").is_some_and(|v| v == "true");
        let outcome = match status {
            StatusCode::CREATED => {
                assert_eq!(json["key"], key, "an answer for another key: {json}");
                let run = json["run"].as_u64().expect("a run number");
                match replayed {
                    true => Outcome::Replayed { run, body },
                    false => Outcome::Executed { run },
                }
            }
            StatusCode::SERVICE_UNAVAILABLE
                if json["code"] == "idempotency_store_unavailable" && headers.contains_key("retry-after") =>
            {
                Outcome::StoreUnavailable
            }
            _ => panic!("key {key}: unexpected answer {status} {headers:?} {json}"),
        };
        Answer {
            key: key.to_owned(),
            at: Instant::now(),
            took: sent.elapsed(),
            outcome,
        }
    }
}

impl Drop for LoadApp {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(EXCHANGE_TIMEOUT).finish()
}

// ---------------------------------------------------------------------------------------------
// A store outage in the middle of a load

/// A way to take the store away and bring it back.
trait Outage {
    /// Makes the store unreachable.
    fn begin(&mut self);
    /// Makes it reachable again and returns once it answers.
    async fn end(&mut self);
}

/// The times the outage began and ended, as the test saw them.
struct OutageTimes {
    began: Instant,
    /// Taken before the store was brought back: every completion acknowledged after it was
    /// written to the store as it is after the outage.
    ended: Instant,
}

/// One task of the load: keyed requests until `stop` or its request bound, `REPEATS` in a row
/// per key, through its pair's keys, so new executions start all along the load while the
/// other task of the pair sends the same keys at the same time.
async fn client_task(app: &LoadApp, keys: &[String], task: usize, stop: &AtomicBool) -> Vec<Answer> {
    let client = client();
    let mut answers = Vec::new();
    let pair_keys = &keys[(task % PAIRS) * KEYS_PER_PAIR..][..KEYS_PER_PAIR];
    for n in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let answer = app
            .post(&client, "/orders", &pair_keys[(n / REPEATS) % KEYS_PER_PAIR])
            .await;
        if matches!(answer.outcome, Outcome::StoreUnavailable) {
            tokio::time::sleep(BACKOFF).await;
        }
        answers.push(answer);
    }
    answers
}

/// Runs the load, with the outage from 400 ms to 800 ms into it, then 800 ms more of load.
async fn load_through(app: &LoadApp, keys: &[String], outage: &mut impl Outage) -> (Vec<Answer>, OutageTimes) {
    let stop = AtomicBool::new(false);
    let clients = futures_util::future::join_all((0..CLIENTS).map(|task| client_task(app, keys, task, &stop)));
    let faults = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        outage.begin();
        let began = Instant::now();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let ended = Instant::now();
        outage.end().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop.store(true, Ordering::SeqCst);
        OutageTimes { began, ended }
    };
    let (answers, times) = futures_util::join!(clients, faults);
    (answers.into_iter().flatten().collect(), times)
}

/// What the store keeps across the outage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Every completion it acknowledged.
    KeepsEverything,
    /// Only what it acknowledged after the outage: it forgets everything when restarted.
    ForgetsOnRestart,
}

impl Durability {
    /// Whether the store still holds, after the outage, a completion it acknowledged.
    fn keeps(self, acknowledged: &Acknowledged, outage: &OutageTimes) -> bool {
        self == Durability::KeepsEverything || acknowledged.at >= outage.ended
    }
}

/// The load through the outage, then the checks.
async fn keyed_load_through_an_outage(
    label: &str,
    store: Arc<dyn Store>,
    outage: &mut impl Outage,
    durability: Durability,
) {
    let app = LoadApp::start(store, STORE_TIMEOUT).await;
    let keys: Vec<String> = (0..KEYS).map(|i| unique(&format!("order-{i}"))).collect();
    let (answers, times) = load_through(&app, &keys, outage).await;

    // What the client sees: the handler's response, a replay of it, or 503 with Retry-After
    // (anything else failed the test in `LoadApp::post`).
    let count = |f: fn(&Outcome) -> bool| answers.iter().filter(|a| f(&a.outcome)).count();
    let executed = count(|o| matches!(o, Outcome::Executed { .. }));
    let replayed = count(|o| matches!(o, Outcome::Replayed { .. }));
    let unavailable = count(|o| matches!(o, Outcome::StoreUnavailable));
    assert!(unavailable > 0, "the outage was seen mid-load");
    let slowest_refusal = answers
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::StoreUnavailable))
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_refusal < STORE_TIMEOUT + Duration::from_millis(500),
        "a 503 comes within the store timeout, not after {slowest_refusal:?}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.at < times.began && !matches!(a.outcome, Outcome::StoreUnavailable)),
        "requests succeeded before the outage"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.at > times.ended && !matches!(a.outcome, Outcome::StoreUnavailable)),
        "requests succeed again after it, without restarting the app"
    );
    for answer in &answers {
        if let Outcome::Executed { run } | Outcome::Replayed { run, .. } = answer.outcome {
            let runs = app.runs.of(&answer.key);
            assert!(runs.iter().any(|r| r.id == run), "an execution of this key: {answer:?}");
        }
    }

    // Claims orphaned by lost replies lapse; then every key is retried.
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    let client = client();
    let (mut ran_again, mut forgotten) = (0, 0);
    let sent: std::collections::HashSet<&str> = answers.iter().map(|a| a.key.as_str()).collect();
    for key in keys.iter().filter(|key| sent.contains(key.as_str())) {
        let record_key = app.record_key(key);
        let acknowledged = app.ledger.acknowledged(&record_key);
        let kept = acknowledged.iter().rev().find(|a| durability.keeps(a, &times));
        let retry = app.post(&client, "/orders", key).await;
        let replay = app.post(&client, "/orders", key).await;
        match (kept, &retry.outcome) {
            (Some(kept), Outcome::Replayed { body, .. }) => {
                assert_eq!(body, &kept.body, "key {key}: the stored response, byte for byte")
            }
            (Some(_), other) => panic!("key {key}: a completion the store keeps was lost: {other:?}"),
            (None, Outcome::Executed { .. } | Outcome::Replayed { .. }) => {}
            (None, Outcome::StoreUnavailable) => panic!("key {key}: the store is back, yet 503"),
        }
        let Outcome::Replayed { run: stored_run, .. } = replay.outcome else {
            panic!("key {key}: the second retry must be a replay: {replay:?}");
        };
        let runs = app.runs.of(key);
        assert_eq!(
            runs.last().map(|r| r.id),
            Some(stored_run),
            "key {key}: the stored response is the last execution's"
        );

        // No key runs again after a completion its store still keeps.
        for run in &runs {
            let earlier_kept = acknowledged
                .iter()
                .find(|a| a.at < run.started && durability.keeps(a, &times));
            assert!(
                earlier_kept.is_none(),
                "key {key}: run {} started after its completion was stored and kept: runs {runs:?}",
                run.id
            );
        }
        ran_again += usize::from(runs.len() > 1);
        let lost = acknowledged.iter().find(|a| !durability.keeps(a, &times));
        forgotten += usize::from(lost.is_some_and(|lost| runs.iter().any(|r| r.started > lost.at)));
    }
    if durability == Durability::ForgetsOnRestart {
        assert!(forgotten > 0, "a key completed before the restart ran again after it");
    }
    let stats = app.idempotency.stats();
    println!(
        "{label}: {} answers during the load ({executed} executed, {replayed} replayed, {unavailable} × 503); \
         {} keys, {ran_again} ran more than once ({forgotten} because the restart forgot their record, the others \
         because their completion failed during the outage); \
         {} failed store calls, {} completions fenced off; slowest 503 after {slowest_refusal:?}",
        answers.len(),
        sent.len(),
        stats.store_errors,
        stats.fenced_completions,
    );
}

/// A throwaway `redis-server` on a free port of 127.0.0.1, in a directory of its own.
struct RedisServer {
    port: u16,
    dir: PathBuf,
    append_only: bool,
    child: Option<Child>,
}

impl RedisServer {
    async fn start(append_only: bool) -> Self {
        let dir = std::env::temp_dir().join(unique("idempotent-faults-redis"));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut server = Self {
            port: free_port(),
            dir,
            append_only,
            child: None,
        };
        server.spawn().await;
        server
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match self.append_only {
            true => command.args(["--appendonly", "yes", "--appendfsync", "always"]),
            false => command.args(["--appendonly", "no"]),
        };
        self.child = Some(command.spawn().expect("redis-server starts"));
        self.wait_until_it_answers().await;
    }

    async fn wait_until_it_answers(&self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(self.addr()).await {
                let mut reply = [0; 5];
                if stream.write_all(b"PING\r\n").await.is_ok()
                    && stream.read_exact(&mut reply).await.is_ok()
                    && &reply == b"+PONG"
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer",
                self.addr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no final save.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Outage for RedisServer {
    fn begin(&mut self) {
        self.kill();
    }

    async fn end(&mut self) {
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Outage for Proxy {
    fn begin(&mut self) {
        self.cut();
    }

    async fn end(&mut self) {
        self.resume().await;
    }
}

fn redis_store(addr: &str) -> Arc<dyn Store> {
    let store = idempotent_actix::store::RedisStore::builder(&services::redis_url(addr))
        .key_prefix(format!("{}:", unique("faults")))
        .build()
        .expect("a valid Redis URL");
    Arc::new(store)
}

async fn postgres_store(addr: &str) -> Arc<dyn Store> {
    let store =
        idempotent_actix::store::PostgresStore::new(&services::postgres_url(addr)).expect("a valid PostgreSQL URL");
    store.migrate().await.expect("migration");
    Arc::new(store)
}

/// Without persistence, a Redis restart forgets every record: a key completed before it runs
/// again when retried after it (documented in docs/STORES.md). Every completion stored after
/// the restart is kept and replayed; no key runs twice while its record exists.
#[actix_web::test]
async fn redis_killed_and_restarted_mid_load_without_persistence_runs_no_key_twice_while_its_record_exists() {
    if !program_available("redis-server") {
        return;
    }
    let mut redis = RedisServer::start(false).await;
    let store = redis_store(&redis.addr());
    keyed_load_through_an_outage("redis, no persistence", store, &mut redis, Durability::ForgetsOnRestart).await;
}

/// With `appendonly yes` and `appendfsync always`, every acknowledged completion survives
/// SIGKILL: after the restart each is replayed byte for byte, and no key whose completion was
/// acknowledged runs again. A key whose own completion failed during the outage runs again when
/// retried (docs/STORES.md: a result that cannot be stored).
#[actix_web::test]
async fn redis_killed_and_restarted_mid_load_with_an_fsynced_append_only_file_keeps_every_stored_response() {
    if !program_available("redis-server") {
        return;
    }
    let mut redis = RedisServer::start(true).await;
    let store = redis_store(&redis.addr());
    keyed_load_through_an_outage(
        "redis, appendfsync always",
        store,
        &mut redis,
        Durability::KeepsEverything,
    )
    .await;
}

/// Every connection to PostgreSQL is cut mid-load and the port closed, then opened again: the
/// pool discards the broken connections and the app recovers on its own. Records are durable:
/// every acknowledged completion is replayed afterwards, and no key whose completion was
/// acknowledged runs again (one whose completion failed during the outage may).
#[actix_web::test]
async fn postgres_connections_cut_mid_load_lose_no_stored_response_and_run_no_stored_key_again() {
    if !server_up("PostgreSQL", services::POSTGRES_ADDR) {
        return;
    }
    postgres_store(services::POSTGRES_ADDR).await;
    let mut proxy = Proxy::start(services::POSTGRES_ADDR).await;
    let store = idempotent_actix::store::PostgresStore::new(&services::postgres_url(&proxy.addr())).expect("URL");
    keyed_load_through_an_outage(
        "postgres, connections cut",
        Arc::new(store),
        &mut proxy,
        Durability::KeepsEverything,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// A stalled store

const STALL_TIMEOUT: Duration = Duration::from_millis(300);

/// The store accepts connections but answers nothing. With `store_timeout(300ms)`, every keyed
/// request is answered 503 within a second, never hangs and never runs; a handler already
/// running when the stall begins still answers its client. Once the store answers again, each
/// key runs exactly once and every stored response is replayed.
async fn a_stalled_store_answers_503_in_time_and_runs_nothing_twice(store: Arc<dyn Store>, proxy: &Proxy) {
    let app = LoadApp::start(store, STALL_TIMEOUT).await;
    let client = client();
    let before = unique("before");
    let slow = unique("slow");
    let stalled: Vec<String> = (0..6).map(|i| unique(&format!("stalled-{i}"))).collect();
    assert!(matches!(
        app.post(&client, "/orders", &before).await.outcome,
        Outcome::Executed { .. }
    ));

    let running = async {
        let started = Instant::now();
        let answer = app.post(&client, "/slow-orders", &slow).await;
        (answer, started.elapsed())
    };
    let during_the_stall = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(app.runs.of(&slow).len(), 1, "the slow handler is running");
        proxy.stall();
        let requests = stalled.iter().chain([&before]).map(|key| async {
            let client = self::client();
            let started = Instant::now();
            let answer = app.post(&client, "/orders", key).await;
            (answer, started.elapsed())
        });
        futures_util::future::join_all(requests).await
    };
    let ((running, running_took), refused) = futures_util::join!(running, during_the_stall);
    for (answer, took) in &refused {
        assert!(
            matches!(answer.outcome, Outcome::StoreUnavailable),
            "503 while stalled: {answer:?}"
        );
        assert!(*took < Duration::from_secs(1), "answered after {took:?}");
    }
    assert!(
        matches!(running.outcome, Outcome::Executed { .. }),
        "the running handler's client gets its response: {running:?}"
    );
    assert!(running_took < Duration::from_secs(2), "answered after {running_took:?}");
    for key in &stalled {
        assert!(app.runs.of(key).is_empty(), "a refused request does not run");
    }
    proxy.unstall();

    // Calls abandoned during the stall reach the store now; claims they left lapse.
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    let orders = stalled.iter().chain([&before]).map(|key| ("/orders", key));
    for (path, key) in orders.chain([("/slow-orders", &slow)]) {
        let first = app.post(&client, path, key).await;
        let second = app.post(&client, path, key).await;
        assert!(
            matches!(first.outcome, Outcome::Executed { .. } | Outcome::Replayed { .. }),
            "key {key}: {first:?}"
        );
        assert!(
            matches!(second.outcome, Outcome::Replayed { .. }),
            "key {key}: {second:?}"
        );
        assert_eq!(app.runs.of(key).len(), 1, "key {key} ran once");
    }
}

#[actix_web::test]
async fn redis_stalled_store_answers_503_within_a_second_and_runs_nothing_twice() {
    if !server_up("Redis", services::REDIS_ADDR) {
        return;
    }
    let proxy = Proxy::start(services::REDIS_ADDR).await;
    a_stalled_store_answers_503_in_time_and_runs_nothing_twice(redis_store(&proxy.addr()), &proxy).await;
}

#[actix_web::test]
async fn postgres_stalled_store_answers_503_within_a_second_and_runs_nothing_twice() {
    if !server_up("PostgreSQL", services::POSTGRES_ADDR) {
        return;
    }
    postgres_store(services::POSTGRES_ADDR).await;
    let proxy = Proxy::start(services::POSTGRES_ADDR).await;
    let store = idempotent_actix::store::PostgresStore::new(&services::postgres_url(&proxy.addr())).expect("URL");
    a_stalled_store_answers_503_in_time_and_runs_nothing_twice(Arc::new(store), &proxy).await;
}

// ---------------------------------------------------------------------------------------------
// A full memory store

/// A memory store of 16 KiB receives 64 completed records of about 400 bytes each. It evicts
/// the least recently used records and counts each eviction; the newest record is kept and
/// replayed. The client of an evicted key sees its retry run again (a fresh 201 without the
/// replay marker): the documented trade-off of a bounded memory store.
#[actix_web::test]
async fn a_full_memory_store_evicts_the_least_recently_used_record_counts_it_and_its_key_runs_again() {
    const RECORDS: u64 = 64;
    let store = MemoryStore::with_capacity(16 * 1024);
    let app = LoadApp::start(Arc::new(store.clone()), Duration::from_secs(2)).await;
    let client = client();
    let keys: Vec<String> = (0..RECORDS).map(|i| unique(&format!("filler-{i}"))).collect();
    for key in &keys {
        let answer = app.post(&client, "/orders", key).await;
        assert!(matches!(answer.outcome, Outcome::Executed { .. }), "{answer:?}");
    }

    let (held, evicted) = (store.record_count(), store.evicted_live_records());
    assert!(evicted > 0, "the store is full");
    assert_eq!(held + evicted, RECORDS, "every record is held or counted as evicted");
    assert!(store.weighted_size() <= 16 * 1024, "the capacity holds");

    let newest = app.post(&client, "/orders", &keys[keys.len() - 1]).await;
    assert!(
        matches!(newest.outcome, Outcome::Replayed { .. }),
        "the newest record is kept"
    );
    let oldest = app.post(&client, "/orders", &keys[0]).await;
    assert!(
        matches!(oldest.outcome, Outcome::Executed { .. }),
        "an evicted key runs again: {oldest:?}"
    );
    assert_eq!(app.runs.of(&keys[0]).len(), 2);
    println!("memory store of 16 KiB: {held} records held, {evicted} evicted and counted");
}
