//! What a storage keeps of a durable run: the run's row, its journal entries, its event log,
//! and the one write that changes them together.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::{RunEvent, RunResponse, RunStatus};
use crate::session::SessionWrite;

/// A durable run as stored: what started it, where it is, and how it ended.
///
/// `status` is `running` from the start until the run ends (`completed`, `error`,
/// `cancelled`), or `paused` while it waits for input. A run whose process died is still
/// `running`: [`resume`](crate::RunWorkflow::resume) picks it up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DurableRun {
    /// The run's id (the top-level run's, kept across resumes).
    pub run_id: String,
    /// The workflow type that runs it (`#[workflow]`'s type name).
    pub workflow: String,
    /// The workflow's `#[workflow(version = ..)]` when the run started.
    pub version: u32,
    /// The workflow's id.
    pub workflow_id: Option<String>,
    /// The session the run belongs to.
    pub session_id: String,
    /// The user the run is for.
    pub user_id: Option<String>,
    /// Where the run is.
    pub status: RunStatus,
    /// The run's input (the workflow's arguments by name).
    pub input: Value,
    /// How many times the run has been started: 1, then one more on every resume. Every
    /// write of a run is fenced with it, so two processes cannot both drive one run.
    pub attempt: u32,
    /// The response of a run that ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<RunResponse>,
    /// The error of a run that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the run started (Unix milliseconds).
    pub created_at: i64,
    /// When the row last changed.
    pub updated_at: i64,
    /// When the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Whether the row carries only the run's event log, not a journal: a served run that
    /// is not durable (an agent's, a team's, or a workflow's without `durable`). Such a run
    /// cannot be resumed; `workflow` is then `Agent`, `Team` or the workflow type, and
    /// `workflow_id` the agent's, team's or workflow's id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_only: bool,
}

impl DurableRun {
    /// Whether the run has ended (`completed`, `error` or `cancelled`).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            RunStatus::Completed | RunStatus::Error | RunStatus::Cancelled
        )
    }
}

/// What a journal entry stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// One model request of an agent or a team leader.
    Model,
    /// One tool call (a team's delegation to a member included).
    Tool,
    /// A `step(name, future)` of a workflow body.
    #[default]
    Step,
    /// A `wait_for(key, prompt)`: input from outside the run.
    Wait,
    /// A whole run of an agent.
    Agent,
    /// A whole run of a team.
    Team,
    /// A kind written by a newer version of buddy.
    #[serde(other)]
    Unknown,
}

impl EntryKind {
    /// The kind as stored (`model`, `tool`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Model => "model",
            EntryKind::Tool => "tool",
            EntryKind::Step => "step",
            EntryKind::Wait => "wait",
            EntryKind::Agent => "agent",
            EntryKind::Team => "team",
            EntryKind::Unknown => "unknown",
        }
    }
}

/// Where a journal entry is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryStatus {
    /// Finished: `output` (or `error`) is what it returned.
    #[default]
    Done,
    /// A wait that has no value yet.
    Pending,
    /// A wait whose deadline passed before a value came.
    Expired,
    /// A status written by a newer version of buddy.
    #[serde(other)]
    Unknown,
}

/// What a pending wait asks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WaitSpec {
    /// What the run shows the person (or service) who answers.
    pub prompt: Value,
    /// The JSON Schema an answer must match.
    pub schema: Value,
    /// When the wait expires (Unix milliseconds), if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
}

/// One entry of a durable run's journal: a model call, a tool call, a step or a wait, and
/// what it returned.
///
/// The key is `scope/name#occurrence`: `researcher#1/model#2` is the second model request
/// of the first run of the `researcher` member. It is fixed when the future is created, so
/// futures joined with `join!` or made in a loop get the same keys on every run; `position`
/// is the entry's place among the entries of its scope, which is how a different order is
/// noticed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalEntry {
    /// The entry's key, unique within its run.
    pub key: String,
    /// The key of the entry this one belongs to (`""` for the workflow body).
    pub scope: String,
    /// Its place among the entries of `scope`, from 0.
    pub position: u32,
    /// What it stands for.
    pub kind: EntryKind,
    /// Where it is.
    pub status: EntryStatus,
    /// A hash of its input (the model request, the tool's arguments, a step's declared
    /// input), hex: a different input on resume is a
    /// [`NonDeterministic`](crate::durable::DurableError::NonDeterministic) error.
    pub input_hash: String,
    /// What it returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error it returned (a step's error, a tool's failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a wait: what it asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitSpec>,
    /// The run's attempt that wrote it.
    pub attempt: u32,
    /// When it was first written (Unix milliseconds).
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// One event of a durable run's log, with its sequence number (1, 2, 3, ... per run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The run the event belongs to.
    pub run_id: String,
    /// Its place in the run's log, from 1, without gaps.
    pub seq: u64,
    /// The event.
    pub event: RunEvent,
}

/// The condition a [`DurableWrite`] is applied under: the stored run has this attempt (and
/// this status, when given). A write whose fence does not hold changes nothing and fails with
/// [`StorageError::Fenced`](crate::StorageError::Fenced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The attempt the stored run must have.
    pub attempt: u32,
    /// The status it must have, if it matters.
    pub status: Option<RunStatus>,
}

/// One atomic change to a durable run: its row, journal entries, events and the session
/// write of a run that ends, all in one transaction.
#[derive(Clone, Debug, Default)]
pub struct DurableWrite {
    /// The run this write belongs to.
    pub run_id: String,
    /// Applied only if the stored run matches (none: no condition).
    pub fence: Option<Fence>,
    /// The run's row, inserted or replaced.
    pub run: Option<DurableRun>,
    /// Journal entries, inserted or replaced by key.
    pub entries: Vec<JournalEntry>,
    /// Events appended to the log; a sequence number already stored fails the whole write
    /// as a conflict.
    pub events: Vec<StoredEvent>,
    /// A session write committed in the same transaction (the run's record when it ends,
    /// or a member's run).
    pub session: Option<SessionWrite>,
}

impl DurableWrite {
    /// An empty write of run `run_id`.
    pub fn new(run_id: impl Into<String>) -> Self {
        DurableWrite {
            run_id: run_id.into(),
            ..DurableWrite::default()
        }
    }

    /// Whether the write changes nothing.
    pub fn is_empty(&self) -> bool {
        self.run.is_none()
            && self.entries.is_empty()
            && self.events.is_empty()
            && self.session.is_none()
    }
}

/// A durable run with its journal: what a resume starts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurableState {
    /// The run's row.
    pub run: DurableRun,
    /// Its journal entries, in no particular order.
    pub entries: Vec<JournalEntry>,
    /// The sequence number of its last event (0 without events).
    pub last_seq: u64,
}

/// Which durable runs to list: by workflow type and status, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableQuery {
    /// Only runs of this workflow type.
    pub workflow: Option<String>,
    /// Only runs with one of these statuses (all when empty).
    pub statuses: Vec<RunStatus>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl DurableQuery {
    /// Every durable run.
    pub fn all() -> Self {
        DurableQuery::default()
    }

    /// Only runs of workflow type `workflow`.
    pub fn workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = Some(workflow.into());
        self
    }

    /// Only runs with status `status` (call again to add another).
    pub fn status(mut self, status: RunStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// At most `limit` runs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `run` matches.
    pub fn matches(&self, run: &DurableRun) -> bool {
        self.workflow
            .as_ref()
            .is_none_or(|name| *name == run.workflow)
            && (self.statuses.is_empty() || self.statuses.contains(&run.status))
    }
}
