//! Starting the `orders` example (or another example server) as a real process, for the tests
//! that drive its contract.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/orders`, built as [`example_binary`] builds it.
pub fn orders_binary() -> PathBuf {
    example_binary("orders")
}

/// `target/<profile>/examples/<name>`, next to this test's own `deps/` directory, brought up to
/// date once per test run with the same features the test was built with (so the build that
/// `cargo test` already did is reused, not redone).
pub fn example_binary(name: &'static str) -> PathBuf {
    static BINARIES: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let mut built = BINARIES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    built.entry(name).or_insert_with(|| build_example(name)).clone()
}

fn build_example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let features: Vec<&str> = [
        ("redis", cfg!(feature = "redis")),
        ("postgres", cfg!(feature = "postgres")),
        ("client", cfg!(feature = "client")),
    ]
    .into_iter()
    .filter_map(|(feature, on)| on.then_some(feature))
    .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building the {name} example failed");
    profile_dir.join("examples").join(name)
}

/// One `orders` process (or another example server's), killed (SIGKILL) when dropped.
pub struct Orders {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from the process's `listening on` line.
    pub base: String,
    /// The lines the process printed after `listening on`.
    lines: Receiver<String>,
}

impl Orders {
    /// Starts `orders --bind 127.0.0.1:0 <args>` and waits for its `listening on http://ADDR`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_example("orders", args)
    }

    /// Starts the example `name` (a server that prints `listening on http://ADDR` first) with
    /// `--bind 127.0.0.1:0 <args>`, and waits for that line.
    pub fn start_example(name: &'static str, args: &[&str]) -> Self {
        let mut child = Command::new(example_binary(name))
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("orders starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (lines, first_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading to the end, so the process never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("orders: {line}");
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = first_lines.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        if let Ok(line) = first {
            let base = line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("the first line must be `listening on http://ADDR`, got {line:?}"));
            assert!(base.starts_with("http://127.0.0.1:"), "unexpected address {base}");
            return Self {
                child,
                base: base.trim().to_owned(),
                lines: first_lines,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("orders did not start: {}", errors.join().unwrap_or_default());
    }

    /// Waits up to `timeout` for a line the process prints that contains `text`, and returns it.
    /// Asynchronously: the test's own requests to the process go on meanwhile.
    pub async fn wait_for_line(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(TryRecvError::Empty) => panic!("no line with {text:?} within {timeout:?}"),
                Err(TryRecvError::Disconnected) => panic!("the process ended before printing {text:?}"),
            }
        }
    }

    /// The URL of `path` on this process.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: the process dies mid-request, without releasing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Orders {
    fn drop(&mut self) {
        self.kill();
    }
}
