//! SqliteStorage: the conformance suite on temporary files, plus what only SQLite has
//! (pragmas, `:memory:`, raw-SQL corruption, the v1 upgrade, two writer processes).

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::sync::Arc;

use buddy_core::StorageError;
use buddy_core::run::RunStatus;
use buddy_core::session::{SessionKey, SessionKind};
use buddy_core::storage::{ReadOptions, Storage};
use buddy_storage::SqliteStorage;
use buddy_storage::conformance::{self, Fixture, key, obj, run_write};
use serde_json::json;
use support::{CHILD_ENV, CHILD_RUNS};

async fn fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("sessions.db"))
        .await
        .unwrap();
    Some(Fixture::new(storage, dir))
}

buddy_storage::conformance_tests!(fixture);

mod in_memory {
    use super::*;

    async fn fixture() -> Option<Fixture> {
        let storage = SqliteStorage::open(":memory:")
            .await
            .unwrap()
            .table("mem")
            .unwrap();
        Some(Fixture::new(storage, ()))
    }

    buddy_storage::conformance_tests!(fixture);
}

#[tokio::test]
async fn invalid_table_names_are_rejected_before_any_sql() {
    let storage = SqliteStorage::open(":memory:").await.unwrap();
    for name in ["", "1x", "x; DROP TABLE y", "a\"b", "ünï", &"t".repeat(64)] {
        let error = storage.clone().table(name).unwrap_err();
        assert!(
            matches!(error, StorageError::InvalidTableName { .. }),
            "{name}: {error}"
        );
    }
    assert_eq!(
        storage.table("Workflows_2").unwrap().table_name(),
        "Workflows_2"
    );
}

/// `table(name)` creates the tables right away, before any run uses the store (and never
/// the default table it replaces).
#[tokio::test]
async fn tables_are_named_after_table_and_created_by_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/db.sqlite");
    let storage = SqliteStorage::open(&path)
        .await
        .unwrap()
        .table("workflows")
        .unwrap();
    let tables = |storage: SqliteStorage| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name",
        )
        .fetch_all(storage.pool())
        .await
        .unwrap()
    };
    let expected = [
        "workflows",
        "workflows_runs",
        "workflows_updated_idx",
        "workflows_durable_runs",
        "workflows_durable_list_idx",
        "workflows_durable_ended_idx",
        "workflows_journal",
        "workflows_events",
    ];
    // No storage operation: the writer creates them in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let names = loop {
        let names = tables(storage.clone()).await;
        if expected.iter().all(|e| names.iter().any(|n| n == e)) {
            break names;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not created: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert!(!names.iter().any(|n| n == "workflow_sessions"), "{names:?}");
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    assert!(path.exists());
}

#[tokio::test]
async fn pragmas_give_wal_normal_busy_timeout_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    let pool = storage.pool();
    let text = |sql: &'static str| async move {
        sqlx::query_scalar::<_, String>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let int = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    assert_eq!(text("PRAGMA journal_mode").await, "wal");
    assert_eq!(int("PRAGMA synchronous").await, 1, "NORMAL");
    assert_eq!(int("PRAGMA foreign_keys").await, 1);
    assert!(int("PRAGMA busy_timeout").await >= 1000);
}

/// The writer's connection leaves checkpoints to the task beside it: the log is still
/// copied into the database file while the store is open (without that task nothing would
/// be, and the log would grow without end).
#[tokio::test]
async fn the_log_is_checkpointed_into_the_file_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let storage = SqliteStorage::open(&path).await.unwrap();
    let pool = storage.pool();
    let pool_autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        pool_autocheckpoint, 1000,
        "the pool's connections are as SQLite sets them"
    );
    let before = std::fs::metadata(&path).unwrap().len();
    // About 8 MB of state: 2,000 pages, twice what SQLite's own checkpoint would let the
    // log hold.
    let big = "x".repeat(4096);
    let commits = (0..2_000).map(|n| {
        let mut write = run_write(&format!("s{n}"), 1, "n");
        write.state_patch = buddy_core::session::StatePatch::diff(
            &serde_json::Map::new(),
            &obj(json!({ "big": big })),
        );
        storage.commit(write)
    });
    for result in futures::future::join_all(commits).await {
        result.unwrap();
    }
    let mut grown = 0;
    for _ in 0..100 {
        grown = std::fs::metadata(&path).unwrap().len();
        if grown > before + 6_000_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        grown > before + 6_000_000,
        "the database file holds the commits after a checkpoint: {before} -> {grown} bytes"
    );
    let sessions = storage
        .list_sessions(&buddy_core::session::SessionQuery::default())
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2_000);
}

