//! [`Component`]: what a server (or a CLI) needs from a workflow, an agent or a team it only
//! knows behind a pointer, so that one registry holds all three kinds.
//!
//! A component describes itself (kind, name, parameters, the JSON Schema of its input),
//! starts runs from JSON on a fresh, independent instance per request (the input decoded
//! before anything runs or is written), and reads, lists, renames and deletes its sessions.
//!
//! ```
//! # extern crate buddy_core as buddy;
//! use std::sync::Arc;
//! use buddy::agent::Agent;
//! use buddy::component::{Component, RunRequest};
//! use buddy::testing::ScriptedModel;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> buddy::Result<()> {
//! let registry: Vec<Arc<dyn Component>> =
//!     vec![Arc::new(Agent::new(ScriptedModel::new().text("hi")).name("greeter"))];
//! let greeter = &registry[0];
//! assert_eq!(greeter.name(), "greeter");
//! let request = RunRequest::new(serde_json::json!({"message": "hello"}));
//! let response = greeter.start(request)?.into_response().await?;
//! assert_eq!(response.text(), "hi");
//! // Bad input is refused before the run starts.
//! assert!(greeter.start(RunRequest::new(serde_json::json!({"msg": 1}))).is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::Agent;
use crate::engine::RunStream;
use crate::error::{Error, Result};
use crate::member::{Member, MemberContext};
use crate::session::{Session, SessionKey, SessionKind, SessionQuery, SessionWrite};
use crate::storage::{ReadOptions, Storage};
use crate::team::Team;
use crate::workflow::{Parameter, RunWorkflow, Workflow, decode_object as decode};

/// One run asked of a component: its JSON input, and optionally the session and user.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct RunRequest {
    /// The input: a workflow's arguments by name, or `{"message": "..."}` for agents and
    /// teams (`null` stands for `{}`).
    pub input: Value,
    /// The session to run in (a fresh one when `None`).
    pub session_id: Option<String>,
    /// The user the run is for.
    pub user_id: Option<String>,
}

impl RunRequest {
    /// A request with `input`, in a fresh session, for no particular user.
    pub fn new(input: Value) -> Self {
        RunRequest {
            input,
            ..RunRequest::default()
        }
    }

    /// The same request in session `session_id`.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The same request for user `user_id`.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// A workflow, an agent or a team behind one object-safe surface.
///
/// Every [`Agent`] and [`Team`] is one; a workflow becomes one with
/// [`WorkflowComponent`] (from a template instance or a factory).
pub trait Component: Send + Sync + fmt::Debug {
    /// Which kind of component this is.
    fn kind(&self) -> SessionKind;
    /// The component's display name.
    fn name(&self) -> &str;
    /// Its id: the workflow, agent or team id its sessions are stored under.
    fn id(&self) -> &str;
    /// What it does, if it says.
    fn description(&self) -> Option<&str>;
    /// The parameters of a run.
    fn parameters(&self) -> &'static [Parameter];
    /// The JSON Schema of a run's input.
    fn input_schema(&self) -> schemars::Schema;
    /// Where its sessions are stored, if anywhere.
    fn storage(&self) -> Option<&Arc<dyn Storage>>;

    /// Starts a run on an independent instance: the input is decoded first, and an input
    /// that does not fit is [`Error::Input`] with nothing run and nothing written. The
    /// stream owns the instance (`'static`): spawn it, or hand it to an HTTP response.
    fn start(&self, request: RunRequest) -> Result<RunStream<'static>>;

    /// Whether runs are durable (journaled, resumable, able to pause).
    fn is_durable(&self) -> bool {
        false
    }

    /// Resumes durable run `run_id` on a fresh instance (see
    /// [`RunWorkflow::resume`]); a component whose runs are not
    /// durable fails with [`DurableError::NotDurable`](crate::durable::DurableError).
    fn resume(&self, run_id: &str) -> RunStream<'static> {
        let _ = run_id;
        RunStream::failed(Error::Durable(crate::durable::DurableError::NotDurable {
            what: "`resume`",
            hint: "only workflows with `#[workflow(durable)]` can be resumed",
        }))
    }

