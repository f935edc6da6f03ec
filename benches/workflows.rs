//! Workflow benchmarks of issue 6, printed as one JSON object per invocation so results
//! compare run to run and against other frameworks on the same machine.
//!
//! ```text
//! cargo bench --bench workflows -- --workload a|b|c|d|e|all
//!     [--base-url URL] [--model scripted|http] [--runs N] [--latency-ms MS]
//!     [--concurrency C] [--repeats R] [--storage sqlite|memory] [--sqlite-connections N]
//!     [--floor-only]
//! ```
//!
//! - A: a two-agent `#[workflow]` on SQLite, fresh session per run: runs per second and the
//!   framework overhead per run (a run minus the same two HTTP calls made with raw reqwest).
//! - B: N runs of ONE session: time per run at runs 1–10, ~1,000, ~10,000; bytes per run.
//! - C: C concurrent runs on distinct sessions against a server with latency: wall time and
//!   peak memory, one child process per C (this program re-executes itself).
//! - D: a 25-turn conversation of an agent with history on SQLite: framework time.
//! - E: agent construction time and memory.
//!
//! Every workload also measures its floors in the same invocation (the same HTTP calls
//! made raw; a session commit's statements run in the calling thread with rusqlite; one
//! durable write through sqlx) and prints each figure's `ratio_to_floor` next to it.
//!
//! See `benches/README.md` for the method and the figures.

use std::alloc::System;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use buddy::prelude::*;
use buddy_core::model::{Model, ModelError, ModelRequest, ModelResponse};
use buddy_core::testing::{Canned, FunctionModel, TestServer, openai};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

// Counts allocations; `stats_alloc` holds the one `unsafe impl GlobalAlloc`, since the
// workspace forbids `unsafe_code`.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type BenchResult<T> = std::result::Result<T, String>;

/// The article workflow of the README: a researcher, then a writer, one model call each.
#[workflow(description = "Research a topic, then write an article.")]
struct ArticleBench {
    #[member(default = Agent::new(echo_model()).name("researcher"))]
    researcher: Agent,
    #[member(default = Agent::new(echo_model()).name("writer"))]
    writer: Agent,
}

#[workflow]
impl ArticleBench {
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.run(format!("Research: {topic}")).await?;
        let article = self
            .writer
            .run(format!("Write an article based on:\n{}", research.text()))
            .await?;
        Ok(RunResponse::from_text(article.text()))
    }
}

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelKind {
    Scripted,
    Http,
}

#[derive(Clone, Debug)]
struct Args {
    workload: String,
    base_url: Option<String>,
    model: Option<ModelKind>,
    runs: Option<usize>,
    latency_ms: u64,
    concurrency: Option<usize>,
    repeats: Option<usize>,
    memory_storage: bool,
    /// C with `--concurrency`: measure only the floor (C concurrent raw HTTP pairs).
    floor_only: bool,
}

const USAGE: &str = "usage: cargo bench --bench workflows -- --workload a|b|c|d|e|all \
[--base-url URL] [--model scripted|http] [--runs N] [--latency-ms MS] [--concurrency C] \
[--repeats R] [--storage sqlite|memory] [--sqlite-connections N] \
[--floor-only (C with --concurrency: only the raw HTTP floor)]";

