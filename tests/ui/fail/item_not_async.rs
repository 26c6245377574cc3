use actix_web::{post, web, App, HttpResponse};
use idempotent_actix::idempotent;

#[idempotent]
fn create() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[post("/y")]
#[idempotent]
fn create_with_route() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    // Registering the handlers adds no error (no "not a handler" E0277): only the attribute's
    // own error on each function is reported.
    let _ = App::new().route("/x", web::post().to(create)).service(create_with_route);
}
