//! Storage benchmark: `cargo bench -p buddy-storage` (add `--features postgres` and set
//! `BUDDY_TEST_POSTGRES_URL` for the Postgres part). Prints one JSON object.
//!
//! For each backend:
//! - `write_us`: median latency of a commit that appends one run and updates one state key,
//!   on a session that already has 1, 100 and 10,000 runs;
//! - `read_us`: median latency of reading a session (10,000 runs) with its 20 recent runs;
//! - `runs_per_sec`: commits per second from 8 concurrent tasks, all on one session and
//!   spread over 64 sessions, and from 256 tasks over 1,024 sessions (more callers than a
//!   pool has connections), median of 3 rounds;
//! - `journal_write_us`: median latency of a durable run's journal write, the one a step or
//!   a model call makes: `write_durable` of one small journal entry and one event, fenced on
//!   the run's attempt and status (targets: 100 µs on SQLite, 1 ms on Postgres);
//! - floors measured in the same run, each with the ratio of the commit to it: for SQLite,
//!   `floor_in_thread_us`, the same statements a two-trip commit runs (`BEGIN IMMEDIATE`,
//!   read the row, upsert it, insert the run, `COMMIT`) executed in the calling thread with
//!   rusqlite (no worker thread, no hand-off), and `floor_driver_us`, a bare `INSERT` +
//!   `COMMIT` sent through sqlx as one batch (one hand-off to sqlx's worker thread); for
//!   Postgres, `floor_driver_us`, one autocommit `INSERT` through sqlx (one round trip and
//!   the server's WAL flush).

#![allow(clippy::unwrap_used)] // A benchmark that cannot set up should stop loudly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buddy_core::durable::{
    DurableRun, DurableWrite, EntryKind, EntryStatus, Fence, JournalEntry, StoredEvent,
};
use buddy_core::run::{RunEvent, RunRecord, RunResponse, RunStatus};
use buddy_core::session::{SessionKey, SessionKind, SessionWrite, StatePatch};
use buddy_core::storage::{ReadOptions, Storage};
use serde_json::{Map, Value, json};

const SAMPLES: usize = 200;
const TASKS: usize = 8;
/// The many-callers case: more concurrent commits than a pool has connections.
const MANY_TASKS: usize = 256;
const THROUGHPUT_RUNS: usize = 2048;

fn write(session_id: &str, n: usize) -> SessionWrite {
    let mut after = Map::new();
    after.insert(
        format!("key_{}", n % 20),
        json!({"n": n, "note": "updated by a run"}),
    );
    SessionWrite {
        session_id: session_id.to_owned(),
        kind: SessionKind::Workflow,
        component_id: Some("bench".into()),
        state_patch: StatePatch::diff(&Map::new(), &after),
        run: Some(RunRecord {
            run_id: format!("{session_id}-{n}"),
            session_id: session_id.to_owned(),
            status: RunStatus::Completed,
            input: json!({"topic": "quantum computing", "n": n}),
            response: RunResponse::from_text("lorem ipsum dolor sit amet ".repeat(20)),
            error: None,
            created_at: 1_700_000_000_000,
            ended_at: Some(1_700_000_000_100),
            duration_ms: Some(100.0),
        }),
        ..SessionWrite::default()
    }
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

async fn fill(storage: &dyn Storage, session_id: &str, runs: usize) {
    for n in 0..runs {
        storage.commit(write(session_id, n)).await.unwrap();
    }
}

async fn write_latency(storage: &dyn Storage, session_id: &str, history: usize) -> f64 {
    fill(storage, session_id, history).await;
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let write = write(session_id, history + n);
        let start = Instant::now();
        storage.commit(write).await.unwrap();
        samples.push(start.elapsed());
    }
    median(samples)
}

async fn throughput(storage: Arc<dyn Storage>, tasks: usize, sessions: usize, round: usize) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for n in (task..THROUGHPUT_RUNS).step_by(tasks) {
                let id = format!("tp{round}-{tasks}-{sessions}-{}", n % sessions);
                storage.commit(write(&id, n)).await.unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    THROUGHPUT_RUNS as f64 / start.elapsed().as_secs_f64()
}