    /// The component's top-level sessions matching `query`, newest first (empty without
    /// storage).
    fn list_sessions(&self, query: SessionQuery) -> BoxFuture<'_, Result<Vec<Session>>> {
        let sessions = self.sessions();
        Box::pin(async move { sessions.list(query).await })
    }

    /// One session with its `recent_runs` most recent runs; `None` if it does not exist.
    fn read_session<'a>(
        &'a self,
        session_id: &'a str,
        recent_runs: usize,
    ) -> BoxFuture<'a, Result<Option<Session>>> {
        let sessions = self.sessions();
        Box::pin(async move { sessions.read(session_id, recent_runs).await })
    }

    /// Renames a session without touching its state; [`Error::SessionNotFound`] if it does
    /// not exist.
    fn rename_session<'a>(
        &'a self,
        session_id: &'a str,
        session_name: String,
    ) -> BoxFuture<'a, Result<()>> {
        let sessions = self.sessions();
        Box::pin(async move { sessions.rename(session_id, session_name).await })
    }

    /// Deletes a session with its runs and its members' sessions; a missing one is not an
    /// error.
    fn delete_session<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<()>> {
        let sessions = self.sessions();
        Box::pin(async move { sessions.delete(session_id).await })
    }

    #[doc(hidden)]
    fn sessions(&self) -> Sessions {
        Sessions {
            storage: self.storage().cloned(),
            kind: self.kind(),
            component_id: self.id().to_owned(),
        }
    }
}

/// The sessions of one component in its storage: what the session operations of
/// [`Component`] share.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct Sessions {
    storage: Option<Arc<dyn Storage>>,
    kind: SessionKind,
    component_id: String,
}

impl Sessions {
    fn key(&self, session_id: &str) -> SessionKey {
        SessionKey::new(session_id, self.kind)
    }

    async fn list(&self, query: SessionQuery) -> Result<Vec<Session>> {
        let Some(storage) = &self.storage else {
            return Ok(Vec::new());
        };
        let query = query
            .kind(self.kind)
            .scope("")
            .component(self.component_id.clone());
        Ok(storage.list_sessions(&query).await?)
    }

    /// The session, if it exists and belongs to this component.
    async fn read(&self, session_id: &str, recent_runs: usize) -> Result<Option<Session>> {
        let Some(storage) = &self.storage else {
            return Ok(None);
        };
        let session = storage
            .read(&self.key(session_id), &ReadOptions::with_runs(recent_runs))
            .await?;
        Ok(session
            .filter(|session| session.component_id.as_deref() == Some(self.component_id.as_str())))
    }

    async fn rename(&self, session_id: &str, session_name: String) -> Result<()> {
        let not_found = || Error::SessionNotFound {
            session_id: session_id.to_owned(),
        };
        let storage = self.storage.as_ref().ok_or_else(not_found)?;
        self.read(session_id, 0).await?.ok_or_else(not_found)?;
        let write = SessionWrite {
            session_name: Some(session_name),
            ..SessionWrite::new(self.key(session_id))
        };
        crate::storage::commit_detached(storage, write).await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        if self.read(session_id, 0).await?.is_none() {
            return Ok(());
        }
        if let Some(storage) = &self.storage {
            storage.delete_session(&self.key(session_id)).await?;
        }
        Ok(())
    }
}

/// The input of an agent or a team run.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// The message to answer.
    pub message: String,
}

const MESSAGE_PARAMETERS: &[Parameter] = &[Parameter {
    name: "message",
    rust_type: "String",
    default: None,
    required: true,
}];

/// What agents and teams share as components: a message in, the component's own stream out.
trait Conversational: Member + Clone + fmt::Debug + Send + Sync + 'static {
    const KIND: SessionKind;
    const TYPE_NAME: &'static str;
    fn display_name(&self) -> &str;
    fn component_id(&self) -> &str;
    fn about(&self) -> Option<&str>;
    fn stored(&self) -> Option<&Arc<dyn Storage>>;
    fn stream(&self, message: String) -> RunStream<'static>;
}

impl Conversational for Agent {
    const KIND: SessionKind = SessionKind::Agent;
    const TYPE_NAME: &'static str = "Agent";
    fn display_name(&self) -> &str {
        self.agent_name().unwrap_or_else(|| self.id())
    }
    fn component_id(&self) -> &str {
        self.id()
    }
    fn about(&self) -> Option<&str> {
        self.agent_description()
    }
    fn stored(&self) -> Option<&Arc<dyn Storage>> {
        self.storage_handle()
    }
    fn stream(&self, message: String) -> RunStream<'static> {
        self.run_stream(message)
    }
}

impl Conversational for Team {
    const KIND: SessionKind = SessionKind::Team;
    const TYPE_NAME: &'static str = "Team";
    fn display_name(&self) -> &str {
        self.team_name().unwrap_or_else(|| self.id())
    }
    fn component_id(&self) -> &str {
        self.id()
    }
    fn about(&self) -> Option<&str> {
        self.team_description()
    }
    fn stored(&self) -> Option<&Arc<dyn Storage>> {
        self.storage_handle()
    }
    fn stream(&self, message: String) -> RunStream<'static> {
        self.run_stream(message)
    }
}