fn parse_args() -> BenchResult<Args> {
    let mut args = Args {
        workload: "all".into(),
        base_url: None,
        model: None,
        runs: None,
        latency_ms: 50,
        concurrency: None,
        repeats: None,
        memory_storage: false,
        floor_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("`{name}` needs a value; {USAGE}"))
        };
        let number = |name: &str, text: String| -> BenchResult<usize> {
            text.parse::<usize>()
                .map_err(|_| format!("`{name}` needs a non-negative integer, got `{text}`"))
        };
        match flag.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--workload" => {
                let w = value("--workload")?.to_ascii_lowercase();
                if !["a", "b", "c", "d", "e", "all"].contains(&w.as_str()) {
                    return Err(format!("unknown workload `{w}`; {USAGE}"));
                }
                args.workload = w;
            }
            "--base-url" => args.base_url = Some(value("--base-url")?),
            "--model" => {
                args.model = Some(match value("--model")?.as_str() {
                    "scripted" => ModelKind::Scripted,
                    "http" => ModelKind::Http,
                    other => return Err(format!("unknown model `{other}`; {USAGE}")),
                })
            }
            "--runs" => args.runs = Some(number("--runs", value("--runs")?)?.max(1)),
            "--latency-ms" => {
                args.latency_ms = number("--latency-ms", value("--latency-ms")?)? as u64
            }
            "--concurrency" => {
                args.concurrency = Some(number("--concurrency", value("--concurrency")?)?.max(1))
            }
            "--repeats" => args.repeats = Some(number("--repeats", value("--repeats")?)?.max(1)),
            "--storage" => {
                args.memory_storage = match value("--storage")?.as_str() {
                    "sqlite" => false,
                    "memory" => true,
                    other => return Err(format!("unknown storage `{other}`; {USAGE}")),
                }
            }
            "--sqlite-connections" => {
                let n = number("--sqlite-connections", value("--sqlite-connections")?)?;
                let n =
                    u32::try_from(n.max(1)).map_err(|_| "`--sqlite-connections` is too large")?;
                let _ = SQLITE_CONNECTIONS.set(n);
            }
            "--floor-only" => args.floor_only = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    if args.base_url.is_some() && args.model == Some(ModelKind::Scripted) {
        return Err("`--base-url` and `--model scripted` exclude each other".into());
    }
    if args.floor_only && (args.workload != "c" || args.concurrency.is_none()) {
        return Err("`--floor-only` needs `--workload c --concurrency C`".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn echo_model() -> FunctionModel {
    FunctionModel::new(|_| Ok(ModelResponse::text("A scripted answer."))).named("scripted")
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// A `/proc/self/status` field in kB (VmHWM, VmRSS).
fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Read once at start: out of descriptors, `/proc/self/limits` cannot be opened.
static OPEN_FILES_LIMIT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn open_files_limit() -> Option<String> {
    OPEN_FILES_LIMIT.get_or_init(read_open_files_limit).clone()
}

fn read_open_files_limit() -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    Some(format!("{} (hard {})", parts.get(3)?, parts.get(4)?))
}

/// Turns an error into text, naming EMFILE clearly.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let text = buddy_core::error::chain(error);
    if text.contains("Too many open files") || text.contains("os error 24") {
        format!(
            "out of file descriptors (EMFILE; limit {}): raise it with `ulimit -n` \
             before running, or lower --concurrency. Cause: {text}",
            open_files_limit().unwrap_or_else(|| "unknown".into())
        )
    } else {
        text
    }
}

/// A model that times the inner model's calls (the "model time" at the model boundary),
/// and can capture the requests it sees.
#[derive(Debug)]
struct Probe {
    inner: Arc<dyn Model>,
    nanos: AtomicU64,
    capture: AtomicBool,
    captured: Mutex<Vec<ModelRequest>>,
}

impl Probe {
    fn new(inner: Arc<dyn Model>) -> Arc<Self> {
        Arc::new(Probe {
            inner,
            nanos: AtomicU64::new(0),
            capture: AtomicBool::new(false),
            captured: Mutex::new(Vec::new()),
        })
    }
    fn take_nanos(&self) -> u64 {
        self.nanos.swap(0, Ordering::Relaxed)
    }
}

#[async_trait]
impl Model for Probe {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    async fn response(
        &self,
        request: &ModelRequest,
    ) -> std::result::Result<ModelResponse, ModelError> {
        if self.capture.load(Ordering::Relaxed) {
            self.captured
                .lock()
                .map_err(|_| ModelError::msg("poisoned"))?
                .push(request.clone());
        }
        let started = Instant::now();
        let response = self.inner.response(request).await;
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        response
    }
}

/// The model side of a workload: the loopback server (if ours), the chat model, the probe.
struct Backend {
    _server: Option<TestServer>,
    kind: ModelKind,
    base_url: Option<String>,
    chat: Option<OpenAIChat>,
    probe: Arc<Probe>,
}

impl Backend {
    async fn new(args: &Args, default: ModelKind, latency: Option<Duration>) -> Self {
        let kind = if args.base_url.is_some() {
            ModelKind::Http
        } else {
            args.model.unwrap_or(default)
        };
        if kind == ModelKind::Scripted {
            return Backend {
                _server: None,
                kind,
                base_url: None,
                chat: None,
                probe: Probe::new(Arc::new(echo_model())),
            };
        }
        let (server, base_url) = match &args.base_url {
            Some(url) => (None, url.trim_end_matches('/').to_owned()),
            None => {
                let server = TestServer::start().await;
                let mut canned = Canned::json(openai::text_completion("A canned answer."));
                if let Some(delay) = latency.filter(|d| !d.is_zero()) {
                    canned = canned.delay(delay);
                }
                server.fallback(canned);
                server.record_requests(false);
                let url = server.base_url();
                (Some(server), url)
            }
        };
        let chat = OpenAIChat::new("gpt-4o-mini")
            .base_url(base_url.clone())
            .api_key("sk-bench")
            .max_retries(0);
        Backend {
            _server: server,
            kind,
            base_url: Some(base_url),
            chat: Some(chat.clone()),
            probe: Probe::new(Arc::new(chat)),
        }
    }

    fn model(&self) -> Arc<dyn Model> {
        self.probe.clone()
    }

    fn label(&self) -> Value {
        match (&self._server, self.kind) {
            (_, ModelKind::Scripted) => json!("scripted (in-process FunctionModel, no HTTP)"),
            (Some(_), _) => json!("http (loopback TestServer)"),
            (None, _) => json!(format!(
                "http ({})",
                self.base_url.as_deref().unwrap_or_default()
            )),
        }
    }
}

/// `--sqlite-connections N`: a pool of N connections with the settings `SqliteStorage::open`
/// uses (WAL, synchronous=NORMAL, busy timeout, foreign keys), through `from_pool`, instead
/// of `open`'s own writer connection.
static SQLITE_CONNECTIONS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

async fn sqlite(dir: &Path, file: &str, table: &str) -> BenchResult<SqliteStorage> {
    let storage = match SQLITE_CONNECTIONS.get() {
        None => SqliteStorage::open(dir.join(file))
            .await
            .map_err(|e| format!("open SQLite: {}", describe(&e)))?,
        Some(&n) => {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
            let options = SqliteConnectOptions::new()
                .filename(dir.join(file))
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new()
                .max_connections(n)
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .map_err(|e| format!("open SQLite: {e}"))?;
            SqliteStorage::from_pool(pool)
        }
    };
    storage
        .table(table)
        .map_err(|e| format!("open SQLite: {}", describe(&e)))
}

/// The workflow on `storage`, or on `MemoryStorage` with `--storage memory` (to split the
/// framework's own cost from SQLite's).
fn article(backend: &Backend, storage: &SqliteStorage, args: &Args) -> BenchResult<ArticleBench> {
    let builder = ArticleBench::builder()
        .name("article_bench")
        .researcher(Agent::new(backend.model()).name("researcher"))
        .writer(Agent::new(backend.model()).name("writer"));
    let builder = if args.memory_storage {
        builder.storage(MemoryStorage::new())
    } else {
        builder.storage(storage.clone())
    };
    builder
        .build()
        .map_err(|e| format!("build workflow: {}", describe(&e)))
}

async fn run_once(workflow: &mut ArticleBench, topic: &str) -> BenchResult<()> {
    let response = workflow
        .run(topic.to_owned())
        .await
        .map_err(|e| format!("workflow run: {}", describe(&e)))?;
    black_box(response);
    Ok(())
}

fn tempdir() -> BenchResult<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))
}

// ---------------------------------------------------------------------------------------
// Floors: the same work without the framework, measured in the same invocation
// ---------------------------------------------------------------------------------------

/// `figure` next to its floor, so a gap reads the same on a loaded machine as on an idle one:
/// `{"floor": what, "floor_us": floor, "ratio_to_floor": figure / floor}` (`floor_ms` for
/// figures in ms).
fn vs_floor(what: &str, figure: f64, floor: f64, unit: &str) -> Value {
    if !(floor.is_finite() && floor > 0.0 && figure.is_finite()) {
        return Value::Null;
    }
    let mut map = serde_json::Map::new();
    map.insert("floor".into(), json!(what));
    map.insert(format!("floor_{unit}"), json!(round(floor, 3)));
    map.insert("ratio_to_floor".into(), json!(round(figure / floor, 2)));
    Value::Object(map)
}

/// Raw POSTs of pre-serialised request bodies with a plain `reqwest::Client` and a parsed
/// URL: the HTTP work of the model calls without the framework (no request building, no
/// response decoding, no retries or timeouts).
struct RawHttp {
    client: reqwest::Client,
    url: reqwest::Url,
    bodies: Vec<Vec<u8>>,
}

impl RawHttp {
    /// `bodies` as `OpenAIChat::request_body` gives them, to `{base_url}/chat/completions`.
    fn new(base_url: &str, bodies: &[Value]) -> BenchResult<Self> {
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        Ok(RawHttp {
            client: reqwest::Client::new(),
            url: reqwest::Url::parse(&url).map_err(|e| format!("raw URL `{url}`: {e}"))?,
            bodies: bodies.iter().map(|b| b.to_string().into_bytes()).collect(),
        })
    }

