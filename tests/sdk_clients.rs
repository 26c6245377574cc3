//! The official client SDKs of the APIs two recipes follow, run unchanged against them through
//! real HTTP: Stripe's Python SDK (`stripe==16.1.0`) against `stripe_compatible`, and PacSpace's
//! (`pacspace-sdk==0.7.0`) against `agent_safe_writes`. Each test starts the recipe's app on a
//! bound socket behind a TCP proxy that can drop answers, runs a script of `tests/python/` that
//! prints what the SDK returned or raised, and checks it with the handler's execution count.
//!
//! The SDKs come from `tests/python/requirements.txt` (`.ci/run` installs them). Without
//! `python3` or an SDK, each test is skipped with the reason printed, except under `CI=true`,
//! where it fails.

#[path = "http/support.rs"]
mod support;

#[path = "support/proxy.rs"]
mod proxy;

#[path = "support/faulty_store.rs"]
mod faulty_store;

#[allow(dead_code)]
#[path = "../examples/recipes/stripe_compatible.rs"]
mod stripe_compatible;

#[allow(dead_code)]
#[path = "../examples/recipes/agent_safe_writes.rs"]
mod agent_safe_writes;

use std::process::Command;
use std::sync::OnceLock;

use actix_web::web;
use serde_json::Value;

use crate::proxy::Proxy;
use crate::support::TestServer;

/// One SDK script of `tests/python/` and the package it needs, at its pinned version.
struct Sdk {
    script: &'static str,
    package: &'static str,
    module: &'static str,
    version: &'static str,
}

const STRIPE: Sdk = Sdk {
    script: "stripe_client.py",
    package: "stripe",
    module: "stripe",
    version: "16.1.0",
};

const PACSPACE: Sdk = Sdk {
    script: "pacspace_client.py",
    package: "pacspace-sdk",
    module: "pacspace_sdk",
    version: "0.7.0",
};

impl Sdk {
    /// Why this SDK cannot run here, if it cannot.
    fn missing(&self) -> Option<String> {
        let check = "import importlib, importlib.metadata as m, sys; importlib.import_module(sys.argv[2]); \
                     found = m.version(sys.argv[1]); sys.exit(0 if found == sys.argv[3] else f'{sys.argv[1]} {found} installed')";
        let output = Command::new("python3")
            .args(["-c", check, self.package, self.module, self.version])
            .output();
        match output {
            Err(error) => Some(format!("python3 cannot run: {error}")),
            Ok(output) if output.status.success() => None,
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let why = stderr.lines().last().unwrap_or_default();
                Some(format!(
                    "{}=={} is not importable ({why}); pip install -r tests/python/requirements.txt",
                    self.package, self.version
                ))
            }
        }
    }

    /// Whether the tests of this SDK run: `false` (with the reason printed) when the SDK is
    /// missing outside CI; a missing SDK under `CI=true` fails the test.
    fn available(&self) -> bool {
        static STRIPE_MISSING: OnceLock<Option<String>> = OnceLock::new();
        static PACSPACE_MISSING: OnceLock<Option<String>> = OnceLock::new();
        let cell = if self.package == STRIPE.package {
            &STRIPE_MISSING
        } else {
            &PACSPACE_MISSING
        };
        let Some(reason) = cell.get_or_init(|| self.missing()) else {
            return true;
        };
        assert!(std::env::var("CI").as_deref() != Ok("true"), "under CI: {reason}");
        eprintln!("skipped: {reason}");
        false
    }

    /// Runs `scenario` of the script against `base_url` and returns what it printed.
    async fn run(&self, base_url: String, scenario: &'static str) -> Value {
        let script = format!("{}/tests/python/{}", env!("CARGO_MANIFEST_DIR"), self.script);
        let output = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(&script)
                .args([base_url.as_str(), scenario])
                .output()
        })
        .await
        .expect("the script's thread")
        .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{} {scenario} failed: {stdout}\n{}",
            self.script,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("one JSON line ({error}): {stdout}"))
    }
}

/// A recipe's server behind the proxy, and the state its handlers count executions in.
struct Stack<S> {
    state: web::Data<S>,
    proxy: Proxy,
    _server: TestServer,
}

