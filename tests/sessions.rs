//! Session semantics (issue 2, item 5): state merging, typed state, failures, cancellation,
//! session operations, cloning.

#![allow(clippy::unwrap_used)]

mod common;

use buddy::prelude::*;
use buddy::session::{Session, SessionKey, SessionKind, SessionWrite, StatePatch};
use buddy::storage::ReadOptions;
use buddy::{RunEventKind, RunStatus, StateMerge, Storage};
use buddy_core::testing::{FaultyStorage, Operation};
use common::{eventually, failing_storage};
use futures::StreamExt;
use serde_json::{Map, Value, json};

/// The key of a top-level workflow session.
fn wf(session_id: &str) -> SessionKey {
    SessionKey::new(session_id, SessionKind::Workflow)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Stores one key given as argument in the untyped state.
#[workflow]
#[derive(Debug)]
struct Notes {}

#[workflow]
impl Notes {
    async fn run(&mut self, key: String, value: Value) -> RunResponse {
        self.state_mut().insert(key, value);
        RunResponse::from_text(Value::Object(self.state().clone()).to_string())
    }
}

async fn seed(storage: &MemoryStorage, session_id: &str, state: Value) {
    let write = SessionWrite {
        session_id: session_id.into(),
        kind: SessionKind::Workflow,
        component_id: Some("stored-workflow-id".into()),
        state_patch: StatePatch::set_all(&object(state)),
        ..SessionWrite::default()
    };
    storage.commit(write).await.unwrap();
}

#[tokio::test]
async fn initial_state_starts_a_new_session() {
    let storage = MemoryStorage::new();
    let mut notes = Notes::builder()
        .storage(storage.clone())
        .session_state(json!({"tone": "concise", "limits": {"words": 100}}))
        .build()
        .unwrap();
    notes.run("k".into(), json!(1)).await.unwrap();
    let session = storage
        .read(&wf(notes.session_id().unwrap()), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Value::Object(session.session_state),
        json!({"tone": "concise", "limits": {"words": 100}, "k": 1})
    );
}

#[tokio::test]
async fn stored_values_win_and_missing_keys_are_added_recursively() {
    let storage = MemoryStorage::new();
    seed(
        &storage,
        "s-merge",
        json!({"tone": "stored", "limits": {"words": 5}, "kept": true}),
    )
    .await;
    let mut notes = Notes::builder()
        .storage(storage.clone())
        .session_id("s-merge")
        .session_state(json!({"tone": "code", "limits": {"words": 100, "pages": 2}, "new": 1}))
        .build()
        .unwrap();
    notes.run("k".into(), json!("v")).await.unwrap();
    let expected = json!({
        "tone": "stored",
        "limits": {"words": 5, "pages": 2},
        "kept": true,
        "new": 1,
        "k": "v"
    });
    assert_eq!(Value::Object(notes.state().clone()), expected);
    let session = storage
        .read(&wf("s-merge"), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Value::Object(session.session_state),
        expected,
        "added keys are persisted"
    );
    assert_eq!(
        notes.workflow_id(),
        Some("stored-workflow-id"),
        "stored workflow id is adopted"
    );
}

#[tokio::test]
async fn code_wins_is_an_opt_in() {
    let storage = MemoryStorage::new();
    seed(
        &storage,
        "s-code",
        json!({"tone": "stored", "limits": {"words": 5, "pages": 1}}),
    )
    .await;
    let mut notes = Notes::builder()
        .storage(storage.clone())
        .session_id("s-code")
        .state_merge(StateMerge::CodeWins)
        .session_state(json!({"tone": "code", "limits": {"words": 100}}))
        .build()
        .unwrap();
    notes.run("k".into(), json!(0)).await.unwrap();
    assert_eq!(
        Value::Object(notes.state().clone()),
        json!({"tone": "code", "limits": {"words": 100, "pages": 1}, "k": 0})
    );
}

#[tokio::test]
async fn explicit_workflow_id_is_kept_over_the_stored_one() {
    let storage = MemoryStorage::new();
    seed(&storage, "s-id", json!({})).await;
    let mut notes = Notes::builder()
        .storage(storage.clone())
        .session_id("s-id")
        .workflow_id("mine")
        .build()
        .unwrap();
    notes.run("k".into(), json!(0)).await.unwrap();
    assert_eq!(notes.workflow_id(), Some("mine"));
}

/// A typed session state.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counter {
    count: u32,
    #[serde(default)]
    history: Vec<String>,
}

