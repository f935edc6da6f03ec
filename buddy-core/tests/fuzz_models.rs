//! Property-based fuzzing of the model clients against hostile servers.
//!
//! Each case scripts a loopback server with one generated answer: chat completions and
//! Messages API bodies with truncated or invalid JSON, wrong types, nulls, huge and negative
//! numbers, absurd tool calls (indexes up to `u64::MAX`), byte-order marks and invalid
//! UTF-8, and SSE streams with any line ending, split at any byte, cut off, or without
//! their end marker; sometimes an error or redirect status. The case then calls
//! `OpenAIChat` or `Claude` directly (`response`, `stream`) or through `Agent::run`,
//! `Agent::run_stream` and `Agent::run_typed`, inside a tokio task, and asserts that the
//! call ends (no hang), with a valid response or a typed error, no panic (a panic in the
//! task is caught by its `JoinHandle`; a panic anywhere else, even one the run engine
//! turns into an error record, is counted by a panic hook), and no API key in a model
//! error.
//!
//! `cargo test -p buddy-core --features testing --test fuzz_models` runs a CI-sized number
//! of cases (`DEFAULT_CASES` per client). A longer run:
//!
//! ```text
//! BUDDY_FUZZ_CASES=100000 cargo test --release -p buddy-core --features testing \
//!     --test fuzz_models -- --nocapture
//! ```

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use buddy_core::agent::Agent;
use buddy_core::model::{
    Claude, Message, Model, ModelError, ModelRequest, ModelStreamEvent, OpenAIChat,
};
use buddy_core::testing::{Canned, TestServer, openai};
use buddy_core::tool::FunctionTool;
use futures::StreamExt;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// Cases per client when `BUDDY_FUZZ_CASES` is unset.
const DEFAULT_CASES: u32 = 2000;

/// How many calls ended in a response and in an error (printed, so a run shows that both
/// paths are exercised).
static OUTCOMES: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

fn outcome(ok: bool) {
    OUTCOMES[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
}
const KEY: &str = "sk-fuzz-SECRET-4242";

fn cases() -> u32 {
    std::env::var("BUDDY_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Panics seen by the hook, on any thread.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic of the process, then prints it as usual.
fn count_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

// ---- values ----

/// Anything a field could hold: every JSON type, edge numbers, the key itself.
fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(4_294_967_295u64),
            Just(100_000_000),
            Just(u64::MAX),
            0u64..4
        ]
        .prop_map(Value::from),
        prop_oneof![Just(-1.0f64), Just(1e300), Just(0.5), Just(-1e300)].prop_map(|f| json!(f)),
        "[a-z_ ]{0,10}".prop_map(Value::from),
        Just(json!(KEY)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([null])),
    ]
}

/// A field: usually the plausible value, sometimes anything, sometimes absent.
fn field<S: Strategy<Value = Value> + 'static>(plausible: S) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        6 => plausible.prop_map(Some),
        1 => hostile().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
        .collect();
    Value::Object(map)
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z ]{0,8}",
        Just("é中".to_owned()),
        Just(KEY.to_owned())
    ]
    .prop_map(Value::from)
}

fn arguments() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just("{}"),
        Just("{\"answer\": \"yes\"}"),
        Just("{\"a\":"),
        Just("not json"),
        Just("")
    ]
    .prop_map(Value::from)
}

fn tokens() -> impl Strategy<Value = Value> {
    prop_oneof![4 => (0u64..100).prop_map(Value::from), 1 => Just(json!(u64::MAX))]
}

fn finish_reason() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just("stop"),
        Just("tool_calls"),
        Just("length"),
        Just("content_filter"),
        Just("weird")
    ]
    .prop_map(Value::from)
}

// ---- OpenAI ----

fn openai_tool_call() -> impl Strategy<Value = Value> {
    (
        field((0u64..3).prop_map(Value::from)),
        field("call_[0-9]".prop_map(Value::from)),
        field(prop_oneof![Just("f"), Just("g")].prop_map(Value::from)),
        field(arguments()),
    )
        .prop_map(|(index, id, name, arguments)| {
            object(vec![
                ("index", index),
                ("id", id),
                ("type", Some(json!("function"))),
                (
                    "function",
                    Some(object(vec![("name", name), ("arguments", arguments)])),
                ),
            ])
        })
}

