//! PostgresStorage: the conformance suite, plus what only Postgres has (schemas, pools,
//! raw-SQL corruption, the v1 upgrade, two writer processes).
//!
//! Needs `BUDDY_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it every test says it is skipped and passes. Each test works in a schema of its own,
//! dropped afterwards, so tests run in parallel.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod conformance;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use buddy_core::StorageError;
use buddy_core::run::RunStatus;
use buddy_core::session::SessionKind;
use buddy_core::storage::{ReadOptions, Storage};
use buddy_storage::PostgresStorage;
use conformance::{CHILD_ENV, CHILD_RUNS, Fixture, obj, run_write};
use serde_json::json;

const URL_ENV: &str = "BUDDY_TEST_POSTGRES_URL";

fn url() -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) => Some(url),
        Err(_) => {
            // Straight to stderr, past the test harness's output capture, so that a run
            // without a database shows that these tests did not really run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: Postgres test not run; set {URL_ENV} to run it"
            );
            None
        }
    }
}

/// A schema name unique to this test in this run.
fn unique_schema() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "buddy_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops its schema when dropped, even when the test failed.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Its own thread and runtime: `drop` cannot await, and may run inside a runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            });
        });
        if cleanup.join().is_err() {
            eprintln!("could not drop test schema {}", self.schema);
        }
    }
}

async fn storage() -> Option<(PostgresStorage, DropSchema)> {
    let url = url()?;
    let schema = unique_schema();
    let storage = PostgresStorage::connect(&url)
        .await
        .unwrap()
        .schema(&schema)
        .unwrap()
        .table("sessions")
        .unwrap();
    Some((storage, DropSchema { url, schema }))
}

async fn fixture() -> Option<Fixture> {
    let (storage, guard) = storage().await?;
    Some(Fixture::new(storage, guard))
}

conformance_suite!(fixture);

#[tokio::test]
async fn invalid_names_are_rejected_before_any_sql() {
    // No server needed: validation happens before anything is sent.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let storage = PostgresStorage::from_pool(pool);
    for name in [
        "",
        "9",
        "a.b",
        "x\"; DROP SCHEMA public; --",
        &"s".repeat(64),
    ] {
        let error = storage.clone().schema(name).unwrap_err();
        assert!(
            matches!(error, StorageError::InvalidTableName { .. }),
            "{name}"
        );
        let error = storage.clone().table(name).unwrap_err();
        assert!(
            matches!(error, StorageError::InvalidTableName { .. }),
            "{name}"
        );
    }
    let ok = storage
        .schema("Buddy")
        .unwrap()
        .table("agent_sessions")
        .unwrap();
    assert_eq!(
        (ok.schema_name(), ok.table_name()),
        (Some("Buddy"), "agent_sessions")
    );
}

#[tokio::test]
async fn connection_errors_never_show_the_password() {
    let mut urls = vec!["postgres://user:s3cr3t-pw@[bad/db".to_owned()];
    // A server that answers with an error (an unreachable one would be retried for the
    // pool's 30 s acquire timeout).
    if let Some(url) = url() {
        let rest = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
        let host = rest.split_once('/').map_or(rest, |(host, _)| host);
        urls.push(format!("postgres://user:s3cr3t-pw@{host}/no_such_db"));
    }
    for url in &urls {
        let error = PostgresStorage::connect(url).await.unwrap_err();
        assert!(matches!(
            error,
            StorageError::Database {
                operation: "connect",
                ..
            }
        ));
        let mut text = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}

#[tokio::test]
async fn from_pool_and_tables_created_lazily() {
    let Some(url) = url() else { return };
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let schema = unique_schema();
    let _guard = DropSchema {
        url,
        schema: schema.clone(),
    };
    let storage = PostgresStorage::from_pool(pool.clone())
        .schema(&schema)
        .unwrap()
        .table("Workflows")
        .unwrap();
    let tables = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    assert!(tables().await.is_empty());
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    assert_eq!(tables().await, ["Workflows", "Workflows_runs"]);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        indexes.iter().any(|i| i == "Workflows_updated_idx"),
        "{indexes:?}"
    );
    assert!(
        indexes.iter().any(|i| i == "Workflows_runs_pkey"),
        "{indexes:?}"
    );
}

#[tokio::test]
async fn corrupt_rows_are_typed_errors_naming_the_session() {
    let Some((storage, _guard)) = storage().await else {
        return;
    };
    let schema = storage.schema_name().unwrap().to_owned();
    storage.commit(run_write("bad", 1, "k")).await.unwrap();
    let exec = |sql: String| {
        let pool = storage.pool().clone();
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    // `jsonb` holds only JSON, so "corrupt" here is JSON of the wrong shape.
    exec(format!(
        "UPDATE \"{schema}\".sessions SET session_state = '\"not an object\"'"
    ))
    .await;
    let error = storage
        .read("bad", &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "session_state", .. } if session_id == "bad"),
        "{error:?}"
    );
    let error = storage.commit(run_write("bad", 2, "k")).await.unwrap_err();
    assert!(error.is_corrupt(), "{error:?}");
    assert_eq!(
        storage.runs("bad", None).await.unwrap().len(),
        1,
        "nothing was written"
    );

    exec(format!(
        "UPDATE \"{schema}\".sessions SET session_state = '{{}}'"
    ))
    .await;
    exec(format!(
        "UPDATE \"{schema}\".sessions_runs SET record = '{{\"input\": 1, \"created_at\": \"soon\"}}'"
    ))
    .await;
    let error = storage
        .read("bad", &ReadOptions::with_runs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "run record", .. } if session_id == "bad"),
        "{error:?}"
    );
    exec(format!(
        "UPDATE \"{schema}\".sessions SET kind = 'spaceship'"
    ))
    .await;
    let error = storage
        .list_sessions(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "kind", .. } if session_id == "bad"),
        "{error:?}"
    );
}

