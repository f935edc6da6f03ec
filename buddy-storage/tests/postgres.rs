//! PostgresStorage: the conformance suite, plus what only Postgres has (schemas, pools,
//! raw-SQL corruption, the v1 upgrade, two writer processes).
//!
//! Needs `BUDDY_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it every test says it is skipped and passes. Each test works in a schema of its own,
//! dropped afterwards, so tests run in parallel.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use buddy_core::StorageError;
use buddy_core::run::RunStatus;
use buddy_core::session::{SessionKey, SessionKind};
use buddy_core::storage::{ReadOptions, Storage};
use buddy_storage::PostgresStorage;
use buddy_storage::conformance::{self, Fixture, key, obj, run_write};
use serde_json::json;
use support::{CHILD_ENV, CHILD_RUNS};

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

buddy_storage::conformance_tests!(fixture);

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
    // A server that answers with an error.
    if let Some(url) = url() {
        let rest = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
        let host = rest.split_once('/').map_or(rest, |(host, _)| host);
        urls.push(format!("postgres://user:s3cr3t-pw@{host}/no_such_db"));
    }
    for url in &urls {
        let error = PostgresStorage::connect(url).await.unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Database {
                    operation: "connect",
                    ..
                } | StorageError::Connect { .. }
            ),
            "{error:?}"
        );
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
async fn connecting_to_a_closed_port_says_connection_refused_and_names_the_server() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://user:s3cr3t-pw@127.0.0.1:{port}/some_db");
    let error = PostgresStorage::connect(&url).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            &error,
            StorageError::Connect {
                reason: "connection refused",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(
        message,
        format!(
            "cannot connect to postgres server 127.0.0.1:{port}, database some_db: \
             connection refused"
        )
    );
    let mut text = format!("{error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(!text.contains("s3cr3t"), "{text}");
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
    assert_eq!(
        tables().await,
        [
            "Workflows",
            "Workflows_durable_runs",
            "Workflows_events",
            "Workflows_journal",
            "Workflows_runs"
        ]
    );
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
    for index in ["Workflows_durable_list_idx", "Workflows_durable_ended_idx"] {
        assert!(indexes.iter().any(|i| i == index), "{indexes:?}");
    }
    storage.drop_tables().await.unwrap();
    assert!(
        tables().await.is_empty(),
        "drop_tables drops the durable tables too"
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
        .read(&key("bad"), &ReadOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "session_state", .. } if session_id == "bad"),
        "{error:?}"
    );
    let error = storage.commit(run_write("bad", 2, "k")).await.unwrap_err();
    assert!(error.is_corrupt(), "{error:?}");
    assert_eq!(
        storage.runs(&key("bad"), None).await.unwrap().len(),
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
        .read(&key("bad"), &ReadOptions::with_runs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { session_id, what: "run record", .. } if session_id == "bad"),
        "{error:?}"
    );
    // The runs reference the session's kind: remove them to corrupt the kind.
    exec(format!(
        "DELETE FROM \"{schema}\".sessions_runs; UPDATE \"{schema}\".sessions SET kind = 'spaceship'"
    ))
    .await;
    // The listing skips the corrupt session (and reports it) and lists the others.
    storage.commit(run_write("good", 1, "k")).await.unwrap();
    let listed = storage.list_sessions(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, "good");
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
            SET record = record || '{{\"future_field\": {{\"x\": 1}}, \"status\": \"paused_by_v9\"}}';
         UPDATE \"{schema}\".sessions
            SET component_data = '{{\"name\": \"wf\", \"added_later\": [1]}}';
         ALTER TABLE \"{schema}\".sessions ADD COLUMN added_later TEXT DEFAULT 'x';"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(storage.pool())
        .await
        .unwrap();
    let session = storage
        .read(&key("s"), &ReadOptions::with_runs(5))
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
            .read(&key("s"), &ReadOptions::with_runs(3))
            .await
            .unwrap_err(),
        storage.commit(run_write("s", 2, "k")).await.unwrap_err(),
        storage.runs(&key("s"), None).await.unwrap_err(),
    ] {
        assert!(matches!(error, StorageError::Database { .. }), "{error:?}");
    }
    // The pool closed.
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
    assert_eq!(s1.session_name.as_deref(), Some("first"));
    assert_eq!(s1.session_state, obj(json!({"count": 2})));
    assert_eq!(s1.extra_data, Some(obj(json!({"x": 1}))));
    assert_eq!(s1.created_at, 1_700_000_000_000);
    assert_eq!(s1.run_count, 2);
    let ids: Vec<_> = s1.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert_eq!(s1.runs[0].response.text(), "one");
    let s2 = storage
        .read(&key("s2"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s2.run_count, s2.runs.len()), (0, 0));
    storage.commit(run_write("s1", 3, "k")).await.unwrap();
    storage.upgrade_schema().await.unwrap();
    assert_eq!(storage.runs(&key("s1"), None).await.unwrap().len(), 3);
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
    support::child_writes(Arc::new(storage)).await;
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
    tokio::task::spawn_blocking(move || support::run_two_writer_processes("child_writer", &target))
        .await
        .unwrap();
    conformance::assert_all_runs_kept(&storage, &key("shared"), 0..2 * CHILD_RUNS).await;
}

