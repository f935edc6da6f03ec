//! Workflows on the real SQL backends: concurrency without loss, and a database that goes
//! away mid-run (issues 2 and 3).

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

/// The key of a top-level workflow session.
fn wf(session_id: &str) -> buddy::SessionKey {
    buddy::SessionKey::new(session_id, buddy::SessionKind::Workflow)
}

use buddy::prelude::*;
use buddy::storage::ReadOptions;
use buddy::{RunStatus, Storage};
use serde_json::json;

/// Writes one state key per run; can close its own storage mid-run.
#[workflow]
struct Writer {
    #[field(default)]
    close_before_commit: Option<SqliteStorage>,
}

#[workflow]
impl Writer {
    async fn run(&mut self, key: String) -> RunResponse {
        self.state_mut().insert(key.clone(), json!(true));
        if let Some(storage) = &self.close_before_commit {
            storage.close().await;
        }
        RunResponse::from_text(format!("wrote {key}"))
    }
}

async fn concurrent_runs(storage: Arc<dyn Storage>, session: &str) {
    let template = Writer::builder()
        .storage(storage.clone())
        .session_id(session)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let mut workflow = template.clone();
            tokio::spawn(async move {
                for run in 0..25 {
                    workflow.run(format!("t{task}-r{run}")).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stored = storage
        .read(&wf(session), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.run_count, 200);
    assert_eq!(storage.runs(&wf(session), None).await.unwrap().len(), 200);
    for task in 0..8 {
        for run in 0..25 {
            assert_eq!(
                stored.session_state.get(&format!("t{task}-r{run}")),
                Some(&json!(true))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_hundred_concurrent_workflow_runs_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("wf.db"))
        .await
        .unwrap()
        .table("wf")
        .unwrap();
    concurrent_runs(Arc::new(storage), "busy-sqlite").await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_hundred_concurrent_workflow_runs_lose_nothing() {
    let Ok(url) = std::env::var("BUDDY_TEST_POSTGRES_URL") else {
        // Straight to stderr, past the test harness's capture, so the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "==== SKIPPED: BUDDY_TEST_POSTGRES_URL is not set; Postgres workflow test not run ===="
        );
        return;
    };
    let table = format!("wf_test_{}", std::process::id());
    let storage = PostgresStorage::connect(&url)
        .await
        .unwrap()
        .table(&table)
        .unwrap();
    concurrent_runs(Arc::new(storage.clone()), "busy-postgres").await;
    storage.drop_tables().await.unwrap();
}

#[tokio::test]
async fn database_gone_mid_run_still_returns_the_response_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("gone.db"))
        .await
        .unwrap()
        .table("wf")
        .unwrap();
    let mut workflow = Writer::builder()
        .storage(storage.clone())
        .close_before_commit(Some(storage.clone()))
        .build()
        .unwrap();
    let error = workflow.run("k".into()).await.unwrap_err();
    assert!(error.is_storage(), "{error:?}");
    let response = error
        .response()
        .expect("the response travels with the error");
    assert_eq!(response.text(), "wrote k");
    assert_eq!(
        workflow.memory().last_run().unwrap().status,
        RunStatus::Completed
    );
}

#[tokio::test]
async fn corrupt_stored_session_is_a_typed_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("corrupt.db"))
        .await
        .unwrap()
        .table("wf")
        .unwrap();
    let mut workflow = Writer::builder()
        .storage(storage.clone())
        .session_id("broken")
        .build()
        .unwrap();
    workflow.run("first".into()).await.unwrap();
    sqlx::query("UPDATE wf SET session_state = '{not json' WHERE session_id = 'broken'")
        .execute(storage.pool())
        .await
        .unwrap();

    let mut again = Writer::builder()
        .storage(storage.clone())
        .session_id("broken")
        .build()
        .unwrap();
    let error = again.run("second".into()).await.unwrap_err();
    match &error {
        Error::Storage(storage_error) => {
            assert!(storage_error.is_corrupt(), "{storage_error:?}");
            assert!(error.to_string().contains("broken"), "{error}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    let (state,): (String,) =
        sqlx::query_as("SELECT session_state FROM wf WHERE session_id = 'broken'")
            .fetch_one(storage.pool())
            .await
            .unwrap();
    assert_eq!(state, "{not json", "the corrupt row was left as it was");
    assert_eq!(storage.runs(&wf("broken"), None).await.unwrap().len(), 1);
}

/// Waits forever: a run that is only ever dropped.
#[workflow]
struct Stuck {}

#[workflow]
impl Stuck {
    async fn run(&mut self, note: String) -> RunResponse {
        std::future::pending::<()>().await;
        RunResponse::from_text(note)
    }
}

/// A run dropped mid-flight hands its `cancelled` record to the SQLite writer before the
/// drop returns: a program that closes its storage right after (as the examples do on
/// Ctrl-C) keeps the record, with no task or sleep in between.
#[tokio::test]
async fn a_dropped_run_is_recorded_before_the_storage_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cancel.db");
    let storage = SqliteStorage::open(&path).await.unwrap();
    let mut workflow = Stuck::builder()
        .storage(storage.clone())
        .session_id("stuck")
        .build()
        .unwrap();
    {
        let run = workflow.run("half-way".into());
        let mut run = std::pin::pin!(run);
        // Started (the session read and the run begun), then dropped.
        let polled = tokio::time::timeout(std::time::Duration::from_millis(200), &mut run).await;
        assert!(polled.is_err());
    }
    storage.close().await;
    let reopened = SqliteStorage::open(&path).await.unwrap();
    let runs = reopened.runs(&wf("stuck"), None).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, RunStatus::Cancelled);
}
