//! Rows to sessions and back: the JSON encoding shared by both backends.
//!
//! JSON columns are read as text and decoded here, so a bad value becomes
//! [`StorageError::Corrupt`] naming the session instead of a driver error.

use buddy_core::StorageError;
use buddy_core::run::RunRecord;
use buddy_core::session::{Session, SessionKind};
use serde_json::{Map, Value};

/// The columns of a session row, JSON still as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub session_id: String,
    pub kind: String,
    pub scope: String,
    pub component_id: Option<String>,
    pub user_id: Option<String>,
    pub session_name: Option<String>,
    pub component_data: Option<String>,
    pub session_state: Option<String>,
    pub extra_data: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub run_count: i64,
}

/// The column list every session `SELECT` uses, in [`SessionRow`] order (SQLite spelling:
/// the JSON columns are `TEXT` already).
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_SESSION_COLUMNS: &str = "session_id, kind, scope, component_id, \
    user_id, session_name, component_data, session_state, extra_data, created_at, updated_at, version, \
    run_count";

/// [`SQLITE_SESSION_COLUMNS`] for a table of the v2 layout, which has no `scope` (read as
/// `''`).
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_V2_SESSION_COLUMNS: &str = "session_id, kind, '' AS scope, \
    component_id, user_id, session_name, component_data, session_state, extra_data, created_at, \
    updated_at, version, run_count";

/// [`PG_SESSION_COLUMNS`] for a table of the v2 layout, which has no `scope` (read as `''`).
#[cfg(feature = "postgres")]
pub(crate) const PG_V2_SESSION_COLUMNS: &str = "session_id, kind, ''::text AS scope, \
    component_id, user_id, session_name, component_data::text AS component_data, \
    session_state::text AS session_state, extra_data::text AS extra_data, created_at, \
    updated_at, version, run_count";

/// The column list for Postgres, where the `jsonb` columns are cast to text.
#[cfg(feature = "postgres")]
pub(crate) const PG_SESSION_COLUMNS: &str = "session_id, kind, scope, component_id, user_id, \
    session_name, component_data::text AS component_data, session_state::text AS session_state, \
    extra_data::text AS extra_data, created_at, updated_at, version, run_count";

fn corrupt(session_id: &str, what: &'static str, source: serde_json::Error) -> StorageError {
    StorageError::Corrupt {
        session_id: session_id.to_owned(),
        what,
        source: Box::new(source),
    }
}

fn object(
    session_id: &str,
    what: &'static str,
    text: Option<&str>,
) -> Result<Option<Map<String, Value>>, StorageError> {
    match text {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|error| corrupt(session_id, what, error)),
    }
}

impl SessionRow {
    /// Decodes the row; a malformed JSON column or unknown kind is [`StorageError::Corrupt`].
    pub fn into_session(self) -> Result<Session, StorageError> {
        let id = self.session_id.as_str();
        let kind = SessionKind::parse(&self.kind).ok_or_else(|| StorageError::Corrupt {
            session_id: id.to_owned(),
            what: "kind",
            source: format!("unknown session kind `{}`", self.kind).into(),
        })?;
        let component_data =
            object(id, "component_data", self.component_data.as_deref())?.unwrap_or_default();
        let session_state =
            object(id, "session_state", self.session_state.as_deref())?.unwrap_or_default();
        let extra_data = object(id, "extra_data", self.extra_data.as_deref())?;
        Ok(Session {
            kind,
            scope: self.scope,
            component_id: self.component_id,
            user_id: self.user_id,
            session_name: self.session_name,
            component_data,
            session_state,
            extra_data,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            run_count: self.run_count,
            runs: Vec::new(),
            session_id: self.session_id,
        })
    }
}

/// A session's JSON columns, encoded for binding.
pub(crate) struct EncodedSession {
    pub component_data: String,
    pub session_state: String,
    pub extra_data: Option<String>,
}

fn encode<T: serde::Serialize + ?Sized>(
    session_id: &str,
    value: &T,
) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|source| StorageError::Encode {
        session_id: session_id.to_owned(),
        source,
    })
}

impl EncodedSession {
    /// Encodes the JSON columns of `session`.
    pub fn new(session: &Session) -> Result<Self, StorageError> {
        let id = session.session_id.as_str();
        Ok(EncodedSession {
            component_data: encode(id, &session.component_data)?,
            session_state: encode(id, &session.session_state)?,
            extra_data: session
                .extra_data
                .as_ref()
                .map(|extra| encode(id, extra))
                .transpose()?,
        })
    }
}

/// Encodes a run record for the `record` column.
pub(crate) fn encode_run(session_id: &str, run: &RunRecord) -> Result<String, StorageError> {
    encode(session_id, run)
}

/// Decodes a stored run record; unknown fields (from a newer version) are ignored.
pub(crate) fn decode_run(session_id: &str, text: &str) -> Result<RunRecord, StorageError> {
    serde_json::from_str(text).map_err(|error| corrupt(session_id, "run record", error))
}

/// Maps a driver error while decoding a row of `session_id` to `Corrupt`, any other error to
/// `Database`.
pub(crate) fn row_error(
    operation: &'static str,
    session_id: &str,
    error: sqlx::Error,
) -> StorageError {
    match error {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => {
            StorageError::Corrupt {
                session_id: session_id.to_owned(),
                what: "row",
                source: Box::new(error),
            }
        }
        error => crate::error::database(operation, error),
    }
}

/// Converts a Rust count to an SQL `LIMIT`, saturating.
pub(crate) fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(i64::MAX, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

/// Seconds or milliseconds since the epoch to milliseconds (the v1 schema stored seconds).
pub(crate) fn to_millis(timestamp: i64) -> i64 {
    // 100 billion seconds is the year 5138; any smaller value is a count of seconds.
    if timestamp != 0 && timestamp.abs() < 100_000_000_000 {
        timestamp.saturating_mul(1000)
    } else {
        timestamp
    }
}
