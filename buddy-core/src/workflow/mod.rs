//! Workflows: the [`Workflow`] trait that `#[workflow]` implements for a struct, the
//! [`RunWorkflow`] trait it implements for the `impl` block, and the run wrapper.

mod core;
pub(crate) mod input;
mod memory;
mod params;
pub(crate) mod run;
mod settings;
mod state;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use self::core::WorkflowCore;
pub use crate::engine::RunStream;
pub use memory::WorkflowMemory;
pub use params::Parameter;
pub use run::{
    Body, IntoRunResult, assert_run_workflow, box_stream, expansion_failed, run_to_response,
    run_to_stream, run_to_stream_owned,
};
pub use settings::{DEFAULT_HISTORY_RUNS, WorkflowBuilder, WorkflowSettings};
pub use state::{JsonState, Typed, WorkflowState};

use crate::error::{Error, Result};
use crate::member::MemberContext;
use crate::run::RunResponse;
use crate::session::{Session, SessionQuery};
use crate::storage::Storage;

/// A workflow: a struct with `#[workflow]`.
///
/// The attribute implements this trait; its provided methods are the workflow's settings,
/// its session state and the session operations. Bring it into scope with
/// `use buddy::prelude::*`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow",
    label = "`{Self}` has no `#[workflow]` attribute",
    note = "add `#[workflow]` to the struct definition of `{Self}`, not only to its `impl` block"
)]
pub trait Workflow: Send + 'static {
    /// How the session state is held: [`JsonState`] or [`Typed<T>`].
    type State: WorkflowState;
    /// The struct's name.
    const TYPE_NAME: &'static str;
    /// The description given in `#[workflow(description = ...)]`.
    const DESCRIPTION: Option<&'static str>;

    #[doc(hidden)]
    fn __buddy_core(&self) -> &WorkflowCore<Self::State>;
    #[doc(hidden)]
    fn __buddy_core_mut(&mut self) -> &mut WorkflowCore<Self::State>;
    #[doc(hidden)]
    fn __buddy_attach_members(&mut self, context: &MemberContext);

    /// The display name (the type name unless set).
    fn name(&self) -> &str {
        self.__buddy_core().name()
    }
    /// The workflow id (set on the first run, or adopted from a stored session).
    fn workflow_id(&self) -> Option<&str> {
        self.__buddy_core().workflow_id()
    }
    /// The description.
    fn description(&self) -> Option<&str> {
        self.__buddy_core().description()
    }
    /// The user the session belongs to.
    fn user_id(&self) -> Option<&str> {
        self.__buddy_core().user_id()
    }
    /// The session id (set on the first run when not given).
    fn session_id(&self) -> Option<&str> {
        self.__buddy_core().session_id()
    }
    /// The session name.
    fn session_name(&self) -> Option<&str> {
        self.__buddy_core().session_name()
    }
    /// The session state: a JSON map, or the type given in `#[workflow(state = T)]`.
    fn state(&self) -> &<Self::State as WorkflowState>::Value {
        self.__buddy_core().state()
    }
    /// The session state, mutably; changes are saved at the end of the run.
    fn state_mut(&mut self) -> &mut <Self::State as WorkflowState>::Value {
        self.__buddy_core_mut().state_mut()
    }
    /// The session state as a JSON object (typed state encoded).
    fn session_state(&self) -> Result<Map<String, Value>> {
        self.__buddy_core().state_json()
    }
    /// Extra data stored with the session.
    fn extra_data(&self) -> Option<&Map<String, Value>> {
        self.__buddy_core().extra_data()
    }
    /// The runs of the current session kept in memory.
    fn memory(&self) -> &WorkflowMemory {
        self.__buddy_core().memory()
    }
    /// The storage, if any.
    fn storage(&self) -> Option<&Arc<dyn Storage>> {
        self.__buddy_core().storage()
    }
    /// Whether debug logging is on.
    fn debug_mode(&self) -> bool {
        self.__buddy_core().debug_mode()
    }
    /// The response of this instance's latest run.
    fn last_response(&self) -> Option<&RunResponse> {
        self.__buddy_core().last_response()
    }

    /// A durable step of this workflow's body: see [`crate::durable::step`].
    fn step<'a, T, E, F>(&self, name: &str, future: F) -> crate::durable::Step<'a, T>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
        T: Serialize + DeserializeOwned + Send + 'a,
        E: Into<Error> + 'a,
    {
        crate::durable::step(name, future)
    }

    /// A durable wait for input in this workflow's body: see
    /// [`crate::durable::wait_for`].
    fn wait_for<T>(&self, key: &str, prompt: impl Serialize) -> crate::durable::Wait<T>
    where
        T: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    {
        crate::durable::wait_for(key, prompt)
    }

    /// Loads the current session from storage, creating it if it does not exist; returns
    /// the session id. Without storage, only sets the ids.
    fn load_session(&mut self) -> impl Future<Output = Result<String>> + Send {
        self.__buddy_core_mut().load_session()
    }
    /// Starts a new session from the configured initial state; returns its id.
    fn new_session(&mut self) -> impl Future<Output = Result<String>> + Send {
        self.__buddy_core_mut().new_session()
    }
    /// Continues the session `session_id` from the next run on.
    fn use_session(&mut self, session_id: impl Into<String>) {
        self.__buddy_core_mut().use_session(session_id);
    }
    /// Renames the workflow and saves the session.
    fn rename(
        &mut self,
        name: impl Into<String> + Send,
    ) -> impl Future<Output = Result<()>> + Send {
        self.__buddy_core_mut().rename(name)
    }
    /// Renames the current session and saves it; with storage, a session that does not exist
    /// is [`Error::SessionNotFound`].
    fn rename_session(
        &mut self,
        session_name: impl Into<String> + Send,
    ) -> impl Future<Output = Result<()>> + Send {
        self.__buddy_core_mut().rename_session(session_name)
    }
    /// Deletes a session from storage; a missing one is not an error.
    fn delete_session(&mut self, session_id: &str) -> impl Future<Output = Result<()>> + Send {
        self.__buddy_core_mut().delete_session(session_id)
    }
    /// Workflow sessions matching `query`, newest first (empty without storage).
    fn list_sessions(
        &self,
        query: SessionQuery,
    ) -> impl Future<Output = Result<Vec<Session>>> + Send {
        self.__buddy_core().list_sessions(query)
    }
    /// Sessions of `user_id`, newest first.
    fn sessions_of_user(
        &self,
        user_id: impl Into<String>,
    ) -> impl Future<Output = Result<Vec<Session>>> + Send {
        self.list_sessions(SessionQuery::all().user(user_id))
    }
    /// Sessions of this workflow's id, newest first.
    fn sessions_of_workflow(&self) -> impl Future<Output = Result<Vec<Session>>> + Send {
        let query = match self.workflow_id() {
            Some(id) => SessionQuery::all().component(id),
            None => SessionQuery::all().component(""),
        };
        self.list_sessions(query)
    }
    /// The `limit` most recently updated sessions (of this workflow's user, if it has one).
    fn recent_sessions(&self, limit: usize) -> impl Future<Output = Result<Vec<Session>>> + Send {
        let mut query = SessionQuery::all().limit(limit);
        query.user_id = self.user_id().map(str::to_owned);
        self.list_sessions(query)
    }
}

