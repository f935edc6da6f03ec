//! Rows to sessions and back: the JSON encoding shared by both backends.
//!
//! JSON columns are read as text and decoded here, so a bad value becomes
//! [`StorageError::Corrupt`] naming the session instead of a driver error.
//!
//! # NUL in Postgres
//!
//! Postgres `TEXT` refuses NUL bytes and `jsonb` refuses the escape `\u0000`, so
//! [`Text::EscapeNul`] (the Postgres backend's mode) stores every string, in text columns and
//! inside JSON (object keys included), with NUL written as [`ESCAPE`] `0` and [`ESCAPE`]
//! itself as [`ESCAPE`] [`ESCAPE`]; reads reverse it exactly. [`ESCAPE`] is U+FDD0, a Unicode
//! noncharacter ("permanently reserved for internal use"), so ordinary text practically never
//! contains it; when it does, it is escaped too, so every string round-trips. SQLite stores
//! NUL as it is ([`Text::Raw`]).

use std::borrow::Cow;

use buddy_core::StorageError;
use buddy_core::run::RunRecord;
use buddy_core::session::{Session, SessionKind};
use serde_json::{Map, Value};

/// The character that escapes NUL (and itself) in [`Text::EscapeNul`] mode: U+FDD0, a
/// Unicode noncharacter.
pub(crate) const ESCAPE: char = '\u{FDD0}';

/// How a backend stores strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    /// As they are (SQLite).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // Only the SQLite backend uses it.
    Raw,
    /// NUL escaped (Postgres); see the module docs.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    // Only the Postgres backend uses it.
    EscapeNul,
}

