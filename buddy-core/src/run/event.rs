use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RunResponse, ToolExecution};

/// One event of a streamed run.
///
/// An event says which run the caller started and which run produced it:
///
/// - `run_id`, `session_id` and `workflow_id` are those of the *top-level* run, the one
///   whose stream the caller reads: a team stamps its own on the events of its members, a
///   workflow on every event its body passes on;
/// - `source_run_id` is the run that produced the event (the top-level run itself, or a
///   member's own run: the id of that run's stored [`RunRecord`](super::RunRecord)), and
///   `member_path` where that run sits below the top-level one (the field names of a
///   workflow and the member ids of a team, outermost first; empty for the top-level run's
///   own events and for runs that were not attached as members);
/// - `agent_id` / `team_id` name the agent or team that produced it (a member agent's event
///   keeps its agent id and gets its team's id).
///
/// [`is_top_level`](RunEvent::is_top_level) tells the caller's own `run_completed` from a
/// member's. On the wire the kind is the `event` key, flattened next to the ids:
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::run::RunEvent;
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
    /// The top-level run: the one whose stream carries the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The session of the top-level run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The top-level workflow, when a workflow passed the event on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The run that produced the event (`run_id` itself, or a member's run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_run_id: Option<String>,
    /// Where the producing run sits below the top-level run, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_path: Vec<String>,
    /// The agent that emitted the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The team that emitted the event, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Unix milliseconds when the event was created.
    #[serde(default)]
    pub created_at: i64,
    /// Whether the event repeats what a resumed durable run's journal holds (the text of a
    /// finished model call, sent again to the resumed run's stream) rather than new work.
    /// Replayed events are not appended to the run's event log again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
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
    /// A member's run failed (the top-level run's failure ends its stream with the error;
    /// in a durable run's event log it is the last event).
    RunError {
        /// What went wrong, with its causes.
        message: String,
    },
    /// A durable run paused: it waits for these values.
    RunPaused {
        /// The waits it is blocked on, with their prompts and schemas.
        waits: Vec<crate::durable::PendingWait>,
    },
    /// A durable run was resumed (after a crash, a pause or a dropped run).
    RunResumed {
        /// The run's attempt now (2 on the first resume).
        attempt: u32,
    },
    /// A durable run was cancelled.
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
            source_run_id: None,
            member_path: Vec::new(),
            created_at: super::now_millis(),
            replayed: false,
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

    /// Whether the top-level run produced the event itself (not one of its members).
    pub fn is_top_level(&self) -> bool {
        self.source_run_id.is_none() || self.source_run_id == self.run_id
    }

    /// The innermost member that produced the event, if a member did.
    pub fn member(&self) -> Option<&str> {
        self.member_path.last().map(String::as_str)
    }

    /// The response, for `run_completed` events.
    pub fn response(&self) -> Option<&RunResponse> {
        match &self.kind {
            RunEventKind::RunCompleted { response } => Some(response),
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
            RunEventKind::RunPaused { .. } => "run_paused",
            RunEventKind::RunResumed { .. } => "run_resumed",
            RunEventKind::RunCancelled => "run_cancelled",
            RunEventKind::Custom { .. } => "custom",
            RunEventKind::Unknown => "unknown",
        }
    }
}
