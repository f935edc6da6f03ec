//! A team in one step, plain agents in another.
//!
//! ```bash
//! cargo run --example team_step -- "the history of the transistor"
//! ```
//!
//! Step 1 lets a model decide who does what: a coordinating team whose leader delegates to a
//! researcher and a fact-checker. Step 2 is fixed in code: an editor agent turns the team's
//! notes into the final text. The workflow streams both steps, naming the member behind
//! each event, and keeps the team's and the workflow's sessions in SQLite.

#[path = "common/mod.rs"]
mod common;

use buddy::RunEventKind;
use buddy::prelude::*;
use serde_json::json;

/// Research with a team, then edit with one agent.
#[workflow(description = "A team researches; an editor writes.")]
struct Briefing {
    research_team: Team,
    editor: Agent,
}

#[workflow]
impl Briefing {
    async fn run(&mut self, topic: String) -> impl Stream<Item = Result<RunEvent>> {
        buddy::try_stream! {
            // Step 1: the team (the leader decides whom to ask).
            yield RunEvent::custom("step", json!({"step": 1, "who": "research team"}));
            let mut team = self.research_team.run_stream(format!("Collect notes about {topic}."));
            let mut notes = String::new();
            while let Some(event) = team.next().await {
                let event = event?;
                match &event.kind {
                    RunEventKind::RunCompleted { response } if event.is_top_level() => {
                        notes = response.text().into_owned();
                    }
                    RunEventKind::ToolCallStarted { tool } => {
                        yield RunEvent::custom("delegation", json!({"to": tool.arguments.get("member_id")}));
                    }
                    _ => {}
                }
            }
            self.state_mut().insert("last_notes".into(), json!(notes));

            // Step 2: a plain agent, called by code.
            yield RunEvent::custom("step", json!({"step": 2, "who": "editor"}));
            let mut draft = self.editor.run_stream(format!(
                "Write a short briefing about {topic} from these notes:\n{notes}"
            ));
            while let Some(event) = draft.next().await {
                let event = event?;
                if event.content_delta().is_some() {
                    yield event;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        common::fail(&error);
    }
}

async fn run() -> Result<()> {
    let topic = common::text_argument(
        "usage:\n  cargo run --example team_step -- \"the history of the transistor\"",
        "the history of the transistor",
    );
    let server = common::server();
    // Two tables of one database: one connection and one writer.
    let storage = common::storage("briefing_sessions").await?;
    let team_storage = storage.clone().table("briefing_team_sessions")?;
    let team = Team::new(server.model("gpt-4o"), TeamMode::Coordinate)
        .name("research team")
        .instructions("Ask the researcher for facts, then the fact-checker to check them.")
        .member(
            Agent::new(server.model("gpt-4o-mini"))
                .name("researcher")
                .description("Finds facts."),
        )
        .member(
            Agent::new(server.model("gpt-4o-mini"))
                .name("fact-checker")
                .description("Checks facts."),
        )
        .max_turns(4)
        .storage(team_storage);
    let mut workflow = Briefing::builder()
        .research_team(team)
        .editor(Agent::new(server.model("gpt-4o-mini")).name("editor"))
        .storage(storage.clone())
        .build()?;

    // Ctrl-C records the run as cancelled.
    let mut events = Box::pin(common::until_interrupt(storage, workflow.run(topic)));
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => match &event.kind {
                RunEventKind::Custom { name, data } => eprintln!("[{name}] {data}"),
                RunEventKind::RunContent { content } => common::print_delta(content),
                RunEventKind::RunCompleted { .. } => println!(),
                _ => {}
            },
            Err(error) => common::fail(&error),
        }
    }
    Ok(())
}