fn openai_usage() -> impl Strategy<Value = Value> {
    (field(tokens()), field(tokens()), field(tokens())).prop_map(|(p, c, t)| {
        object(vec![
            ("prompt_tokens", p),
            ("completion_tokens", c),
            ("total_tokens", t),
        ])
    })
}

/// A completion (`delta: false`) or a stream chunk (`delta: true`).
fn openai_completion(delta: bool) -> impl Strategy<Value = Value> {
    let message = (
        field(text()),
        field(prop::collection::vec(openai_tool_call(), 0..3).prop_map(Value::from)),
        prop_oneof![8 => Just(None), 1 => field(text())],
    )
        .prop_map(|(content, calls, refusal)| {
            object(vec![
                ("content", content),
                ("tool_calls", calls),
                ("refusal", refusal),
            ])
        });
    let choice = (field(message), field(finish_reason())).prop_map(move |(message, finish)| {
        let key = if delta { "delta" } else { "message" };
        object(vec![(key, message), ("finish_reason", finish)])
    });
    (
        field(prop::collection::vec(choice, 0..2).prop_map(Value::from)),
        field(openai_usage()),
        prop_oneof![10 => Just(None), 1 => Just(Some(json!({"message": KEY})))],
    )
        .prop_map(|(choices, usage, error)| {
            object(vec![
                ("choices", choices),
                ("usage", usage),
                ("model", Some(json!("m"))),
                ("error", error),
            ])
        })
}

// ---- Anthropic ----

fn claude_block() -> impl Strategy<Value = Value> {
    prop_oneof![
        field(text()).prop_map(|t| object(vec![("type", Some(json!("text"))), ("text", t)])),
        (
            field("toolu_[0-9]".prop_map(Value::from)),
            field(Just(json!("f"))),
            field(prop_oneof![Just(json!({})), Just(json!({"answer": "yes"}))])
        )
            .prop_map(|(id, name, input)| object(vec![
                ("type", Some(json!("tool_use"))),
                ("id", id),
                ("name", name),
                ("input", input)
            ])),
        Just(json!({"type": "thinking", "thinking": "hm"})),
    ]
}

fn claude_usage() -> impl Strategy<Value = Value> {
    (field(tokens()), field(tokens()))
        .prop_map(|(i, o)| object(vec![("input_tokens", i), ("output_tokens", o)]))
}

fn claude_message() -> impl Strategy<Value = Value> {
    (
        field(prop::collection::vec(claude_block(), 0..3).prop_map(Value::from)),
        field(
            prop_oneof![
                Just("end_turn"),
                Just("tool_use"),
                Just("refusal"),
                Just("weird")
            ]
            .prop_map(Value::from),
        ),
        field(claude_usage()),
    )
        .prop_map(|(content, stop, usage)| {
            object(vec![
                ("type", Some(json!("message"))),
                ("content", content),
                ("stop_reason", stop),
                ("usage", usage),
            ])
        })
}

fn claude_index() -> BoxedStrategy<Option<Value>> {
    field(prop_oneof![4 => (0u64..3).prop_map(Value::from), 1 => Just(json!(u64::MAX))])
}

