//! The runtime's behaviour through real HTTP: a server bound to 127.0.0.1:0 per test, a real
//! client, and a count of handler executions.

#[path = "../support/faulty_store.rs"]
mod faulty_store;
mod support;

mod cancellation;
mod concurrency;
mod config;
mod errors;
mod expiry;
mod extractors;
mod fingerprint;
mod keys;
mod limits;
mod middleware;
mod misuse;
mod policies;
mod reads;
mod replay;
mod replicas;
mod scope;
mod store_failures;
