//! `crate = "..."` names the facade when it is depended on under another name.

extern crate idempotent_actix as renamed;

mod handlers {
    // `idempotent_actix` now names an unrelated module, as a shadowing would in user code.
    #[allow(unused_imports)]
    use std as idempotent_actix;

    use actix_web::{post, HttpResponse};
    use renamed::idempotent;

    #[post("/orders")]
    #[idempotent(crate = "renamed", ttl = "1h")]
    pub async fn create_order() -> HttpResponse {
        HttpResponse::Created().finish()
    }

    #[idempotent(crate = "::renamed")]
    pub async fn create_refund() -> HttpResponse {
        HttpResponse::Created().finish()
    }
}

fn main() {
    let refund = actix_web::web::post().to(handlers::create_refund);
    let _ = actix_web::App::new()
        .service(handlers::create_order)
        .route("/refunds", refund);
}