impl<T: Conversational> Component for T {
    fn kind(&self) -> SessionKind {
        T::KIND
    }
    fn name(&self) -> &str {
        self.display_name()
    }
    fn id(&self) -> &str {
        self.component_id()
    }
    fn description(&self) -> Option<&str> {
        self.about()
    }
    fn parameters(&self) -> &'static [Parameter] {
        MESSAGE_PARAMETERS
    }
    fn input_schema(&self) -> schemars::Schema {
        schemars::schema_for!(MessageInput)
    }
    fn storage(&self) -> Option<&Arc<dyn Storage>> {
        self.stored()
    }
    /// Runs a copy in the request's session (a fresh one when it names none), for its user.
    fn start(&self, request: RunRequest) -> Result<RunStream<'static>> {
        let input: MessageInput = decode(T::TYPE_NAME, request.input)?;
        let session_id = request
            .session_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut component = self.clone();
        component.attach(&MemberContext::new(session_id).user_id(request.user_id));
        Ok(component.stream(input.message))
    }
}

/// A workflow served as a [`Component`]: every run gets its own instance, made from a
/// template (cloned, then reset to no session, the initial state and empty memory) or by a
/// factory. Instances share the template's workflow id, so its sessions can be listed:
/// `WorkflowComponent::from_template(ArticleWorkflow::default())`.
pub struct WorkflowComponent<W: RunWorkflow> {
    make: Box<dyn Fn() -> W + Send + Sync>,
    /// An instance for the description, the storage and the workflow id.
    template: W,
}

impl<W: RunWorkflow> fmt::Debug for WorkflowComponent<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowComponent")
            .field("workflow", &W::TYPE_NAME)
            .field("id", &self.template.workflow_id())
            .finish_non_exhaustive()
    }
}

impl<W: RunWorkflow + Sync> WorkflowComponent<W> {
    /// Serves copies of `template`.
    pub fn from_template(template: W) -> Self
    where
        W: Clone,
    {
        let mut template = template;
        template.__buddy_core_mut().ensure_workflow_id();
        let copy = template.clone();
        WorkflowComponent {
            make: Box::new(move || copy.clone()),
            template,
        }
    }

    /// Serves instances made by `factory` (called once now for the description, then once
    /// per run); instances without a workflow id get the first instance's.
    pub fn from_factory(factory: impl Fn() -> W + Send + Sync + 'static) -> Self {
        let mut template = factory();
        let id = template.__buddy_core_mut().ensure_workflow_id();
        WorkflowComponent {
            make: Box::new(move || {
                let mut workflow = factory();
                workflow.__buddy_core_mut().adopt_workflow_id(&id);
                workflow
            }),
            template,
        }
    }

    /// A fresh instance for one request.
    pub fn instance(&self) -> W {
        let mut workflow = (self.make)();
        workflow.__buddy_core_mut().reset_for_request();
        workflow
    }
}

impl<W: RunWorkflow + Sync> Component for WorkflowComponent<W> {
    fn kind(&self) -> SessionKind {
        SessionKind::Workflow
    }
    fn name(&self) -> &str {
        self.template.name()
    }
    fn id(&self) -> &str {
        self.template.workflow_id().unwrap_or_default()
    }
    fn description(&self) -> Option<&str> {
        Workflow::description(&self.template)
    }
    fn parameters(&self) -> &'static [Parameter] {
        W::PARAMETERS
    }
    fn input_schema(&self) -> schemars::Schema {
        W::input_schema()
    }
    fn storage(&self) -> Option<&Arc<dyn Storage>> {
        Workflow::storage(&self.template)
    }
    fn start(&self, request: RunRequest) -> Result<RunStream<'static>> {
        let input: W::Input = decode(W::TYPE_NAME, request.input)?;
        let mut workflow = self.instance();
        let core = workflow.__buddy_core_mut();
        if let Some(session_id) = request.session_id {
            core.use_session(session_id);
        }
        core.set_user_id(request.user_id);
        Ok(workflow.into_run_stream(input))
    }
    fn is_durable(&self) -> bool {
        W::DURABLE
    }
    fn resume(&self, run_id: &str) -> RunStream<'static> {
        crate::workflow::run::resume_stream_owned(self.instance(), run_id.to_owned())
    }
}
