//! A durable run that can be killed and resumed, and that pauses for a person's approval.
//!
//! ```bash
//! cargo run --example durable_article                    # starts a run (or resumes one)
//! cargo run --example durable_article -- approve "ship"  # approves the outline; it finishes
//! cargo run --example durable_article -- reject "redo"   # or sends it back
//! ```
//!
//! Kill the first command while the researcher is answering (Ctrl-C, or `kill -9` from
//! another terminal) and run it again: it resumes the run where it was, and what had
//! finished — the researcher's answer, the outline step that writes
//! `tmp/durable-outline.txt` — is not done again. Then the run pauses for approval: the
//! process exits, and the run waits in `tmp/examples.db` for the `approve` command, from
//! any process, now or days later.

#[path = "common/mod.rs"]
mod common;

use buddy::durable::DurableQuery;
use buddy::prelude::*;
use buddy::{RunStatus, Storage};
use serde::Deserialize;
use serde_json::json;

/// A person's verdict on the outline.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Review {
    /// Whether to write the article.
    approved: bool,
    /// What the reviewer says.
    note: String,
}

/// Research, outline, a person's approval, then the article.
#[workflow(description = "Research a topic, outline it, wait for approval, write it.")]
pub struct DurableArticle {
    #[member(default = Agent::new(OpenAIChat::new("gpt-4o-mini")).name("researcher"))]
    researcher: Agent,
    #[member(default = Agent::new(OpenAIChat::new("gpt-4o")).name("writer"))]
    writer: Agent,
}

#[workflow(durable)]
impl DurableArticle {
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        eprintln!("[research] asking the researcher about {topic}");
        let research = self
            .researcher
            .run(format!("List three facts about {topic}."))
            .await?;
        // A side effect, in a step: it happens once however often the run resumes.
        let outline = research.text().into_owned();
        let path = self
            .step("outline", async move {
                std::fs::create_dir_all("tmp").map_err(Error::other)?;
                std::fs::write("tmp/durable-outline.txt", &outline).map_err(Error::other)?;
                eprintln!("[outline] written to tmp/durable-outline.txt");
                Ok::<_, Error>("tmp/durable-outline.txt".to_owned())
            })
            .await?;
        let review: Review = self
            .wait_for(
                "approve",
                json!({"outline": path, "question": "Write the article?"}),
            )
            .await?;
        if !review.approved {
            return Ok(RunResponse::from_text(format!(
                "Not written: {}",
                review.note
            )));
        }
        let article = self
            .writer
            .run(format!(
                "Write a short article from:\n{}\nNote: {}",
                research.text(),
                review.note
            ))
            .await?;
        Ok(RunResponse::from_text(article.text()))
    }
}

const USAGE: &str = "usage:\n  cargo run --example durable_article                    # start (or resume) a run\n  cargo run --example durable_article -- approve \"ship\"  # approve the outline\n  cargo run --example durable_article -- reject \"redo\"   # send it back";

#[tokio::main]
async fn main() -> Result<()> {
    let words = common::text_argument(USAGE, "");
    let server = common::server();
    let storage = common::storage("durable").await?;
    let make = || {
        DurableArticle::builder()
            .researcher(Agent::new(server.model("gpt-4o-mini")).name("researcher"))
            .writer(Agent::new(server.model("gpt-4o")).name("writer"))
            .storage(storage.clone())
            .build()
    };
    let outcome = match words.split_once(' ').unwrap_or((words.as_str(), "")) {
        ("", _) => common::or_interrupt(&storage, start(&storage, make)).await,
        (verdict @ ("approve" | "reject"), note) => {
            let Some(run) = paused_run(&storage).await? else {
                eprintln!(
                    "no run is waiting for approval; start one with `cargo run --example durable_article`"
                );
                std::process::exit(1);
            };
            let value = json!({"approved": verdict == "approve", "note": note});
            eprintln!("[resume] run {} with {value}", run);
            let mut workflow = make()?;
            common::or_interrupt(&storage, workflow.resume_with(&run, "approve", value)).await
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    match outcome {
        Ok(response) => println!("{}", response.text()),
        Err(error) if error.is_paused() => {
            eprintln!(
                "[paused] the run waits for approval; the outline is in tmp/durable-outline.txt.\n         approve with: cargo run --example durable_article -- approve \"looks good\""
            );
        }
        Err(error) => common::fail(&error),
    }
    storage.close().await;
    Ok(())
}

/// Resumes an unfinished run (one killed before), or starts a new one.
async fn start(
    storage: &buddy::SqliteStorage,
    make: impl Fn() -> Result<DurableArticle>,
) -> Result<RunResponse> {
    let query = DurableQuery::all()
        .workflow("DurableArticle")
        .status(RunStatus::Running);
    if let Some(run) = storage.durable_runs(&query).await?.into_iter().next() {
        eprintln!("[resume] run {} was interrupted; resuming it", run.run_id);
        return make()?.resume(&run.run_id).await;
    }
    if let Some(run_id) = paused_run(storage).await? {
        // Still waiting: resuming runs nothing and says what it waits for.
        return make()?.resume(&run_id).await;
    }
    make()?.run("the printing press".into()).await
}

/// The run waiting for approval, if any.
async fn paused_run(storage: &buddy::SqliteStorage) -> Result<Option<String>> {
    let query = DurableQuery::all()
        .workflow("DurableArticle")
        .status(RunStatus::Paused);
    Ok(storage
        .durable_runs(&query)
        .await?
        .into_iter()
        .next()
        .map(|run| run.run_id))
}
