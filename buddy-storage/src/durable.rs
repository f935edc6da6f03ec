//! Durable runs in SQL, shared by both backends: the tables' names, a write's values as the
//! statements bind them, the checks a write must pass (in the order of the in-memory
//! reference), and stored rows back to runs, entries and events.
//!
//! # Tables
//!
//! Named after the sessions table `{table}`:
//!
//! - `{table}_durable_runs`: one row per run, `run_id` the primary key; the columns the
//!   listing, the fence and pruning read (`workflow`, `status`, `attempt`, `session_id`,
//!   `created_at`, `updated_at`, `ended_at`), and the whole [`DurableRun`] as JSON in
//!   `record`, which is what reads return;
//! - `{table}_journal`: one row per journal entry, primary key `(run_id, key)`; `position`,
//!   `kind`, `status`, `updated_at`, and the whole [`JournalEntry`] as JSON in `record`;
//! - `{table}_events`: the event log, primary key `(run_id, seq)`, the [`RunEvent`] as JSON
//!   in `event`.
//!
//! A name that would not fit in 63 characters is shortened the way index names are (see
//! [`ident::index_name`]). Durable runs are not tied to sessions: deleting a session keeps
//! the runs that wrote it; [`prune`](buddy_core::storage::Storage::prune_durable) and
//! `drop_tables` remove them.
//!
//! [`RunEvent`]: buddy_core::run::RunEvent

use std::collections::HashMap;

use buddy_core::durable::{
    DurableQuery, DurableRun, DurableWrite, EntryStatus, Fence, JournalEntry, StoredEvent,
    check_fence,
};
use buddy_core::run::{RunEvent, RunStatus};
use buddy_core::{StorageError, StorageErrorKind};
use serde::Deserialize;
#[cfg(feature = "sqlite")]
use serde_json::value::RawValue;

use crate::codec::Text;
use crate::ident::index_name;

/// The operation named in errors of [`Storage::write_durable`](buddy_core::storage::Storage::write_durable).
pub(crate) const WRITE: &str = "write_durable";

/// The names of the durable tables and indexes of sessions table `table` (unquoted).
pub(crate) struct Names {
    pub runs: String,
    pub journal: String,
    pub events: String,
    /// The index `durable_runs` lists by.
    pub list_idx: String,
    /// The index pruning finds ended runs by.
    pub ended_idx: String,
}

impl Names {
    pub fn of(table: &str) -> Self {
        Names {
            runs: index_name(table, "durable_runs"),
            journal: index_name(table, "journal"),
            events: index_name(table, "events"),
            list_idx: index_name(table, "durable_list_idx"),
            ended_idx: index_name(table, "durable_ended_idx"),
        }
    }
}

/// The statuses of a run that has ended, as stored, for SQL: what
/// [`DurableRun::is_finished`] says.
pub(crate) fn finished_statuses() -> String {
    [RunStatus::Completed, RunStatus::Error, RunStatus::Cancelled]
        .map(|status| format!("'{}'", status.as_str()))
        .join(", ")
}

/// A run's row as bound: its columns, and the whole row as JSON.
pub(crate) struct EncodedRun {
    pub workflow: String,
    pub status: &'static str,
    pub attempt: i64,
    pub session_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    pub record: String,
}

/// A journal entry as bound.
pub(crate) struct EncodedEntry {
    pub key: String,
    pub position: i64,
    pub kind: &'static str,
    pub status: String,
    pub updated_at: i64,
    pub record: String,
}

/// A [`DurableWrite`]'s values as the statements bind them, every string as `text` stores
/// it.
pub(crate) struct EncodedWrite {
    pub run_id: String,
    pub run: Option<EncodedRun>,
    /// At most one per key: the last of the write's entries of that key, as the reference
    /// keeps it.
    pub entries: Vec<EncodedEntry>,
    /// `(seq, event)`.
    pub events: Vec<(i64, String)>,
}

