//! The stores in their managed set-ups, against real servers (`scripts/ci-services.sh` starts
//! them; `tests/support/managed.rs` lists where they are):
//!
//! - PostgreSQL over TLS (`postgres-tls`): `verify-full`, `verify-ca`, `require`, a wrong CA,
//!   a wrong host name, a plain URL.
//! - Redis over TLS (`redis-tls`): a private CA, a wrong CA.
//! - Redis Cluster (3 masters): the conformance suite, notifications across replicas, and a
//!   storm of duplicates over two replicas.
//! - PgBouncer in transaction mode: unnamed statements, waiters answered without `LISTEN` or
//!   through a direct notification URL, and a storm of duplicates over two replicas.
//! - PostgreSQL `NOTIFY` only when a duplicate waits.
//! - `CachedStore` after Redis lost its data: replicas agree again after the local ttl.
//!
//! A test whose server does not answer prints a skip notice and passes, except under
//! `CI=true`, where it fails.
#![cfg(any(feature = "redis", feature = "postgres"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{post, web, App, HttpResponse, HttpServer};
use idempotent_actix::store::conformance;
use idempotent_actix::{
    idempotent, Claim, Completion, FencingToken, Fingerprint, Idempotency, Record, RecordKey, Store,
};

#[path = "support/managed.rs"]
mod managed;

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4())
}

fn acquired(claim: Claim) -> FencingToken {
    match claim {
        Claim::Acquired(token) => token,
        other => panic!("a free key must be acquired, got {other:?}"),
    }
}

fn tombstone() -> Arc<Record> {
    Arc::new(Record::new(Fingerprint([1; 32]), Completion::Tombstone))
}

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(300);

/// A duplicate claimed on `second` while `first` holds the key is woken by `first`'s
/// completion, and by its release, long before its timeout.
async fn a_waiter_on_another_replica_is_woken(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    for completes in [true, false] {
        let key = conformance::fresh_key("woken");
        a_waiter_is_woken_on(&first, &second, &key, completes).await;
    }
}