/// The median latency of a journal write: one finished step (a small output) and one
/// event, fenced on the run's attempt and status, on a run started before.
async fn journal_write_latency(storage: &dyn Storage) -> f64 {
    let run_id = "journal-bench";
    let run = DurableRun {
        run_id: run_id.to_owned(),
        workflow: "BenchWorkflow".to_owned(),
        session_id: "journal-bench-session".to_owned(),
        status: RunStatus::Running,
        input: json!({"topic": "quantum computing"}),
        attempt: 1,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_000,
        ..DurableRun::default()
    };
    let mut start = DurableWrite::new(run_id);
    start.run = Some(run);
    storage.write_durable(start).await.unwrap();
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let key = format!("step#{}", n + 1);
        let mut event = RunEvent::custom("step_done", json!({"key": key}));
        event.run_id = Some(run_id.to_owned());
        let write = DurableWrite {
            fence: Some(Fence {
                attempt: 1,
                status: Some(RunStatus::Running),
            }),
            entries: vec![JournalEntry {
                key,
                position: u32::try_from(n).unwrap(),
                kind: EntryKind::Step,
                status: EntryStatus::Done,
                input_hash: "9e3779b97f4a7c15".to_owned(),
                output: Some(json!({"summary": "a short result", "n": n})),
                attempt: 1,
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_000_000,
                ..JournalEntry::default()
            }],
            events: vec![StoredEvent {
                run_id: run_id.to_owned(),
                seq: n as u64 + 1,
                event,
            }],
            ..DurableWrite::new(run_id)
        };
        let start = Instant::now();
        storage.write_durable(write).await.unwrap();
        samples.push(start.elapsed());
    }
    median(samples)
}

fn ratio(figure: f64, floor: f64) -> f64 {
    (figure / floor * 100.0).round() / 100.0
}

/// The SQLite floors: (in-thread commit statements, bare insert + commit through sqlx).
#[cfg(feature = "sqlite")]
async fn sqlite_floors(dir: &std::path::Path) -> (f64, f64) {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

    // In-thread: the tables made by the store, then the statements on a rusqlite connection.
    let path = dir.join("floor.db");
    let store = buddy_storage::SqliteStorage::open(&path).await.unwrap();
    store.create().await.unwrap();
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    let key = "session_id = ?1 AND kind = 'workflow' AND scope = ''";
    let select = format!(
        "SELECT session_id, kind, scope, component_id, user_id, session_name, component_data,
            session_state, extra_data, created_at, updated_at, version, run_count,
            (SELECT MAX(seq) FROM workflow_sessions_runs WHERE {key}) AS max_seq
         FROM workflow_sessions WHERE {key}"
    );
    let upsert = "INSERT INTO workflow_sessions (session_id, kind, scope, component_id,
            user_id, session_name, component_data, session_state, extra_data, created_at,
            updated_at, version, run_count)
         VALUES (?1, 'workflow', '', 'bench', NULL, NULL, '{}', ?2, NULL, 1, 2, ?3, ?3)
         ON CONFLICT (session_id, kind, scope) DO UPDATE SET
            session_state = excluded.session_state, updated_at = excluded.updated_at,
            version = excluded.version, run_count = excluded.run_count";
    let insert_run = "INSERT INTO workflow_sessions_runs (session_id, kind, scope, seq, run_id,
            status, created_at, record) VALUES (?1, 'workflow', '', ?2, ?3, 'completed', 1, ?4)";
    let record = serde_json::to_string(&write("floor", 0).run).unwrap();
    let state = json!({"key_0": {"n": 0, "note": "updated by a run"}}).to_string();
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 1..=(SAMPLES as i64) {
        let start = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let count: Option<i64> = conn
            .prepare_cached(&select)
            .unwrap()
            .query_row(["floor"], |row| row.get(12))
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                error => Err(error),
            })
            .unwrap();
        let next = count.unwrap_or(0) + 1;
        conn.prepare_cached(upsert)
            .unwrap()
            .execute(rusqlite::params!["floor", state, next])
            .unwrap();
        conn.prepare_cached(insert_run)
            .unwrap()
            .execute(rusqlite::params!["floor", next, format!("run-{n}"), record])
            .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        samples.push(start.elapsed());
    }
    let in_thread = median(samples);

    // Through sqlx: one batch per commit on a connection of its own, as the store's writer
    // holds one.
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.join("bare.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE bare (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO bare (body) VALUES (?1); COMMIT")
            .bind(&record)
            .execute(&mut conn)
            .await
            .unwrap();
        samples.push(start.elapsed());
    }
    (in_thread, median(samples))
}

