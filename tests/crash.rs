//! Crash resume with real processes: a durable workflow (three agents over HTTP, a tool, two
//! steps, a `join!` and a wait) runs in a child process that is killed with SIGKILL at every
//! fault point, then resumed by new processes until it completes. Against an uninterrupted
//! run: the same response, the same model requests (counted by the loopback model server),
//! and every step and tool side effect exactly once. On SQLite, and on Postgres when
//! `BUDDY_TEST_POSTGRES_URL` is set.
//!
//! This binary is its own child: with `BUDDY_CRASH_ROLE` set it runs the workflow instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use buddy::durable::{self, DurableQuery};
use buddy::prelude::*;
use buddy::tool::FunctionTool;
use buddy::{RunStatus, Storage};
use buddy_core::testing::{Canned, CrashTest, Outcome, RecordedRequest, TestServer, openai};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Approval {
    note: String,
}

#[workflow]
struct Article {
    #[member]
    researcher: Agent,
    #[member]
    writer: Agent,
    #[member]
    editor: Agent,
    #[field(default)]
    effects: PathBuf,
}

#[workflow(durable)]
impl Article {
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.run(format!("Research {topic}")).await?;
        let facts = self.step("facts", effect(&self.effects, "facts")).await?;
        let approval: Approval = self
            .wait_for("approve", json!({"outline": research.text()}))
            .await?;
        let (draft, edit) = futures::join!(
            self.writer.run(format!("Write about {facts}")),
            self.editor.run(format!("Edit {topic}")),
        );
        let published = self
            .step("publish", effect(&self.effects, "publish"))
            .await?;
        Ok(RunResponse::from_text(format!(
            "{} / {} / {} / {published}",
            draft?.text(),
            edit?.text(),
            approval.note
        )))
    }
}

/// A wait in a loop: one value per iteration, each from another process.
#[workflow]
struct Survey {
    #[field(default)]
    effects: PathBuf,
}

#[workflow(durable)]
impl Survey {
    async fn run(&mut self, questions: u32) -> Result<RunResponse> {
        let mut total = 0u64;
        for question in 0..questions {
            let answer: u64 = self
                .wait_for("answer", json!({"question": question}))
                .await?;
            let effects = self.effects.clone();
            self.step("record", async move { effect(&effects, "record").await })
                .await?;
            total += answer;
        }
        Ok(RunResponse::from_text(total.to_string()))
    }
}

/// A side effect: a line in the effects file.
async fn effect(path: &Path, name: &str) -> Result<String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::other)?;
    writeln!(file, "{name}").map_err(Error::other)?;
    file.sync_all().map_err(Error::other)?;
    Ok(format!("{name}-done"))
}

/// Where a child's durable runs are: `sqlite:<path>` or `postgres:<url>#<table>`.
async fn open(database: &str) -> Arc<dyn Storage> {
    if let Some(path) = database.strip_prefix("sqlite:") {
        let storage = buddy::SqliteStorage::open(path)
            .await
            .unwrap()
            .table("crash")
            .unwrap();
        return Arc::new(storage);
    }
    #[cfg(feature = "postgres")]
    if let Some(rest) = database.strip_prefix("postgres:") {
        let (url, table) = rest.rsplit_once('#').unwrap();
        let storage = buddy::PostgresStorage::connect(url)
            .await
            .unwrap()
            .table(table)
            .unwrap();
        return Arc::new(storage);
    }
    panic!("unknown database {database}");
}

