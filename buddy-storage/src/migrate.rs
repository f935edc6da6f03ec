//! The v1 layout and its conversion to the current one.
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
//! Every write rewrote `memory`, so a write cost grew with the history. `upgrade_schema`
//! converts such a table in place, in one transaction: the new columns are added, each run
//! of `memory.runs` becomes a row of `{table}_runs` (in order), and the v1-only columns are
//! dropped. A row that does not decode aborts the upgrade with [`StorageError::Corrupt`] and
//! leaves the table as it was.

use buddy_core::StorageError;
use buddy_core::run::{RunRecord, RunResponse, RunStatus};
use buddy_core::session::{Session, SessionKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::codec::to_millis;

/// A column only the v1 layout has; its presence marks a v1 table.
pub(crate) const V1_MARKER_COLUMN: &str = "memory";

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
            });
        }
        let created_at = to_millis(self.created_at.unwrap_or(0));
        let session = Session {
            session_id: self.session_id.clone(),
            kind: SessionKind::Workflow,
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
