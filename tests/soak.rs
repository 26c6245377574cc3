//! A bounded soak test: minutes of steady load against an in-process server on 127.0.0.1, from a
//! fixed number of client tasks mixing new keys, duplicates (some at the same moment),
//! mismatches, clients that reset the connection mid-request, and unkeyed requests.
//!
//! It checks that resident memory stays flat once the bounded store is full, that no key is
//! left stuck in flight, and that every answer is one the client is told to expect.
//!
//! Ignored by `cargo test`; run it with `scripts/soak.sh [minutes]` (release build, 3 minutes by
//! default). `SOAK_SECS` sets the duration in seconds, `SOAK_STORE=redis` uses the Redis server
//! at 127.0.0.1:6379 instead of the memory store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{post, web, App, HttpResponse, HttpServer};
use futures_util::StreamExt;
use idempotent_actix::{idempotent, Idempotency, Lookup, MemoryStore, RecordKey, Store};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[path = "support/services.rs"]
mod services;

/// Client tasks: the load's concurrency.
const CLIENTS: u64 = 8;
/// Upper bound on the iterations of one client task, whatever the duration.
const MAX_ITERATIONS: u64 = 5_000_000;
/// Capacity of the memory store: full within seconds, then evicting all along.
const STORE_CAPACITY: u64 = 4 * 1024 * 1024;
/// Earlier keys of a task that duplicates and mismatches pick from.
const RECENT_KEYS: usize = 64;
/// How often resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Resident memory at the end may exceed the sample at the end of the warm-up by this much.
const RSS_TOLERANCE: f64 = 0.15;
/// The longest any single exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a retry of any key may take after the load.
const RETRY_BOUND: Duration = Duration::from_secs(1);
/// Keys retried over HTTP after the load (every key is also looked up in the store).
const MAX_RETRIED_KEYS: usize = 5_000;

/// How many times each handler body ran.
#[derive(Default)]
struct Executions {
    orders: AtomicU64,
    slow_orders: AtomicU64,
}

#[post("/orders")]
#[idempotent(ttl = "30s")]
async fn create_order(order: web::Json<Value>, executions: web::Data<Executions>) -> HttpResponse {
    let run = executions.orders.fetch_add(1, Ordering::Relaxed) + 1;
    HttpResponse::Created().json(json!({ "run": run, "order": order.into_inner() }))
}

/// Slow enough for a client to reset its connection while the handler runs.
#[post("/slow-orders")]
#[idempotent(ttl = "30s")]
async fn create_order_slowly(order: web::Json<Value>, executions: web::Data<Executions>) -> HttpResponse {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let run = executions.slow_orders.fetch_add(1, Ordering::Relaxed) + 1;
    HttpResponse::Created().json(json!({ "run": run, "order": order.into_inner() }))
}

/// What one iteration of a client task does, drawn from the task and iteration numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// A request with a new key: 201, executed.
    New,
    /// The same request again with one of the task's recent keys: 201, replayed.
    Duplicate,
    /// Another body with one of the task's recent keys: 409 `idempotency_conflict`.
    Mismatch,
    /// Three identical requests with a new key at the same moment: one executes, two replay.
    Burst,
    /// A new key on the slow route; the client resets the connection while the handler runs,
    /// and retries a few iterations later: 201, replayed (the handler ran to its end).
    Disconnect,
    /// No key: 201, executed every time.
    Unkeyed,
}

fn action(task: u64, n: u64) -> Action {
    // splitmix64: a fixed, well-spread mix, so every run does the same thing.
    let mut x = (task << 40 ^ n).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    match (x ^ (x >> 31)) % 100 {
        0..=44 => Action::New,
        45..=64 => Action::Duplicate,
        65..=74 => Action::Mismatch,
        75..=79 => Action::Burst,
        80..=89 => Action::Disconnect,
        _ => Action::Unkeyed,
    }
}

/// Whether iteration `n` of `task` created a key, and on which route.
fn created_key(task: u64, n: u64) -> Option<(&'static str, String)> {
    match action(task, n) {
        Action::New | Action::Burst => Some(("/orders", key(task, n))),
        Action::Disconnect => Some(("/slow-orders", key(task, n))),
        _ => None,
    }
}

fn key(task: u64, n: u64) -> String {
    format!("soak-{task}-{n}")
}

fn order(n: u64) -> Value {
    json!({ "item": n })
}

/// Answers by kind; anything unexpected is counted with a sample.
#[derive(Default)]
struct Tally {
    executed: AtomicU64,
    replayed: AtomicU64,
    conflicts: AtomicU64,
    disconnects: AtomicU64,
    /// A fresh execution where a replay or a conflict was expected: the record was no longer
    /// kept (evicted or expired), or the client reset its connection before the handler started.
    ran_again: AtomicU64,
    unexpected: AtomicU64,
    samples: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn unexpected(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 20 {
            samples.push(what);
        }
    }

