//! A duplicate storm over real HTTP: 1,000 connections send the same keyed request at once to
//! an annotated handler that takes 300 ms, on a two-worker server.
//!
//! `cargo bench --bench duplicate_storm` (env `STORM_ROUNDS`, default 3; `STORM_HTTP=0` runs only
//! the in-process storms).
//!
//! Checks that the handler ran once per storm and every other request got the replay, then
//! prints how long after the handler returned ("the first result") the duplicates were
//! answered: on the server (the moment the engine hands the response to actix, taken by a
//! middleware) and on the client (the moment the whole response was read). Both clocks are
//! this process's, so the times compare directly. A worker answers its waiters one after the
//! other and writes each answer to its socket before taking the next, so over HTTP the spread
//! includes a thousand socket writes on two cores.
//!
//! Then the same storm in process, without sockets (`actix_web::test`, one worker): the
//! engine's own cost of waking and answering a thousand waiters. Target: every waiter answered
//! within 5 ms of the first result.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::rt::System;
use actix_web::{post, test, web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;
use idempotent_actix::idempotent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DUPLICATES: usize = 1000;
const HANDLER_TIME: Duration = Duration::from_millis(300);
const TARGET: Duration = Duration::from_millis(5);
const REPLAY_HEADER: &str = "idempotency-replayed";

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);
/// When the handler returned, per storm.
static FIRST_RESULT: Mutex<Option<Instant>> = Mutex::new(None);
/// When the engine answered each request, and whether the answer was a replay.
static ANSWERED: Mutex<Vec<(Instant, bool)>> = Mutex::new(Vec::new());

#[post("/storm")]
#[idempotent]
async fn storm(body: web::Bytes) -> HttpResponse {
    EXECUTIONS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(HANDLER_TIME).await;
    let response = HttpResponse::Created().content_type("application/json").body(body);
    *FIRST_RESULT.lock().unwrap() = Some(Instant::now());
    response
}

/// Starts the server on its own thread; returns its address.
fn serve() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        System::new().block_on(async move {
            let server = HttpServer::new(|| {
                App::new()
                    .wrap_fn(|req, service| {
                        let response = service.call(req);
                        async move {
                            let response = response.await?;
                            let replayed = response.headers().contains_key(REPLAY_HEADER);
                            ANSWERED.lock().unwrap().push((Instant::now(), replayed));
                            Ok(response)
                        }
                    })
                    .service(storm)
            })
            .workers(2)
            .backlog(4096)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await
        })
    });
    rx.recv().unwrap()
}

/// What one client saw.
struct Seen {
    sent: Instant,
    received: Instant,
    status: u16,
    replayed: bool,
}

async fn send(mut stream: TcpStream, request: &[u8]) -> Seen {
    stream.write_all(request).await.unwrap();
    let sent = Instant::now();
    let mut buffer = Vec::with_capacity(4096);
    let (head_len, body_len) = loop {
        let read = stream.read_buf(&mut buffer).await.unwrap();
        assert!(read > 0, "the server closed the connection before answering");
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).unwrap().to_ascii_lowercase();
            let body_len = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |len| len.trim().parse().unwrap());
            break (end + 4, body_len);
        }
    };
    while buffer.len() < head_len + body_len {
        assert!(stream.read_buf(&mut buffer).await.unwrap() > 0, "response cut short");
    }
    let received = Instant::now();
    let head = std::str::from_utf8(&buffer[..head_len]).unwrap().to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let replayed = head.contains(&format!("\r\n{REPLAY_HEADER}: true"));
    Seen {
        sent,
        received,
        status,
        replayed,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    )
}

