//! The store conformance suite against the in-memory reference store (so the suite itself is
//! known to describe the reference behaviour).

use crmsync_core::memory::MemStore;
use crmsync_core::testkit::store::check_store;

#[tokio::test]
async fn memory_store_passes_the_suite() {
    check_store(&MemStore::default()).await;
}