/// The v2 layout, as the previous version created it (sessions keyed by `session_id` only),
/// with two sessions and two runs.
fn v2_tables(schema: &str) -> String {
    let t = format!("\"{schema}\".\"wf\"");
    let r = format!("\"{schema}\".\"wf_runs\"");
    format!(
        r#"CREATE SCHEMA "{schema}";
        CREATE TABLE IF NOT EXISTS {t} (
            session_id TEXT NOT NULL PRIMARY KEY,
            kind TEXT NOT NULL DEFAULT 'workflow',
            component_id TEXT,
            user_id TEXT,
            session_name TEXT,
            component_data JSONB NOT NULL DEFAULT '{{}}',
            session_state JSONB NOT NULL DEFAULT '{{}}',
            extra_data JSONB,
            created_at BIGINT NOT NULL DEFAULT 0,
            updated_at BIGINT NOT NULL DEFAULT 0,
            version BIGINT NOT NULL DEFAULT 0,
            run_count BIGINT NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS {r} (
            session_id TEXT NOT NULL REFERENCES {t} (session_id) ON DELETE CASCADE,
            seq BIGINT NOT NULL,
            run_id TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            record JSONB NOT NULL,
            PRIMARY KEY (session_id, seq)
        );
        CREATE INDEX IF NOT EXISTS "wf_updated_idx" ON {t} (updated_at DESC, session_id DESC);
        INSERT INTO {t} VALUES ('s1', 'workflow', 'wf-1', 'ann', 'first', '{{"name": "Article"}}',
            '{{"count": 2, "f": 0.11910699999999999}}', '{{"x": 1}}', 1700000000000, 1700000002000, 3, 2);
        INSERT INTO {t} VALUES ('s2', 'agent', 'ag-1', NULL, NULL, '{{}}', '{{}}', NULL,
            1700000100000, 1700000100000, 1, 0);
        INSERT INTO {r} VALUES ('s1', 1, 'r1', 'completed', 1700000001000,
            '{{"run_id": "r1", "session_id": "s1", "status": "completed", "input": {{"topic": "a"}}, "response": {{"content": "one"}}, "created_at": 1700000001000}}');
        INSERT INTO {r} VALUES ('s1', 2, 'r2', 'error', 1700000002000,
            '{{"run_id": "r2", "session_id": "s1", "status": "error", "input": {{"topic": "b"}}, "response": {{"content": "two"}}, "error": "boom", "created_at": 1700000002000}}');"#
    )
}

async fn v2_storage() -> Option<(PostgresStorage, DropSchema)> {
    let (storage, guard) = storage().await?;
    let storage = storage.table("wf").unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(v2_tables(&guard.schema)))
        .execute(storage.pool())
        .await
        .unwrap();
    Some((storage, guard))
}

