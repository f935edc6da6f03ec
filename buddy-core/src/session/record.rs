use std::cmp::Reverse;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::StatePatch;
use crate::run::RunRecord;

/// Which kind of component a session belongs to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A workflow session.
    #[default]
    Workflow,
    /// An agent session.
    Agent,
    /// A team session.
    Team,
}

impl SessionKind {
    /// The kind as stored (`workflow`, `agent`, `team`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Workflow => "workflow",
            SessionKind::Agent => "agent",
            SessionKind::Team => "team",
        }
    }

    /// Parses the stored form.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "workflow" => Some(SessionKind::Workflow),
            "agent" => Some(SessionKind::Agent),
            "team" => Some(SessionKind::Team),
            _ => None,
        }
    }
}

/// Where one stored session lives: its id, the kind of its owner, and the owner's scope.
///
/// A workflow hands its session id to its members, so one conversation is stored as several
/// sessions with the same id: the workflow's own (scope `""`), and one per member that
/// persists, under the member's path (`"researcher"`, `"writers/critic"`: the field names of
/// a workflow and the member ids of a team, joined with `/`). The key keeps them apart, so a
/// workflow and all its members can share one storage value without overwriting each other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionKey {
    /// The session's id.
    pub session_id: String,
    /// Which kind of component owns it.
    pub kind: SessionKind,
    /// The owner's member path inside the session (`""` for the top-level component).
    pub scope: String,
}

impl SessionKey {
    /// The key of a top-level session (scope `""`).
    pub fn new(session_id: impl Into<String>, kind: SessionKind) -> Self {
        SessionKey {
            session_id: session_id.into(),
            kind,
            scope: String::new(),
        }
    }

    /// The same key with `scope`.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// Whether the session `other` is this one or stored under it (same session id, and its
    /// scope below this one's): what [`Storage::delete_session`](crate::storage::Storage::delete_session)
    /// removes.
    pub fn covers(&self, other: &SessionKey) -> bool {
        if self.session_id != other.session_id {
            return false;
        }
        if self.kind == other.kind && self.scope == other.scope {
            return true;
        }
        if self.scope.is_empty() {
            return !other.scope.is_empty();
        }
        other
            .scope
            .strip_prefix(self.scope.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.scope.is_empty() {
            write!(f, "{} session `{}`", self.kind.as_str(), self.session_id)
        } else {
            write!(
                f,
                "{} session `{}` at `{}`",
                self.kind.as_str(),
                self.session_id,
                self.scope
            )
        }
    }
}

/// A persisted session: who it belongs to, its name and state, and (when read with runs) its
/// most recent runs.
///
/// `component_id` is the id of the workflow, agent or team that owns the session (serialised
/// as `component_id`; `workflow_id`, `agent_id` and `team_id` are accepted when reading).
/// Unknown keys are ignored, so sessions written by a newer version still load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// The session's id.
    pub session_id: String,
    /// Which kind of component owns it.
    pub kind: SessionKind,
    /// The owner's member path inside the session (`""` for a top-level component; see
    /// [`SessionKey`]).
    pub scope: String,
    /// The id of the workflow, agent or team that owns it.
    #[serde(alias = "workflow_id", alias = "agent_id", alias = "team_id")]
    pub component_id: Option<String>,
    /// The user the session belongs to.
    pub user_id: Option<String>,
    /// A human-readable name.
    pub session_name: Option<String>,
    /// The owner's own data (`name`, `description`, ...).
    pub component_data: Map<String, Value>,
    /// The session state.
    pub session_state: Map<String, Value>,
    /// Free-form data stored with the session.
    pub extra_data: Option<Map<String, Value>>,
    /// Unix milliseconds of the first write; never changes afterwards.
    pub created_at: i64,
    /// Unix milliseconds of the latest write.
    pub updated_at: i64,
    /// Incremented on every write.
    pub version: i64,
    /// How many runs the session has recorded in all.
    pub run_count: i64,
    /// The most recent runs, oldest first (only as many as were asked for).
    pub runs: Vec<RunRecord>,
}

impl Session {
    /// A new, empty session of `kind`.
    pub fn new(session_id: impl Into<String>, kind: SessionKind) -> Self {
        Session {
            session_id: session_id.into(),
            kind,
            ..Session::default()
        }
    }

    /// Where the session stands in a list ([`list_position`]): sorting by it gives the order
    /// every backend lists in.
    pub(crate) fn list_position(&self) -> (Reverse<i64>, Reverse<&str>, &'static str, &str) {
        list_position(self.updated_at, &self.session_id, self.kind, &self.scope)
    }

    /// The session's key.
    pub fn key(&self) -> SessionKey {
        SessionKey {
            session_id: self.session_id.clone(),
            kind: self.kind,
            scope: self.scope.clone(),
        }
    }

