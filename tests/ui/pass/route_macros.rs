//! `#[idempotent]` above and below every route macro: the route macro's arguments are its own.

use actix_web::{delete, patch, post, put, route, App, HttpResponse};
use idempotent_actix::idempotent;

#[idempotent(ttl = "1h")]
#[post("/post/above")]
async fn post_above() -> HttpResponse {
    HttpResponse::Created().finish()
}

#[post("/post/below")]
#[idempotent(ttl = "1h")]
async fn post_below() -> HttpResponse {
    HttpResponse::Created().finish()
}

#[idempotent]
#[put("/put/above")]
async fn put_above() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[put("/put/below")]
#[idempotent]
async fn put_below() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[idempotent]
#[patch("/patch/above")]
async fn patch_above() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[patch("/patch/below")]
#[idempotent]
async fn patch_below() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[idempotent]
#[delete("/delete/above")]
async fn delete_above() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

#[delete("/delete/below")]
#[idempotent]
async fn delete_below() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

#[idempotent(in_flight = "reject")]
#[route("/route/above", method = "POST", method = "PUT")]
async fn route_above() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[route("/route/below", method = "POST")]
#[idempotent(in_flight = "reject")]
async fn route_below() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[post("/between")]
#[idempotent]
#[allow(clippy::unused_async)]
async fn attributes_on_both_sides() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {
    let _ = App::new()
        .service(post_above)
        .service(post_below)
        .service(put_above)
        .service(put_below)
        .service(patch_above)
        .service(patch_below)
        .service(delete_above)
        .service(delete_below)
        .service(route_above)
        .service(route_below)
        .service(attributes_on_both_sides);
}
