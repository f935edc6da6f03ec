//! `Agent` with the scripted model: the tool loop, concurrency, failures, history,
//! structured output and streaming.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use buddy_core::agent::Agent;
use buddy_core::member::{Member, MemberContext};
use buddy_core::model::{ModelError, ResponseFormat, Role};
use buddy_core::session::{SessionKey, SessionKind};
use buddy_core::storage::MemoryStorage;
use buddy_core::testing::ScriptedModel;
use buddy_core::tool::{FunctionTool, Tool, Toolkit};
use buddy_core::{Error, RunEventKind, RunStatus, Storage};
use futures::StreamExt;
use serde_json::{Value, json};

fn add_tool() -> FunctionTool {
    FunctionTool::new(
        "add",
        "Adds two integers.",
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}),
        |args| async move {
            Ok(json!(
                args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0)
            ))
        },
    )
}

fn sleep_tool(counter: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> FunctionTool {
    FunctionTool::new(
        "sleep",
        "Sleeps 100 ms.",
        json!({"type": "object", "properties": {}}),
        move |_| {
            let counter = counter.clone();
            let peak = peak.clone();
            async move {
                let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                counter.fetch_sub(1, Ordering::SeqCst);
                Ok(json!("slept"))
            }
        },
    )
}

#[tokio::test]
async fn plain_text_run_builds_messages_and_response() {
    let model = ScriptedModel::new().text("Paris.");
    let agent = Agent::new(model.clone())
        .name("geo")
        .description("You are a geographer.")
        .instructions("Answer in one word.")
        .expected_output("A city name.");
    let response = agent.run("Capital of France?").await.unwrap();
    assert_eq!(response.text(), "Paris.");
    assert_eq!(response.agent_id.as_deref(), Some(agent.id()));
    assert_eq!(
        response.session_id.as_deref(),
        Some(agent.current_session_id())
    );
    assert!(response.run_id.is_some());
    assert_eq!(response.model.as_deref(), Some("scripted"));
    let metrics = response.metrics.unwrap();
    assert_eq!(metrics.total_tokens, 2);
    let roles: Vec<Role> = response.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, vec![Role::System, Role::User, Role::Assistant]);
    let system = response.messages[0].content.clone().unwrap();
    assert_eq!(
        system,
        "You are a geographer.\n<instructions>\nAnswer in one word.\n</instructions>\n\n<expected_output>\nA city name.\n</expected_output>"
    );
    let request = &model.requests()[0];
    assert!(request.tools.is_empty());
    assert_eq!(request.messages.len(), 2);
}

#[tokio::test]
async fn tool_loop_runs_tools_and_sends_results_back() {
    let model = ScriptedModel::new()
        .tool_call("add", json!({"a": 2, "b": 3}))
        .text("The sum is 5.");
    let agent = Agent::new(model.clone()).tool(add_tool());
    let response = agent.run("2 + 3?").await.unwrap();
    assert_eq!(response.text(), "The sum is 5.");
    assert_eq!(response.tools.len(), 1);
    let execution = &response.tools[0];
    assert_eq!(execution.tool_name, "add");
    assert_eq!(execution.arguments, json!({"a": 2, "b": 3}));
    assert_eq!(execution.result.as_deref(), Some("5"));
    assert!(execution.error.is_none());

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].tools[0].name, "add");
    let second = &requests[1].messages;
    assert_eq!(second.len(), 3);
    assert_eq!(second[1].role, Role::Assistant);
    assert_eq!(second[1].tool_calls[0].name, "add");
    assert_eq!(second[2].role, Role::Tool);
    assert_eq!(second[2].tool_call_id.as_deref(), Some("call_0"));
    assert_eq!(second[2].content.as_deref(), Some("5"));
    assert_eq!(
        response.metrics.unwrap().total_tokens,
        4,
        "usage summed over turns"
    );
}

#[tokio::test]
async fn tool_calls_of_one_turn_run_concurrently() {
    let counter = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let model = ScriptedModel::new()
        .tool_calls(vec![
            ("sleep", json!({})),
            ("sleep", json!({})),
            ("sleep", json!({})),
        ])
        .text("done");
    let agent = Agent::new(model).tool(sleep_tool(counter, peak.clone()));
    let started = Instant::now();
    let response = agent.run("go").await.unwrap();
    assert_eq!(response.tools.len(), 3);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "all three calls were in flight together"
    );
    assert!(
        started.elapsed() < Duration::from_millis(280),
        "{:?}",
        started.elapsed()
    );
    let ids: Vec<&str> = response
        .tools
        .iter()
        .map(|t| t.tool_call_id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["call_0", "call_1", "call_2"],
        "results keep the call order"
    );
}