impl<S> Stack<S> {
    async fn new(state: web::Data<S>, server: TestServer) -> Self {
        let proxy = Proxy::start(&server.addr().to_string()).await;
        Self {
            state,
            proxy,
            _server: server,
        }
    }

    /// Runs `scenario` of `sdk` through the proxy: what it printed, and how many answers the
    /// server sent meanwhile (dropped ones included).
    async fn run(&self, sdk: &Sdk, scenario: &'static str) -> (Value, u64) {
        let mut result = Value::Null;
        let base_url = format!("http://{}", self.proxy.addr());
        let round_trips = self
            .proxy
            .round_trips_during(async { result = sdk.run(base_url, scenario).await })
            .await;
        (result, round_trips)
    }
}

/// Stripe's SDK against `POST /v1/customers` of the Stripe-compatible profile.
mod stripe {
    use std::sync::atomic::Ordering;

    use actix_web::web;
    use idempotent_actix::Idempotency;

    use crate::faulty_store::FaultyStore;
    use crate::stripe_compatible::{configure, idempotency, Customers};
    use crate::support::{serve_recipe, wait_until};
    use crate::{Stack, STRIPE};

    async fn start(idempotency: Idempotency) -> Stack<Customers> {
        let customers = web::Data::new(Customers::default());
        let server = serve_recipe(customers.clone(), idempotency, configure);
        Stack::new(customers, server).await
    }

    #[actix_web::test]
    async fn the_sdk_retries_a_lost_answer_with_the_same_key_and_gets_the_one_customer() {
        if !STRIPE.available() {
            return;
        }
        let stack = start(idempotency()).await;
        stack.proxy.drop_answers(1);

        let (customer, round_trips) = stack.run(&STRIPE, "create").await;

        assert_eq!(round_trips, 2, "the lost answer, then the retry: {customer}");
        assert_eq!(customer["object"], "customer");
        assert!(customer["id"].as_str().unwrap().starts_with("cus_"));
        assert_eq!(customer["email"], "jenny@example.com");
        assert_eq!(
            customer["replayed"], "true",
            "Idempotent-Replayed on the retry's answer"
        );
        assert_eq!(stack.state.created(), 1);
    }

    #[actix_web::test]
    async fn a_reused_key_with_other_parameters_raises_idempotency_error_without_a_retry() {
        if !STRIPE.available() {
            return;
        }
        let stack = start(idempotency()).await;

        let (result, round_trips) = stack.run(&STRIPE, "conflict").await;

        assert_eq!(result["first"]["object"], "customer");
        assert_eq!(result["first"]["replayed"], serde_json::Value::Null);
        assert_eq!(result["second"]["error"], "IdempotencyError", "{result}");
        assert_eq!(result["second"]["http_status"], 400);
        assert_eq!(round_trips, 2, "the conflict was not retried");
        assert_eq!(stack.state.created(), 1);
    }

    #[actix_web::test]
    async fn a_duplicate_of_a_running_create_is_retried_until_it_gets_the_customer() {
        if !STRIPE.available() {
            return;
        }
        let stack = start(idempotency()).await;

        let (result, round_trips) = stack.run(&STRIPE, "in_flight").await;

        let (first, duplicate) = (&result["first"], &result["duplicate"]);
        assert_eq!(first["object"], "customer", "{result}");
        assert_eq!(duplicate["id"], first["id"], "{result}");
        assert_eq!(duplicate["replayed"], "true");
        assert!(round_trips >= 3, "the duplicate got 409 and was retried: {round_trips}");
        assert_eq!(stack.state.created(), 1);
    }

    #[actix_web::test]
    async fn the_sdk_retries_a_store_outage_and_creates_one_customer() {
        if !STRIPE.available() {
            return;
        }
        let store = FaultyStore::with(|faults| &faults.down);
        let idempotency = Idempotency::builder().stripe_compatible().store(store.clone()).build();
        let stack = start(idempotency.clone()).await;
        let recovery = actix_web::rt::spawn(async move {
            wait_until(|| idempotency.stats().store_errors >= 1).await;
            store.faults.down.store(false, Ordering::SeqCst);
        });

        let (customer, round_trips) = stack.run(&STRIPE, "create").await;
        recovery.await.expect("the store recovered");

        assert_eq!(round_trips, 2, "the 503, then the retry: {customer}");
        assert_eq!(customer["object"], "customer");
        assert_eq!(
            customer["replayed"],
            serde_json::Value::Null,
            "the retry ran the create"
        );
        assert_eq!(stack.state.created(), 1);
    }

