//! Storage benchmark: `cargo bench -p buddy-storage` (add `--features postgres` and set
//! `BUDDY_TEST_POSTGRES_URL` for the Postgres part). Prints one JSON object.
//!
//! For each backend:
//! - `write_us`: median latency of a commit that appends one run and updates one state key,
//!   on a session that already has 1, 100 and 10,000 runs;
//! - `read_us`: median latency of reading a session (10,000 runs) with its 20 recent runs;
//! - `runs_per_sec`: commits per second from 8 concurrent tasks, all on one session and
//!   spread over 64 sessions (median of 3 rounds).

#![allow(clippy::unwrap_used)] // A benchmark that cannot set up should stop loudly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buddy_core::run::{RunRecord, RunResponse, RunStatus};
use buddy_core::session::{SessionKey, SessionKind, SessionWrite, StatePatch};
use buddy_core::storage::{ReadOptions, Storage};
use serde_json::{Map, Value, json};

const SAMPLES: usize = 200;
const TASKS: usize = 8;
const THROUGHPUT_RUNS: usize = 800;

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

async fn throughput(storage: Arc<dyn Storage>, sessions: usize, round: usize) -> f64 {
    let start = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for n in (task..THROUGHPUT_RUNS).step_by(TASKS) {
                let id = format!("tp{round}-{sessions}-{}", n % sessions);
                storage.commit(write(&id, n)).await.unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    THROUGHPUT_RUNS as f64 / start.elapsed().as_secs_f64()
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
    let mut per_sec = Map::new();
    for (name, sessions) in [("one_session", 1), ("many_sessions", 64)] {
        let mut rounds = Vec::new();
        for round in 0..3 {
            let rate = throughput(storage.clone(), sessions, round).await;
            rounds.push(Duration::from_secs_f64(1.0 / rate));
        }
        per_sec.insert(name.into(), json!((1e6 / median(rounds)).round()));
    }
    storage.drop_tables().await.unwrap();
    json!({
        "write_us": write_us,
        "read_us_20_runs": (read_us * 10.0).round() / 10.0,
        "runs_per_sec_8_tasks": per_sec,
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
            report.insert("sqlite".into(), bench(Arc::new(storage)).await);
        }
        #[cfg(feature = "postgres")]
        match std::env::var("BUDDY_TEST_POSTGRES_URL") {
            Ok(url) => {
                let storage = buddy_storage::PostgresStorage::connect(&url)
                    .await
                    .unwrap()
                    .table(&format!("buddy_bench_{}", std::process::id()))
                    .unwrap();
                report.insert("postgres".into(), bench(Arc::new(storage)).await);
            }
            Err(_) => eprintln!("postgres part skipped: BUDDY_TEST_POSTGRES_URL is not set"),
        }
        println!("{}", Value::Object(report));
    });
}