/// A survey child: starts the survey, or gives one answer and lets it run to its next wait.
async fn survey_child(role: &str, storage: Arc<dyn Storage>, effects: PathBuf) {
    let mut survey = Survey::builder()
        .storage(storage)
        .effects(effects)
        .build()
        .unwrap();
    let result = match role {
        "survey-start" => survey.run(100).await,
        _ => {
            let run_id = std::env::var("BUDDY_SURVEY_RUN").unwrap();
            let iteration: u64 = std::env::var("BUDDY_SURVEY_ITERATION")
                .unwrap()
                .parse()
                .unwrap();
            let key = format!("answer#{iteration}");
            survey.resume_with(&run_id, &key, json!(iteration)).await
        }
    };
    match result {
        Ok(response) => println!("done {}", response.text()),
        Err(error) => match error.durable_error() {
            Some(durable::DurableError::Paused { run_id, waits }) => {
                println!("paused {run_id} {}", waits.join(","))
            }
            _ => println!("failed {error}"),
        },
    }
}

/// The child: starts the run, or resumes every unfinished one, and prints the outcome.
fn child(role: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let database = std::env::var("BUDDY_CRASH_DB").unwrap();
        let model_url = std::env::var("BUDDY_CRASH_MODEL").unwrap();
        let effects = PathBuf::from(std::env::var("BUDDY_CRASH_EFFECTS").unwrap());
        let storage = open(&database).await;
        if role.starts_with("survey") {
            survey_child(role, storage, effects).await;
            return;
        }
        let make = || {
            let calls = effects.clone();
            let save = FunctionTool::new(
                "save",
                "Saves the draft.",
                json!({"type": "object"}),
                move |_| {
                    let calls = calls.clone();
                    async move {
                        effect(&calls, "tool:save").await?;
                        Ok(json!("saved"))
                    }
                },
            );
            let model = |name: &str| {
                Agent::new(
                    OpenAIChat::new("test")
                        .base_url(&model_url)
                        .api_key("test-key"),
                )
                .name(name)
            };
            Article::builder()
                .storage(Arc::clone(&storage))
                .researcher(model("researcher"))
                .writer(model("writer").tool(save))
                .editor(model("editor"))
                .effects(effects.clone())
                .build()
                .unwrap()
        };
        match role {
            "start" => match make().run("tides".into()).await {
                Ok(response) => println!("done {}", response.text()),
                Err(error) if error.is_paused() => println!("paused"),
                Err(error) => println!("failed {error}"),
            },
            _ => {
                for resumed in buddy::workflow::resume_unfinished(make).await.unwrap() {
                    match resumed.result {
                        Ok(response) => println!("done {}", response.text()),
                        Err(error) if error.is_paused() => println!("paused"),
                        Err(error) => println!("failed {error}"),
                    }
                }
            }
        }
    });
}

/// What the model server answers, by what is asked (writer and editor ask concurrently).
fn answer(request: &RecordedRequest) -> Option<Canned> {
    let messages = request.body["messages"].as_array()?;
    let last = messages.last()?;
    let user = messages
        .iter()
        .find(|message| message["role"] == "user")
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default();
    let stream = request.body["stream"] == true;
    let text = |content: &str| {
        if stream {
            Canned::sse(openai::text_chunks(&[content]))
        } else {
            Canned::json(openai::text_completion(content))
        }
    };
    Some(if last["role"] == "tool" {
        text("a draft")
    } else if user.starts_with("Research") {
        // Slow enough for the event log to flush text deltas in between.
        let chunks = openai::text_chunks(&["an ", "out", "line"]);
        Canned::sse(chunks).interval(std::time::Duration::from_millis(70))
    } else if user.starts_with("Write") {
        let calls = [("call_1", "save", "{}")];
        if stream {
            Canned::sse(vec![
                openai::tool_call_chunk(0, Some("call_1"), Some("save"), "{}"),
                openai::finish_chunk("tool_calls"),
            ])
        } else {
            Canned::json(openai::tool_call_completion(&calls))
        }
    } else {
        text("an edit")
    })
}

/// Which journaled model call a request is (its journal key).
fn call_key(request: &RecordedRequest) -> String {
    let messages = request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let user = messages
        .iter()
        .find(|message| message["role"] == "user")
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let after_tool = messages
        .last()
        .is_some_and(|message| message["role"] == "tool");
    match () {
        _ if user.starts_with("Research") => "researcher#1/model#1",
        _ if user.starts_with("Write") && after_tool => "writer#1/model#2",
        _ if user.starts_with("Write") => "writer#1/model#1",
        _ => "editor#1/model#1",
    }
    .to_owned()
}