    /// Sends every body in turn, reading each answer whole.
    async fn post_all(&self) -> BenchResult<()> {
        for body in &self.bodies {
            let response = self
                .client
                .post(self.url.clone())
                .bearer_auth("sk-bench")
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| format!("raw request: {}", describe(&e)))?;
            black_box(
                response
                    .bytes()
                    .await
                    .map_err(|e| format!("raw body: {}", describe(&e)))?,
            );
        }
        Ok(())
    }
}

/// The sizes of what a workload stored (the largest session row's columns, the mean run
/// record), so the SQLite floors write as many bytes as the workload did.
#[derive(Clone, Copy, Debug)]
struct Payload {
    component_data: usize,
    session_state: usize,
    extra_data: usize,
    record: usize,
}

impl Payload {
    async fn of(storage: &SqliteStorage, table: &str) -> BenchResult<Self> {
        use sqlx::Row;
        let err = |e: sqlx::Error| format!("payload query: {e}");
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(max(length(component_data)), 2),
                    coalesce(max(length(session_state)), 2),
                    coalesce(max(length(extra_data)), 0),
                    (SELECT CAST(coalesce(avg(length(record)), 0) AS INTEGER) FROM {table}_runs)
             FROM {table}"
        )))
        .fetch_one(storage.pool())
        .await
        .map_err(err)?;
        let size = |i: usize| -> BenchResult<usize> {
            let n: i64 = row.try_get::<i64, _>(i).map_err(err)?;
            Ok(usize::try_from(n).unwrap_or(0))
        };
        Ok(Payload {
            component_data: size(0)?,
            session_state: size(1)?,
            extra_data: size(2)?,
            record: size(3)?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "component_data": self.component_data,
            "session_state": self.session_state,
            "extra_data": self.extra_data,
            "run_record": self.record,
        })
    }
}

/// The floor of a session commit: the statements `SqliteStorage::commit` runs (`BEGIN
/// IMMEDIATE`; SELECT the session row with its runs' `MAX(seq)`; `INSERT … ON CONFLICT DO
/// UPDATE` the session row; INSERT the run; `COMMIT`), on the same table shapes (copied
/// from buddy-storage's `Sql::new`), run in the calling thread with rusqlite and cached
/// prepared statements: no worker-thread hand-off, no decoding, no merge.
struct InThreadCommits {
    conn: rusqlite::Connection,
    component_data: String,
    session_state: String,
    extra_data: Option<String>,
    record: String,
    commits: u64,
}

const FLOOR_CREATE: &str = "CREATE TABLE IF NOT EXISTS floor_sessions (
        session_id TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'workflow',
        scope TEXT NOT NULL DEFAULT '',
        component_id TEXT,
        user_id TEXT,
        session_name TEXT,
        component_data TEXT NOT NULL DEFAULT '{}',
        session_state TEXT NOT NULL DEFAULT '{}',
        extra_data TEXT,
        created_at INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        run_count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, kind, scope)
    );
    CREATE TABLE IF NOT EXISTS floor_sessions_runs (
        session_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        scope TEXT NOT NULL,
        seq INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (session_id, kind, scope, seq),
        FOREIGN KEY (session_id, kind, scope)
            REFERENCES floor_sessions (session_id, kind, scope) ON DELETE CASCADE
    );
    CREATE INDEX IF NOT EXISTS floor_sessions_updated_idx
        ON floor_sessions (updated_at DESC, session_id DESC, kind, scope);";

const FLOOR_SELECT: &str = "SELECT session_id, kind, scope, component_id, user_id, session_name,
        component_data, session_state, extra_data, created_at, updated_at, version, run_count,
        (SELECT MAX(seq) FROM floor_sessions_runs
         WHERE session_id = ?1 AND kind = ?2 AND scope = ?3) AS max_seq
     FROM floor_sessions WHERE session_id = ?1 AND kind = ?2 AND scope = ?3";

const FLOOR_UPSERT: &str = "INSERT INTO floor_sessions (session_id, kind, scope, component_id,
        user_id, session_name, component_data, session_state, extra_data, created_at,
        updated_at, version, run_count)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
     ON CONFLICT (session_id, kind, scope) DO UPDATE SET
        component_id = excluded.component_id, user_id = excluded.user_id,
        session_name = excluded.session_name,
        component_data = excluded.component_data,
        session_state = excluded.session_state, extra_data = excluded.extra_data,
        updated_at = excluded.updated_at, version = excluded.version,
        run_count = excluded.run_count";

const FLOOR_INSERT_RUN: &str = "INSERT INTO floor_sessions_runs (session_id, kind, scope, seq,
        run_id, status, created_at, record)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

impl InThreadCommits {
    /// A fresh database file at `path` with `SqliteStorage::open`'s settings (WAL,
    /// `synchronous=NORMAL`, busy timeout 10 s, foreign keys), tables created (not timed).
    fn open(path: &Path, payload: Payload) -> BenchResult<Self> {
        let err = |e: rusqlite::Error| format!("in-thread floor: {e}");
        let conn = rusqlite::Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(err)?;
        conn.execute_batch(FLOOR_CREATE).map_err(err)?;
        Ok(InThreadCommits {
            conn,
            component_data: "x".repeat(payload.component_data),
            session_state: "x".repeat(payload.session_state),
            extra_data: (payload.extra_data > 0).then(|| "x".repeat(payload.extra_data)),
            record: "x".repeat(payload.record),
            commits: 0,
        })
    }

    /// One commit of a run on session `session_id` (created by the first); its duration.
    fn commit(&mut self, session_id: &str) -> BenchResult<Duration> {
        use rusqlite::OptionalExtension;
        let err = |e: rusqlite::Error| format!("in-thread floor: {e}");
        self.commits += 1;
        let run_id = format!("{:032x}", self.commits);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let started = Instant::now();
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(err)?;
        let existing: Option<(i64, i64, i64)> = self
            .conn
            .prepare_cached(FLOOR_SELECT)
            .and_then(|mut s| {
                s.query_row(rusqlite::params![session_id, "workflow", ""], |row| {
                    Ok((row.get(9)?, row.get(11)?, row.get(12)?))
                })
                .optional()
            })
            .map_err(err)?;
        let (created_at, version, run_count) = existing.unwrap_or((now, 0, 0));
        self.conn
            .prepare_cached(FLOOR_UPSERT)
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    session_id,
                    "workflow",
                    "",
                    "article_bench",
                    Option::<&str>::None,
                    Option::<&str>::None,
                    self.component_data,
                    self.session_state,
                    self.extra_data,
                    created_at,
                    now,
                    version + 1,
                    run_count + 1,
                ])
            })
            .map_err(err)?;
        self.conn
            .prepare_cached(FLOOR_INSERT_RUN)
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    session_id,
                    "workflow",
                    "",
                    run_count + 1,
                    run_id,
                    "completed",
                    now,
                    self.record,
                ])
            })
            .map_err(err)?;
        self.conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map_err(err)?;
        Ok(started.elapsed())
    }
}

