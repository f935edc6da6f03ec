//! Operations on stored durable runs that run no workflow code: status, pending waits,
//! answers, cancellation; and the checks a resume makes before it re-enters a body.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::DurableError;
use super::record::{
    DurableRun, DurableState, DurableWrite, EntryKind, EntryStatus, Fence, JournalEntry,
};
use crate::error::{Error, Result};
use crate::run::{RunStatus, now_millis};
use crate::storage::Storage;

/// How to resume a durable run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeOptions {
    /// Resume a run journaled by another `#[workflow(version = ..)]` of the workflow (by
    /// default that is refused with [`DurableError::VersionMismatch`]). Its journal must
    /// still match what the new body asks for, or the run fails as not deterministic.
    pub allow_version_change: bool,
}

impl ResumeOptions {
    /// The default options.
    pub fn new() -> Self {
        ResumeOptions::default()
    }

    /// Resumes runs started by another version of the workflow.
    pub fn allow_version_change(mut self, allow: bool) -> Self {
        self.allow_version_change = allow;
        self
    }
}

/// A wait a paused run is blocked on: what it asks and the JSON Schema of the answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingWait {
    /// The wait's key: what `resume_with` takes.
    pub key: String,
    /// What the run shows whoever answers.
    pub prompt: Value,
    /// The JSON Schema an answer must match.
    pub schema: Value,
    /// When it expires (Unix milliseconds), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
}

impl PendingWait {
    fn of(entry: &JournalEntry) -> PendingWait {
        let wait = entry.wait.clone().unwrap_or_default();
        PendingWait {
            key: entry.key.clone(),
            prompt: wait.prompt,
            schema: wait.schema,
            deadline: wait.deadline,
        }
    }
}

async fn load(storage: &dyn Storage, run_id: &str) -> Result<DurableState> {
    if !storage.supports_durable() {
        return Err(Error::Durable(DurableError::NotDurable {
            what: "this storage",
            hint: "durable runs need a storage that keeps them (MemoryStorage, SqliteStorage, PostgresStorage)",
        }));
    }
    storage.load_durable(run_id).await?.ok_or_else(|| {
        Error::Durable(DurableError::RunNotFound {
            run_id: run_id.to_owned(),
        })
    })
}

/// The stored row of durable run `run_id`: its status, response or error.
pub async fn run_status(storage: &dyn Storage, run_id: &str) -> Result<DurableRun> {
    Ok(load(storage, run_id).await?.run)
}

fn pending(entries: &[JournalEntry]) -> Vec<&JournalEntry> {
    let mut waits: Vec<&JournalEntry> = entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Wait && entry.status == EntryStatus::Pending)
        .collect();
    waits.sort_by(|a, b| a.key.cmp(&b.key));
    waits
}

/// The waits durable run `run_id` is blocked on (none unless it is paused).
pub async fn pending_waits(storage: &dyn Storage, run_id: &str) -> Result<Vec<PendingWait>> {
    let state = load(storage, run_id).await?;
    if state.run.status != RunStatus::Paused {
        return Ok(Vec::new());
    }
    Ok(pending(&state.entries)
        .into_iter()
        .map(PendingWait::of)
        .collect())
}

/// What [`answer`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answered {
    /// The wait's full key.
    pub key: String,
    /// Whether the value was new (false: the wait already had this very value).
    pub stored: bool,
    /// The waits still pending after this one.
    pub pending: Vec<String>,
}