/// One autocommit insert through sqlx.
#[cfg(feature = "postgres")]
async fn postgres_floor(storage: &buddy_storage::PostgresStorage) -> f64 {
    let pool = storage.pool();
    let table = format!("buddy_bench_bare_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, body JSONB NOT NULL)"
    )))
    .execute(pool)
    .await
    .unwrap();
    let insert = format!("INSERT INTO {table} (body) VALUES ($1::jsonb)");
    let record = serde_json::to_string(&write("floor", 0).run).unwrap();
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
            .bind(&record)
            .execute(pool)
            .await
            .unwrap();
        samples.push(start.elapsed());
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(pool)
        .await
        .unwrap();
    median(samples)
}

/// Adds each floor and the ratios of the commit (the 100-run history figure) and of the
/// journal write to it.
fn with_floors(mut report: Value, floors: &[(&str, f64)]) -> Value {
    let commit = report["write_us"]["100"].as_f64().unwrap_or(f64::NAN);
    let journal = report["journal_write_us"].as_f64().unwrap_or(f64::NAN);
    for (name, floor) in floors {
        report[format!("{name}_us")] = json!((floor * 10.0).round() / 10.0);
        report[format!("commit_to_{name}")] = json!(ratio(commit, *floor));
        report[format!("journal_write_to_{name}")] = json!(ratio(journal, *floor));
    }
    report
}

async fn bench(storage: Arc<dyn Storage>) -> Value {
    storage.drop_tables().await.unwrap();
    storage.create().await.unwrap();
    let mut write_us = Map::new();
    for history in [1, 100, 10_000] {
        let us = write_latency(&*storage, &format!("w{history}"), history).await;
        write_us.insert(history.to_string(), json!((us * 10.0).round() / 10.0));
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        let session = storage
            .read(
                &SessionKey::new("w10000", SessionKind::Workflow),
                &ReadOptions::with_runs(20),
            )
            .await
            .unwrap()
            .unwrap();
        samples.push(start.elapsed());
        assert_eq!(session.runs.len(), 20);
    }
    let read_us = median(samples);
    let journal_us = journal_write_latency(&*storage).await;
    let mut per_sec = Map::new();
    let mut many = Map::new();
    for (tasks, name, sessions) in [
        (TASKS, "one_session", 1),
        (TASKS, "many_sessions", 64),
        (MANY_TASKS, "many_sessions", 1024),
    ] {
        let mut rounds = Vec::new();
        for round in 0..3 {
            let rate = throughput(storage.clone(), tasks, sessions, round).await;
            rounds.push(Duration::from_secs_f64(1.0 / rate));
        }
        let into = if tasks == TASKS {
            &mut per_sec
        } else {
            &mut many
        };
        into.insert(name.into(), json!((1e6 / median(rounds)).round()));
    }
    storage.drop_tables().await.unwrap();
    json!({
        "write_us": write_us,
        "read_us_20_runs": (read_us * 10.0).round() / 10.0,
        "journal_write_us": (journal_us * 10.0).round() / 10.0,
        "runs_per_sec_8_tasks": per_sec,
        "runs_per_sec_256_tasks": many,
    })
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut report = Map::new();
        report.insert(
            "note".into(),
            json!("medians; write = commit appending one run and setting one state key"),
        );
        #[cfg(feature = "sqlite")]
        {
            let dir = tempfile::tempdir().unwrap();
            let storage = buddy_storage::SqliteStorage::open(dir.path().join("bench.db"))
                .await
                .unwrap();
            let figures = bench(Arc::new(storage)).await;
            let (in_thread, driver) = sqlite_floors(dir.path()).await;
            let figures = with_floors(
                figures,
                &[("floor_in_thread", in_thread), ("floor_driver", driver)],
            );
            report.insert("sqlite".into(), figures);
        }
        #[cfg(feature = "postgres")]
        match std::env::var("BUDDY_TEST_POSTGRES_URL") {
            Ok(url) => {
                let storage = buddy_storage::PostgresStorage::connect(&url)
                    .await
                    .unwrap()
                    .table(&format!("buddy_bench_{}", std::process::id()))
                    .unwrap();
                let floor = postgres_floor(&storage).await;
                let figures = bench(Arc::new(storage)).await;
                report.insert(
                    "postgres".into(),
                    with_floors(figures, &[("floor_driver", floor)]),
                );
            }
            Err(_) => eprintln!("postgres part skipped: BUDDY_TEST_POSTGRES_URL is not set"),
        }
        println!("{}", Value::Object(report));
    });
}
