//! `testing::FaultyStorage`: counts, injected failures and delays, and what agents do when
//! their storage fails.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use buddy_core::agent::Agent;
use buddy_core::session::{SessionKey, SessionKind, SessionQuery, SessionWrite};
use buddy_core::storage::{MemoryStorage, ReadOptions, Storage};
use buddy_core::testing::{FaultyStorage, InjectedFault, Operation, ScriptedModel};
use buddy_core::{Error, RunStatus, StorageErrorKind};

fn key() -> SessionKey {
    SessionKey::new("s", SessionKind::Workflow)
}

fn injected(error: &buddy_core::StorageError) -> InjectedFault {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<InjectedFault>())
        .cloned()
        .unwrap_or_else(|| panic!("not an injected fault: {error:?}"))
}

#[tokio::test]
async fn counts_every_operation_failed_ones_included() {
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.commit(SessionWrite::new(key())).await.unwrap();
    storage.read(&key(), &ReadOptions::default()).await.unwrap();
    storage.read(&key(), &ReadOptions::default()).await.unwrap();
    storage.runs(&key(), None).await.unwrap();
    storage.list_sessions(&SessionQuery::all()).await.unwrap();
    storage.delete_session(&key()).await.unwrap();
    let failing = storage.clone().fail_commits_from(1);
    failing.commit(SessionWrite::new(key())).await.unwrap_err();
    assert_eq!(
        (
            storage.commits(),
            storage.reads(),
            storage.run_reads(),
            storage.lists(),
            storage.deletes()
        ),
        (2, 2, 1, 1, 1)
    );
    assert_eq!(storage.count(Operation::Commit), 2);
    let debug = format!("{storage:?}");
    assert!(debug.contains("commit: 2"), "{debug}");
}

#[tokio::test]
async fn fails_the_nth_commit_only_or_every_one_from_n() {
    let memory = MemoryStorage::new();
    let storage = FaultyStorage::new(memory.clone()).fail_commit(2);
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(storage.commit(SessionWrite::new(key())).await.is_ok());
    }
    assert_eq!(outcomes, [true, false, true, true]);
    let error = FaultyStorage::new(memory.clone())
        .fail_commit(1)
        .commit(SessionWrite::new(key()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Unavailable);
    assert!(error.is_unavailable());
    assert_eq!(
        injected(&error),
        InjectedFault {
            operation: Operation::Commit,
            call: 1
        }
    );
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        "injected failure of commit call #1"
    );

    let storage = FaultyStorage::new(memory.clone()).fail_commits_from(3);
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(storage.commit(SessionWrite::new(key())).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, false, false, false]);
    // A failed commit never reaches the wrapped storage: 3 + 2 commits got through.
    let session = memory
        .read(&key(), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.version, 5);
    storage.heal();
    storage.commit(SessionWrite::new(key())).await.unwrap();
}

#[tokio::test]
async fn fails_reads_from_now_on_and_heals() {
    let storage = FaultyStorage::new(MemoryStorage::new());
    storage.commit(SessionWrite::new(key())).await.unwrap();
    storage.read(&key(), &ReadOptions::default()).await.unwrap();
    let handle = storage.clone().fail_reads();
    let error = storage
        .read(&key(), &ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(injected(&error).call, 2);
    assert!(storage.runs(&key(), None).await.is_err());
    // Commits and lists still work.
    storage.commit(SessionWrite::new(key())).await.unwrap();
    assert_eq!(
        storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .len(),
        1
    );
    handle.heal();
    assert!(
        storage
            .read(&key(), &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn fails_any_operation() {
    let storage = FaultyStorage::new(MemoryStorage::new())
        .fail_nth(Operation::List, 1)
        .fail_from(Operation::Delete, 2);
    assert!(storage.list_sessions(&SessionQuery::all()).await.is_err());
    assert!(storage.list_sessions(&SessionQuery::all()).await.is_ok());
    assert!(storage.delete_session(&key()).await.is_ok());
    let error = storage.delete_session(&key()).await.unwrap_err();
    assert!(matches!(
        error,
        buddy_core::StorageError::Database {
            operation: "delete",
            ..
        }
    ));
}

#[tokio::test]
async fn a_delayed_operation_still_completes() {
    let storage =
        FaultyStorage::new(MemoryStorage::new()).delay(Operation::Commit, Duration::from_millis(5));
    let session = storage.commit(SessionWrite::new(key())).await.unwrap();
    assert_eq!(session.version, 1);
    let storage = storage.delay(Operation::Commit, Duration::ZERO);
    storage.commit(SessionWrite::new(key())).await.unwrap();
    assert_eq!(storage.commits(), 2);
}

#[tokio::test]
async fn an_agent_whose_commit_fails_returns_its_response_with_the_error() {
    let storage = FaultyStorage::new(MemoryStorage::new()).fail_commits_from(1);
    let agent = Agent::new(ScriptedModel::new().text("kept").text("again"))
        .storage(storage.clone())
        .session_id("s-fail");
    let error = agent.run("x").await.unwrap_err();
    assert!(error.is_storage(), "{error:?}");
    assert!(matches!(error, Error::Persist { .. }), "{error:?}");
    assert_eq!(error.response().unwrap().text(), "kept");
    assert_eq!(storage.commits(), 1);

    // Once healed, the next run is recorded.
    storage.heal();
    agent.run("y").await.unwrap();
    let runs = storage
        .runs(&SessionKey::new("s-fail", SessionKind::Agent), None)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Completed);
}
