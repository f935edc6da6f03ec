//! Older table layouts and their conversion to the current one (v3).
//!
//! # v1
//!
//! Version 1 (the layout of the Python original) kept one row per session with everything in
//! JSON columns, the whole run history included:
//!
//! ```sql
//! CREATE TABLE workflows (
//!     session_id    TEXT PRIMARY KEY,
//!     workflow_id   TEXT,
//!     user_id       TEXT,
//!     memory        JSON,   -- {"runs": [{"input": {...}, "response": {...}}, ...]}
//!     workflow_data JSON,   -- the workflow's own data (name, description, ...)
//!     session_data  JSON,   -- {"session_name": ..., "session_state": {...}}
//!     extra_data    JSON,
//!     created_at    BIGINT, -- Unix seconds
//!     updated_at    BIGINT  -- Unix seconds
//! );
//! ```
//!
//! Every write rewrote `memory`, so a write cost grew with the history. The upgrade adds the
//! v2 columns, turns each run of `memory.runs` into a row of `{table}_runs` (in order), drops
//! the v1-only columns, and goes on with the v2 upgrade below.
//!
//! # v2
//!
//! Version 2 had today's columns and runs table, but keyed sessions by `session_id` alone
//! (runs by `(session_id, seq)`), so a workflow and a member given the workflow's session id
//! overwrote each other's row. The upgrade keys sessions by `(session_id, kind, scope)` and
//! runs by `(session_id, kind, scope, seq)`; existing rows get scope `''` and keep their kind.
//! SQLite cannot change a primary key, so there the tables are rebuilt (new tables, copy,
//! drop, rename); Postgres adds the columns and replaces the constraints.
//!
//! # Guarantees
//!
//! [`upgrade_schema`](buddy_core::storage::Storage::upgrade_schema) runs the whole upgrade,
//! from whichever old layout it finds, in one transaction. Every old row is decoded first: a
//! row that does not decode aborts the upgrade with [`StorageError::Corrupt`] and leaves the
//! tables as they were. A store that finds an old layout on first use refuses to work on it
//! and says to call `upgrade_schema()`.

use buddy_core::StorageError;
use buddy_core::run::{RunRecord, RunResponse, RunStatus};
use buddy_core::session::{Session, SessionKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use std::collections::HashSet;

use crate::codec::{Text, decode_run, to_millis};

/// A column only the v1 layout has; its presence marks a v1 table.
const V1_MARKER_COLUMN: &str = "memory";

/// A column the v2 layout lacks; its absence (in an existing table) marks a v2 table.
const V3_MARKER_COLUMN: &str = "scope";

/// The layout of an existing sessions table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// No table yet.
    Missing,
    /// One JSON `memory` column holding every run.
    V1,
    /// Sessions keyed by `session_id` alone.
    V2,
    /// The current layout.
    Current,
}

impl Layout {
    /// The layout of a sessions table with `columns` (empty when there is no table).
    pub fn of(columns: &[String]) -> Layout {
        if columns.is_empty() {
            Layout::Missing
        } else if columns.iter().any(|c| c == V1_MARKER_COLUMN) {
            Layout::V1
        } else if columns.iter().any(|c| c == V3_MARKER_COLUMN) {
            Layout::Current
        } else {
            Layout::V2
        }
    }

    /// Whether the table must be upgraded before use.
    pub fn is_old(self) -> bool {
        matches!(self, Layout::V1 | Layout::V2)
    }

    /// The error of a store that finds this old layout on first use.
    pub fn needs_upgrade(self, table: &str) -> StorageError {
        let layout = match self {
            Layout::V1 => "the v1 layout (all runs in one `memory` column)",
            _ => "the v2 layout (sessions keyed by session id only)",
        };
        StorageError::database(
            "create",
            format!("table `{table}` has {layout}; call `upgrade_schema()` to convert it"),
        )
    }
}

/// The columns a v1 row is read with.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct V1Row {
    pub session_id: String,
    pub workflow_id: Option<String>,
    pub user_id: Option<String>,
    pub memory: Option<String>,
    pub workflow_data: Option<String>,
    pub session_data: Option<String>,
    pub extra_data: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct V1Memory {
    runs: Vec<Value>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct V1SessionData {
    session_name: Option<String>,
    session_state: Map<String, Value>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct V1Run {
    input: Value,
    response: RunResponse,
}

fn corrupt(session_id: &str, what: &'static str, source: serde_json::Error) -> StorageError {
    StorageError::Corrupt {
        session_id: session_id.to_owned(),
        what,
        source: Box::new(source),
    }
}

fn parse<T: serde::de::DeserializeOwned + Default>(
    session_id: &str,
    what: &'static str,
    text: Option<&str>,
) -> Result<T, StorageError> {
    match text {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str::<Option<T>>(text)
            .map(Option::unwrap_or_default)
            .map_err(|error| corrupt(session_id, what, error)),
    }
}

impl V1Row {
    /// The session (with `run_count` set) and its runs, oldest first.
    pub fn convert(self) -> Result<(Session, Vec<RunRecord>), StorageError> {
        let id = self.session_id.as_str();
        let memory: V1Memory = parse(id, "memory", self.memory.as_deref())?;
        let data: V1SessionData = parse(id, "session_data", self.session_data.as_deref())?;
        let component_data: Map<String, Value> =
            parse(id, "workflow_data", self.workflow_data.as_deref())?;
        let extra_data: Option<Map<String, Value>> =
            parse(id, "extra_data", self.extra_data.as_deref())?;
        let mut runs = Vec::with_capacity(memory.runs.len());
        for (index, run) in memory.runs.into_iter().enumerate() {
            let run: V1Run =
                serde_json::from_value(run).map_err(|error| corrupt(id, "memory run", error))?;
            let run_id = run
                .response
                .run_id
                .clone()
                .unwrap_or_else(|| format!("{id}-v1-{}", index + 1));
            runs.push(RunRecord {
                run_id,
                session_id: self.session_id.clone(),
                status: RunStatus::Completed,
                input: run.input,
                created_at: to_millis(run.response.created_at),
                response: run.response,
                error: None,
                ended_at: None,
                duration_ms: None,
            });
        }
        let created_at = to_millis(self.created_at.unwrap_or(0));
        let session = Session {
            session_id: self.session_id.clone(),
            kind: SessionKind::Workflow,
            scope: String::new(),
            component_id: self.workflow_id,
            user_id: self.user_id,
            session_name: data.session_name,
            component_data,
            session_state: data.session_state,
            extra_data,
            created_at,
            updated_at: to_millis(self.updated_at.unwrap_or(0)).max(created_at),
            version: 1,
            run_count: i64::try_from(runs.len()).unwrap_or(i64::MAX),
            runs: Vec::new(),
        };
        Ok((session, runs))
    }
}

/// Checks a v2 run row before the upgrade copies it: its record decodes and its session
/// exists (the v3 runs table references the session by its full key).
pub(crate) fn check_v2_run(
    sessions: &HashSet<String>,
    session_id: &str,
    record: &str,
) -> Result<(), StorageError> {
    decode_run(Text::Raw, session_id, Some(record))?;
    if sessions.contains(session_id) {
        Ok(())
    } else {
        Err(StorageError::Corrupt {
            session_id: session_id.to_owned(),
            what: "run without a session",
            source: "the runs table holds a run of a session that does not exist".into(),
        })
    }
}