/// A workflow with a `run` method: implemented by `#[workflow]` on the `impl` block.
///
/// Besides the typed `run` the attribute generates, this trait runs a workflow from its
/// typed input struct or from JSON, and describes the parameters, so that a server can run
/// any workflow without knowing its type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `#[workflow]` run method",
    note = "add `#[workflow]` to the `impl` block of `{Self}` that defines `async fn run(&mut self, ...)`"
)]
pub trait RunWorkflow: Workflow + Sized {
    /// The generated input struct: one field per `run` argument.
    type Input: Serialize + DeserializeOwned + schemars::JsonSchema + Send + 'static;
    /// Whether `run` returns a stream of events.
    const STREAMING: bool;
    /// The parameters of `run`, in order.
    const PARAMETERS: &'static [Parameter];

    #[doc(hidden)]
    fn __buddy_call(&mut self, input: Self::Input) -> BoxFuture<'_, Body<'_>>;

    /// Whether runs are durable (`#[workflow(durable)]`): journaled, resumable, able to
    /// pause (see [`crate::durable`]).
    const DURABLE: bool = false;

    /// The workflow's version (`#[workflow(version = N)]`, default 1): a durable run
    /// journaled by another version is not resumed unless the caller allows it.
    const VERSION: u32 = 1;

    /// The JSON Schema of the input.
    fn input_schema() -> schemars::Schema {
        schemars::schema_for!(Self::Input)
    }

