//! Durable-run benchmarks: what the journal costs, how fast a resume gets back to work, how
//! fast an event log replays. Each figure is printed next to a floor measured in the same
//! invocation.
//!
//! ```text
//! cargo bench --bench durable            # SQLite (a WAL file); Postgres too when
//!                                         # BUDDY_TEST_POSTGRES_URL is set (feature postgres)
//! ```
//!
//! - `journal write per step`: a durable body of 200 trivial steps minus the same body of
//!   none, per step, median of 15 runs. Floor: one row inserted and committed in its own
//!   transaction in the calling thread (rusqlite, the storage's settings) on SQLite; one
//!   autocommit insert through sqlx on Postgres.
//! - `resume to first unfinished entry`: a run with 100 finished steps and an answered wait,
//!   from `resume` until the body runs the code after them, median of 15. Floor: reading that
//!   run back (`load_durable`).
//! - `replay 10,000 events`: `durable::events(.., 0)` collected to its end. Floor: the raw
//!   `read_events` of the same rows in one call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buddy::durable::{self, DurableQuery, DurableWrite, StoredEvent};
use buddy::prelude::*;
use buddy::{RunEvent, RunStatus, Storage};
use futures::StreamExt;
use serde_json::json;

#[workflow]
struct Steps {
    #[field(default)]
    steps: u32,
    #[field(default)]
    reached: Arc<Mutex<Option<Instant>>>,
}

