//! Every store runs the same conformance suite (`idempotent_runtime::store::conformance`).

use std::sync::Arc;

use idempotent_actix::store::conformance;
use idempotent_actix::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run_all(Arc::new(MemoryStore::default())).await;
}
