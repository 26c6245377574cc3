use actix_web::{web, App, HttpResponse};
use idempotent_actix::idempotent;

#[idempotent(ttl = "0s", in_flight = "queue")]
fn create() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _ = App::new().route("/x", web::post().to(create));
}
