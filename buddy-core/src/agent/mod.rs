//! Agents: a model with instructions, tools and a session, run by a workflow or on their own.

mod prompt;
mod run;

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::engine::{EventSink, RunStream};
use crate::member::{Attachment, Member, MemberContext};
use crate::model::{IntoModel, Message, Model, ResponseFormat, ToolChoice};
use crate::run::RunResponse;
use crate::session::StateMerge;
use crate::storage::{IntoStorage, Storage};
use crate::tool::{IntoTools, Tool};

/// The default bound on model calls in one run (see [`Agent::max_turns`]).
pub const DEFAULT_MAX_TURNS: usize = 10;

/// A language model with a role: instructions, tools, and a session whose history it can
/// read.
///
/// Cloning is cheap (the configuration is behind an `Arc`), and running takes `&self`, so
/// a workflow can run several agents at once with `futures::future::join_all`. Inside a
/// workflow, [`Member::attach`] gives the agent the workflow's session and user before every
/// run; on its own the agent uses the session set with [`session_id`](Agent::session_id), or
/// one it generates on its first run.
///
/// A run sends the system message (description, instructions, expected output), the history
/// of earlier runs when [`add_history_to_messages`](Agent::add_history_to_messages) is set,
/// and the input; then, while the model asks for tool calls, runs the calls of each turn
/// concurrently and sends their results back, at most [`max_turns`](Agent::max_turns) model
/// calls in all.
///
/// ```no_run
/// # extern crate buddy_core as buddy;
/// use buddy::agent::Agent;
/// use buddy::model::OpenAIChat;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> buddy::Result<()> {
/// let agent = Agent::new(OpenAIChat::new("gpt-4o-mini"))
///     .name("researcher")
///     .instructions("Answer in one sentence.");
/// let response = agent.run("What is a qubit?").await?;
/// println!("{}", response.text());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Agent {
    config: Arc<AgentConfig>,
    /// The session, user, debug mode and member path the parent run attached.
    attached: Attachment,
}

#[derive(Clone)]
pub(crate) struct AgentConfig {
    pub(crate) model: Arc<dyn Model>,
    pub(crate) name: Option<String>,
    pub(crate) agent_id: OnceLock<String>,
    pub(crate) default_session_id: OnceLock<String>,
    pub(crate) description: Option<String>,
    pub(crate) instructions: Vec<String>,
    pub(crate) expected_output: Option<String>,
    pub(crate) tools: Vec<Arc<dyn Tool>>,
    pub(crate) add_history_to_messages: bool,
    pub(crate) num_history_runs: usize,
    pub(crate) storage: Option<Arc<dyn Storage>>,
    /// Runs kept in process when history is on and there is no storage.
    pub(crate) memory: OnceLock<Arc<dyn Storage>>,
    pub(crate) session_state: Option<Map<String, Value>>,
    pub(crate) state_merge: StateMerge,
    pub(crate) response_format: Option<ResponseFormat>,
    pub(crate) tool_choice: Option<ToolChoice>,
    pub(crate) max_turns: usize,
    /// Tools whose calls a person confirms first (besides those that say so themselves).
    pub(crate) confirm_tools: Vec<String>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("Agent")
            .field("name", &c.name)
            .field("agent_id", &c.agent_id.get())
            .field("model", &c.model)
            .field("session_id", &self.attached.session_id)
            .field("user_id", &self.attached.user_id)
            .field("description", &c.description)
            .field("instructions", &c.instructions)
            .field("expected_output", &c.expected_output)
            .field(
                "tools",
                &c.tools.iter().map(|tool| tool.name()).collect::<Vec<_>>(),
            )
            .field("add_history_to_messages", &c.add_history_to_messages)
            .field("num_history_runs", &c.num_history_runs)
            .field("storage", &c.storage)
            .field("max_turns", &c.max_turns)
            .field("debug_mode", &self.attached.debug_mode)
            .field("path", &self.attached.path)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent answering with `model` (any [`Model`], or an `Arc` of one).
    ///
    /// Cheap: the id and the default session id are generated on first use.
    pub fn new(model: impl IntoModel) -> Self {
        Agent {
            config: Arc::new(AgentConfig {
                model: model.into_model(),
                name: None,
                agent_id: OnceLock::new(),
                default_session_id: OnceLock::new(),
                description: None,
                instructions: Vec::new(),
                expected_output: None,
                tools: Vec::new(),
                add_history_to_messages: false,
                num_history_runs: 3,
                storage: None,
                memory: OnceLock::new(),
                session_state: None,
                state_merge: StateMerge::default(),
                response_format: None,
                tool_choice: None,
                max_turns: DEFAULT_MAX_TURNS,
                confirm_tools: Vec::new(),
            }),
            attached: Attachment::default(),
        }
    }

