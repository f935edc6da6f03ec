//! `#[workflow(crate = path)]`: the generated code reaches the runtime through the given path,
//! here the facade under another name and `buddy-core` itself.

#![deny(warnings)]
#![allow(clippy::unwrap_used)] // tests unwrap

extern crate buddy as renamed;

use renamed::prelude::{RunResponse, Workflow, WorkflowBuilder, workflow};

/// Reaches the runtime through `renamed::__private`.
#[workflow(crate = renamed, description = "Through a renamed facade.")]
struct ThroughRenamed {
    #[field(default)]
    calls: u32,
}

#[workflow(crate = renamed)]
impl ThroughRenamed {
    async fn run(&mut self, topic: String, #[arg(default = 2)] times: u32) -> RunResponse {
        self.calls += 1;
        RunResponse::from_text(topic.repeat(times as usize))
    }
}

/// Reaches the runtime through `buddy_core::__private`, for crates that depend on
/// `buddy-core` directly.
#[workflow(crate = ::buddy_core)]
struct ThroughCore {}

#[workflow(crate = ::buddy_core)]
impl ThroughCore {
    async fn run(&mut self) -> buddy_core::Result<RunResponse> {
        Ok(RunResponse::from_text("core"))
    }
}

#[tokio::test]
async fn renamed_facade_path() {
    let mut workflow = ThroughRenamed::default();
    let response = workflow.run("ab".to_string(), 3).await.unwrap();
    assert_eq!(response.text(), "ababab");
    assert_eq!(workflow.calls, 1);
    assert_eq!(workflow.description(), Some("Through a renamed facade."));
    let response = renamed::RunWorkflow::run_json(&mut workflow, serde_json::json!({"topic": "c"}))
        .await
        .unwrap();
    assert_eq!(response.text(), "cc");
}

#[tokio::test]
async fn buddy_core_path() {
    let mut workflow = ThroughCore::builder().name("core").build().unwrap();
    assert_eq!(workflow.run().await.unwrap().text(), "core");
    assert_eq!(workflow.name(), "core");
}
