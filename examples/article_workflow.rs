//! The original page's example: research a topic, then write an article.
//!
//! ```bash
//! cargo run --example article_workflow                       # topic: quantum computing
//! cargo run --example article_workflow -- "the printing press"
//! ```
//!
//! Two agents are plain struct fields with defaults, as class attributes are in Python;
//! `run` calls them in order and streams its progress. Sessions are kept in SQLite
//! (`tmp/examples.db`). The model server is `OPENAI_BASE_URL` / `OPENAI_API_KEY`, or, with
//! neither set, the small local model that `scripts/local-llm.sh` starts (see
//! `examples/README.md`).

#[path = "common/mod.rs"]
mod common;

use buddy::RunEventKind;
use buddy::prelude::*;
use serde_json::json;

/// Research a topic, then write an article.
#[workflow(description = "Research a topic, then write an article.")]
pub struct ArticleWorkflow {
    #[member(default = Agent::new(OpenAIChat::new("gpt-4o-mini")).name("researcher"))]
    researcher: Agent,
    #[member(default = Agent::new(OpenAIChat::new("gpt-4o")).name("writer"))]
    writer: Agent,
}

#[workflow]
impl ArticleWorkflow {
    async fn run(&mut self, topic: String) -> impl Stream<Item = Result<RunEvent>> {
        buddy::try_stream! {
            yield RunEvent::custom("researching", json!({"topic": topic}));
            let research = self.researcher.run(format!("Research: {topic}")).await?;
            yield RunEvent::custom("research_done", json!({"chars": research.text().len()}));

            yield RunEvent::custom("writing", json!({}));
            let mut article = self
                .writer
                .run_stream(format!("Write an article based on:\n{}", research.text()));
            while let Some(event) = article.next().await {
                let event = event?;
                if event.content_delta().is_some() {
                    yield event;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let topic = common::text_argument(
        "usage:\n  cargo run --example article_workflow                       # topic: quantum computing\n  cargo run --example article_workflow -- \"the printing press\"",
        "quantum computing",
    );
    let server = common::server();
    let storage = common::storage("workflows").await?;
    let mut workflow = ArticleWorkflow::builder()
        .name("article_pipeline")
        .session_state(json!({"tone": "concise"}))
        .researcher(Agent::new(server.model("gpt-4o-mini")).name("researcher"))
        .writer(Agent::new(server.model("gpt-4o")).name("writer"))
        .storage(storage.clone())
        .build()?;

    // Ctrl-C records the run as cancelled.
    let mut events = Box::pin(common::until_interrupt(storage, workflow.run(topic)));
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => match &event.kind {
                RunEventKind::Custom { name, data } => eprintln!("[{name}] {data}"),
                RunEventKind::RunContent { content } => common::print_delta(content),
                RunEventKind::RunCompleted { response } => {
                    println!();
                    eprintln!(
                        "[done] run {} of session {} saved in {}",
                        response.run_id.as_deref().unwrap_or("?"),
                        response.session_id.as_deref().unwrap_or("?"),
                        common::DATABASE
                    );
                }
                _ => {}
            },
            Err(error) => common::fail(&error),
        }
    }
    Ok(())
}
