//! The run wrapper: ids, return forms, streaming, recording (issue 2, item 3).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use buddy::prelude::*;
use buddy::session::SessionKey;
use buddy::{RunEventKind, RunStatus, SessionKind, Storage};

/// The key of a top-level workflow session.
fn wf(session_id: &str) -> SessionKey {
    SessionKey::new(session_id, SessionKind::Workflow)
}
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Mutex, oneshot};

#[workflow]
struct Plain {}

#[workflow]
impl Plain {
    async fn run(&mut self, topic: String) -> RunResponse {
        RunResponse::from_text(format!("plain {topic}"))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("custom failure {0}")]
struct CustomError(u32);

impl From<CustomError> for Error {
    fn from(error: CustomError) -> Self {
        Error::other(error)
    }
}

#[workflow]
struct Fallible {
    #[field(default)]
    fail: bool,
}

#[workflow]
impl Fallible {
    async fn run(&mut self) -> std::result::Result<RunResponse, CustomError> {
        if self.fail {
            Err(CustomError(7))
        } else {
            Ok(RunResponse::from_text("fine"))
        }
    }
}

#[workflow]
struct Boxed {}

#[workflow]
impl Boxed {
    async fn run(&mut self, number: String) -> std::result::Result<RunResponse, buddy::BoxError> {
        let parsed: u32 = number.parse()?;
        Ok(RunResponse::from_text((parsed * 2).to_string()))
    }
}

#[tokio::test]
async fn every_response_form_runs_and_is_stamped() {
    let storage = MemoryStorage::new();
    let mut plain = Plain::builder().storage(storage.clone()).build().unwrap();
    let first = plain.run("a".into()).await.unwrap();
    assert_eq!(first.text(), "plain a");
    assert_eq!(first.session_id.as_deref(), plain.session_id());
    assert_eq!(first.workflow_id.as_deref(), plain.workflow_id());
    let second = plain.run("b".into()).await.unwrap();
    assert!(first.run_id.is_some());
    assert_ne!(first.run_id, second.run_id, "every run has a fresh run id");
    assert_eq!(
        first.session_id, second.session_id,
        "one session across runs"
    );

    let mut fallible = Fallible::builder().build().unwrap();
    assert_eq!(fallible.run().await.unwrap().text(), "fine");
    fallible.fail = true;
    let error = fallible.run().await.unwrap_err();
    assert_eq!(error.to_string(), "custom failure 7");

    let mut boxed = Boxed::builder().build().unwrap();
    assert_eq!(boxed.run("21".into()).await.unwrap().text(), "42");
    let error = boxed.run("x".into()).await.unwrap_err();
    assert!(error.to_string().contains("invalid digit"), "{error}");
}

#[tokio::test]
async fn runs_are_recorded_in_memory_and_storage_with_their_input() {
    let storage = MemoryStorage::new();
    let mut plain = Plain::builder().storage(storage.clone()).build().unwrap();
    let response = plain.run("topic-1".into()).await.unwrap();
    let session_id = plain.session_id().unwrap().to_owned();

    let last = plain.memory().last_run().unwrap();
    assert_eq!(last.input, json!({"topic": "topic-1"}));
    assert_eq!(last.status, RunStatus::Completed);
    assert_eq!(last.response, response);

    let stored = storage.runs(&wf(&session_id), None).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].run_id, response.run_id.clone().unwrap());
    assert_eq!(stored[0].input, json!({"topic": "topic-1"}));
    assert_eq!(stored[0].status, RunStatus::Completed);
    assert_eq!(stored[0].response.text(), "plain topic-1");
}

/// A streaming workflow whose body waits for the test between two events.
#[workflow]
struct Streaming {
    #[field(default)]
    gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

#[workflow]
impl Streaming {
    async fn run(&mut self, topic: String) -> impl futures::Stream<Item = Result<RunEvent>> {
        let gate = self.gate.lock().await.take();
        self.state_mut()
            .insert("topic".into(), json!(topic.clone()));
        async_stream::stream! {
            yield Ok(RunEvent::content(format!("{topic}:")));
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            yield Ok(RunEvent::custom("progress", json!({"step": 1})));
            yield Ok(RunEvent::content("done"));
        }
    }
}

#[tokio::test]
async fn stream_passes_events_as_they_come_and_persists_at_the_end() {
    let storage = MemoryStorage::new();
    let (release, gate) = oneshot::channel();
    let mut workflow = Streaming::builder()
        .storage(storage.clone())
        .gate(Arc::new(Mutex::new(Some(gate))))
        .build()
        .unwrap();
    let mut stream = workflow.run("rust".into());

    let started = stream.next().await.unwrap().unwrap();
    assert!(matches!(started.kind, RunEventKind::RunStarted));
    let run_id = started.run_id.clone().unwrap();
    let first = stream.next().await.unwrap().unwrap();
    // The body is now blocked on the gate: the first event arrived before the body ended.
    assert_eq!(first.content_delta(), Some("rust:"));
    assert_eq!(first.run_id.as_deref(), Some(run_id.as_str()));
    assert!(first.session_id.is_some() && first.workflow_id.is_some());
    release.send(()).unwrap();

    let rest: Vec<_> = stream.collect().await;
    let rest: Vec<RunEvent> = rest.into_iter().map(Result::unwrap).collect();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].name(), "custom");
    assert_eq!(rest[1].content_delta(), Some("done"));
    let RunEventKind::RunCompleted { response } = &rest[2].kind else {
        panic!("last event must be run_completed, got {:?}", rest[2]);
    };
    assert_eq!(response.text(), "rust:done", "text deltas are accumulated");
    assert!(
        rest.iter()
            .all(|event| event.run_id.as_deref() == Some(run_id.as_str()))
    );

    let session_id = workflow.session_id().unwrap().to_owned();
    let runs = storage.runs(&wf(&session_id), None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_eq!(runs[0].response.text(), "rust:done");
    assert_eq!(workflow.state()["topic"], "rust");
    let session = storage
        .read(&wf(&session_id), &Default::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.session_state["topic"], "rust");
}

