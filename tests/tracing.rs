//! Tracing (issue 2, item 9): each run is a span carrying workflow_id, session_id and run_id;
//! `debug_mode` or `BUDDY_DEBUG=true` turns on debug output.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use buddy::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[workflow]
struct Traced {}

#[workflow]
impl Traced {
    async fn run(&mut self) -> RunResponse {
        tracing::info!("inside the body");
        RunResponse::from_text("traced")
    }
}

/// A recorded span: its name and its fields.
type SpanRecord = (String, HashMap<String, String>);

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        fields.insert("__id".into(), id.into_u64().to_string());
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, fields)) = spans
            .iter_mut()
            .find(|(_, fields)| fields.get("__id") == Some(&id.into_u64().to_string()))
        {
            values.record(&mut Fields(fields));
        }
    }
}

#[tokio::test]
async fn every_run_is_a_span_with_its_ids() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut workflow = Traced::builder()
        .storage(MemoryStorage::new())
        .build()
        .unwrap();
    let first = workflow.run().await.unwrap();
    let second = workflow.run().await.unwrap();

    let spans = spans.0.lock().unwrap();
    let runs: Vec<_> = spans
        .iter()
        .filter(|(name, _)| name == "workflow_run")
        .collect();
    assert_eq!(runs.len(), 2);
    for ((_, fields), response) in runs.iter().zip([&first, &second]) {
        assert_eq!(fields.get("workflow").map(String::as_str), Some("Traced"));
        assert_eq!(fields.get("run_id"), response.run_id.as_ref());
        assert_eq!(fields.get("session_id"), response.session_id.as_ref());
        assert_eq!(fields.get("workflow_id"), response.workflow_id.as_ref());
    }
}

/// Runs in a child process (see `debug_output_*`): builds a workflow and runs it once.
#[tokio::test]
async fn debug_child() {
    let Ok(mode) = std::env::var("BUDDY_TEST_DEBUG_CHILD") else {
        return;
    };
    let mut workflow = Traced::builder()
        .debug_mode(mode == "builder")
        .build()
        .unwrap();
    assert!(workflow.debug_mode());
    workflow.run().await.unwrap();
}

fn child_stderr(mode: &str, env_debug: bool) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "debug_child", "--nocapture", "--test-threads=1"])
        .env("BUDDY_TEST_DEBUG_CHILD", mode)
        .env_remove("BUDDY_DEBUG")
        .env_remove("RUST_LOG");
    if env_debug {
        command.env("BUDDY_DEBUG", "true");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn debug_output_from_debug_mode() {
    let stderr = child_stderr("builder", false);
    assert!(
        stderr.contains("workflow run started"),
        "no debug output:\n{stderr}"
    );
    assert!(
        stderr.contains("run_id="),
        "span fields are printed:\n{stderr}"
    );
}

#[test]
fn debug_output_from_environment() {
    let stderr = child_stderr("env", true);
    assert!(
        stderr.contains("workflow run started"),
        "no debug output:\n{stderr}"
    );
}

#[test]
fn no_debug_output_by_default() {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "debug_child", "--nocapture"])
        .env("BUDDY_TEST_DEBUG_CHILD", "off")
        .env_remove("BUDDY_DEBUG");
    let output = command.output().unwrap();
    // The child asserts `debug_mode()`, which is false here, so it fails: debug is off.
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("workflow run started"));
}