#[tokio::test]
async fn in_memory_database_is_shared_by_all_queries() {
    let storage = SqliteStorage::open(":memory:").await.unwrap();
    let clone = storage.clone();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    let session = clone
        .read(&key("s"), &ReadOptions::with_runs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.runs.len(), 1);
    // Another storage on a `:memory:` is another database.
    let other = SqliteStorage::open(":memory:").await.unwrap();
    assert!(
        other
            .read(&key("s"), &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn two_tables_in_one_file_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let base = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    let agents = base.clone().table("agents").unwrap();
    let workflows = base.table("workflows").unwrap();
    agents.commit(run_write("s", 1, "a")).await.unwrap();
    assert!(
        workflows
            .read(&key("s"), &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
}

/// Durable runs of two tables in one file are separate (each table has its own durable
/// tables), and `drop_tables` of one drops only its own.
#[tokio::test]
async fn durable_runs_of_two_tables_are_separate() {
    use buddy_core::durable::DurableQuery;
    use buddy_storage::conformance::{durable_run, journal_entry, start_write};

    let dir = tempfile::tempdir().unwrap();
    let base = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    let a = base.clone().table("a").unwrap();
    let b = base.table("b").unwrap();
    let run = durable_run("run", "Wf", 1);
    a.write_durable(start_write(&run, vec![journal_entry("x#1", 0)], 1..=2))
        .await
        .unwrap();
    assert!(b.load_durable("run").await.unwrap().is_none());
    assert!(b.read_events("run", 0, 10).await.unwrap().is_empty());
    assert!(
        b.durable_runs(&DurableQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
    // The same run id in the other table starts its own log at 1.
    b.write_durable(start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    assert_eq!(a.load_durable("run").await.unwrap().unwrap().last_seq, 2);
    assert_eq!(b.prune_durable(i64::MAX).await.unwrap(), 0);
    b.drop_tables().await.unwrap();
    assert_eq!(a.read_events("run", 0, 10).await.unwrap().len(), 2);
    let names = table_names(&a).await;
    assert!(!names.iter().any(|n| n.starts_with("b_")), "{names:?}");
    a.drop_tables().await.unwrap();
    let names = table_names(&a).await;
    assert!(names.is_empty(), "{names:?}");
}

/// A table name too long for `{name}_durable_runs` to fit in 63 characters gets shortened
/// durable table names (as index names are), and works.
#[tokio::test]
async fn long_table_names_get_short_durable_tables() {
    use buddy_storage::conformance::{durable_run, start_write};

    let storage = SqliteStorage::open(":memory:").await.unwrap();
    let long = "t".repeat(58);
    let storage = storage.table(&long).unwrap();
    let run = durable_run("run", "Wf", 1);
    storage
        .write_durable(start_write(&run, Vec::new(), 1..=3))
        .await
        .unwrap();
    assert_eq!(storage.read_events("run", 1, 10).await.unwrap().len(), 2);
    let names = table_names(&storage).await;
    let ours = names.iter().filter(|n| !n.starts_with("sqlite_"));
    assert!(ours.clone().all(|n| n.len() <= 63), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("_durable_runs")),
        "{names:?}"
    );
    storage.drop_tables().await.unwrap();
    assert!(table_names(&storage).await.is_empty());
}

async fn corrupt_storage() -> (tempfile::TempDir, SqliteStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("db"))
        .await
        .unwrap()
        .table("t")
        .unwrap();
    storage.commit(run_write("bad", 1, "k")).await.unwrap();
    (dir, storage)
}

#[tokio::test]
async fn corrupt_state_is_a_typed_error_naming_the_session() {
    let (_dir, storage) = corrupt_storage().await;
    sqlx::query("UPDATE t SET session_state = '{not json' WHERE session_id = 'bad'")
        .execute(storage.pool())
        .await
        .unwrap();
    let corrupt = |error: StorageError| match error {
        StorageError::Corrupt {
            session_id, what, ..
        } => (session_id, what),
        other => panic!("expected Corrupt, got {other:?}"),
    };
    let error = storage
        .read(&key("bad"), &ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(corrupt(error), ("bad".into(), "session_state"));
    // A write must not reset the session either.
    let error = storage.commit(run_write("bad", 2, "k")).await.unwrap_err();
    assert_eq!(corrupt(error), ("bad".into(), "session_state"));
    // Listing skips the corrupt session (and reports it) instead of failing.
    assert!(
        storage
            .list_sessions(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        storage.runs(&key("bad"), None).await.unwrap().len(),
        1,
        "the write was rolled back"
    );
}

#[tokio::test]
async fn corrupt_run_and_row_are_typed_errors() {
    let (_dir, storage) = corrupt_storage().await;
    sqlx::query("UPDATE t_runs SET record = 'garbage' WHERE session_id = 'bad'")
        .execute(storage.pool())
        .await
        .unwrap();
    let error = storage
        .read(&key("bad"), &ReadOptions::with_runs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "run record", .. } if session_id == "bad"),
        "{error:?}"
    );
    assert!(
        storage
            .runs(&key("bad"), None)
            .await
            .unwrap_err()
            .is_corrupt()
    );
    // Read without runs still works: only the bad part fails.
    assert!(
        storage
            .read(&key("bad"), &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );

    sqlx::query("UPDATE t SET version = 'x' WHERE session_id = 'bad'")
        .execute(storage.pool())
        .await
        .unwrap();
    let error = storage
        .read(&key("bad"), &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, .. } if session_id == "bad"),
        "{error:?}"
    );
    // An unknown kind (the runs reference the kind: remove them first): the listing skips
    // that session and still lists the others.
    storage.commit(run_write("good", 1, "k")).await.unwrap();
    sqlx::raw_sql(
        "DELETE FROM t_runs WHERE session_id = 'bad';
         UPDATE t SET kind = 'spaceship', version = 1 WHERE session_id = 'bad';",
    )
    .execute(storage.pool())
    .await
    .unwrap();
    let listed = storage.list_sessions(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, "good");
}

#[tokio::test]
async fn fields_from_a_newer_version_are_ignored() {
    let (_dir, storage) = corrupt_storage().await;
    sqlx::query(
        "UPDATE t SET session_state = '{\"k\": 1}',
            component_data = '{\"name\": \"wf\", \"added_in_v9\": [1]}'
         WHERE session_id = 'bad'",
    )
    .execute(storage.pool())
    .await
    .unwrap();
    sqlx::query(
        "UPDATE t_runs SET record = json_set(record, '$.future_field', json('{\"x\": 1}'),
            '$.status', 'paused_by_v9', '$.response.future', 3)",
    )
    .execute(storage.pool())
    .await
    .unwrap();
    sqlx::query("ALTER TABLE t ADD COLUMN added_in_v9 TEXT DEFAULT 'x'")
        .execute(storage.pool())
        .await
        .unwrap();
    let session = storage
        .read(&key("bad"), &ReadOptions::with_runs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.runs.len(), 1);
    assert_eq!(session.runs[0].status, RunStatus::Unknown);
    assert_eq!(session.session_state, obj(json!({"k": 1})));
    storage.commit(run_write("bad", 2, "k")).await.unwrap();
}

#[tokio::test]
async fn a_database_that_goes_away_is_a_database_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    storage.close().await;
    for error in [
        storage
            .read(&key("s"), &ReadOptions::default())
            .await
            .unwrap_err(),
        storage.commit(run_write("s", 2, "k")).await.unwrap_err(),
        storage
            .list_sessions(&Default::default())
            .await
            .unwrap_err(),
        storage.delete_session(&key("s")).await.unwrap_err(),
    ] {
        assert!(matches!(error, StorageError::Database { .. }), "{error:?}");
    }

    // The file's directory removed under an open storage: whatever SQLite still manages
    // through open handles may succeed, anything else must be a database error, no panic.
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    drop(dir);
    for n in 2..20 {
        match storage.commit(run_write("s", n, "k")).await {
            Ok(_) | Err(StorageError::Database { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }

    // A table dropped behind the storage's back.
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("db"))
        .await
        .unwrap()
        .table("t")
        .unwrap();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    sqlx::query("DROP TABLE t_runs")
        .execute(storage.pool())
        .await
        .unwrap();
    sqlx::query("DROP TABLE t")
        .execute(storage.pool())
        .await
        .unwrap();
    let error = storage.commit(run_write("s", 2, "k")).await.unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::Database {
                operation: "commit",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn opening_an_unusable_path_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let error = SqliteStorage::open(file.join("db")).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Connect { target, .. } if target.contains("file")),
        "{error:?}"
    );
    assert!(error.is_unavailable(), "{error:?}");
}

/// A v1 table (one `memory` column holding every run) is converted by `upgrade_schema`.
#[tokio::test]
async fn upgrade_schema_moves_v1_runs_to_the_runs_table() {
    let dir = tempfile::tempdir().unwrap();
    // Not `table("workflows")` yet: it would create the tables in the current layout.
    let opened = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    let pool = &opened.pool().clone();
    sqlx::raw_sql(
        r#"CREATE TABLE workflows (
            session_id TEXT PRIMARY KEY, workflow_id TEXT, user_id TEXT, memory JSON,
            workflow_data JSON, session_data JSON, extra_data JSON, created_at INTEGER,
            updated_at INTEGER);
        INSERT INTO workflows VALUES ('s1', 'wf', 'ann',
            '{"runs": [{"input": {"topic": "a"}, "response": {"content": "one", "run_id": "r1", "created_at": 1700000001}},
                       {"input": {"topic": "b"}, "response": {"content": "two", "run_id": "r2", "created_at": 1700000002}}]}',
            '{"name": "ArticleWorkflow"}', '{"session_name": "first", "session_state": {"count": 2}}',
            '{"x": 1}', 1700000000, 1700000002);
        INSERT INTO workflows VALUES ('s2', 'wf', NULL, NULL, NULL, NULL, NULL, 1700000100, NULL);"#,
    )
    .execute(pool)
    .await
    .unwrap();
    let storage = opened.table("workflows").unwrap();
    let error = storage
        .read(&key("s1"), &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::Database { .. }),
        "v1 needs an explicit upgrade"
    );

    storage.upgrade_schema().await.unwrap();
    let s1 = storage
        .read(&key("s1"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s1.kind, SessionKind::Workflow);
    assert_eq!(s1.component_id.as_deref(), Some("wf"));
    assert_eq!(s1.user_id.as_deref(), Some("ann"));
    assert_eq!(s1.session_name.as_deref(), Some("first"));
    assert_eq!(s1.session_state, obj(json!({"count": 2})));
    assert_eq!(s1.component_data, obj(json!({"name": "ArticleWorkflow"})));
    assert_eq!(s1.extra_data, Some(obj(json!({"x": 1}))));
    assert_eq!(s1.created_at, 1_700_000_000_000);
    assert_eq!(s1.run_count, 2);
    let ids: Vec<_> = s1.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert_eq!(s1.runs[1].input, json!({"topic": "b"}));
    assert_eq!(s1.runs[1].response.text(), "two");
    assert_eq!(s1.runs[1].created_at, 1_700_000_002_000);
    let s2 = storage
        .read(&key("s2"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s2.run_count, s2.runs.len()), (0, 0));

    let columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('workflows')")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(!columns.iter().any(|c| c == "memory"), "{columns:?}");
    // The upgraded table takes new runs as usual, and a second upgrade does nothing.
    storage.commit(run_write("s1", 3, "k")).await.unwrap();
    storage.upgrade_schema().await.unwrap();
    assert_eq!(storage.runs(&key("s1"), None).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_corrupt_v1_row_aborts_the_upgrade_and_keeps_the_table() {
    let dir = tempfile::tempdir().unwrap();
    // Not `table("wf")` yet: it would create the tables in the current layout.
    let opened = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE wf (session_id TEXT PRIMARY KEY, workflow_id TEXT, user_id TEXT,
            memory JSON, workflow_data JSON, session_data JSON, extra_data JSON,
            created_at INTEGER, updated_at INTEGER);
         INSERT INTO wf VALUES ('broken', NULL, NULL, '{\"runs\": [', NULL, NULL, NULL, 1, 1);",
    )
    .execute(opened.pool())
    .await
    .unwrap();
    let storage = opened.table("wf").unwrap();
    let error = storage.upgrade_schema().await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, .. } if session_id == "broken"),
        "{error:?}"
    );
    let memory: String = sqlx::query_scalar("SELECT memory FROM wf")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(memory, "{\"runs\": [", "the v1 row is untouched");
}

