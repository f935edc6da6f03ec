//! Teams: a leader model that routes a task to one member, coordinates several, or has all of
//! them collaborate, then answers.
//!
//! Where a workflow puts the control flow in code, a team lets a model decide who does what.
//! A team is a [`Member`] like an agent: a workflow that holds one hands it its session and
//! user before every run.

mod prompt;
mod run;

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use serde_json::{Map, Value};

use crate::agent::Agent;
use crate::engine::{EventSink, RunStream};
use crate::member::{Attachment, Member, MemberContext};
use crate::model::{IntoModel, Message, Model, ResponseFormat};
use crate::run::RunResponse;
use crate::session::StateMerge;
use crate::storage::{IntoStorage, Storage};

/// The default bound on leader model calls in one team run.
pub const DEFAULT_TEAM_MAX_TURNS: usize = 8;
/// The default bound on how deep teams may delegate into nested teams.
pub const DEFAULT_MAX_DEPTH: usize = 3;

/// How a team's leader uses its members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TeamMode {
    /// The leader picks one member (a `forward_task_to_member` tool call); that member's
    /// answer is the team's answer. The leader may answer simple messages itself, and may
    /// pick another member when one fails.
    Route,
    /// The leader delegates sub-tasks (`transfer_task_to_member` tool calls naming the member,
    /// the task and the expected output; the calls of one turn run concurrently) and writes
    /// the final answer from their results.
    #[default]
    Coordinate,
    /// Every member gets the task at once; the leader synthesises their answers.
    Collaborate,
}

impl TeamMode {
    /// The mode's name (`route`, `coordinate`, `collaborate`).
    pub fn as_str(self) -> &'static str {
        match self {
            TeamMode::Route => "route",
            TeamMode::Coordinate => "coordinate",
            TeamMode::Collaborate => "collaborate",
        }
    }
}

/// A member of a team: an agent or a nested team.
#[derive(Clone, Debug)]
pub enum TeamMember {
    /// An agent.
    Agent(Agent),
    /// A nested team.
    Team(Team),
}

impl From<Agent> for TeamMember {
    fn from(agent: Agent) -> Self {
        TeamMember::Agent(agent)
    }
}

impl From<Team> for TeamMember {
    fn from(team: Team) -> Self {
        TeamMember::Team(team)
    }
}

impl TeamMember {
    /// The id the leader names the member by: its name, or its id when it has none.
    pub fn member_id(&self) -> String {
        match self {
            TeamMember::Agent(agent) => agent
                .agent_name()
                .map_or_else(|| agent.id().to_owned(), str::to_owned),
            TeamMember::Team(team) => team
                .team_name()
                .map_or_else(|| team.id().to_owned(), str::to_owned),
        }
    }

    fn description(&self) -> Option<String> {
        match self {
            TeamMember::Agent(agent) => agent.agent_description().map(str::to_owned),
            TeamMember::Team(team) => team.config.description.clone(),
        }
    }
}

impl Member for TeamMember {
    fn attach(&mut self, context: &MemberContext) {
        match self {
            TeamMember::Agent(agent) => agent.attach(context),
            TeamMember::Team(team) => team.attach(context),
        }
    }
}

/// A leader model and its members.
///
/// Cloning is cheap (the configuration is behind an `Arc`) and running takes `&self`.
///
/// ```no_run
/// # extern crate buddy_core as buddy;
/// use buddy::agent::Agent;
/// use buddy::model::OpenAIChat;
/// use buddy::team::{Team, TeamMode};
///
/// # async fn example() -> buddy::Result<()> {
/// let team = Team::new(OpenAIChat::new("gpt-4o"), TeamMode::Coordinate)
///     .name("newsroom")
///     .member(Agent::new(OpenAIChat::new("gpt-4o-mini")).name("researcher"))
///     .member(Agent::new(OpenAIChat::new("gpt-4o-mini")).name("writer"))
///     .instructions("Research first, then have the writer draft the piece.");
/// let response = team.run("Write about qubits.").await?;
/// for member in &response.member_responses {
///     println!("{:?}: {}", member.agent_id, member.text());
/// }
/// println!("{}", response.text());
/// # Ok(())
/// # }
/// # let _ = example;
/// ```
#[derive(Clone)]
pub struct Team {
    config: Arc<TeamConfig>,
    /// The session, user, debug mode and member path the parent run attached.
    attached: Attachment,
}

