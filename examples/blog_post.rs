//! Search, then write a blog post, caching both in the session state.
//!
//! ```bash
//! cargo run --example blog_post -- "rust ownership"   # searches, writes, caches
//! cargo run --example blog_post -- "rust ownership"   # answers from the session cache
//! ```
//!
//! `run` returns a stream of events: the workflow's own progress (`custom` events:
//! `searching`, `writing`, `cache_hit`) and the writer's text as it is generated. The
//! `#[workflow]` wrapper stamps the run's ids on every event, accumulates the text into the
//! run's response and saves the session (with the cache) when the stream ends.

#[path = "common/mod.rs"]
mod common;

use buddy::prelude::*;
use buddy::{RunEventKind, Storage};
use serde_json::{Map, Value, json};

/// Search, then write; both cached per topic in the session state.
#[workflow(description = "Search a topic, then write a blog post about it; cached per topic.")]
struct BlogPost {
    searcher: Agent,
    writer: Agent,
}

/// The cached value of `topic` under `section` (`search_results` or `posts`).
fn cached(state: &Map<String, Value>, section: &str, topic: &str) -> Option<String> {
    state.get(section)?.get(topic)?.as_str().map(str::to_owned)
}

fn cache(state: &mut Map<String, Value>, section: &str, topic: &str, value: &str) {
    let entry = state.entry(section).or_insert_with(|| json!({}));
    if let Some(map) = entry.as_object_mut() {
        map.insert(topic.to_owned(), json!(value));
    }
}

#[workflow]
impl BlogPost {
    async fn run(&mut self, topic: String) -> impl Stream<Item = Result<RunEvent>> {
        buddy::try_stream! {
            if let Some(post) = cached(self.state(), "posts", &topic) {
                yield RunEvent::custom("cache_hit", json!({"cached": "post", "topic": topic}));
                yield RunEvent::content(post);
                return;
            }
            let research = match cached(self.state(), "search_results", &topic) {
                Some(research) => {
                    yield RunEvent::custom("cache_hit", json!({"cached": "search_results", "topic": topic}));
                    research
                }
                None => {
                    yield RunEvent::custom("searching", json!({"topic": topic}));
                    let found = self
                        .searcher
                        .run(format!("List three key facts about: {topic}"))
                        .await?;
                    let research = found.text().into_owned();
                    cache(self.state_mut(), "search_results", &topic, &research);
                    research
                }
            };
            yield RunEvent::custom("writing", json!({"topic": topic}));
            let mut draft = self.writer.run_stream(format!(
                "Write a short blog post about {topic}, based on these notes:\n{research}"
            ));
            let mut post = String::new();
            while let Some(event) = draft.next().await {
                let event = event?;
                match &event.kind {
                    RunEventKind::RunContent { content } => {
                        post.push_str(content);
                        yield event;
                    }
                    // The writer's own start and end are not the workflow's.
                    RunEventKind::RunStarted | RunEventKind::RunCompleted { .. } => {}
                    _ => yield event,
                }
            }
            cache(self.state_mut(), "posts", &topic, &post);
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
        "usage:\n  cargo run --example blog_post -- \"rust ownership\"   # searches, writes, caches\n  cargo run --example blog_post -- \"rust ownership\"   # answers from the session cache",
        "rust ownership",
    );
    let server = common::server();
    let storage = common::storage("blog_post_sessions").await?;
    let mut workflow = BlogPost::builder()
        .searcher(
            Agent::new(server.model("gpt-4o-mini"))
                .name("searcher")
                .instructions("Answer with a short bullet list."),
        )
        .writer(
            Agent::new(server.model("gpt-4o"))
                .name("writer")
                .instructions("Write three short paragraphs."),
        )
        .storage(storage.clone())
        .session_id("blog-post-example")
        .build()?;

    // Ctrl-C records the run as cancelled.
    let mut events = Box::pin(common::until_interrupt(storage, workflow.run(topic)));
    while let Some(event) = events.next().await {
        let event = event?;
        match &event.kind {
            RunEventKind::Custom { name, data } => eprintln!("\n[{name}] {data}"),
            RunEventKind::RunContent { content } => common::print_delta(content),
            RunEventKind::RunCompleted { response } => {
                println!();
                eprintln!(
                    "[done] run {} in session {}",
                    response.run_id.as_deref().unwrap_or("?"),
                    response.session_id.as_deref().unwrap_or("?")
                );
            }
            _ => {}
        }
    }
    drop(events);
    let storage = workflow.storage().cloned();
    if let (Some(storage), Some(session)) = (storage, workflow.session_id()) {
        let runs = storage
            .runs(
                &buddy::SessionKey::new(session, buddy::SessionKind::Workflow),
                None,
            )
            .await?
            .len();
        eprintln!(
            "[session] {runs} runs so far; run again with the same topic to answer from the cache"
        );
    }
    Ok(())
}
