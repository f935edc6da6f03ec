//! The settings every workflow has (name, ids, session, state, memory, storage, ...), declared
//! once: [`WorkflowSettings`] holds them while a workflow is built, and [`WorkflowBuilder`]
//! gives every `#[workflow]` builder its setters.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::memory::WorkflowMemory;
use crate::session::StateMerge;
use crate::storage::{IntoStorage, Storage};

/// The number of recent runs a workflow reads from storage into its memory by default.
pub const DEFAULT_HISTORY_RUNS: usize = 20;

/// The workflow settings a builder collects (every `#[workflow]` builder holds one).
#[derive(Clone, Default)]
pub struct WorkflowSettings {
    /// Display name; defaults to the type name.
    pub name: Option<String>,
    /// Workflow id; a fresh UUID on the first run when unset (or the stored one).
    pub workflow_id: Option<String>,
    /// Description; defaults to `#[workflow(description = ...)]`.
    pub description: Option<String>,
    /// The user the sessions belong to.
    pub user_id: Option<String>,
    /// Session id; a fresh UUID on the first run when unset.
    pub session_id: Option<String>,
    /// Session name.
    pub session_name: Option<String>,
    /// Initial session state (a JSON object).
    pub session_state: Option<Value>,
    /// How initial state meets stored state.
    pub state_merge: StateMerge,
    /// Runs kept in memory.
    pub memory: Option<WorkflowMemory>,
    /// Where sessions are persisted.
    pub storage: Option<Arc<dyn Storage>>,
    /// Extra data stored with the session.
    pub extra_data: Option<Value>,
    /// Debug logging.
    pub debug_mode: bool,
    /// How many recent runs to read into memory.
    pub history_runs: Option<usize>,
}

impl fmt::Debug for WorkflowSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowSettings")
            .field("name", &self.name)
            .field("workflow_id", &self.workflow_id)
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl WorkflowSettings {
    /// Sets the storage.
    pub fn set_storage(&mut self, storage: impl IntoStorage) {
        self.storage = Some(storage.into_storage());
    }
}

/// The workflow settings of a builder: every `#[workflow]` builder implements this trait, so
/// `MyWorkflow::builder().name("...").storage(...).build()` sets them in a chain. Bring it
/// into scope with `use buddy::prelude::*`.
///
/// The builder generated for a struct has a setter per field and `build()` of its own; the
/// settings below are the same on every builder, so they are declared here once. A builder
/// only hands out the [`WorkflowSettings`] it holds.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::workflow::{WorkflowBuilder, WorkflowSettings};
///
/// /// A hand-written builder (what `#[workflow]` generates has fields and `build()` too).
/// #[derive(Default)]
/// struct Builder {
///     settings: WorkflowSettings,
/// }
///
/// impl WorkflowBuilder for Builder {
///     fn __buddy_settings(&mut self) -> &mut WorkflowSettings {
///         &mut self.settings
///     }
/// }
///
/// let builder = Builder::default().name("pipeline").user_id("ada").history_runs(5);
/// assert_eq!(builder.settings.name.as_deref(), Some("pipeline"));
/// assert_eq!(builder.settings.user_id.as_deref(), Some("ada"));
/// assert_eq!(builder.settings.history_runs, Some(5));
/// ```
pub trait WorkflowBuilder: Sized {
    /// The settings this builder collects.
    #[doc(hidden)]
    fn __buddy_settings(&mut self) -> &mut WorkflowSettings;

    /// Sets the display name (default: the type name, or `#[workflow(name = ...)]`).
    fn name(mut self, name: impl Into<String>) -> Self {
        self.__buddy_settings().name = Some(name.into());
        self
    }

    /// Sets the workflow id (default: the stored one, else a fresh UUID on the first run).
    fn workflow_id(mut self, workflow_id: impl Into<String>) -> Self {
        self.__buddy_settings().workflow_id = Some(workflow_id.into());
        self
    }

    /// Sets the description (default: `#[workflow(description = ...)]`).
    fn description(mut self, description: impl Into<String>) -> Self {
        self.__buddy_settings().description = Some(description.into());
        self
    }

    /// Sets the user the sessions belong to.
    fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.__buddy_settings().user_id = Some(user_id.into());
        self
    }

    /// Sets the session to run in (default: a fresh UUID on the first run).
    fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.__buddy_settings().session_id = Some(session_id.into());
        self
    }

    /// Sets the session name.
    fn session_name(mut self, session_name: impl Into<String>) -> Self {
        self.__buddy_settings().session_name = Some(session_name.into());
        self
    }

    /// Sets the initial session state (a JSON object): the state of a new session, and the
    /// keys added to a stored session that lacks them. `build()` fails if it is not an object.
    fn session_state(mut self, state: impl Into<Value>) -> Self {
        self.__buddy_settings().session_state = Some(state.into());
        self
    }

    /// Sets how the initial state meets a stored session's state (default: stored wins).
    fn state_merge(mut self, merge: StateMerge) -> Self {
        self.__buddy_settings().state_merge = merge;
        self
    }

    /// Sets the memory the workflow starts with (default: empty, holding
    /// [`history_runs`](WorkflowBuilder::history_runs) runs).
    fn memory(mut self, memory: WorkflowMemory) -> Self {
        self.__buddy_settings().memory = Some(memory);
        self
    }

    /// Sets where sessions are persisted (default: nowhere; runs are kept in memory only).
    fn storage(mut self, storage: impl IntoStorage) -> Self {
        self.__buddy_settings().set_storage(storage);
        self
    }

    /// Sets extra data stored with the session (a JSON object; `build()` fails otherwise).
    fn extra_data(mut self, extra_data: impl Into<Value>) -> Self {
        self.__buddy_settings().extra_data = Some(extra_data.into());
        self
    }

    /// Turns debug logging on (also on with `BUDDY_DEBUG=true`).
    fn debug_mode(mut self, debug_mode: bool) -> Self {
        self.__buddy_settings().debug_mode = debug_mode;
        self
    }

    /// Sets how many recent runs are read from storage into memory (default
    /// [`DEFAULT_HISTORY_RUNS`]).
    fn history_runs(mut self, history_runs: usize) -> Self {
        self.__buddy_settings().history_runs = Some(history_runs);
        self
    }
}
