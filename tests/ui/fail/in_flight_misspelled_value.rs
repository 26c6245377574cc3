use actix_web::HttpResponse;
use idempotent_actix::idempotent;

#[idempotent(in_flight = "rejects")]
async fn create() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