fn claude_event() -> impl Strategy<Value = Value> {
    prop_oneof![
        field(claude_usage()).prop_map(|usage| json!({"type": "message_start", "message": object(vec![("usage", usage), ("model", Some(json!("c")))])})),
        (claude_index(), claude_block()).prop_map(|(index, block)| object(vec![
            ("type", Some(json!("content_block_start"))),
            ("index", index),
            ("content_block", Some(block))
        ])),
        (claude_index(), field(text())).prop_map(|(index, t)| object(vec![
            ("type", Some(json!("content_block_delta"))),
            ("index", index),
            ("delta", Some(object(vec![("type", Some(json!("text_delta"))), ("text", t)])))
        ])),
        (claude_index(), field(arguments())).prop_map(|(index, a)| object(vec![
            ("type", Some(json!("content_block_delta"))),
            ("index", index),
            ("delta", Some(object(vec![("type", Some(json!("input_json_delta"))), ("partial_json", a)])))
        ])),
        (field(prop_oneof![Just("end_turn"), Just("tool_use"), Just("weird")].prop_map(Value::from)), field(claude_usage()))
            .prop_map(|(stop, usage)| object(vec![
                ("type", Some(json!("message_delta"))),
                ("delta", Some(object(vec![("stop_reason", stop)]))),
                ("usage", usage)
            ])),
        Just(json!({"type": "message_stop"})),
        Just(json!({"type": "ping"})),
        Just(json!({"type": "error", "error": {"type": "overloaded_error", "message": KEY}})),
    ]
}

// ---- bytes and framing ----

/// What happens to a serialized payload on its way out.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    Truncate(Index),
    InvalidUtf8(Index),
    Bom,
    Garbage(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        12 => Just(Mutation::None),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => any::<Index>().prop_map(Mutation::InvalidUtf8),
        1 => Just(Mutation::Bom),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Mutation::Garbage),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    match mutation {
        Mutation::None => {}
        Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
        Mutation::InvalidUtf8(at) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, [0xFF, 0xC3]);
        }
        Mutation::Bom => bytes.splice(0..0, *b"\xEF\xBB\xBF").for_each(drop),
        Mutation::Garbage(garbage) => bytes = garbage.clone(),
    }
    bytes
}

/// One SSE stream: payloads (each maybe mutated), a line ending, a leading BOM or not,
/// comments, where the bytes are split into reads, and how it ends.
#[derive(Clone, Debug)]
struct Framing {
    ending: &'static str,
    bom: bool,
    comments: bool,
    splits: Vec<Index>,
    end: End,
}

#[derive(Clone, Debug)]
enum End {
    Done,
    Clean,
    Cut,
    NoBlankLine,
}

fn framing() -> impl Strategy<Value = Framing> {
    (
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop::collection::vec(any::<Index>(), 0..6),
        prop_oneof![6 => Just(End::Done), 1 => Just(End::Clean), 1 => Just(End::Cut), 1 => Just(End::NoBlankLine)],
    )
        .prop_map(|(ending, bom, comments, splits, end)| Framing {
            ending,
            bom,
            comments,
            splits,
            end,
        })
}

fn sse_body(events: &[(Option<&str>, Vec<u8>)], framing: &Framing) -> Canned {
    let e = framing.ending.as_bytes();
    let mut body = Vec::new();
    if framing.bom {
        body.extend_from_slice(b"\xEF\xBB\xBF");
    }
    for (name, payload) in events {
        if framing.comments {
            body.extend_from_slice(b": keep-alive");
            body.extend_from_slice(e);
        }
        if let Some(name) = name {
            body.extend_from_slice(format!("event: {name}").as_bytes());
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"data: ");
        body.extend_from_slice(payload);
        body.extend_from_slice(e);
        body.extend_from_slice(e);
    }
    match framing.end {
        End::Done => {
            body.extend_from_slice(b"data: [DONE]");
            body.extend_from_slice(e);
            body.extend_from_slice(e);
        }
        End::NoBlankLine => body.truncate(body.len().saturating_sub(e.len())),
        End::Clean | End::Cut => {}
    }
    let mut points: Vec<usize> = framing
        .splits
        .iter()
        .map(|i| i.index(body.len() + 1))
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut from = 0;
    for point in points {
        chunks.push(body[from..point].to_vec());
        from = point;
    }
    chunks.push(body[from..].to_vec());
    let canned = Canned::chunks(chunks);
    if matches!(framing.end, End::Cut) {
        canned.cut()
    } else {
        canned
    }
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![20 => Just(200u16), 1 => Just(302), 1 => Just(400), 1 => Just(429), 1 => Just(500)]
}

// ---- the calls ----

#[derive(Clone, Copy, Debug)]
enum Entry {
    Response,
    Stream,
    AgentRun,
    AgentStream,
    AgentTyped,
}

