//! End to end against a real small model: the original page's `ArticleWorkflow` on SQLite
//! (issue 4). Needs `BUDDY_E2E_OPENAI_BASE_URL` (`.ci/run` starts the local model with
//! `scripts/local-llm.sh` and sets it); without it, the tests say they are skipped. The
//! assertions are about shape, never wording.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used)]

use std::io::Write;

use buddy::prelude::*;
use buddy::storage::ReadOptions;
use buddy::{RunEventKind, RunStatus, Storage};
use serde_json::json;

fn base_url() -> Option<String> {
    let url = std::env::var("BUDDY_E2E_OPENAI_BASE_URL")
        .ok()
        .filter(|url| !url.is_empty());
    if url.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "==== SKIPPED: BUDDY_E2E_OPENAI_BASE_URL is not set; the ArticleWorkflow end-to-end test did not run ===="
        );
    }
    url
}

fn agent(url: &str, name: &str) -> Agent {
    let model = OpenAIChat::new("smollm2")
        .base_url(url)
        .without_api_key()
        .max_tokens(96);
    Agent::new(model).name(name)
}

/// Research a topic, then write an article.
#[workflow(description = "Research a topic, then write an article.")]
struct ArticleWorkflow {
    researcher: Agent,
    writer: Agent,
}

#[workflow]
impl ArticleWorkflow {
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.run(format!("Research: {topic}")).await?;
        let article = self
            .writer
            .run(format!("Write an article based on:\n{}", research.text()))
            .await?;
        Ok(RunResponse::from_text(article.text()))
    }
}

/// The same, streamed.
#[workflow]
struct StreamedArticle {
    researcher: Agent,
    writer: Agent,
}

#[workflow]
impl StreamedArticle {
    async fn run(&mut self, topic: String) -> impl Stream<Item = Result<RunEvent>> {
        buddy::try_stream! {
            let research = self.researcher.run(format!("Research: {topic}")).await?;
            let mut article = self.writer.run_stream(format!("Write an article based on:\n{}", research.text()));
            while let Some(event) = article.next().await {
                let event = event?;
                if event.content_delta().is_some() {
                    yield event;
                }
            }
        }
    }
}

#[tokio::test]
async fn article_workflow_on_sqlite_against_a_real_model() {
    let Some(url) = base_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(dir.path().join("wf.db"))
        .await
        .unwrap()
        .table("workflows")
        .unwrap();
    let mut workflow = ArticleWorkflow::builder()
        .researcher(agent(&url, "researcher"))
        .writer(agent(&url, "writer"))
        .session_state(json!({"tone": "concise"}))
        .storage(storage.clone())
        .build()
        .unwrap();
    let response = workflow.run("quantum computing".into()).await.unwrap();
    assert!(!response.text().trim().is_empty(), "the article is empty");
    assert!(response.run_id.is_some() && response.workflow_id.is_some());
    let session = storage
        .read(
            &workflow_key(workflow.session_id().unwrap()),
            &ReadOptions::with_runs(5),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.runs.len(), 1);
    assert_eq!(session.runs[0].status, RunStatus::Completed);
    assert_eq!(session.runs[0].input, json!({"topic": "quantum computing"}));
    assert_eq!(session.session_state["tone"], "concise");
}

#[tokio::test]
async fn streamed_article_workflow_against_a_real_model() {
    let Some(url) = base_url() else { return };
    let mut workflow = StreamedArticle::builder()
        .researcher(agent(&url, "researcher"))
        .writer(agent(&url, "writer"))
        .storage(MemoryStorage::new())
        .build()
        .unwrap();
    let events: Vec<RunEvent> = workflow
        .run("tea".into())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(events.first().unwrap().name(), "run_started");
    let deltas: String = events.iter().filter_map(RunEvent::content_delta).collect();
    assert!(!deltas.is_empty(), "no text was streamed");
    let RunEventKind::RunCompleted { response } = &events.last().unwrap().kind else {
        panic!("the stream must end with run_completed");
    };
    assert_eq!(response.text(), deltas, "the response is the streamed text");
}

/// The key of the workflow session `session_id` (scope `""`).
fn workflow_key(session_id: impl AsRef<str>) -> buddy::session::SessionKey {
    buddy::session::SessionKey::new(session_id.as_ref(), buddy::session::SessionKind::Workflow)
}