/// The child half of `two_processes_write_one_session`: does nothing unless re-executed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let storage = SqliteStorage::open(path).await.unwrap();
    support::child_writes(Arc::new(storage)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_write_one_session() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let storage = SqliteStorage::open(&path).await.unwrap();
    storage.create().await.unwrap();
    let target = path.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || support::run_two_writer_processes("child_writer", &target))
        .await
        .unwrap();
    conformance::assert_all_runs_kept(&storage, &key("shared"), 0..2 * CHILD_RUNS).await;
}

/// A commit that fails or is dropped half-way must not leave its connection inside a
/// transaction: with `:memory:` the pool has a single connection, so the next commit would
/// fail ("cannot start a transaction within a transaction") or see uncommitted data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_or_dropped_commits_leave_no_open_transaction() {
    let storage = SqliteStorage::open(":memory:").await.unwrap();
    storage.commit(run_write("bad", 1, "k")).await.unwrap();
    sqlx::query("UPDATE workflow_sessions SET session_state = 'x' WHERE session_id = 'bad'")
        .execute(storage.pool())
        .await
        .unwrap();
    assert!(
        storage
            .commit(run_write("bad", 2, "k"))
            .await
            .unwrap_err()
            .is_corrupt()
    );
    storage.commit(run_write("good", 1, "k")).await.unwrap();

    // Drop commits after 1, 2, ... polls, so that some are dropped while their transaction
    // is open (after `BEGIN IMMEDIATE` was sent, before the final `COMMIT` was).
    for n in 0..12 {
        let commit = storage.commit(run_write("cancelled", n, &format!("key_{n}")));
        poll_then_drop(commit, n + 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        // The single connection is not inside a transaction: `BEGIN` works (it waits for the
        // connection while the rollback of a dropped commit is still running).
        sqlx::raw_sql("BEGIN")
            .execute(storage.pool())
            .await
            .unwrap();
        sqlx::raw_sql("ROLLBACK")
            .execute(storage.pool())
            .await
            .unwrap();
    }
    storage.commit(run_write("good", 2, "k")).await.unwrap();
    assert_eq!(storage.runs(&key("good"), None).await.unwrap().len(), 2);
    // Each dropped commit happened entirely or not at all.
    if let Some(session) = storage
        .read(&key("cancelled"), &ReadOptions::with_runs(100))
        .await
        .unwrap()
    {
        assert_eq!(session.run_count as usize, session.runs.len());
        assert_eq!(session.session_state.len(), session.runs.len());
    }
}

