//! Workflow settings, the builder, defaults and member registration (issue 2, items 1-2).

#![allow(clippy::unwrap_used)]

mod common;

use buddy::prelude::*;
use buddy::workflow::WorkflowMemory;
use common::{Agent, Recorder};
use serde_json::json;

/// A workflow whose fields all have defaults, like a Python class with class attributes.
#[workflow(description = "Greets people.")]
#[derive(Debug)]
struct Greeter {
    #[member(default = Recorder::default())]
    helper: Recorder,
    /// Found as a member by its type name.
    #[field(default)]
    agent: Agent,
    #[member(default)]
    optional: Option<Recorder>,
    #[member(default = vec![Recorder::default(), Recorder::default()])]
    crew: Vec<Recorder>,
    #[field(default = "Hello".to_string())]
    greeting: String,
}

#[workflow]
impl Greeter {
    async fn run(&mut self, who: String) -> RunResponse {
        RunResponse::from_text(format!("{}, {who}!", self.greeting))
    }
}

/// A workflow with a field that must be given.
#[workflow]
#[derive(Debug)]
struct NeedsModel {
    model_name: String,
}

#[workflow]
impl NeedsModel {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text(self.model_name.clone())
    }
}

#[tokio::test]
async fn builds_with_no_arguments_and_defaults() {
    let workflow = Greeter::builder().build().unwrap();
    assert_eq!(workflow.name(), "Greeter");
    assert_eq!(workflow.description(), Some("Greets people."));
    assert_eq!(workflow.workflow_id(), None);
    assert_eq!(workflow.session_id(), None);
    assert_eq!(workflow.user_id(), None);
    assert!(workflow.storage().is_none());
    assert!(!workflow.debug_mode() || std::env::var("BUDDY_DEBUG").is_ok());
    assert!(workflow.state().is_empty());
    assert_eq!(workflow.greeting, "Hello");

    let mut by_default = Greeter::default();
    assert_eq!(by_default.name(), "Greeter");
    let response = by_default.run("Ada".into()).await.unwrap();
    assert_eq!(response.text(), "Hello, Ada!");
}

#[tokio::test]
async fn builder_sets_every_setting_and_field() {
    let storage = MemoryStorage::new();
    let workflow = Greeter::builder()
        .name("greeter_pipeline")
        .workflow_id("wf-1")
        .description("Overridden.")
        .user_id("user-1")
        .session_id("session-1")
        .session_name("first")
        .session_state(json!({"tone": "warm"}))
        .memory(WorkflowMemory::with_capacity(5))
        .storage(storage)
        .extra_data(json!({"origin": "test"}))
        .debug_mode(true)
        .history_runs(7)
        .greeting("Hi")
        .optional(Some(Recorder::default()))
        .build()
        .unwrap();
    assert_eq!(workflow.name(), "greeter_pipeline");
    assert_eq!(workflow.workflow_id(), Some("wf-1"));
    assert_eq!(workflow.description(), Some("Overridden."));
    assert_eq!(workflow.user_id(), Some("user-1"));
    assert_eq!(workflow.session_id(), Some("session-1"));
    assert_eq!(workflow.session_name(), Some("first"));
    assert_eq!(workflow.state()["tone"], "warm");
    assert_eq!(workflow.memory().capacity(), 5);
    assert!(workflow.storage().is_some());
    assert_eq!(workflow.extra_data().unwrap()["origin"], "test");
    assert!(workflow.debug_mode());
    assert_eq!(workflow.greeting, "Hi");
    assert!(workflow.optional.is_some());
}

#[tokio::test]
async fn missing_required_field_is_a_typed_error() {
    let error = NeedsModel::builder().build().unwrap_err();
    assert!(
        matches!(
            error,
            Error::MissingField {
                type_name: "NeedsModel",
                field: "model_name"
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("`model_name`"));
    let mut workflow = NeedsModel::builder().model_name("m").build().unwrap();
    assert_eq!(workflow.run().await.unwrap().text(), "m");
}

#[tokio::test]
async fn session_state_and_extra_data_must_be_objects() {
    let error = Greeter::builder()
        .session_state(json!([1, 2]))
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    let error = Greeter::builder()
        .extra_data(json!("text"))
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

#[tokio::test]
async fn members_receive_session_and_user_before_every_run() {
    let mut workflow = Greeter::builder()
        .user_id("u-7")
        .optional(Some(Recorder::default()))
        .build()
        .unwrap();
    workflow.run("Bob".into()).await.unwrap();
    let session = workflow.session_id().unwrap().to_owned();
    assert_eq!(
        workflow.helper.session_id.as_deref(),
        Some(session.as_str())
    );
    assert_eq!(workflow.helper.user_id.as_deref(), Some("u-7"));
    assert_eq!(workflow.agent.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(
        workflow.optional.as_ref().unwrap().session_id.as_deref(),
        Some(session.as_str())
    );
    assert!(
        workflow
            .crew
            .iter()
            .all(|member| member.session_id.as_deref() == Some(session.as_str()))
    );

    workflow.new_session().await.unwrap();
    workflow.run("Bob".into()).await.unwrap();
    let second = workflow.session_id().unwrap().to_owned();
    assert_ne!(second, session);
    assert_eq!(workflow.helper.session_id.as_deref(), Some(second.as_str()));
    assert_eq!(workflow.helper.attached, 2);
}

/// A workflow that holds another workflow as a member.
#[workflow]
struct Outer {
    #[member(default = Greeter::default())]
    inner: Greeter,
}

#[workflow]
impl Outer {
    async fn run(&mut self, who: String) -> Result<RunResponse> {
        let inner = self.inner.run(who).await?;
        Ok(RunResponse::from_text(format!("outer: {}", inner.text())))
    }
}

#[tokio::test]
async fn nested_workflow_shares_the_session() {
    let mut outer = Outer::builder().user_id("nested-user").build().unwrap();
    let response = outer.run("Cy".into()).await.unwrap();
    assert_eq!(response.text(), "outer: Hello, Cy!");
    assert_eq!(outer.inner.session_id(), outer.session_id());
    assert_eq!(outer.inner.user_id(), Some("nested-user"));
}