/// The floor of one durable write through sqlx: one autocommit `INSERT` of a run record's
/// bytes (SQLite commits it: a WAL append, `synchronous=NORMAL`), on a fresh file with the
/// pool `SqliteStorage::open` makes. One round trip to sqlx's worker thread.
struct SqlxInserts {
    pool: sqlx::SqlitePool,
    record: String,
}

impl SqlxInserts {
    async fn open(path: &Path, payload: Payload) -> BenchResult<Self> {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| format!("sqlx floor: {e}"))?;
        sqlx::query("CREATE TABLE floor_insert (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")
            .execute(&pool)
            .await
            .map_err(|e| format!("sqlx floor: {e}"))?;
        Ok(SqlxInserts {
            pool,
            record: "x".repeat(payload.record),
        })
    }

    async fn commit(&self) -> BenchResult<Duration> {
        let started = Instant::now();
        sqlx::query("INSERT INTO floor_insert (record) VALUES (?1)")
            .bind(&self.record)
            .execute(&self.pool)
            .await
            .map_err(|e| format!("sqlx floor: {e}"))?;
        Ok(started.elapsed())
    }
}

/// The two SQLite floors of a workload with `payload`, on fresh files in `dir`, measured
/// in blocks between the workload's own batches; medians per commit (µs).
struct SqliteFloors {
    in_thread: InThreadCommits,
    sqlx: SqlxInserts,
    /// The session every in-thread commit writes (one session, as in B and D), or `None`
    /// for a fresh session per commit (as in A).
    session: Option<String>,
    fresh: u64,
    in_thread_us: Vec<f64>,
    sqlx_us: Vec<f64>,
}

impl SqliteFloors {
    /// Opens both floors and warms them up with 50 commits each (not counted).
    async fn open(dir: &Path, payload: Payload, session: Option<&str>) -> BenchResult<Self> {
        let mut floors = SqliteFloors {
            in_thread: InThreadCommits::open(&dir.join("floor-in-thread.db"), payload)?,
            sqlx: SqlxInserts::open(&dir.join("floor-sqlx.db"), payload).await?,
            session: session.map(str::to_owned),
            fresh: 0,
            in_thread_us: Vec::new(),
            sqlx_us: Vec::new(),
        };
        floors.measure(50).await?;
        floors.in_thread_us.clear();
        floors.sqlx_us.clear();
        Ok(floors)
    }

    /// `n` in-thread commits, then `n` sqlx inserts.
    async fn measure(&mut self, n: usize) -> BenchResult<()> {
        for _ in 0..n {
            self.fresh += 1;
            let took = match &self.session {
                Some(id) => self.in_thread.commit(id)?,
                None => self.in_thread.commit(&format!("floor-{}", self.fresh))?,
            };
            self.in_thread_us.push(micros(took));
        }
        for _ in 0..n {
            self.sqlx_us.push(micros(self.sqlx.commit().await?));
        }
        Ok(())
    }

    fn in_thread_us_median(&self) -> f64 {
        median(&self.in_thread_us)
    }

    fn sqlx_us_median(&self) -> f64 {
        median(&self.sqlx_us)
    }
}

// ---------------------------------------------------------------------------------------
// A: throughput and framework overhead
// ---------------------------------------------------------------------------------------

async fn workload_a(args: &Args) -> BenchResult<Value> {
    let backend = Backend::new(args, ModelKind::Http, None).await;
    let dir = tempdir()?;
    let storage = sqlite(dir.path(), "a.db", "workflows").await?;
    let mut workflow = article(&backend, &storage, args)?;
    let runs = args.runs.unwrap_or(3_000);
    let batch = 100.min(runs);
    let batches = runs.div_ceil(batch);

    // Warm-up (tables, connections, allocator), then capture the two request bodies.
    for i in 0..200 {
        workflow.use_session(format!("warm-{i}"));
        run_once(&mut workflow, "quantum computing").await?;
    }
    backend.probe.capture.store(true, Ordering::Relaxed);
    workflow.use_session("capture");
    run_once(&mut workflow, "quantum computing").await?;
    backend.probe.capture.store(false, Ordering::Relaxed);
    let captured = std::mem::take(
        &mut *backend
            .probe
            .captured
            .lock()
            .map_err(|_| "poisoned capture")?,
    );
    if captured.len() != 2 {
        return Err(format!(
            "expected 2 model calls per run, saw {}",
            captured.len()
        ));
    }

    // Floor: the same two calls, raw (bodies serialised once, as `OpenAIChat` sends them).
    let raw = match &backend.chat {
        Some(chat) => {
            let bodies: Vec<Value> = captured
                .iter()
                .map(|r| chat.request_body(r, false))
                .collect();
            Some(RawHttp::new(
                backend.base_url.as_deref().unwrap_or_default(),
                &bodies,
            )?)
        }
        None => None,
    };
    let raw_pair = || async {
        match &raw {
            Some(raw) => raw.post_all().await,
            None => Ok(()),
        }
    };
    for _ in 0..200 {
        raw_pair().await?;
    }
    // Floors: a session commit in the calling thread, and one durable sqlx write, each on a
    // fresh file, with the bytes a run stores.
    let (payload, mut floors) = if args.memory_storage {
        (None, None)
    } else {
        let payload = Payload::of(&storage, "workflows").await?;
        let floors = SqliteFloors::open(dir.path(), payload, None).await?;
        (Some(payload), Some(floors))
    };

    let (mut run_us, mut raw_us, mut model_us) = (Vec::new(), Vec::new(), Vec::new());
    let (mut allocs, mut alloc_bytes, mut raw_alloc_bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut total = Duration::ZERO;
    let mut done = 0;
    for b in 0..batches {
        let n = batch.min(runs - done);
        backend.probe.take_nanos();
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        for i in 0..n {
            workflow.use_session(format!("a-{b}-{i}"));
            run_once(&mut workflow, "quantum computing").await?;
        }
        let elapsed = started.elapsed();
        let change = region.change();
        allocs.push(change.allocations as f64 / n as f64);
        alloc_bytes.push(change.bytes_allocated as f64 / n as f64);
        total += elapsed;
        done += n;
        run_us.push(micros(elapsed) / n as f64);
        model_us.push(backend.probe.take_nanos() as f64 / 1e3 / n as f64);
        if raw.is_some() {
            let region = Region::new(GLOBAL);
            let started = Instant::now();
            for _ in 0..n {
                raw_pair().await?;
            }
            raw_us.push(micros(started.elapsed()) / n as f64);
            raw_alloc_bytes.push(region.change().bytes_allocated as f64 / n as f64);
        }
        if let Some(floors) = &mut floors {
            floors.measure(n).await?;
        }
    }
    // The floor SQLite through sqlx sets: one `SELECT 1` round trip on the same pool (a run
    // makes three round trips: read the session; BEGIN IMMEDIATE + select; upsert + insert +
    // COMMIT).
    let mut select1_us = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        for _ in 0..100 {
            let one: i64 = sqlx::query_scalar("SELECT 1")
                .fetch_one(storage.pool())
                .await
                .map_err(|e| format!("SELECT 1: {e}"))?;
            black_box(one);
        }
        select1_us.push(micros(started.elapsed()) / 100.0);
    }
    let run = median(&run_us);
    let raw_median = if raw.is_some() { median(&raw_us) } else { 0.0 };
    let in_thread = floors.as_ref().map(SqliteFloors::in_thread_us_median);
    let sqlx_insert = floors.as_ref().map(SqliteFloors::sqlx_us_median);
    let (run_floor, run_floor_what) = match (raw.is_some(), in_thread) {
        (true, Some(commit)) => (raw_median + commit, "raw HTTP pair + in-thread commit"),
        (true, None) => (raw_median, "raw HTTP pair"),
        (false, Some(commit)) => (commit, "in-thread commit"),
        (false, None) => (f64::NAN, ""),
    };
    Ok(json!({
        "workload": "a",
        "what": "two-agent #[workflow] (researcher, writer; one chat completion each), SQLite WAL storage, fresh session per run",
        "model": backend.label(),
        "runs": runs,
        "batch": batch,
        "runs_per_second": round(runs as f64 / total.as_secs_f64(), 1),
        "run_us_median": round(run, 2),
        "run_us_median_vs_floor": vs_floor(run_floor_what, run, run_floor, "us"),
        "raw_two_http_calls_us_median": round(raw_median, 2),
        "framework_overhead_us_median": round(run - raw_median, 2),
        "framework_overhead_us_median_vs_floor": in_thread.map_or(Value::Null, |commit| {
            vs_floor("in-thread commit", run - raw_median, commit, "us")
        }),
        "floors": {
            "raw_http_pair_us_median": raw.is_some().then(|| round(raw_median, 2)),
            "in_thread_commit_us_median": in_thread.map(|f| round(f, 2)),
            "sqlx_insert_commit_us_median": sqlx_insert.map(|f| round(f, 2)),
            "payload_bytes": payload.map(|p| p.json()),
            "measured": "in the same invocation, one block of each floor after every batch of runs",
        },
        "time_inside_model_us_median": round(median(&model_us), 2),
        "run_minus_model_us_median": round(run - median(&model_us), 2),
        "sqlite_select_1_round_trip_us_median": round(median(&select1_us), 2),
        "allocations_per_run_median": round(median(&allocs), 1),
        "bytes_allocated_per_run_median": round(median(&alloc_bytes), 0),
        "raw_two_http_calls_bytes_allocated_median": round(median(&raw_alloc_bytes), 0),
        "storage": if args.memory_storage { "memory" } else { "sqlite (WAL, synchronous=NORMAL)" },
        "target_overhead_us": 150,
    }))
}

