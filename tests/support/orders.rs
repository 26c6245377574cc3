//! Starting the `orders` example as a real process, for the tests that drive its contract.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `target/<profile>/examples/orders`, next to this test's own `deps/` directory, brought up to
/// date once per test run with the same features the test was built with (so the build that
/// `cargo test` already did is reused, not redone).
pub fn orders_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
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
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--example", "orders"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the orders example failed");
        profile_dir.join("examples").join("orders")
    })
}

/// One `orders` process, killed (SIGKILL) when dropped.
pub struct Orders {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from the process's `listening on` line.
    pub base: String,
}

impl Orders {
    /// Starts `orders --bind 127.0.0.1:0 <args>` and waits for its `listening on http://ADDR`.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(orders_binary())
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
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("orders did not start: {}", errors.join().unwrap_or_default());
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
