//! `crate = "..."` also takes a module path, for a crate that re-exports the facade.

mod reexports {
    pub mod idempotency {
        pub use idempotent_actix::*;
    }
}

use actix_web::{post, App, HttpResponse};
use reexports::idempotency::idempotent;

#[post("/orders")]
#[idempotent(crate = "crate::reexports::idempotency")]
async fn create_order() -> HttpResponse {
    HttpResponse::Created().finish()
}

fn main() {
    let _ = App::new().service(create_order);
}
