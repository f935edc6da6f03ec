//! Test doubles shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use buddy::prelude::*;
use buddy::storage::MemoryStorage;
use buddy_core::testing::FaultyStorage;

/// A member that remembers what the workflow handed it.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub debug_mode: bool,
    pub path: Vec<String>,
    pub attached: usize,
}

impl Member for Recorder {
    fn attach(&mut self, context: &MemberContext) {
        self.session_id = Some(context.session_id.clone());
        self.user_id.clone_from(&context.user_id);
        self.debug_mode = context.debug_mode;
        self.path.clone_from(&context.path);
        self.attached += 1;
    }
}

/// A stand-in named like the real agent type, to check registration by type name.
#[derive(Clone, Debug, Default)]
pub struct Agent {
    pub session_id: Option<String>,
}

impl Member for Agent {
    fn attach(&mut self, context: &MemberContext) {
        self.session_id = Some(context.session_id.clone());
    }
}

/// Storage whose reads succeed and whose every commit fails (as if the database went away).
pub fn failing_storage() -> FaultyStorage {
    FaultyStorage::new(MemoryStorage::new()).fail_commits_from(1)
}

/// Polls `check` until it holds or a generous deadline passes (for background writes).
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// A storage a test runs on: its name, the storage, and the directory it lives in.
pub type Store = (
    &'static str,
    std::sync::Arc<dyn buddy::Storage>,
    Option<tempfile::TempDir>,
);

/// The storages a test runs on: in-memory (with `memory`), SQLite in a fresh directory, and
/// Postgres in tables named `<test>` when `BUDDY_TEST_POSTGRES_URL` is set (else a loud
/// skip). `test` names the SQLite table and the Postgres tables, which are dropped first.
pub async fn stores(test: &str, memory: bool) -> Vec<Store> {
    #[cfg(feature = "postgres")]
    use buddy::Storage as _;

    let mut stores: Vec<Store> = Vec::new();
    if memory {
        stores.push(("memory", std::sync::Arc::new(MemoryStorage::new()), None));
    }
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = buddy::SqliteStorage::open(dir.path().join("test.db"))
            .await
            .unwrap()
            .table(test)
            .unwrap();
        stores.push(("sqlite", std::sync::Arc::new(sqlite), Some(dir)));
    }
    #[cfg(not(feature = "sqlite"))]
    eprintln!("SKIPPED: {test} on SQLite (feature `sqlite` is off)");
    #[cfg(feature = "postgres")]
    match std::env::var("BUDDY_TEST_POSTGRES_URL") {
        Ok(url) => {
            let postgres = buddy::PostgresStorage::connect(&url)
                .await
                .unwrap()
                .table(test)
                .unwrap();
            postgres.drop_tables().await.unwrap();
            stores.push(("postgres", std::sync::Arc::new(postgres), None));
        }
        Err(_) => eprintln!("SKIPPED: {test} on Postgres (BUDDY_TEST_POSTGRES_URL is not set)"),
    }
    #[cfg(not(feature = "postgres"))]
    eprintln!("SKIPPED: {test} on Postgres (feature `postgres` is off)");
    stores
}

/// One parsed server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Parses a `text/event-stream` body as the SSE specification says: fields per line,
/// `data` lines joined, comments skipped, an event ends at a blank line. Stops after
/// `limit` events (to disconnect early).
pub async fn read_sse(response: reqwest::Response, limit: usize) -> Vec<Sse> {
    use futures::StreamExt;

    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let (mut id, mut event, mut data) = (None, None, Vec::<String>::new());
    while let Some(chunk) = body.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_owned();
            buffer.drain(..=end);
            if line.is_empty() {
                if !data.is_empty() {
                    events.push(Sse {
                        id: id.take(),
                        event: event.take(),
                        data: data.join("\n"),
                    });
                    data.clear();
                    if events.len() == limit {
                        return events;
                    }
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => id = Some(value),
                "event" => event = Some(value),
                "data" => data.push(value),
                _ => {}
            }
        }
    }
    events
}

/// The ids of `events`, as numbers.
pub fn seqs(events: &[Sse]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event.id.as_deref().unwrap().parse().unwrap())
        .collect()
}

/// Asserts the events are numbered 1, 2, 3, … with none missing and none twice.
pub fn assert_contiguous(events: &[Sse], context: &str) {
    let numbers = seqs(events);
    assert_eq!(
        numbers,
        (1..=numbers.len() as u64).collect::<Vec<_>>(),
        "{context}"
    );
}

/// Every event of run `run_id` on the server at `base`, the stream read to its end.
pub async fn replay(http: &reqwest::Client, base: &str, run_id: &str) -> Vec<Sse> {
    read_sse(
        http.get(format!("{base}/v1/runs/{run_id}/events"))
            .send()
            .await
            .unwrap(),
        usize::MAX,
    )
    .await
}
