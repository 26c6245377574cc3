use actix_web::{web, App, HttpResponse};
use idempotent_actix::idempotent;

#[idempotent]
fn create() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    // The function is emitted unchanged, so the only error is the one on the attribute.
    let _: fn() -> HttpResponse = create;
    let _ = App::new().route("/x", web::post().to(|| async { create() }));
}
