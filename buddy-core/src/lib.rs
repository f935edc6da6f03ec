//! The runtime of buddy: workflows, runs and events, sessions, the storage trait and its
//! in-memory implementation, models (`OpenAIChat`, `Claude`), agents, teams and tools, and
//! (feature `testing`) a scripted model and a loopback OpenAI-compatible server for tests.
//!
//! Most users depend on the `buddy` crate, which re-exports this one together with the
//! `#[workflow]` macro and the SQL storage backends.

#![doc(test(attr(deny(warnings))))]

pub mod agent;
pub mod debug;
pub mod error;
pub mod model;
pub mod run;
pub mod session;
pub mod storage;
pub mod team;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tool;
pub mod workflow;

pub use error::{BoxError, Error, Result, StorageError, StorageErrorKind};
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

    // `#[tool]` support.
    pub use ::std::sync::OnceLock;

    pub use crate::tool::Tool;

    /// The JSON Schema of a tool's arguments struct, without `$schema` and `title`.
    pub fn tool_schema<T: ::schemars::JsonSchema>() -> ::serde_json::Value {
        let mut schema =
            ::serde_json::to_value(::schemars::schema_for!(T)).unwrap_or(::serde_json::Value::Null);
        if let ::serde_json::Value::Object(map) = &mut schema {
            map.remove("$schema");
            map.remove("title");
            // Providers want `properties` even for a tool without arguments.
            map.entry("properties")
                .or_insert_with(|| ::serde_json::Value::Object(::serde_json::Map::new()));
        }
        schema
    }

    /// Decodes a tool's arguments; `null` counts as `{}`.
    pub fn tool_arguments<T: ::serde::de::DeserializeOwned>(
        tool: &str,
        arguments: ::serde_json::Value,
    ) -> crate::Result<T> {
        let arguments = match arguments {
            ::serde_json::Value::Null => ::serde_json::Value::Object(::serde_json::Map::new()),
            other => other,
        };
        ::serde_json::from_value(arguments).map_err(|source| crate::Error::ToolArguments {
            tool: tool.to_owned(),
            source,
        })
    }

    /// Converts a tool function's return value into the tool's result.
    pub fn tool_output<T: ::serde::Serialize>(value: T) -> crate::Result<::serde_json::Value> {
        ::serde_json::to_value(value).map_err(|error| {
            crate::Error::msg(format!("tool result does not encode to JSON: {error}"))
        })
    }

    /// Converts a tool function's error into a buddy error.
    pub fn tool_error<E: Into<crate::BoxError>>(error: E) -> crate::Error {
        crate::Error::from(error.into())
    }
}
