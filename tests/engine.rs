//! The one run lifecycle: workflows, agents and teams record, cancel, fail, merge state and
//! report events the same way, and can share one storage value.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use buddy::model::{Message, ModelResponse, ToolCall};
use buddy::prelude::*;
use buddy::run::RunRecord;
use buddy::session::{SessionKey, SessionKind};
use buddy::storage::ReadOptions;
use buddy::tool::FunctionTool;
use buddy::{RunEventKind, RunStatus, StateMerge, Storage};
use buddy_core::testing::{Reply, ScriptedModel};
use common::eventually;
use serde_json::{Map, Value, json};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn key(session_id: &str, kind: SessionKind, scope: &str) -> SessionKey {
    SessionKey::new(session_id, kind).scope(scope)
}

async fn runs(storage: &MemoryStorage, key: &SessionKey) -> Vec<RunRecord> {
    storage.runs(key, None).await.unwrap()
}

async fn state(storage: &MemoryStorage, key: &SessionKey) -> Value {
    let session = storage.read(key, &ReadOptions::default()).await.unwrap();
    Value::Object(session.map(|s| s.session_state).unwrap_or_default())
}

/// A workflow that waits, sets a state key, then fails or answers as told.
#[workflow]
struct Waiter {}

#[workflow]
impl Waiter {
    async fn run(&mut self, wait_ms: u64, fail: bool) -> Result<RunResponse> {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        self.state_mut().insert("touched".into(), json!(true));
        match fail {
            true => Err(Error::msg("the body gave up")),
            false => Ok(RunResponse::from_text("done")),
        }
    }
}

/// A leader that delegates to `member` once, then answers.
fn leader(member: &str) -> ScriptedModel {
    ScriptedModel::new()
        .tool_call(
            "transfer_task_to_member",
            json!({"member_id": member, "task_description": "help", "expected_output": "text"}),
        )
        .text("team answer")
}

#[tokio::test]
async fn records_start_at_the_start_end_at_the_end_with_one_input_shape() {
    let storage = MemoryStorage::new();
    let slow = Duration::from_millis(40);

    let mut workflow = Waiter::builder()
        .storage(storage.clone())
        .session_id("w")
        .build()
        .unwrap();
    workflow.run(40, false).await.unwrap();
    let agent = Agent::new(ScriptedModel::new().text("hi").latency(slow))
        .storage(storage.clone())
        .session_id("a");
    agent.run("hello").await.unwrap();
    let team = Team::new(
        ScriptedModel::new().text("ok").latency(slow),
        TeamMode::Coordinate,
    )
    .storage(storage.clone())
    .session_id("t");
    team.run("hello team").await.unwrap();

    for (key, input) in [
        (
            key("w", SessionKind::Workflow, ""),
            json!({"wait_ms": 40, "fail": false}),
        ),
        (
            key("a", SessionKind::Agent, ""),
            json!({"message": "hello"}),
        ),
        (
            key("t", SessionKind::Team, ""),
            json!({"message": "hello team"}),
        ),
    ] {
        let record = runs(&storage, &key).await.remove(0);
        assert_eq!(record.input, input, "{key}");
        let ended = record.ended_at.unwrap();
        assert!(ended - record.created_at >= 35, "{key}: {record:?}");
        assert!(record.duration_ms.unwrap() >= 35.0, "{key}");
        assert!(record.response.created_at >= record.created_at, "{key}");
    }
}

/// A tool that never returns (until the test ends).
fn hanging_tool() -> FunctionTool {
    FunctionTool::new("wait", "Waits.", json!({"type": "object"}), |_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Value::Null)
    })
}

/// An answer with text and a call of the hanging tool.
fn thinking_then_wait() -> Reply {
    Reply::Response(ModelResponse {
        message: Message::assistant_tool_calls(
            Some("thinking".into()),
            vec![ToolCall::new("c1", "wait", "{}")],
        ),
        ..ModelResponse::default()
    })
}

async fn cancelled(storage: &MemoryStorage, key: &SessionKey) -> RunRecord {
    let found = eventually(|| {
        let storage = storage.clone();
        let key = key.clone();
        async move { !storage.runs(&key, None).await.unwrap().is_empty() }
    })
    .await;
    assert!(found, "no record for {key}");
    let record = runs(storage, key).await.remove(0);
    assert_eq!(record.status, RunStatus::Cancelled, "{key}");
    record
}