#[tokio::test]
async fn tool_errors_and_panics_go_back_to_the_model() {
    let failing = FunctionTool::new("fail", "Fails.", json!({"type": "object"}), |_| async {
        Err(Error::msg("disk on fire"))
    });
    let panicking = FunctionTool::new("boom", "Panics.", json!({"type": "object"}), |_| async {
        if true {
            panic!("kaboom");
        }
        Ok(Value::Null)
    });
    let model = ScriptedModel::new()
        .tool_calls(vec![
            ("fail", json!({})),
            ("boom", json!({})),
            ("missing", json!({})),
        ])
        .raw_tool_call("fail", "{not json")
        .text("recovered");
    let agent = Agent::new(model.clone()).tool(failing).tool(panicking);
    let response = agent.run("go").await.unwrap();
    assert_eq!(response.text(), "recovered");
    let errors: Vec<&str> = response
        .tools
        .iter()
        .map(|t| t.error.as_deref().unwrap())
        .collect();
    assert_eq!(errors[0], "disk on fire");
    assert_eq!(errors[1], "tool panicked: kaboom");
    assert!(
        errors[2].starts_with("tool `missing` does not exist"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].contains("invalid JSON arguments"),
        "{}",
        errors[3]
    );
    let tool_messages: Vec<String> = model.requests()[1]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone().unwrap())
        .collect();
    assert_eq!(tool_messages[0], "Error: disk on fire");
    assert_eq!(tool_messages[1], "Error: tool panicked: kaboom");
}

