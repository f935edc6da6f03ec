//! Serve workflows, an agent and a team over HTTP.
//!
//! ```bash
//! cargo run --example serve                  # http://127.0.0.1:7777 (BUDDY_ADDR to change)
//! BUDDY_API_KEYS=secret cargo run --example serve   # bearer keys required
//! ```
//!
//! Serves the article workflow (`POST /v1/workflows/article-workflow/runs`), a
//! `calculator` agent and a `writers` team on the small local model (or `OPENAI_BASE_URL`),
//! with sessions and run logs in SQLite (`tmp/examples.db`). It prints a `curl` line that
//! streams a run as server-sent events; Ctrl-C shuts down gracefully. `docs/serving.md`
//! lists the routes.

#[path = "common/mod.rs"]
mod common;

use buddy::prelude::*;
use buddy::{Server, TeamMember};

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
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.run(format!("Research: {topic}")).await?;
        let article = self
            .writer
            .run(format!("Write an article based on:\n{}", research.text()))
            .await?;
        Ok(RunResponse::from_text(article.text()))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let models = common::server();
    let storage: std::sync::Arc<dyn buddy::Storage> =
        std::sync::Arc::new(common::storage("served").await?);
    let addr = std::env::var("BUDDY_ADDR").unwrap_or_else(|_| "127.0.0.1:7777".to_owned());

    let workflow_models = models.clone();
    let workflow_storage = storage.clone();
    let article = move || {
        let mut workflow = ArticleWorkflow::builder()
            .storage(workflow_storage.clone())
            .build()
            .unwrap_or_else(|error| common::fail(&error));
        workflow.researcher = Agent::new(workflow_models.model("gpt-4o-mini")).name("researcher");
        workflow.writer = Agent::new(workflow_models.model("gpt-4o")).name("writer");
        workflow
    };
    let calculator = Agent::new(models.model("gpt-4o-mini"))
        .name("calculator")
        .instructions("Answer arithmetic questions with the number only.");
    let writers = Team::new(models.model("gpt-4o-mini"), TeamMode::Route)
        .name("writers")
        .member(TeamMember::from(
            Agent::new(models.model("gpt-4o-mini")).name("poet"),
        ));

    println!("Serving on http://{addr}  (routes: http://{addr}/openapi.json)");
    let auth = if std::env::var("BUDDY_API_KEYS").is_ok_and(|keys| !keys.is_empty()) {
        " -H \"Authorization: Bearer $BUDDY_API_KEYS\""
    } else {
        ""
    };
    println!(
        "Stream a run:\n  curl -N{auth} -H 'Content-Type: application/json' \
         -d '{{\"input\": {{\"topic\": \"tides\"}}, \"stream\": true}}' \
         http://{addr}/v1/workflows/article-workflow/runs"
    );
    Server::new()
        .storage(storage)
        .workflow(article)
        .agent(calculator)
        .team(writers)
        .api_keys_from_env("BUDDY_API_KEYS")
        .serve(&addr)
        .await
        .map_err(|error| {
            eprintln!("error: {}", error);
            std::process::exit(1)
        })
}