    /// Applies `write` to this session (or to a fresh one when `existing` is `None`), the way
    /// every backend must: stored identity wins where it is set, state changes are merged key
    /// by key, timestamps and counters advance. Backends call this inside their transaction.
    pub fn apply_write(existing: Option<Session>, write: &SessionWrite, now: i64) -> Session {
        let mut session = match existing {
            Some(existing) => existing,
            None => Session {
                session_id: write.session_id.clone(),
                kind: write.kind,
                scope: write.scope.clone(),
                created_at: now,
                ..Session::default()
            },
        };
        if session.component_id.is_none() {
            session.component_id = write.component_id.clone();
        }
        if session.user_id.is_none() {
            session.user_id = write.user_id.clone();
        }
        if let Some(name) = &write.session_name {
            session.session_name = Some(name.clone());
        }
        for (key, value) in &write.component_data {
            session.component_data.insert(key.clone(), value.clone());
        }
        write.state_patch.apply(&mut session.session_state);
        if let Some(extra) = &write.extra_data {
            let stored = session.extra_data.get_or_insert_with(Map::new);
            super::state::merge_overwrite(stored, extra);
        }
        session.updated_at = now.max(session.updated_at);
        session.version += 1;
        if write.run.is_some() {
            session.run_count += 1;
        }
        session.runs.clear();
        session
    }
}

/// One atomic write to a session: identity and metadata, the changes to its state, and
/// optionally one new run to append.
///
/// Backends apply a write in one transaction (see [`Session::apply_write`]): the stored state
/// receives only the keys this writer changed, so concurrent writers never revert each
/// other's keys, and the run is appended, never rewriting earlier runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionWrite {
    /// The session to write.
    pub session_id: String,
    /// Its owner's kind (part of the key).
    pub kind: SessionKind,
    /// Its owner's scope (part of the key; `""` for a top-level component).
    pub scope: String,
    /// The owner's id (kept if the stored session already has one).
    pub component_id: Option<String>,
    /// The user (kept if the stored session already has one).
    pub user_id: Option<String>,
    /// A new session name, if it changed.
    pub session_name: Option<String>,
    /// Owner data to set (`name`, `description`, ...).
    pub component_data: Map<String, Value>,
    /// The changes to the session state.
    pub state_patch: StatePatch,
    /// Extra data to merge into the stored extra data.
    pub extra_data: Option<Map<String, Value>>,
    /// A run to append to the session's history.
    pub run: Option<RunRecord>,
}

impl SessionWrite {
    /// An empty write (no changes) to the session `key`.
    pub fn new(key: SessionKey) -> Self {
        SessionWrite {
            session_id: key.session_id,
            kind: key.kind,
            scope: key.scope,
            ..SessionWrite::default()
        }
    }

    /// The key of the session written.
    pub fn key(&self) -> SessionKey {
        SessionKey {
            session_id: self.session_id.clone(),
            kind: self.kind,
            scope: self.scope.clone(),
        }
    }
}

/// Which sessions to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionQuery {
    /// Only sessions of this user.
    pub user_id: Option<String>,
    /// Only sessions of this workflow, agent or team id.
    pub component_id: Option<String>,
    /// Only sessions of this kind.
    pub kind: Option<SessionKind>,
    /// Only sessions with this scope (`Some("")`: top-level sessions only).
    pub scope: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
    /// Only sessions listed after this place: the next page after a page that ended there.
    pub after: Option<SessionCursor>,
}

/// A place in the order sessions are listed in (most recently updated first, then session
/// id descending, then kind and scope ascending, strings compared byte-wise): the session
/// listed last on a page, from which the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionCursor {
    /// The session's `updated_at`.
    pub updated_at: i64,
    /// Its key.
    pub key: SessionKey,
}

impl SessionCursor {
    /// The place of `session` in a list.
    pub fn of(session: &Session) -> Self {
        SessionCursor {
            updated_at: session.updated_at,
            key: session.key(),
        }
    }

    /// Whether `session` is listed after this place.
    pub fn precedes(&self, session: &Session) -> bool {
        session.list_position()
            > list_position(
                self.updated_at,
                &self.key.session_id,
                self.key.kind,
                &self.key.scope,
            )
    }
}

/// Where a session stands in a list, as a value that sorts in the list's order: most
/// recently updated first, then session id descending, then kind and scope ascending
/// (strings byte-wise). Every backend lists in this order.
fn list_position<'a>(
    updated_at: i64,
    session_id: &'a str,
    kind: SessionKind,
    scope: &'a str,
) -> (Reverse<i64>, Reverse<&'a str>, &'static str, &'a str) {
    (
        Reverse(updated_at),
        Reverse(session_id),
        kind.as_str(),
        scope,
    )
}

impl SessionQuery {
    /// All sessions.
    pub fn all() -> Self {
        SessionQuery::default()
    }

    /// Only sessions of `user_id`.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Only sessions of the workflow, agent or team `component_id`.
    pub fn component(mut self, component_id: impl Into<String>) -> Self {
        self.component_id = Some(component_id.into());
        self
    }

    /// Only sessions of `kind`.
    pub fn kind(mut self, kind: SessionKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only sessions with `scope` (`""`: top-level sessions, not their members').
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// At most `limit` sessions, the most recently updated first.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Only sessions listed after `cursor` (the last session of the page before).
    pub fn after(mut self, cursor: SessionCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Whether `session` passes the filters and comes after the cursor (the limit is not
    /// checked).
    pub fn matches(&self, session: &Session) -> bool {
        self.user_id
            .as_ref()
            .is_none_or(|user| session.user_id.as_ref() == Some(user))
            && self
                .component_id
                .as_ref()
                .is_none_or(|id| session.component_id.as_ref() == Some(id))
            && self.kind.is_none_or(|kind| session.kind == kind)
            && self
                .scope
                .as_ref()
                .is_none_or(|scope| &session.scope == scope)
            && self
                .after
                .as_ref()
                .is_none_or(|cursor| cursor.precedes(session))
    }
}
