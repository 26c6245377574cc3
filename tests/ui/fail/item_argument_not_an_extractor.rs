use actix_web::{post, App, HttpResponse};
use idempotent_actix::idempotent;

struct NewOrder {
    item: String,
}

#[post("/x")]
#[idempotent]
async fn create(order: NewOrder) -> HttpResponse {
    HttpResponse::Ok().body(order.item)
}

fn main() {
    let _ = App::new().service(create);
}