#[tokio::test]
async fn dropped_streams_are_recorded_cancelled_with_the_text_so_far() {
    let storage = MemoryStorage::new();

    let agent = Agent::new(ScriptedModel::new().reply(thinking_then_wait()))
        .tool(hanging_tool())
        .storage(storage.clone())
        .session_id("a");
    {
        let mut stream = agent.run_stream("go");
        while let Some(event) = stream.next().await {
            if event.unwrap().content_delta() == Some("thinking") {
                break;
            }
        }
    }
    let record = cancelled(&storage, &key("a", SessionKind::Agent, "")).await;
    assert_eq!(record.response.text(), "thinking");
    assert!(record.ended_at.is_some());

    let member = Agent::new(
        ScriptedModel::new()
            .text("late")
            .latency(Duration::from_secs(3600)),
    )
    .name("slow");
    let leader = ScriptedModel::new().reply(Reply::Response(ModelResponse {
        message: Message::assistant_tool_calls(
            Some("planning".into()),
            vec![ToolCall::new(
                "c1",
                "transfer_task_to_member",
                r#"{"member_id": "slow", "task_description": "x"}"#,
            )],
        ),
        ..ModelResponse::default()
    }));
    let team = Team::new(leader, TeamMode::Coordinate)
        .member(member)
        .storage(storage.clone())
        .session_id("t");
    {
        let mut stream = team.run_stream("go");
        while let Some(event) = stream.next().await {
            if event.unwrap().name() == "tool_call_started" {
                break;
            }
        }
    }
    let record = cancelled(&storage, &key("t", SessionKind::Team, "")).await;
    assert_eq!(record.response.text(), "planning");
}

#[tokio::test]
async fn errors_and_panics_are_recorded_the_same_way() {
    let storage = MemoryStorage::new();
    let failing =
        Agent::new(ScriptedModel::new().error(buddy::model::ModelError::msg("model down")))
            .storage(storage.clone())
            .session_id("a-err");
    let error = failing.run("x").await.unwrap_err();
    let panicking = Agent::new(ScriptedModel::new().reply(Reply::Panic("agent boom".into())))
        .storage(storage.clone())
        .session_id("a-panic");
    let panic = panicking.run("x").await.unwrap_err();
    assert!(matches!(&panic, Error::Panicked { message } if message == "agent boom"));
    let team = Team::new(
        ScriptedModel::new().reply(Reply::Panic("leader boom".into())),
        TeamMode::Route,
    )
    .storage(storage.clone())
    .session_id("t-panic");
    let team_panic = team.run("x").await.unwrap_err();
    let mut workflow = Waiter::builder()
        .storage(storage.clone())
        .session_id("w-err")
        .build()
        .unwrap();
    let workflow_error = workflow.run(0, true).await.unwrap_err();

    for (key, error, wording) in [
        (key("a-err", SessionKind::Agent, ""), &error, "model down"),
        (
            key("a-panic", SessionKind::Agent, ""),
            &panic,
            "run panicked: agent boom",
        ),
        (
            key("t-panic", SessionKind::Team, ""),
            &team_panic,
            "run panicked: leader boom",
        ),
        (
            key("w-err", SessionKind::Workflow, ""),
            &workflow_error,
            "the body gave up",
        ),
    ] {
        let record = runs(&storage, &key).await.remove(0);
        assert_eq!(record.status, RunStatus::Error, "{key}");
        assert_eq!(record.error.as_deref(), Some(wording), "{key}");
        assert!(error.to_string().contains(wording), "{key}: {error}");
    }
}

#[tokio::test]
async fn a_failed_run_keeps_its_record_but_applies_no_state() {
    let storage = MemoryStorage::new();

    let mut workflow = Waiter::builder()
        .storage(storage.clone())
        .session_id("w")
        .session_state(json!({"initial": 1}))
        .build()
        .unwrap();
    workflow.run(0, true).await.unwrap_err();
    let stored = key("w", SessionKind::Workflow, "");
    assert_eq!(runs(&storage, &stored).await.len(), 1);
    assert_eq!(
        state(&storage, &stored).await,
        json!({}),
        "nothing of the failed run"
    );
    assert_eq!(
        workflow.state().get("touched"),
        None,
        "the instance is back too"
    );
    workflow.run(0, false).await.unwrap();
    assert_eq!(
        state(&storage, &stored).await,
        json!({"initial": 1, "touched": true})
    );

    let agent = Agent::new(
        ScriptedModel::new()
            .error(buddy::model::ModelError::msg("down"))
            .text("up"),
    )
    .session_state(object(json!({"k": 1})))
    .storage(storage.clone())
    .session_id("a");
    agent.run("x").await.unwrap_err();
    let stored = key("a", SessionKind::Agent, "");
    assert_eq!(runs(&storage, &stored).await.len(), 1);
    assert_eq!(state(&storage, &stored).await, json!({}));
    agent.run("x").await.unwrap();
    assert_eq!(state(&storage, &stored).await, json!({"k": 1}));

    let team = Team::new(
        ScriptedModel::new()
            .error(buddy::model::ModelError::msg("down"))
            .text("up"),
        TeamMode::Coordinate,
    )
    .session_state(object(json!({"k": 2})))
    .storage(storage.clone())
    .session_id("t");
    team.run("x").await.unwrap_err();
    let stored = key("t", SessionKind::Team, "");
    assert_eq!(state(&storage, &stored).await, json!({}));
    team.run("x").await.unwrap();
    assert_eq!(state(&storage, &stored).await, json!({"k": 2}));
}

