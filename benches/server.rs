//! Server benchmarks over real HTTP on 127.0.0.1 (a scripted model, SQLite run logs). Each
//! figure is printed next to a floor measured in the same invocation.
//!
//! ```text
//! cargo bench --bench server
//! ```
//!
//! - `POST → first SSE byte`: a streamed agent run, from sending the request to the first
//!   byte of the event stream, p50/p99 of 1,000. Floor: `GET /health`, request to last byte.
//! - `1,000 concurrent streamed runs`: 1,000 streamed agent runs at once, each read to its
//!   end: wall time. Floor: 1,000 concurrent `GET /health`.
//! - `subscribers to one run`: 10,000 clients (or as many as the open-file limit allows) in
//!   a child process follow one run's events over SSE from this process; once every
//!   subscriber's response has begun, the run emits 50 events 20 ms apart, each stamped with
//!   the time it was made; p99 of (received − made) over every event and subscriber, how
//!   many saw all 50, how many could not connect. Floors: the same frames to the same
//!   clients from a bare fan-out server (tokio, a fixed response head, one task per
//!   connection), and the run with one subscriber.
//! - peak memory: this process's peak resident set (`VmHWM`) after each phase (it holds the
//!   server, and the clients of the first two phases).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buddy::prelude::*;
use buddy::{Server, Storage};
use buddy_core::testing::ScriptedModel;
use futures::StreamExt;
use serde_json::json;

/// The events the ticker run emits in the subscribers phase, and how far apart (ms).
const TICKS: u32 = 50;
const TICK_MS: u64 = 20;

/// Set in the subscribers' child process: `<count> <events url>`.
const FOLLOW_ENV: &str = "BUDDY_BENCH_FOLLOW";

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// Emits `ticks` custom events `every` apart, each carrying the time it was made.
#[workflow]
struct Ticker {
    /// Opened once every subscriber is connected.
    #[field(default)]
    gate: Arc<AtomicBool>,
}

#[workflow]
impl Ticker {
    async fn run(&mut self, ticks: u32, every_ms: u64) -> impl Stream<Item = Result<RunEvent>> {
        let gate = Arc::clone(&self.gate);
        buddy::try_stream! {
            while !gate.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for n in 0..ticks {
                yield RunEvent::custom("tick", json!({"n": n, "t": micros_now()}));
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
        }
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    if samples.is_empty() {
        return f64::NAN;
    }
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[at]
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn open_file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(1024)
}

async fn first_byte(http: &reqwest::Client, url: &str) -> f64 {
    let started = Instant::now();
    let response = http
        .post(url)
        .json(&json!({"input": {"message": "go"}, "stream": true}))
        .send()
        .await
        .expect("POST");
    let mut body = response.bytes_stream();
    let _ = body.next().await;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    while body.next().await.is_some() {}
    elapsed
}

async fn health(http: &reqwest::Client, url: &str) -> f64 {
    let started = Instant::now();
    let _ = http.get(url).send().await.expect("GET").bytes().await;
    started.elapsed().as_secs_f64() * 1e3
}

/// Follows run `run_id`'s events, returning (received − made) in ms for each tick, or
/// `None` when it could not connect; says on `connected` when its response has begun.
async fn follow(
    http: reqwest::Client,
    url: String,
    connected: tokio::sync::mpsc::Sender<()>,
) -> Option<Vec<f64>> {
    let response = http.get(&url).send().await;
    let _ = connected.send(()).await;
    let response = response.ok()?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut latencies = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        let now = micros_now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: "))
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(data)
                && let Some(made) = value["data"]["t"].as_u64()
            {
                latencies.push(now.saturating_sub(made) as f64 / 1e3);
            }
        }
    }
    Some(latencies)
}

/// What the subscribers' process saw.
struct Followed {
    /// p99 of (received − made) over every event and subscriber, in ms.
    p99: f64,
    /// Subscribers that saw every event.
    complete: usize,
    /// Subscribers that could not connect.
    failed: usize,
}