/// The same for one `key`: completed if `completes`, else released.
async fn a_waiter_is_woken_on(first: &Arc<dyn Store>, second: &Arc<dyn Store>, key: &RecordKey, completes: bool) {
    let token = acquired(first.claim(key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
    assert!(matches!(
        second.claim(key, Fingerprint([1; 32]), LEASE).await.expect("claim"),
        Claim::InFlight { .. }
    ));
    let waiter = {
        let (second, key) = (Arc::clone(second), key.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            second
                .wait_for_change(&key, Duration::from_secs(20))
                .await
                .expect("wait");
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if completes {
        assert!(first.complete(key, token, tombstone(), TTL).await.expect("complete"));
    } else {
        assert!(first.release(key, token).await.expect("release"));
    }
    let waited = waiter.await.expect("waiter");
    assert!(
        waited < Duration::from_secs(2),
        "woken {waited:?} after waiting (completes: {completes})"
    );
}

// ---------------------------------------------------------------------------------------------
// Two replicas over HTTP, and a storm of duplicates

#[post("/orders")]
#[idempotent]
async fn slow_order(runs: web::Data<AtomicU64>) -> HttpResponse {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    HttpResponse::Created().body(format!("order {run}"))
}

/// A server on `store` (a replica of its own: its own in-process single flight), under
/// `namespace`, counting handler runs in `runs`.
fn start_replica(store: Arc<dyn Store>, namespace: &str, runs: web::Data<AtomicU64>) -> String {
    let idempotency = Idempotency::builder()
        .shared_store(store)
        .namespace(namespace)
        .wait_timeout(Duration::from_secs(30))
        .build();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(idempotency.clone())
            .app_data(runs.clone())
            .service(slow_order)
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind a replica");
    let base = format!("http://{}", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    base
}

/// `duplicates` simultaneous requests with one key, alternating between two replicas: the
/// handler runs once, every request is answered (no hang) with the one order.
async fn a_storm_over_two_replicas_runs_once(stores: [Arc<dyn Store>; 2], duplicates: usize) {
    let runs = web::Data::new(AtomicU64::new(0));
    let namespace = format!("{}:", unique("managed"));
    let [a, b] = stores.map(|store| start_replica(store, &namespace, runs.clone()));
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(duplicates * 2))
        .timeout(Duration::from_secs(60))
        .finish();
    let key = unique("order");
    let started = Instant::now();
    let requests = (0..duplicates).map(|i| {
        let url = format!("{}/orders", if i % 2 == 0 { &a } else { &b });
        let request = client.post(url).insert_header(("Idempotency-Key", key.as_str()));
        async move {
            let mut response = request.send().await.expect("every duplicate is answered");
            let body = response.body().await.expect("a body");
            (response.status(), String::from_utf8_lossy(&body).into_owned())
        }
    });
    let answers = tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(requests))
        .await
        .expect("no duplicate hangs");
    let elapsed = started.elapsed();
    for (status, body) in &answers {
        assert_eq!((*status, body.as_str()), (StatusCode::CREATED, "order 1"));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the handler ran once over both replicas"
    );
    eprintln!("{duplicates} duplicates over two replicas answered in {elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL over TLS

#[cfg(feature = "postgres-tls")]
mod postgres_tls {
    use super::*;
    use idempotent_actix::{PostgresStore, StoreError};

    fn with_options(url: &str, options: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{options}")
    }

    fn available() -> bool {
        managed::available("PostgreSQL with TLS", &[managed::pg_tls_url()], true)
    }

    async fn migrated(url: &str) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::builder(url)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        store.migrate().await?;
        Ok(store)
    }

    fn verify_full_url() -> String {
        with_options(
            &managed::pg_tls_url(),
            &format!("sslmode=verify-full&sslrootcert={}", managed::test_ca()),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_over_verify_full_tls_passes_the_conformance_suite() {
        if available() {
            let store = migrated(&verify_full_url()).await.expect("a verified TLS connection");
            conformance::run_all(Arc::new(store)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_waiters_over_tls_are_woken_by_notification() {
        if available() {
            let first = migrated(&verify_full_url()).await.expect("TLS");
            let second = migrated(&verify_full_url()).await.expect("TLS");
            a_waiter_on_another_replica_is_woken(Arc::new(first), Arc::new(second)).await;
        }
    }

    #[tokio::test]
    async fn postgres_sslmode_require_encrypts_without_a_root_certificate() {
        if available() {
            let store = migrated(&with_options(&managed::pg_tls_url(), "sslmode=require"))
                .await
                .expect("require accepts any certificate");
            let key = conformance::fresh_key("require");
            acquired(store.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
        }
    }

    #[tokio::test]
    async fn postgres_verify_full_rejects_a_certificate_from_an_unknown_ca() {
        if available() {
            let url = with_options(
                &managed::pg_tls_url(),
                &format!("sslmode=verify-full&sslrootcert={}", managed::untrusted_ca()),
            );
            let error = migrated(&url).await.err().expect("an unknown CA is refused");
            assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        }
    }

    /// The certificate names `localhost` and 127.0.0.1; the URL names another host (reached
    /// at 127.0.0.1 through `hostaddr`). `verify-full` refuses it, `verify-ca` (chain only)
    /// accepts it: the host name is what was checked.
    #[tokio::test]
    async fn postgres_verify_full_rejects_a_wrong_host_name() {
        if !available() {
            return;
        }
        let port = managed::address_of(&managed::pg_tls_url())
            .rsplit_once(':')
            .map(|(_, port)| port.to_owned())
            .expect("a port");
        let ca = managed::test_ca();
        let wrong_host = format!("postgres://postgres@wrong-host.invalid:{port}/postgres?hostaddr=127.0.0.1");
        let full = with_options(&wrong_host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        assert!(migrated(&full).await.is_err(), "verify-full must check the host name");
        let chain_only = with_options(&wrong_host, &format!("sslmode=verify-ca&sslrootcert={ca}"));
        migrated(&chain_only).await.expect("verify-ca checks the chain only");
    }

    /// The TLS server refuses unencrypted connections (so the tests above did use TLS), and a
    /// URL without `sslmode` still connects unencrypted to the plain server.
    #[tokio::test]
    async fn a_plain_url_connects_unencrypted_as_before() {
        if !available() || !managed::available("PostgreSQL", &[managed::postgres_url()], false) {
            return;
        }
        assert!(
            migrated(&managed::pg_tls_url()).await.is_err(),
            "the TLS-only server refuses a plain connection"
        );
        let store = migrated(&managed::postgres_url()).await.expect("a plain connection");
        let key = conformance::fresh_key("plain");
        acquired(store.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
    }
}

// ---------------------------------------------------------------------------------------------
// Redis over TLS

#[cfg(feature = "redis-tls")]
mod redis_tls {
    use super::*;
    use idempotent_actix::store::RedisStore;

    fn available() -> bool {
        managed::available("Redis with TLS", &[managed::redis_tls_url()], true)
    }

    fn store(ca: &str) -> RedisStore {
        RedisStore::builder(&managed::redis_tls_url())
            .key_prefix(format!("{}:", unique("tls")))
            .tls_ca_file(ca)
            .build()
            .expect("a valid URL and CA file")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_over_tls_with_a_private_ca_passes_the_conformance_suite() {
        if available() {
            let store = store(&managed::test_ca());
            store.ping().await.expect("a verified TLS connection");
            conformance::run_all(Arc::new(store)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_waiters_over_tls_are_woken_by_notification() {
        if available() {
            let prefix = format!("{}:", unique("tls"));
            let replica = || {
                RedisStore::builder(&managed::redis_tls_url())
                    .key_prefix(prefix.as_str())
                    .tls_ca_file(managed::test_ca())
                    .build()
                    .expect("valid")
            };
            a_waiter_on_another_replica_is_woken(Arc::new(replica()), Arc::new(replica())).await;
        }
    }

    #[tokio::test]
    async fn redis_over_tls_rejects_a_certificate_from_an_unknown_ca() {
        if available() {
            assert!(
                store(&managed::untrusted_ca()).ping().await.is_err(),
                "an unknown CA is refused"
            );
        }
    }

    #[test]
    fn a_missing_ca_file_is_reported_when_building() {
        let built = RedisStore::builder("rediss://localhost:6380/")
            .tls_ca_file("/nonexistent/ca.pem")
            .build();
        assert!(built.is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The system's roots: `SSL_CERT_FILE`

#[cfg(all(feature = "redis-tls", feature = "postgres-tls"))]
mod system_roots {
    use super::*;
    use idempotent_actix::{PostgresStore, RedisStore};

    /// Without a CA of their own, both stores trust the system's roots, which include the
    /// file `SSL_CERT_FILE` names (the usual way a container ships a private CA). Runs the
    /// check below in a child process, so the variable reaches no other test.
    #[test]
    fn both_stores_trust_the_ca_in_ssl_cert_file() {
        if !managed::available(
            "Redis and PostgreSQL with TLS",
            &[managed::redis_tls_url(), managed::pg_tls_url()],
            true,
        ) {
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                "--exact",
                "system_roots::child_connects_with_the_system_roots",
                "--ignored",
            ])
            .env("SSL_CERT_FILE", managed::test_ca())
            .output()
            .expect("the child runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("1 passed"), "the child ran the check: {stdout}");
    }

    #[tokio::test]
    #[ignore = "run by both_stores_trust_the_ca_in_ssl_cert_file, with SSL_CERT_FILE set"]
    async fn child_connects_with_the_system_roots() {
        assert!(
            std::env::var_os("SSL_CERT_FILE").is_some(),
            "run with SSL_CERT_FILE set"
        );
        let redis = RedisStore::new(&managed::redis_tls_url()).expect("URL");
        redis.ping().await.expect("Redis: the CA in SSL_CERT_FILE is trusted");
        let postgres = PostgresStore::new(&format!("{}?sslmode=verify-full", managed::pg_tls_url())).expect("URL");
        postgres
            .migrate()
            .await
            .expect("PostgreSQL: the CA in SSL_CERT_FILE is trusted");
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster

#[cfg(feature = "redis")]
mod redis_cluster {
    use super::*;
    use idempotent_actix::store::RedisStore;

    fn available() -> bool {
        managed::available("Redis Cluster", &managed::redis_cluster_urls(), false)
    }

    fn replica(prefix: &str) -> RedisStore {
        RedisStore::cluster_builder(managed::redis_cluster_urls())
            .key_prefix(prefix)
            .build()
            .expect("valid node URLs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_passes_the_conformance_suite() {
        if available() {
            let store = replica(&format!("{}:", unique("cluster")));
            store.ping().await.expect("the cluster answers");
            conformance::run_all(Arc::new(store)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_waiters_on_another_replica_are_woken_by_notification() {
        if available() {
            let prefix = format!("{}:", unique("cluster"));
            a_waiter_on_another_replica_is_woken(Arc::new(replica(&prefix)), Arc::new(replica(&prefix))).await;
        }
    }

    /// The listener subscribes on the first node listed; a record whose slot another master
    /// owns is completed (and published) there, and the waiter still hears of it: `PUBLISH`
    /// crosses the cluster bus.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster_completions_on_other_masters_reach_the_listener() {
        if !available() {
            return;
        }
        let prefix = format!("{}:", unique("cluster"));
        let (first, second): (Arc<dyn Store>, Arc<dyn Store>) =
            (Arc::new(replica(&prefix)), Arc::new(replica(&prefix)));
        let naming = replica(&prefix);
        let mut elsewhere = 0;
        for _ in 0..200 {
            if elsewhere == 4 {
                return;
            }
            let key = conformance::fresh_key("elsewhere");
            if !owned_by_first_node(&naming.record_key(&key)) {
                a_waiter_is_woken_on(&first, &second, &key, elsewhere % 2 == 0).await;
                elsewhere += 1;
            }
        }
        panic!("200 fresh keys, and the first node owned all but {elsewhere}");
    }

    /// Whether the first listed node owns `key`'s slot (otherwise it answers `MOVED`).
    fn owned_by_first_node(key: &str) -> bool {
        let address = managed::address_of(&managed::redis_cluster_urls()[0]);
        let (host, port) = address.split_once(':').expect("host:port");
        let output = std::process::Command::new("redis-cli")
            .args(["-h", host, "-p", port, "EXISTS", key])
            .output()
            .expect("redis-cli runs");
        !String::from_utf8_lossy(&output.stdout).contains("MOVED")
    }

    #[actix_web::test]
    async fn redis_cluster_duplicates_over_two_replicas_run_once() {
        if available() {
            let prefix = format!("{}:", unique("cluster"));
            let stores: [Arc<dyn Store>; 2] = [Arc::new(replica(&prefix)), Arc::new(replica(&prefix))];
            a_storm_over_two_replicas_runs_once(stores, 200).await;
        }
    }

    #[test]
    fn a_cluster_needs_at_least_one_node() {
        assert!(RedisStore::cluster(Vec::<String>::new()).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// PgBouncer in transaction mode, and NOTIFY only when someone waits

#[cfg(feature = "postgres")]
mod pgbouncer {
    use super::*;
    use futures_util::StreamExt;
    use idempotent_actix::store::PostgresStore;

    fn available() -> bool {
        managed::available(
            "PgBouncer (transaction pooling)",
            &[managed::pgbouncer_url(), managed::postgres_url()],
            false,
        )
    }

    /// A store whose every statement goes through PgBouncer; notifications, if `direct`, over
    /// a direct connection.
    async fn through_pgbouncer(direct: bool) -> PostgresStore {
        let mut builder = PostgresStore::builder(&managed::pgbouncer_url()).transaction_pooler(true);
        if direct {
            builder = builder.notification_url(managed::postgres_url());
        }
        let store = builder.build().expect("valid URLs");
        store.migrate().await.expect("the migration runs through PgBouncer");
        store
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgbouncer_transaction_mode_passes_the_conformance_suite() {
        if available() {
            conformance::run_all(Arc::new(through_pgbouncer(false).await)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgbouncer_with_a_direct_notification_url_passes_the_conformance_suite() {
        if available() {
            conformance::run_all(Arc::new(through_pgbouncer(true).await)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pgbouncer_waiters_are_woken_through_the_direct_notification_url() {
        if available() {
            let (first, second) = (through_pgbouncer(true).await, through_pgbouncer(true).await);
            a_waiter_on_another_replica_is_woken(Arc::new(first), Arc::new(second)).await;
        }
    }

    /// Two replicas through PgBouncer, listening directly if `direct`.
    async fn a_storm_through_pgbouncer_runs_once(direct: bool) {
        if available() {
            let stores: [Arc<dyn Store>; 2] = [
                Arc::new(through_pgbouncer(direct).await),
                Arc::new(through_pgbouncer(direct).await),
            ];
            a_storm_over_two_replicas_runs_once(stores, 200).await;
        }
    }

    /// Without any `LISTEN`, every duplicate on the other replica is still answered, by the
    /// engine's fallback poll.
    #[actix_web::test]
    async fn pgbouncer_duplicates_over_two_replicas_run_once_without_listen() {
        a_storm_through_pgbouncer_runs_once(false).await;
    }

    #[actix_web::test]
    async fn pgbouncer_duplicates_over_two_replicas_run_once_with_direct_notifications() {
        a_storm_through_pgbouncer_runs_once(true).await;
    }

    /// The payloads of every `idempotency_changes` notification from now on.
    async fn listening() -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (client, mut connection) = tokio_postgres::connect(&managed::postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("a direct connection");
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let listen = client.batch_execute("LISTEN idempotency_changes");
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let driven = async move {
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(notification) = message {
                    let _ = sender.send(notification.payload().to_owned());
                }
            }
        };
        let mut driven = Box::pin(driven);
        tokio::select! {
            listened = listen => listened.expect("LISTEN"),
            () = &mut driven => panic!("the listening connection closed"),
        }
        tokio::spawn(async move {
            let _client = client;
            driven.await;
        });
        receiver
    }

    /// A first execution nobody waits for sends no `NOTIFY`; a completion or release that a
    /// duplicate on another replica waits for sends one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_notifies_only_when_a_duplicate_waits() {
        if !managed::available("PostgreSQL", &[managed::postgres_url()], false) {
            return;
        }
        let mut received = listening().await;
        let (first, second) = (
            PostgresStore::new(&managed::postgres_url()).expect("URL"),
            PostgresStore::new(&managed::postgres_url()).expect("URL"),
        );
        first.migrate().await.expect("migration");
        let mut unwatched = Vec::new();
        let mut watched = Vec::new();
        for completes in [true, false] {
            let alone = conformance::fresh_key("alone");
            let token = acquired(first.claim(&alone, Fingerprint([1; 32]), LEASE).await.expect("claim"));
            finish(&first, &alone, token, completes).await;
            unwatched.push(first.record_id(&alone));

            let awaited = conformance::fresh_key("awaited");
            let token = acquired(first.claim(&awaited, Fingerprint([1; 32]), LEASE).await.expect("claim"));
            assert!(matches!(
                second
                    .claim(&awaited, Fingerprint([1; 32]), LEASE)
                    .await
                    .expect("claim"),
                Claim::InFlight { .. }
            ));
            finish(&first, &awaited, token, completes).await;
            watched.push(first.record_id(&awaited));
        }
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !watched.iter().all(|id| seen.contains(id)) {
            match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(Some(payload)) => seen.push(payload),
                _ => panic!("the watched completion and release were not announced: {seen:?}"),
            }
        }
        // Anything sent for the unwatched keys was sent before the watched ones were.
        while let Ok(payload) = received.try_recv() {
            seen.push(payload);
        }
        for id in &unwatched {
            assert!(!seen.contains(id), "a first execution nobody waited for sent NOTIFY");
        }
    }

    /// Regression: `ALTER TABLE .. ADD COLUMN IF NOT EXISTS` in the migration took an
    /// exclusive lock even when the column existed, and deadlocked with claims (which read,
    /// then write the table) running meanwhile. Replicas migrate while others serve.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_migrations_while_requests_run_do_not_deadlock() {
        if !managed::available("PostgreSQL", &[managed::postgres_url()], false) {
            return;
        }
        let store = PostgresStore::new(&managed::postgres_url()).expect("URL");
        store.migrate().await.expect("migration");
        let deadline = Instant::now() + Duration::from_secs(3);
        let traffic = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let key = conformance::fresh_key("during-migration");
                    let token = acquired(store.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
                    assert!(store.complete(&key, token, tombstone(), TTL).await.expect("complete"));
                }
            })
        });
        let traffic = futures_util::future::join_all(traffic);
        let migrations = async {
            while Instant::now() < deadline {
                let replica = PostgresStore::new(&managed::postgres_url()).expect("URL");
                replica.migrate().await.expect("a migration while requests run");
            }
        };
        let (finished, ()) = futures_util::join!(traffic, migrations);
        for task in finished {
            task.expect("requests during the migrations succeed");
        }
    }

    async fn finish(store: &PostgresStore, key: &RecordKey, token: FencingToken, completes: bool) {
        if completes {
            assert!(store.complete(key, token, tombstone(), TTL).await.expect("complete"));
        } else {
            assert!(store.release(key, token).await.expect("release"));
        }
    }

    /// `scripts/bench-postgres-notify.sh` runs this for its comparison with pgbench: first
    /// executions (claim, then complete; nobody waits) from `BENCH_CLIENTS` concurrent
    /// callers (default 16) for `BENCH_SECONDS` (default 10).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a throughput measurement; run by scripts/bench-postgres-notify.sh"]
    async fn postgres_first_execution_throughput() {
        let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let clients = env("BENCH_CLIENTS", 16) as usize;
        let seconds = env("BENCH_SECONDS", 10);
        let store = PostgresStore::builder(&managed::postgres_url())
            .pool_size(clients)
            .build()
            .expect("URL");
        store.migrate().await.expect("migration");
        let record = Arc::new(Record::new(Fingerprint([7; 32]), Completion::Tombstone));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let workers = (0..clients).map(|_| {
            let (store, record) = (store.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let key = conformance::fresh_key("bench");
                    let token = acquired(store.claim(&key, Fingerprint([7; 32]), LEASE).await.expect("claim"));
                    assert!(store
                        .complete(&key, token, Arc::clone(&record), TTL)
                        .await
                        .expect("complete"));
                    done += 1;
                }
                done
            })
        });
        let mut total = 0;
        for worker in futures_util::future::join_all(workers).await {
            total += worker.expect("worker");
        }
        println!("store_first_executions_per_second={:.0}", total as f64 / seconds as f64);
    }
}

// ---------------------------------------------------------------------------------------------
// CachedStore after Redis lost its data

#[cfg(feature = "redis")]
mod data_loss {
    use super::*;
    use idempotent_actix::{CachedStore, Lookup, RedisStore};

    fn response(body: &'static str) -> Arc<Record> {
        use actix_web::http::header::{HeaderName, HeaderValue};
        Arc::new(Record::new(
            Fingerprint([1; 32]),
            Completion::Response(idempotent_actix::StoredResponse::new(
                StatusCode::CREATED,
                vec![(
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("text/plain"),
                )],
                actix_web::web::Bytes::from_static(body.as_bytes()),
            )),
        ))
    }

    #[track_caller]
    fn body_of(lookup: Lookup) -> Vec<u8> {
        match lookup {
            Lookup::Completed(record) => match &record.completion {
                Completion::Response(response) => response.body.to_vec(),
                other => panic!("a stored response, got {other:?}"),
            },
            other => panic!("a completed record, got {other:?}"),
        }
    }

    /// Replica A stores response 1 and keeps a local copy; Redis loses the record (as a restart
    /// without persistence loses it); a retry on replica B runs again and stores response 2. Right after the loss the replicas
    /// disagree; once A's local ttl (2 s here, far below the record's 5 min) has passed, A asks
    /// Redis again and both replay response 2.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_redis_loses_its_data_replicas_agree_once_the_local_ttl_passes() {
        let url = managed::redis_url();
        if !managed::available("Redis", std::slice::from_ref(&url), false) {
            return;
        }
        const LOCAL_TTL: Duration = Duration::from_secs(2);
        let prefix = format!("{}:", unique("loss"));
        let replica = || {
            let store = RedisStore::builder(&url)
                .key_prefix(prefix.as_str())
                .build()
                .expect("URL");
            CachedStore::new(store, 1 << 20).local_ttl(LOCAL_TTL)
        };
        let (a, b) = (replica(), replica());
        let key = conformance::fresh_key("lost");

        let token = acquired(a.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
        let stored_at = Instant::now();
        assert!(a.complete(&key, token, response("first"), TTL).await.expect("complete"));
        lose(&url, &a.inner().record_key(&key));
        let token = acquired(b.claim(&key, Fingerprint([1; 32]), LEASE).await.expect("claim"));
        assert!(b
            .complete(&key, token, response("second"), TTL)
            .await
            .expect("complete"));

        assert_eq!(
            body_of(a.lookup(&key).await.expect("lookup")),
            b"first",
            "A still has its copy"
        );
        assert_eq!(body_of(b.lookup(&key).await.expect("lookup")), b"second");
        tokio::time::sleep(
            (stored_at + LOCAL_TTL + Duration::from_millis(100)).saturating_duration_since(Instant::now()),
        )
        .await;
        assert_eq!(
            body_of(a.lookup(&key).await.expect("lookup")),
            b"second",
            "after the local ttl, A asks Redis again"
        );
    }

    /// Deletes the record's keys (its hash, and its fencing counter if any) on the real
    /// server: what a restart without persistence does to them. Not `FLUSHALL` or `FLUSHDB`: the server is
    /// shared, also by other runs of this very test, whose records must survive.
    fn lose(url: &str, record: &str) {
        let address = managed::address_of(url);
        let (host, port) = address.split_once(':').expect("host:port");
        let fence = format!("{record}:fence");
        let output = std::process::Command::new("redis-cli")
            .args(["-h", host, "-p", port, "DEL", record, &fence])
            .output()
            .expect("redis-cli runs");
        // A completed record has no fencing counter left: one key deleted.
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "1",
            "the record existed"
        );
    }
}
