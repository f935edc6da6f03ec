//! Workflow benchmarks of issue 6, printed as one JSON object per invocation so results
//! compare run to run and against other frameworks on the same machine.
//!
//! ```text
//! cargo bench --bench workflows -- --workload a|b|c|d|e|all
//!     [--base-url URL] [--model scripted|http] [--runs N] [--latency-ms MS]
//!     [--concurrency C] [--repeats R] [--storage sqlite|memory] [--sqlite-connections N]
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
}

const USAGE: &str = "usage: cargo bench --bench workflows -- --workload a|b|c|d|e|all \
[--base-url URL] [--model scripted|http] [--runs N] [--latency-ms MS] [--concurrency C] \
[--repeats R] [--storage sqlite|memory] [--sqlite-connections N]";

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
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    if args.base_url.is_some() && args.model == Some(ModelKind::Scripted) {
        return Err("`--base-url` and `--model scripted` exclude each other".into());
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
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
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
/// uses (WAL, synchronous=NORMAL, busy timeout, foreign keys), instead of `open`'s 8.
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

    // The same two calls, raw.
    let raw = match &backend.chat {
        Some(chat) => {
            let bodies: Vec<Value> = captured
                .iter()
                .map(|r| chat.request_body(r, false))
                .collect();
            let url = format!(
                "{}/chat/completions",
                backend.base_url.as_deref().unwrap_or_default()
            );
            Some((reqwest::Client::new(), url, bodies))
        }
        None => None,
    };
    let raw_pair = || async {
        if let Some((client, url, bodies)) = &raw {
            for body in bodies {
                let response = client
                    .post(url)
                    .bearer_auth("sk-bench")
                    .json(body)
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
        }
        BenchResult::Ok(())
    };
    for _ in 0..200 {
        raw_pair().await?;
    }

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
    Ok(json!({
        "workload": "a",
        "what": "two-agent #[workflow] (researcher, writer; one chat completion each), SQLite WAL storage, fresh session per run",
        "model": backend.label(),
        "runs": runs,
        "batch": batch,
        "runs_per_second": round(runs as f64 / total.as_secs_f64(), 1),
        "run_us_median": round(run, 2),
        "raw_two_http_calls_us_median": round(raw_median, 2),
        "framework_overhead_us_median": round(run - raw_median, 2),
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
    let window = |center: usize| -> Value {
        // runs center-50 ..= center+49 (1-based), clipped to what ran
        if center > runs {
            return Value::Null;
        }
        let lo = center.saturating_sub(50).max(1);
        let hi = (center + 49).min(runs);
        json!({"runs": format!("{lo}-{hi}"), "us_median": round(median(&per_run[lo - 1..hi]), 2)})
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
        "around_run_1000": window(1_000),
        "around_run_10000": window(10_000),
        "last_100_runs_us_median": round(last, 2),
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

async fn workload_c(args: &Args) -> BenchResult<Value> {
    if let Some(c) = args.concurrency {
        let mut report = workload_c_one(args, c)
            .await
            .map_err(|e| format!("C={c}: {e}"))?;
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
    let mut results = Vec::new();
    for c in [100usize, 1_000, 10_000] {
        let mut command = std::process::Command::new(&exe);
        command
            .args(["--workload", "c", "--concurrency", &c.to_string()])
            .args([
                "--base-url",
                &base_url,
                "--latency-ms",
                &args.latency_ms.to_string(),
            ]);
        if args.memory_storage {
            command.args(["--storage", "memory"]);
        }
        if let Some(n) = SQLITE_CONNECTIONS.get() {
            command.args(["--sqlite-connections", &n.to_string()]);
        }
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| format!("child for C={c}: {e}"))?
            .map_err(|e| format!("spawn child for C={c}: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let parsed: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            json!({
                "concurrency": c,
                "error": format!(
                    "child exited with {}; stderr: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        });
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
        let capture_last = rep == 0;
        let started = Instant::now();
        let mut turn_us = Vec::with_capacity(TURNS);
        for turn in 1..=TURNS {
            if capture_last && turn == TURNS {
                backend.probe.capture.store(true, Ordering::Relaxed);
            }
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
        if capture_last {
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
        }
        storage.close().await;
        if rep >= 3 {
            totals.push(total);
            models.push(model);
            frameworks.push(total - model);
            later_turns.push(median(&turn_us[1..]));
            first_turns.push(turn_us[0]);
        }
    }
    Ok(json!({
        "workload": "d",
        "what": "25-turn conversation, agent with add_history_to_messages(true), num_history_runs(25), SQLite WAL agent storage, fresh database per conversation",
        "model": backend.label(),
        "conversations": repeats,
        "storage": if args.memory_storage { "memory" } else { "sqlite (WAL, synchronous=NORMAL)" },
        "history_asserted": true,
        "messages_in_25th_request": last_request_messages,
        "total_ms_median": round(median(&totals) / 1e3, 3),
        "model_ms_median": round(median(&models) / 1e3, 3),
        "framework_ms_median": round(median(&frameworks) / 1e3, 3),
        "turn_1_us_median_creates_tables": round(median(&first_turns), 1),
        "turn_2_to_25_us_median": round(median(&later_turns), 1),
        "target_framework_ms": 4,
    }))
}

// ---------------------------------------------------------------------------------------
// E: agent construction
// ---------------------------------------------------------------------------------------

fn construction(n: usize, rounds: usize, build: impl Fn() -> Agent) -> Value {
    let (mut ns, mut bytes, mut allocs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut agents: Vec<Agent> = Vec::with_capacity(n);
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
    json!({
        "workload": "e",
        "what": "agent construction; heap bytes exclude the Vec slot holding each agent",
        "agents_per_round": n,
        "rounds": rounds,
        "handle_size_bytes": std::mem::size_of::<Agent>(),
        "agent_new_shared_model": construction(n, rounds, || Agent::new(model.clone())),
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
