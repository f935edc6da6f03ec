use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Message, ToolCall};
use crate::run::Metrics;

/// One request to a model: the conversation, the tools it may call, and the shape of the
/// answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelRequest {
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// The tools the model may call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool the model must call (provider default when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// The shape of the answer (free text when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

impl ModelRequest {
    /// A request with `messages` and nothing else.
    pub fn new(messages: Vec<Message>) -> Self {
        ModelRequest {
            messages,
            ..ModelRequest::default()
        }
    }

    /// Adds the tools the model may call.
    pub fn tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the tool choice.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Sets the shape of the answer.
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }
}

/// A tool as the model sees it: a name, a description and a JSON Schema of its arguments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolDefinition {
    /// The name the model calls it by.
    pub name: String,
    /// What it does (the model reads this).
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// Ask the provider to enforce the schema exactly (OpenAI `strict`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// The shape of a model's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object (`json_object`).
    JsonObject,
    /// JSON that fits `schema` (`json_schema`).
    JsonSchema {
        /// A name for the schema (letters, digits, `_` and `-`).
        name: String,
        /// The JSON Schema.
        schema: Value,
        /// Ask the provider to enforce the schema exactly.
        strict: bool,
    },
}

impl ResponseFormat {
    /// A strict `json_schema` format for `T`, with the schema normalised for strict mode
    /// (see [`strict_json_schema`]).
    pub fn json_schema_for<T: schemars::JsonSchema>() -> Self {
        let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
        let name: String = T::schema_name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        ResponseFormat::JsonSchema {
            name,
            schema: strict_json_schema(schema),
            strict: true,
        }
    }
}

/// Normalises a JSON Schema for strict structured output: drops `$schema`, and makes every
/// object schema list all its properties as required with `additionalProperties: false`
/// (optional fields stay nullable through their own type).
pub fn strict_json_schema(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
    }
    normalise(&mut schema);
    schema
}

fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let is_object = map.get("type").is_some_and(|t| t == "object");
            if let (true, Some(Value::Object(properties))) = (is_object, map.get("properties")) {
                let required: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
                map.insert("required".into(), Value::Array(required));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for child in map.values_mut() {
                normalise(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Why a model stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The answer is complete.
    #[default]
    Stop,
    /// The token limit cut the answer.
    Length,
    /// The model asked for tool calls.
    ToolCalls,
    /// The provider's content filter stopped the answer.
    ContentFilter,
}

impl FinishReason {
    /// Parses the OpenAI wire form (`stop`, `length`, `tool_calls`, `function_call`,
    /// `content_filter`); `None` for anything else.
    pub fn parse(reason: &str) -> Option<Self> {
        match reason {
            "stop" | "end_turn" | "stop_sequence" => Some(FinishReason::Stop),
            "length" | "max_tokens" => Some(FinishReason::Length),
            "tool_calls" | "function_call" | "tool_use" => Some(FinishReason::ToolCalls),
            "content_filter" => Some(FinishReason::ContentFilter),
            _ => None,
        }
    }
}

/// A model's whole answer to one request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelResponse {
    /// The assistant message: text and/or tool calls.
    pub message: Message,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Token counts and timings of this call.
    pub metrics: Metrics,
    /// The model that answered, as the provider named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider's own fields the wire format has no place for.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl ModelResponse {
    /// A text answer.
    pub fn text(content: impl Into<String>) -> Self {
        ModelResponse {
            message: Message::assistant(content),
            ..ModelResponse::default()
        }
    }

    /// An answer that asks for `calls`.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        ModelResponse {
            message: Message::assistant_tool_calls(None, calls),
            finish_reason: FinishReason::ToolCalls,
            ..ModelResponse::default()
        }
    }

    /// A structured answer: `value` as JSON text.
    pub fn json(value: &Value) -> Self {
        ModelResponse::text(value.to_string())
    }

    /// Sets the usage metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }
}

/// One item of a streamed model answer.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ModelStreamEvent {
    /// A piece of the answer's text.
    Content(String),
    /// The answer is complete: the full response, with tool calls assembled from their
    /// deltas and usage metrics.
    Done(Box<ModelResponse>),
}