    /// Runs with the typed input and returns the response (a streamed run is collected).
    fn run_input(&mut self, input: Self::Input) -> BoxFuture<'_, Result<RunResponse>> {
        Box::pin(run_to_response(self, input))
    }

    /// Runs with the typed input and streams the events (a non-streamed run yields
    /// `run_started` and `run_completed`).
    fn run_input_stream(&mut self, input: Self::Input) -> RunStream<'_> {
        run_to_stream(self, input)
    }

    /// Runs from a JSON object of arguments (`null` stands for `{}`).
    fn run_json(&mut self, input: Value) -> BoxFuture<'_, Result<RunResponse>> {
        match decode_input::<Self>(input) {
            Ok(input) => self.run_input(input),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }

    /// Runs from a JSON object of arguments and streams the events.
    fn run_json_stream(&mut self, input: Value) -> RunStream<'_> {
        match decode_input::<Self>(input) {
            Ok(input) => self.run_input_stream(input),
            Err(error) => RunStream::failed(error),
        }
    }

    /// Runs with the typed input, the stream owning the workflow (`'static`: it can be
    /// spawned or returned from an HTTP handler).
    fn into_run_stream(self, input: Self::Input) -> RunStream<'static> {
        run_to_stream_owned(self, input)
    }

    /// Resumes durable run `run_id` (a run whose process died, a dropped run, or a paused
    /// run whose waits have their values): the body runs again from the top, and what the
    /// journal holds is returned from it without calling a model, a tool or a step again.
    ///
    /// The run's session, user and input come from the stored run. A run that has ended
    /// fails with [`DurableError::NotResumable`](crate::durable::DurableError), one
    /// journaled by another `#[workflow(version = ..)]` with `VersionMismatch` (see
    /// [`resume_with_options`](RunWorkflow::resume_with_options)), a paused run still
    /// waiting with `Paused` (without running anything).
    fn resume<'a>(&'a mut self, run_id: &'a str) -> BoxFuture<'a, Result<RunResponse>> {
        Box::pin(async move {
            let options = crate::durable::ResumeOptions::default();
            run::resume_run(
                self,
                run_id,
                &options,
                &crate::engine::EventSink::disabled(),
            )
            .await
        })
    }

    /// [`resume`](RunWorkflow::resume) with options (for example, allowing a run of
    /// another version of the workflow).
    fn resume_with_options<'a>(
        &'a mut self,
        run_id: &'a str,
        options: crate::durable::ResumeOptions,
    ) -> BoxFuture<'a, Result<RunResponse>> {
        Box::pin(async move {
            run::resume_run(
                self,
                run_id,
                &options,
                &crate::engine::EventSink::disabled(),
            )
            .await
        })
    }

    /// [`resume`](RunWorkflow::resume) as a stream of events: the resumed run's events,
    /// those repeated from the journal marked [`replayed`](crate::RunEvent::replayed).
    fn resume_stream(&mut self, run_id: &str) -> RunStream<'_> {
        run::resume_stream(
            self,
            run_id.to_owned(),
            crate::durable::ResumeOptions::default(),
        )
    }

    /// Gives wait `key` of paused run `run_id` its value (checked against the wait's JSON
    /// Schema first; see [`crate::durable::answer`]) and, when the run waits for nothing
    /// else, resumes it. When other waits are still pending it returns
    /// [`DurableError::Paused`](crate::durable::DurableError) naming them, without running
    /// the body.
    fn resume_with<'a>(
        &'a mut self,
        run_id: &'a str,
        key: &'a str,
        value: Value,
    ) -> BoxFuture<'a, Result<RunResponse>> {
        Box::pin(async move {
            let storage = self.__buddy_core().storage().cloned().ok_or_else(|| {
                Error::Durable(crate::durable::DurableError::NotDurable {
                    what: "`resume_with`",
                    hint: "give the workflow the storage its durable runs are in",
                })
            })?;
            crate::durable::answer(&*storage, run_id, key, value).await?;
            self.resume(run_id).await
        })
    }
}

/// What [`resume_unfinished`] did with one run.
#[derive(Debug)]
#[non_exhaustive]
pub struct Resumed {
    /// The run.
    pub run_id: String,
    /// How its resume ended (a run that paused again ends with
    /// [`DurableError::Paused`](crate::durable::DurableError)).
    pub result: Result<RunResponse>,
}

