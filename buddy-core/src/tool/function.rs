use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use super::Tool;

type Handler = dyn Fn(Value) -> BoxFuture<'static, crate::Result<Value>> + Send + Sync;

/// A tool made of a name, a description, a JSON Schema and an async closure.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::tool::{FunctionTool, Tool};
/// use serde_json::json;
///
/// let add = FunctionTool::new(
///     "add",
///     "Adds two integers.",
///     json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}),
///     |args| async move { Ok(json!(args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0))) },
/// );
/// assert_eq!(add.name(), "add");
/// ```
#[derive(Clone)]
pub struct FunctionTool {
    name: String,
    description: String,
    parameters: Value,
    handler: Arc<Handler>,
}

impl FunctionTool {
    /// A tool named `name` that runs `handler` with the model's arguments.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Result<Value>> + Send + 'static,
    {
        FunctionTool {
            name: name.into(),
            description: description.into(),
            parameters,
            handler: Arc::new(move |arguments| Box::pin(handler(arguments))),
        }
    }
}

impl fmt::Debug for FunctionTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionTool")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Tool for FunctionTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    async fn call(&self, arguments: Value) -> crate::Result<Value> {
        (self.handler)(arguments).await
    }
}