/// Has `count` clients in a child process follow `url`; calls `connected` once every
/// client's response has begun (or failed), and returns what they saw.
async fn follow_in_child(url: &str, count: usize, connected: impl FnOnce()) -> Followed {
    let mut child = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env(FOLLOW_ENV, format!("{count} {url}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the subscribers' process");
    let stdout = child.stdout.take().expect("piped stdout");
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = line_tx.send(line);
        }
        child.wait()
    });
    // "connected": every subscriber's response has begun (or failed).
    let _ = line_rx.recv().await;
    connected();
    let result = line_rx.recv().await.unwrap_or_default();
    let _ = reader.await;
    let mut figures = result.split_whitespace();
    let mut next = || figures.next().and_then(|figure| figure.parse::<f64>().ok());
    Followed {
        p99: next().unwrap_or(f64::NAN),
        complete: next().unwrap_or(0.0) as usize,
        failed: next().unwrap_or(count as f64) as usize,
    }
}

/// Starts a run of the ticker and has `count` clients in a child process follow it; returns
/// what they saw and the run's id.
async fn subscribers(
    base: &str,
    http: &reqwest::Client,
    count: usize,
    gate: &Arc<AtomicBool>,
) -> (Followed, String) {
    gate.store(false, Ordering::SeqCst);
    let response = http
        .post(format!("{base}/v1/workflows/ticker/runs"))
        .json(&json!({"input": {"ticks": TICKS, "every_ms": TICK_MS}, "background": true}))
        .send()
        .await
        .expect("start ticker");
    let started: serde_json::Value = response.json().await.expect("202 body");
    let run_id = started["run_id"].as_str().unwrap_or_default().to_owned();
    let url = format!("{base}/v1/runs/{run_id}/events");
    let followed = follow_in_child(&url, count, || gate.store(true, Ordering::SeqCst)).await;
    (followed, run_id)
}

/// One tick's frame as the server sent it, split around the time it carries: the floor
/// sends frames of the same bytes with its own times.
async fn tick_frame(http: &reqwest::Client, base: &str, run_id: &str) -> (String, String) {
    let replay = http
        .get(format!("{base}/v1/runs/{run_id}/events"))
        .send()
        .await
        .expect("replay")
        .text()
        .await
        .expect("replay body");
    let frame = replay
        .split_inclusive("\n\n")
        .find(|frame| frame.contains("\"t\":"))
        .expect("a tick in the replay");
    let at = frame.find("\"t\":").map_or(0, |at| at + 4);
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    (frame[..at].to_owned(), frame[at + digits..].to_owned())
}

