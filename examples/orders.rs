//! The demo server: `cargo run --example orders -- [--bind ADDR] [--store memory] [--lease 30s]`.
//!
//! Routes (see the README's tour):
//! - `POST /orders`, tenant-scoped by `X-Tenant-Id`, replayed for 24 h;
//! - `GET /orders/{id}`;
//! - `POST /payments`, key required in `X-Idempotency-Key`, duplicates in flight rejected;
//! - `POST /webhooks`, de-duplicated by `X-Event-ID`;
//! - `POST /quotes`, replayed for 2 s;
//! - `GET /stats`, how many times each handler body ran in this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::{get, post, web, App, HttpRequest, HttpResponse, HttpServer};
use idempotent_actix::{idempotent, Idempotency};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct State {
    orders: Mutex<HashMap<String, Order>>,
    runs: Runs,
}

#[derive(Default)]
struct Runs {
    orders: AtomicU64,
    payments: AtomicU64,
    webhooks: AtomicU64,
    quotes: AtomicU64,
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: i64,
    delay_ms: Option<u64>,
}

#[derive(Clone, Serialize)]
struct Order {
    id: String,
    tenant: Option<String>,
    item: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct NewPayment {
    amount: i64,
    delay_ms: Option<u64>,
    #[serde(default)]
    fail: bool,
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn pause(delay_ms: Option<u64>) {
    if let Some(ms) = delay_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[post("/orders")]
#[idempotent(ttl = "24h", scope = "tenant")]
async fn create_order(req: HttpRequest, order: web::Json<NewOrder>, state: web::Data<State>) -> HttpResponse {
    state.runs.orders.fetch_add(1, Ordering::SeqCst);
    let NewOrder {
        item,
        quantity,
        delay_ms,
    } = order.into_inner();
    if quantity <= 0 {
        return HttpResponse::BadRequest().json(serde_json::json!({"error": "quantity must be a positive integer"}));
    }
    pause(delay_ms).await;
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let order = Order {
        id: fresh_id(),
        tenant,
        item,
        quantity,
    };
    state.orders.lock().unwrap().insert(order.id.clone(), order.clone());
    HttpResponse::Created().json(order)
}

#[get("/orders/{id}")]
async fn get_order(id: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    match state.orders.lock().unwrap().get(id.as_str()) {
        Some(order) => HttpResponse::Ok().json(order),
        None => HttpResponse::NotFound().json(serde_json::json!({"error": "order not found"})),
    }
}

#[post("/payments")]
#[idempotent(header = "X-Idempotency-Key", required = true, in_flight = "reject")]
async fn create_payment(payment: web::Json<NewPayment>, state: web::Data<State>) -> HttpResponse {
    state.runs.payments.fetch_add(1, Ordering::SeqCst);
    let NewPayment { amount, delay_ms, fail } = payment.into_inner();
    pause(delay_ms).await;
    if fail {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": "payment processor unavailable"}));
    }
    HttpResponse::Ok().json(serde_json::json!({"payment_id": fresh_id(), "amount": amount}))
}

#[post("/webhooks")]
#[idempotent(header = "X-Event-ID", required = true)]
async fn receive_webhook(state: web::Data<State>) -> HttpResponse {
    state.runs.webhooks.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(serde_json::json!({"received": true}))
}

#[post("/quotes")]
#[idempotent(ttl = "2s")]
async fn create_quote(state: web::Data<State>) -> HttpResponse {
    state.runs.quotes.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Created().json(serde_json::json!({"quote_id": fresh_id()}))
}

#[get("/stats")]
async fn stats(state: web::Data<State>) -> HttpResponse {
    let runs = &state.runs;
    HttpResponse::Ok().json(serde_json::json!({
        "orders": runs.orders.load(Ordering::SeqCst),
        "payments": runs.payments.load(Ordering::SeqCst),
        "webhooks": runs.webhooks.load(Ordering::SeqCst),
        "quotes": runs.quotes.load(Ordering::SeqCst),
    }))
}

struct Args {
    bind: String,
    store: String,
    lease: Option<Duration>,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
    .filter(|d| !d.is_zero())
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: "127.0.0.1:8080".into(),
        store: "memory".into(),
        lease: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => args.bind = value()?,
            "--store" => args.store = value()?,
            "--lease" => {
                let text = value()?;
                args.lease = Some(
                    parse_duration(&text)
                        .ok_or_else(|| format!("--lease: `{text}` is not a duration such as 500ms, 10s or 1m"))?,
                );
            }
            "-h" | "--help" => {
                return Err(
                    "usage: orders [--bind ADDR] [--store memory|redis://...|postgres://...] [--lease DURATION]".into(),
                )
            }
            other => return Err(format!("unknown flag `{other}`; expected --bind, --store or --lease")),
        }
    }
    Ok(args)
}

async fn configure(args: &Args) -> Result<Idempotency, String> {
    let mut builder = Idempotency::builder().tenant_from_header(HeaderName::from_static("x-tenant-id"));
    if let Some(lease) = args.lease {
        builder = builder.lease(lease);
    }
    // A remote store sits behind an in-process cache of completed records (64 MiB), so a hot
    // replay costs no round trip.
    const LOCAL_CACHE_BYTES: u64 = 64 * 1024 * 1024;
    match args.store.as_str() {
        "memory" => Ok(builder.build()),
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            let redis = idempotent_actix::store::RedisStore::new(url).map_err(|e| format!("--store: {e}"))?;
            redis
                .ping()
                .await
                .map_err(|e| format!("--store: cannot reach Redis at {url}: {e}"))?;
            Ok(builder
                .store(idempotent_actix::CachedStore::new(redis, LOCAL_CACHE_BYTES))
                .build())
        }
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let postgres = idempotent_actix::store::PostgresStore::new(url).map_err(|e| format!("--store: {e}"))?;
            postgres
                .migrate()
                .await
                .map_err(|e| format!("--store: cannot migrate PostgreSQL at {url}: {e}"))?;
            Ok(builder
                .store(idempotent_actix::CachedStore::new(postgres, LOCAL_CACHE_BYTES))
                .build())
        }
        other => Err(format!(
            "--store: `{other}` is not supported; expected `memory`, `redis://...` or `postgres://...`"
        )),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = parse_args().unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2);
    });
    let idempotency = configure(&args).await.unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2);
    });
    let state = web::Data::new(State::default());
    let app_idempotency = idempotency.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_idempotency.clone())
            .app_data(state.clone())
            .service(create_order)
            .service(get_order)
            .service(create_payment)
            .service(receive_webhook)
            .service(create_quote)
            .service(stats)
    })
    .disable_signals()
    .bind(&args.bind)?;
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown_signal().await;
        // Stop taking connections, let started handlers finish and store, then stop.
        handle.pause().await;
        idempotency.drain(Duration::from_secs(30)).await;
        handle.stop(true).await;
    });
    server.await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