// ---------------------------------------------------------------------------------------
// B: one session, many runs
// ---------------------------------------------------------------------------------------

async fn db_bytes(storage: &SqliteStorage, runs_table: &str) -> BenchResult<(i64, i64, i64)> {
    use sqlx::Row;
    let pool = storage.pool();
    let err = |e: sqlx::Error| format!("size query: {e}");
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(length(record)), 0), count(*) FROM {runs_table}"
    )))
    .fetch_one(pool)
    .await
    .map_err(err)?;
    let (record_bytes, count): (i64, i64) =
        (row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?);
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    Ok((record_bytes, count, pages * page_size))
}

async fn workload_b(args: &Args) -> BenchResult<Value> {
    // bytes are measured in SQLite: always SQLite here
    let args = &Args {
        memory_storage: false,
        ..args.clone()
    };
    let backend = Backend::new(args, ModelKind::Scripted, None).await;
    let dir = tempdir()?;
    let storage = sqlite(dir.path(), "b.db", "workflows").await?;
    let mut workflow = article(&backend, &storage, args)?;
    let runs = args.runs.unwrap_or(10_000);

    for i in 0..50 {
        workflow.use_session(format!("warm-{i}"));
        run_once(&mut workflow, "quantum computing").await?;
    }
    workflow.use_session("one-session");
    let (base_records, base_count, base_file) = db_bytes(&storage, "workflows_runs").await?;
    let rss_before = proc_status_kb("VmRSS:");
    let mut per_run = Vec::with_capacity(runs);
    let mut file_at = Vec::new();
    for i in 1..=runs {
        let started = Instant::now();
        run_once(&mut workflow, "quantum computing").await?;
        per_run.push(micros(started.elapsed()));
        if i == 10 || i == 1_000 || i == runs {
            file_at.push((i, db_bytes(&storage, "workflows_runs").await?));
        }
    }
    let rss_after = proc_status_kb("VmRSS:");
    // Floors: a commit on one session in the calling thread, one durable sqlx write; fresh
    // files, the bytes a run of this workload stores.
    let payload = Payload::of(&storage, "workflows").await?;
    let mut floors = SqliteFloors::open(dir.path(), payload, Some("one-session")).await?;
    for _ in 0..10 {
        floors.measure(100).await?;
    }
    let floor = floors.in_thread_us_median();
    let window = |center: usize| -> Value {
        // runs center-50 ..= center+49 (1-based), clipped to what ran
        if center > runs {
            return Value::Null;
        }
        let lo = center.saturating_sub(50).max(1);
        let hi = (center + 49).min(runs);
        let us = median(&per_run[lo - 1..hi]);
        json!({
            "runs": format!("{lo}-{hi}"),
            "us_median": round(us, 2),
            "ratio_to_floor": round(us / floor, 2),
        })
    };
    let first10 = median(&per_run[..10.min(runs)]);
    let last_lo = runs.saturating_sub(99).max(1);
    let last = median(&per_run[last_lo - 1..]);
    let (records, count, file) =
        file_at
            .last()
            .map(|(_, v)| *v)
            .unwrap_or((base_records, base_count, base_file));
    let growth: Vec<Value> = file_at
        .windows(2)
        .map(|w| {
            let ((i0, (r0, _, f0)), (i1, (r1, _, f1))) = (w[0], w[1]);
            let n = (i1 - i0) as f64;
            json!({
                "runs": format!("{}-{}", i0 + 1, i1),
                "record_bytes_per_run": round((r1 - r0) as f64 / n, 1),
                "file_bytes_per_run": round((f1 - f0) as f64 / n, 1),
            })
        })
        .collect();
    Ok(json!({
        "workload": "b",
        "what": "N runs of the two-agent workflow on ONE session, SQLite WAL",
        "model": backend.label(),
        "runs": runs,
        "run_1_to_10_us_median": round(first10, 2),
        "run_1_to_10_us_median_vs_floor": vs_floor("in-thread commit", first10, floor, "us"),
        "around_run_1000": window(1_000),
        "around_run_10000": window(10_000),
        "last_100_runs_us_median": round(last, 2),
        "last_100_runs_us_median_vs_floor": vs_floor("in-thread commit", last, floor, "us"),
        "floors": {
            "in_thread_commit_us_median": round(floor, 2),
            "sqlx_insert_commit_us_median": round(floors.sqlx_us_median(), 2),
            "payload_bytes": payload.json(),
            "measured": "in the same invocation, after the runs: 1,000 commits of each on one session of a fresh file",
        },
        "last_100_over_first_10": round(last / first10, 3),
        "target_ratio": 1.2,
        "stored_run_records": count - base_count,
        "record_bytes_per_run": round((records - base_records) as f64 / (count - base_count).max(1) as f64, 1),
        "file_bytes_per_run_overall": round((file - base_file) as f64 / runs as f64, 1),
        "growth_between_checkpoints": growth,
        "journal_mode": "wal",
        "sqlite_pool_connections": storage.pool().size(),
        "rss_growth_kb": match (rss_before, rss_after) {
            (Some(a), Some(b)) => json!(b as i64 - a as i64),
            _ => Value::Null,
        },
        "workflow_memory_runs_held": workflow.memory().runs().len(),
    }))
}

