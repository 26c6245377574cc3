use actix_web::{post, App, HttpResponse};
use idempotent_actix::idempotent;

#[post("/x")]
#[idempotent(required)]
async fn create() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _ = App::new().service(create);
}