#[workflow(state = Counter)]
#[derive(Debug)]
struct Counting {}

#[workflow]
impl Counting {
    async fn run(&mut self, label: String) -> RunResponse {
        let state = self.state_mut();
        state.count += 1;
        state.history.push(label);
        RunResponse::from_text(self.state().count.to_string())
    }
}

#[tokio::test]
async fn typed_state_persists_and_reloads() {
    let storage = MemoryStorage::new();
    let mut first = Counting::builder()
        .storage(storage.clone())
        .session_id("typed")
        .state(Counter {
            count: 10,
            history: vec![],
        })
        .build()
        .unwrap();
    assert_eq!(first.run("a".into()).await.unwrap().text(), "11");
    assert_eq!(first.run("b".into()).await.unwrap().text(), "12");

    // A fresh instance (a restart) continues from the stored state.
    let mut restarted = Counting::builder()
        .storage(storage.clone())
        .session_id("typed")
        .build()
        .unwrap();
    assert_eq!(restarted.run("c".into()).await.unwrap().text(), "13");
    assert_eq!(restarted.state().history, ["a", "b", "c"]);
    assert_eq!(restarted.session_state().unwrap()["count"], 13);
}

#[tokio::test]
async fn undecodable_typed_state_is_an_error_naming_the_session() {
    let storage = MemoryStorage::new();
    seed(&storage, "bad-typed", json!({"count": "not a number"})).await;
    let mut workflow = Counting::builder()
        .storage(storage.clone())
        .session_id("bad-typed")
        .build()
        .unwrap();
    let error = workflow.run("x".into()).await.unwrap_err();
    match &error {
        Error::StateDecode {
            session_id,
            type_name,
            ..
        } => {
            assert_eq!(session_id, "bad-typed");
            assert!(type_name.ends_with("Counter"));
        }
        other => panic!("expected StateDecode, got {other:?}"),
    }
    assert!(error.to_string().contains("bad-typed"));
    // Nothing was reset: the stored state is untouched.
    let session = storage
        .read(&wf("bad-typed"), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.session_state["count"], "not a number");
    assert_eq!(session.run_count, 0);
}

#[tokio::test]
async fn typed_initial_state_from_json_must_decode() {
    let error = Counting::builder()
        .session_state(json!({"count": -1}))
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::StateDecode { .. }), "{error:?}");
    let ok = Counting::builder()
        .session_state(json!({"count": 4}))
        .build()
        .unwrap();
    assert_eq!(ok.state().count, 4);
}

/// Fails or panics on request.
#[workflow]
struct Unreliable {}

#[workflow]
impl Unreliable {
    async fn run(&mut self, mode: String) -> Result<RunResponse> {
        self.state_mut()
            .insert("touched".into(), json!(mode.clone()));
        match mode.as_str() {
            "fail" => Err(Error::msg("the body failed")),
            "panic" => panic!("the body panicked"),
            _ => Ok(RunResponse::from_text("ok")),
        }
    }
}