#[tokio::test]
async fn agents_and_teams_merge_state_like_workflows() {
    let storage = MemoryStorage::new();
    let first = Agent::new(ScriptedModel::new().text("1"))
        .session_state(object(json!({"a": 9, "nested": {"x": 9}})))
        .storage(storage.clone())
        .session_id("s");
    first.run("x").await.unwrap();
    let stored = key("s", SessionKind::Agent, "");

    // Stored values win; missing keys are added, recursively.
    let second = Agent::new(ScriptedModel::new().text("2").text("3"))
        .session_state(object(json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 1}})))
        .storage(storage.clone())
        .session_id("s");
    second.run("x").await.unwrap();
    assert_eq!(
        state(&storage, &stored).await,
        json!({"a": 9, "b": 2, "nested": {"x": 9, "y": 1}})
    );
    // The reference's rule, on request.
    let third = second.clone().state_merge(StateMerge::CodeWins);
    third.run("x").await.unwrap();
    assert_eq!(
        state(&storage, &stored).await,
        json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 1}})
    );

    let team = |state: Value, merge| {
        Team::new(ScriptedModel::new().text("t"), TeamMode::Coordinate)
            .session_state(object(state))
            .state_merge(merge)
            .storage(storage.clone())
            .session_id("s")
    };
    team(json!({"a": 9}), StateMerge::StoredWins)
        .run("x")
        .await
        .unwrap();
    team(json!({"a": 1, "b": 2}), StateMerge::StoredWins)
        .run("x")
        .await
        .unwrap();
    let stored = key("s", SessionKind::Team, "");
    assert_eq!(state(&storage, &stored).await, json!({"a": 9, "b": 2}));
    team(json!({"a": 1}), StateMerge::CodeWins)
        .run("x")
        .await
        .unwrap();
    assert_eq!(state(&storage, &stored).await, json!({"a": 1, "b": 2}));
}

/// A workflow whose agents and team all use the workflow's own storage.
#[workflow]
struct Newsroom {
    #[member]
    researcher: Agent,
    #[member]
    writer: Agent,
    #[member]
    desk: Team,
}

#[workflow]
impl Newsroom {
    async fn run(&mut self, topic: String) -> impl Stream<Item = Result<RunEvent>> {
        buddy::stream! {
            let research = self.researcher.run(format!("research {topic}")).await?;
            let draft = self.writer.run(research.text().into_owned()).await?;
            let mut desk = self.desk.run_stream(draft.text().into_owned());
            while let Some(event) = desk.next().await {
                yield event;
            }
            self.state_mut().insert("topic".into(), json!(topic));
        }
    }
}

fn newsroom(storage: &MemoryStorage) -> Newsroom {
    newsroom_with(storage, false)
}

