use actix_web::HttpResponse;
use idempotent_actix::idempotent;

struct Orders;

impl Orders {
    #[idempotent]
    async fn create(&self) -> HttpResponse {
        HttpResponse::Ok().finish()
    }
}

fn main() {
    // The method is emitted unchanged, so calling it adds no error.
    let _ = Orders.create();
}