/// What one scenario ended with.
#[derive(Debug, PartialEq)]
struct Ending {
    response: String,
    /// Model requests by the journal key of the call they were.
    requests: BTreeMap<String, usize>,
    effects: BTreeMap<String, usize>,
    /// The journal entries written when the child was killed.
    finished_at_kill: Vec<String>,
}

/// Runs the workflow to its end in child processes, killed once at `point` (if given);
/// answers the wait from this process whenever the run is paused.
async fn scenario(database: &str, point: Option<&str>, dir: &Path) -> (Ending, bool) {
    let server = TestServer::start().await;
    server.respond_with(answer);
    let effects = dir.join(format!("effects-{}", uuid()));
    let child = CrashTest::new(std::env::current_exe().unwrap())
        .env("BUDDY_CRASH_DB", database)
        .env("BUDDY_CRASH_MODEL", server.base_url())
        .env("BUDDY_CRASH_EFFECTS", effects.display().to_string());
    let storage = open(database).await;
    let mut killed = point.is_none();
    let mut finished_at_kill = Vec::new();
    // This process follows the log the children write, live, across their crashes.
    let follower = tokio::spawn(follow(Arc::clone(&storage)));
    for round in 0..10 {
        let role = if round == 0 { "start" } else { "resume" };
        let child = child.clone().env("BUDDY_CRASH_ROLE", role);
        let point = point.map(str::to_owned);
        let outcome = tokio::task::spawn_blocking(move || match (killed, point.as_deref()) {
            (false, Some(point)) => child.run_until(point),
            _ => child.run(),
        });
        let outcome = outcome.await.unwrap().unwrap();
        match &outcome {
            Outcome::Killed { .. } => {
                killed = true;
                if let Some(run) = storage
                    .durable_runs(&DurableQuery::all())
                    .await
                    .unwrap()
                    .first()
                {
                    let state = storage.load_durable(&run.run_id).await.unwrap().unwrap();
                    finished_at_kill = state
                        .entries
                        .iter()
                        .map(|entry| entry.key.clone())
                        .collect();
                    finished_at_kill.sort();
                }
            }
            Outcome::Exited {
                code,
                stderr,
                stdout,
            } => {
                assert_eq!(*code, Some(0), "child failed: {stdout}\n{stderr}");
                assert!(!stdout.contains("failed"), "{stdout}\n{stderr}");
            }
        }
        let runs = storage.durable_runs(&DurableQuery::all()).await.unwrap();
        let Some(run) = runs.first() else { continue };
        match run.status {
            RunStatus::Completed => {
                let mut requests = BTreeMap::new();
                for request in server.requests() {
                    *requests.entry(call_key(&request)).or_default() += 1;
                }
                let followed = follower.await.unwrap();
                let stored = storage
                    .read_events(&run.run_id, 0, usize::MAX)
                    .await
                    .unwrap();
                assert_eq!(
                    followed, stored,
                    "{database}: the follower in another process saw the log as stored"
                );
                let ending = Ending {
                    response: run.response.as_ref().unwrap().text().into_owned(),
                    requests,
                    effects: count_lines(&effects),
                    finished_at_kill,
                };
                storage.drop_tables().await.unwrap();
                return (ending, killed);
            }
            RunStatus::Paused => {
                let value = json!({"note": "approved"});
                durable::answer(&*storage, &run.run_id, "approve", value)
                    .await
                    .unwrap();
            }
            RunStatus::Running => {}
            other => panic!("run ended {other:?}"),
        }
    }
    panic!("{database}: the run did not complete after ten processes (fault point {point:?})");
}