#[tokio::test]
async fn fields_from_a_newer_version_are_ignored() {
    let Some((storage, _guard)) = storage().await else {
        return;
    };
    let schema = storage.schema_name().unwrap().to_owned();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    let sql = format!(
        "UPDATE \"{schema}\".sessions_runs
            SET record = record || '{{\"future_field\": {{\"x\": 1}}, \"status\": \"paused\"}}';
         UPDATE \"{schema}\".sessions
            SET component_data = '{{\"name\": \"wf\", \"added_later\": [1]}}';
         ALTER TABLE \"{schema}\".sessions ADD COLUMN added_later TEXT DEFAULT 'x';"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(storage.pool())
        .await
        .unwrap();
    let session = storage
        .read("s", &ReadOptions::with_runs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.runs[0].status, RunStatus::Unknown);
    assert_eq!(session.component_data["added_later"], json!([1]));
    storage.commit(run_write("s", 2, "k")).await.unwrap();
}

#[tokio::test]
async fn a_database_that_goes_away_is_a_database_error() {
    let Some((storage, _guard)) = storage().await else {
        return;
    };
    let schema = storage.schema_name().unwrap().to_owned();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    // The tables dropped behind the storage's back.
    let sql = format!("DROP TABLE \"{schema}\".sessions_runs, \"{schema}\".sessions");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(storage.pool())
        .await
        .unwrap();
    for error in [
        storage
            .read("s", &ReadOptions::with_runs(3))
            .await
            .unwrap_err(),
        storage.commit(run_write("s", 2, "k")).await.unwrap_err(),
        storage.runs("s", None).await.unwrap_err(),
    ] {
        assert!(matches!(error, StorageError::Database { .. }), "{error:?}");
    }
    // The pool closed.
    storage.close().await;
    for error in [
        storage
            .read("s", &ReadOptions::default())
            .await
            .unwrap_err(),
        storage.commit(run_write("s", 2, "k")).await.unwrap_err(),
        storage
            .list_sessions(&Default::default())
            .await
            .unwrap_err(),
        storage.delete_session("s").await.unwrap_err(),
    ] {
        assert!(matches!(error, StorageError::Database { .. }), "{error:?}");
    }
}

#[tokio::test]
async fn upgrade_schema_moves_v1_runs_to_the_runs_table() {
    let Some((storage, _guard)) = storage().await else {
        return;
    };
    let schema = storage.schema_name().unwrap().to_owned();
    let storage = storage.table("workflows").unwrap();
    let sql = format!(
        r#"CREATE SCHEMA "{schema}";
        CREATE TABLE "{schema}".workflows (
            session_id TEXT PRIMARY KEY, workflow_id TEXT, user_id TEXT, memory JSONB,
            workflow_data JSONB, session_data JSONB, extra_data JSON, created_at BIGINT,
            updated_at BIGINT);
        INSERT INTO "{schema}".workflows VALUES ('s1', 'wf', 'ann',
            '{{"runs": [{{"input": {{"topic": "a"}}, "response": {{"content": "one", "run_id": "r1", "created_at": 1700000001}}}},
                        {{"input": {{"topic": "b"}}, "response": {{"content": "two", "run_id": "r2", "created_at": 1700000002}}}}]}}',
            '{{"name": "ArticleWorkflow"}}', '{{"session_name": "first", "session_state": {{"count": 2}}}}',
            '{{"x": 1}}', 1700000000, 1700000002);
        INSERT INTO "{schema}".workflows VALUES ('s2', 'wf', NULL, NULL, NULL, NULL, NULL, 1700000100, NULL);"#
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(storage.pool())
        .await
        .unwrap();
    let error = storage
        .read("s1", &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, StorageError::Database { .. }),
        "v1 needs an explicit upgrade"
    );

    storage.upgrade_schema().await.unwrap();
    let s1 = storage
        .read("s1", &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s1.kind, SessionKind::Workflow);
    assert_eq!(s1.component_id.as_deref(), Some("wf"));
    assert_eq!(s1.session_name.as_deref(), Some("first"));
    assert_eq!(s1.session_state, obj(json!({"count": 2})));
    assert_eq!(s1.extra_data, Some(obj(json!({"x": 1}))));
    assert_eq!(s1.created_at, 1_700_000_000_000);
    assert_eq!(s1.run_count, 2);
    let ids: Vec<_> = s1.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert_eq!(s1.runs[0].response.text(), "one");
    let s2 = storage
        .read("s2", &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s2.run_count, s2.runs.len()), (0, 0));
    storage.commit(run_write("s1", 3, "k")).await.unwrap();
    storage.upgrade_schema().await.unwrap();
    assert_eq!(storage.runs("s1", None).await.unwrap().len(), 3);
}

/// The child half of `two_processes_write_one_session`: does nothing unless re-executed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (url, schema) = target.split_once('|').unwrap();
    let storage = PostgresStorage::connect(url)
        .await
        .unwrap()
        .schema(schema)
        .unwrap();
    conformance::child_writes(Arc::new(storage)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_write_one_session() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(url) = url() else { return };
    let schema = unique_schema();
    let _guard = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let storage = PostgresStorage::connect(&url)
        .await
        .unwrap()
        .schema(&schema)
        .unwrap();
    let target = format!("{url}|{schema}");
    tokio::task::spawn_blocking(move || {
        conformance::run_two_writer_processes("child_writer", &target)
    })
    .await
    .unwrap();
    conformance::assert_all_runs_kept(&storage, "shared", 0..2 * CHILD_RUNS).await;
}
