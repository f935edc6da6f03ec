//! Tools an agent can call: the [`Tool`] trait, [`FunctionTool`] for closures, and
//! [`Toolkit`]s that group tools.
//!
//! Most tools are written with the `#[tool]` attribute on a function (re-exported by the
//! `buddy` crate), which derives the name, the description (from the doc comment) and the
//! JSON Schema of the arguments.

mod function;
#[doc(hidden)]
pub mod support;
mod toolkit;
pub(crate) mod turn;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::ToolDefinition;

pub use function::FunctionTool;
pub use toolkit::Toolkit;

/// A function the model can call.
///
/// Object safe; agents hold tools as `Arc<dyn Tool>`. A tool's error is not fatal: the agent
/// sends its message back to the model as the tool's result and the run goes on.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use async_trait::async_trait;
/// use buddy::tool::Tool;
/// use serde_json::{json, Value};
///
/// struct Clock;
///
/// #[async_trait]
/// impl Tool for Clock {
///     fn name(&self) -> &str { "clock" }
///     fn description(&self) -> &str { "The current unix time in seconds." }
///     fn parameters(&self) -> Value { json!({"type": "object", "properties": {}}) }
///     async fn call(&self, _arguments: Value) -> buddy::Result<Value> {
///         Ok(json!(0))
///     }
/// }
///
/// assert_eq!(Clock.definition().name, "clock");
/// ```
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls the tool by.
    fn name(&self) -> &str;

    /// What the tool does; the model reads this to decide when to call it.
    fn description(&self) -> &str;

    /// JSON Schema of the arguments object.
    fn parameters(&self) -> Value;

    /// Whether the provider should enforce the schema exactly (`strict`), if the tool cares.
    fn strict(&self) -> Option<bool> {
        None
    }

    /// Whether a person must confirm each call before it runs (`#[tool(requires_confirmation)]`,
    /// or [`Agent::confirm_tools`](crate::agent::Agent::confirm_tools)). In a durable run the
    /// call then waits durably for a [`ToolConfirmation`]; outside one it is not run and the
    /// model is told why.
    fn requires_confirmation(&self) -> bool {
        false
    }

    /// Runs the tool with the model's arguments. A string result is sent to the model as is,
    /// any other value as JSON text.
    async fn call(&self, arguments: Value) -> crate::Result<Value>;

    /// The definition sent to the model.
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name().to_owned(),
            description: self.description().to_owned(),
            parameters: self.parameters(),
            strict: self.strict(),
        }
    }
}

/// A person's answer to a tool call that needs confirmation: the value of its wait, keyed
/// `<agent>#n/tool:<name>#m/confirm#1` (see [`crate::durable::wait_for`]).
///
/// As JSON: `{"decision": "approve"}`, `{"decision": "reject", "reason": "..."}`, or
/// `{"decision": "edit", "arguments": {...}}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ToolConfirmation {
    /// Run the call as the model made it.
    Approve,
    /// Do not run it; the model gets the rejection (with the reason) as the tool's result.
    Reject {
        /// Why, for the model.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Run it with these arguments instead.
    Edit {
        /// The arguments to run the tool with.
        arguments: Value,
    },
}

impl fmt::Debug for dyn Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool").field("name", &self.name()).finish()
    }
}

#[async_trait]
impl<T: Tool + ?Sized> Tool for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    fn parameters(&self) -> Value {
        (**self).parameters()
    }
    fn strict(&self) -> Option<bool> {
        (**self).strict()
    }
    async fn call(&self, arguments: Value) -> crate::Result<Value> {
        (**self).call(arguments).await
    }
}

/// Things that can be given to an agent as tools: one tool, a [`Toolkit`], or a collection
/// of `Arc<dyn Tool>`.
pub trait IntoTools {
    /// The tools.
    fn into_tools(self) -> Vec<Arc<dyn Tool>>;
}

impl<T: Tool + 'static> IntoTools for T {
    fn into_tools(self) -> Vec<Arc<dyn Tool>> {
        vec![Arc::new(self)]
    }
}

impl IntoTools for Vec<Arc<dyn Tool>> {
    fn into_tools(self) -> Vec<Arc<dyn Tool>> {
        self
    }
}

impl IntoTools for Toolkit {
    fn into_tools(self) -> Vec<Arc<dyn Tool>> {
        self.into_vec()
    }
}

/// The text a tool's result is sent to the model as: a string as is, anything else as JSON.
pub fn result_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
