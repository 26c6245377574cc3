//! The Redis and PostgreSQL stores against the real servers on this machine: the conformance
//! suite (bare and behind the local cache), corrupt records, round trips per request, the
//! store-down answers (fail closed, fail open) and recovery without restarting the app.
//!
//! Servers: Redis at 127.0.0.1:6379 and PostgreSQL at postgres://postgres@127.0.0.1:5432/postgres
//! (`.ci/run` starts them). A test whose server does not answer prints a skip notice and
//! passes, except under `CI=true`, where it fails.
#![cfg(any(feature = "redis", feature = "postgres"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{post, web, App, HttpResponse, HttpServer};
use idempotent_actix::store::conformance;
use idempotent_actix::{idempotent, CachedStore, ExpiringStore, Fingerprint, Idempotency, Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/proxy.rs"]
mod proxy;
use proxy::Proxy;

#[cfg(feature = "redis")]
const REDIS_ADDR: &str = "127.0.0.1:6379";
#[cfg(feature = "postgres")]
const POSTGRES_ADDR: &str = "127.0.0.1:5432";
/// A port nothing listens on: every connection is refused at once.
const CLOSED_ADDR: &str = "127.0.0.1:1";

#[cfg(feature = "redis")]
fn redis_url(addr: &str) -> String {
    format!("redis://{addr}/")
}

#[cfg(feature = "postgres")]
fn postgres_url(addr: &str) -> String {
    let (host, port) = addr.split_once(':').expect("host:port");
    format!("postgres://postgres@{host}:{port}/postgres")
}

/// Whether `name` answers at `addr`. Under `CI=true` a missing server fails the test;
/// elsewhere the test is skipped with a notice.
async fn server_up(name: &str, addr: &str) -> bool {
    match TcpStream::connect(addr).await {
        Ok(_) => true,
        Err(error) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{name} does not answer at {addr} ({error}); CI=true requires it (.ci/run starts it)")
        }
        Err(error) => {
            eprintln!("skipped: {name} does not answer at {addr} ({error})");
            false
        }
    }
}

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4())
}

// ---------------------------------------------------------------------------------------------
// Stores under test

#[cfg(feature = "redis")]
fn redis_store(addr: &str) -> idempotent_actix::store::RedisStore {
    redis_store_with_prefix(addr, &format!("{}:", unique("test-idempotency")))
}

#[cfg(feature = "redis")]
fn redis_store_with_prefix(addr: &str, prefix: &str) -> idempotent_actix::store::RedisStore {
    idempotent_actix::store::RedisStore::builder(&redis_url(addr))
        .key_prefix(prefix)
        .build()
        .expect("a valid Redis URL")
}

