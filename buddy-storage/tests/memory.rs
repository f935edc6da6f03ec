//! The conformance suite against the in-memory reference storage: the suite itself is
//! checked against the semantics it encodes, through both entry points.

use buddy_core::storage::MemoryStorage;
use buddy_storage::conformance::{self, Fixture};

async fn fixture() -> Option<Fixture> {
    Some(Fixture::new(MemoryStorage::new(), ()))
}

buddy_storage::conformance_tests!(fixture);

/// The entry point a backend of another crate calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_on_memory_storage() {
    conformance::run_all(|| async { Fixture::new(MemoryStorage::new(), ()) }).await;
}

/// `run_all` names the failing case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_names_the_failing_case() {
    /// Forgets every write: fails the first case that reads back.
    #[derive(Debug)]
    struct Forgetful;

    #[async_trait::async_trait]
    impl buddy_core::storage::Storage for Forgetful {
        async fn read(
            &self,
            _: &buddy_core::session::SessionKey,
            _: &buddy_core::storage::ReadOptions,
        ) -> buddy_core::storage::StorageResult<Option<buddy_core::session::Session>> {
            Ok(None)
        }
        async fn commit(
            &self,
            write: buddy_core::session::SessionWrite,
        ) -> buddy_core::storage::StorageResult<buddy_core::session::Session> {
            Ok(buddy_core::session::Session::apply_write(None, &write, 1))
        }
        async fn runs(
            &self,
            _: &buddy_core::session::SessionKey,
            _: Option<usize>,
        ) -> buddy_core::storage::StorageResult<Vec<buddy_core::RunRecord>> {
            Ok(Vec::new())
        }
        async fn list_sessions(
            &self,
            _: &buddy_core::session::SessionQuery,
        ) -> buddy_core::storage::StorageResult<Vec<buddy_core::session::Session>> {
            Ok(Vec::new())
        }
        async fn delete_session(
            &self,
            _: &buddy_core::session::SessionKey,
        ) -> buddy_core::storage::StorageResult<()> {
            Ok(())
        }
        async fn drop_tables(&self) -> buddy_core::storage::StorageResult<()> {
            Ok(())
        }
    }

    let outcome = tokio::spawn(conformance::run_all(|| async {
        Fixture::new(Forgetful, ())
    }))
    .await;
    let message = match outcome {
        Ok(()) => panic!("a forgetful storage passed the conformance suite"),
        Err(error) => {
            let payload = error.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default()
        }
    };
    assert!(
        message.contains("storage conformance case `commit_creates_session` failed"),
        "{message}"
    );
}