/// Follows the run's event log from another process than the ones writing it: each event
/// once, in order, until the run completes (a pause or a crash ends a pass; the next pass
/// resumes after the last event seen).
async fn follow(storage: Arc<dyn Storage>) -> Vec<durable::StoredEvent> {
    use futures::StreamExt;
    let mut seen: Vec<durable::StoredEvent> = Vec::new();
    loop {
        let Some(run) = storage
            .durable_runs(&DurableQuery::all())
            .await
            .unwrap()
            .pop()
        else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let after = seen.last().map_or(0, |event| event.seq);
        let mut events = durable::events(Arc::clone(&storage), run.run_id.clone(), after);
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            assert_eq!(event.seq, seen.len() as u64 + 1, "no gap, no duplicate");
            seen.push(event);
        }
        let now = storage.load_durable(&run.run_id).await.unwrap().unwrap();
        if now.run.status == RunStatus::Completed && now.last_seq == seen.len() as u64 {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn count_lines(path: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

fn uuid() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Every fault point of the workflow, in the order it reaches them.
const POINTS: &[&str] = &[
    "after_run_start",
    "before_model_call:researcher#1/model#1",
    "before_event_flush",
    "after_event_flush",
    "after_model_call:researcher#1/model#1",
    "before_step:facts#1",
    "after_step:facts#1",
    "before_pause",
    "after_pause",
    "before_model_call:writer#1/model#1",
    "after_model_call:writer#1/model#1",
    "before_tool_call:writer#1/tool:save#1",
    "after_tool_call:writer#1/tool:save#1",
    "before_model_call:writer#1/model#2",
    "after_model_call:writer#1/model#2",
    "before_model_call:editor#1/model#1",
    "after_model_call:editor#1/model#1",
    "before_step:publish#1",
    "after_step:publish#1",
    "before_run_end",
    "after_run_end",
];

async fn suite(name: &str, database: impl Fn(&str) -> String, dir: &Path) {
    let (baseline, _) = scenario(&database("baseline"), None, dir).await;
    assert_eq!(
        baseline.response,
        "a draft / an edit / approved / publish-done"
    );
    let once: BTreeMap<String, usize> = [("facts", 1), ("publish", 1), ("tool:save", 1)]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
    assert_eq!(baseline.effects, once);
    for (index, point) in POINTS.iter().enumerate() {
        let (ending, killed) = scenario(&database(&format!("p{index}")), Some(point), dir).await;
        assert!(killed, "{name}: the child never reached {point}");
        assert_eq!(
            ending.response, baseline.response,
            "{name}: killed at {point}"
        );
        assert_eq!(
            ending.effects.keys().collect::<Vec<_>>(),
            once.keys().collect::<Vec<_>>(),
            "{name}: killed at {point}"
        );
        for (effect, count) in &ending.effects {
            // A step or tool journaled before the kill never runs again; one that was
            // running (its effect done, its entry not yet written) runs once more: the
            // at-least-once window of any journal.
            let key = match effect.as_str() {
                "tool:save" => "writer#1/tool:save#1",
                "facts" => "facts#1",
                _ => "publish#1",
            };
            let limit = if ending.finished_at_kill.iter().any(|k| k == key) {
                1
            } else {
                2
            };
            assert!(
                *count >= 1 && *count <= limit,
                "{name}: killed at {point}: {effect} ran {count} times ({ending:?})"
            );
        }
        for (key, count) in &ending.requests {
            // A call journaled before the kill is never made again; one that was in
            // flight (sent, not journaled) may be made once more.
            let limit = if ending.finished_at_kill.contains(key) {
                1
            } else {
                2
            };
            assert!(
                *count >= 1 && *count <= limit,
                "{name}: killed at {point}: {key} was requested {count} times ({ending:?})"
            );
        }
        assert_eq!(
            ending.requests.len(),
            baseline.requests.len(),
            "{name}: {point}"
        );
        let repeated: usize = ending
            .requests
            .values()
            .map(|count| count - 1)
            .sum::<usize>()
            + ending
                .effects
                .values()
                .map(|count| count - 1)
                .sum::<usize>();
        println!(
            "{name}: killed at {point}: resumed; {} journaled entries not repeated, {repeated} unfinished call(s) made again",
            ending.finished_at_kill.len()
        );
    }
}

/// A wait in a loop of 100 iterations, each answered by a separate process: exactly 100
/// waits are ever created, every side effect happens once.
async fn survey(name: &str, database: &str, dir: &Path) {
    let effects = dir.join(format!("survey-{}", uuid()));
    let child = CrashTest::new(std::env::current_exe().unwrap())
        .env("BUDDY_CRASH_DB", database)
        .env("BUDDY_CRASH_MODEL", "http://127.0.0.1:9/v1")
        .env("BUDDY_CRASH_EFFECTS", effects.display().to_string());
    let owner = name.to_owned();
    let run = move |role: &str, extra: Option<(String, u64)>| {
        let name = &owner;
        let mut child = child.clone().env("BUDDY_CRASH_ROLE", role);
        if let Some((run_id, iteration)) = extra {
            child = child
                .env("BUDDY_SURVEY_RUN", run_id)
                .env("BUDDY_SURVEY_ITERATION", iteration.to_string());
        }
        match child.run().unwrap() {
            Outcome::Exited {
                code: Some(0),
                stdout,
                ..
            } => stdout.trim().to_owned(),
            other => panic!("{name}: survey child: {other:?}"),
        }
    };
    let start = run.clone();
    let first = tokio::task::spawn_blocking(move || start("survey-start", None));
    let first = first.await.unwrap();
    let mut words = first.split(' ');
    assert_eq!(words.next(), Some("paused"), "{name}: {first}");
    let run_id = words.next().unwrap().to_owned();
    assert_eq!(words.next(), Some("answer#1"), "{name}: {first}");
    let mut last = String::new();
    for iteration in 1..=100u64 {
        let run = run.clone();
        let id = run_id.clone();
        last = tokio::task::spawn_blocking(move || run("survey-answer", Some((id, iteration))))
            .await
            .unwrap();
        let expected = match iteration {
            100 => "done 5050".to_owned(),
            _ => format!("paused {run_id} answer#{}", iteration + 1),
        };
        assert_eq!(last, expected, "{name}: after answer {iteration}");
    }
    let storage = open(database).await;
    let state = storage.load_durable(&run_id).await.unwrap().unwrap();
    let waits = state
        .entries
        .iter()
        .filter(|entry| entry.kind == durable::EntryKind::Wait)
        .count();
    assert_eq!(waits, 100, "{name}: exactly 100 waits were ever created");
    assert_eq!(
        count_lines(&effects).get("record"),
        Some(&100),
        "{name}: no duplicate side effect"
    );
    storage.drop_tables().await.unwrap();
    println!(
        "{name}: a wait in a loop answered by 100 processes: {last}, 100 waits, 100 side effects"
    );
}

fn main() {
    if let Ok(role) = std::env::var("BUDDY_CRASH_ROLE") {
        child(&role);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        survey("sqlite", &format!("sqlite:{}", root.join("survey.db").display()), &root).await;
        suite("sqlite", |name| format!("sqlite:{}", root.join(format!("{name}.db")).display()), &root).await;
        match std::env::var("BUDDY_TEST_POSTGRES_URL") {
            #[cfg(feature = "postgres")]
            Ok(url) => {
                let prefix = format!("crash_{}", std::process::id());
                survey("postgres", &format!("postgres:{url}#{prefix}_survey"), &root).await;
                suite("postgres", |name| format!("postgres:{url}#{prefix}_{name}"), &root).await;
            }
            _ => println!("SKIPPED: crash resume on Postgres (set BUDDY_TEST_POSTGRES_URL and enable feature `postgres`)"),
        }
    });
    println!("crash resume: ok");
}