#[cfg(feature = "postgres")]
async fn postgres_store(addr: &str) -> idempotent_actix::store::PostgresStore {
    let store = idempotent_actix::store::PostgresStore::new(&postgres_url(addr)).expect("a valid PostgreSQL URL");
    store.migrate().await.expect("migration");
    store
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    if server_up("Redis", REDIS_ADDR).await {
        conformance::run_all(Arc::new(redis_store(REDIS_ADDR))).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_behind_a_local_cache_passes_the_conformance_suite() {
    if server_up("Redis", REDIS_ADDR).await {
        conformance::run_all(Arc::new(CachedStore::new(redis_store(REDIS_ADDR), 16 << 20))).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    if server_up("PostgreSQL", POSTGRES_ADDR).await {
        conformance::run_all(Arc::new(postgres_store(POSTGRES_ADDR).await)).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_behind_a_local_cache_passes_the_conformance_suite() {
    if server_up("PostgreSQL", POSTGRES_ADDR).await {
        let store = CachedStore::new(postgres_store(POSTGRES_ADDR).await, 16 << 20);
        conformance::run_all(Arc::new(store)).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_can_run_on_many_replicas_at_once_and_again() {
    if !server_up("PostgreSQL", POSTGRES_ADDR).await {
        return;
    }
    let stores: Vec<_> = (0..4)
        .map(|_| idempotent_actix::store::PostgresStore::new(&postgres_url(POSTGRES_ADDR)).expect("URL"))
        .collect();
    let migrations = stores.iter().map(|store| store.migrate());
    for result in futures_util::future::join_all(migrations).await {
        result.expect("a concurrent migration succeeds");
    }
    stores[0].migrate().await.expect("a repeated migration succeeds");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sweep_deletes_expired_records_only() {
    if !server_up("PostgreSQL", POSTGRES_ADDR).await {
        return;
    }
    let store = postgres_store(POSTGRES_ADDR).await;
    let live = conformance::fresh_key("sweep-live");
    let expired = conformance::fresh_key("sweep-expired");
    for key in [&live, &expired] {
        let token = acquired(
            store
                .claim(key, Fingerprint([1; 32]), Duration::from_secs(60))
                .await
                .expect("claim"),
        );
        assert!(store
            .complete(key, token, tombstone(), Duration::from_secs(3600))
            .await
            .expect("complete"));
    }
    // Age one record past the sweep's grace period.
    psql(&format!(
        "UPDATE idempotency_records SET expires_at = now() - interval '2 minutes' WHERE id = '{}'",
        store.record_id(&expired)
    ));
    assert!(store.sweep_expired().await.expect("sweep") >= 1);
    assert!(
        matches!(
            store.lookup(&live).await.expect("lookup"),
            idempotent_actix::Lookup::Completed(_)
        ),
        "a live record survives"
    );
    let rows = psql(&format!(
        "SELECT count(*) FROM idempotency_records WHERE id = '{}'",
        store.record_id(&expired)
    ));
    assert_eq!(rows.trim(), "0", "the expired row is deleted");
}

// ---------------------------------------------------------------------------------------------
// Two replicas on one server; leases that lapse unseen

fn acquired(claim: idempotent_actix::Claim) -> idempotent_actix::FencingToken {
    match claim {
        idempotent_actix::Claim::Acquired(token) | idempotent_actix::Claim::Reacquired(token) => token,
        other => panic!("a free key must be acquired, got {other:?}"),
    }
}

fn tombstone() -> Arc<idempotent_actix::Record> {
    Arc::new(idempotent_actix::Record::new(
        Fingerprint([1; 32]),
        idempotent_actix::Completion::Tombstone,
    ))
}

/// A duplicate waiting on one replica is woken by the other replica's completion or release
/// at once, long before its timeout (no polling).
async fn a_waiter_on_another_replica_is_woken_by_the_notification(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    const LEASE: Duration = Duration::from_secs(30);
    const PATIENCE: Duration = Duration::from_secs(20);
    for completes in [true, false] {
        let key = conformance::fresh_key("notified");
        let token = acquired(first.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
        assert!(matches!(
            second.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"),
            idempotent_actix::Claim::InFlight { .. }
        ));
        let waiter = {
            let (second, key) = (Arc::clone(&second), key.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                second.wait_for_change(&key, PATIENCE).await.expect("wait");
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        if completes {
            assert!(first
                .complete(&key, token, tombstone(), Duration::from_secs(60))
                .await
                .expect("complete"));
        } else {
            assert!(first.release(&key, token).await.expect("release"));
        }
        let waited = waiter.await.expect("waiter");
        assert!(
            waited < Duration::from_secs(2),
            "woken {waited:?} after waiting (completes: {completes})"
        );
    }
}

/// A holder whose lease lapsed while nobody claimed the key may still store its result (the
/// handler ran once); a token that released the key can never complete it.
async fn a_lapsed_holder_completes_unless_someone_took_over(store: &dyn Store) {
    let key = conformance::fresh_key("lapsed-unseen");
    let token = acquired(
        store
            .claim(&key, Fingerprint([1; 32]), Duration::from_millis(200))
            .await
            .expect("claim"),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store
        .complete(&key, token, tombstone(), Duration::from_secs(60))
        .await
        .expect("complete"));
    assert!(matches!(
        store.lookup(&key).await.expect("lookup"),
        idempotent_actix::Lookup::Completed(_)
    ));

    let key = conformance::fresh_key("released");
    let token = acquired(
        store
            .claim(&key, Fingerprint([1; 32]), Duration::from_secs(30))
            .await
            .expect("claim"),
    );
    assert!(store.release(&key, token).await.expect("release"));
    assert!(!store
        .complete(&key, token, tombstone(), Duration::from_secs(60))
        .await
        .expect("complete"));
    assert!(matches!(
        store.lookup(&key).await.expect("lookup"),
        idempotent_actix::Lookup::Absent
    ));
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_waiters_on_another_replica_are_woken_by_notification() {
    if server_up("Redis", REDIS_ADDR).await {
        let prefix = format!("{}:", unique("test-idempotency"));
        let replicas = (
            redis_store_with_prefix(REDIS_ADDR, &prefix),
            redis_store_with_prefix(REDIS_ADDR, &prefix),
        );
        a_waiter_on_another_replica_is_woken_by_the_notification(Arc::new(replicas.0), Arc::new(replicas.1)).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiters_on_another_replica_are_woken_by_notification() {
    if server_up("PostgreSQL", POSTGRES_ADDR).await {
        let replicas = (postgres_store(POSTGRES_ADDR).await, postgres_store(POSTGRES_ADDR).await);
        a_waiter_on_another_replica_is_woken_by_the_notification(Arc::new(replicas.0), Arc::new(replicas.1)).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_lapsed_holder_completes_unless_someone_took_over() {
    if server_up("Redis", REDIS_ADDR).await {
        a_lapsed_holder_completes_unless_someone_took_over(&redis_store(REDIS_ADDR)).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_lapsed_holder_completes_unless_someone_took_over() {
    if server_up("PostgreSQL", POSTGRES_ADDR).await {
        a_lapsed_holder_completes_unless_someone_took_over(&postgres_store(POSTGRES_ADDR).await).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Corrupt records

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_corrupt_redis_record_is_a_store_error_not_a_panic() {
    if !server_up("Redis", REDIS_ADDR).await {
        return;
    }
    let store = redis_store(REDIS_ADDR);
    let key = conformance::fresh_key("corrupt");
    let name = store.record_key(&key);
    redis_command(&[b"HSET", name.as_bytes(), b"r", b"\x01not a record"]).await;
    redis_command(&[b"PEXPIRE", name.as_bytes(), b"60000"]).await;
    assert!(matches!(store.lookup(&key).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(
        store.claim(&key, Fingerprint([1; 32]), Duration::from_secs(1)).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_corrupt_postgres_record_is_a_store_error_not_a_panic() {
    if !server_up("PostgreSQL", POSTGRES_ADDR).await {
        return;
    }
    let store = postgres_store(POSTGRES_ADDR).await;
    let key = conformance::fresh_key("corrupt");
    psql(&format!(
        "INSERT INTO idempotency_records (id, token, fingerprint, state, expires_at, record) \
         VALUES ('{}', nextval('idempotency_fencing_tokens'), decode(repeat('01', 32), 'hex'), 'completed', \
                 now() + interval '1 minute', '\\x01ff')",
        store.record_id(&key)
    ));
    assert!(matches!(store.lookup(&key).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(
        store.claim(&key, Fingerprint([1; 32]), Duration::from_secs(1)).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// Sends one command to the Redis server under test (RESP) and returns its raw reply.
#[cfg(feature = "redis")]
async fn redis_command(args: &[&[u8]]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    let mut stream = TcpStream::connect(REDIS_ADDR).await.expect("Redis");
    stream.write_all(&request).await.expect("send");
    let mut reply = vec![0; 512];
    let read = stream.read(&mut reply).await.expect("reply");
    reply.truncate(read);
    assert!(
        !reply.starts_with(b"-"),
        "Redis refused the command: {}",
        String::from_utf8_lossy(&reply)
    );
    reply
}

/// Runs one SQL statement on the PostgreSQL server under test and returns its unaligned output.
#[cfg(feature = "postgres")]
fn psql(sql: &str) -> String {
    let output = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Through HTTP: store down, recovery, round trips

#[post("/orders")]
#[idempotent]
async fn create_order(runs: web::Data<AtomicU64>) -> HttpResponse {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Created().body(format!("order {run}"))
}

/// A server with one annotated route on `store`, on a port of its own.
struct TestApp {
    base: String,
    runs: web::Data<AtomicU64>,
    client: awc::Client,
    server: actix_web::dev::ServerHandle,
}

impl TestApp {
    async fn start(store: Arc<dyn Store>, fail_open: bool) -> Self {
        let runs = web::Data::new(AtomicU64::new(0));
        let idempotency = Idempotency::builder()
            .shared_store(store)
            .namespace(format!("{}:", unique("test")))
            .fail_open(fail_open)
            .store_timeout(Duration::from_secs(3))
            .build();
        let app_runs = runs.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(idempotency.clone())
                .app_data(app_runs.clone())
                .service(create_order)
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind the test app");
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        Self {
            base,
            runs,
            client,
            server: handle,
        }
    }

    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    async fn post_order(&self, key: &str) -> (StatusCode, Option<String>, String) {
        let mut response = self
            .client
            .post(format!("{}/orders", self.base))
            .insert_header(("Idempotency-Key", key))
            .send()
            .await
            .expect("the test app answers");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.body().await.expect("a body");
        (status, retry_after, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

async fn a_down_store_fails_closed(store: Arc<dyn Store>) {
    let app = TestApp::start(store, false).await;
    let (status, retry_after, body) = app.post_order("k-1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(retry_after.is_some(), "a 503 carries Retry-After");
    assert!(body.contains("\"code\":\"idempotency_store_unavailable\""), "{body}");
    assert_eq!(app.runs(), 0, "the handler does not run");
}

async fn a_down_store_fails_open_when_configured(store: Arc<dyn Store>) {
    let app = TestApp::start(store, true).await;
    let (status, _, body) = app.post_order("k-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.runs(), 1, "the handler runs unprotected");
}

/// Requests succeed, fail closed while the store's server is cut off, and succeed again once
/// it is back: the app is never restarted.
async fn the_app_recovers_when_the_store_comes_back(store: impl FnOnce(&str) -> Arc<dyn Store>, server: &str) {
    let mut proxy = Proxy::start(server).await;
    let app = TestApp::start(store(&proxy.addr()), false).await;
    let (status, _, body) = app.post_order("before").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    proxy.cut();
    let (status, _, body) = app.post_order("during").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("idempotency_store_unavailable"), "{body}");

    proxy.resume().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = app.post_order("after").await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still failing after the server came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = app.post_order("before").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::CREATED, "order 1"),
        "the record stored before the outage is replayed"
    );
    assert_eq!(app.runs(), 2, "one run before the outage, one after");
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_down_fails_closed_with_503_and_retry_after() {
    a_down_store_fails_closed(Arc::new(redis_store(CLOSED_ADDR))).await;
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_down_runs_the_handler_when_failing_open() {
    a_down_store_fails_open_when_configured(Arc::new(redis_store(CLOSED_ADDR))).await;
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_store_recovers_when_the_server_comes_back() {
    if server_up("Redis", REDIS_ADDR).await {
        the_app_recovers_when_the_store_comes_back(|addr| Arc::new(redis_store(addr)), REDIS_ADDR).await;
    }
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_down_fails_closed_with_503_and_retry_after() {
    let store = idempotent_actix::store::PostgresStore::new(&postgres_url(CLOSED_ADDR)).expect("URL");
    a_down_store_fails_closed(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_down_runs_the_handler_when_failing_open() {
    let store = idempotent_actix::store::PostgresStore::new(&postgres_url(CLOSED_ADDR)).expect("URL");
    a_down_store_fails_open_when_configured(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_store_recovers_when_the_server_comes_back() {
    if !server_up("PostgreSQL", POSTGRES_ADDR).await {
        return;
    }
    postgres_store(POSTGRES_ADDR).await;
    let store = |addr: &str| -> Arc<dyn Store> {
        Arc::new(idempotent_actix::store::PostgresStore::new(&postgres_url(addr)).expect("URL"))
    };
    the_app_recovers_when_the_store_comes_back(store, POSTGRES_ADDR).await;
}

/// Long enough for a background connection to open on a busy machine.
const BACKGROUND_SETTLES: Duration = Duration::from_millis(300);

/// Network round trips of a first execution and of replays, counted at the socket: a round
/// trip is the client sending and the server then answering.
async fn round_trips_per_request<S: ExpiringStore>(store: impl Fn(&str) -> S, server: &str) {
    let proxy = Proxy::start(server).await;

    let app = TestApp::start(Arc::new(store(&proxy.addr())), false).await;
    // Warm up: connect, load scripts, prepare statements, and let the notification connection
    // that the first claim opens in the background finish its handshake (on a busy machine it
    // could otherwise land inside a measurement).
    app.post_order("warm-up").await;
    app.post_order("warm-up").await;
    tokio::time::sleep(BACKGROUND_SETTLES).await;
    let first = proxy.round_trips_during(app.post_order("k")).await;
    let replay = proxy.round_trips_during(app.post_order("k")).await;

    let cached = TestApp::start(Arc::new(CachedStore::new(store(&proxy.addr()), 1 << 20)), false).await;
    cached.post_order("warm-up").await;
    cached.post_order("warm-up").await;
    tokio::time::sleep(BACKGROUND_SETTLES).await;
    let cached_first = proxy.round_trips_during(cached.post_order("k")).await;
    let cached_replay = proxy.round_trips_during(cached.post_order("k")).await;

    println!("round trips on {server}: first execution {first}, replay {replay}; behind the local cache: first execution {cached_first}, replay {cached_replay}");
    assert_eq!((first, replay), (2, 1), "claim + complete, then one read");
    assert_eq!(
        (cached_first, cached_replay),
        (2, 0),
        "a cached replay costs no round trip"
    );
}

#[cfg(feature = "redis")]
#[actix_web::test]
async fn redis_costs_two_round_trips_per_first_execution_and_one_per_replay() {
    if server_up("Redis", REDIS_ADDR).await {
        round_trips_per_request(redis_store, REDIS_ADDR).await;
    }
}

#[cfg(feature = "postgres")]
#[actix_web::test]
async fn postgres_costs_two_round_trips_per_first_execution_and_one_per_replay() {
    if !server_up("PostgreSQL", POSTGRES_ADDR).await {
        return;
    }
    postgres_store(POSTGRES_ADDR).await;
    let store = |addr: &str| {
        idempotent_actix::store::PostgresStore::builder(&postgres_url(addr))
            .pool_size(1)
            .build()
            .expect("URL")
    };
    round_trips_per_request(store, POSTGRES_ADDR).await;
}