// ---------------------------------------------------------------------------------------
// C: concurrency
// ---------------------------------------------------------------------------------------

async fn workload_c_one(args: &Args, concurrency: usize) -> BenchResult<Value> {
    let latency = Duration::from_millis(args.latency_ms);
    let backend = Backend::new(args, ModelKind::Http, Some(latency)).await;
    let dir = tempdir()?;
    let storage = sqlite(dir.path(), "c.db", "workflows").await?;
    let mut template = article(&backend, &storage, args)?;
    template.use_session("warm");
    run_once(&mut template, "quantum computing").await?;
    let hwm_before = proc_status_kb("VmHWM:");
    let rss_before = proc_status_kb("VmRSS:");
    let region = Region::new(GLOBAL);

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut workflow = template.clone();
        tasks.push(tokio::spawn(async move {
            workflow.use_session(format!("c-{i}"));
            let started = Instant::now();
            run_once(&mut workflow, "quantum computing").await?;
            BenchResult::Ok(started.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(concurrency);
    let mut first_error = None;
    let mut failed = 0usize;
    for task in tasks {
        match task.await {
            Ok(Ok(d)) => latencies.push(micros(d) / 1e3),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("task: {e}"));
            }
        }
    }
    let wall = started.elapsed();
    let change = region.change();
    let hwm_after = proc_status_kb("VmHWM:");
    if let Some(error) = first_error {
        return Err(format!(
            "{failed} of {concurrency} runs failed; first: {error}"
        ));
    }
    latencies.sort_by(f64::total_cmp);
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    Ok(json!({
        "concurrency": concurrency,
        "latency_ms": args.latency_ms,
        "model": backend.label(),
        "wall_ms": round(micros(wall) / 1e3, 1),
        "run_ms_median": round(median(&latencies), 1),
        "run_ms_p99": round(p99, 1),
        "peak_rss_mb": hwm_after.map(|k| round(k as f64 / 1024.0, 1)),
        "rss_before_mb": rss_before.map(|k| round(k as f64 / 1024.0, 1)),
        "peak_rss_before_mb": hwm_before.map(|k| round(k as f64 / 1024.0, 1)),
        "bytes_allocated_during": change.bytes_allocated,
        "allocations_during": change.allocations,
        "open_files_limit": open_files_limit(),
    }))
}

/// C's floor: C concurrent raw HTTP pairs (the two request bodies of a run, captured from
/// one run here) against the same server, through one plain `reqwest::Client`; wall time
/// from the first spawn to the last join, and the median time of one pair.
async fn workload_c_floor(args: &Args, concurrency: usize) -> BenchResult<Value> {
    let latency = Duration::from_millis(args.latency_ms);
    let backend = Backend::new(args, ModelKind::Http, Some(latency)).await;
    let dir = tempdir()?;
    let storage = sqlite(dir.path(), "c-floor.db", "workflows").await?;
    let mut workflow = article(&backend, &storage, args)?;
    backend.probe.capture.store(true, Ordering::Relaxed);
    workflow.use_session("capture");
    run_once(&mut workflow, "quantum computing").await?;
    backend.probe.capture.store(false, Ordering::Relaxed);
    let captured = std::mem::take(
        &mut *backend
            .probe
            .captured
            .lock()
            .map_err(|_| "poisoned capture")?,
    );
    let chat = backend.chat.as_ref().ok_or("C needs an HTTP model")?;
    let bodies: Vec<Value> = captured
        .iter()
        .map(|r| chat.request_body(r, false))
        .collect();
    let raw = Arc::new(RawHttp::new(
        backend.base_url.as_deref().unwrap_or_default(),
        &bodies,
    )?);
    raw.post_all().await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let raw = raw.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                raw.post_all().await?;
                BenchResult::Ok(started.elapsed())
            })
        })
        .collect();
    let mut pairs = Vec::with_capacity(concurrency);
    for task in tasks {
        let took = task.await.map_err(|e| format!("task: {e}"))??;
        pairs.push(micros(took) / 1e3);
    }
    let wall = started.elapsed();
    Ok(json!({
        "concurrency": concurrency,
        "what": "C concurrent raw HTTP pairs (the two request bodies of a run), one plain reqwest client",
        "wall_ms": round(micros(wall) / 1e3, 1),
        "pair_ms_median": round(median(&pairs), 1),
    }))
}

