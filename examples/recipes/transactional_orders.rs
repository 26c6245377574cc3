//! Orders written in the same PostgreSQL transaction as their idempotency record: exactly one
//! order per key, whatever crashes and retries happen in between.
//!
//! `POST /orders` (an `Idempotency-Key` is required) inserts the order through the handler's
//! [`Transaction`] and answers 201 with it. The engine completes the key's record in that same
//! transaction and commits, so the order and the record exist together or not at all:
//!
//! | what happens | the client's retry |
//! |---|---|
//! | the process dies before the commit (`kill -9` during the handler) | the insert was never committed; once the lease lapses, the retry runs once, from scratch |
//! | the process dies after the commit, before the response left | replayed (`Idempotency-Replayed: true`): still one order |
//! | the handler answers 500 after the insert | the insert is rolled back and the key released: the retry runs again |
//! | the handler outlived its lease and another replica took the key over | this insert is rolled back and its client gets 409 `idempotency_in_flight`; the other replica's order is the one |
//!
//! Two flags make the failures easy to provoke: `--pause-after-insert-ms N` sleeps between the
//! insert and the response (time to `kill -9` the process), and `--fail-first-attempt` answers
//! 500 after the insert on a key's first attempt (its retry succeeds).
//!
//! Try it: start `cargo run --example transactional_orders --features postgres --
//! --pause-after-insert-ms 10000 --lease-ms 2000`, then in another terminal:
//!
//! ```console
//! $ order() { curl -si localhost:8080/orders -H 'Idempotency-Key: k-1' -H 'Content-Type: application/json' -d '{"item": "lamp", "quantity": 1}'; }
//! $ order        # the server prints "order 1 inserted, not committed": kill -9 it now
//! $ psql postgres://postgres@127.0.0.1:5432/postgres -c 'SELECT count(*) FROM orders'   # 0
//! ```
//!
//! Restart it without the pause: `order` creates the order once (after the 2 s lease of the
//! dead process lapsed); sent again, it is replayed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{post, web, App, HttpResponse, HttpServer};
use idempotent_actix::{idempotent, CachedStore, Idempotency, IdempotencyKey, PostgresStore, StoreError, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The application's own table, next to the store's `idempotency_records`.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    item text NOT NULL,
    quantity integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// Serialises the schema creation of processes starting together.
const SCHEMA_LOCK: i64 = 0x6f72_6465_7273; // "orders"

/// What the handler shares: how often it ran and inserted, and the failure flags.
#[derive(Default)]
pub struct State {
    executions: AtomicUsize,
    inserts: AtomicUsize,
    pause_after_insert: Option<Duration>,
    fail_first_attempt: bool,
}

impl State {
    /// Sleeps `pause` between the insert and the response.
    pub fn pausing_after_insert(mut self, pause: Duration) -> Self {
        self.pause_after_insert = Some(pause);
        self
    }

    /// Answers 500 after the insert on a key's first attempt.
    pub fn failing_first_attempts(mut self) -> Self {
        self.fail_first_attempt = true;
        self
    }

    /// How many times the handler body ran.
    pub fn executions(&self) -> usize {
        self.executions.load(Ordering::SeqCst)
    }

    /// How many inserts the handler made, committed or not.
    pub fn inserts(&self) -> usize {
        self.inserts.load(Ordering::SeqCst)
    }
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
    quantity: i32,
}

#[derive(Serialize)]
struct Order {
    id: i64,
    item: String,
    quantity: i32,
}

#[post("/orders")]
#[idempotent(required = true)]
async fn create_order(
    tx: Transaction,
    key: IdempotencyKey,
    order: web::Json<NewOrder>,
    state: web::Data<State>,
) -> HttpResponse {
    state.executions.fetch_add(1, Ordering::SeqCst);
    let NewOrder { item, quantity } = order.into_inner();
    let inserted = tx
        .query_one(
            "INSERT INTO orders (item, quantity) VALUES ($1, $2) RETURNING id",
            &[&item, &quantity],
        )
        .await;
    let id: i64 = match inserted {
        Ok(row) => {
            state.inserts.fetch_add(1, Ordering::SeqCst);
            row.get(0)
        }
        // Not stored: the engine rolls the transaction back and a retry runs again.
        Err(error) => return HttpResponse::ServiceUnavailable().json(json!({ "error": error.to_string() })),
    };
    if let Some(pause) = state.pause_after_insert {
        println!("order {id} inserted, not committed; pausing {} ms", pause.as_millis());
        tokio::time::sleep(pause).await;
    }
    if state.fail_first_attempt && key.is_first_attempt() {
        // Outside the cache policy: the insert is rolled back and the key released.
        return HttpResponse::InternalServerError().json(json!({ "error": "failed after the insert" }));
    }
    HttpResponse::Created()
        .insert_header(("Location", format!("/orders/{id}")))
        .json(Order { id, item, quantity })
}

/// The routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_order);
}

/// The store on `database_url`, migrated, behind a local cache of completed records; `lease`
/// is how long a dead process's key stays claimed.
pub async fn idempotency(database_url: &str, lease: Duration) -> Result<Idempotency, StoreError> {
    let store = PostgresStore::new(database_url)?;
    store.migrate().await?;
    let store = CachedStore::new(store, 16 * 1024 * 1024);
    Ok(Idempotency::builder().store(store).lease(lease).build())
}

/// Creates the `orders` table if it does not exist, on a connection of its own.
pub async fn create_schema(database_url: &str) -> Result<(), idempotent_actix::tokio_postgres::Error> {
    use idempotent_actix::tokio_postgres;
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let created = client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}; COMMIT"
        ))
        .await;
    drop(client);
    let _ = connection.await;
    created
}

struct Args {
    bind: String,
    database_url: String,
    lease: Duration,
    pause_after_insert: Option<Duration>,
    fail_first_attempt: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: "127.0.0.1:8080".to_owned(),
        database_url: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
        lease: Duration::from_secs(30),
        pause_after_insert: None,
        fail_first_attempt: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        let millis = |text: String| {
            text.parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("not a number of milliseconds: {text}"))
        };
        match flag.as_str() {
            "--bind" => args.bind = value()?,
            "--database-url" => args.database_url = value()?,
            "--lease-ms" => args.lease = millis(value()?)?,
            "--pause-after-insert-ms" => args.pause_after_insert = Some(millis(value()?)?),
            "--fail-first-attempt" => args.fail_first_attempt = true,
            other => {
                return Err(format!(
                    "unknown argument {other}; expected --bind ADDR, --database-url URL, --lease-ms N, \
                     --pause-after-insert-ms N, --fail-first-attempt"
                ))
            }
        }
    }
    Ok(args)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = parse_args().unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2);
    });
    let idempotency = idempotency(&args.database_url, args.lease)
        .await
        .map_err(std::io::Error::other)?;
    create_schema(&args.database_url).await.map_err(std::io::Error::other)?;
    let state = web::Data::new(State {
        pause_after_insert: args.pause_after_insert,
        fail_first_attempt: args.fail_first_attempt,
        ..State::default()
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(idempotency.clone())
            .app_data(state.clone())
            .configure(configure)
    })
    .bind(&args.bind)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
