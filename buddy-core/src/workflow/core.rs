use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::memory::WorkflowMemory;
use super::settings::{DEFAULT_HISTORY_RUNS, WorkflowSettings};
use super::state::WorkflowState;
use crate::error::{Error, Result};
use crate::member::MemberContext;
use crate::run::{RunRecord, RunResponse};
use crate::session::{
    Session, SessionKey, SessionKind, SessionQuery, SessionWrite, StateMerge, StatePatch,
};
use crate::storage::{ReadOptions, Storage};

/// The runtime state `#[workflow]` adds to a workflow struct: settings, session, state,
/// memory and storage. User code reaches it through the [`Workflow`](super::Workflow) trait.
#[derive(Clone)]
pub struct WorkflowCore<S: WorkflowState> {
    name: String,
    workflow_id: Option<String>,
    description: Option<String>,
    user_id: Option<String>,
    session_id: Option<String>,
    session_name: Option<String>,
    state: S,
    /// The configured initial state, as JSON.
    initial_state: Map<String, Value>,
    /// The state as last read from (or written to) storage; run changes are diffed against it.
    stored_state: Map<String, Value>,
    state_merge: StateMerge,
    memory: WorkflowMemory,
    storage: Option<Arc<dyn Storage>>,
    extra_data: Option<Map<String, Value>>,
    debug_mode: bool,
    history_runs: usize,
    last_response: Option<RunResponse>,
    /// The stored version of the session that `memory` and `stored_state` reflect; when the
    /// stored version is still this one at the next run, the runs are not read again.
    synced_version: Option<i64>,
    /// Where the workflow sits below a parent workflow (its session scope; empty at the top).
    path: Vec<String>,
}

impl<S: WorkflowState> fmt::Debug for WorkflowCore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowCore")
            .field("name", &self.name)
            .field("workflow_id", &self.workflow_id)
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("session_name", &self.session_name)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

fn object(value: Option<Value>, what: &str) -> Result<Option<Map<String, Value>>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(Error::Config(format!("{what} must be a JSON object"))),
    }
}

impl<S: WorkflowState> WorkflowCore<S> {
    /// The core of a workflow built with default settings.
    pub fn with_defaults(type_name: &str, description: Option<&str>) -> Self {
        let state = S::initial();
        let initial_state = state.to_map().unwrap_or_default();
        WorkflowCore {
            name: type_name.to_owned(),
            workflow_id: None,
            description: description.map(str::to_owned),
            user_id: None,
            session_id: None,
            session_name: None,
            state,
            initial_state,
            stored_state: Map::new(),
            state_merge: StateMerge::default(),
            memory: WorkflowMemory::default(),
            storage: None,
            extra_data: None,
            debug_mode: false,
            history_runs: DEFAULT_HISTORY_RUNS,
            last_response: None,
            synced_version: None,
            path: Vec::new(),
        }
    }

    /// The core of a workflow built from `settings`; fails if the initial state or extra
    /// data is not a JSON object, or does not decode into the state type.
    pub fn from_settings(
        settings: WorkflowSettings,
        type_name: &str,
        description: Option<&str>,
    ) -> Result<Self> {
        let mut core = WorkflowCore::with_defaults(type_name, description);
        if let Some(state) = object(settings.session_state, "session_state")? {
            let mut initial = core.initial_state.clone();
            crate::session::state::merge_overwrite(&mut initial, &state);
            core.state = S::from_map(initial.clone(), "<initial state>")?;
            core.initial_state = initial;
        }
        core.extra_data = object(settings.extra_data, "extra_data")?;
        if let Some(name) = settings.name {
            core.name = name;
        }
        core.workflow_id = settings.workflow_id;
        if settings.description.is_some() {
            core.description = settings.description;
        }
        core.user_id = settings.user_id;
        core.session_id = settings.session_id;
        core.session_name = settings.session_name;
        core.state_merge = settings.state_merge;
        core.storage = settings.storage;
        core.debug_mode = settings.debug_mode;
        core.history_runs = settings.history_runs.unwrap_or(DEFAULT_HISTORY_RUNS);
        core.memory = settings
            .memory
            .unwrap_or_else(|| WorkflowMemory::with_capacity(core.history_runs));
        Ok(core)
    }