    fn total(&self) -> u64 {
        [
            &self.executed,
            &self.replayed,
            &self.conflicts,
            &self.disconnects,
            &self.ran_again,
            &self.unexpected,
        ]
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .sum()
    }
}

/// An answer as the client saw it.
struct Reply {
    status: StatusCode,
    replayed: bool,
    code: Option<String>,
}

struct Soak {
    base: String,
    addr: std::net::SocketAddr,
    tally: Tally,
    deadline: Instant,
}

impl Soak {
    async fn post(&self, client: &awc::Client, path: &str, key: Option<&str>, body: &Value) -> Result<Reply, String> {
        let mut request = client.post(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.insert_header(("Idempotency-Key", key));
        }
        let exchange = async {
            let mut response = request.send_json(body).await.map_err(|e| format!("{path}: {e}"))?;
            let bytes = response.body().await.map_err(|e| format!("{path}: body: {e}"))?;
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Reply {
                status: response.status(),
                replayed: response.headers().contains_key("idempotency-replayed"),
                code: json["code"].as_str().map(str::to_owned),
            })
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{path}: no answer within {EXCHANGE_TIMEOUT:?}"))?
    }

    /// Tallies `reply` as one of `expected`; a fresh 201 where a replay or a conflict was
    /// expected means the record was no longer kept.
    fn tally(&self, what: &str, reply: Result<Reply, String>, expected: Expect) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => return self.tally.unexpected(format!("{what}: {error}")),
        };
        let counter = match (expected, reply.status, reply.replayed, reply.code.as_deref()) {
            (Expect::Executed, StatusCode::CREATED, false, _) => &self.tally.executed,
            (Expect::Replayed, StatusCode::CREATED, true, _) => &self.tally.replayed,
            (Expect::Conflict, StatusCode::CONFLICT, _, Some("idempotency_conflict")) => &self.tally.conflicts,
            (Expect::Replayed | Expect::Conflict, StatusCode::CREATED, false, _) => &self.tally.ran_again,
            (_, status, replayed, code) => {
                let answer = format!("{status} replayed={replayed} code={code:?}");
                return self
                    .tally
                    .unexpected(format!("{what}: expected {expected:?}, got {answer}"));
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends the slow request with a new key, then resets the connection while it runs.
    async fn disconnect_mid_request(&self, key: &str, body: &Value) -> Result<(), String> {
        let body = body.to_string();
        let request = format!(
            "POST /slow-orders HTTP/1.1\r\nHost: {}\r\nIdempotency-Key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream.set_zero_linger().map_err(|e| format!("SO_LINGER: {e}"))?;
        drop(stream);
        self.tally.disconnects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One client task, until the deadline or its iteration bound; returns its iterations.
    async fn client_task(&self, task: u64) -> u64 {
        let client = awc::Client::builder().timeout(EXCHANGE_TIMEOUT).finish();
        let mut recent: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
        let mut disconnected: std::collections::VecDeque<(u64, u64)> = std::collections::VecDeque::new();
        let mut n = 0;
        while n < MAX_ITERATIONS && Instant::now() < self.deadline {
            let this = key(task, n);
            match action(task, n) {
                Action::New => {
                    let reply = self.post(&client, "/orders", Some(&this), &order(n)).await;
                    self.tally("new", reply, Expect::Executed);
                }
                Action::Duplicate | Action::Mismatch if recent.is_empty() => {}
                Action::Duplicate => {
                    let earlier = recent[n as usize % recent.len()];
                    let reply = self
                        .post(&client, "/orders", Some(&key(task, earlier)), &order(earlier))
                        .await;
                    self.tally("duplicate", reply, Expect::Replayed);
                }
                Action::Mismatch => {
                    let earlier = recent[n as usize % recent.len()];
                    let other = json!({ "item": earlier, "changed": true });
                    let reply = self.post(&client, "/orders", Some(&key(task, earlier)), &other).await;
                    self.tally("mismatch", reply, Expect::Conflict);
                }
                Action::Burst => {
                    let body = order(n);
                    let burst = (0..3).map(|_| self.post(&client, "/orders", Some(&this), &body));
                    let replies = futures_util::future::join_all(burst).await;
                    let executed = replies.iter().filter(|r| r.as_ref().is_ok_and(|r| !r.replayed)).count();
                    if executed != 1 {
                        self.tally.unexpected(format!("burst: {executed} of 3 executed"));
                    }
                    for reply in replies {
                        let expected = match reply.as_ref().is_ok_and(|r| r.replayed) {
                            true => Expect::Replayed,
                            false => Expect::Executed,
                        };
                        self.tally("burst", reply, expected);
                    }
                }
                Action::Disconnect => match self.disconnect_mid_request(&this, &order(n)).await {
                    Ok(()) => disconnected.push_back((n, n + 8)),
                    Err(error) => self.tally.unexpected(format!("disconnect: {error}")),
                },
                Action::Unkeyed => {
                    let reply = self.post(&client, "/orders", None, &order(n)).await;
                    self.tally("unkeyed", reply, Expect::Executed);
                }
            }
            if matches!(action(task, n), Action::New | Action::Burst) {
                recent.push_back(n);
                if recent.len() > RECENT_KEYS {
                    recent.pop_front();
                }
            }
            // A client that lost its connection retries a few iterations later.
            while let Some(&(earlier, due)) = disconnected.front() {
                if due > n {
                    break;
                }
                disconnected.pop_front();
                let reply = self
                    .post(&client, "/slow-orders", Some(&key(task, earlier)), &order(earlier))
                    .await;
                self.tally("retry after a reset", reply, Expect::Replayed);
            }
            n += 1;
        }
        n
    }
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Executed,
    Replayed,
    Conflict,
}

/// Resident memory of this process, in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn soak_duration() -> Duration {
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .map(|secs| secs.parse().expect("SOAK_SECS is a number of seconds"))
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// The store under test, and the memory store itself when it is one (for its counters).
fn store() -> (Arc<dyn Store>, Option<MemoryStore>, &'static str) {
    match std::env::var("SOAK_STORE").as_deref() {
        Ok("redis") => {
            assert!(
                services::server_up("Redis", services::REDIS_ADDR),
                "SOAK_STORE=redis needs Redis"
            );
            let redis = idempotent_actix::store::RedisStore::builder(&services::redis_url(services::REDIS_ADDR))
                .key_prefix(format!("{}:", services::unique("soak")))
                .build()
                .expect("a valid Redis URL");
            (Arc::new(redis), None, "redis")
        }
        Ok("memory") | Err(_) => {
            let memory = MemoryStore::with_capacity(STORE_CAPACITY);
            (Arc::new(memory.clone()), Some(memory), "memory")
        }
        Ok(other) => panic!("SOAK_STORE must be `memory` or `redis`, not `{other}`"),
    }
}

#[actix_web::test]
#[ignore = "minutes long: run it with scripts/soak.sh [minutes]"]
async fn a_steady_load_with_duplicates_mismatches_and_disconnects_keeps_memory_flat_and_leaves_no_key_stuck() {
    let duration = soak_duration();
    // Long enough for the memory store to fill: memory is flat only from then on.
    let warm_up = (duration / 3).clamp(Duration::from_secs(30), Duration::from_secs(60));
    assert!(
        duration >= 2 * warm_up,
        "a soak lasts at least a minute (SOAK_SECS >= 60)"
    );
    let (store, memory, store_name) = store();
    let namespace = format!("{}:", services::unique("soak"));
    let idempotency = Idempotency::builder()
        .shared_store(Arc::clone(&store))
        .namespace(namespace.clone())
        .build();
    let executions = web::Data::new(Executions::default());
    let (app_idempotency, app_executions) = (idempotency.clone(), executions.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_idempotency.clone())
            .app_data(app_executions.clone())
            .service(create_order)
            .service(create_order_slowly)
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind 127.0.0.1:0");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let started = Instant::now();
    let soak = Soak {
        base: format!("http://{addr}"),
        addr,
        tally: Tally::default(),
        deadline: started + duration,
    };
    println!(
        "soak: {store_name} store, {CLIENTS} clients, {}s (warm-up {}s), resident {} KiB at start",
        duration.as_secs(),
        warm_up.as_secs(),
        resident_kib()
    );
    let sampler = async {
        let mut samples = Vec::new();
        let mut next = started + SAMPLE_EVERY;
        while next <= soak.deadline {
            tokio::time::sleep_until(next.into()).await;
            let rss = resident_kib();
            let requests = soak.tally.total();
            let rate = requests as f64 / started.elapsed().as_secs_f64();
            println!(
                "soak: {:>4}s resident {rss} KiB, {requests} answers ({rate:.0}/s), {} unexpected",
                started.elapsed().as_secs(),
                soak.tally.unexpected.load(Ordering::Relaxed)
            );
            samples.push((next - started, rss));
            next += SAMPLE_EVERY;
        }
        samples
    };
    let clients = futures_util::future::join_all((0..CLIENTS).map(|task| soak.client_task(task)));
    let (iterations, samples) = futures_util::join!(clients, sampler);
    let load_time = started.elapsed();

    // Handlers whose client reset the connection finish and store their result.
    assert!(
        idempotency.drain(Duration::from_secs(10)).await,
        "every handler finished"
    );
    assert_eq!(idempotency.running(), 0);

    // No stuck keys: no key the load created is still claimed...
    let mut keys = 0;
    for (task, &count) in iterations.iter().enumerate() {
        for n in 0..count {
            let Some((_, key)) = created_key(task as u64, n) else {
                continue;
            };
            keys += 1;
            let lookup = store.lookup(&RecordKey::new(&namespace, None, &key, None)).await;
            assert!(
                !matches!(lookup, Ok(Lookup::InFlight { .. })),
                "key {key} is still in flight after the drain"
            );
        }
    }
    // ...and a retry of any of them answers at once (the last keys of each task, and an even
    // spread of the rest), `CLIENTS` at a time.
    let client = awc::Client::builder().timeout(EXCHANGE_TIMEOUT).finish();
    let stride = (keys / MAX_RETRIED_KEYS).max(1) as u64;
    let to_retry = iterations.iter().enumerate().flat_map(|(task, &count)| {
        let (task, last) = (task as u64, count.saturating_sub(50));
        (0..count)
            .filter(move |n| n % stride == 0 || *n >= last)
            .filter_map(move |n| created_key(task, n).map(|(path, key)| (path, key, n)))
    });
    let retries = futures_util::stream::iter(to_retry).map(|(path, key, n)| {
        let (soak, client) = (&soak, &client);
        async move {
            let asked = Instant::now();
            let reply = soak.post(client, path, Some(&key), &order(n)).await;
            (key, reply, asked.elapsed())
        }
    });
    let retries: Vec<_> = retries.buffer_unordered(CLIENTS as usize).collect().await;
    let mut slowest = Duration::ZERO;
    for (key, reply, took) in &retries {
        slowest = slowest.max(*took);
        assert!(*took < RETRY_BOUND, "a retry of {key} took {took:?}");
        match reply {
            Ok(reply) => assert_eq!(reply.status, StatusCode::CREATED, "a retry of {key}: {:?}", reply.code),
            Err(error) => panic!("a retry of {key}: {error}"),
        }
    }
    let retried = retries.len();

    let tally = &soak.tally;
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let requests = tally.total();
    println!(
        "soak: {requests} answers in {:.0}s ({:.0}/s): {} executed, {} replayed, {} conflicts, {} resets mid-request, \
         {} ran anew (record evicted or expired, or reset before the handler started), {} unexpected",
        load_time.as_secs_f64(),
        requests as f64 / load_time.as_secs_f64(),
        count(&tally.executed),
        count(&tally.replayed),
        count(&tally.conflicts),
        count(&tally.disconnects),
        count(&tally.ran_again),
        count(&tally.unexpected),
    );
    println!(
        "soak: handler executions: {} orders, {} slow orders; {keys} keys, none in flight after the drain; \
         {retried} retried after the load, slowest {slowest:?}",
        count(&executions.orders),
        count(&executions.slow_orders),
    );
    if let Some(memory) = &memory {
        println!(
            "soak: memory store: {} records held ({} KiB of {} KiB), {} evicted before their ttl",
            memory.record_count(),
            memory.weighted_size() / 1024,
            STORE_CAPACITY / 1024,
            memory.evicted_live_records()
        );
    }
    let stats = idempotency.stats();
    println!(
        "soak: store errors {}, responses not stored {}",
        stats.store_errors, stats.responses_not_stored
    );
    drop(handle.stop(true));

    let samples_text: Vec<String> = samples
        .iter()
        .map(|(at, rss)| format!("{}s: {rss} KiB", at.as_secs()))
        .collect();
    println!("soak: resident memory samples: {}", samples_text.join(", "));
    assert_eq!(
        count(&tally.unexpected),
        0,
        "unexpected answers: {:?}",
        tally.samples.lock().unwrap()
    );
    assert_eq!(stats.store_errors, 0, "no store call failed");
    let (_, baseline) = *samples
        .iter()
        .find(|(at, _)| *at >= warm_up)
        .expect("a sample at the end of the warm-up");
    let (_, last) = *samples.last().expect("samples");
    let limit = (baseline as f64 * (1.0 + RSS_TOLERANCE)) as u64;
    println!("soak: resident memory after warm-up {baseline} KiB, at the end {last} KiB (limit {limit} KiB)");
    assert!(last <= limit, "resident memory grew from {baseline} KiB to {last} KiB");
}