fn newsroom_with(storage: &MemoryStorage, debug: bool) -> Newsroom {
    let critic = Agent::new(
        ScriptedModel::new()
            .chunks(["sharp ", "notes"])
            .chunks(["sharp ", "notes"]),
    )
    .name("critic")
    .storage(storage.clone());
    let leader = leader("critic")
        .tool_call(
            "transfer_task_to_member",
            json!({"member_id": "critic", "task_description": "again"}),
        )
        .text("team answer");
    let desk = Team::new(leader, TeamMode::Coordinate)
        .name("desk")
        .member(critic)
        .storage(storage.clone());
    Newsroom::builder()
        .researcher(
            Agent::new(ScriptedModel::new().text("facts").text("facts")).storage(storage.clone()),
        )
        .writer(
            Agent::new(ScriptedModel::new().text("draft").text("draft")).storage(storage.clone()),
        )
        .desk(desk)
        .storage(storage.clone())
        .session_id("news")
        .user_id("editor")
        .debug_mode(debug)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_workflow_and_its_members_share_one_storage_without_overwriting() {
    let storage = MemoryStorage::new();
    let mut workflow = newsroom(&storage);
    workflow.run("qubits".into()).into_response().await.unwrap();

    let own = key("news", SessionKind::Workflow, "");
    let session = storage
        .read(&own, &ReadOptions::with_runs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.kind, SessionKind::Workflow);
    assert_eq!(session.session_state, object(json!({"topic": "qubits"})));
    assert_eq!(session.runs.len(), 1);
    assert_eq!(workflow.sessions_of_workflow().await.unwrap().len(), 1);
    for (kind, scope) in [
        (SessionKind::Agent, "researcher"),
        (SessionKind::Agent, "writer"),
        (SessionKind::Team, "desk"),
        (SessionKind::Agent, "desk/critic"),
    ] {
        let member = key("news", kind, scope);
        let stored = storage
            .read(&member, &ReadOptions::with_runs(5))
            .await
            .unwrap();
        let stored = stored.unwrap_or_else(|| panic!("no session for {member}"));
        assert_eq!(stored.runs.len(), 1, "{member}");
        assert_eq!(
            stored.user_id.as_deref(),
            Some("editor"),
            "{member}: the user reached it"
        );
    }
    // A second run appends to each, still apart.
    workflow.run("lasers".into()).into_response().await.unwrap();
    assert_eq!(runs(&storage, &own).await.len(), 2);
    assert_eq!(
        runs(&storage, &key("news", SessionKind::Agent, "desk/critic"))
            .await
            .len(),
        2
    );

    // Deleting the workflow's session deletes its members' too.
    workflow.delete_session("news").await.unwrap();
    assert!(
        storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn events_name_the_top_level_run_and_the_run_that_produced_them() {
    let storage = MemoryStorage::new();
    let mut workflow = newsroom(&storage);
    let events: Vec<RunEvent> = workflow
        .run("qubits".into())
        .map(Result::unwrap)
        .collect()
        .await;
    let last = events.last().unwrap();
    assert!(last.is_top_level(), "{last:?}");
    let run_id = last.response().unwrap().run_id.clone();
    assert!(
        events.iter().all(|event| event.run_id == run_id),
        "one top-level run id"
    );
    assert!(
        events
            .iter()
            .all(|event| event.workflow_id.as_deref() == workflow.workflow_id())
    );

    let critic_deltas: Vec<&RunEvent> = events
        .iter()
        .filter(|event| event.content_delta().is_some() && event.member() == Some("critic"))
        .collect();
    assert_eq!(critic_deltas.len(), 2);
    let critic = critic_deltas[0];
    assert_eq!(critic.member_path, ["desk", "critic"]);
    assert!(critic.agent_id.is_some() && critic.team_id.is_some());
    // Its source run is the critic's stored run record.
    let record = runs(&storage, &key("news", SessionKind::Agent, "desk/critic"))
        .await
        .remove(0);
    assert_eq!(
        critic.source_run_id.as_deref(),
        Some(record.run_id.as_str())
    );
    // The team's own events sit at the team's path; only the workflow's are top-level.
    let completed: Vec<&RunEvent> = events
        .iter()
        .filter(|e| e.name() == "run_completed")
        .collect();
    let paths: Vec<Vec<String>> = completed.iter().map(|e| e.member_path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            vec!["desk".to_owned(), "critic".into()],
            vec!["desk".into()],
            vec![]
        ]
    );
    assert_eq!(completed.iter().filter(|e| e.is_top_level()).count(), 1);
    assert!(matches!(events[0].kind, RunEventKind::RunStarted) && events[0].is_top_level());
}

/// Records the messages of debug events, by the span they happened in.
#[derive(Clone, Default)]
struct DebugEvents(Arc<Mutex<Vec<String>>>);

impl<S> tracing_subscriber::Layer<S> for DebugEvents
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let spans: Vec<String> = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| span.name().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push(format!("{}: {}", spans.join(">"), message.0));
    }
}

#[tokio::test]
async fn debug_mode_and_the_user_reach_members_at_every_depth() {
    use tracing_subscriber::layer::SubscriberExt;
    let recorded = DebugEvents::default();
    let subscriber = tracing_subscriber::registry().with(recorded.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let storage = MemoryStorage::new();
    let mut workflow = newsroom_with(&storage, true);
    workflow.run("qubits".into()).into_response().await.unwrap();
    let lines = recorded.0.lock().unwrap().clone();
    let deep = lines
        .iter()
        .filter(|line| {
            line.ends_with("model request") && line.contains("team_run>agent_run>model_call")
        })
        .count();
    assert_eq!(
        deep, 1,
        "the critic (workflow > team > agent) logged its request: {lines:#?}"
    );
}
