//! Branching, loops and fan-out are plain Rust, not framework primitives.
//!
//! ```bash
//! cargo run --example branching_and_loops -- "My order arrived broken, I want a refund"
//! ```
//!
//! - an `if` on a classifier agent's structured output (a Rust enum, decoded with
//!   `run_typed`);
//! - a bounded retry loop: a writer drafts, a reviewer approves or sends feedback, at most
//!   three rounds;
//! - concurrent fan-out and fan-in: three agents answer at once (`futures::future::join_all`),
//!   then one merges their answers.

#[path = "common/mod.rs"]
mod common;

use buddy::prelude::*;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;

/// What a message is about.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Category {
    Complaint,
    Question,
    Praise,
}

/// The classifier's answer.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Classification {
    category: Category,
}

/// The reviewer's answer.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Review {
    approved: bool,
    feedback: String,
}

/// The most drafts the writer may make.
const MAX_ROUNDS: u32 = 3;

/// Classifies a customer message, drafts a reply until a reviewer approves it, and collects
/// three perspectives concurrently for complaints.
#[workflow(description = "Triage a customer message with plain Rust control flow.")]
struct Triage {
    classifier: Agent,
    writer: Agent,
    reviewer: Agent,
    perspectives: Vec<Agent>,
}

#[workflow]
impl Triage {
    async fn run(&mut self, message: String) -> Result<RunResponse> {
        // 1. Branch on structured output.
        let category = match self
            .classifier
            .run_typed::<Classification>(format!("Classify this customer message: {message}"))
            .await
        {
            Ok(classification) => classification.category,
            // A model that cannot produce the structure is a typed error; here we fall back.
            Err(error @ Error::StructuredOutput { .. }) => {
                eprintln!("[classifier] {error}; treating the message as a question");
                Category::Question
            }
            Err(error) => return Err(error),
        };
        eprintln!("[classifier] {category:?}");

        // 2. Fan out for complaints: three agents at once, then fan in.
        let context = if matches!(category, Category::Complaint) {
            let answers = join_all(self.perspectives.iter().map(|agent| {
                agent.run(format!("In one sentence, how should we answer: {message}"))
            }))
            .await;
            let notes: Vec<String> = answers
                .into_iter()
                .filter_map(|answer| answer.ok().map(|response| response.text().into_owned()))
                .collect();
            eprintln!(
                "[fan-out] {} of {} perspectives answered",
                notes.len(),
                self.perspectives.len()
            );
            notes.join("\n")
        } else {
            String::new()
        };

        // 3. A bounded retry loop with a reviewer.
        let mut feedback = String::new();
        let mut draft = String::new();
        for round in 1..=MAX_ROUNDS {
            draft = self
                .writer
                .run(format!(
                    "Reply to this {category:?} from a customer: {message}\nNotes: {context}\nReviewer feedback so far: {feedback}"
                ))
                .await?
                .text()
                .into_owned();
            let review = self
                .reviewer
                .run_typed::<Review>(format!("Review this reply to a customer. Reply:\n{draft}"))
                .await;
            match review {
                Ok(review) if review.approved => {
                    eprintln!("[review] approved in round {round}");
                    break;
                }
                Ok(review) => {
                    eprintln!("[review] round {round}: {}", review.feedback);
                    feedback = review.feedback;
                }
                Err(error) => eprintln!("[review] round {round}: unusable review ({error})"),
            }
        }
        let rounds = self
            .state()
            .get("rounds")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        self.state_mut().insert("rounds".into(), json!(rounds + 1));
        Ok(RunResponse::from_text(draft))
    }
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        common::fail(&error);
    }
}

async fn run() -> Result<()> {
    let message = common::text_argument(
        "usage:\n  cargo run --example branching_and_loops -- \"My order arrived broken, I want a refund\"",
        "My order arrived broken and I want a refund.",
    );
    let storage = common::storage("triage_sessions").await?;
    let server = common::server();
    let agent = |name: &str, instructions: &str| {
        Agent::new(server.model("gpt-4o-mini"))
            .name(name)
            .instructions(instructions)
    };
    let mut workflow = Triage::builder()
        .classifier(agent("classifier", "Classify customer messages."))
        .writer(agent("writer", "Write short, polite replies to customers."))
        .reviewer(agent(
            "reviewer",
            "Approve replies that are polite and address the message.",
        ))
        .perspectives(vec![
            agent("support", "You work in customer support."),
            agent("legal", "You are a careful lawyer."),
            agent("sales", "You want to keep the customer."),
        ])
        .storage(storage.clone())
        .build()?;
    // Ctrl-C records the run as cancelled.
    let response = common::or_interrupt(&storage, workflow.run(message)).await?;
    println!("{}", response.text());
    Ok(())
}