    fn config_mut(&mut self) -> &mut AgentConfig {
        Arc::make_mut(&mut self.config)
    }

    /// The agent's name (also used in error messages and events).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config_mut().name = Some(name.into());
        self
    }

    /// The agent's id (a fresh UUID on first use by default).
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.config_mut().agent_id = OnceLock::from(agent_id.into());
        self
    }

    /// A description of the agent, the first line of its system message.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.config_mut().description = Some(description.into());
        self
    }

    /// Adds an instruction to the system message (several become a list).
    pub fn instructions(mut self, instruction: impl Into<String>) -> Self {
        self.config_mut().instructions.push(instruction.into());
        self
    }

    /// What the answer should look like, added to the system message.
    pub fn expected_output(mut self, expected_output: impl Into<String>) -> Self {
        self.config_mut().expected_output = Some(expected_output.into());
        self
    }

    /// Adds tools: one tool, a toolkit, or a `Vec<Arc<dyn Tool>>`.
    pub fn tool(mut self, tools: impl IntoTools) -> Self {
        self.config_mut().tools.extend(tools.into_tools());
        self
    }

    /// Adds tools (same as [`tool`](Agent::tool), for readability with toolkits).
    pub fn tools(self, tools: impl IntoTools) -> Self {
        self.tool(tools)
    }

    /// Sends the messages of the agent's earlier runs in its session: read from its
    /// [`storage`](Agent::storage), or, without storage, from runs kept in process (shared
    /// by the agent's clones).
    pub fn add_history_to_messages(mut self, add: bool) -> Self {
        self.config_mut().add_history_to_messages = add;
        self
    }

    /// How many earlier runs the history holds (default 3).
    pub fn num_history_runs(mut self, runs: usize) -> Self {
        self.config_mut().num_history_runs = runs;
        self
    }

    /// Where the agent's session (its runs) is kept.
    pub fn storage(mut self, storage: impl IntoStorage) -> Self {
        self.config_mut().storage = Some(storage.into_storage());
        self
    }

    /// The session to run in (a workflow sets its own with [`Member::attach`]).
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.attached.session_id = Some(Arc::from(session_id.into()));
        self
    }

    /// The user the agent's session belongs to.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.attached.user_id = Some(Arc::from(user_id.into()));
        self
    }

    /// The initial state of the agent's session (a JSON object): written to a new session;
    /// for a stored session, keys it lacks are added and stored values win (see
    /// [`state_merge`](Agent::state_merge)), the rule workflows follow.
    pub fn session_state(mut self, state: Map<String, Value>) -> Self {
        self.config_mut().session_state = Some(state);
        self
    }

    /// How the configured state meets a stored session's state (default: stored values
    /// win; [`StateMerge::CodeWins`] writes the configured values on every run).
    pub fn state_merge(mut self, merge: StateMerge) -> Self {
        self.config_mut().state_merge = merge;
        self
    }

    /// Asks the model for this shape of answer on every run (see
    /// [`run_typed`](Agent::run_typed) for one run).
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.config_mut().response_format = Some(format);
        self
    }

    /// Tools whose every call a person confirms before it runs, by name (as
    /// `#[tool(requires_confirmation)]` does for one tool). In a durable run the call waits,
    /// durably, for a [`ToolConfirmation`](crate::tool::ToolConfirmation) — approve, reject
    /// (the model is told) or edit the arguments; outside one the call is not run and the
    /// model is told why.
    pub fn confirm_tools<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config_mut()
            .confirm_tools
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Whether and which tool the model must call (the provider decides by default).
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.config_mut().tool_choice = Some(choice);
        self
    }

    /// Logs the run's messages, model answers and tool calls at `debug` level, installing
    /// a stderr subscriber if the program has none (also on with `BUDDY_DEBUG=true`, or when
    /// the workflow running the agent is in debug mode).
    pub fn debug_mode(mut self, debug: bool) -> Self {
        self.attached.debug_mode = debug;
        self
    }

    /// The most model calls in one run (default 10); a run that still gets tool calls on
    /// the last one fails with [`Error::MaxTurns`](crate::Error::MaxTurns).
    pub fn max_turns(mut self, max_turns: usize) -> Self {
        self.config_mut().max_turns = max_turns.max(1);
        self
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        self.config
            .agent_id
            .get_or_init(|| uuid::Uuid::new_v4().to_string())
    }

    /// The agent's name, if it has one.
    pub fn agent_name(&self) -> Option<&str> {
        self.config.name.as_deref()
    }

    /// The session the next run belongs to.
    pub fn current_session_id(&self) -> &str {
        self.attached.session_id(&self.config.default_session_id)
    }

    /// The user the agent runs for, if any.
    pub fn current_user_id(&self) -> Option<&str> {
        self.attached.user_id.as_deref()
    }

    /// The storage given with [`storage`](Agent::storage), if any.
    pub fn storage_handle(&self) -> Option<&Arc<dyn Storage>> {
        self.config.storage.as_ref()
    }

    /// The model.
    pub fn model(&self) -> &Arc<dyn Model> {
        &self.config.model
    }

    /// The tools.
    pub fn tool_list(&self) -> &[Arc<dyn Tool>] {
        &self.config.tools
    }

    /// Runs the agent on `input` (a string, or a [`Message`]) and returns its answer, the
    /// run's messages, tool calls and metrics.
    ///
    /// In a durable run the run's journal key is allocated here, when the future is made
    /// (so runs joined with `join!` keep their keys on resume).
    pub fn run(
        &self,
        input: impl Into<Message>,
    ) -> impl Future<Output = crate::Result<RunResponse>> + Send + '_ {
        let slot = self.journal_slot();
        let input = input.into();
        async move {
            self.execute(input, None, &EventSink::disabled(), slot)
                .await
        }
    }

    /// Runs the agent on `input`, streaming events: `run_started`, `run_content` deltas,
    /// `tool_call_started` / `tool_call_completed`, then `run_completed` with the full
    /// response. An error ends the stream with `Err`. Every event carries the agent's id.
    /// Dropping the stream before the end records the run `cancelled`.
    pub fn run_stream(&self, input: impl Into<Message>) -> RunStream<'static> {
        let agent = self.clone();
        let input = input.into();
        let slot = self.journal_slot();
        RunStream::start(move |sink| async move { agent.execute(input, None, &sink, slot).await })
    }

    /// Runs the agent asking for structured output that fits `T` (a strict JSON Schema),
    /// and decodes the answer into `T`.
    ///
    /// Output that does not decode fails with
    /// [`Error::StructuredOutput`](crate::Error::StructuredOutput), which keeps the text.
    pub fn run_typed<T>(
        &self,
        input: impl Into<Message>,
    ) -> impl Future<Output = crate::Result<T>> + Send + '_
    where
        T: DeserializeOwned + schemars::JsonSchema,
    {
        let response = self.run_with_format::<T>(input.into());
        async move { decode::<T>(&response.await?) }
    }

    /// Like [`run_typed`](Agent::run_typed), also returning the whole response.
    pub fn run_typed_response<T>(
        &self,
        input: impl Into<Message>,
    ) -> impl Future<Output = crate::Result<(T, RunResponse)>> + Send + '_
    where
        T: DeserializeOwned + schemars::JsonSchema,
    {
        let response = self.run_with_format::<T>(input.into());
        async move {
            let response = response.await?;
            let value = decode::<T>(&response)?;
            Ok((value, response))
        }
    }

    /// A run asking for structured output that fits `T`.
    fn run_with_format<T: schemars::JsonSchema>(
        &self,
        input: Message,
    ) -> impl Future<Output = crate::Result<RunResponse>> + Send + '_ {
        let format = ResponseFormat::json_schema_for::<T>();
        let slot = self.journal_slot();
        async move {
            self.execute(input, Some(format), &EventSink::disabled(), slot)
                .await
        }
    }
}