/// The floor of the subscribers phase: the same frames to the same client process from a
/// bare fan-out server: a tokio listener, a fixed HTTP/1.1 response head (no chunked
/// encoding, the body ends when the connection closes), one task per connection writing
/// each frame it receives from a broadcast channel. No routing, no run, no log.
async fn bare_subscribers(frame: &(String, String), count: usize) -> Followed {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the floor");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let (frames, _) = tokio::sync::broadcast::channel::<Arc<str>>(TICKS as usize + 1);
    let accepting = frames.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let mut frames = accepting.subscribe();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if socket.write_all(response).await.is_err() {
                    return;
                }
                while let Ok(frame) = frames.recv().await {
                    if socket.write_all(frame.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (prefix, suffix) = frame.clone();
    let emitter = tokio::sync::oneshot::channel::<()>();
    let accepting = acceptor.abort_handle();
    let emitting = tokio::spawn(async move {
        let _ = emitter.1.await;
        for _ in 0..TICKS {
            let frame = format!("{prefix}{}{suffix}", micros_now());
            let _ = frames.send(Arc::from(frame));
            tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
        }
        // The acceptor holds a sender too: once it and this one are gone, every
        // connection's loop ends.
        accepting.abort();
    });
    let opened = emitter.0;
    let followed = follow_in_child(&url, count, move || {
        let _ = opened.send(());
    })
    .await;
    let _ = emitting.await;
    followed
}

/// The subscribers' process: `count` clients follow `url`; prints `connected`, then
/// `<p99 ms> <complete> <failed>`.
async fn follow_all(spec: &str) {
    let (count, url) = spec.split_once(' ').expect("count and url");
    let count: usize = count.parse().expect("count");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (connected, mut arrivals) = tokio::sync::mpsc::channel(count.max(1));
    let followers: Vec<_> = (0..count)
        .map(|_| tokio::spawn(follow(http.clone(), url.to_owned(), connected.clone())))
        .collect();
    for _ in 0..count {
        let _ = arrivals.recv().await;
    }
    println!("connected");
    let mut all = Vec::new();
    let mut complete = 0;
    let mut failed = 0;
    for follower in followers {
        match follower.await {
            Ok(Some(latencies)) => {
                if latencies.len() == TICKS as usize {
                    complete += 1;
                }
                all.extend(latencies);
            }
            _ => failed += 1,
        }
    }
    println!("{} {complete} {failed}", percentile(&mut all, 0.99));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::var(FOLLOW_ENV) {
        Ok(spec) => runtime.block_on(follow_all(&spec)),
        Err(_) => runtime.block_on(bench()),
    }
}

async fn bench() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn Storage> = Arc::new(
        buddy::SqliteStorage::open(dir.path().join("server.db"))
            .await
            .expect("sqlite")
            .table("served")
            .expect("table"),
    );
    let model = ScriptedModel::new();
    // 20 warm-up runs, 1,000 timed, 1,000 concurrent.
    for _ in 0..2_100 {
        model.clone().chunks(["one ", "two ", "three"]);
    }
    let gate = Arc::new(AtomicBool::new(false));
    let ticker_gate = Arc::clone(&gate);
    let server = Server::new()
        .storage(Arc::clone(&storage))
        .agent(Agent::new(model).name("bench"))
        .workflow(move || {
            let mut ticker = Ticker::builder().build().expect("ticker");
            ticker.gate = Arc::clone(&ticker_gate);
            ticker
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()
        .expect("client");
    let runs = format!("{base}/v1/agents/bench/runs");
    let health_url = format!("{base}/health");
    for _ in 0..20 {
        first_byte(&http, &runs).await;
        health(&http, &health_url).await;
    }

    let mut firsts = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..1_000 {
        firsts.push(first_byte(&http, &runs).await);
        floors.push(health(&http, &health_url).await);
    }
    println!(
        "POST → first SSE byte: p50 {:.2} ms, p99 {:.2} ms   (floor GET /health: p50 {:.2} ms, p99 {:.2} ms; goal p99 ≤ 5 ms)",
        percentile(&mut firsts, 0.5),
        percentile(&mut firsts, 0.99),
        percentile(&mut floors, 0.5),
        percentile(&mut floors, 0.99),
    );

    let started = Instant::now();
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let http = http.clone();
            let runs = runs.clone();
            tokio::spawn(async move { first_byte(&http, &runs).await })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let wall = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let http = http.clone();
            let url = health_url.clone();
            tokio::spawn(async move { health(&http, &url).await })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let floor = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "1,000 concurrent streamed runs: {wall:.0} ms wall   (floor 1,000 concurrent GET /health: {floor:.0} ms); peak RSS {:.0} MB",
        peak_rss_mb()
    );

    let (one, run_id) = subscribers(&base, &http, 1, &gate).await;
    let frame = tick_frame(&http, &base, &run_id).await;
    // The subscribers run in a child process (each connection needs a socket at both ends);
    // this process holds their 10,000 server-side sockets.
    let count = 10_000.min(open_file_limit().saturating_sub(512));
    let started = Instant::now();
    let (many, _) = subscribers(&base, &http, count, &gate).await;
    let wall = started.elapsed().as_secs_f64();
    let rss = peak_rss_mb();
    let started = Instant::now();
    let bare = bare_subscribers(&frame, count).await;
    let bare_wall = started.elapsed().as_secs_f64();
    println!(
        "{count} subscribers to one run ({TICKS} events {TICK_MS} ms apart): p99 added latency {:.2} ms, {} saw every event, {} could not connect, {wall:.1} s wall   (floor, a bare fan-out server to the same clients: p99 {:.2} ms, {} saw every event, {bare_wall:.1} s wall; 1 subscriber: p99 {:.2} ms; goal ≤ 10 ms); peak RSS {rss:.0} MB (server; the subscribers are another process)",
        many.p99, many.complete, many.failed, bare.p99, bare.complete, one.p99,
    );
}
