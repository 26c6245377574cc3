use actix_web::HttpResponse;
use idempotent_actix::idempotent;

#[idempotent(ttl = "24 hours")]
async fn create() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