#[derive(Clone)]
struct TeamConfig {
    leader: Arc<dyn Model>,
    mode: TeamMode,
    members: Vec<TeamMember>,
    name: Option<String>,
    team_id: OnceLock<String>,
    default_session_id: OnceLock<String>,
    description: Option<String>,
    instructions: Vec<String>,
    expected_output: Option<String>,
    storage: Option<Arc<dyn Storage>>,
    session_state: Option<Map<String, Value>>,
    state_merge: StateMerge,
    response_format: Option<ResponseFormat>,
    max_turns: usize,
    max_depth: usize,
}

impl fmt::Debug for Team {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("Team")
            .field("name", &c.name)
            .field("team_id", &c.team_id.get())
            .field("mode", &c.mode)
            .field("leader", &c.leader)
            .field("members", &c.members)
            .field("session_id", &self.attached.session_id)
            .field("user_id", &self.attached.user_id)
            .field("storage", &c.storage)
            .field("debug_mode", &self.attached.debug_mode)
            .field("path", &self.attached.path)
            .finish_non_exhaustive()
    }
}

impl Team {
    /// A team whose leader is `leader`, working in `mode`.
    pub fn new(leader: impl IntoModel, mode: TeamMode) -> Self {
        Team {
            config: Arc::new(TeamConfig {
                leader: leader.into_model(),
                mode,
                members: Vec::new(),
                name: None,
                team_id: OnceLock::new(),
                default_session_id: OnceLock::new(),
                description: None,
                instructions: Vec::new(),
                expected_output: None,
                storage: None,
                session_state: None,
                state_merge: StateMerge::default(),
                response_format: None,
                max_turns: DEFAULT_TEAM_MAX_TURNS,
                max_depth: DEFAULT_MAX_DEPTH,
            }),
            attached: Attachment::default(),
        }
    }

    fn config_mut(&mut self) -> &mut TeamConfig {
        Arc::make_mut(&mut self.config)
    }

    /// Adds a member: an [`Agent`] or a nested [`Team`].
    pub fn member(mut self, member: impl Into<TeamMember>) -> Self {
        self.config_mut().members.push(member.into());
        self
    }

