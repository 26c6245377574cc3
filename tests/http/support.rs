//! A real server on 127.0.0.1:0 in a thread of its own, a real HTTP client, and a counter of
//! handler executions.
// Shared with tests/observe.rs and the recipe tests: each binary uses the part it needs.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServerHandle;
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, App, HttpServer};

use idempotent_actix::Idempotency;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single exchange in these tests may take before the test fails.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times handler bodies ran; handlers take it as `web::Data<Runs>`.
#[derive(Default)]
pub struct Runs(AtomicUsize);

impl Runs {
    /// Counts one execution and returns its 1-based number.
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A running server; stopped when dropped.
pub struct TestServer {
    addr: SocketAddr,
    base: String,
    handle: ServerHandle,
    runs: web::Data<Runs>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // `stop` sends its command at once; the server thread ends on its own.
        drop(self.handle.stop(false));
    }
}

/// A server whose app registers a fresh `Idempotency::default()`.
pub fn serve<F>(configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    serve_with(Idempotency::default(), configure)
}

/// A server whose app registers `idempotency` with `App::app_data`.
pub fn serve_with<F>(idempotency: Idempotency, configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    start(Some(idempotency), configure)
}

/// A server whose app registers no `Idempotency` at all (zero configuration).
pub fn serve_unconfigured<F>(configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    start(None, configure)
}

/// A server of `workers` workers whose app registers no `Idempotency` of the test's: whatever
/// `configure` builds, it builds inside the factory, once per worker.
pub fn serve_unconfigured_on<F>(workers: usize, configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    start_on(workers, None, configure)
}

/// A server built the way each recipe's `main` builds its app: `state` and `idempotency`
/// registered as app data, then `configure`'s routes.
pub fn serve_recipe<S>(
    state: web::Data<S>,
    idempotency: Idempotency,
    configure: fn(&mut web::ServiceConfig),
) -> TestServer
where
    S: Send + Sync + 'static,
{
    serve_unconfigured(move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.clone()).app_data(idempotency.clone());
        configure(cfg);
    })
}

fn start<F>(idempotency: Option<Idempotency>, configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    start_on(2, idempotency, configure)
}

fn start_on<F>(workers: usize, idempotency: Option<Idempotency>, configure: F) -> TestServer
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let runs = web::Data::new(Runs::default());
    let app_runs = runs.clone();
    let factory = move || {
        let mut app = App::new().app_data(app_runs.clone());
        if let Some(idempotency) = &idempotency {
            app = app.app_data(idempotency.clone());
        }
        app.configure(configure.clone())
    };
    let (started, addr) = mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(factory)
                .workers(workers)
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
        addr,
        base: format!("http://{addr}"),
        handle,
        runs,
    }
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Handler executions so far.
    pub fn runs(&self) -> usize {
        self.runs.get()
    }

    /// A POST on a connection of its own.
    pub fn post(&self, path: &str) -> awc::ClientRequest {
        self.request(Method::POST, path)
    }

    pub fn request(&self, method: Method, path: &str) -> awc::ClientRequest {
        awc::Client::builder()
            .timeout(EXCHANGE_TIMEOUT)
            .finish()
            .request(method, self.url(path))
    }

    /// Waits until the handler ran `count` times (a handler whose client left finishes later).
    pub async fn wait_for_runs(&self, count: usize) {
        bounded(async {
            while self.runs() < count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
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

    /// Every value of `name`, in the order received.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .map(|v| v.to_str().expect("an ASCII header"))
            .collect()
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", self.body))
    }

    /// Whether the default replay marker is set.
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

    /// Headers as (name, values in order), sorted by name, without those in `except`.
    pub fn header_list(&self, except: &[&str]) -> Vec<(String, Vec<String>)> {
        let mut names: Vec<&HeaderName> = self.headers.keys().filter(|n| !except.contains(&n.as_str())).collect();
        names.sort_by_key(|n| n.as_str());
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let values = self
                    .headers
                    .get_all(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                (name.as_str().to_owned(), values.collect())
            })
            .collect()
    }
}

/// Sends `req` with `body` and reads the whole response.
pub async fn send<B: MessageBody + 'static>(req: awc::ClientRequest, body: B) -> Reply {
    bounded(async move {
        let mut response = req.send_body(body).await.expect("a response");
        let body = response.body().limit(64 * 1024 * 1024).await.expect("a complete body");
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body,
        }
    })
    .await
}

/// Sends `req` with `Idempotency-Key: key` and a JSON body.
pub async fn send_keyed(req: awc::ClientRequest, key: &str, body: &serde_json::Value) -> Reply {
    let req = req
        .insert_header(("Idempotency-Key", key))
        .content_type("application/json");
    send(req, body.to_string()).await
}

/// Sends `req` with a JSON `body` and reads the whole response.
pub async fn send_json(req: awc::ClientRequest, body: &serde_json::Value) -> Reply {
    send(req.content_type("application/json"), body.to_string()).await
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

/// The head of a POST with `Connection: close` announcing `content_length` body bytes.
pub fn post_head(addr: SocketAddr, path: &str, headers: &[(&str, &str)], content_length: usize) -> String {
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {content_length}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Opens a connection and writes `bytes` on it.
pub async fn connect_and_write(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = bounded(TcpStream::connect(addr)).await.expect("connect");
    bounded(stream.write_all(bytes)).await.expect("write");
    stream
}

/// Reads what the server sends until it closes the connection.
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    bounded(stream.read_to_end(&mut received)).await.expect("read response");
    String::from_utf8(received).expect("an ASCII response")
}
