//! The servers and programs the fault, security and soak tests need, and the rule when one is
//! missing: under `CI=true` the test fails (`.ci/run` provides them); elsewhere it prints a skip
//! notice and passes.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Command, Stdio};

pub const REDIS_ADDR: &str = "127.0.0.1:6379";
pub const POSTGRES_ADDR: &str = "127.0.0.1:5432";

pub fn redis_url(addr: &str) -> String {
    format!("redis://{addr}/")
}

pub fn postgres_url(addr: &str) -> String {
    let (host, port) = addr.split_once(':').expect("host:port");
    format!("postgres://postgres@{host}:{port}/postgres")
}

fn missing(what: &str, why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{what} is missing ({why}); CI=true requires it (.ci/run provides it)");
    }
    eprintln!("skipped: {what} is missing ({why})");
    false
}

/// Whether `name` answers at `addr`.
pub fn server_up(name: &str, addr: &str) -> bool {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => true,
        Err(error) => missing(name, &format!("nothing answers at {addr}: {error}")),
    }
}

/// Whether `program` can be run (it answers `--version`).
pub fn program_available(program: &str) -> bool {
    let status = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => true,
        Ok(status) => missing(program, &format!("`{program} --version` exited with {status}")),
        Err(error) => missing(program, &error.to_string()),
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

pub fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4())
}
