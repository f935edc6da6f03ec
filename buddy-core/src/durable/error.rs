//! [`DurableError`]: what can go wrong in a durable run that is not a model's, a tool's or a
//! storage's failure.

use crate::error::BoxError;
use crate::run::RunStatus;

/// What can go wrong with a durable run: it paused, it asked for something its journal does
/// not hold, it cannot be resumed, or an answer to one of its waits is wrong.
///
/// It reaches callers as [`Error::Durable`](crate::Error::Durable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// The run paused: it waits for input (see [`pending`](DurableError::Paused::waits)).
    /// Nothing is lost: supply the values with `resume_with`, and the run continues.
    #[error("run `{run_id}` paused, waiting for {}", list(waits))]
    Paused {
        /// The run.
        run_id: String,
        /// The keys of the waits it waits for.
        waits: Vec<String>,
    },
    /// On resume, the body asked for something else than what its journal holds at that
    /// point: a different order, a different input, an entry it no longer asks for. The
    /// run is not continued (a silent match or a silent re-execution would be wrong).
    #[error(
        "run `{run_id}` is not deterministic at `{key}`: the journal holds {recorded}, the body asked for {asked}"
    )]
    NonDeterministic {
        /// The run.
        run_id: String,
        /// The journal key where body and journal part.
        key: String,
        /// What the journal holds there.
        recorded: String,
        /// What the body asked for.
        asked: String,
    },
    /// No durable run with this id is stored.
    #[error("durable run `{run_id}` not found")]
    RunNotFound {
        /// The run.
        run_id: String,
    },
    /// The run cannot be resumed: it has ended, or it has no journal (a served run that is
    /// not durable).
    #[error("durable run `{run_id}` cannot be resumed: it is {}", status.as_str())]
    NotResumable {
        /// The run.
        run_id: String,
        /// How it is.
        status: RunStatus,
    },
    /// The run belongs to another workflow type.
    #[error("durable run `{run_id}` belongs to workflow `{recorded}`, not `{asked}`")]
    WrongWorkflow {
        /// The run.
        run_id: String,
        /// The workflow type that started it.
        recorded: String,
        /// The workflow type asked to resume it.
        asked: String,
    },
    /// The run was journaled by another version of the workflow; resume it anyway with
    /// `ResumeOptions::allow_version_change`.
    #[error(
        "durable run `{run_id}` was started by version {recorded} of its workflow; this is version {current}"
    )]
    VersionMismatch {
        /// The run.
        run_id: String,
        /// The version that started it.
        recorded: u32,
        /// The version asked to resume it.
        current: u32,
    },
    /// A value for a wait was given to a run that is not paused.
    #[error("durable run `{run_id}` is not paused (it is {})", status.as_str())]
    NotPaused {
        /// The run.
        run_id: String,
        /// How it is.
        status: RunStatus,
    },
    /// The run has no wait with this key.
    #[error(
        "durable run `{run_id}` has no wait `{key}`; pending: {}",
        list(pending)
    )]
    UnknownWait {
        /// The run.
        run_id: String,
        /// The key asked for.
        key: String,
        /// The keys of its pending waits.
        pending: Vec<String>,
    },
    /// A value for a wait does not match the wait's JSON Schema; nothing was changed.
    #[error("invalid value for wait `{key}` of run `{run_id}`: {}", errors.join("; "))]
    InvalidWaitValue {
        /// The run.
        run_id: String,
        /// The wait.
        key: String,
        /// What the schema says is wrong, each with its path in the value (`/approved: ...`).
        errors: Vec<String>,
    },
    /// The wait already has another value.
    #[error("wait `{key}` of run `{run_id}` was already answered with another value")]
    WaitConflict {
        /// The run.
        run_id: String,
        /// The wait.
        key: String,
    },
    /// A wait's deadline passed before a value came: the documented outcome of
    /// `wait_for(..).deadline(..)`, which the body may handle.
    #[error("wait `{key}` expired before a value came")]
    WaitExpired {
        /// The wait.
        key: String,
    },
    /// A recorded value does not decode into the type the body asks for.
    #[error("journal entry `{key}` does not decode into `{type_name}`")]
    Decode {
        /// The entry.
        key: String,
        /// The type asked for.
        type_name: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A step's output (or a wait's prompt) does not encode to JSON.
    #[error("journal entry `{key}` does not encode to JSON")]
    Encode {
        /// The entry.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A step's future returned an error (recorded, and returned again on resume).
    #[error("step `{key}` failed")]
    StepFailed {
        /// The step's journal key.
        key: String,
        /// The error (on resume: its recorded message).
        #[source]
        source: BoxError,
    },
    /// The run had already stopped (it was not deterministic, or another process took it
    /// over): nothing more is written for it.
    #[error("durable run `{run_id}` has stopped; nothing more is written for it")]
    Stopped {
        /// The run.
        run_id: String,
    },
    /// Something that needs a durable run was used outside one (`wait_for` in a run without
    /// `#[workflow(durable)]`, `resume` on a storage without durable runs).
    #[error("{what} needs a durable run: {hint}")]
    NotDurable {
        /// What was used.
        what: &'static str,
        /// What to do.
        hint: &'static str,
    },
}

impl DurableError {
    /// Whether the run paused for input.
    pub fn is_paused(&self) -> bool {
        matches!(self, DurableError::Paused { .. })
    }

    /// Whether the run is not deterministic.
    pub fn is_non_deterministic(&self) -> bool {
        matches!(self, DurableError::NonDeterministic { .. })
    }
}

fn list(keys: &[String]) -> String {
    if keys.is_empty() {
        return "nothing".to_owned();
    }
    keys.iter()
        .map(|key| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error recorded in a journal, returned again on resume: its message with its causes.
#[derive(Debug)]
pub(crate) struct RecordedError(pub(crate) String);

impl std::fmt::Display for RecordedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordedError {}
