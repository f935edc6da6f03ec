//! A workflow with a typed session state that survives restarts.
//!
//! ```bash
//! cargo run --example typed_state -- "buy milk"      # adds a task; run it again to add more
//! cargo run --example typed_state -- --done 1        # marks task 1 done
//! cargo run --example typed_state -- --reset         # starts a new, empty list
//! ```
//!
//! The state lives in `tmp/typed_state.db` (SQLite) under a fixed session id, so every
//! process continues the same list. `#[workflow(state = TodoList)]` makes `self.state()` and
//! `self.state_mut()` typed; a stored state that does not decode into `TodoList` is an error
//! that names the session, never a silent reset.

use buddy::prelude::*;
use serde::{Deserialize, Serialize};

/// The typed session state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TodoList {
    tasks: Vec<Task>,
    #[serde(default)]
    runs: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Task {
    title: String,
    done: bool,
}

/// Keeps a to-do list in its session.
#[workflow(description = "A to-do list kept in typed session state.", state = TodoList)]
struct Todo {}

#[workflow]
impl Todo {
    /// Adds a task, or marks one done, and prints the list.
    async fn run(&mut self, add: Option<String>, done: Option<usize>) -> Result<RunResponse> {
        let state = self.state_mut();
        state.runs += 1;
        if let Some(title) = add {
            state.tasks.push(Task { title, done: false });
        }
        if let Some(number) = done {
            let task = state
                .tasks
                .get_mut(number.wrapping_sub(1))
                .ok_or_else(|| Error::msg(format!("there is no task {number}")))?;
            task.done = true;
        }
        let mut text = format!("to-do list after {} runs:\n", self.state().runs);
        for (index, task) in self.state().tasks.iter().enumerate() {
            let mark = if task.done { "x" } else { " " };
            text.push_str(&format!("  {}. [{mark}] {}\n", index + 1, task.title));
        }
        Ok(RunResponse::from_text(text))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::fs::create_dir_all("tmp").map_err(Error::other)?;
    let storage = SqliteStorage::open("tmp/typed_state.db")
        .await?
        .table("todo_sessions")?;
    let mut todo = Todo::builder()
        .storage(storage)
        .session_id("my-todo-list")
        .build()?;

    let (add, done) = match args.first().map(String::as_str) {
        Some("--reset") => {
            todo.delete_session("my-todo-list").await?;
            println!("the list is empty again");
            return Ok(());
        }
        Some("--done") => {
            let number = args.get(1).and_then(|n| n.parse().ok());
            if number.is_none() {
                eprintln!("usage: typed_state --done NUMBER");
                std::process::exit(2);
            }
            (None, number)
        }
        Some("-h" | "--help") => {
            println!(
                "usage:\n  cargo run --example typed_state -- \"buy milk\"   # adds a task\n  cargo run --example typed_state -- --done 1     # marks task 1 done\n  cargo run --example typed_state -- --reset      # starts a new, empty list"
            );
            return Ok(());
        }
        Some(flag) if flag.starts_with('-') => {
            eprintln!("unknown flag `{flag}`; try --help");
            std::process::exit(2);
        }
        Some(_) => (Some(args.join(" ")), None),
        None => (None, None),
    };
    match todo.run(add, done).await {
        Ok(response) => print!("{}", response.text()),
        Err(Error::StateDecode {
            session_id,
            type_name,
            source,
        }) => {
            eprintln!("the stored list of session `{session_id}` is not a `{type_name}`: {source}");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
    Ok(())
}