#[tokio::test]
async fn max_turns_bounds_the_loop() {
    let model = ScriptedModel::new()
        .tool_call("add", json!({"a": 1, "b": 1}))
        .tool_call("add", json!({"a": 1, "b": 1}))
        .tool_call("add", json!({"a": 1, "b": 1}))
        .text("never");
    let agent = Agent::new(model.clone())
        .name("looper")
        .tool(add_tool())
        .max_turns(2);
    let error = agent.run("loop").await.unwrap_err();
    match &error {
        Error::MaxTurns { agent, max_turns } => {
            assert_eq!(agent, "looper");
            assert_eq!(*max_turns, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(model.calls(), 2);
}

#[tokio::test]
async fn model_errors_surface_typed() {
    let model = ScriptedModel::new().error(ModelError::Status {
        status: 429,
        message: "slow down".into(),
        retry_after: None,
        endpoint: None,
    });
    let error = Agent::new(model).run("x").await.unwrap_err();
    assert!(
        error.model_error().is_some_and(ModelError::is_rate_limited),
        "{error:?}"
    );
}

#[tokio::test]
async fn history_comes_from_the_agent_session_in_storage() {
    let storage = Arc::new(MemoryStorage::new());
    let model = ScriptedModel::new()
        .text("Hi Ada.")
        .text("Your name is Ada.")
        .text("third");
    let agent = Agent::new(model.clone())
        .name("memo")
        .instructions("Be kind.")
        .storage(storage.clone())
        .session_id("s-1")
        .user_id("u-1")
        .add_history_to_messages(true)
        .num_history_runs(1);
    agent.run("I am Ada.").await.unwrap();
    agent.run("What is my name?").await.unwrap();
    agent.run("Again?").await.unwrap();

    let requests = model.requests();
    assert_eq!(requests[0].messages.len(), 2);
    let second: Vec<(Role, String)> = requests[1]
        .messages
        .iter()
        .map(|m| (m.role, m.content.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        second,
        vec![
            (
                Role::System,
                "<instructions>\nBe kind.\n</instructions>".to_owned()
            ),
            (Role::User, "I am Ada.".to_owned()),
            (Role::Assistant, "Hi Ada.".to_owned()),
            (Role::User, "What is my name?".to_owned()),
        ]
    );
    // num_history_runs(1): only the previous run.
    assert_eq!(requests[2].messages.len(), 4);
    assert_eq!(
        requests[2].messages[1].content.as_deref(),
        Some("What is my name?")
    );

    let session = storage
        .read(
            &SessionKey::new("s-1", SessionKind::Agent),
            &buddy_core::storage::ReadOptions::with_runs(10),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.kind, buddy_core::SessionKind::Agent);
    assert_eq!(session.component_id.as_deref(), Some(agent.id()));
    assert_eq!(session.user_id.as_deref(), Some("u-1"));
    assert_eq!(session.component_data["name"], "memo");
    assert_eq!(session.runs.len(), 3);
    assert_eq!(session.runs[0].status, RunStatus::Completed);
    assert_eq!(session.runs[0].input, json!({"message": "I am Ada."}));
}

#[tokio::test]
async fn failed_runs_are_recorded_with_status_error() {
    let storage = Arc::new(MemoryStorage::new());
    let model = ScriptedModel::new().error(ModelError::msg("boom"));
    let agent = Agent::new(model)
        .storage(storage.clone())
        .session_id("s-err");
    agent.run("x").await.unwrap_err();
    let runs = storage
        .runs(&SessionKey::new("s-err", SessionKind::Agent), None)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Error);
    assert_eq!(runs[0].error.as_deref(), Some("boom"));
}

#[tokio::test]
async fn attach_sets_session_and_user_from_the_workflow() {
    let storage = Arc::new(MemoryStorage::new());
    let mut agent = Agent::new(ScriptedModel::new().text("ok")).storage(storage.clone());
    agent.attach(
        &MemberContext::new("wf-session")
            .user_id(Some("alice".into()))
            .workflow_id(Some("wf".into()))
            .member("helper"),
    );
    assert_eq!(agent.current_session_id(), "wf-session");
    assert_eq!(agent.current_user_id(), Some("alice"));
    let response = agent.run("x").await.unwrap();
    assert_eq!(response.session_id.as_deref(), Some("wf-session"));
    // Stored at its member path, so it never takes over the workflow's own session.
    let key = SessionKey::new("wf-session", SessionKind::Agent).scope("helper");
    let session = storage
        .read(&key, &Default::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.user_id.as_deref(), Some("alice"));
    assert_eq!(session.scope, "helper");
}

#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
struct Capital {
    city: String,
    population_millions: f64,
}

#[tokio::test]
async fn structured_output_fits() {
    let model = ScriptedModel::new().json(json!({"city": "Paris", "population_millions": 2.1}));
    let agent = Agent::new(model.clone());
    let capital: Capital = agent.run_typed("Capital of France?").await.unwrap();
    assert_eq!(
        capital,
        Capital {
            city: "Paris".into(),
            population_millions: 2.1
        }
    );
    match &model.requests()[0].response_format {
        Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        }) => {
            assert_eq!(name, "Capital");
            assert!(*strict);
            assert_eq!(schema["required"], json!(["city", "population_millions"]));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn structured_output_misfit_is_a_typed_error() {
    let model = ScriptedModel::new()
        .text("{\"town\": \"Paris\"}")
        .text("not json at all");
    let agent = Agent::new(model);
    let error = agent.run_typed::<Capital>("x").await.unwrap_err();
    match &error {
        Error::StructuredOutput {
            type_name, content, ..
        } => {
            assert!(type_name.ends_with("Capital"));
            assert_eq!(content, "{\"town\":\"Paris\"}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let error = agent.run_typed::<Capital>("x").await.unwrap_err();
    assert!(
        matches!(error, Error::StructuredOutput { ref content, .. } if content == "not json at all")
    );
}

#[tokio::test]
async fn streaming_emits_events_in_order() {
    let model = ScriptedModel::new()
        .tool_call("add", json!({"a": 1, "b": 2}))
        .chunks(["The ", "answer ", "is 3."]);
    let agent = Agent::new(model).tool(add_tool());
    let events: Vec<_> = agent.run_stream("1 + 2?").collect().await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        vec![
            "run_started",
            "tool_call_started",
            "tool_call_completed",
            "run_content",
            "run_content",
            "run_content",
            "run_completed",
        ]
    );
    let run_id = events[0].run_id.clone().unwrap();
    for event in &events {
        assert_eq!(event.agent_id.as_deref(), Some(agent.id()));
        assert_eq!(event.run_id.as_deref(), Some(run_id.as_str()));
        assert!(event.session_id.is_some());
    }
    let text: String = events.iter().filter_map(|e| e.content_delta()).collect();
    assert_eq!(text, "The answer is 3.");
    match &events.last().unwrap().kind {
        RunEventKind::RunCompleted { response } => {
            assert_eq!(response.text(), "The answer is 3.");
            assert_eq!(response.tools.len(), 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn streaming_errors_end_the_stream() {
    let model = ScriptedModel::new().error(ModelError::msg("nope"));
    let events: Vec<_> = Agent::new(model).run_stream("x").collect().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].as_ref().unwrap().name(), "run_started");
    assert!(events[1].is_err());
}

#[tokio::test]
async fn agents_fan_out_with_join_all_and_clone_cheaply() {
    let model = ScriptedModel::new().latency(Duration::from_millis(100));
    for _ in 0..4 {
        model.push(buddy_core::testing::Reply::Response(
            buddy_core::model::ModelResponse::text("ok"),
        ));
    }
    let agent = Agent::new(model).name("worker");
    let agents: Vec<Agent> = (0..4).map(|_| agent.clone()).collect();
    let started = Instant::now();
    let results = futures::future::join_all(agents.iter().map(|a| a.run("go"))).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn toolkits_group_tools_and_debug_is_readable() {
    let kit = Toolkit::new("math").tool(add_tool());
    let agent = Agent::new(ScriptedModel::new()).tools(kit).name("calc");
    assert_eq!(agent.tool_list().len(), 1);
    assert_eq!(agent.tool_list()[0].name(), "add");
    let debug = format!("{agent:?}");
    assert!(debug.contains("calc") && debug.contains("add"), "{debug}");
}

#[test]
fn agent_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    check::<Agent>();
    fn stream_is_send(agent: &Agent) -> impl Send + '_ {
        agent.run_stream("x")
    }
    let _ = stream_is_send;
}

#[tokio::test]
async fn tool_choice_is_sent() {
    let model = ScriptedModel::new().text("ok");
    let agent = Agent::new(model.clone())
        .tool(add_tool())
        .tool_choice(buddy_core::model::ToolChoice::Required);
    agent.run("x").await.unwrap();
    assert_eq!(
        model.requests()[0].tool_choice,
        Some(buddy_core::model::ToolChoice::Required)
    );
}

#[test]
fn attach_passes_debug_mode() {
    // Only checked, not run: a debug run installs a global subscriber for the process.
    let mut agent = Agent::new(ScriptedModel::new());
    assert!(format!("{agent:?}").contains("debug_mode: false"));
    agent.attach(&MemberContext::new("s").debug_mode(true));
    assert!(format!("{agent:?}").contains("debug_mode: true"));
}

mod spans {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    /// A span's name and its fields.
    pub type SpanRecord = (String, Vec<(String, String)>);

    /// Every span created.
    #[derive(Clone, Default)]
    pub struct Recorder(pub Arc<Mutex<Vec<SpanRecord>>>);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
            let mut fields = Fields(Vec::new());
            attrs.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((attrs.metadata().name().to_owned(), fields.0));
        }
    }

    pub fn subscriber(recorder: Recorder) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::registry().with(recorder)
    }
}

#[tokio::test]
async fn runs_model_calls_and_tool_calls_are_spans_with_ids() {
    let recorder = spans::Recorder::default();
    let _guard = tracing::subscriber::set_default(spans::subscriber(recorder.clone()));
    let model = ScriptedModel::new()
        .tool_call("add", json!({"a": 1, "b": 1}))
        .text("2");
    let agent = Agent::new(model)
        .tool(add_tool())
        .session_id("span-session");
    let response = agent.run("1+1").await.unwrap();
    let run_id = response.run_id.unwrap();
    let spans = recorder.0.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        vec!["agent_run", "model_call", "tool_call", "model_call"]
    );
    for (name, fields) in &spans {
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("run_id").as_deref(), Some(run_id.as_str()), "{name}");
        assert_eq!(get("session_id").as_deref(), Some("span-session"), "{name}");
    }
}

#[tokio::test]
async fn history_without_storage_is_kept_in_process() {
    let model = ScriptedModel::new().text("Hi Bo.").text("Bo.");
    let agent = Agent::new(model.clone())
        .session_id("local")
        .add_history_to_messages(true);
    agent.run("I am Bo.").await.unwrap();
    agent.clone().run("Who am I?").await.unwrap();
    let second: Vec<String> = model.requests()[1]
        .messages
        .iter()
        .map(|m| m.content.clone().unwrap_or_default())
        .collect();
    assert_eq!(second, vec!["I am Bo.", "Hi Bo.", "Who am I?"]);
}
