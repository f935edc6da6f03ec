//! The runtime of buddy: workflows, runs and events, sessions, the storage trait and its
//! in-memory implementation, models (`OpenAIChat`, `Claude`), agents, teams and tools, and
//! (feature `testing`) a scripted model and a loopback OpenAI-compatible server for tests.
//!
//! Most users depend on the `buddy` crate, which re-exports this one together with the
//! `#[workflow]` macro and the SQL storage backends.

#![doc(test(attr(deny(warnings))))]

pub mod agent;
pub mod component;
pub mod debug;
pub mod durable;
mod engine;
pub mod error;
pub mod fault;
pub mod member;
pub mod model;
pub mod run;
pub mod session;
pub mod storage;
pub mod team;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tool;
pub mod workflow;

/// The `schemars` crate (version 1): every `run` argument implements its `JsonSchema`.
/// Without a dependency on `schemars`, derive it as
/// `#[derive(buddy::schemars::JsonSchema)] #[schemars(crate = "buddy::schemars")]`.
pub use ::schemars;
pub use engine::RunStream;
pub use error::{BoxError, Error, Result, StorageError, StorageErrorKind};
pub use member::{Member, MemberContext};
pub use run::{RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus};
pub use session::{Session, SessionKey, SessionKind, SessionQuery, StateMerge, WorkflowSession};
pub use storage::{MemoryStorage, Storage};
pub use workflow::{DynWorkflow, Parameter, RunWorkflow, Workflow, WorkflowBuilder};

/// Items generated code refers to. Not public API: anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use ::futures::future::BoxFuture;
    pub use ::futures::stream::BoxStream;
    pub use ::schemars;
    pub use ::serde;
    pub use ::serde_json;
    pub use ::std::borrow::Cow;
    pub use ::std::boxed::Box;
    pub use ::std::clone::Clone;
    pub use ::std::convert::Into;
    pub use ::std::default::Default;
    pub use ::std::option::Option::{self, None, Some};
    pub use ::std::primitive::{bool, str, u32, usize};
    pub use ::std::result::Result::{self, Err, Ok};
    pub use ::std::string::String;
    pub use ::std::sync::Arc;

    pub use crate::error::Error;
    pub use crate::member::{Member, MemberContext, attach_member};
    pub use crate::run::{RunEvent, RunResponse};
    pub use crate::session::StateMerge;
    pub use crate::storage::{IntoStorage, Storage};
    pub use crate::workflow::input::{
        InputSchema, deserialize_arg, input_schema_id, serialize_arg,
    };
    pub use crate::workflow::{
        Body, IntoRunResult, JsonState, Parameter, RunStream, RunWorkflow, Typed, Workflow,
        WorkflowBuilder, WorkflowCore, WorkflowMemory, WorkflowSettings, WorkflowState,
        assert_run_workflow, box_stream, expansion_failed, run_to_response, run_to_stream,
    };

    // `#[tool]` support.
    pub use ::std::sync::OnceLock;

    pub use crate::tool::Tool;

    pub use crate::tool::support::{tool_arguments, tool_error, tool_output, tool_schema};
}