/// Polls `future` at most `polls` times, letting other threads work in between, then drops
/// it unfinished.
async fn poll_then_drop<F: Future>(future: F, polls: usize) {
    let mut future = std::pin::pin!(future);
    for _ in 0..polls {
        let ready =
            std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready()))
                .await;
        if ready {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The v2 layout, as the previous version created it (sessions keyed by `session_id` only).
const V2_TABLES: &str = r#"
    CREATE TABLE "wf" (
        session_id TEXT NOT NULL PRIMARY KEY,
        kind TEXT NOT NULL DEFAULT 'workflow',
        component_id TEXT,
        user_id TEXT,
        session_name TEXT,
        component_data TEXT NOT NULL DEFAULT '{}',
        session_state TEXT NOT NULL DEFAULT '{}',
        extra_data TEXT,
        created_at INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        run_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE "wf_runs" (
        session_id TEXT NOT NULL REFERENCES "wf" (session_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE INDEX "wf_updated_idx" ON "wf" (updated_at DESC, session_id DESC);
    INSERT INTO wf VALUES ('s1', 'workflow', 'wf-1', 'ann', 'first', '{"name": "Article"}',
        '{"count": 2, "f": 0.11910699999999999}', '{"x": 1}', 1700000000000, 1700000002000, 3, 2);
    INSERT INTO wf VALUES ('s2', 'agent', 'ag-1', NULL, NULL, '{}', '{}', NULL, 1700000100000,
        1700000100000, 1, 0);
    INSERT INTO wf_runs VALUES ('s1', 1, 'r1', 'completed', 1700000001000,
        '{"run_id": "r1", "session_id": "s1", "status": "completed", "input": {"topic": "a"}, "response": {"content": "one"}, "created_at": 1700000001000}');
    INSERT INTO wf_runs VALUES ('s1', 2, 'r2', 'error', 1700000002000,
        '{"run_id": "r2", "session_id": "s1", "status": "error", "input": {"topic": "b"}, "response": {"content": "two"}, "error": "boom", "created_at": 1700000002000}');
"#;

async fn v2_storage() -> (tempfile::TempDir, SqliteStorage) {
    let dir = tempfile::tempdir().unwrap();
    // Not `table("wf")` yet: it would create the tables in the current layout.
    let opened = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    sqlx::raw_sql(V2_TABLES)
        .execute(opened.pool())
        .await
        .unwrap();
    let storage = opened.table("wf").unwrap();
    (dir, storage)
}

async fn table_names(storage: &SqliteStorage) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM sqlite_master ORDER BY name")
        .fetch_all(storage.pool())
        .await
        .unwrap()
}

/// A v2 table (sessions keyed by id alone) is converted by `upgrade_schema`: every row and
/// run kept, under scope `""`, and the full key usable afterwards.
#[tokio::test]
async fn upgrade_schema_converts_the_v2_layout() {
    let (_dir, storage) = v2_storage().await;
    let error = storage
        .read(&key("s1"), &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("database error"), "{error}");
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        cause.contains("v2 layout") && cause.contains("upgrade_schema()"),
        "{cause}"
    );

    storage.upgrade_schema().await.unwrap();
    let s1 = storage
        .read(&key("s1"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s1.key(), key("s1"));
    assert_eq!(s1.component_id.as_deref(), Some("wf-1"));
    assert_eq!(s1.user_id.as_deref(), Some("ann"));
    assert_eq!(s1.session_name.as_deref(), Some("first"));
    assert_eq!(s1.component_data, obj(json!({"name": "Article"})));
    assert_eq!(
        s1.session_state["f"].as_f64().unwrap().to_bits(),
        0.11910699999999999_f64.to_bits()
    );
    assert_eq!(s1.extra_data, Some(obj(json!({"x": 1}))));
    assert_eq!(
        (s1.created_at, s1.updated_at, s1.version, s1.run_count),
        (1_700_000_000_000, 1_700_000_002_000, 3, 2)
    );
    let ids: Vec<_> = s1.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert_eq!(s1.runs[1].status, RunStatus::Error);
    assert_eq!(s1.runs[1].error.as_deref(), Some("boom"));
    let agent = SessionKey::new("s2", SessionKind::Agent);
    let s2 = storage
        .read(&agent, &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s2.scope.as_str(), s2.run_count), ("", 0));
    assert!(
        storage
            .read(&key("s2"), &ReadOptions::default())
            .await
            .unwrap()
            .is_none(),
        "the kind is part of the key"
    );

    // The old tables are gone, the new key works, the index is there.
    let names = table_names(&storage).await;
    assert!(!names.iter().any(|n| n.contains("v2_old")), "{names:?}");
    assert!(names.iter().any(|n| n == "wf_updated_idx"), "{names:?}");
    let member = SessionKey::new("s1", SessionKind::Agent).scope("researcher");
    storage
        .commit(conformance::run_write_at(member.clone(), 1, "k"))
        .await
        .unwrap();
    storage.commit(run_write("s1", 3, "k")).await.unwrap();
    assert_eq!(storage.runs(&key("s1"), None).await.unwrap().len(), 3);
    assert_eq!(storage.runs(&member, None).await.unwrap().len(), 1);
    storage.delete_session(&key("s1")).await.unwrap();
    assert!(storage.runs(&member, None).await.unwrap().is_empty());
    // Foreign keys hold in the rebuilt tables.
    let violations: Vec<String> =
        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_check")
            .fetch_all(storage.pool())
            .await
            .unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    storage.upgrade_schema().await.unwrap();
    assert!(
        storage
            .read(&agent, &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );
}

/// A v2 row that does not decode aborts the upgrade, which leaves both tables as they were.
#[tokio::test]
async fn a_corrupt_v2_row_aborts_the_upgrade_and_keeps_the_tables() {
    for corruption in [
        "UPDATE wf SET session_state = '{not json' WHERE session_id = 's2'",
        "UPDATE wf_runs SET record = 'garbage' WHERE seq = 2",
        "UPDATE wf SET kind = 'spaceship' WHERE session_id = 's2'",
    ] {
        let (_dir, storage) = v2_storage().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(corruption))
            .execute(storage.pool())
            .await
            .unwrap();
        let before = table_names(&storage).await;
        let error = storage.upgrade_schema().await.unwrap_err();
        assert!(error.is_corrupt(), "{corruption}: {error:?}");
        assert_eq!(table_names(&storage).await, before, "{corruption}");
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('wf')")
            .fetch_all(storage.pool())
            .await
            .unwrap();
        assert!(!columns.iter().any(|c| c == "scope"), "{columns:?}");
        let counts: (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM wf), (SELECT count(*) FROM wf_runs)")
                .fetch_one(storage.pool())
                .await
                .unwrap();
        assert_eq!(counts, (2, 2), "{corruption}");
        // Still refused until upgraded.
        assert!(
            storage
                .read(&key("s1"), &ReadOptions::default())
                .await
                .is_err()
        );
    }
}

/// A v1 table goes all the way to the current layout in one upgrade.
#[tokio::test]
async fn upgrade_schema_takes_v1_to_the_current_layout() {
    let dir = tempfile::tempdir().unwrap();
    // Not `table("old")` yet: it would create the tables in the current layout.
    let opened = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    sqlx::raw_sql(
        r#"CREATE TABLE old (session_id TEXT PRIMARY KEY, workflow_id TEXT, user_id TEXT,
            memory JSON, workflow_data JSON, session_data JSON, extra_data JSON,
            created_at INTEGER, updated_at INTEGER);
        INSERT INTO old VALUES ('s', 'wf', NULL,
            '{"runs": [{"input": 1, "response": {"content": "one", "run_id": "r1"}}]}',
            NULL, NULL, NULL, 1, 1);"#,
    )
    .execute(opened.pool())
    .await
    .unwrap();
    let storage = opened.table("old").unwrap();
    storage.upgrade_schema().await.unwrap();
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('old_runs')")
        .fetch_all(storage.pool())
        .await
        .unwrap();
    assert!(columns.iter().any(|c| c == "scope"), "{columns:?}");
    assert_eq!(storage.runs(&key("s"), None).await.unwrap()[0].run_id, "r1");
    storage
        .commit(conformance::run_write_at(key("s").scope("member"), 1, "k"))
        .await
        .unwrap();
    // The upgraded tables have their durable tables.
    let run = conformance::durable_run("run", "Wf", 1);
    storage
        .write_durable(conformance::start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    assert_eq!(storage.read_events("run", 0, 10).await.unwrap().len(), 1);
}

/// Errors carry the kind a caller branches on: busy, conflict, unavailable.
#[tokio::test]
async fn database_errors_have_a_kind() {
    use buddy_core::StorageErrorKind;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let storage = SqliteStorage::open(&path).await.unwrap();
    storage.commit(run_write("s", 1, "k")).await.unwrap();

    // Another connection holds the write lock while a store that does not wait writes.
    let impatient = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(std::time::Duration::ZERO),
        )
        .await
        .unwrap();
    let impatient = SqliteStorage::from_pool(impatient);
    let mut holder = storage.pool().acquire().await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let error = impatient.commit(run_write("s", 2, "k")).await.unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Busy, "{error:?}");
    assert!(error.is_busy());
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    impatient.commit(run_write("s", 2, "k")).await.unwrap();

    // A run row already at the next `seq` (written behind the store's back): `run_count`
    // is below the history, which is corrupt, not a key conflict, and nothing is written.
    sqlx::query(
        "INSERT INTO workflow_sessions_runs
            SELECT session_id, kind, scope, seq + 1, run_id || '-copy', status, created_at, record
            FROM workflow_sessions_runs WHERE seq = 2",
    )
    .execute(storage.pool())
    .await
    .unwrap();
    let error = storage.commit(run_write("s", 3, "k")).await.unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "run_count", .. } if session_id == "s"),
        "{error:?}"
    );
    assert_eq!(storage.runs(&key("s"), None).await.unwrap().len(), 3);

    // A unique index added behind the store's back, which a run with a repeated id violates.
    sqlx::raw_sql(
        "DELETE FROM workflow_sessions_runs WHERE seq = 3;
         CREATE UNIQUE INDEX one_run_id ON workflow_sessions_runs (run_id);",
    )
    .execute(storage.pool())
    .await
    .unwrap();
    let error = storage.commit(run_write("s", 2, "k")).await.unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Conflict, "{error:?}");
    assert_eq!(storage.runs(&key("s"), None).await.unwrap().len(), 2);

    storage.close().await;
    let error = storage
        .read(&key("s"), &ReadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Unavailable, "{error:?}");
    assert!(error.is_unavailable());
}