/// The constraints of the two tables (name, definition), in a stable order.
async fn constraints(storage: &PostgresStorage, schema: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(c.oid) FROM pg_constraint c
            JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(storage.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn upgrade_schema_converts_the_v2_layout() {
    let Some((storage, guard)) = v2_storage().await else {
        return;
    };
    let error = storage
        .read(&key("s1"), &ReadOptions::default())
        .await
        .unwrap_err();
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
    assert_eq!(s1.session_name.as_deref(), Some("first"));
    assert_eq!(
        s1.session_state["f"].as_f64().unwrap().to_bits(),
        0.11910699999999999_f64.to_bits()
    );
    assert_eq!(
        (s1.created_at, s1.updated_at, s1.version, s1.run_count),
        (1_700_000_000_000, 1_700_000_002_000, 3, 2)
    );
    let ids: Vec<_> = s1.runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    assert_eq!(s1.runs[1].error.as_deref(), Some("boom"));
    let agent = SessionKey::new("s2", SessionKind::Agent);
    assert!(
        storage
            .read(&agent, &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );

    let found = constraints(&storage, &guard.schema).await;
    let definitions: Vec<&str> = found.iter().map(|(_, def)| def.as_str()).collect();
    assert!(
        definitions.contains(&"PRIMARY KEY (session_id, kind, scope)"),
        "{found:?}"
    );
    assert!(
        definitions.contains(&"PRIMARY KEY (session_id, kind, scope, seq)"),
        "{found:?}"
    );
    assert!(
        definitions.iter().any(|def| def
            .starts_with("FOREIGN KEY (session_id, kind, scope) REFERENCES")
            && def.ends_with("(session_id, kind, scope) ON DELETE CASCADE")),
        "{found:?}"
    );
    // The three of the sessions tables, and the primary keys of the durable tables.
    assert_eq!(found.len(), 6, "{found:?}");

    let member = SessionKey::new("s1", SessionKind::Agent).scope("researcher");
    storage
        .commit(conformance::run_write_at(member.clone(), 1, "k"))
        .await
        .unwrap();
    storage.commit(run_write("s1", 3, "k")).await.unwrap();
    assert_eq!(storage.runs(&key("s1"), None).await.unwrap().len(), 3);
    storage.delete_session(&key("s1")).await.unwrap();
    assert!(storage.runs(&member, None).await.unwrap().is_empty());
    storage.upgrade_schema().await.unwrap();
    assert_eq!(
        storage
            .list_sessions(&Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_corrupt_v2_row_aborts_the_upgrade_and_keeps_the_tables() {
    for corruption in [
        "UPDATE {s}.wf SET session_state = '\"not an object\"' WHERE session_id = 's2'",
        "UPDATE {s}.wf_runs SET record = '{\"created_at\": \"soon\"}' WHERE seq = 2",
        "UPDATE {s}.wf SET kind = 'spaceship' WHERE session_id = 's2'",
    ] {
        let Some((storage, guard)) = v2_storage().await else {
            return;
        };
        // Not `SET search_path`: it would change how constraints print on one connection.
        let sql = corruption.replace("{s}", &format!("\"{}\"", guard.schema));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(storage.pool())
            .await
            .unwrap();
        let before = constraints(&storage, &guard.schema).await;
        let error = storage.upgrade_schema().await.unwrap_err();
        assert!(error.is_corrupt(), "{corruption}: {error:?}");
        assert_eq!(constraints(&storage, &guard.schema).await, before);
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND column_name = 'scope'",
        )
        .bind(&guard.schema)
        .fetch_all(storage.pool())
        .await
        .unwrap();
        assert!(columns.is_empty(), "{columns:?}");
        let sql = format!(
            "SELECT (SELECT count(*) FROM \"{0}\".wf), (SELECT count(*) FROM \"{0}\".wf_runs)",
            guard.schema
        );
        let counts: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(storage.pool())
            .await
            .unwrap();
        assert_eq!(counts, (2, 2), "{corruption}");
    }
}

/// Errors carry the kind a caller branches on: conflict, unavailable.
#[tokio::test]
async fn database_errors_have_a_kind() {
    use buddy_core::StorageErrorKind;

    let Some((storage, guard)) = storage().await else {
        return;
    };
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    // A unique index added behind the store's back, which the next run violates.
    let sql = format!(
        "CREATE UNIQUE INDEX one_status ON \"{0}\".sessions_runs (status)",
        guard.schema
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(storage.pool())
        .await
        .unwrap();
    let error = storage.commit(run_write("s", 2, "k")).await.unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Conflict, "{error:?}");
    assert!(error.is_conflict());
    assert_eq!(storage.runs(&key("s"), None).await.unwrap().len(), 1);
    let session = storage
        .read(&key("s"), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.run_count, 1, "the failed commit was rolled back");

    storage.close().await;
    let error = storage.commit(run_write("s", 2, "k")).await.unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Unavailable, "{error:?}");
}

/// A row locked by another transaction past the lock timeout is a busy error.
#[tokio::test]
async fn a_lock_timeout_is_busy() {
    use buddy_core::StorageErrorKind;

    let Some((storage, guard)) = storage().await else {
        return;
    };
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    let options: sqlx::postgres::PgConnectOptions = guard
        .url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .options([("lock_timeout", "50ms")]);
    let impatient = PostgresStorage::from_pool(sqlx::PgPool::connect_with(options).await.unwrap())
        .schema(&guard.schema)
        .unwrap()
        .table("sessions")
        .unwrap();
    impatient.create().await.unwrap();
    // Another transaction holds the session row.
    let mut holder = storage.pool().begin().await.unwrap();
    let sql = format!(
        "SELECT 1 FROM \"{}\".sessions WHERE session_id = 's' FOR UPDATE",
        guard.schema
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *holder)
        .await
        .unwrap();
    let error = impatient.commit(run_write("s", 2, "k")).await.unwrap_err();
    assert_eq!(error.kind(), StorageErrorKind::Busy, "{error:?}");
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
    assert!(error.is_busy());
    holder.rollback().await.unwrap();
    impatient.commit(run_write("s", 2, "k")).await.unwrap();
    impatient.close().await;
}

/// A store whose tables allow the NULLs a hand-edited table may hold, with raw access.
async fn raw() -> Option<support::corrupt::Raw> {
    let (storage, guard) = storage().await?;
    storage.create().await.unwrap();
    let schema = guard.schema.clone();
    let pool = storage.pool().clone();
    let exec = move |template: String| {
        let pool = pool.clone();
        let sql = template
            .replace("{t}", &format!("\"{schema}\".sessions"))
            .replace("{r}", &format!("\"{schema}\".sessions_runs"))
            .replace("{d}", &format!("\"{schema}\".sessions_durable_runs"))
            .replace("{j}", &format!("\"{schema}\".sessions_journal"))
            .replace("{e}", &format!("\"{schema}\".sessions_events"));
        Box::pin(async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }) as support::corrupt::BoxFuture<()>
    };
    exec(
        "ALTER TABLE {t} ALTER COLUMN component_data DROP NOT NULL,
            ALTER COLUMN session_state DROP NOT NULL, ALTER COLUMN created_at DROP NOT NULL,
            ALTER COLUMN updated_at DROP NOT NULL, ALTER COLUMN version DROP NOT NULL,
            ALTER COLUMN run_count DROP NOT NULL;
          ALTER TABLE {r} ALTER COLUMN record DROP NOT NULL;"
            .to_owned(),
    )
    .await;
    let pool = storage.pool().clone();
    let schema = guard.schema.clone();
    let snapshot = move || {
        let pool = pool.clone();
        let sql = format!(
            "SELECT row_to_json(s)::text FROM \"{schema}\".sessions s
             UNION ALL SELECT row_to_json(r)::text FROM \"{schema}\".sessions_runs r
             ORDER BY 1"
        );
        Box::pin(async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&pool)
                .await
                .unwrap()
        }) as support::corrupt::BoxFuture<Vec<String>>
    };
    Some(support::corrupt::Raw {
        storage: Arc::new(storage),
        exec: Arc::new(exec),
        snapshot: Arc::new(snapshot),
        refuse_run_sql: "ALTER TABLE {r} ADD CONSTRAINT refuse CHECK (run_id <> 'refused')",
        guard: Box::new(guard),
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
    let Some(raw) = raw().await else { return };
    support::corrupt::refused_write_leaves_the_store_usable(raw).await;
}

/// A store remembers the rows it saw to commit in one statement; a row changed by another
/// store (another process or machine), even deleted and written again to the same version,
/// is locked and read again, so nothing the other store wrote is lost.
#[tokio::test]
async fn a_row_changed_by_another_store_is_merged_not_overwritten() {
    let Some((a, _guard)) = storage().await else {
        return;
    };
    let b = PostgresStorage::connect(&url().unwrap())
        .await
        .unwrap()
        .schema(a.schema_name().unwrap())
        .unwrap()
        .table("sessions")
        .unwrap();
    a.commit(run_write("s", 1, "a1")).await.unwrap();
    b.commit(run_write("s", 2, "b2")).await.unwrap();
    let merged = a.commit(run_write("s", 3, "a3")).await.unwrap();
    assert_eq!(
        merged.session_state,
        obj(json!({"a1": 1, "b2": 2, "a3": 3}))
    );
    b.delete_session(&key("s")).await.unwrap();
    for n in 10..13 {
        b.commit(run_write("s", n, &format!("b{n}"))).await.unwrap();
    }
    let merged = a.commit(run_write("s", 20, "a20")).await.unwrap();
    assert_eq!(
        merged.session_state,
        obj(json!({"b10": 10, "b11": 11, "b12": 12, "a20": 20}))
    );
    assert_eq!(b.runs(&key("s"), None).await.unwrap().len(), 4);
}

/// Pooled connections are not pinged before use: a commit on a connection the server has
/// closed is retried once on a new one, and is written exactly once.
#[tokio::test]
async fn a_commit_on_a_dead_connection_is_retried_once() {
    let Some((storage, _guard)) = storage().await else {
        return;
    };
    // A store whose connections can be told apart from other tests' (run in parallel).
    let name = storage.schema_name().unwrap().to_owned();
    let url = url().unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let mine = PostgresStorage::connect(&format!("{url}{separator}application_name={name}"))
        .await
        .unwrap()
        .schema(&name)
        .unwrap()
        .table("sessions")
        .unwrap();
    mine.commit(run_write("s", 1, "k1")).await.unwrap();
    // The server ends every connection of that store.
    let kill = async || {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(storage.pool())
        .await
        .unwrap();
        assert!(!killed.is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    kill().await;
    let session = mine.commit(run_write("s", 2, "k2")).await.unwrap();
    assert_eq!(session.run_count, 2);
    kill().await;
    let read = mine.read(&key("s"), &ReadOptions::with_runs(10)).await;
    assert_eq!(read.unwrap().unwrap().runs.len(), 2);
}

/// Durable writes and reads on connections the server has closed are retried once on new
/// ones, and written exactly once.
#[tokio::test]
async fn durable_operations_on_dead_connections_are_retried_once() {
    use buddy_core::durable::{DurableQuery, DurableWrite, Fence};
    use buddy_storage::conformance::{durable_run, journal_entry, start_write, stored_events};

    let Some((storage, _guard)) = storage().await else {
        return;
    };
    let name = storage.schema_name().unwrap().to_owned();
    let url = url().unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    let mine = PostgresStorage::connect(&format!("{url}{separator}application_name={name}"))
        .await
        .unwrap()
        .schema(&name)
        .unwrap()
        .table("sessions")
        .unwrap();
    let run = durable_run("run", "Wf", 1);
    mine.write_durable(start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    let kill = async || {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(storage.pool())
        .await
        .unwrap();
        assert!(!killed.is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let fence = Some(Fence {
        attempt: 1,
        status: Some(RunStatus::Running),
    });
    kill().await;
    let journal = DurableWrite {
        fence,
        entries: vec![journal_entry("a#1", 0)],
        events: stored_events("run", [2]),
        ..DurableWrite::new("run")
    };
    assert_eq!(mine.write_durable(journal).await.unwrap(), None);
    kill().await;
    let end = DurableWrite {
        fence,
        events: stored_events("run", [3]),
        session: Some(run_write("s", 1, "k")),
        ..DurableWrite::new("run")
    };
    let session = mine.write_durable(end).await.unwrap().unwrap();
    assert_eq!(session.run_count, 1);
    kill().await;
    let state = mine.load_durable("run").await.unwrap().unwrap();
    assert_eq!((state.last_seq, state.entries.len()), (3, 1));
    kill().await;
    assert_eq!(mine.read_events("run", 0, 10).await.unwrap().len(), 3);
    kill().await;
    assert_eq!(
        mine.durable_runs(&DurableQuery::all()).await.unwrap().len(),
        1
    );
    assert_eq!(mine.runs(&key("s"), None).await.unwrap().len(), 1);
}

/// Durable runs of two tables in one schema are separate, and `drop_tables` of one drops
/// only its own.
#[tokio::test]
async fn durable_runs_of_two_tables_are_separate() {
    use buddy_core::durable::DurableQuery;
    use buddy_storage::conformance::{durable_run, journal_entry, start_write};

    let Some((a, _guard)) = storage().await else {
        return;
    };
    let b = a.clone().table("other").unwrap();
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
    b.write_durable(start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    assert_eq!(a.load_durable("run").await.unwrap().unwrap().last_seq, 2);
    b.drop_tables().await.unwrap();
    assert_eq!(a.read_events("run", 0, 10).await.unwrap().len(), 2);
}

/// Two stores (two pools, as two processes have) appending to one run under its fence:
/// the row lock serialises them, so the log has every event once and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_writing_one_run_serialize() {
    use buddy_core::durable::{DurableWrite, Fence};
    use buddy_storage::conformance::{durable_run, start_write, stored_event};

    let Some((a, guard)) = storage().await else {
        return;
    };
    let b = PostgresStorage::connect(&guard.url)
        .await
        .unwrap()
        .schema(&guard.schema)
        .unwrap()
        .table("sessions")
        .unwrap();
    let run = durable_run("run", "Wf", 1);
    a.write_durable(start_write(&run, Vec::new(), []))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            while written < 25 {
                let last = store.load_durable("run").await.unwrap().unwrap().last_seq;
                let mut event = stored_event("run", last + 1);
                event.event =
                    buddy_core::RunEvent::custom("append", json!({"task": n, "n": written}));
                let write = DurableWrite {
                    fence: Some(Fence {
                        attempt: 1,
                        status: Some(RunStatus::Running),
                    }),
                    events: vec![event],
                    ..DurableWrite::new("run")
                };
                match store.write_durable(write).await {
                    Ok(_) => written += 1,
                    Err(error) if error.is_conflict() => {}
                    Err(error) => panic!("{error:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = b.read_events("run", 0, 1000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    let distinct: std::collections::BTreeSet<String> = events
        .iter()
        .map(|event| serde_json::to_string(&event.event.kind).unwrap())
        .collect();
    assert_eq!(distinct.len(), 100);
}