async fn workload_c(args: &Args) -> BenchResult<Value> {
    if let Some(c) = args.concurrency {
        let report = if args.floor_only {
            workload_c_floor(args, c).await
        } else {
            workload_c_one(args, c).await
        };
        let mut report = report.map_err(|e| format!("C={c}: {e}"))?;
        report["workload"] = json!("c");
        return Ok(report);
    }
    // One child process per C, so each peak RSS is its own. The children share one
    // server (ours, in this process, unless --base-url is given), which also keeps the
    // server's sockets out of the children's descriptor budget.
    let latency = Duration::from_millis(args.latency_ms);
    let server = match &args.base_url {
        Some(_) => None,
        None => {
            let server = TestServer::start().await;
            let mut canned = Canned::json(openai::text_completion("A canned answer."));
            if !latency.is_zero() {
                canned = canned.delay(latency);
            }
            server.fallback(canned);
            server.record_requests(false);
            Some(server)
        }
    };
    let base_url = match (&args.base_url, &server) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.base_url(),
        (None, None) => return Err("no server".into()),
    };
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let child = |c: usize, floor_only: bool| {
        let mut command = std::process::Command::new(&exe);
        command
            .args(["--workload", "c", "--concurrency", &c.to_string()])
            .args([
                "--base-url",
                &base_url,
                "--latency-ms",
                &args.latency_ms.to_string(),
            ]);
        if floor_only {
            command.arg("--floor-only");
        }
        if args.memory_storage {
            command.args(["--storage", "memory"]);
        }
        if let Some(n) = SQLITE_CONNECTIONS.get() {
            command.args(["--sqlite-connections", &n.to_string()]);
        }
        async move {
            let output = tokio::task::spawn_blocking(move || command.output())
                .await
                .map_err(|e| format!("child for C={c}: {e}"))?
                .map_err(|e| format!("spawn child for C={c}: {e}"))?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            BenchResult::Ok(
                serde_json::from_str::<Value>(stdout.trim()).unwrap_or_else(|_| {
                    json!({
                        "concurrency": c,
                        "error": format!(
                            "child exited with {}; stderr: {}",
                            output.status,
                            String::from_utf8_lossy(&output.stderr).trim()
                        ),
                    })
                }),
            )
        }
    };
    let mut results = Vec::new();
    for c in [100usize, 1_000, 10_000] {
        let mut parsed = child(c, false).await?;
        // The floor in a child of its own: its descriptors and memory are not the run's.
        let floor = child(c, true).await?;
        for (figure, floor_key) in [("wall_ms", "wall_ms"), ("run_ms_median", "pair_ms_median")] {
            if let (Some(value), Some(floor_value)) =
                (parsed[figure].as_f64(), floor[floor_key].as_f64())
            {
                parsed[format!("{figure}_vs_floor")] =
                    vs_floor("C concurrent raw HTTP pairs", value, floor_value, "ms");
            }
        }
        parsed["floor"] = floor;
        results.push(parsed);
    }
    Ok(json!({
        "workload": "c",
        "what": "C concurrent two-agent workflow runs on distinct sessions, SQLite WAL, server latency per call; one child process per C",
        "latency_ms": args.latency_ms,
        "storage": if args.memory_storage { "memory" } else { "sqlite (WAL, synchronous=NORMAL)" },
        "server": if server.is_some() { "loopback TestServer in the parent process" } else { "external" },
        "results": results,
        "targets": {"c100_wall_ms": 150, "c10000_wall_ms": 2000, "c10000_peak_rss_mb": 500},
    }))
}

// ---------------------------------------------------------------------------------------
// D: a 25-turn conversation with history
// ---------------------------------------------------------------------------------------