/// The wait `key` names: its full key, or its name alone (`approve` for `approve#1`) when
/// one pending wait has that name (or, with none pending, one wait at all).
fn find<'a>(entries: &'a [JournalEntry], key: &str) -> Option<&'a JournalEntry> {
    let waits = || entries.iter().filter(|entry| entry.kind == EntryKind::Wait);
    if let Some(exact) = waits().find(|entry| entry.key == key) {
        return Some(exact);
    }
    let named: Vec<&JournalEntry> = waits()
        .filter(|entry| {
            let last = entry.key.rsplit('/').next().unwrap_or(&entry.key);
            last.rsplit_once('#').map(|(name, _)| name) == Some(key)
        })
        .collect();
    let pending: Vec<&JournalEntry> = named
        .iter()
        .copied()
        .filter(|entry| entry.status == EntryStatus::Pending)
        .collect();
    match (pending.as_slice(), named.as_slice()) {
        ([one], _) | ([], [one]) => Some(one),
        _ => None,
    }
}

/// Gives wait `key` of paused run `run_id` its value, without running any workflow code
/// (what a server does; `resume_with` does this and then resumes the run).
///
/// The value is checked against the wait's JSON Schema first: an invalid value is
/// [`DurableError::InvalidWaitValue`] and nothing is stored. Giving a wait the value it
/// already has is a no-op ([`Answered::stored`] false); another value is
/// [`DurableError::WaitConflict`]. An unknown run is [`DurableError::RunNotFound`], an
/// unknown key [`DurableError::UnknownWait`], and a run that is not paused
/// [`DurableError::NotPaused`].
pub async fn answer(
    storage: &dyn Storage,
    run_id: &str,
    key: &str,
    value: Value,
) -> Result<Answered> {
    let state = load(storage, run_id).await?;
    let run = &state.run;
    let Some(entry) = find(&state.entries, key) else {
        return Err(Error::Durable(DurableError::UnknownWait {
            run_id: run_id.to_owned(),
            key: key.to_owned(),
            pending: pending(&state.entries)
                .into_iter()
                .map(|entry| entry.key.clone())
                .collect(),
        }));
    };
    let others = |except: &str| -> Vec<String> {
        pending(&state.entries)
            .into_iter()
            .filter(|entry| entry.key != except)
            .map(|entry| entry.key.clone())
            .collect()
    };
    match entry.status {
        EntryStatus::Done if entry.output.as_ref() == Some(&value) => {
            return Ok(Answered {
                key: entry.key.clone(),
                stored: false,
                pending: others(&entry.key),
            });
        }
        EntryStatus::Done => {
            return Err(Error::Durable(DurableError::WaitConflict {
                run_id: run_id.to_owned(),
                key: entry.key.clone(),
            }));
        }
        EntryStatus::Expired => {
            return Err(Error::Durable(DurableError::WaitExpired {
                key: entry.key.clone(),
            }));
        }
        _ => {}
    }
    if run.status != RunStatus::Paused {
        return Err(Error::Durable(DurableError::NotPaused {
            run_id: run_id.to_owned(),
            status: run.status,
        }));
    }
    let schema = entry.wait.as_ref().map(|wait| &wait.schema);
    validate(run_id, &entry.key, schema, &value)?;
    let mut answered = entry.clone();
    answered.status = EntryStatus::Done;
    answered.output = Some(value);
    answered.updated_at = now_millis();
    let mut write = DurableWrite::new(run_id);
    write.fence = Some(Fence {
        attempt: run.attempt,
        status: Some(RunStatus::Paused),
    });
    write.entries.push(answered);
    storage.write_durable(write).await?;
    super::log::notify(run_id);
    Ok(Answered {
        key: entry.key.clone(),
        stored: true,
        pending: others(&entry.key),
    })
}

/// Checks `value` against a wait's JSON Schema.
fn validate(run_id: &str, key: &str, schema: Option<&Value>, value: &Value) -> Result<()> {
    let invalid = |errors: Vec<String>| {
        Error::Durable(DurableError::InvalidWaitValue {
            run_id: run_id.to_owned(),
            key: key.to_owned(),
            errors,
        })
    };
    let Some(schema) = schema else {
        return Ok(());
    };
    let validator = jsonschema::validator_for(schema)
        .map_err(|error| invalid(vec![format!("the stored schema is invalid: {error}")]))?;
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|error| {
            let path = error.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            format!("{path}: {error}")
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(errors))
    }
}

