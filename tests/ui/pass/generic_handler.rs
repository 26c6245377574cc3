//! A generic handler, instantiated where it is registered.

use actix_web::{web, App, HttpResponse};
use idempotent_actix::idempotent;

trait Store: 'static {
    fn name(&self) -> &'static str;
}

struct Memory;

impl Store for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }
}

#[idempotent]
async fn create<S: Store>(store: web::Data<S>) -> HttpResponse {
    HttpResponse::Created().body(store.name())
}

#[idempotent]
async fn create_where<S>(store: web::Data<S>, _body: web::Bytes) -> HttpResponse
where
    S: Store,
{
    HttpResponse::Created().body(store.name())
}

fn main() {
    let _ = App::new()
        .app_data(web::Data::new(Memory))
        .route("/a", web::post().to(create::<Memory>))
        .route("/b", web::post().to(create_where::<Memory>));
}