impl EncodedWrite {
    pub fn new(text: Text, write: &DurableWrite) -> Result<Self, StorageError> {
        let label = encode_label(write);
        let encode_error = |source| StorageError::Encode {
            session_id: label.clone(),
            source,
        };
        let run = write
            .run
            .as_ref()
            .map(|run| -> Result<EncodedRun, StorageError> {
                Ok(EncodedRun {
                    workflow: text.store(&run.workflow).into_owned(),
                    status: run.status.as_str(),
                    attempt: i64::from(run.attempt),
                    session_id: text.store(&run.session_id).into_owned(),
                    created_at: run.created_at,
                    updated_at: run.updated_at,
                    ended_at: run.ended_at,
                    record: text.encode(run).map_err(encode_error)?,
                })
            })
            .transpose()?;
        // The last entry of each key wins; a statement may not touch one row twice.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(write.entries.len());
        for (index, entry) in write.entries.iter().enumerate() {
            last.insert(entry.key.as_str(), index);
        }
        let mut entries = Vec::with_capacity(last.len());
        for (index, entry) in write.entries.iter().enumerate() {
            if last.get(entry.key.as_str()) != Some(&index) {
                continue;
            }
            entries.push(EncodedEntry {
                key: text.store(&entry.key).into_owned(),
                position: i64::from(entry.position),
                kind: entry.kind.as_str(),
                status: entry_status(entry.status),
                updated_at: entry.updated_at,
                record: text.encode(entry).map_err(encode_error)?,
            });
        }
        let mut events = Vec::with_capacity(write.events.len());
        for event in &write.events {
            let seq = i64::try_from(event.seq).map_err(|_| {
                encode_error(serde::ser::Error::custom(format!(
                    "event sequence number {} is above the largest a database stores",
                    event.seq
                )))
            })?;
            events.push((seq, text.encode(&event.event).map_err(encode_error)?));
        }
        Ok(EncodedWrite {
            run_id: text.store(&write.run_id).into_owned(),
            run,
            entries,
            events,
        })
    }

