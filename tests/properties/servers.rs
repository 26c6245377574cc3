//! The stores under test, the servers they need, and the proptest configuration.

use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

#[cfg(feature = "redis")]
pub const REDIS_ADDR: &str = "127.0.0.1:6379";
#[cfg(feature = "postgres")]
pub const POSTGRES_ADDR: &str = "127.0.0.1:5432";

/// Whether `name` answers at `addr`. Under `CI=true` a missing server fails the test;
/// elsewhere the test is skipped with a notice.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub fn server_up(name: &str, addr: &str) -> bool {
    match std::net::TcpStream::connect(addr) {
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

/// A Redis store whose keys no other run uses. Call it inside the runtime that uses it.
#[cfg(feature = "redis")]
pub fn redis_store() -> idempotent_actix::store::RedisStore {
    idempotent_actix::store::RedisStore::builder(&format!("redis://{REDIS_ADDR}/"))
        .key_prefix(format!("properties-{}:", uuid::Uuid::new_v4()))
        .build()
        .expect("a valid Redis URL")
}

/// A migrated PostgreSQL store. Call it inside the runtime that uses it.
#[cfg(feature = "postgres")]
pub async fn postgres_store() -> idempotent_actix::store::PostgresStore {
    let url = format!("postgres://postgres@{POSTGRES_ADDR}/postgres");
    let store = idempotent_actix::store::PostgresStore::new(&url).expect("a valid PostgreSQL URL");
    store.migrate().await.expect("migration");
    store
}

/// A runner for `cases` cases (or `PROPTEST_CASES`) that replays, then records, the failing
/// cases in `regressions` (a path from the package root).
pub fn runner(cases: u32, regressions: &'static str) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // Cases sleep and talk to servers: bound the search for a smaller failing input.
        max_shrink_time: 60_000,
        ..Config::default()
    })
}