#[tokio::test]
async fn failed_and_panicked_runs_are_recorded_as_errors() {
    let storage = MemoryStorage::new();
    let mut workflow = Unreliable::builder()
        .storage(storage.clone())
        .build()
        .unwrap();
    workflow.run("ok".into()).await.unwrap();
    let error = workflow.run("fail".into()).await.unwrap_err();
    assert_eq!(error.to_string(), "the body failed");
    let error = workflow.run("panic".into()).await.unwrap_err();
    assert!(
        matches!(&error, Error::Panicked { message } if message == "the body panicked"),
        "{error:?}"
    );

    let runs = storage
        .runs(&wf(workflow.session_id().unwrap()), None)
        .await
        .unwrap();
    let statuses: Vec<_> = runs.iter().map(|run| run.status).collect();
    assert_eq!(
        statuses,
        [RunStatus::Completed, RunStatus::Error, RunStatus::Error]
    );
    assert_eq!(runs[1].error.as_deref(), Some("the body failed"));
    assert!(
        runs[2]
            .error
            .as_deref()
            .unwrap()
            .contains("the body panicked")
    );
    assert_eq!(workflow.memory().runs().len(), 3);
    // The workflow stays usable after a panic.
    assert_eq!(workflow.run("ok".into()).await.unwrap().text(), "ok");
}

/// Streams five deltas, slowly.
#[workflow]
struct Slow {}

