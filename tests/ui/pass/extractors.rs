//! The handler keeps its own extractors, including patterns, `mut` bindings and custom ones.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{post, web, App, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use idempotent_actix::idempotent;
use serde::Deserialize;

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

#[derive(Deserialize)]
struct OrderPath {
    shop: String,
}

#[derive(Clone, Copy)]
struct Db;

struct Tenant(String);

impl FromRequest for Tenant {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let tenant = req
            .headers()
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| Tenant(v.to_owned()))
            .ok_or_else(|| actix_web::error::ErrorBadRequest("missing tenant"));
        ready(tenant)
    }
}

#[post("/json")]
#[idempotent]
async fn json(order: web::Json<NewOrder>) -> HttpResponse {
    HttpResponse::Created().body(order.into_inner().item)
}

#[post("/shops/{shop}/orders")]
#[idempotent]
async fn path_query_and_data(
    path: web::Path<OrderPath>,
    query: web::Query<std::collections::HashMap<String, String>>,
    db: web::Data<Db>,
) -> HttpResponse {
    let Db = **db;
    HttpResponse::Created().body(format!("{} {}", path.shop, query.len()))
}

#[post("/tuple/{a}/{b}")]
#[idempotent]
async fn patterns_and_tuples(
    path: web::Path<(u32, String)>,
    web::Json(NewOrder { item }): web::Json<NewOrder>,
) -> HttpResponse {
    let (a, b) = path.into_inner();
    HttpResponse::Created().body(format!("{a} {b} {item}"))
}

#[post("/request")]
#[idempotent]
async fn request(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().body(req.path().to_owned())
}

#[post("/payload")]
#[idempotent]
async fn payload(mut body: web::Payload) -> actix_web::Result<HttpResponse> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(HttpResponse::Ok().body(bytes.freeze()))
}

#[post("/custom")]
#[idempotent(scope = "tenant")]
async fn custom(tenant: Tenant, _req: HttpRequest, body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {}", tenant.0, body.len()))
}

#[post("/optional")]
#[idempotent]
async fn optional(order: Option<web::Json<NewOrder>>) -> HttpResponse {
    HttpResponse::Ok().body(order.map_or_else(String::new, |o| o.into_inner().item))
}

fn main() {
    let _ = App::new()
        .app_data(web::Data::new(Db))
        .app_data(web::JsonConfig::default().limit(4096))
        .service(json)
        .service(path_query_and_data)
        .service(patterns_and_tuples)
        .service(request)
        .service(payload)
        .service(custom)
        .service(optional);
}