impl Text {
    /// `text` as stored.
    pub fn store<'a>(self, text: &'a str) -> Cow<'a, str> {
        if self == Text::Raw || !text.contains(['\0', ESCAPE]) {
            return Cow::Borrowed(text);
        }
        let mut stored = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            match c {
                '\0' => {
                    stored.push(ESCAPE);
                    stored.push('0');
                }
                ESCAPE => {
                    stored.push(ESCAPE);
                    stored.push(ESCAPE);
                }
                c => stored.push(c),
            }
        }
        Cow::Owned(stored)
    }

    /// An optional string as stored.
    pub fn store_opt(self, text: Option<&str>) -> Option<String> {
        text.map(|text| self.store(text).into_owned())
    }

    /// A stored string as it was written (an escape character not followed by `0` or by
    /// itself is kept as it is).
    pub fn load(self, text: String) -> String {
        if self == Text::Raw || !text.contains(ESCAPE) {
            return text;
        }
        let mut loaded = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                (ESCAPE, Some('0')) => {
                    chars.next();
                    loaded.push('\0');
                }
                (ESCAPE, Some(&ESCAPE)) => {
                    chars.next();
                    loaded.push(ESCAPE);
                }
                (c, _) => loaded.push(c),
            }
        }
        loaded
    }

    fn load_opt(self, text: Option<String>) -> Option<String> {
        text.map(|text| self.load(text))
    }

    /// Applies `f` to every string of `value`, object keys included.
    fn map_strings(value: &mut Value, f: &impl Fn(String) -> String) {
        match value {
            Value::String(text) => *text = f(std::mem::take(text)),
            Value::Array(items) => items.iter_mut().for_each(|item| Self::map_strings(item, f)),
            Value::Object(map) => {
                for (key, mut item) in std::mem::take(map) {
                    Self::map_strings(&mut item, f);
                    map.insert(f(key), item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Encodes `value` as stored JSON text.
    fn encode_json<T: serde::Serialize + ?Sized>(
        self,
        session_id: &str,
        value: &T,
    ) -> Result<String, StorageError> {
        self.encode(value).map_err(|source| StorageError::Encode {
            session_id: session_id.to_owned(),
            source,
        })
    }

    /// Encodes `value` as stored JSON text; the error is serde's.
    pub(crate) fn encode<T: serde::Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<String, serde_json::Error> {
        let text = serde_json::to_string(value)?;
        // `\u0000` is how serde_json writes NUL; a false match (an escaped backslash before
        // `u0000`) only costs the slower path below.
        if self == Text::Raw || !(text.contains("\\u0000") || text.contains(ESCAPE)) {
            return Ok(text);
        }
        let mut value = serde_json::to_value(value)?;
        Self::map_strings(&mut value, &|text| self.store(&text).into_owned());
        serde_json::to_string(&value)
    }

    /// Decodes stored JSON text.
    fn decode_json(
        self,
        session_id: &str,
        what: &'static str,
        text: &str,
    ) -> Result<Value, StorageError> {
        self.decode(text)
            .map_err(|error| corrupt(session_id, what, error))
    }

    /// Decodes stored JSON text into a `T`; the error is serde's.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        self,
        text: &str,
    ) -> Result<T, serde_json::Error> {
        if self == Text::Raw || !text.contains(ESCAPE) {
            return serde_json::from_str(text);
        }
        let mut value: Value = serde_json::from_str(text)?;
        Self::map_strings(&mut value, &|text| self.load(text));
        serde_json::from_value(value)
    }
}

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
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub version: Option<i64>,
    pub run_count: Option<i64>,
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

fn corrupt(
    session_id: &str,
    what: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StorageError {
    StorageError::Corrupt {
        session_id: session_id.to_owned(),
        what,
        source: source.into(),
    }
}

/// A column that must hold a value: NULL is [`StorageError::Corrupt`].
fn required<T>(session_id: &str, what: &'static str, value: Option<T>) -> Result<T, StorageError> {
    value.ok_or_else(|| corrupt(session_id, what, format!("`{what}` is NULL")))
}

/// A JSON column that must hold an object (NULL only where `nullable`).
fn object(
    text_mode: Text,
    session_id: &str,
    what: &'static str,
    text: Option<&str>,
) -> Result<Option<Map<String, Value>>, StorageError> {
    let Some(text) = text else {
        return Ok(None);
    };
    match text_mode.decode_json(session_id, what, text)? {
        Value::Object(map) => Ok(Some(map)),
        other => Err(corrupt(
            session_id,
            what,
            format!("expected a JSON object, found {}", json_type(&other)),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl SessionRow {
    /// [`into_session`](Self::into_session), with the row's JSON columns as stored (`None`
    /// if one that must hold a value is NULL, in which case decoding fails anyway).
    pub fn into_session_stored(
        self,
        text: Text,
    ) -> Result<(Session, Option<EncodedSession>), StorageError> {
        let stored = match (&self.component_data, &self.session_state) {
            (Some(component_data), Some(session_state)) => Some(EncodedSession {
                component_data: component_data.clone(),
                session_state: session_state.clone(),
                extra_data: self.extra_data.clone(),
            }),
            _ => None,
        };
        Ok((self.into_session(text)?, stored))
    }

    /// Decodes the row; a malformed JSON column, an unknown kind or a NULL where a value is
    /// required is [`StorageError::Corrupt`].
    pub fn into_session(self, text: Text) -> Result<Session, StorageError> {
        let session_id = text.load(self.session_id);
        let id = session_id.as_str();
        let kind = SessionKind::parse(&self.kind).ok_or_else(|| StorageError::Corrupt {
            session_id: id.to_owned(),
            what: "kind",
            source: format!("unknown session kind `{}`", self.kind).into(),
        })?;
        let component_data = required(
            id,
            "component_data",
            object(text, id, "component_data", self.component_data.as_deref())?,
        )?;
        let session_state = required(
            id,
            "session_state",
            object(text, id, "session_state", self.session_state.as_deref())?,
        )?;
        let extra_data = object(text, id, "extra_data", self.extra_data.as_deref())?;
        Ok(Session {
            kind,
            scope: text.load(self.scope),
            component_id: text.load_opt(self.component_id),
            user_id: text.load_opt(self.user_id),
            session_name: text.load_opt(self.session_name),
            component_data,
            session_state,
            extra_data,
            created_at: required(id, "created_at", self.created_at)?,
            updated_at: required(id, "updated_at", self.updated_at)?,
            version: required(id, "version", self.version)?,
            run_count: required(id, "run_count", self.run_count)?,
            runs: Vec::new(),
            session_id,
        })
    }
}

/// Checks, at commit, that the session's `run_count` is not below its stored history
/// (`max_seq`, the highest `seq` of its runs): the next run is stored with `seq` =
/// `run_count + 1`, which would otherwise collide with a stored run on every later commit.
///
/// The alternative, numbering the run `max(seq) + 1` whatever `run_count` says, would keep
/// the write atomic too, but would silently repair a row that something else broke, and
/// leave `run_count` saying fewer runs than are stored; like every other corrupt column, a
/// broken count is reported (naming the session and `run_count`) and nothing is written, so
/// the caller can repair the row. Either way a broken count never turns into a primary-key
/// error.
pub(crate) fn check_run_count(session: &Session, max_seq: Option<i64>) -> Result<(), StorageError> {
    match max_seq {
        Some(max_seq) if max_seq > session.run_count => Err(corrupt(
            &session.session_id,
            "run_count",
            format!(
                "run_count {} is below the stored history (runs up to seq {max_seq})",
                session.run_count
            ),
        )),
        _ => Ok(()),
    }
}

/// A session's JSON columns, encoded for binding.
#[derive(Clone)]
pub(crate) struct EncodedSession {
    pub component_data: String,
    pub session_state: String,
    pub extra_data: Option<String>,
}

impl EncodedSession {
    /// Encodes the JSON columns of `session`.
    pub fn new(session: &Session, text: Text) -> Result<Self, StorageError> {
        let id = session.session_id.as_str();
        Ok(EncodedSession {
            component_data: text.encode_json(id, &session.component_data)?,
            session_state: text.encode_json(id, &session.session_state)?,
            extra_data: session
                .extra_data
                .as_ref()
                .map(|extra| text.encode_json(id, extra))
                .transpose()?,
        })
    }
}

/// Encodes a run record for the `record` column.
pub(crate) fn encode_run(
    text: Text,
    session_id: &str,
    run: &RunRecord,
) -> Result<String, StorageError> {
    text.encode_json(session_id, run)
}

/// Decodes a JSON array of stored run records (`None`: no runs), as a query that aggregates
/// them returns it; any element that [`decode_run`] refuses (`null` for a NULL record), or
/// text that is not an array, is [`StorageError::Corrupt`] naming the session.
#[cfg(feature = "sqlite")]
pub(crate) fn decode_runs(
    text: Text,
    session_id: &str,
    records: Option<&str>,
) -> Result<Vec<RunRecord>, StorageError> {
    let Some(records) = records else {
        return Ok(Vec::new());
    };
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(records).map_err(|error| corrupt(session_id, "run record", error))?;
    items
        .into_iter()
        .map(|item| decode_run(text, session_id, Some(item.get())))
        .collect()
}

/// Decodes a stored run record (`None` for a NULL column); unknown fields (from a newer
/// version) are ignored. A NULL, anything but a JSON object, or an object without a string
/// `run_id` is [`StorageError::Corrupt`] naming the session.
pub(crate) fn decode_run(
    text: Text,
    session_id: &str,
    record: Option<&str>,
) -> Result<RunRecord, StorageError> {
    const WHAT: &str = "run record";
    let record = required(session_id, WHAT, record)?;
    // The common case in one pass: an object that decodes straight into a record with a
    // run id (and no escapes to undo). Anything else takes the checking path below, which
    // names what is wrong.
    if record.trim_start().starts_with('{')
        && (text == Text::Raw || !record.contains(ESCAPE))
        && let Ok(run) = serde_json::from_str::<RunRecord>(record)
        && !run.run_id.is_empty()
    {
        return Ok(run);
    }
    let value = text.decode_json(session_id, WHAT, record)?;
    match &value {
        Value::Object(map) if map.get("run_id").is_some_and(Value::is_string) => {}
        Value::Object(_) => {
            return Err(corrupt(session_id, WHAT, "the run record has no `run_id`"));
        }
        other => {
            return Err(corrupt(
                session_id,
                WHAT,
                format!("expected a JSON object, found {}", json_type(other)),
            ));
        }
    }
    serde_json::from_value(value).map_err(|error| corrupt(session_id, WHAT, error))
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
            corrupt(session_id, "row", error)
        }
        error => crate::error::database(operation, error),
    }
}

/// For `list_sessions`: a session that decoded, or `None` for a corrupt row, which is
/// reported (a `tracing` warning naming the session and what is bad) and skipped so that one
/// bad row does not hide every other session. Any other error is returned.
pub(crate) fn skip_corrupt(
    decoded: Result<Session, StorageError>,
) -> Result<Option<Session>, StorageError> {
    match decoded {
        Ok(session) => Ok(Some(session)),
        Err(StorageError::Corrupt {
            session_id,
            what,
            source,
        }) => {
            tracing::warn!(
                session_id = %session_id,
                what,
                error = %source,
                "skipping a corrupt stored session while listing sessions"
            );
            Ok(None)
        }
        Err(error) => Err(error),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escape_round_trips_and_leaves_other_text_alone() {
        let text = Text::EscapeNul;
        for original in [
            "",
            "plain",
            "\0",
            "a\0b\0\0",
            "\u{FDD0}",
            "\u{FDD0}0",
            "\u{FDD0}\u{FDD0}0\0\u{FDD0}",
            "\\u0000",
        ] {
            let stored = text.store(original);
            assert!(!stored.contains('\0'), "{original:?} stored as {stored:?}");
            assert_eq!(text.load(stored.into_owned()), original);
            assert_eq!(Text::Raw.store(original), original);
        }
        assert!(matches!(text.store("plain"), Cow::Borrowed(_)));
        // An escape character not written by the escaping is read as it is.
        assert_eq!(
            text.load("x\u{FDD0}y\u{FDD0}".to_owned()),
            "x\u{FDD0}y\u{FDD0}"
        );
    }

    #[test]
    fn nul_escape_covers_json_strings_and_keys() {
        let text = Text::EscapeNul;
        let value = serde_json::json!({"k\u{0}": ["\u{0}", {"\u{FDD0}": "\\u0000"}], "n": 1.5});
        let stored = text.encode_json("s", &value).ok();
        let stored = stored.as_deref().unwrap_or_default();
        // No JSON escape of NUL is left once escaped backslashes are removed.
        assert!(!stored.replace("\\\\", "").contains("\\u0000"), "{stored}");
        let loaded = text.decode_json("s", "state", stored).ok();
        assert_eq!(loaded, Some(value));
    }
}