#[workflow]
impl Slow {
    async fn run(&mut self) -> impl futures::Stream<Item = Result<RunEvent>> {
        async_stream::stream! {
            for piece in ["a", "b", "c", "d", "e"] {
                yield Ok(RunEvent::content(piece));
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test]
async fn dropped_stream_is_recorded_cancelled_with_content_so_far() {
    let storage = MemoryStorage::new();
    let mut workflow = Slow::builder()
        .storage(storage.clone())
        .session_id("cancel-me")
        .build()
        .unwrap();
    {
        let mut stream = workflow.run();
        let mut seen = Vec::new();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            if let Some(delta) = event.content_delta() {
                seen.push(delta.to_owned());
                if seen.len() == 2 {
                    break;
                }
            }
        }
    } // dropped here, mid-run
    let recorded = eventually(|| {
        let storage = storage.clone();
        async move {
            !storage
                .runs(&wf("cancel-me"), None)
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    assert!(recorded, "the cancelled run was not recorded");
    let runs = storage.runs(&wf("cancel-me"), None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Cancelled);
    assert_eq!(runs[0].response.text(), "ab");
}

#[tokio::test]
async fn stream_error_is_recorded_and_reaches_the_caller() {
    /// Fails after one delta.
    #[workflow]
    struct Broken {}

    #[workflow]
    impl Broken {
        async fn run(&mut self) -> impl futures::Stream<Item = Result<RunEvent>> {
            async_stream::stream! {
                yield Ok(RunEvent::content("partial"));
                yield Err(Error::msg("stream broke"));
                yield Ok(RunEvent::content("never"));
            }
        }
    }

    let storage = MemoryStorage::new();
    let mut workflow = Broken::builder().storage(storage.clone()).build().unwrap();
    let events: Vec<_> = workflow.run().collect().await;
    let last = events.last().unwrap();
    assert_eq!(last.as_ref().unwrap_err().to_string(), "stream broke");
    assert!(events.iter().all(|event| {
        event
            .as_ref()
            .map_or(true, |event| event.content_delta() != Some("never"))
    }));
    let runs = storage
        .runs(&wf(workflow.session_id().unwrap()), None)
        .await
        .unwrap();
    assert_eq!(runs[0].status, RunStatus::Error);
    assert_eq!(runs[0].response.text(), "partial");
}

#[tokio::test]
async fn storage_write_failure_still_returns_the_response() {
    let mut workflow = Unreliable::builder()
        .storage(failing_storage())
        .build()
        .unwrap();
    let error = workflow.run("ok".into()).await.unwrap_err();
    assert!(error.is_storage());
    let response = error
        .response()
        .expect("the response travels with the error");
    assert_eq!(response.text(), "ok");
    assert!(response.run_id.is_some());
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("commit")
    );
    // The run is still in memory.
    assert_eq!(workflow.memory().runs().len(), 1);
}

#[tokio::test]
async fn streamed_storage_failure_ends_the_stream_with_the_response() {
    let mut workflow = Slow::builder().storage(failing_storage()).build().unwrap();
    let events: Vec<_> = workflow.run().collect().await;
    let error = events.last().unwrap().as_ref().unwrap_err();
    assert_eq!(error.response().unwrap().text(), "abcde");
}

#[tokio::test]
async fn use_session_and_new_session_forget_the_previous_last_response() {
    let mut notes = Notes::builder()
        .storage(MemoryStorage::new())
        .build()
        .unwrap();
    notes.run("k".into(), json!(1)).await.unwrap();
    assert!(notes.last_response().is_some());
    notes.use_session("another");
    assert!(notes.last_response().is_none(), "use_session");
    notes.run("k".into(), json!(2)).await.unwrap();
    assert!(notes.last_response().is_some());
    notes.new_session().await.unwrap();
    assert!(notes.last_response().is_none(), "new_session");
}

#[tokio::test]
async fn new_session_starts_from_the_configured_initial_state() {
    let storage = MemoryStorage::new();
    let mut notes = Notes::builder()
        .storage(storage.clone())
        .session_state(json!({"base": 1}))
        .build()
        .unwrap();
    notes.run("first".into(), json!(true)).await.unwrap();
    let first = notes.session_id().unwrap().to_owned();
    let second = notes.new_session().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(Value::Object(notes.state().clone()), json!({"base": 1}));
    assert!(notes.memory().runs().is_empty());
    // The new session exists in storage right away.
    assert!(
        storage
            .read(&wf(&second), &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );
    notes.run("second".into(), json!(2)).await.unwrap();
    assert_eq!(
        Value::Object(notes.state().clone()),
        json!({"base": 1, "second": 2})
    );
}

#[tokio::test]
async fn clone_is_an_independent_instance_sharing_storage() {
    let storage = MemoryStorage::new();
    let mut original = Notes::builder()
        .storage(storage.clone())
        .session_id("shared")
        .build()
        .unwrap();
    let mut before = original.clone();
    original.run("a".into(), json!(1)).await.unwrap();
    let mut after = original.clone();
    assert_eq!(after.state().get("a"), Some(&json!(1)));
    assert!(
        before.state().is_empty(),
        "a clone made before the run is unaffected by it"
    );

    after
        .state_mut()
        .insert("local".into(), json!("only in the clone"));
    assert!(!original.state().contains_key("local"));

    before.run("b".into(), json!(2)).await.unwrap();
    after.run("c".into(), json!(3)).await.unwrap();
    let session = storage
        .read(&wf("shared"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.runs.len(),
        3,
        "all three instances wrote to the same storage"
    );
    for key in ["a", "b", "c"] {
        assert!(session.session_state.contains_key(key), "missing {key}");
    }
}

#[tokio::test]
async fn concurrent_runs_of_one_session_keep_every_run_and_key() {
    let storage = MemoryStorage::new();
    let template = Notes::builder()
        .storage(storage.clone())
        .session_id("busy")
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let mut workflow = template.clone();
            tokio::spawn(async move { workflow.run(format!("key-{i}"), json!(i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let session = storage
        .read(&wf("busy"), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.run_count, 16);
    assert_eq!(storage.runs(&wf("busy"), None).await.unwrap().len(), 16);
    for i in 0..16 {
        assert_eq!(session.session_state[&format!("key-{i}")], json!(i));
    }
}

#[tokio::test]
async fn session_operations() {
    let storage = MemoryStorage::new();
    let mut alice = Notes::builder()
        .storage(storage.clone())
        .user_id("alice")
        .workflow_id("wf")
        .build()
        .unwrap();
    let first = alice.load_session().await.unwrap();
    assert!(
        storage
            .read(&wf(&first), &ReadOptions::default())
            .await
            .unwrap()
            .is_some(),
        "load_session creates"
    );
    assert_eq!(
        alice.load_session().await.unwrap(),
        first,
        "and then loads the same session"
    );

    alice.rename_session("Groceries").await.unwrap();
    alice.rename("notes_app").await.unwrap();
    let stored = storage
        .read(&wf(&first), &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.session_name.as_deref(), Some("Groceries"));
    assert_eq!(stored.component_data["name"], "notes_app");
    assert_eq!(alice.name(), "notes_app");

    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let second = alice.new_session().await.unwrap();
    let mut bob = Notes::builder()
        .storage(storage.clone())
        .user_id("bob")
        .workflow_id("other")
        .build()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    bob.run("k".into(), json!(1)).await.unwrap();

    let ids = |sessions: Vec<Session>| {
        sessions
            .into_iter()
            .map(|s| s.session_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(alice.sessions_of_user("alice").await.unwrap()),
        [second.clone(), first.clone()]
    );
    assert_eq!(
        ids(alice.sessions_of_workflow().await.unwrap()),
        [second.clone(), first.clone()]
    );
    assert_eq!(
        ids(bob.sessions_of_workflow().await.unwrap()),
        [bob.session_id().unwrap().to_owned()]
    );
    assert_eq!(
        ids(alice.recent_sessions(1).await.unwrap()),
        std::slice::from_ref(&second)
    );
    assert_eq!(
        alice
            .list_sessions(SessionQuery::all())
            .await
            .unwrap()
            .len(),
        3
    );

    alice.delete_session(&first).await.unwrap();
    assert!(
        storage
            .read(&wf(&first), &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    alice.delete_session("no-such-session").await.unwrap();
    assert_eq!(
        ids(alice.sessions_of_user("alice").await.unwrap()),
        [second]
    );
}

#[tokio::test]
async fn renaming_a_session_that_does_not_exist_is_an_error_and_creates_nothing() {
    let storage = MemoryStorage::new();
    let mut notes = Notes::builder()
        .storage(storage.clone())
        .session_id("ghost")
        .build()
        .unwrap();
    let error = notes.rename_session("Boo").await.unwrap_err();
    assert!(
        matches!(&error, Error::SessionNotFound { session_id } if session_id == "ghost"),
        "{error:?}"
    );
    assert!(
        storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn session_operations_without_storage_are_no_ops() {
    let mut notes = Notes::builder().build().unwrap();
    let id = notes.load_session().await.unwrap();
    assert_eq!(notes.session_id(), Some(id.as_str()));
    notes.rename_session("x").await.unwrap();
    notes.rename("y").await.unwrap();
    notes.delete_session(&id).await.unwrap();
    assert!(
        notes
            .list_sessions(SessionQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(notes.recent_sessions(5).await.unwrap().is_empty());
    let new_id = notes.new_session().await.unwrap();
    assert_ne!(id, new_id);
    // Runs still work and are kept in memory.
    notes.run("k".into(), json!(1)).await.unwrap();
    assert_eq!(notes.memory().runs().len(), 1);
}

#[tokio::test]
async fn memory_holds_recent_runs_read_from_storage() {
    let storage = MemoryStorage::new();
    let mut writer = Notes::builder()
        .storage(storage.clone())
        .session_id("history")
        .build()
        .unwrap();
    for i in 0..5 {
        writer.run(format!("k{i}"), json!(i)).await.unwrap();
    }
    let mut reader = Notes::builder()
        .storage(storage.clone())
        .session_id("history")
        .history_runs(3)
        .build()
        .unwrap();
    reader.run("k5".into(), json!(5)).await.unwrap();
    let inputs: Vec<_> = reader
        .memory()
        .runs()
        .iter()
        .map(|run| run.input["key"].clone())
        .collect();
    assert_eq!(inputs, [json!("k3"), json!("k4"), json!("k5")]);
}

#[tokio::test]
async fn streamed_runs_share_the_session_rules() {
    let storage = MemoryStorage::new();
    let mut workflow = Slow::builder().storage(storage.clone()).build().unwrap();
    let events: Vec<_> = workflow.run().collect().await;
    assert!(matches!(
        events.last().unwrap().as_ref().unwrap().kind,
        RunEventKind::RunCompleted { .. }
    ));
    let session = storage
        .read(
            &wf(workflow.session_id().unwrap()),
            &ReadOptions::with_runs(5),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.runs[0].response.text(), "abcde");
    assert_eq!(session.component_id.as_deref(), workflow.workflow_id());
}

#[tokio::test]
async fn memory_sees_runs_written_by_another_instance() {
    let storage = MemoryStorage::new();
    let mut first = Notes::builder()
        .storage(storage.clone())
        .session_id("two-writers")
        .build()
        .unwrap();
    let mut second = Notes::builder()
        .storage(storage.clone())
        .session_id("two-writers")
        .build()
        .unwrap();
    first.run("a".into(), json!(1)).await.unwrap();
    first.run("b".into(), json!(2)).await.unwrap();
    second.run("c".into(), json!(3)).await.unwrap();
    first.run("d".into(), json!(4)).await.unwrap();
    let keys: Vec<_> = first
        .memory()
        .runs()
        .iter()
        .map(|run| run.input["key"].clone())
        .collect();
    assert_eq!(keys, [json!("a"), json!("b"), json!("c"), json!("d")]);
    assert_eq!(
        first.state().get("c"),
        Some(&json!(3)),
        "the other writer's key is visible"
    );
}

#[tokio::test]
async fn stream_dropped_right_after_run_started_is_recorded_cancelled() {
    let storage = MemoryStorage::new();
    let mut workflow = Slow::builder()
        .storage(storage.clone())
        .session_id("early-drop")
        .build()
        .unwrap();
    {
        let mut stream = workflow.run();
        let started = stream.next().await.unwrap().unwrap();
        assert_eq!(started.name(), "run_started");
    }
    let recorded = eventually(|| {
        let storage = storage.clone();
        async move {
            !storage
                .runs(&wf("early-drop"), None)
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    assert!(recorded, "the cancelled run was not recorded");
    let runs = storage.runs(&wf("early-drop"), None).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Cancelled);
    // The run goes on until it waits, so the record holds what it produced by then (the
    // first piece), whether or not the reader had taken it.
    assert!(
        runs[0].response.text().len() <= 1,
        "{}",
        runs[0].response.text()
    );
}

/// A state type that does not encode to a JSON object.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct NotAnObject(u32);

#[workflow(state = NotAnObject)]
struct BadState {}

#[workflow]
impl BadState {
    async fn run(&mut self) -> RunResponse {
        self.state_mut().0 += 1;
        RunResponse::from_text("ran")
    }
}

#[tokio::test]
async fn state_that_does_not_encode_is_a_typed_error_and_the_run_is_kept() {
    let storage = MemoryStorage::new();
    let mut workflow = BadState::builder()
        .storage(storage.clone())
        .session_id("bad-encode")
        .build()
        .unwrap();
    let error = workflow.run().await.unwrap_err();
    assert!(matches!(error, Error::StateEncode(_)), "{error:?}");
    assert!(error.to_string().contains("JSON object"));
    let runs = storage.runs(&wf("bad-encode"), None).await.unwrap();
    assert_eq!(
        runs.len(),
        1,
        "the run is recorded even though its state could not be"
    );
    assert_eq!(runs[0].response.text(), "ran");
}

#[tokio::test]
async fn a_run_dropped_while_its_write_is_in_flight_is_still_written() {
    let inner = MemoryStorage::new();
    let mut workflow = Slow::builder()
        .storage(
            FaultyStorage::new(inner.clone())
                .delay(Operation::Commit, std::time::Duration::from_millis(100)),
        )
        .session_id("in-flight")
        .build()
        .unwrap();
    {
        let mut stream = workflow.run();
        let mut deltas = 0;
        while deltas < 5 {
            if stream
                .next()
                .await
                .unwrap()
                .unwrap()
                .content_delta()
                .is_some()
            {
                deltas += 1;
            }
        }
        // The body is done; the final write has started and takes 100 ms.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), stream.next()).await;
        assert!(pending.is_err(), "the write should still be in flight");
    } // dropped mid-write
    let written = eventually(|| {
        let inner = inner.clone();
        async move { !inner.runs(&wf("in-flight"), None).await.unwrap().is_empty() }
    })
    .await;
    assert!(written, "the in-flight write was abandoned");
    let runs = inner.runs(&wf("in-flight"), None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_eq!(runs[0].response.text(), "abcde");
}