    /// The entries as one JSON array of `[key, position, kind, status, updated_at,
    /// record]` (SQLite inserts them with `json_each`).
    #[cfg(feature = "sqlite")]
    pub fn entries_json(&self) -> String {
        let rows: Vec<(&str, i64, &str, &str, i64, &str)> = self
            .entries
            .iter()
            .map(|entry| {
                (
                    entry.key.as_str(),
                    entry.position,
                    entry.kind,
                    entry.status.as_str(),
                    entry.updated_at,
                    entry.record.as_str(),
                )
            })
            .collect();
        // Strings and integers only: serializing cannot fail.
        serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The events as one JSON array of `[seq, event]`.
    #[cfg(feature = "sqlite")]
    pub fn events_json(&self) -> String {
        serde_json::to_string(&self.events).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// What an encoding error names: the run's session when the write says which it is (an
/// [`Encode`](StorageError::Encode) error names a session), else the run.
fn encode_label(write: &DurableWrite) -> String {
    write
        .run
        .as_ref()
        .map(|run| run.session_id.clone())
        .or_else(|| write.session.as_ref().map(|s| s.session_id.clone()))
        .unwrap_or_else(|| write.run_id.clone())
}

/// An entry's status as stored (`done`, `pending`, ...).
fn entry_status(status: EntryStatus) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "unknown".to_owned(),
    }
}

/// The stored run's `attempt` and `status` columns, as the fence compares them.
pub(crate) struct StoredFence {
    pub attempt: i64,
    pub status: String,
}

impl StoredFence {
    /// The stored row as [`check_fence`] reads it (only `attempt` and `status` matter). An
    /// attempt out of range is [`StorageError::CorruptRun`].
    fn as_run(&self, run_id: &str) -> Result<DurableRun, StorageError> {
        let attempt =
            u32::try_from(self.attempt).map_err(|error| corrupt(run_id, "attempt", error))?;
        let status = serde_json::from_value(serde_json::Value::String(self.status.clone()))
            .unwrap_or(RunStatus::Unknown);
        Ok(DurableRun {
            attempt,
            status,
            ..DurableRun::default()
        })
    }
}

/// Checks a write against the stored run, the in-memory reference's rules in its order:
/// the fence ([`check_fence`]), then the events' sequence numbers against `last_seq` (when
/// it is known: `None` leaves the comparison with the stored log to the statement), then
/// that the run exists or the write brings its row.
pub(crate) fn check(
    write: &DurableWrite,
    stored: Option<&StoredFence>,
    last_seq: Option<u64>,
) -> Result<(), StorageError> {
    if let Some(fence) = write.fence {
        check_write_fence(&write.run_id, fence, stored)?;
    }
    let last = match (stored, last_seq) {
        (_, Some(last)) => Some(last),
        // No row: the reference has no log for the run either.
        (None, None) => Some(0),
        (Some(_), None) => None,
    };
    check_events(&write.run_id, &write.events, last)?;
    if stored.is_none() && write.run.is_none() {
        return Err(StorageError::Fenced {
            run_id: write.run_id.clone(),
            what: "no such run".into(),
        });
    }
    Ok(())
}

fn check_write_fence(
    run_id: &str,
    fence: Fence,
    stored: Option<&StoredFence>,
) -> Result<(), StorageError> {
    let run = stored.map(|stored| stored.as_run(run_id)).transpose()?;
    check_fence(run_id, fence, run.as_ref())
}

/// Checks that `events` continue a log whose last sequence number is `last` (when `None`,
/// only that they follow each other).
pub(crate) fn check_events(
    run_id: &str,
    events: &[StoredEvent],
    last: Option<u64>,
) -> Result<(), StorageError> {
    let mut expected = last;
    for event in events {
        match expected {
            Some(previous) if previous.checked_add(1) != Some(event.seq) => {
                return Err(out_of_order(run_id, event.seq, previous));
            }
            _ => expected = Some(event.seq),
        }
    }
    Ok(())
}

/// The conflict of an event that does not follow event `previous`.
pub(crate) fn out_of_order(run_id: &str, seq: u64, previous: u64) -> StorageError {
    StorageError::database_with_kind(
        WRITE,
        StorageErrorKind::Conflict,
        format!("event {seq} of run `{run_id}` does not follow event {previous}"),
    )
}

/// The stored log's last sequence number the write's events must follow (`None` without
/// events).
pub(crate) fn expected_last(write: &DurableWrite) -> Option<i64> {
    write
        .events
        .first()
        .and_then(|event| i64::try_from(event.seq.saturating_sub(1)).ok())
}

/// A stored sequence number (never negative when this crate wrote it).
pub(crate) fn stored_seq(run_id: &str, seq: Option<i64>) -> Result<u64, StorageError> {
    match seq {
        None => Ok(0),
        Some(seq) => {
            u64::try_from(seq).map_err(|error| corrupt(run_id, "event sequence number", error))
        }
    }
}

pub(crate) fn corrupt(
    run_id: &str,
    what: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StorageError {
    StorageError::CorruptRun {
        run_id: run_id.to_owned(),
        what: what.into(),
        source: source.into(),
    }
}

/// Decodes a run's `record` (`None` for NULL). Anything but a JSON object with a string
/// `run_id` that decodes into a [`DurableRun`] is corrupt (serde alone would take `[]` or
/// `{}` for a run with every field at its default).
pub(crate) fn decode_run(
    text: Text,
    run_id: &str,
    record: Option<&str>,
) -> Result<DurableRun, StorageError> {
    const WHAT: &str = "run row";
    let record = record.ok_or_else(|| corrupt(run_id, WHAT, "`record` is NULL"))?;
    let run: DurableRun =
        decode_object(text, record).map_err(|error| corrupt(run_id, WHAT, error))?;
    if run.run_id.is_empty() && !has_string(record, "run_id") {
        return Err(corrupt(run_id, WHAT, "the run has no `run_id`"));
    }
    Ok(run)
}

/// Decodes a journal entry's `record`: a JSON object with a string `key` that decodes into
/// a [`JournalEntry`]; the error names the entry's key when it can.
pub(crate) fn decode_entry(
    text: Text,
    run_id: &str,
    record: &str,
) -> Result<JournalEntry, StorageError> {
    let what = || {
        let key = serde_json::from_str::<KeyOnly>(record)
            .map(|entry| format!(" `{}`", text.load(entry.key)))
            .unwrap_or_default();
        format!("journal entry{key}")
    };
    let entry: JournalEntry =
        decode_object(text, record).map_err(|error| corrupt(run_id, what(), error))?;
    if entry.key.is_empty() && !has_string(record, "key") {
        return Err(corrupt(run_id, what(), "the entry has no `key`"));
    }
    Ok(entry)
}

/// Decodes `record` if it is a JSON object.
fn decode_object<T: serde::de::DeserializeOwned>(
    text: Text,
    record: &str,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    if !record.trim_start().starts_with('{') {
        return Err("expected a JSON object".into());
    }
    Ok(text.decode(record)?)
}

/// Whether the JSON object `record` has a string `field` (only asked when the decoded value
/// has it empty).
fn has_string(record: &str, field: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(record)
        .is_ok_and(|map| map.get(field).is_some_and(serde_json::Value::is_string))
}

#[derive(Deserialize)]
struct KeyOnly {
    key: String,
}

/// Decodes a JSON array of journal records, as SQLite aggregates them (`None`: no entries).
#[cfg(feature = "sqlite")]
pub(crate) fn decode_entries(
    text: Text,
    run_id: &str,
    records: Option<&str>,
) -> Result<Vec<JournalEntry>, StorageError> {
    let Some(records) = records else {
        return Ok(Vec::new());
    };
    let items: Vec<&RawValue> =
        serde_json::from_str(records).map_err(|error| corrupt(run_id, "journal", error))?;
    items
        .into_iter()
        .map(|item| decode_entry(text, run_id, item.get()))
        .collect()
}

/// Decodes an event (`None` for NULL); the error names its sequence number.
pub(crate) fn decode_event(
    text: Text,
    run_id: &str,
    seq: u64,
    event: Option<&str>,
) -> Result<StoredEvent, StorageError> {
    let what = || format!("event {seq}");
    let event = event.ok_or_else(|| corrupt(run_id, what(), "`event` is NULL"))?;
    let event: RunEvent = text
        .decode(event)
        .map_err(|error| corrupt(run_id, what(), error))?;
    Ok(StoredEvent {
        run_id: run_id.to_owned(),
        seq,
        event,
    })
}

/// Decodes a JSON array of `[seq, event]`, as SQLite aggregates a page of the log (`None`:
/// no events).
#[cfg(feature = "sqlite")]
pub(crate) fn decode_events(
    text: Text,
    run_id: &str,
    events: Option<&str>,
) -> Result<Vec<StoredEvent>, StorageError> {
    let Some(events) = events else {
        return Ok(Vec::new());
    };
    let items: Vec<(u64, &RawValue)> =
        serde_json::from_str(events).map_err(|error| corrupt(run_id, "event log", error))?;
    items
        .into_iter()
        .map(|(seq, event)| {
            let event = (event.get() != "null").then(|| event.get());
            decode_event(text, run_id, seq, event)
        })
        .collect()
}

/// For `durable_runs`: a run that decoded, or `None` for a corrupt row, which is reported
/// (a `tracing` warning naming the run and what is bad) and skipped, as
/// [`list_sessions`](buddy_core::storage::Storage::list_sessions) skips a corrupt session:
/// one bad row must not keep every other run from being found (and resumed). Loading that
/// run by its id still fails.
pub(crate) fn skip_corrupt(
    decoded: Result<DurableRun, StorageError>,
) -> Result<Option<DurableRun>, StorageError> {
    match decoded {
        Ok(run) => Ok(Some(run)),
        Err(StorageError::CorruptRun {
            run_id,
            what,
            source,
        }) => {
            tracing::warn!(
                run_id = %run_id,
                what = %what,
                error = %source,
                "skipping a corrupt stored durable run while listing durable runs"
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The statuses of `query` as stored, `None` for any.
pub(crate) fn query_statuses(query: &DurableQuery) -> Option<Vec<&'static str>> {
    (!query.statuses.is_empty()).then(|| query.statuses.iter().map(|s| s.as_str()).collect())
}

/// A sequence number for SQL (saturating: nothing is stored above `i64::MAX`).
pub(crate) fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