#[workflow(durable)]
impl Steps {
    async fn run(&mut self, wait: bool) -> Result<RunResponse> {
        let mut total = 0u64;
        for index in 0..self.steps {
            total += self
                .step("work", async move { Ok::<_, Error>(u64::from(index)) })
                .await?;
        }
        if wait {
            let _: bool = self.wait_for("go", "go?").await?;
            if let Ok(mut reached) = self.reached.lock() {
                *reached = Some(Instant::now());
            }
        }
        Ok(RunResponse::from_text(total.to_string()))
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print(name: &str, store: &str, figure: f64, unit: &str, floor: f64, target: &str) {
    println!(
        "{store:>8}  {name:<34} {figure:>9.1} {unit}   floor {floor:>8.1} {unit}   ratio {:>5.2}   target {target}",
        figure / floor.max(f64::MIN_POSITIVE)
    );
}

async fn run_steps(storage: &Arc<dyn Storage>, steps: u32) -> Duration {
    let mut workflow = Steps::builder()
        .storage(Arc::clone(storage))
        .steps(steps)
        .build()
        .expect("build");
    let started = Instant::now();
    workflow.run(false).await.expect("run");
    started.elapsed()
}

/// Per-step journal cost in µs: (200 steps − 0 steps) / 200, median of 15.
async fn journal_write(storage: &Arc<dyn Storage>) -> f64 {
    for _ in 0..3 {
        run_steps(storage, 20).await;
    }
    let mut per_step = Vec::new();
    for _ in 0..15 {
        let empty = run_steps(storage, 0).await;
        let full = run_steps(storage, 200).await;
        per_step.push(full.saturating_sub(empty).as_secs_f64() * 1e6 / 200.0);
    }
    median(per_step)
}

/// µs from `resume` to the code after 100 finished steps and a wait; and the floor.
async fn resume(storage: &Arc<dyn Storage>) -> (f64, f64) {
    let mut figures = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..15 {
        let reached = Arc::new(Mutex::new(None));
        let make = || {
            Steps::builder()
                .storage(Arc::clone(storage))
                .steps(100u32)
                .reached(Arc::clone(&reached))
                .build()
                .expect("build")
        };
        let paused = make().run(true).await.expect_err("pauses");
        let Some(durable::DurableError::Paused { run_id, .. }) = paused.durable_error() else {
            panic!("{paused:?}");
        };
        let run_id = run_id.clone();
        durable::answer(&**storage, &run_id, "go", json!(true))
            .await
            .expect("answer");
        let floor = Instant::now();
        storage.load_durable(&run_id).await.expect("load");
        floors.push(floor.elapsed().as_secs_f64() * 1e6);
        let mut workflow = make();
        let started = Instant::now();
        workflow.resume(&run_id).await.expect("resume");
        let at = reached.lock().expect("lock").expect("reached");
        figures.push(at.duration_since(started).as_secs_f64() * 1e6);
    }
    (median(figures), median(floors))
}

/// ms to replay 10,000 events through `durable::events`; and the raw read.
async fn replay(storage: &Arc<dyn Storage>) -> (f64, f64) {
    let mut workflow = Steps::builder()
        .storage(Arc::clone(storage))
        .build()
        .expect("build");
    let paused = workflow.run(true).await.expect_err("pauses");
    let Some(durable::DurableError::Paused { run_id, .. }) = paused.durable_error() else {
        panic!("{paused:?}");
    };
    let state = storage
        .load_durable(run_id)
        .await
        .expect("load")
        .expect("run");
    let attempt = state.run.attempt;
    let mut seq = state.last_seq;
    while seq < 10_000 {
        let mut write = DurableWrite::new(run_id.clone());
        write.fence = Some(durable::Fence {
            attempt,
            status: Some(RunStatus::Paused),
        });
        for _ in 0..500.min(10_000 - seq) {
            seq += 1;
            write.events.push(StoredEvent {
                run_id: run_id.clone(),
                seq,
                event: RunEvent::content("a few words of streamed text"),
            });
        }
        storage.write_durable(write).await.expect("append");
    }
    let mut figures = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..7 {
        let floor = Instant::now();
        let raw = storage
            .read_events(run_id, 0, usize::MAX)
            .await
            .expect("read");
        floors.push(floor.elapsed().as_secs_f64() * 1e3);
        assert_eq!(raw.len(), 10_000);
        let started = Instant::now();
        let count = durable::events(Arc::clone(storage), run_id.clone(), 0)
            .fold(0usize, |count, event| async move {
                event.expect("event");
                count + 1
            })
            .await;
        figures.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(count, 10_000);
    }
    (median(figures), median(floors))
}

/// One row inserted and committed in the calling thread, median µs of 2,000.
fn sqlite_floor(path: &std::path::Path) -> f64 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE floor (run_id TEXT, key TEXT, record TEXT, PRIMARY KEY (run_id, key));",
    )
    .expect("create");
    let counter = AtomicU64::new(0);
    let mut times = Vec::new();
    for _ in 0..2_000 {
        let key = counter.fetch_add(1, Ordering::Relaxed).to_string();
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        conn.execute(
            "INSERT INTO floor (run_id, key, record) VALUES ('run', ?1, '{\"output\": 1}')",
            [key],
        )
        .expect("insert");
        conn.execute_batch("COMMIT").expect("commit");
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    median(times)
}

async fn bench(store: &str, storage: Arc<dyn Storage>, write_floor: f64) {
    let per_step = journal_write(&storage).await;
    print(
        "journal write per step",
        store,
        per_step,
        "µs",
        write_floor,
        "≤ 100 µs (SQLite), ≤ 1 ms (Postgres)",
    );
    let (resume, load) = resume(&storage).await;
    print(
        "resume to first unfinished entry",
        store,
        resume / 1e3,
        "ms",
        load / 1e3,
        "≤ 10 ms",
    );
    let (replay, read) = replay(&storage).await;
    print("replay 10,000 events", store, replay, "ms", read, "≤ 50 ms");
    let runs = storage
        .durable_runs(&DurableQuery::all())
        .await
        .expect("list");
    println!("{store:>8}  ({} durable runs written)", runs.len());
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let floor = sqlite_floor(&dir.path().join("floor.db"));
    // The engine alone: a store that writes nothing to disk (floor: the same SQLite floor).
    bench("memory", Arc::new(MemoryStorage::new()), floor).await;
    let sqlite = buddy::SqliteStorage::open(dir.path().join("durable.db"))
        .await
        .expect("open")
        .table("bench")
        .expect("table");
    bench("sqlite", Arc::new(sqlite.clone()), floor).await;
    sqlite.close().await;
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("BUDDY_TEST_POSTGRES_URL") {
        let table = format!("bench_durable_{}", std::process::id());
        let storage = buddy::PostgresStorage::connect(&url)
            .await
            .expect("connect")
            .table(&table)
            .expect("table");
        let floor = postgres_floor(storage.pool(), &table).await;
        let storage: Arc<dyn Storage> = Arc::new(storage);
        bench("postgres", Arc::clone(&storage), floor).await;
        storage.drop_tables().await.expect("drop");
    }
}

/// One autocommit insert through sqlx on one connection, median µs of 500.
#[cfg(feature = "postgres")]
async fn postgres_floor(pool: &sqlx::PgPool, table: &str) -> f64 {
    let mut conn = pool.acquire().await.expect("connect");
    // The name is the bench's own table name (checked by `table()`) and a suffix.
    let floor = format!("{table}_floor");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {floor} (run_id TEXT, key TEXT, record JSONB, PRIMARY KEY (run_id, key))"
    )))
    .execute(&mut *conn)
    .await
    .expect("create");
    let mut times = Vec::new();
    for index in 0..500 {
        let started = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {floor} (run_id, key, record) VALUES ('run', $1, '{{\"output\": 1}}')"
        )))
        .bind(index.to_string())
        .execute(&mut *conn)
        .await
        .expect("insert");
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {floor}")))
        .execute(&mut *conn)
        .await
        .expect("drop");
    median(times)
}
