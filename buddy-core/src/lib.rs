//! The runtime of buddy: workflows, runs and events, sessions, the storage trait and its
//! in-memory implementation.
//!
//! Most users depend on the `buddy` crate, which re-exports this one together with the
//! `#[workflow]` macro and the SQL storage backends.

#![doc(test(attr(deny(warnings))))]

pub mod debug;
pub mod error;
pub mod model;
pub mod run;
pub mod session;
pub mod storage;
pub mod workflow;

pub use error::{BoxError, Error, Result, StorageError};
pub use run::{RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus};
pub use session::{Session, SessionKind, SessionQuery, StateMerge, WorkflowSession};
pub use storage::{MemoryStorage, Storage};
pub use workflow::{
    DynWorkflow, Member, MemberContext, Parameter, RunStream, RunWorkflow, Workflow,
};

/// Items generated code refers to. Not public API: anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use ::futures::future::BoxFuture;
    pub use ::futures::stream::BoxStream;
    pub use ::schemars;
    pub use ::serde;
    pub use ::serde_json;
    pub use ::std::boxed::Box;
    pub use ::std::clone::Clone;
    pub use ::std::convert::Into;
    pub use ::std::default::Default;
    pub use ::std::option::Option::{self, None, Some};
    pub use ::std::primitive::{bool, str, usize};
    pub use ::std::result::Result::{self, Err, Ok};
    pub use ::std::string::String;
    pub use ::std::sync::Arc;

    pub use crate::error::Error;
    pub use crate::run::{RunEvent, RunResponse};
    pub use crate::session::StateMerge;
    pub use crate::storage::{IntoStorage, Storage};
    pub use crate::workflow::{
        Body, IntoRunResult, JsonState, Member, MemberContext, Parameter, RunStream, RunWorkflow,
        Typed, Workflow, WorkflowCore, WorkflowMemory, WorkflowSettings, WorkflowState,
        run_to_response, run_to_stream,
    };

    /// Boxes a stream returned by a `run` body.
    pub fn box_stream<'a, S>(stream: S) -> BoxStream<'a, crate::Result<RunEvent>>
    where
        S: ::futures::Stream<Item = crate::Result<RunEvent>> + Send + 'a,
    {
        ::std::boxed::Box::pin(stream)
    }

    /// Converts a builder's JSON-ish argument into a `serde_json::Value`.
    pub fn to_json<T: ::serde::Serialize>(value: T) -> crate::Result<::serde_json::Value> {
        ::serde_json::to_value(value).map_err(|error| crate::Error::Config(error.to_string()))
    }
}