    /// Sets the initial state from a typed value (for `#[workflow(state = T)]` builders).
    pub fn set_initial_state(&mut self, state: S) -> Result<()> {
        self.initial_state = state.to_map()?;
        self.state = state;
        Ok(())
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The workflow id, once set.
    pub fn workflow_id(&self) -> Option<&str> {
        self.workflow_id.as_deref()
    }
    /// The description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// The user id.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
    /// The session id, once set.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
    /// The session name.
    pub fn session_name(&self) -> Option<&str> {
        self.session_name.as_deref()
    }
    /// The session state.
    pub fn state(&self) -> &S::Value {
        self.state.get()
    }
    /// The session state, mutably.
    pub fn state_mut(&mut self) -> &mut S::Value {
        self.state.get_mut()
    }
    /// The session state as JSON.
    pub fn state_json(&self) -> Result<Map<String, Value>> {
        self.state.to_map()
    }
    /// The extra data stored with the session.
    pub fn extra_data(&self) -> Option<&Map<String, Value>> {
        self.extra_data.as_ref()
    }
    /// The runs kept in memory.
    pub fn memory(&self) -> &WorkflowMemory {
        &self.memory
    }
    /// The storage, if any.
    pub fn storage(&self) -> Option<&Arc<dyn Storage>> {
        self.storage.as_ref()
    }
    /// Whether debug logging is on (`debug_mode` or `BUDDY_DEBUG=true`).
    pub fn debug_mode(&self) -> bool {
        self.debug_mode || crate::debug::env_debug()
    }
    /// The response of the latest run of this instance.
    pub fn last_response(&self) -> Option<&RunResponse> {
        self.last_response.as_ref()
    }

    /// Sets the user id.
    pub fn set_user_id(&mut self, user_id: Option<String>) {
        self.user_id = user_id;
    }

    /// Where the workflow sits below a parent workflow (empty at the top).
    pub fn path(&self) -> &[String] {
        &self.path
    }

    /// The key of the current session in storage.
    fn key(&self) -> SessionKey {
        SessionKey::new(
            self.session_id.clone().unwrap_or_default(),
            SessionKind::Workflow,
        )
        .scope(self.path.join("/"))
    }

    /// The context handed to members before a run (each gets it one level down, at its
    /// field's name).
    pub fn member_context(&self) -> MemberContext {
        MemberContext::new(self.session_id.clone().unwrap_or_default())
            .user_id(self.user_id.clone())
            .workflow_id(self.workflow_id.clone())
            .debug_mode(self.debug_mode())
            .path(self.path.clone())
    }

    /// Receives a parent workflow's session, user, debug mode and this workflow's path (this
    /// workflow is a member of another).
    ///
    /// The nested workflow then runs in the parent's session id, its session stored at its
    /// member path (the parent's field name), so the two never overwrite each other even in
    /// one storage table.
    pub fn attach(&mut self, context: &MemberContext) {
        if self.session_id.as_deref() != Some(context.session_id.as_str())
            || self.path != context.path
        {
            self.path.clone_from(&context.path);
            self.switch_session(context.session_id.clone());
        }
        self.user_id.clone_from(&context.user_id);
        self.debug_mode |= context.debug_mode;
    }

    /// Makes this copy of a template an independent instance for one request: no session,
    /// the configured initial state, empty memory; the workflow id is kept.
    pub(crate) fn reset_for_request(&mut self) {
        self.session_id = None;
        self.session_name = None;
        self.reset_state();
        self.memory.clear();
        self.last_response = None;
        self.synced_version = None;
        self.path.clear();
    }

    /// Makes sure a session id exists, creating a fresh UUID if needed.
    pub(crate) fn ensure_session_id(&mut self) -> String {
        match &self.session_id {
            Some(id) => id.clone(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                self.session_id = Some(id.clone());
                id
            }
        }
    }

    /// Takes `id` as the workflow id unless one is set.
    pub(crate) fn adopt_workflow_id(&mut self, id: &str) {
        if self.workflow_id.is_none() {
            self.workflow_id = Some(id.to_owned());
        }
    }

    /// Makes sure a workflow id exists, creating a fresh UUID if needed.
    pub(crate) fn ensure_workflow_id(&mut self) -> String {
        match &self.workflow_id {
            Some(id) => id.clone(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                self.workflow_id = Some(id.clone());
                id
            }
        }
    }

    fn switch_session(&mut self, session_id: String) {
        self.synced_version = None;
        self.session_id = Some(session_id);
        self.session_name = None;
        self.reset_state();
        self.memory.clear();
    }

    fn reset_state(&mut self) {
        self.stored_state = Map::new();
        // The initial state decoded fine when the workflow was built.
        if let Ok(state) = S::from_map(self.initial_state.clone(), "<initial state>") {
            self.state = state;
        }
    }

    /// Reads the session from storage, if it exists, and merges it into this instance:
    /// stored identity fills what is unset, stored state wins over state given in code
    /// (or the reverse with [`StateMerge::CodeWins`]), recent runs fill memory.
    ///
    /// Returns whether a stored session was found.
    pub(crate) async fn read_session(&mut self) -> Result<bool> {
        let session_id = self.ensure_session_id();
        let Some(storage) = self.storage.clone() else {
            self.memory.keep_session(&session_id);
            return Ok(false);
        };
        // The session row first; its runs only when someone else wrote since this instance
        // last did, so a run of a busy single-writer session reads one row.
        let key = self.key();
        match storage.read(&key, &ReadOptions::with_runs(0)).await? {
            Some(session) => {
                let in_sync = self.synced_version == Some(session.version)
                    && self.memory.session_id() == Some(session_id.as_str());
                let runs = if in_sync {
                    None
                } else {
                    Some(storage.runs(&key, Some(self.history_runs)).await?)
                };
                self.synced_version = Some(session.version);
                self.load(session, runs)?;
                Ok(true)
            }
            None => {
                // A new (or deleted) session: the whole state is written on the next commit.
                self.memory.keep_session(&session_id);
                self.stored_state = Map::new();
                self.synced_version = Some(0);
                Ok(false)
            }
        }
    }

    /// Merges a stored session into this instance; `runs` replace the memory when given.
    fn load(&mut self, session: Session, runs: Option<Vec<RunRecord>>) -> Result<()> {
        if self.workflow_id.is_none() {
            self.workflow_id = session.component_id.clone();
        }
        if self.user_id.is_none() {
            self.user_id = session.user_id.clone();
        }
        if self.session_name.is_none() {
            self.session_name = session.session_name.clone();
        }
        let mut merged = session.session_state.clone();
        let current = self.state.to_map()?;
        self.state_merge.combine(&mut merged, &current);
        self.state = S::from_map(merged, &session.session_id)?;
        self.stored_state = session.session_state;
        if let Some(stored) = session.extra_data {
            let mut extra = stored;
            if let Some(code) = &self.extra_data {
                crate::session::state::merge_overwrite(&mut extra, code);
            }
            self.extra_data = Some(extra);
        }
        if let Some(runs) = runs {
            self.memory.load(&session.session_id, runs);
        }
        Ok(())
    }

    /// The write that persists this instance's session (and `run`, if any).
    pub(crate) fn session_write(&self, run: Option<RunRecord>) -> Result<SessionWrite> {
        let mut write = self.session_write_without_state(run);
        write.state_patch = self.state_patch()?;
        Ok(write)
    }

    /// The changes this instance made to the state since it was read.
    pub(crate) fn state_patch(&self) -> Result<StatePatch> {
        Ok(StatePatch::diff(&self.stored_state, &self.state.to_map()?))
    }

    /// A copy of the state, to go back to if a run fails.
    pub(crate) fn state_snapshot(&self) -> S {
        self.state.clone()
    }

    /// Goes back to a state taken with [`state_snapshot`](Self::state_snapshot).
    pub(crate) fn restore_state(&mut self, state: S) {
        self.state = state;
    }

    /// Keeps a finished run in memory and adopts the session as stored by its commit: its
    /// state after a success; after a failure only its version (the instance keeps the state
    /// it had before the run, initial keys included, which the next run writes).
    pub(crate) fn finish_run(&mut self, record: RunRecord, stored: Option<Session>) {
        let succeeded = record.status == crate::run::RunStatus::Completed;
        self.record(record);
        match stored {
            Some(stored) if succeeded => self.adopt(stored),
            Some(stored) => self.adopt_version(stored.version),
            None => {}
        }
    }

    /// The write of identity, metadata and `run`, leaving the stored state alone.
    pub(crate) fn session_write_without_state(&self, run: Option<RunRecord>) -> SessionWrite {
        let mut component_data = Map::new();
        component_data.insert("name".into(), Value::String(self.name.clone()));
        if let Some(description) = &self.description {
            component_data.insert("description".into(), Value::String(description.clone()));
        }
        let key = self.key();
        SessionWrite {
            session_id: key.session_id,
            kind: key.kind,
            scope: key.scope,
            component_id: self.workflow_id.clone(),
            user_id: self.user_id.clone(),
            session_name: self.session_name.clone(),
            component_data,
            state_patch: StatePatch::default(),
            extra_data: self.extra_data.clone(),
            run,
        }
    }

    /// Writes `write` and adopts the stored result: the merged state (which includes keys
    /// written concurrently by other runs) becomes this instance's state.
    pub(crate) async fn commit(&mut self, write: SessionWrite) -> Result<(), crate::StorageError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        // A caller that drops the run while the write is in flight does not abandon it.
        let stored = crate::storage::commit_detached(&storage, write).await?;
        self.adopt(stored);
        Ok(())
    }