/// Finds every unfinished durable run of workflow `W` in the storage of the instances
/// `factory` makes, and resumes each on a fresh instance, one after the other: the runs
/// still `running` (their process died, or they were dropped) and the paused runs that can
/// go on (every wait has its value, or a wait's deadline passed). Paused runs still waiting
/// are left alone.
///
/// Call it when a service starts, with the factory it makes workflows with.
pub async fn resume_unfinished<W, F>(mut factory: F) -> Result<Vec<Resumed>>
where
    W: RunWorkflow,
    F: FnMut() -> W,
{
    let template = factory();
    let Some(storage) = template.__buddy_core().storage().cloned() else {
        return Err(Error::Durable(crate::durable::DurableError::NotDurable {
            what: "`resume_unfinished`",
            hint: "the factory's workflows need the storage their durable runs are in",
        }));
    };
    let query = crate::durable::DurableQuery::all()
        .workflow(W::TYPE_NAME)
        .status(crate::run::RunStatus::Running)
        .status(crate::run::RunStatus::Paused);
    let runs = storage.durable_runs(&query).await?;
    let mut resumed = Vec::new();
    let mut next = Some(template);
    for run in runs {
        if run.log_only {
            continue;
        }
        if run.status == crate::run::RunStatus::Paused {
            let ready = match storage.load_durable(&run.run_id).await? {
                Some(state) => crate::durable::ready(&state),
                None => false,
            };
            if !ready {
                continue;
            }
        }
        let mut workflow = next.take().unwrap_or_else(&mut factory);
        let result = workflow.resume(&run.run_id).await;
        resumed.push(Resumed {
            run_id: run.run_id,
            result,
        });
    }
    Ok(resumed)
}

fn decode_input<W: RunWorkflow>(input: Value) -> Result<W::Input> {
    decode_object(W::TYPE_NAME, input)
}

/// Decodes run input given as JSON: an object (`null` stands for `{}`); anything else, or
/// an object that does not fit, is [`Error::Input`] naming `component`.
pub(crate) fn decode_object<T: DeserializeOwned>(
    component: &'static str,
    input: Value,
) -> Result<T> {
    let input = match input {
        Value::Null => Value::Object(Map::new()),
        input @ Value::Object(_) => input,
        other => {
            return Err(Error::Input {
                workflow: component,
                field: String::new(),
                source: serde::de::Error::custom(format!(
                    "the input must be a JSON object, not {}",
                    match other {
                        Value::Bool(_) => "a boolean",
                        Value::Number(_) => "a number",
                        Value::String(_) => "a string",
                        _ => "an array",
                    }
                )),
            });
        }
    };
    serde_path_to_error::deserialize(input).map_err(|error| {
        let path = error.path().to_string();
        let source = error.into_inner();
        Error::Input {
            workflow: component,
            field: field_path(&path, &source.to_string()),
            source,
        }
    })
}

/// The input field an error is about: the path serde stopped at, joined with the field a
/// `missing field` or `unknown field` message names (serde reports those at the object).
fn field_path(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(name) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        Some(name) if path.is_empty() => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None => path.to_owned(),
    }
}

/// A workflow behind a pointer, run from JSON: what a server holds to run workflows of any
/// type. Every [`RunWorkflow`] is one. (The method names differ from [`RunWorkflow`]'s so
/// both traits can be in scope at once.)
pub trait DynWorkflow: Send {
    /// The workflow's type name.
    fn type_name(&self) -> &'static str;
    /// The display name.
    fn workflow_name(&self) -> &str;
    /// The parameters of `run`.
    fn parameters(&self) -> &'static [Parameter];
    /// The JSON Schema of the input.
    fn schema(&self) -> schemars::Schema;
    /// Runs from JSON arguments.
    fn call_json(&mut self, input: Value) -> BoxFuture<'_, Result<RunResponse>>;
    /// Runs from JSON arguments, streaming events.
    fn call_json_stream(&mut self, input: Value) -> RunStream<'_>;
    /// Runs from JSON arguments, the stream owning the workflow (`'static`).
    fn into_json_stream(self: Box<Self>, input: Value) -> RunStream<'static>;
}

impl<W: RunWorkflow> DynWorkflow for W {
    fn type_name(&self) -> &'static str {
        W::TYPE_NAME
    }
    fn workflow_name(&self) -> &str {
        Workflow::name(self)
    }
    fn parameters(&self) -> &'static [Parameter] {
        W::PARAMETERS
    }
    fn schema(&self) -> schemars::Schema {
        W::input_schema()
    }
    fn call_json(&mut self, input: Value) -> BoxFuture<'_, Result<RunResponse>> {
        RunWorkflow::run_json(self, input)
    }
    fn call_json_stream(&mut self, input: Value) -> RunStream<'_> {
        RunWorkflow::run_json_stream(self, input)
    }
    fn into_json_stream(self: Box<Self>, input: Value) -> RunStream<'static> {
        match decode_input::<W>(input) {
            Ok(input) => run_to_stream_owned(*self, input),
            Err(error) => RunStream::failed(error),
        }
    }
}