fn order() -> String {
    format!(r#"{{"item":"widget","quantity":3,"note":"{}"}}"#, "x".repeat(980))
}

/// One storm over HTTP; returns whether it ran once and answered every duplicate.
async fn one_storm(addr: SocketAddr, round: usize) -> bool {
    let body = order();
    let request = format!(
        "POST /storm HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nIdempotency-Key: storm-{round}-{}\r\nContent-Length: {}\r\n\r\n{body}",
        std::process::id(),
        body.len()
    );
    let executions_before = EXECUTIONS.load(Ordering::SeqCst);
    ANSWERED.lock().unwrap().clear();
    let streams = join_all((0..DUPLICATES).map(|_| TcpStream::connect(addr))).await;
    let streams: Vec<TcpStream> = streams.into_iter().map(Result::unwrap).collect();
    let seen = join_all(streams.into_iter().map(|stream| send(stream, request.as_bytes()))).await;

    let executions = EXECUTIONS.load(Ordering::SeqCst) - executions_before;
    let first = FIRST_RESULT.lock().unwrap().take().expect("the handler ran");
    let answered = std::mem::take(&mut *ANSWERED.lock().unwrap());
    let replays = seen.iter().filter(|s| s.replayed).count();
    let all_created = seen.iter().all(|s| s.status == 201);
    let sent_in_flight = seen.iter().filter(|s| s.sent < first).count();
    let last_sent = seen.iter().map(|s| s.sent).max().unwrap();

    let server: Vec<Duration> = answered
        .iter()
        .filter(|(_, replayed)| *replayed)
        .map(|(at, _)| *at - first)
        .collect();
    let leader = answered
        .iter()
        .find(|(_, replayed)| !replayed)
        .map(|(at, _)| *at - first);
    let client: Vec<Duration> = seen.iter().filter(|s| s.replayed).map(|s| s.received - first).collect();

    println!(
        "storm {round}: {DUPLICATES} requests, {executions} execution(s), {replays} replays, all 201: {all_created}, \
         sent before the first result: {sent_in_flight} (last sent {:.1} ms after the first)",
        last_sent
            .saturating_duration_since(seen.iter().map(|s| s.sent).min().unwrap())
            .as_secs_f64()
            * 1e3
    );
    println!(
        "  leader answered {:.2} ms after its handler returned",
        leader.unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  duplicates answered by the server (after the first result): {}",
        summary(server)
    );
    println!(
        "  duplicates received by the client (after the first result): {}",
        summary(client)
    );
    executions == 1 && replays == DUPLICATES - 1 && all_created
}

/// One storm in process; returns whether it ran once and answered every waiter in time.
async fn one_storm_in_process(round: usize) -> bool {
    let app = test::init_service(App::new().service(storm)).await;
    let executions_before = EXECUTIONS.load(Ordering::SeqCst);
    let key = format!("in-process-{round}-{}", std::process::id());
    let calls = (0..DUPLICATES).map(|_| {
        let request = test::TestRequest::post()
            .uri("/storm")
            .insert_header(("content-type", "application/json"))
            .insert_header(("idempotency-key", key.as_str()))
            .set_payload(order())
            .to_request();
        let call = test::call_service(&app, request);
        async move {
            let response = call.await;
            (
                Instant::now(),
                response.status().as_u16(),
                response.headers().contains_key(REPLAY_HEADER),
            )
        }
    });
    let answers = join_all(calls).await;
    let executions = EXECUTIONS.load(Ordering::SeqCst) - executions_before;
    let first = FIRST_RESULT.lock().unwrap().take().expect("the handler ran");
    let waiters: Vec<Duration> = answers
        .iter()
        .filter(|(_, _, replayed)| *replayed)
        .map(|(at, ..)| *at - first)
        .collect();
    let replays = waiters.len();
    let all_created = answers.iter().all(|(_, status, _)| *status == 201);
    let worst = waiters.iter().max().copied().unwrap_or_default();
    println!(
        "in process {round}: {DUPLICATES} requests, {executions} execution(s), {replays} replays, all 201: {all_created}"
    );
    println!("  waiters answered (after the first result): {}", summary(waiters));
    executions == 1 && replays == DUPLICATES - 1 && all_created && worst <= TARGET
}

fn main() {
    let rounds: usize = std::env::var("STORM_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    // STORM_HTTP=0 runs only the in-process storms (for profiling them).
    let over_http = std::env::var("STORM_HTTP").map_or(true, |v| v != "0");
    let mut once = true;
    if over_http {
        let addr = serve();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for round in 1..=rounds {
            once &= runtime.block_on(one_storm(addr, round));
        }
    }
    let system = System::new();
    let mut in_time = true;
    for round in 1..=rounds {
        in_time &= system.block_on(one_storm_in_process(round));
    }
    let verdict = |held: bool| if held { "yes" } else { "NO" };
    println!(
        "duplicate storm over HTTP: one execution, every duplicate replayed: {}",
        verdict(once)
    );
    println!(
        "duplicate storm in process: one execution, every waiter answered within {} ms of the first result: {}",
        TARGET.as_millis(),
        verdict(in_time)
    );
}