async fn workload_d(args: &Args) -> BenchResult<Value> {
    const TURNS: usize = 25;
    let backend = Backend::new(args, ModelKind::Scripted, None).await;
    let repeats = args.repeats.or(args.runs).unwrap_or(30);
    let dir = tempdir()?;
    let (mut totals, mut frameworks, mut models, mut later_turns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_request_messages = 0;
    let mut first_turns = Vec::new();
    // Floors, one per counted conversation: 25 in-thread commits on one session of a fresh
    // file, and the 25 requests of the first conversation sent raw.
    let (mut floor_commits_ms, mut floor_http_ms) = (Vec::new(), Vec::new());
    let mut raw: Option<RawHttp> = None;
    // With the scripted model, a loopback server of our own answers the raw requests.
    let mut floor_server: Option<TestServer> = None;
    let mut payload: Option<Payload> = None;
    for rep in 0..repeats + 3 {
        // fresh database per conversation (opening it is not timed; creating its tables
        // on first use is)
        let storage = sqlite(dir.path(), &format!("d-{rep}.db"), "agent_sessions").await?;
        let agent = Agent::new(backend.model())
            .name("chatter")
            .add_history_to_messages(true)
            .num_history_runs(TURNS)
            .session_id(format!("conversation-{rep}"));
        let agent = if args.memory_storage {
            agent.storage(MemoryStorage::new())
        } else {
            agent.storage(storage.clone())
        };
        backend.probe.take_nanos();
        let capture = rep == 0;
        backend.probe.capture.store(capture, Ordering::Relaxed);
        let started = Instant::now();
        let mut turn_us = Vec::with_capacity(TURNS);
        for turn in 1..=TURNS {
            let t = Instant::now();
            let response = agent
                .run(format!("Turn {turn}: tell me more."))
                .await
                .map_err(|e| format!("agent run: {}", describe(&e)))?;
            turn_us.push(micros(t.elapsed()));
            black_box(response);
        }
        let total = micros(started.elapsed());
        let model = backend.probe.take_nanos() as f64 / 1e3;
        if capture {
            backend.probe.capture.store(false, Ordering::Relaxed);
            let captured = std::mem::take(
                &mut *backend
                    .probe
                    .captured
                    .lock()
                    .map_err(|_| "poisoned capture")?,
            );
            let request = captured.last().ok_or("the 25th request was not captured")?;
            let texts: Vec<&str> = request
                .messages
                .iter()
                .filter_map(|m| m.content.as_deref())
                .collect();
            for earlier in 1..TURNS {
                let needle = format!("Turn {earlier}: tell me more.");
                if !texts.iter().any(|t| *t == needle) {
                    return Err(format!(
                        "history did not accumulate: the 25th request lacks turn {earlier} \
                         ({} messages)",
                        request.messages.len()
                    ));
                }
            }
            last_request_messages = request.messages.len();
            let base_url = match &backend.base_url {
                Some(url) => url.clone(),
                None => {
                    let server = TestServer::start().await;
                    server.fallback(Canned::json(openai::text_completion("A canned answer.")));
                    server.record_requests(false);
                    let url = server.base_url();
                    floor_server = Some(server);
                    url
                }
            };
            let chat = OpenAIChat::new("gpt-4o-mini").base_url(base_url.clone());
            let bodies: Vec<Value> = captured
                .iter()
                .map(|r| chat.request_body(r, false))
                .collect();
            let floor = RawHttp::new(&base_url, &bodies)?;
            floor.post_all().await?; // warm-up: the connection, the server
            raw = Some(floor);
            if !args.memory_storage {
                payload = Some(Payload::of(&storage, "agent_sessions").await?);
            }
        }
        storage.close().await;
        if rep >= 3 {
            totals.push(total);
            models.push(model);
            frameworks.push(total - model);
            later_turns.push(median(&turn_us[1..]));
            first_turns.push(turn_us[0]);
            if let Some(payload) = payload {
                let path = dir.path().join(format!("floor-d-{rep}.db"));
                let mut commits = InThreadCommits::open(&path, payload)?;
                let mut sum = Duration::ZERO;
                for _ in 0..TURNS {
                    sum += commits.commit("conversation")?;
                }
                floor_commits_ms.push(micros(sum) / 1e3);
            }
            if let Some(raw) = &raw {
                let started = Instant::now();
                raw.post_all().await?;
                floor_http_ms.push(micros(started.elapsed()) / 1e3);
            }
        }
    }
    drop(floor_server);
    // The per-commit sqlx floor, for comparison (one session, a fresh file).
    let sqlx_insert = match payload {
        Some(payload) => {
            let floor_dir = dir.path().join("floor-d-sqlx");
            std::fs::create_dir_all(&floor_dir).map_err(|e| format!("floor dir: {e}"))?;
            let mut floors = SqliteFloors::open(&floor_dir, payload, Some("conversation")).await?;
            floors.measure(500).await?;
            Some(floors.sqlx_us_median())
        }
        None => None,
    };
    let commits_ms = (!floor_commits_ms.is_empty()).then(|| median(&floor_commits_ms));
    let http_ms = median(&floor_http_ms);
    let http_model = backend.kind == ModelKind::Http;
    let total = median(&totals) / 1e3;
    let framework = median(&frameworks) / 1e3;
    let total_floor = commits_ms.unwrap_or(0.0) + if http_model { http_ms } else { 0.0 };
    let total_floor_what = match (commits_ms.is_some(), http_model) {
        (true, true) => "25 in-thread commits + 25 raw HTTP requests",
        (true, false) => "25 in-thread commits (scripted model: no HTTP)",
        (false, true) => "25 raw HTTP requests",
        (false, false) => "",
    };
    Ok(json!({
        "workload": "d",
        "what": "25-turn conversation, agent with add_history_to_messages(true), num_history_runs(25), SQLite WAL agent storage, fresh database per conversation",
        "model": backend.label(),
        "conversations": repeats,
        "storage": if args.memory_storage { "memory" } else { "sqlite (WAL, synchronous=NORMAL)" },
        "history_asserted": true,
        "messages_in_25th_request": last_request_messages,
        "total_ms_median": round(total, 3),
        "total_ms_median_vs_floor": vs_floor(total_floor_what, total, total_floor, "ms"),
        "model_ms_median": round(median(&models) / 1e3, 3),
        "framework_ms_median": round(framework, 3),
        "framework_ms_median_vs_floor": commits_ms.map_or(Value::Null, |floor| {
            vs_floor("25 in-thread commits", framework, floor, "ms")
        }),
        "turn_1_us_median_creates_tables": round(median(&first_turns), 1),
        "turn_2_to_25_us_median": round(median(&later_turns), 1),
        "floors": {
            "in_thread_commits_of_a_conversation_ms_median": commits_ms.map(|f| round(f, 3)),
            "raw_http_requests_of_a_conversation_ms_median": round(http_ms, 3),
            "conversation_ms": round(commits_ms.unwrap_or(0.0) + http_ms, 3),
            "sqlx_insert_commit_us_median": sqlx_insert.map(|f| round(f, 2)),
            "payload_bytes": payload.map(|p| p.json()),
            "measured": "directly, after every counted conversation: 25 in-thread commits on one session of a fresh file (tables created untimed), and the 25 requests of the first conversation sent raw to the same server (ours when the model is scripted)",
        },
        "target_framework_ms": 4,
    }))
}

// ---------------------------------------------------------------------------------------
// E: agent construction
// ---------------------------------------------------------------------------------------

fn construction<T>(n: usize, rounds: usize, build: impl Fn() -> T) -> Value {
    let (mut ns, mut bytes, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut agents: Vec<T> = Vec::with_capacity(n);
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        for _ in 0..n {
            agents.push(build());
        }
        let elapsed = started.elapsed();
        let change = region.change();
        black_box(&agents);
        ns.push(elapsed.as_nanos() as f64 / n as f64);
        bytes.push(
            (change.bytes_allocated as f64 + change.bytes_reallocated.max(0) as f64) / n as f64,
        );
        allocs.push((change.allocations + change.reallocations) as f64 / n as f64);
    }
    json!({
        "ns_per_agent_median": round(median(&ns), 1),
        "heap_bytes_per_agent_median": round(median(&bytes), 1),
        "allocations_per_agent_median": round(median(&allocs), 2),
    })
}

fn workload_e(args: &Args) -> Value {
    let n = args.runs.unwrap_or(100_000);
    let rounds = args.repeats.unwrap_or(11);
    let model: Arc<dyn Model> = Arc::new(OpenAIChat::new("gpt-4o-mini"));
    let shared = construction(n, rounds, || Agent::new(model.clone()));
    // Floor: one heap allocation of the agent's bytes, filled (what `Agent::new` cannot do
    // with less), in the same kind of loop.
    let heap_bytes = shared["heap_bytes_per_agent_median"]
        .as_f64()
        .unwrap_or(0.0)
        .max(1.0) as usize;
    let floor = construction(n, rounds, || vec![1u8; heap_bytes].into_boxed_slice());
    let ns = |report: &Value| report["ns_per_agent_median"].as_f64().unwrap_or(f64::NAN);
    json!({
        "workload": "e",
        "what": "agent construction; heap bytes exclude the Vec slot holding each agent",
        "agents_per_round": n,
        "rounds": rounds,
        "handle_size_bytes": std::mem::size_of::<Agent>(),
        "agent_new_shared_model_vs_floor": vs_floor(
            &format!("one filled heap allocation of {heap_bytes} bytes"),
            ns(&shared),
            ns(&floor),
            "ns",
        ),
        "agent_new_shared_model": shared,
        "floors": {"one_allocation_of_the_agent_bytes": floor},
        "agent_new_named_shared_model": construction(n, rounds, || {
            Agent::new(model.clone()).name("researcher")
        }),
        "agent_new_with_fresh_openai_chat": construction((n / 10).max(1), rounds, || {
            Agent::new(OpenAIChat::new("gpt-4o-mini"))
        }),
        "targets": {"ns_per_agent": 1000, "bytes_per_agent": 1024},
    })
}

// ---------------------------------------------------------------------------------------

fn machine() -> Value {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).ok();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    json!({
        "nproc": nproc,
        "loadavg": load,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release (bench)" },
    })
}

async fn run(args: &Args) -> BenchResult<Value> {
    let one = |w: &str, args: &Args| {
        let mut a = args.clone();
        a.workload = w.into();
        a
    };
    match args.workload.as_str() {
        "a" => workload_a(args).await,
        "b" => workload_b(args).await,
        "c" => workload_c(args).await,
        "d" => workload_d(args).await,
        "e" => Ok(workload_e(args)),
        _ => {
            // `--runs` and `--concurrency` mean different things per workload: `all` uses
            // each workload's defaults unless given.
            let mut all = serde_json::Map::new();
            for w in ["a", "b", "c", "d", "e"] {
                let report = Box::pin(run(&one(w, args))).await;
                all.insert(
                    w.into(),
                    report.unwrap_or_else(|e| json!({"workload": w, "error": e})),
                );
            }
            Ok(Value::Object(all))
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let _ = open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&args));
    match result {
        Ok(mut report) => {
            if let Value::Object(map) = &mut report {
                map.insert("machine".into(), machine());
            }
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            println!("{}", json!({"workload": args.workload, "error": message}));
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