fn decode<T: DeserializeOwned>(response: &RunResponse) -> crate::Result<T> {
    let fail = |source| crate::Error::StructuredOutput {
        type_name: std::any::type_name::<T>(),
        content: response.text().into_owned(),
        source,
    };
    match &response.content {
        Some(Value::String(text)) => serde_json::from_str(strip_fences(text)).map_err(fail),
        Some(other) => T::deserialize(other).map_err(fail),
        None => serde_json::from_str("").map_err(fail),
    }
}

/// Removes a Markdown code fence around JSON, which some models add.
fn strip_fences(text: &str) -> &str {
    let trimmed = text.trim();
    trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(trimmed)
}

impl Member for Agent {
    /// Runs in the parent's session, for its user, in debug mode when it is, and stores its
    /// session at its member path.
    fn attach(&mut self, context: &MemberContext) {
        self.attached.attach(context);
    }
}

impl Agent {
    /// The agent's description, if it has one (what a team's leader reads about it).
    pub fn agent_description(&self) -> Option<&str> {
        self.config.description.as_deref()
    }
}

/// Decodes structured output into `T` the way [`Agent::run_typed`] does (teams use it too).
pub(crate) fn decode_output<T: DeserializeOwned>(response: &RunResponse) -> crate::Result<T> {
    decode(response)
}