    /// The team's name (how a parent team's leader names it).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config_mut().name = Some(name.into());
        self
    }

    /// The team's id (a fresh UUID on first use by default).
    pub fn team_id(mut self, team_id: impl Into<String>) -> Self {
        self.config_mut().team_id = OnceLock::from(team_id.into());
        self
    }

    /// What the team does (shown to a parent team's leader).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.config_mut().description = Some(description.into());
        self
    }

    /// Adds an instruction for the leader.
    pub fn instructions(mut self, instruction: impl Into<String>) -> Self {
        self.config_mut().instructions.push(instruction.into());
        self
    }

    /// What the team's answer should look like.
    pub fn expected_output(mut self, expected_output: impl Into<String>) -> Self {
        self.config_mut().expected_output = Some(expected_output.into());
        self
    }

    /// Where the team's session (its runs and member interactions) is kept.
    pub fn storage(mut self, storage: impl IntoStorage) -> Self {
        self.config_mut().storage = Some(storage.into_storage());
        self
    }

    /// The session to run in (a workflow sets its own with [`Member::attach`]).
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.attached.session_id = Some(Arc::from(session_id.into()));
        self
    }

    /// The user the team runs for.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.attached.user_id = Some(Arc::from(user_id.into()));
        self
    }

    /// The initial state of the team's session (a JSON object): written to a new session;
    /// for a stored session, keys it lacks are added and stored values win (see
    /// [`state_merge`](Team::state_merge)), the rule workflows follow.
    pub fn session_state(mut self, state: Map<String, Value>) -> Self {
        self.config_mut().session_state = Some(state);
        self
    }

    /// How the configured state meets a stored session's state (default: stored values win).
    pub fn state_merge(mut self, merge: StateMerge) -> Self {
        self.config_mut().state_merge = merge;
        self
    }

    /// Logs the run at `debug` level (see [`Agent::debug_mode`]); members run in debug mode
    /// too.
    pub fn debug_mode(mut self, debug: bool) -> Self {
        self.attached.debug_mode = debug;
        self
    }

    /// Asks the leader for this shape of final answer on every run.
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.config_mut().response_format = Some(format);
        self
    }

    /// The most leader model calls in one run (default 8).
    pub fn max_turns(mut self, max_turns: usize) -> Self {
        self.config_mut().max_turns = max_turns.max(1);
        self
    }

    /// How many levels of nested teams a run may delegate through (default 3); a delegation
    /// past it gives the leader an error result instead of running the member.
    pub fn max_depth(mut self, max_depth: usize) -> Self {
        self.config_mut().max_depth = max_depth;
        self
    }

    /// The team's id.
    pub fn id(&self) -> &str {
        self.config
            .team_id
            .get_or_init(|| uuid::Uuid::new_v4().to_string())
    }

    /// The team's name, if it has one.
    pub fn team_name(&self) -> Option<&str> {
        self.config.name.as_deref()
    }

    /// What the team does, if it says.
    pub fn team_description(&self) -> Option<&str> {
        self.config.description.as_deref()
    }

    /// The storage given with [`storage`](Team::storage), if any.
    pub fn storage_handle(&self) -> Option<&Arc<dyn Storage>> {
        self.config.storage.as_ref()
    }

    /// The mode.
    pub fn mode(&self) -> TeamMode {
        self.config.mode
    }

    /// The members, in the order they were added.
    pub fn members(&self) -> &[TeamMember] {
        &self.config.members
    }

    /// The session the next run belongs to.
    pub fn current_session_id(&self) -> &str {
        self.attached.session_id(&self.config.default_session_id)
    }

    /// The user the team runs for, if any.
    pub fn current_user_id(&self) -> Option<&str> {
        self.attached.user_id.as_deref()
    }

    /// Runs the team on `input` and returns its answer; `member_responses` holds every
    /// member's response, in the order they finished.
    ///
    /// In a durable run the run's journal key is allocated here, when the future is made.
    pub fn run(
        &self,
        input: impl Into<Message>,
    ) -> impl Future<Output = crate::Result<RunResponse>> + Send + '_ {
        let format = self.config.response_format.clone();
        let slot = self.journal_slot();
        self.execute(input.into(), format, 0, &DISABLED, slot)
    }

    /// Runs the team on `input`, streaming the team's events and its members' events (a
    /// member's event carries the member's path in
    /// [`RunEvent::member_path`](crate::run::RunEvent::member_path) and its own run id in
    /// `source_run_id`); the last event is the team's `run_completed`. Dropping the stream
    /// before the end records the run `cancelled`.
    pub fn run_stream(&self, input: impl Into<Message>) -> RunStream<'static> {
        let team = self.clone();
        let input = input.into();
        let format = self.config.response_format.clone();
        let slot = self.journal_slot();
        RunStream::start(
            move |sink| async move { team.execute(input, format, 0, &sink, slot).await },
        )
    }

    /// Runs the team asking for a final answer that fits `T`, and decodes it.
    pub fn run_typed<T>(
        &self,
        input: impl Into<Message>,
    ) -> impl Future<Output = crate::Result<T>> + Send + '_
    where
        T: DeserializeOwned + schemars::JsonSchema,
    {
        let format = ResponseFormat::json_schema_for::<T>();
        let slot = self.journal_slot();
        let response = self.execute(input.into(), Some(format), 0, &DISABLED, slot);
        async move { crate::agent::decode_output::<T>(&response.await?) }
    }
}

/// The sink of runs nobody streams, for futures that borrow one for their whole life.
static DISABLED: std::sync::LazyLock<EventSink> = std::sync::LazyLock::new(EventSink::disabled);

impl Member for Team {
    /// Runs in the parent's session, for its user, in debug mode when it is, and stores its
    /// session at its member path; its members get the same, one level down.
    fn attach(&mut self, context: &MemberContext) {
        self.attached.attach(context);
    }
}
