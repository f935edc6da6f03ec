//! Agent benchmarks, printed as JSON: construction time and memory per agent, and the
//! framework overhead of one run against a zero-latency loopback server (an agent run
//! minus a raw reqwest call of the same request).
//!
//! `cargo bench -p buddy-core --features testing --bench agent`

#![allow(clippy::unwrap_used)] // a benchmark: failing loudly is the point

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buddy_core::agent::Agent;
use buddy_core::model::{Message, Model, ModelRequest, OpenAIChat};
use buddy_core::storage::MemoryStorage;
use buddy_core::testing::{Canned, TestServer, openai};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

// Counts allocations; `stats_alloc` holds the one `unsafe impl GlobalAlloc`, since the
// workspace forbids `unsafe_code` (a `forbid` no `#![allow]` can lift).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Builds `n` agents with `build`, returning (ns per agent, bytes per agent, allocations per
/// agent). The best of five rounds, to shed noise from the
/// other processes on the machine.
fn construction(n: usize, build: impl Fn() -> Agent) -> (f64, f64, f64) {
    let mut best = (f64::MAX, 0.0, 0.0);
    for _ in 0..5 {
        let mut agents: Vec<Agent> = Vec::with_capacity(n);
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        for _ in 0..n {
            agents.push(build());
        }
        let elapsed = started.elapsed();
        let change = region.change();
        let bytes = change.bytes_allocated + change.bytes_reallocated.max(0) as usize;
        let count = change.allocations + change.reallocations;
        black_box(&agents);
        let ns = elapsed.as_nanos() as f64 / n as f64;
        if ns < best.0 {
            best = (ns, bytes as f64 / n as f64, count as f64 / n as f64);
        }
    }
    best
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let n = 100_000;
    let model: Arc<dyn Model> = Arc::new(OpenAIChat::new("gpt-4o-mini"));
    let (new_ns, new_bytes, new_allocs) = construction(n, || Agent::new(model.clone()));
    let (named_ns, named_bytes, named_allocs) = construction(n, || {
        Agent::new(model.clone())
            .name("researcher")
            .instructions("Research the topic.")
    });
    let (full_ns, full_bytes, full_allocs) =
        construction(n / 10, || Agent::new(OpenAIChat::new("gpt-4o-mini")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let overhead = runtime.block_on(async {
        let server = TestServer::start().await;
        server.fallback(Canned::json(openai::text_completion("Hello!")));
        server.record_requests(false);
        let chat = OpenAIChat::new("gpt-4o-mini")
            .base_url(server.base_url())
            .api_key("sk-bench");
        let agent = Agent::new(chat.clone());
        let stored = Agent::new(chat.clone()).storage(MemoryStorage::new());

        // The same request the agent sends, sent raw.
        let body = chat.request_body(&ModelRequest::new(vec![Message::user("Hi")]), false);
        let url = format!("{}/chat/completions", server.base_url());
        let client = reqwest::Client::new();
        let raw = || async {
            let response = client
                .post(&url)
                .bearer_auth("sk-bench")
                .json(&body)
                .send()
                .await
                .unwrap();
            black_box(response.bytes().await.unwrap());
        };

        for _ in 0..300 {
            raw().await;
            agent.run("Hi").await.unwrap();
            stored.run("Hi").await.unwrap();
        }
        let batch = 200;
        let (mut raw_us, mut agent_us, mut stored_us) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..15 {
            let started = Instant::now();
            for _ in 0..batch {
                raw().await;
            }
            raw_us.push(micros(started.elapsed(), batch));
            let started = Instant::now();
            for _ in 0..batch {
                black_box(agent.run("Hi").await.unwrap());
            }
            agent_us.push(micros(started.elapsed(), batch));
            let started = Instant::now();
            for _ in 0..batch {
                black_box(stored.run("Hi").await.unwrap());
            }
            stored_us.push(micros(started.elapsed(), batch));
        }
        let (raw, agent, stored) = (median(raw_us), median(agent_us), median(stored_us));
        json!({
            "raw_reqwest_us": raw,
            "agent_run_us": agent,
            "agent_run_overhead_us": agent - raw,
            "agent_run_with_memory_storage_us": stored,
            "agent_run_with_memory_storage_overhead_us": stored - raw,
            "target_overhead_us": 50,
        })
    });

    let report = json!({
        "agent_new": {
            "ns_per_agent": new_ns,
            "bytes_per_agent": new_bytes,
            "allocations_per_agent": new_allocs,
            "handle_size_bytes": std::mem::size_of::<Agent>(),
            "target_ns": 1000,
            "target_bytes": 1024,
        },
        "agent_new_with_name_and_instructions": {
            "ns_per_agent": named_ns,
            "bytes_per_agent": named_bytes,
            "allocations_per_agent": named_allocs,
        },
        "agent_new_with_fresh_openai_chat": {
            "ns_per_agent": full_ns,
            "bytes_per_agent": full_bytes,
            "allocations_per_agent": full_allocs,
        },
        "run": overhead,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
