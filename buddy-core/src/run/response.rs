use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Message;

/// The result of a run of a workflow, an agent or a team.
///
/// `content` is the answer: a JSON string for text, any JSON value for structured output.
/// The ids say which run, session and component produced it. Unknown keys are ignored when
/// deserialising, so responses stored by a newer version still load.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::run::RunResponse;
///
/// let response = RunResponse::from_text("hello");
/// assert_eq!(response.text(), "hello");
/// let back: RunResponse = serde_json::from_str(&serde_json::to_string(&response).unwrap()).unwrap();
/// assert_eq!(back, response);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResponse {
    /// The answer: a string for text, any JSON for structured output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// The id of the run that produced this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The session the run belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The workflow that ran, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The agent that ran, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The team that ran, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The model that answered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation of the run (agents and teams).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// The tool calls made during the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolExecution>,
    /// Token counts and timings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Responses of team members, in the order they finished.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_responses: Vec<RunResponse>,
    /// Free-form data attached by user code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<Map<String, Value>>,
    /// Unix milliseconds when the response was created.
    pub created_at: i64,
}

impl RunResponse {
    /// An empty response stamped with the current time.
    pub fn new() -> Self {
        RunResponse {
            created_at: super::now_millis(),
            ..RunResponse::default()
        }
    }

    /// A response whose content is `text`.
    pub fn from_text(text: impl Into<String>) -> Self {
        RunResponse {
            content: Some(Value::String(text.into())),
            ..RunResponse::new()
        }
    }

    /// A response whose content is a structured JSON value.
    pub fn from_json(content: Value) -> Self {
        RunResponse {
            content: Some(content),
            ..RunResponse::new()
        }
    }

    /// The content as text: the string itself, JSON text for structured content, or `""`.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.content {
            Some(Value::String(text)) => Cow::Borrowed(text),
            Some(other) => Cow::Owned(other.to_string()),
            None => Cow::Borrowed(""),
        }
    }

    /// Decodes the content into `T` (structured output).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        T::deserialize(self.content.as_ref().unwrap_or(&Value::Null))
    }
}

impl From<String> for RunResponse {
    fn from(text: String) -> Self {
        RunResponse::from_text(text)
    }
}

impl From<&str> for RunResponse {
    fn from(text: &str) -> Self {
        RunResponse::from_text(text)
    }
}

/// One tool call made during a run, with its outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolExecution {
    /// The id the model gave the call.
    pub tool_call_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// The arguments, as the model sent them.
    pub arguments: Value,
    /// The tool's result, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The error message, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the call took, in milliseconds.
    pub duration_ms: f64,
}

/// Token counts and timings of a run or a model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt plus completion tokens.
    pub total_tokens: u64,
    /// Milliseconds until the first streamed token, when streamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<f64>,
    /// Wall time in milliseconds.
    pub duration_ms: f64,
}

impl std::ops::AddAssign for Metrics {
    fn add_assign(&mut self, other: Metrics) {
        // Saturating: the counts come from model servers, which may send anything.
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.time_to_first_token_ms = self.time_to_first_token_ms.or(other.time_to_first_token_ms);
        self.duration_ms += other.duration_ms;
    }
}
