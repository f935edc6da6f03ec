//! # buddy
//!
//! Deterministic orchestration of LLM agents and teams. A workflow is a plain Rust struct
//! whose `run` method calls agents and teams in ordinary control flow; `#[workflow]`
//! generates everything around it: ids, sessions, session state, run history, persistence,
//! streaming events and typed run input.
//!
//! Start with the [`#[workflow]`](macro@workflow) attribute; see the README for a tour.
//!
//! ```no_run
//! use buddy::prelude::*;
//!
//! #[workflow(description = "Research a topic, then write an article.")]
//! pub struct ArticleWorkflow {
//!     #[member(default = Agent::new(OpenAIChat::new("gpt-4o-mini")))]
//!     researcher: Agent,
//!     #[member(default = Agent::new(OpenAIChat::new("gpt-4o")))]
//!     writer: Agent,
//! }
//!
//! #[workflow]
//! impl ArticleWorkflow {
//!     async fn run(&mut self, topic: String) -> Result<RunResponse> {
//!         let research = self.researcher.run(format!("Research: {topic}")).await?;
//!         let article = self.writer.run(format!("Write about:\n{}", research.text())).await?;
//!         Ok(RunResponse::from_text(article.text()))
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> buddy::Result<()> {
//! let mut workflow = ArticleWorkflow::builder()
//!     .session_state(serde_json::json!({"tone": "concise"}))
//!     .storage(SqliteStorage::open("tmp/wf.db").await?.table("workflows")?)
//!     .build()?;
//! let article = workflow.run("quantum computing".into()).await?;   // recorded, persisted
//! println!("{}", article.text());
//! # Ok(()) }
//! ```
//!
//! The pieces: [`Agent`], [`Team`] and workflows are run by one engine (every run recorded
//! with its start, end, input and outcome; a failed run changes no state; a dropped run is
//! recorded `cancelled`); [`SqliteStorage`] (default feature `sqlite`) and
//! `PostgresStorage` (feature `postgres`) keep sessions; [`Component`] serves any of them
//! from JSON.
//!
//! ## A short tour
//!
//! - **Agents**: an [`Agent`] has a model ([`OpenAIChat`] for any OpenAI-compatible server,
//!   `model::Claude`), instructions, tools (functions marked [`#[tool]`](macro@tool)) and its
//!   history from its session; `run` answers, `run_stream` streams.
//! - **Teams**: a [`Team`]'s leader model routes to, coordinates or collaborates with its
//!   members ([`TeamMode`]); members may be agents or teams.
//! - **Workflows**: `#[workflow]` on a struct and on the `impl` that defines `run`. `run`'s
//!   arguments are the typed input (checked against a JSON Schema when it comes as JSON);
//!   it returns a [`RunResponse`] or streams [`RunEvent`]s (`buddy::stream!`), and typed
//!   session state is one attribute away (`#[workflow(state = T)]`).
//! - **Sessions and storage**: every run is recorded in its session, with the session
//!   state, by a [`Storage`]: [`MemoryStorage`], [`SqliteStorage`] or `PostgresStorage`.
//!   A workflow and its members share one storage value and one session id, each under its
//!   own [`SessionKey`].
//! - **Events**: every [`RunEvent`] says which run, session and member it comes from;
//!   [`RunStream::into_response`] collects a streamed run into its response.
//! - **Tests and logs**: feature `testing` gives `buddy::testing` (scripted models, a
//!   loopback model server, a fault-injecting storage); buddy logs through `tracing`, and
//!   `BUDDY_DEBUG=true` prints its debug events without a subscriber of your own.

#![doc(test(attr(deny(warnings))))]

pub use buddy_core::SessionKey;
pub use buddy_core::storage::MemoryStorage;
pub use buddy_core::{
    BoxError, DynWorkflow, Error, Member, MemberContext, Parameter, Result, RunEvent, RunEventKind,
    RunRecord, RunResponse, RunStatus, RunStream, RunWorkflow, Session, SessionKind, SessionQuery,
    StateMerge, Storage, StorageError, StorageErrorKind, Workflow, WorkflowBuilder,
    WorkflowSession, debug, durable, error, member, model, run, schemars, session, storage,
    workflow,
};
#[doc = include_str!("../docs/workflow.md")]
pub use buddy_macros::workflow;

pub use buddy_core::agent::Agent;
pub use buddy_core::component::{Component, RunRequest, WorkflowComponent};
pub use buddy_core::model::{Model, OpenAIChat};
pub use buddy_core::team::{Team, TeamMember, TeamMode};
/// Scripted models, a loopback model server and a fault-injecting storage, for your own
/// tests (feature `testing`).
#[cfg(feature = "testing")]
pub use buddy_core::testing;
pub use buddy_core::{agent, component, team, tool};
/// Turns a function into a tool an agent can call.
///
/// The function's doc comment becomes the tool's description, its parameters (owned,
/// `Deserialize + JsonSchema` types; `///` comments on parameters become their
/// descriptions) the tool's JSON Schema. The function stays as written; next to it,
/// `#[tool]` generates a unit struct named after it in `PascalCase` that implements
/// [`tool::Tool`]. It works on `async fn` and plain `fn`; a function returning a `Result`
/// reports its error to the model as the tool's result. The calls of one model turn run
/// concurrently on the async runtime, so a plain `fn` that blocks for long should move its
/// work to `tokio::task::spawn_blocking` (or be an `async fn`).
///
/// Options: `#[tool(name = "...")]` (the name the model sees; default the function's
/// name), `#[tool(description = "...")]` (instead of the doc comment),
/// `#[tool(crate = buddy_core)]` (for users of `buddy-core` without `buddy`).
///
/// ```
/// use buddy::prelude::*;
///
/// /// Adds two integers.
/// #[tool]
/// async fn add(
///     /// The first term.
///     a: i64,
///     /// The second term.
///     b: i64,
/// ) -> i64 {
///     a + b
/// }
///
/// # fn main() {
/// use buddy::tool::Tool;
/// assert_eq!(Add.name(), "add");
/// assert_eq!(Add.parameters()["required"], serde_json::json!(["a", "b"]));
/// # }
/// ```
pub use buddy_macros::tool;

/// The HTTP server: serve workflows, agents and teams over REST and server-sent events
/// (feature `server`).
#[cfg(feature = "server")]
pub use buddy_server as server;
#[cfg(feature = "server")]
pub use buddy_server::Server;

#[cfg(feature = "postgres")]
pub use buddy_storage::PostgresStorage;
#[cfg(feature = "sqlite")]
pub use buddy_storage::SqliteStorage;

/// Builds a stream with `yield` (re-exported from `async-stream`), the easy way to write a
/// streaming `run` body: `buddy::stream! { yield Ok(RunEvent::content("hi")); }`.
pub use async_stream::{stream, try_stream};
/// Streams and their combinators (re-exported from `futures`).
pub use futures::{Stream, StreamExt};

/// The items most workflows use: `use buddy::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "postgres")]
    pub use crate::PostgresStorage;
    #[cfg(feature = "sqlite")]
    pub use crate::SqliteStorage;
    pub use crate::{Agent, Model, OpenAIChat, Team, TeamMode, tool};
    pub use crate::{
        Component, Error, Member, MemberContext, MemoryStorage, Result, RunEvent, RunEventKind,
        RunResponse, RunStream, RunWorkflow, Workflow, WorkflowBuilder, workflow,
    };
    pub use buddy_core::durable::{DurableError, ResumeOptions, step, wait_for};
    pub use buddy_core::session::SessionQuery;
    pub use futures::{Stream, StreamExt};
}

#[doc(hidden)]
pub use buddy_core::__private;
