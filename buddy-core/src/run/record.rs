use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunResponse;

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running (never stored by the workflow wrapper).
    Running,
    /// The body returned a response.
    #[default]
    Completed,
    /// The body returned an error or panicked.
    Error,
    /// A streamed run was dropped by its caller before the end.
    Cancelled,
    /// A status written by a newer version of buddy.
    #[serde(other)]
    Unknown,
}

impl RunStatus {
    /// The status as stored (`completed`, `error`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Error => "error",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Unknown => "unknown",
        }
    }
}

/// One run in a session's history: its input, its response and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// The session the run belongs to.
    pub session_id: String,
    /// How the run ended.
    pub status: RunStatus,
    /// The run's input (the workflow's arguments as a JSON object, or an agent's message).
    pub input: Value,
    /// What the run produced (so far, for runs that did not complete).
    pub response: RunResponse,
    /// The error message, for runs with status `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds when the run started.
    pub created_at: i64,
}