/// The tables as a hand-edited or foreign-made file may hold them: the current columns
/// without the `NOT NULL` constraints, so that raw SQL can store NULLs.
const NULLABLE_TABLES: &str = "
    CREATE TABLE t (
        session_id TEXT NOT NULL, kind TEXT NOT NULL, scope TEXT NOT NULL,
        component_id TEXT, user_id TEXT, session_name TEXT,
        component_data TEXT, session_state TEXT, extra_data TEXT,
        created_at INTEGER, updated_at INTEGER, version INTEGER, run_count INTEGER,
        PRIMARY KEY (session_id, kind, scope)
    );
    CREATE TABLE t_runs (
        session_id TEXT NOT NULL, kind TEXT NOT NULL, scope TEXT NOT NULL,
        seq INTEGER NOT NULL, run_id TEXT, status TEXT, created_at INTEGER, record TEXT,
        PRIMARY KEY (session_id, kind, scope, seq),
        FOREIGN KEY (session_id, kind, scope)
            REFERENCES t (session_id, kind, scope) ON DELETE CASCADE
    );";

async fn raw() -> Option<support::corrupt::Raw> {
    let dir = tempfile::tempdir().unwrap();
    // The tables first: `table("t")` would create them in the current layout.
    let storage = SqliteStorage::open(dir.path().join("db")).await.unwrap();
    sqlx::raw_sql(NULLABLE_TABLES)
        .execute(storage.pool())
        .await
        .unwrap();
    let storage = storage.table("t").unwrap();
    let pool = storage.pool().clone();
    let exec = move |template: String| {
        let pool = pool.clone();
        let sql = template
            .replace("{t}", "t")
            .replace("{r}", "t_runs")
            .replace("{d}", "t_durable_runs")
            .replace("{j}", "t_journal")
            .replace("{e}", "t_events");
        Box::pin(async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }) as support::corrupt::BoxFuture<()>
    };
    let pool = storage.pool().clone();
    let snapshot = move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query_scalar::<_, String>(
                "SELECT json_array('t', session_id, kind, scope, component_id, user_id,
                    session_name, component_data, session_state, extra_data, created_at,
                    updated_at, version, run_count) FROM t
                 UNION ALL
                 SELECT json_array('r', session_id, kind, scope, seq, run_id, status,
                    created_at, record) FROM t_runs
                 ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }) as support::corrupt::BoxFuture<Vec<String>>
    };
    Some(support::corrupt::Raw {
        storage: Arc::new(storage),
        exec: Arc::new(exec),
        snapshot: Arc::new(snapshot),
        refuse_run_sql: "CREATE TRIGGER refuse BEFORE INSERT ON t_runs
            WHEN NEW.run_id = 'refused'
            BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END;",
        guard: Box::new(dir),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corruption_is_a_typed_error_on_every_read_path() {
    support::corrupt::check_every_corruption(raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durable_corruption_is_a_typed_error() {
    support::corrupt::check_every_durable_corruption(raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_leaves_the_store_usable() {
    support::corrupt::refused_write_leaves_the_store_usable(raw().await.unwrap()).await;
}

#[tokio::test]
async fn opening_a_directory_or_a_read_only_location_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = vec![dir.path().to_path_buf()];
    // Read-only even for root.
    if cfg!(target_os = "linux") {
        paths.push("/proc/buddy-storage-test/sessions.db".into());
        paths.push("/proc/buddy-storage-test.db".into());
    }
    for path in paths {
        let error = SqliteStorage::open(&path).await.unwrap_err();
        assert!(matches!(error, StorageError::Connect { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{message} does not name {}",
            path.display()
        );
        assert!(
            message.starts_with("cannot connect to sqlite database"),
            "{message}"
        );
    }
}

/// A store remembers the rows it saw to commit in one trip; a row changed by another store
/// on the same file, even deleted and written again to the same version, is read again
/// under the write lock, so no key and no run of the other store is lost.
#[tokio::test]
async fn a_row_changed_by_another_store_is_merged_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.db");
    let a = SqliteStorage::open(&path).await.unwrap();
    let b = SqliteStorage::open(&path).await.unwrap();
    a.commit(run_write("s", 1, "a1")).await.unwrap();
    b.commit(run_write("s", 2, "b2")).await.unwrap();
    let merged = a.commit(run_write("s", 3, "a3")).await.unwrap();
    assert_eq!(
        merged.session_state,
        obj(json!({"a1": 1, "b2": 2, "a3": 3}))
    );
    assert_eq!(merged.run_count, 3);

    // `a` saw the row at version 3. `b` deletes it and writes it three times: version 3
    // again, other state.
    b.delete_session(&key("s")).await.unwrap();
    for n in 10..13 {
        b.commit(run_write("s", n, &format!("b{n}"))).await.unwrap();
    }
    let merged = a.commit(run_write("s", 20, "a20")).await.unwrap();
    assert_eq!(
        merged.session_state,
        obj(json!({"b10": 10, "b11": 11, "b12": 12, "a20": 20}))
    );
    assert_eq!(merged.version, 4);
    let runs = b.runs(&key("s"), None).await.unwrap();
    let ids: Vec<_> = runs.iter().map(|run| run.run_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
}

/// A store outlives the runtime its writer ran on: the next operation, on another runtime,
/// starts a new writer on a new connection, and nothing written before is lost.
#[test]
fn a_store_keeps_working_after_its_writers_runtime_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtimes.db");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let storage = runtime().block_on(async {
        let storage = SqliteStorage::open(&path).await.unwrap();
        storage.commit(run_write("s", 1, "first")).await.unwrap();
        storage
    });
    // That runtime is gone, and its writer with it.
    runtime().block_on(async {
        let session = storage.commit(run_write("s", 2, "second")).await.unwrap();
        assert_eq!(session.run_count, 2);
        assert_eq!(session.session_state, obj(json!({"first": 1, "second": 2})));
        assert_eq!(storage.runs(&key("s"), None).await.unwrap().len(), 2);
    });
}

/// Tables of the current layout written before durable runs existed (no durable tables)
/// get them on first use, and keep their sessions.
#[tokio::test]
async fn durable_tables_are_added_to_existing_tables() {
    use buddy_storage::conformance::{durable_run, start_write};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let old = SqliteStorage::open(&path).await.unwrap();
    old.commit(run_write("s", 1, "k")).await.unwrap();
    sqlx::raw_sql(
        "DROP TABLE workflow_sessions_durable_runs; DROP TABLE workflow_sessions_journal;
         DROP TABLE workflow_sessions_events;",
    )
    .execute(old.pool())
    .await
    .unwrap();
    old.close().await;
    let storage = SqliteStorage::open(&path).await.unwrap();
    let run = durable_run("run", "Wf", 1);
    storage
        .write_durable(start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    assert_eq!(
        storage.load_durable("run").await.unwrap().unwrap().last_seq,
        1
    );
    assert_eq!(storage.runs(&key("s"), None).await.unwrap().len(), 1);
}
