//! # buddy
//!
//! Deterministic orchestration of LLM agents and teams. A workflow is a plain Rust struct
//! whose `run` method calls agents and teams in ordinary control flow; `#[workflow]`
//! generates everything around it: ids, sessions, session state, run history, persistence,
//! streaming events and typed run input.
//!
//! See the README for a tour.

#![doc(test(attr(deny(warnings))))]

pub use buddy_core::storage::MemoryStorage;
pub use buddy_core::{
    BoxError, DynWorkflow, Error, Member, MemberContext, Parameter, Result, RunEvent, RunEventKind,
    RunRecord, RunResponse, RunStatus, RunStream, RunWorkflow, Session, SessionKind, SessionQuery,
    StateMerge, Storage, StorageError, Workflow, WorkflowSession, debug, error, model, run,
    session, storage, workflow,
};
pub use buddy_macros::workflow;

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
    pub use futures::{Stream, StreamExt};
    #[cfg(feature = "postgres")]
    pub use crate::PostgresStorage;
    #[cfg(feature = "sqlite")]
    pub use crate::SqliteStorage;
    pub use crate::{
        Error, Member, MemberContext, MemoryStorage, Result, RunEvent, RunResponse, RunWorkflow,
        Workflow, workflow,
    };
    pub use buddy_core::session::SessionQuery;
}

#[doc(hidden)]
pub use buddy_core::__private;