    /// Adopts the session as stored after this instance's write: the merged state (which
    /// includes keys written concurrently by other runs) becomes this instance's state.
    fn adopt(&mut self, stored: Session) {
        self.adopt_version(stored.version);
        match S::from_map(stored.session_state.clone(), &stored.session_id) {
            Ok(state) => self.state = state,
            Err(error) => {
                tracing::warn!(%error, "merged session state does not decode; keeping this run's state")
            }
        }
        self.stored_state = stored.session_state;
    }

    /// Follows the stored version: still in sync if it moved by this instance's write only.
    fn adopt_version(&mut self, version: i64) {
        self.synced_version = match self.synced_version {
            Some(previous) if previous + 1 == version => Some(version),
            _ => None,
        };
    }

    fn record(&mut self, run: RunRecord) {
        self.last_response = Some(run.response.clone());
        self.memory.add_run(run);
    }

    /// Loads the session from storage, creating it there if it does not exist; returns its id.
    pub async fn load_session(&mut self) -> Result<String> {
        if self.workflow_id.is_none() && self.storage.is_none() {
            self.ensure_workflow_id();
        }
        let found = self.read_session().await?;
        self.ensure_workflow_id();
        if !found && self.storage.is_some() {
            let write = self.session_write(None)?;
            self.commit(write).await?;
        }
        Ok(self.ensure_session_id())
    }

