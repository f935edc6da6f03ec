//! Sessions from the command line: list, continue, rename and delete them.
//!
//! ```bash
//! cargo run --example sessions -- new "first thoughts"          # starts a session, prints its id
//! cargo run --example sessions -- add SESSION_ID "more thoughts" # continues a session
//! cargo run --example sessions -- rename SESSION_ID "Ideas"
//! cargo run --example sessions -- list                           # newest first
//! cargo run --example sessions -- show SESSION_ID                # its state and run history
//! cargo run --example sessions -- delete SESSION_ID
//! ```
//!
//! Sessions live in `tmp/sessions.db` (SQLite, WAL mode), so every process sees the others'.

use buddy::prelude::*;
use buddy::{SessionKey, SessionKind, Storage};
use serde_json::json;

/// A journal: each run appends an entry to the session state.
#[workflow(description = "Keeps a journal per session.")]
struct Journal {}

#[workflow]
impl Journal {
    async fn run(&mut self, entry: String) -> RunResponse {
        let entries = self
            .state_mut()
            .entry("entries")
            .or_insert_with(|| json!([]));
        if let Some(list) = entries.as_array_mut() {
            list.push(json!(entry));
        }
        let count = self.state()["entries"].as_array().map_or(0, Vec::len);
        RunResponse::from_text(format!("{count} entries"))
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: sessions new TEXT | add SESSION TEXT | rename SESSION NAME | list | show SESSION | delete SESSION"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |index: usize| args.get(index).cloned().unwrap_or_else(|| usage());
    std::fs::create_dir_all("tmp").map_err(Error::other)?;
    let storage = SqliteStorage::open("tmp/sessions.db")
        .await?
        .table("journal_sessions")?;
    let journal = |session: Option<String>| {
        let builder = Journal::builder()
            .storage(storage.clone())
            .workflow_id("journal")
            .user_id("me");
        match session {
            Some(id) => builder.session_id(id).build(),
            None => builder.build(),
        }
    };

    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!(
                "usage: sessions new TEXT | add SESSION TEXT | rename SESSION NAME | list | show SESSION | delete SESSION"
            );
        }
        Some("new") => {
            let mut workflow = journal(None)?;
            let response = workflow.run(arg(1)).await?;
            println!(
                "{} ({})",
                workflow.session_id().unwrap_or("?"),
                response.text()
            );
        }
        Some("add") => {
            let mut workflow = journal(Some(arg(1)))?;
            let response = workflow.run(arg(2)).await?;
            println!("{}", response.text());
        }
        Some("rename") => {
            let mut workflow = journal(Some(arg(1)))?;
            match workflow.rename_session(arg(2)).await {
                Ok(()) => println!("renamed"),
                Err(Error::SessionNotFound { session_id }) => {
                    eprintln!("no session `{session_id}`");
                    std::process::exit(1);
                }
                Err(error) => return Err(error),
            }
        }
        Some("list") => {
            let workflow = journal(None)?;
            let sessions = workflow.sessions_of_user("me").await?;
            if sessions.is_empty() {
                println!("no sessions yet; start one with `sessions -- new TEXT`");
            }
            for session in sessions {
                println!(
                    "{}  {:<16}  {} runs",
                    session.session_id,
                    session.session_name.as_deref().unwrap_or("(unnamed)"),
                    session.run_count
                );
            }
        }
        Some("show") => {
            let options = buddy::storage::ReadOptions::with_runs(20);
            let Some(session) = storage
                .read(&SessionKey::new(arg(1), SessionKind::Workflow), &options)
                .await?
            else {
                eprintln!("no session `{}`", arg(1));
                std::process::exit(1);
            };
            println!(
                "name:  {}",
                session.session_name.as_deref().unwrap_or("(unnamed)")
            );
            println!(
                "state: {}",
                serde_json::Value::Object(session.session_state)
            );
            for run in &session.runs {
                println!(
                    "run {} [{}]: {}",
                    run.run_id,
                    run.status.as_str(),
                    run.input
                );
            }
        }
        Some("delete") => {
            let key = SessionKey::new(arg(1), SessionKind::Workflow);
            let options = buddy::storage::ReadOptions::default();
            if storage.read(&key, &options).await?.is_none() {
                eprintln!("no session `{}`", arg(1));
                std::process::exit(1);
            }
            let mut workflow = journal(None)?;
            workflow.delete_session(&arg(1)).await?;
            println!("deleted");
        }
        _ => usage(),
    }
    Ok(())
}