    #[actix_web::test]
    async fn a_publishable_key_raises_authentication_error_and_creates_nothing() {
        if !STRIPE.available() {
            return;
        }
        let stack = start(idempotency()).await;

        let (error, _) = stack.run(&STRIPE, "unauthenticated").await;

        assert_eq!(error["error"], "AuthenticationError", "{error}");
        assert_eq!(error["http_status"], 401);
        assert_eq!(stack.state.created(), 0);
    }
}

/// PacSpace's SDK: `balance.emit(...)` against the API of `agent_safe_writes`.
mod pacspace {
    use std::sync::Arc;

    use actix_web::web;
    use idempotent_actix::MemoryStore;

    use crate::agent_safe_writes::{configure, Environments, Ledger};
    use crate::support::serve_unconfigured;
    use crate::{Stack, PACSPACE};

    async fn start() -> Stack<Ledger> {
        let ledger = web::Data::new(Ledger::default());
        let environments = Environments::sharing(Arc::new(MemoryStore::default()));
        let app_ledger = ledger.clone();
        let server = serve_unconfigured(move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(app_ledger.clone());
            configure(environments.clone())(cfg);
        });
        Stack::new(ledger, server).await
    }

    #[actix_web::test]
    async fn emit_retries_a_lost_answer_with_the_same_key_and_records_one_delta() {
        if !PACSPACE.available() {
            return;
        }
        let stack = start().await;
        stack.proxy.drop_answers(1);

        let (delta, round_trips) = stack.run(&PACSPACE, "emit").await;

        assert_eq!(round_trips, 2, "the lost answer, then the retry: {delta}");
        assert!(delta["recordId"].is_string(), "the SDK unwrapped the data: {delta}");
        assert_eq!(delta["status"], "QUEUED");
        assert_eq!(delta["customerId"], "cus_1");
        assert_eq!(delta["livemode"], true);
        assert_eq!(stack.state.deltas(), 1);
    }

    #[actix_web::test]
    async fn emit_with_a_reused_key_and_another_delta_raises_409_idempotency_conflict_once() {
        if !PACSPACE.available() {
            return;
        }
        let stack = start().await;

        let (result, round_trips) = stack.run(&PACSPACE, "conflict").await;

        assert!(result["first"]["recordId"].is_string(), "{result}");
        assert_eq!(result["second"]["status"], 409, "{result}");
        assert_eq!(result["second"]["code"], "IDEMPOTENCY_CONFLICT");
        assert_eq!(round_trips, 2, "the SDK never retries a conflict");
        assert_eq!(stack.state.deltas(), 1);
    }

    #[actix_web::test]
    async fn emit_while_the_first_runs_returns_idempotency_pending_then_the_first_delta() {
        if !PACSPACE.available() {
            return;
        }
        let stack = start().await;

        let (result, _) = stack.run(&PACSPACE, "pending").await;

        let answers = result["duplicate"].as_array().expect("the duplicate's answers");
        assert_eq!(answers[0]["code"], "IDEMPOTENCY_PENDING", "{result}");
        assert_eq!(answers[0]["retryAfterSeconds"], 1);
        let last = answers.last().unwrap();
        assert!(result["first"]["recordId"].is_string(), "{result}");
        assert_eq!(last["recordId"], result["first"]["recordId"], "{result}");
        assert_eq!(stack.state.deltas(), 1);
    }

    #[actix_web::test]
    async fn emit_with_an_unknown_api_key_raises_invalid_api_key_and_records_nothing() {
        if !PACSPACE.available() {
            return;
        }
        let stack = start().await;

        let (error, _) = stack.run(&PACSPACE, "unknown_key").await;

        assert_eq!(error["error"], "InvalidApiKeyError", "{error}");
        assert_eq!(error["status"], 401);
        assert_eq!(stack.state.deltas(), 0);
    }
}