    /// Starts a new session: a fresh session id, the configured initial state, empty memory;
    /// with storage, the session is created there. Returns the new id.
    pub async fn new_session(&mut self) -> Result<String> {
        self.switch_session(uuid::Uuid::new_v4().to_string());
        self.last_response = None;
        self.load_session().await
    }

    /// Continues the session `session_id` from the next run on (state and memory are read
    /// from storage then).
    pub fn use_session(&mut self, session_id: impl Into<String>) {
        self.switch_session(session_id.into());
        self.last_response = None;
    }

    /// Renames the workflow and saves the session.
    pub async fn rename(&mut self, name: impl Into<String>) -> Result<()> {
        self.read_session().await?;
        self.name = name.into();
        self.save().await
    }

    /// Renames the current session and saves it; with storage, a session that is not
    /// stored yet is [`Error::SessionNotFound`] (nothing is created).
    pub async fn rename_session(&mut self, session_name: impl Into<String>) -> Result<()> {
        let found = self.read_session().await?;
        if !found && self.storage.is_some() {
            return Err(Error::SessionNotFound {
                session_id: self.ensure_session_id(),
            });
        }
        self.session_name = Some(session_name.into());
        self.save().await
    }

    async fn save(&mut self) -> Result<()> {
        self.ensure_workflow_id();
        let write = self.session_write(None)?;
        self.commit(write).await?;
        Ok(())
    }

    /// Deletes a session from storage (a missing one is not an error). Deleting the current
    /// session also starts this instance afresh on its next run.
    pub async fn delete_session(&mut self, session_id: &str) -> Result<()> {
        if let Some(storage) = &self.storage {
            let key = SessionKey::new(session_id, SessionKind::Workflow).scope(self.path.join("/"));
            storage.delete_session(&key).await?;
        }
        if self.session_id.as_deref() == Some(session_id) {
            self.synced_version = None;
            self.reset_state();
            self.memory.clear();
        }
        Ok(())
    }

    /// Sessions of this workflow's kind matching `query`, newest first.
    pub async fn list_sessions(&self, query: SessionQuery) -> Result<Vec<Session>> {
        match &self.storage {
            Some(storage) => Ok(storage
                .list_sessions(&query.kind(SessionKind::Workflow).scope(self.path.join("/")))
                .await?),
            None => Ok(Vec::new()),
        }
    }
}
