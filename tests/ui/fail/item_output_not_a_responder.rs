use actix_web::{post, App};
use idempotent_actix::idempotent;

struct Order {
    id: u64,
}

#[post("/x")]
#[idempotent]
async fn create() -> Order {
    Order { id: 1 }
}

fn main() {
    let _ = App::new().service(create);
}