impl Entry {
    fn streamed(self) -> bool {
        matches!(self, Entry::Stream | Entry::AgentStream)
    }
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        Just(Entry::Response),
        Just(Entry::Stream),
        Just(Entry::AgentRun),
        Just(Entry::AgentStream),
        Just(Entry::AgentTyped),
    ]
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[allow(dead_code)] // decoded, never read
struct Answer {
    answer: String,
}

fn check_model_error(error: &ModelError) -> Result<(), TestCaseError> {
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    prop_assert!(!text.contains(KEY), "key leaked: {}", text);
    Ok(())
}

fn check_run_error(error: &buddy_core::Error) -> Result<(), TestCaseError> {
    match error.model_error() {
        Some(error) => check_model_error(error),
        None => Ok(()),
    }
}

/// Calls `model` as `entry` says; a typed error is as good as a response.
async fn call(model: std::sync::Arc<dyn Model>, entry: Entry) -> Result<(), TestCaseError> {
    let request = ModelRequest::new(vec![Message::user("x")]);
    let tool = FunctionTool::new("f", "A tool.", json!({"type": "object"}), |_| async {
        Ok(json!("ok"))
    });
    let agent = Agent::new(model.clone()).tool(tool);
    match entry {
        Entry::Response => match model.response(&request).await {
            Ok(_) => outcome(true),
            Err(error) => {
                outcome(false);
                check_model_error(&error)?;
            }
        },
        Entry::Stream => {
            let mut stream = model.stream(&request);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ModelStreamEvent::Done(_)) => {
                        outcome(true);
                        break;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        outcome(false);
                        check_model_error(&error)?;
                        break;
                    }
                }
            }
        }
        Entry::AgentRun => match agent.run("x").await {
            Ok(_) => outcome(true),
            Err(error) => {
                outcome(false);
                check_run_error(&error)?;
            }
        },
        Entry::AgentStream => {
            let mut events = agent.run_stream("x");
            let mut ok = true;
            while let Some(event) = events.next().await {
                if let Err(error) = event {
                    ok = false;
                    check_run_error(&error)?;
                }
            }
            outcome(ok);
        }
        Entry::AgentTyped => match agent.run_typed::<Answer>("x").await {
            Ok(_) => outcome(true),
            Err(error) => {
                outcome(false);
                check_run_error(&error)?;
            }
        },
    }
    Ok(())
}

/// Runs one case on the shared runtime inside its own task: a panic, a hang or a failed
/// check is a failure of the case.
fn run_case(
    script: impl FnOnce(&TestServer) -> std::sync::Arc<dyn Model> + Send + 'static,
    entry: Entry,
) -> Result<(), TestCaseError> {
    count_panics();
    let panics = PANICS.load(Ordering::SeqCst);
    let result = runtime().block_on(async move {
        let task = tokio::spawn(async move {
            let server = TestServer::start().await;
            let model = script(&server);
            call(model, entry).await
        });
        match tokio::time::timeout(Duration::from_secs(20), task).await {
            Err(_) => Err(TestCaseError::fail("the call did not end")),
            Ok(Err(join)) if join.is_panic() => Err(TestCaseError::fail(format!(
                "panicked: {:?}",
                join.into_panic().downcast_ref::<String>()
            ))),
            Ok(Err(join)) => Err(TestCaseError::fail(format!("task failed: {join}"))),
            Ok(Ok(result)) => result,
        }
    });
    prop_assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics,
        "a panic happened during the case"
    );
    result
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

#[derive(Clone, Debug)]
struct OpenAICase {
    entry: Entry,
    status: u16,
    body: Value,
    mutation: Mutation,
    chunks: Vec<(Value, Mutation)>,
    framing: Framing,
}

fn openai_case() -> impl Strategy<Value = OpenAICase> {
    (
        entry(),
        status(),
        openai_completion(false),
        mutation(),
        prop::collection::vec((openai_completion(true), mutation()), 0..6),
        framing(),
    )
        .prop_map(
            |(entry, status, body, mutation, chunks, framing)| OpenAICase {
                entry,
                status,
                body,
                mutation,
                chunks,
                framing,
            },
        )
}

