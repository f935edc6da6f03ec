//! One object-safe surface for workflows, agents and teams: what a server's registry holds.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use buddy::prelude::*;
use buddy::session::SessionKind;
use buddy::{Component, RunRequest, Storage, WorkflowComponent};
use buddy_core::testing::ScriptedModel;
use serde_json::json;

/// Counts runs in its session state.
#[workflow(description = "Counts.")]
struct Counter {}

#[workflow]
impl Counter {
    async fn run(&mut self, step: i64) -> RunResponse {
        let total = self
            .state()
            .get("total")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
            + step;
        self.state_mut().insert("total".into(), json!(total));
        RunResponse::from_text(total.to_string())
    }
}

fn registry(storage: &MemoryStorage) -> Vec<Arc<dyn Component>> {
    let template = Counter::builder()
        .storage(storage.clone())
        .session_state(json!({"total": 0}))
        .build()
        .unwrap();
    let agent = Agent::new(ScriptedModel::new().text("a1").text("a2"))
        .name("helper")
        .storage(storage.clone());
    let team = Team::new(ScriptedModel::new().text("t1"), TeamMode::Coordinate)
        .name("desk")
        .storage(storage.clone());
    vec![
        Arc::new(WorkflowComponent::from_template(template)),
        Arc::new(agent),
        Arc::new(team),
    ]
}

#[tokio::test]
async fn every_kind_describes_itself_and_runs_from_json() {
    let storage = MemoryStorage::new();
    let registry = registry(&storage);
    let kinds: Vec<SessionKind> = registry.iter().map(|c| c.kind()).collect();
    assert_eq!(
        kinds,
        [SessionKind::Workflow, SessionKind::Agent, SessionKind::Team]
    );
    assert_eq!(registry[0].name(), "Counter");
    assert_eq!(registry[0].description(), Some("Counts."));
    assert_eq!(registry[0].parameters()[0].name, "step");
    assert_eq!(registry[1].parameters()[0].name, "message");
    let schema = serde_json::to_value(registry[2].input_schema()).unwrap();
    assert_eq!(schema["required"], json!(["message"]));

    let inputs = [
        json!({"step": 2}),
        json!({"message": "hi"}),
        json!({"message": "hi"}),
    ];
    let answers = ["2", "a1", "t1"];
    for ((component, input), answer) in registry.iter().zip(inputs).zip(answers) {
        let request = RunRequest::new(input).session_id("s1").user_id("u1");
        let response = component
            .start(request)
            .unwrap()
            .into_response()
            .await
            .unwrap();
        assert_eq!(response.text(), answer, "{component:?}");
        assert_eq!(response.session_id.as_deref(), Some("s1"));
        let sessions = component.list_sessions(SessionQuery::all()).await.unwrap();
        assert_eq!(sessions.len(), 1, "{component:?}");
        assert_eq!(sessions[0].user_id.as_deref(), Some("u1"));
        let session = component.read_session("s1", 10).await.unwrap().unwrap();
        assert_eq!(session.runs.len(), 1);
    }
}

#[tokio::test]
async fn bad_input_runs_nothing_and_writes_nothing() {
    let storage = MemoryStorage::new();
    for component in registry(&storage) {
        for input in [json!({"step": "two"}), json!({"nope": 1}), json!([1])] {
            let error = match component.start(RunRequest::new(input.clone())) {
                Ok(_) => panic!("{component:?} accepted {input}"),
                Err(error) => error,
            };
            assert!(matches!(error, Error::Input { .. }), "{error:?}");
        }
    }
    assert!(
        storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn each_request_gets_its_own_instance() {
    let storage = MemoryStorage::new();
    let counter = &registry(&storage)[0];
    for session in ["a", "a", "b"] {
        let request = RunRequest::new(json!({"step": 5})).session_id(session);
        counter
            .start(request)
            .unwrap()
            .into_response()
            .await
            .unwrap();
    }
    let a = counter.read_session("a", 0).await.unwrap().unwrap();
    let b = counter.read_session("b", 0).await.unwrap().unwrap();
    assert_eq!(a.session_state["total"], 10, "two runs in session a");
    assert_eq!(b.session_state["total"], 5, "nothing of a bled into b");
    // A request without a session gets a fresh one, starting from the initial state.
    let fresh = counter.start(RunRequest::new(json!({"step": 1}))).unwrap();
    assert_eq!(fresh.into_response().await.unwrap().text(), "1");
}

#[tokio::test]
async fn sessions_are_renamed_and_deleted_by_id() {
    let storage = MemoryStorage::new();
    for component in registry(&storage) {
        let input = match component.kind() {
            SessionKind::Workflow => json!({"step": 1}),
            _ => json!({"message": "x"}),
        };
        let request = RunRequest::new(input).session_id("s");
        component
            .start(request)
            .unwrap()
            .into_response()
            .await
            .unwrap();
        let before = component.read_session("s", 0).await.unwrap().unwrap();
        component.rename_session("s", "Named".into()).await.unwrap();
        let after = component.read_session("s", 0).await.unwrap().unwrap();
        assert_eq!(after.session_name.as_deref(), Some("Named"));
        assert_eq!(
            after.session_state, before.session_state,
            "the state is untouched"
        );
        let missing = component
            .rename_session("nope", "x".into())
            .await
            .unwrap_err();
        assert!(
            matches!(missing, Error::SessionNotFound { .. }),
            "{missing:?}"
        );
        assert!(component.read_session("nope", 0).await.unwrap().is_none());
        component.delete_session("s").await.unwrap();
        component.delete_session("s").await.unwrap();
        assert!(component.read_session("s", 0).await.unwrap().is_none());
    }
}
