//! Server processes on one database, over real HTTP on 127.0.0.1: a run started on one
//! server process is followed live from another (its events reach the second process only
//! through the database), by a client that disconnects at random points and reconnects
//! with `Last-Event-ID`; then both processes are killed with SIGKILL and a third replays the
//! log to clients that reconnect at random points. None lost, none twice, the same bytes
//! from every process. On SQLite (one file, several processes) and on Postgres when
//! `BUDDY_TEST_POSTGRES_URL` is set.
//!
//! This binary is its own child: with `BUDDY_SERVER_CHILD` set it serves instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use buddy::prelude::*;
use buddy::{Server, Storage};
use buddy_core::testing::ScriptedModel;
use serde_json::{Value, json};

mod common;
use common::{Sse, assert_contiguous, read_sse};

/// Set in a child: the database it serves (`sqlite:<path>` or `postgres:<url>#<table>`).
const CHILD: &str = "BUDDY_SERVER_CHILD";

async fn open(database: &str) -> Arc<dyn Storage> {
    if let Some(path) = database.strip_prefix("sqlite:") {
        return Arc::new(
            buddy::SqliteStorage::open(path)
                .await
                .unwrap()
                .table("processes")
                .unwrap(),
        );
    }
    #[cfg(feature = "postgres")]
    if let Some(rest) = database.strip_prefix("postgres:") {
        let (url, table) = rest.rsplit_once('#').unwrap();
        return Arc::new(
            buddy::PostgresStorage::connect(url)
                .await
                .unwrap()
                .table(table)
                .unwrap(),
        );
    }
    panic!("unknown database {database}");
}

/// The child: serves an agent whose model streams 40 chunks 25 ms apart; prints
/// `listening <base url>`; serves until it is killed.
async fn child(database: &str) {
    let storage = open(database).await;
    let model = ScriptedModel::new()
        .chunks((0..40).map(|n| format!("chunk-{n} ")))
        .latency(Duration::from_millis(25));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening http://{}", listener.local_addr().unwrap());
    Server::new()
        .storage(storage)
        .agent(Agent::new(model).name("Blog Writer"))
        .serve_with_shutdown(listener, std::future::pending())
        .await
        .unwrap();
}

/// A server process, killed with SIGKILL when dropped.
struct Process {
    child: Child,
    base: String,
}

impl Process {
    fn start(database: &str) -> Process {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, database)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the child said {line:?}"))
            .to_owned();
        Process { child, base }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // `Child::kill` is SIGKILL: no graceful anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Random(u64);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound.max(1) as u64) as usize
    }
}

fn ended(events: &[Sse]) -> bool {
    events.last().is_some_and(|event| {
        matches!(
            event.event.as_deref(),
            Some("run_completed" | "run_error" | "run_cancelled")
        )
    })
}

async fn events_after(
    http: &reqwest::Client,
    base: &str,
    run_id: &str,
    after: &str,
    limit: usize,
) -> Vec<Sse> {
    read_sse(
        http.get(format!("{base}/v1/runs/{run_id}/events"))
            .header("last-event-id", after)
            .send()
            .await
            .unwrap(),
        limit,
    )
    .await
}

async fn across_processes(name: &str, database: &str, random: &mut Random) {
    let first = Process::start(database);
    let second = Process::start(database);
    let http = reqwest::Client::new();

    // Start a streamed run on the first process; leave after a few events.
    let response = http
        .post(format!("{}/v1/agents/blog-writer/runs", first.base))
        .json(&json!({"input": {"message": "go"}, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut seen = read_sse(response, 1 + random.below(4)).await;
    let started: Value = serde_json::from_str(&seen[0].data).unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_owned();

    // Follow it live from the second process, leaving and coming back at random points.
    let mut reconnects = 0;
    while !ended(&seen) {
        let after = seen.last().unwrap().id.clone().unwrap();
        let more = events_after(&http, &second.base, &run_id, &after, 1 + random.below(8)).await;
        assert!(!more.is_empty(), "{name}: nothing after {after}");
        seen.extend(more);
        reconnects += 1;
    }
    assert_contiguous(&seen, &format!("{name}: across {reconnects} reconnects"));
    assert_eq!(
        seen.last().unwrap().event.as_deref(),
        Some("run_completed"),
        "{name}"
    );
    assert!(seen.len() > 40, "{name}: every chunk is an event");
    // The process that ran it serves the same log.
    let from_first = events_after(&http, &first.base, &run_id, "0", usize::MAX).await;
    assert_eq!(
        from_first, seen,
        "{name}: the same events from both processes"
    );

    // Kill both; a new process replays the log for clients that come back at any point.
    drop(first);
    drop(second);
    let third = Process::start(database);
    for _ in 0..8 {
        let after = random.below(seen.len() + 1);
        let rest = events_after(&http, &third.base, &run_id, &after.to_string(), usize::MAX).await;
        assert_eq!(
            rest,
            seen[after..].to_vec(),
            "{name}: after {after}, in a new process"
        );
    }
    let (status, record) = {
        let response = http
            .get(format!("{}/v1/runs/{run_id}", third.base))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 200, "{name}: {record}");
    assert_eq!(record["status"], "completed", "{name}: {record}");
    eprintln!(
        "{name}: {} events, {reconnects} live reconnects across processes: ok",
        seen.len()
    );
}

async fn parent() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64)
        | 1;
    eprintln!("server processes: seed {seed}");
    let mut random = Random(seed);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("processes.db").display());
    across_processes("sqlite", &sqlite, &mut random).await;
    #[cfg(feature = "postgres")]
    match std::env::var("BUDDY_TEST_POSTGRES_URL") {
        Ok(url) => {
            let table = "server_processes";
            let storage = buddy::PostgresStorage::connect(&url)
                .await
                .unwrap()
                .table(table)
                .unwrap();
            storage.drop_tables().await.unwrap();
            across_processes("postgres", &format!("postgres:{url}#{table}"), &mut random).await;
        }
        Err(_) => {
            eprintln!("SKIPPED: server processes on Postgres (BUDDY_TEST_POSTGRES_URL is not set)")
        }
    }
    #[cfg(not(feature = "postgres"))]
    eprintln!("SKIPPED: server processes on Postgres (feature `postgres` is off)");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(CHILD) {
        Ok(database) => runtime.block_on(child(&database)),
        Err(_) => {
            // `cargo test -- --list` and filters: this binary has one test.
            if std::env::args().any(|arg| arg == "--list") {
                println!("server_processes: test");
                return;
            }
            runtime.block_on(parent());
        }
    }
}