fn openai_script(case: OpenAICase) -> impl FnOnce(&TestServer) -> std::sync::Arc<dyn Model> {
    move |server| {
        let canned = if case.entry.streamed() {
            let events: Vec<(Option<&str>, Vec<u8>)> = case
                .chunks
                .iter()
                .map(|(chunk, m)| (None, mutate(chunk.to_string().into_bytes(), m)))
                .collect();
            sse_body(&events, &case.framing)
        } else {
            Canned::bytes(mutate(case.body.to_string().into_bytes(), &case.mutation))
        };
        server.push(canned.status(case.status));
        // A tool loop's next turn gets a plain answer.
        server.fallback(if case.entry.streamed() {
            Canned::sse(openai::text_chunks(&["done"]))
        } else {
            Canned::json(openai::text_completion("{\"answer\": \"done\"}"))
        });
        std::sync::Arc::new(
            OpenAIChat::new("m")
                .base_url(server.base_url())
                .api_key(KEY)
                .max_retries(0)
                .first_byte_timeout(Duration::from_secs(5))
                .idle_timeout(Duration::from_secs(5))
                .call_timeout(Duration::from_secs(10)),
        )
    }
}

#[derive(Clone, Debug)]
struct ClaudeCase {
    entry: Entry,
    status: u16,
    body: Value,
    mutation: Mutation,
    events: Vec<(Value, Mutation)>,
    framing: Framing,
}

fn claude_case() -> impl Strategy<Value = ClaudeCase> {
    (
        entry(),
        status(),
        claude_message(),
        mutation(),
        prop::collection::vec((claude_event(), mutation()), 0..7),
        framing(),
    )
        .prop_map(
            |(entry, status, body, mutation, events, framing)| ClaudeCase {
                entry,
                status,
                body,
                mutation,
                events,
                framing,
            },
        )
}

fn claude_script(case: ClaudeCase) -> impl FnOnce(&TestServer) -> std::sync::Arc<dyn Model> {
    move |server| {
        let canned = if case.entry.streamed() {
            let events: Vec<(Option<&str>, Vec<u8>)> = case
                .events
                .iter()
                .map(|(event, m)| {
                    (
                        event["type"].as_str(),
                        mutate(event.to_string().into_bytes(), m),
                    )
                })
                .collect();
            sse_body(&events, &case.framing)
        } else {
            Canned::bytes(mutate(case.body.to_string().into_bytes(), &case.mutation))
        };
        server.push(canned.status(case.status));
        server.fallback(if case.entry.streamed() {
            Canned::sse_raw(vec![
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}).to_string(),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "done"}}).to_string(),
                json!({"type": "message_stop"}).to_string(),
            ])
        } else {
            Canned::json(json!({"content": [{"type": "text", "text": "{\"answer\": \"done\"}"}], "stop_reason": "end_turn"}))
        });
        std::sync::Arc::new(
            Claude::new("c")
                .base_url(format!("http://{}", server.addr()))
                .api_key(KEY)
                .max_retries(0)
                .first_byte_timeout(Duration::from_secs(5))
                .idle_timeout(Duration::from_secs(5))
                .call_timeout(Duration::from_secs(10)),
        )
    }
}

fn report(client: &str, started: Instant) {
    eprintln!(
        "{client}: {} cases in {:?} (so far in this process: {} responses, {} typed errors)",
        cases(),
        started.elapsed(),
        OUTCOMES[0].load(Ordering::Relaxed),
        OUTCOMES[1].load(Ordering::Relaxed),
    );
}

#[test]
fn openai_survives_hostile_answers() {
    let started = Instant::now();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&openai_case(), |case| {
        let entry = case.entry;
        run_case(openai_script(case), entry)
    });
    report("openai", started);
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn claude_survives_hostile_answers() {
    let started = Instant::now();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&claude_case(), |case| {
        let entry = case.entry;
        run_case(claude_script(case), entry)
    });
    report("claude", started);
    if let Err(error) = result {
        panic!("{error}");
    }
}
