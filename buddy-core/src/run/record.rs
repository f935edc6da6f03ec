use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunResponse;

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The body returned a response.
    #[default]
    Completed,
    /// The run returned an error or panicked.
    Error,
    /// The run was dropped by its caller before the end (a stream dropped, a timeout), or a
    /// durable run was cancelled.
    Cancelled,
    /// A durable run that started and has not ended (or whose process died: it can be
    /// resumed).
    Running,
    /// A durable run waiting for input.
    Paused,
    /// A status written by a newer version of buddy.
    #[serde(other)]
    Unknown,
}

impl RunStatus {
    /// The status as stored (`completed`, `error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Error => "error",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Unknown => "unknown",
        }
    }
}

/// One run in a session's history: its input, its response and how it ended.
///
/// Workflows, agents and teams record runs the same way:
///
/// - `input` is a JSON object: a workflow's run arguments by name (`{"topic": "..."}`), an
///   agent's or a team's message as `{"message": "..."}`;
/// - `created_at` is when the run started, `ended_at` when it ended, `duration_ms` the time
///   in between;
/// - a run that failed (an error, a panic, an error in its stream) has status `error` and
///   `error` holds the message with its causes (`message: cause: cause`); a run dropped by
///   its caller has status `cancelled`; in both cases `response.content` holds the text
///   produced so far and the run's state changes are not applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// The session the run belongs to.
    pub session_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// The run's input: a JSON object (see above).
    pub input: Value,
    /// What the run produced (so far, for runs that did not complete).
    pub response: RunResponse,
    /// The error message, for runs with status `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds when the run started.
    pub created_at: i64,
    /// Unix milliseconds when the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// How long the run took, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
}
