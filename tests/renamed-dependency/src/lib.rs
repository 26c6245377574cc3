//! An app whose `Cargo.toml` renames the dependency: `idem = { package = "idempotent-actix" }`.
//! Without `crate = "..."`, the attribute's generated code used to name `::idempotent_actix`,
//! which this crate cannot see, and failed with an unresolved-path error.

use actix_web::{post, HttpResponse};
use idem::idempotent;

/// An annotated handler, written as in any app.
#[post("/orders")]
#[idempotent(ttl = "1h")]
pub async fn create_order(body: actix_web::web::Bytes) -> HttpResponse {
    HttpResponse::Created().body(body)
}

#[cfg(test)]
mod tests {
    use actix_web::{test, App};

    #[actix_web::test]
    async fn the_renamed_dependency_is_found_and_a_retry_replays() {
        let app = test::init_service(
            App::new()
                .app_data(idem::testing::isolated())
                .service(super::create_order),
        )
        .await;
        let request = || {
            test::TestRequest::post()
                .uri("/orders")
                .insert_header(("Idempotency-Key", "renamed-1"))
                .set_payload("book")
                .to_request()
        };
        assert_eq!(test::call_service(&app, request()).await.status(), 201);
        let retry = test::call_service(&app, request()).await;
        assert_eq!(retry.headers().get("idempotency-replayed").unwrap(), "true");
        assert_eq!(test::read_body(retry).await, "book");
    }
}
