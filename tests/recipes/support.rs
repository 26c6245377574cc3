//! A real server on 127.0.0.1:0 in a thread of its own, and a real HTTP client (awc), for the
//! recipe tests: the parts of `tests/http/support.rs` they need, without its app data (each
//! recipe registers its own).

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpServer};

/// The longest any single exchange may take before the test fails.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A running server; stopped when dropped.
pub struct TestServer {
    base: String,
    handle: ServerHandle,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // `stop` sends its command at once; the server thread ends on its own.
        drop(self.handle.stop(false));
    }
}

/// Serves `App::new().configure(configure)` with two workers, as a deployed app would run.
pub fn serve<F>(configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let (started, addr) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || App::new().configure(configure.clone()))
                .workers(2)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("bind 127.0.0.1:0");
            let addr = server.addrs()[0];
            let server = server.run();
            started.send((addr, server.handle())).expect("test still waiting");
            server.await
        })
    });
    let (addr, handle) = addr.recv_timeout(EXCHANGE_TIMEOUT).expect("server started");
    TestServer {
        base: format!("http://{addr}"),
        handle,
    }
}

impl TestServer {
    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A POST on a connection of its own.
    pub fn post(&self, path: &str) -> awc::ClientRequest {
        self.request(Method::POST, path)
    }

    pub fn request(&self, method: Method, path: &str) -> awc::ClientRequest {
        awc::Client::builder()
            .timeout(EXCHANGE_TIMEOUT)
            .finish()
            .request(method, format!("{}{path}", self.base))
    }
}

/// A fresh key no other test uses.
pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("an ASCII header"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", self.body))
    }

    /// Whether the default replay marker, `Idempotency-Replayed: true`, is set.
    pub fn is_replay(&self) -> bool {
        self.header("idempotency-replayed") == Some("true")
    }

    /// The `code` member of an RFC 9457 problem body (asserting the problem content type).
    pub fn problem_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "a problem body: {self:?}"
        );
        self.json()["code"].as_str().expect("a `code` member").to_owned()
    }
}

/// Sends `req` with a JSON `body` and reads the whole response.
pub async fn send_json(req: awc::ClientRequest, body: &serde_json::Value) -> Reply {
    send(req.content_type("application/json"), body.to_string()).await
}

/// Sends `req` with `body` and reads the whole response.
pub async fn send(req: awc::ClientRequest, body: String) -> Reply {
    bounded(async move {
        let mut response = req.send_body(body).await.expect("a response");
        let body = response.body().limit(16 * 1024 * 1024).await.expect("a complete body");
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body,
        }
    })
    .await
}

/// Sends `count` copies of a request at once, each on its own connection and task.
pub async fn send_concurrently(count: usize, request: impl Fn() -> (awc::ClientRequest, String)) -> Vec<Reply> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (req, body) = request();
            actix_web::rt::spawn(send(req, body))
        })
        .collect();
    let mut replies = Vec::with_capacity(count);
    for task in tasks {
        replies.push(task.await.expect("a client task"));
    }
    replies
}

/// Waits until `done` holds (a handler started, or finished in the background).
pub async fn wait_until(done: impl Fn() -> bool) {
    bounded(async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Fails the test instead of hanging when `future` does not finish in time.
pub async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(EXCHANGE_TIMEOUT, future)
        .await
        .expect("no exchange may hang")
}
