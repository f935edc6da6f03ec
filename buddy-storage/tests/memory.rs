//! The conformance suite against the in-memory reference storage: the suite itself is
//! checked against the semantics it encodes.

mod conformance;

use buddy_core::storage::MemoryStorage;
use conformance::Fixture;

async fn fixture() -> Option<Fixture> {
    Some(Fixture::new(MemoryStorage::new(), ()))
}

conformance_suite!(fixture);