/// Cancels durable run `run_id`: a running or paused run is stored `cancelled` (a process
/// still driving it fails on its next write); a run that has ended is left as it is.
/// Returns the run's row afterwards.
pub async fn cancel(storage: &dyn Storage, run_id: &str) -> Result<DurableRun> {
    // A run still working appends events as it goes: a write that collided with one of
    // them is tried again on what is stored then.
    let mut tries = 0;
    loop {
        tries += 1;
        match try_cancel(storage, run_id).await {
            Err(Error::Storage(error)) if error.is_conflict() && tries < 10 => continue,
            outcome => return outcome,
        }
    }
}

async fn try_cancel(storage: &dyn Storage, run_id: &str) -> Result<DurableRun> {
    let state = load(storage, run_id).await?;
    let mut run = state.run;
    if run.is_finished() {
        return Ok(run);
    }
    let fence = Fence {
        attempt: run.attempt,
        status: Some(run.status),
    };
    let now = now_millis();
    run.status = RunStatus::Cancelled;
    run.updated_at = now;
    run.ended_at = Some(now);
    let mut write = DurableWrite::new(run_id);
    write.fence = Some(fence);
    write.run = Some(run.clone());
    write.events.push(super::record::StoredEvent {
        run_id: run_id.to_owned(),
        seq: state.last_seq + 1,
        event: cancelled_event(&run),
    });
    storage.write_durable(write).await?;
    super::log::notify(run_id);
    Ok(run)
}

fn cancelled_event(run: &DurableRun) -> crate::run::RunEvent {
    let mut event = crate::run::RunEvent::new(crate::run::RunEventKind::RunCancelled);
    event.run_id = Some(run.run_id.clone());
    event.source_run_id = Some(run.run_id.clone());
    event.session_id = Some(run.session_id.clone());
    event.workflow_id.clone_from(&run.workflow_id);
    event
}

/// A stored run a resume re-enters: checked, not yet taken over.
pub(crate) struct ResumeFrom {
    pub(crate) state: DurableState,
}

/// Loads run `run_id` and checks that workflow `workflow` at `version` may resume it.
pub(crate) async fn prepare_resume(
    storage: &dyn Storage,
    run_id: &str,
    workflow: &str,
    version: u32,
    options: &ResumeOptions,
) -> Result<ResumeFrom> {
    let state = load(storage, run_id).await?;
    let run = &state.run;
    if run.is_finished() || run.log_only {
        return Err(Error::Durable(DurableError::NotResumable {
            run_id: run_id.to_owned(),
            status: run.status,
        }));
    }
    if run.workflow != workflow {
        return Err(Error::Durable(DurableError::WrongWorkflow {
            run_id: run_id.to_owned(),
            recorded: run.workflow.clone(),
            asked: workflow.to_owned(),
        }));
    }
    if run.version != version && !options.allow_version_change {
        return Err(Error::Durable(DurableError::VersionMismatch {
            run_id: run_id.to_owned(),
            recorded: run.version,
            current: version,
        }));
    }
    Ok(ResumeFrom { state })
}

/// Whether a paused run should be resumed now: no wait is pending any more (all answered),
/// or a pending wait's deadline passed.
pub(crate) fn ready(state: &DurableState) -> bool {
    let now = now_millis();
    let waits = pending(&state.entries);
    waits.is_empty()
        || waits.iter().any(|entry| {
            entry
                .wait
                .as_ref()
                .and_then(|wait| wait.deadline)
                .is_some_and(|deadline| deadline <= now)
        })
}

/// The keys of the waits a stored run is blocked on.
pub(crate) fn waiting_keys(state: &DurableState) -> Vec<String> {
    pending(&state.entries)
        .into_iter()
        .map(|entry| entry.key.clone())
        .collect()
}
