use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RunResponse, ToolExecution};

/// One event of a streamed run.
///
/// Every event carries the ids of the run that emitted it; a workflow stamps its own
/// `run_id`, `session_id` and `workflow_id` on every event it passes on, and keeps
/// `agent_id`, `team_id` and `member` so the origin stays visible. On the wire the kind is
/// the `event` key, flattened next to the ids:
///
/// ```
/// use buddy_core::run::RunEvent;
///
/// let event = RunEvent::content("Hel");
/// let json = serde_json::to_value(&event).unwrap();
/// assert_eq!(json["event"], "run_content");
/// assert_eq!(json["content"], "Hel");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// What happened.
    #[serde(flatten)]
    pub kind: RunEventKind,
    /// The run that emitted the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The session of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The workflow, when a workflow passed the event on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The agent that emitted the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The team that emitted the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The name of the team member that emitted the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Unix milliseconds when the event was created.
    #[serde(default)]
    pub created_at: i64,
}

/// The kinds of [`RunEvent`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEventKind {
    /// A run started.
    RunStarted,
    /// A piece of the answer's text.
    RunContent {
        /// The text delta.
        content: String,
    },
    /// The model asked for a tool call.
    ToolCallStarted {
        /// The call, without result yet.
        tool: ToolExecution,
    },
    /// A tool call finished.
    ToolCallCompleted {
        /// The call with its result or error.
        tool: ToolExecution,
    },
    /// A run completed with this response.
    RunCompleted {
        /// The full response.
        response: Box<RunResponse>,
    },
    /// A run failed.
    RunError {
        /// What went wrong.
        message: String,
    },
    /// A run was cancelled.
    RunCancelled,
    /// An event defined by user code.
    Custom {
        /// The user's name for the event.
        name: String,
        /// Its payload.
        #[serde(default)]
        data: Value,
    },
    /// An event kind written by a newer version of buddy.
    #[serde(other)]
    Unknown,
}

impl RunEvent {
    /// An event of `kind` stamped with the current time and no ids.
    pub fn new(kind: RunEventKind) -> Self {
        RunEvent {
            kind,
            run_id: None,
            session_id: None,
            workflow_id: None,
            agent_id: None,
            team_id: None,
            member: None,
            created_at: super::now_millis(),
        }
    }

    /// A text delta.
    pub fn content(text: impl Into<String>) -> Self {
        RunEvent::new(RunEventKind::RunContent {
            content: text.into(),
        })
    }

    /// A run-completed event carrying `response`.
    pub fn completed(response: RunResponse) -> Self {
        RunEvent::new(RunEventKind::RunCompleted {
            response: Box::new(response),
        })
    }

    /// A user-defined event.
    pub fn custom(name: impl Into<String>, data: Value) -> Self {
        RunEvent::new(RunEventKind::Custom {
            name: name.into(),
            data,
        })
    }

    /// The text delta, for `RunContent` events.
    pub fn content_delta(&self) -> Option<&str> {
        match &self.kind {
            RunEventKind::RunContent { content } => Some(content),
            _ => None,
        }
    }

    /// The event kind as it appears on the wire (`run_content`, ...).
    pub fn name(&self) -> &'static str {
        match &self.kind {
            RunEventKind::RunStarted => "run_started",
            RunEventKind::RunContent { .. } => "run_content",
            RunEventKind::ToolCallStarted { .. } => "tool_call_started",
            RunEventKind::ToolCallCompleted { .. } => "tool_call_completed",
            RunEventKind::RunCompleted { .. } => "run_completed",
            RunEventKind::RunError { .. } => "run_error",
            RunEventKind::RunCancelled => "run_cancelled",
            RunEventKind::Custom { .. } => "custom",
            RunEventKind::Unknown => "unknown",
        }
    }
}
