//! The handler the HTTP and engine benchmarks load, served bare and with `#[idempotent]`.
//!
//! Both routes do the same work: parse a JSON order, count the execution, answer 201 with the
//! order echoed as JSON (so the response is as large as the request).

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{post, web, HttpResponse};
use idempotent_actix::idempotent;
use serde::{Deserialize, Serialize};

/// How often each handler body ran.
#[derive(Default)]
pub struct Runs {
    pub bare: AtomicU64,
    pub annotated: AtomicU64,
}

#[derive(Deserialize)]
pub struct Order {
    item: String,
    quantity: u32,
    note: String,
}

#[derive(Serialize)]
struct Created<'a> {
    id: u64,
    item: &'a str,
    quantity: u32,
    note: &'a str,
}

fn create(order: &Order, runs: &AtomicU64) -> HttpResponse {
    let id = runs.fetch_add(1, Ordering::Relaxed) + 1;
    HttpResponse::Created().json(Created {
        id,
        item: &order.item,
        quantity: order.quantity,
        note: &order.note,
    })
}

#[post("/bare")]
pub async fn bare(order: web::Json<Order>, runs: web::Data<Runs>) -> HttpResponse {
    create(&order, &runs.bare)
}

#[post("/annotated")]
#[idempotent]
pub async fn annotated(order: web::Json<Order>, runs: web::Data<Runs>) -> HttpResponse {
    create(&order, &runs.annotated)
}
