use idempotent_actix::idempotent;

#[idempotent(ttl = "1h")]
/// An order, as stored.
#[derive(Debug)]
struct Order {
    id: u64,
}

fn main() {
    // The struct is emitted unchanged, so using it adds no error.
    let order = Order { id: 1 };
    println!("{order:?}");
}
