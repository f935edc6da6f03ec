//! What `#[tool]` generates code calls: schema, argument decoding, result and error
//! conversion. Not public API.

use serde_json::{Map, Value};

use crate::error::{BoxError, Error, Result};

/// The JSON Schema of a tool's arguments struct, without `$schema` and `title`.
pub fn tool_schema<T: schemars::JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
        // Providers want `properties` even for a tool without arguments.
        map.entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    schema
}

/// Decodes a tool's arguments; `null` counts as `{}`.
pub fn tool_arguments<T: serde::de::DeserializeOwned>(tool: &str, arguments: Value) -> Result<T> {
    let arguments = match arguments {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    serde_json::from_value(arguments).map_err(|source| Error::ToolArguments {
        tool: tool.to_owned(),
        source,
    })
}

/// Converts a tool function's return value into the tool's result.
pub fn tool_output<T: serde::Serialize>(value: T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|error| Error::msg(format!("tool result does not encode to JSON: {error}")))
}

/// Converts a tool function's error into a buddy error.
pub fn tool_error<E: Into<BoxError>>(error: E) -> Error {
    Error::from(error.into())
}
