//! Whatever the handler returns that actix-web can respond with.

use actix_web::{post, web, App, HttpResponse, Responder, ResponseError};
use idempotent_actix::idempotent;
use serde::Serialize;

#[derive(Serialize)]
struct Order {
    id: u64,
}

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

impl ResponseError for MyError {}

#[post("/impl")]
#[idempotent]
async fn impl_responder() -> impl Responder {
    "created"
}

#[post("/response")]
#[idempotent]
async fn http_response() -> HttpResponse {
    HttpResponse::Created().finish()
}

#[post("/result")]
#[idempotent]
async fn actix_result() -> actix_web::Result<HttpResponse> {
    Ok(HttpResponse::Created().finish())
}

#[post("/json")]
#[idempotent]
async fn json_or_my_error(fail: web::Query<bool>) -> Result<web::Json<Order>, MyError> {
    if fail.into_inner() {
        return Err(MyError);
    }
    Ok(web::Json(Order { id: 1 }))
}

#[post("/status")]
#[idempotent]
async fn with_status() -> (String, actix_web::http::StatusCode) {
    ("created".to_owned(), actix_web::http::StatusCode::CREATED)
}

fn main() {
    let _ = App::new()
        .service(impl_responder)
        .service(http_response)
        .service(actix_result)
        .service(json_or_my_error)
        .service(with_status);
}