#[tokio::test]
async fn streaming_workflow_run_json_collects_the_response() {
    let mut workflow = Streaming::builder().build().unwrap();
    let response = workflow.run_json(json!({"topic": "json"})).await.unwrap();
    assert_eq!(response.text(), "json:done");
}

#[tokio::test]
async fn non_streaming_workflow_streams_started_and_completed() {
    let mut plain = Plain::builder().build().unwrap();
    let events: Vec<_> = plain.run_json_stream(json!({"topic": "t"})).collect().await;
    let names: Vec<_> = events
        .iter()
        .map(|event| event.as_ref().unwrap().name())
        .collect();
    assert_eq!(names, ["run_started", "run_completed"]);
}

#[tokio::test]
async fn runs_and_streams_are_send_and_can_be_spawned() {
    fn assert_send<T: Send>(value: T) -> T {
        value
    }
    let mut streaming = Streaming::builder().build().unwrap();
    let handle = tokio::spawn(async move {
        let events: Vec<_> = assert_send(streaming.run("spawned".into())).collect().await;
        events.len()
    });
    assert_eq!(handle.await.unwrap(), 5);
    let mut plain = Plain::builder().build().unwrap();
    let response = tokio::spawn(async move { assert_send(plain.run("x".into())).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.text(), "plain x");
}

#[tokio::test]
async fn owned_streams_are_static_and_spawnable() {
    let storage = MemoryStorage::new();
    let workflow = Streaming::builder()
        .storage(storage.clone())
        .session_id("owned")
        .build()
        .unwrap();
    let stream = workflow.into_run_stream(StreamingInput {
        topic: "owned".into(),
    });
    let events = tokio::spawn(stream.collect::<Vec<_>>()).await.unwrap();
    assert_eq!(
        events.last().unwrap().as_ref().unwrap().name(),
        "run_completed"
    );

    let boxed: Box<dyn buddy::DynWorkflow> = Box::new(Plain::builder().build().unwrap());
    let stream = boxed.into_json_stream(json!({"topic": "dyn"}));
    let events = tokio::spawn(stream.collect::<Vec<_>>()).await.unwrap();
    let buddy::RunEventKind::RunCompleted { response } =
        &events.last().unwrap().as_ref().unwrap().kind
    else {
        panic!("no run_completed");
    };
    assert_eq!(response.text(), "plain dyn");
    assert_eq!(storage.runs(&wf("owned"), None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn dropping_an_owned_stream_records_the_run_cancelled() {
    let storage = MemoryStorage::new();
    let (_release, gate) = oneshot::channel::<()>();
    let workflow = Streaming::builder()
        .storage(storage.clone())
        .session_id("owned-drop")
        .gate(Arc::new(Mutex::new(Some(gate))))
        .build()
        .unwrap();
    let mut stream = workflow.into_run_stream(StreamingInput { topic: "t".into() });
    assert_eq!(stream.next().await.unwrap().unwrap().name(), "run_started");
    assert_eq!(
        stream.next().await.unwrap().unwrap().content_delta(),
        Some("t:")
    );
    drop(stream);
    let mut runs = Vec::new();
    for _ in 0..200 {
        runs = storage.runs(&wf("owned-drop"), None).await.unwrap();
        if !runs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(runs.len(), 1, "the dropped run was not recorded");
    assert_eq!(runs[0].status, RunStatus::Cancelled);
    assert_eq!(runs[0].response.text(), "t:");
}

#[test]
fn errors_debug_as_their_message_and_causes() {
    // What `main` returning `Result<(), buddy::Error>` prints: not a struct dump.
    let storage = buddy::StorageError::database(
        "commit",
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "database went away"),
    );
    let error = buddy::Error::Persist {
        response: Box::new(RunResponse::from_text("kept")),
        source: storage,
    };
    let shown = format!("{error:?}");
    assert!(
        shown.starts_with("run `?` finished but could not be persisted"),
        "{shown}"
    );
    assert!(
        shown.contains("Caused by:\n    0: database error during commit"),
        "{shown}"
    );
    assert!(shown.contains("    1: database went away"), "{shown}");
    assert!(!shown.contains("RunResponse"), "{shown}");
    // The fields stay available with `{:#?}`.
    assert!(format!("{error:#?}").contains("Persist"));
}
