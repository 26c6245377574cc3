//! A handler without a route macro, registered with `web::resource(..).route(..)` or `App::route`.

use actix_web::{web, App, HttpResponse};
use idempotent_actix::idempotent;

#[idempotent(scope = "tenant")]
async fn create(body: web::Bytes) -> HttpResponse {
    HttpResponse::Created().body(body)
}

#[idempotent]
async fn replace(body: String) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

fn main() {
    let _ = App::new()
        .service(
            web::resource("/r")
                .route(web::post().to(create))
                .route(web::put().to(replace)),
        )
        .route("/s", web::post().to(create));
}
