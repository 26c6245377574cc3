//! Where the managed-store servers of `scripts/ci-services.sh` are, and the rule when one is
//! missing: under `CI=true` the test fails; elsewhere it prints a skip notice and passes.
//!
//! | variable | default |
//! |---|---|
//! | `PG_TLS_URL` | `postgres://postgres@localhost:5433/postgres` (TLS only) |
//! | `REDIS_TLS_URL` | `rediss://localhost:6380/` |
//! | `REDIS_CLUSTER_URLS` | `redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003` |
//! | `PGBOUNCER_URL` | `postgres://postgres@127.0.0.1:6432/postgres` (transaction pooling) |
//! | `POSTGRES_URL` | `postgres://postgres@127.0.0.1:5432/postgres` |
//! | `REDIS_URL` | `redis://127.0.0.1:6379/` |
//! | `IDEMPOTENT_CI_TLS_DIR` | `/tmp/idempotent-ci-tls` (`ca.pem`, `other-ca.pem`) |
// Each test uses the part it needs, depending on the features.
#![allow(dead_code)]

use std::path::PathBuf;

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn pg_tls_url() -> String {
    var("PG_TLS_URL", "postgres://postgres@localhost:5433/postgres")
}

pub fn redis_tls_url() -> String {
    var("REDIS_TLS_URL", "rediss://localhost:6380/")
}

pub fn redis_cluster_urls() -> Vec<String> {
    var(
        "REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003",
    )
    .split(',')
    .map(str::to_owned)
    .collect()
}

pub fn pgbouncer_url() -> String {
    var("PGBOUNCER_URL", "postgres://postgres@127.0.0.1:6432/postgres")
}

pub fn postgres_url() -> String {
    var("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
}

pub fn redis_url() -> String {
    var("REDIS_URL", "redis://127.0.0.1:6379/")
}

fn tls_dir() -> PathBuf {
    PathBuf::from(var("IDEMPOTENT_CI_TLS_DIR", "/tmp/idempotent-ci-tls"))
}

/// The CA that signed the test servers' certificate.
pub fn test_ca() -> String {
    tls_dir().join("ca.pem").display().to_string()
}

/// A CA that signed nothing the servers present.
pub fn untrusted_ca() -> String {
    tls_dir().join("other-ca.pem").display().to_string()
}

/// `host:port` of a URL (`scheme://[user@]host:port/...`).
pub fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest).to_owned()
}

/// Whether `name` answers at every URL (and the CA files exist when `needs_ca`). Under
/// `CI=true` a missing server fails the test; elsewhere the test is skipped with a notice.
pub fn available(name: &str, urls: &[String], needs_ca: bool) -> bool {
    let mut problem = None;
    if needs_ca && !tls_dir().join("ca.pem").is_file() {
        problem = Some(format!("no test CA at {}", test_ca()));
    }
    for url in urls {
        let address = address_of(url);
        if let Err(error) = std::net::TcpStream::connect(&address) {
            problem.get_or_insert(format!("nothing answers at {address}: {error}"));
        }
    }
    let Some(problem) = problem else { return true };
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{name} is missing ({problem}); CI=true requires it (scripts/ci-services.sh starts it)");
    }
    eprintln!("skipped: {name} is missing ({problem}); run scripts/ci-services.sh");
    false
}
