//! One team run: the leader's turns, delegation to members (concurrent within a turn; the
//! members' events join the team's stream), and collaboration. The lifecycle around it
//! (ids, events, record, commit) is the run engine's.

use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::prompt::{self, FORWARD_TOOL, TRANSFER_TOOL};
use super::{Team, TeamMember, TeamMode};
use crate::durable::{Slot, within};
use crate::engine::{
    EventSink, MemberStart, RunScope, RunSpec, begin_member, catch_panic, error_chain,
    merge_code_state,
};
use crate::error::{Error, Result};
use crate::member::{Member, MemberContext};
use crate::model::call::call_model;
use crate::model::{Message, ModelRequest, ResponseFormat, ToolCall, ToolDefinition};
use crate::run::{Metrics, RunResponse};
use crate::session::{SessionKind, SessionWrite, StatePatch};
use crate::tool::turn::{CallOutcome, run_calls};

/// What the leader works with during one run.
struct Turns<'a> {
    team: &'a Team,
    members: Vec<TeamMember>,
    input: &'a Message,
    format: Option<ResponseFormat>,
    depth: usize,
    messages: Vec<Message>,
    metrics: Metrics,
}

impl Team {
    /// The journal slot of a run of this team made now, in a durable run.
    pub(crate) fn journal_slot(&self) -> Option<Slot> {
        crate::durable::allocate_member(crate::durable::EntryKind::Team, || {
            self.attached
                .journal_name(self.config.name.as_deref(), "team")
        })
    }

    /// One run of the team on `input` at delegation depth `depth`, its events and its
    /// members' sent into `sink`; in a durable run, the journal entry `slot`. Boxed: teams
    /// nest.
    pub(crate) fn execute<'a>(
        &'a self,
        input: Message,
        format: Option<ResponseFormat>,
        depth: usize,
        sink: &'a EventSink,
        slot: Option<Slot>,
    ) -> BoxFuture<'a, Result<RunResponse>> {
        Box::pin(async move {
            let config = &*self.config;
            let mut spec = RunSpec::member_run(
                SessionKind::Team,
                (self.id(), config.name.as_ref()),
                self.current_session_id(),
                &self.attached,
                config.storage.clone(),
                &input,
            );
            let busy = match begin_member(&mut spec, sink, slot, &(&input, &format, depth))? {
                MemberStart::Replayed(response) => return Ok(*response),
                MemberStart::Run(busy) => busy,
            };
            let mut scope = RunScope::start(spec, sink);
            scope.set_write(self.session_write());
            let span = scope.span().clone();
            let mut response = RunResponse::new();
            response.model = Some(config.leader.id().to_owned());
            let entries = scope.entries().cloned();
            let outcome = catch_panic(within(
                entries,
                self.lead(&mut scope, &input, format, depth, &mut response),
            ))
            .instrument(span.clone())
            .await;
            let result = scope.conclude(outcome, response).instrument(span).await;
            drop(busy);
            result
        })
    }

    pub(crate) fn debug_enabled(&self) -> bool {
        self.attached.debug()
    }

    fn session_write(&self) -> SessionWrite {
        let mut component_data = Map::new();
        if let Some(name) = &self.config.name {
            component_data.insert("name".into(), json!(name));
        }
        component_data.insert("mode".into(), json!(self.config.mode.as_str()));
        SessionWrite {
            component_id: Some(self.id().to_owned()),
            user_id: self.attached.user(),
            component_data,
            ..SessionWrite::default()
        }
    }

    /// The members, attached to this run: the team's session, user and debug mode, each at
    /// its path below the team.
    fn attached_members(&self) -> Vec<TeamMember> {
        let context = MemberContext::new(self.current_session_id())
            .user_id(self.attached.user())
            .debug_mode(self.debug_enabled())
            .path(self.attached.path.clone());
        self.config
            .members
            .iter()
            .map(|member| {
                let mut member = member.clone();
                member.attach(&context.member(&member.member_id()));
                member
            })
            .collect()
    }

    /// The leader's work; fills `response` and returns the state patch.
    async fn lead(
        &self,
        scope: &mut RunScope,
        input: &Message,
        format: Option<ResponseFormat>,
        depth: usize,
        response: &mut RunResponse,
    ) -> Result<StatePatch> {
        let patch = self.read_state(scope).await?;
        let members = self.attached_members();
        let mut turns = Turns {
            team: self,
            messages: vec![prompt::system_message(self, &members), input.clone()],
            members,
            input,
            format,
            depth,
            metrics: Metrics::default(),
        };
        let started = Instant::now();
        let outcome = match self.config.mode {
            TeamMode::Collaborate => turns.collaborate(scope, response).await,
            TeamMode::Route | TeamMode::Coordinate => turns.delegate(scope, response).await,
        };
        turns.metrics.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        response.metrics = Some(turns.metrics);
        response.messages = turns.messages;
        outcome.map(|()| patch)
    }

    /// Merges the configured state into the stored one (stored values win by default).
    async fn read_state(&self, scope: &RunScope) -> Result<StatePatch> {
        let Some(code) = &self.config.session_state else {
            return Ok(StatePatch::default());
        };
        let stored = scope
            .read_session(0)
            .await?
            .map(|session| session.session_state)
            .unwrap_or_default();
        Ok(merge_code_state(&stored, Some(code), self.config.state_merge).1)
    }
}

impl Turns<'_> {
    fn leader_request(&self, tool: Option<&ToolDefinition>) -> ModelRequest {
        let mut request = ModelRequest::new(self.messages.clone());
        if let Some(tool) = tool {
            request = request.tools(vec![tool.clone()]);
        }
        if let Some(format) = &self.format {
            request = request.response_format(format.clone());
        }
        request
    }

    /// Every member gets the task at once; the leader writes the answer from theirs.
    async fn collaborate(
        &mut self,
        scope: &mut RunScope,
        response: &mut RunResponse,
    ) -> Result<()> {
        let task = self.input.content.clone().unwrap_or_default();
        let sink = scope.sink().within_team(self.team.id());
        let results =
            join_all(self.members.iter().map(|member| {
                run_member(member, prompt::member_task(&task, None), self.depth, &sink)
            }))
            .await;
        let mut answers = Vec::new();
        for (member, result) in self.members.iter().zip(results) {
            match result {
                Ok(member_response) => {
                    answers.push((member.member_id(), Ok(member_response.clone())));
                    response.member_responses.push(member_response);
                }
                Err(error) => answers.push((member.member_id(), Err(error_chain(&error)))),
            }
        }
        self.messages.push(prompt::collaboration_results(&answers));
        let request = self.leader_request(None);
        let debug = self.team.debug_enabled();
        let answer = call_model(&*self.team.config.leader, &request, scope, 1, debug).await?;
        self.metrics += answer.metrics;
        response.content = answer.message.content.clone().map(Value::String);
        self.messages.push(answer.message);
        Ok(())
    }

    /// The leader delegates with tool calls (route: one member answers for the team;
    /// coordinate: the leader answers from its members' results), at most `max_turns`
    /// leader calls.
    async fn delegate(&mut self, scope: &mut RunScope, response: &mut RunResponse) -> Result<()> {
        let config = &*self.team.config;
        let tool = prompt::delegation_tool(config.mode, &self.members);
        let debug = self.team.debug_enabled();
        for turn in 1..=config.max_turns {
            let request = self.leader_request(tool.as_ref());
            let leader = call_model(&*config.leader, &request, scope, turn, debug).await?;
            self.metrics += leader.metrics;
            if leader.message.tool_calls.is_empty() {
                response.content = leader.message.content.clone().map(Value::String);
                self.messages.push(leader.message);
                return Ok(());
            }
            let calls = leader.message.tool_calls.clone();
            self.messages.push(leader.message);
            let sink = scope.sink().within_team(self.team.id());
            let mut messages = std::mem::take(&mut self.messages);
            let this = &*self;
            let outcomes = run_calls(scope, &calls, &mut messages, response, |call| {
                this.delegation(call, &sink).boxed()
            })
            .await;
            self.messages = messages;
            let outcomes = outcomes?;
            let mut routed = None;
            for outcome in outcomes {
                if let Some(member_response) = outcome.response {
                    if routed.is_none() && config.mode == TeamMode::Route {
                        routed = Some(member_response.content.clone());
                    }
                    response.member_responses.push(member_response);
                }
            }
            if let Some(content) = routed {
                // Route: the member's answer is the team's answer.
                response.content = content;
                return Ok(());
            }
        }
        Err(Error::MaxTurns {
            agent: config
                .name
                .clone()
                .unwrap_or_else(|| self.team.id().to_owned()),
            max_turns: config.max_turns,
        })
    }

    /// Runs one delegation tool call; every failure becomes an error result for the leader.
    async fn delegation(&self, call: &ToolCall, sink: &EventSink) -> CallOutcome {
        let started = Instant::now();
        let (member, task) = match self.prepare(call) {
            Ok(prepared) => prepared,
            Err(error) => return CallOutcome::new(call, started, Err(error)),
        };
        let name = member.member_id();
        match run_member(member, task, self.depth, sink).await {
            Ok(member_response) => {
                let text = member_response.text().into_owned();
                let mut outcome = CallOutcome::new(call, started, Ok(text));
                outcome.response = Some(member_response);
                outcome
            }
            Err(error) => CallOutcome::new(
                call,
                started,
                Err(format!("member `{name}` failed: {}", error_chain(&error))),
            ),
        }
    }

    /// Finds the member and the message to send it, or says why the call cannot run.
    fn prepare(&self, call: &ToolCall) -> Result<(&TeamMember, Message), String> {
        let config = &*self.team.config;
        let arguments = call.parse_arguments().map_err(|error| {
            format!("the arguments are not valid JSON ({error}); call the tool again")
        })?;
        let field = |key: &str| {
            arguments
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let member_id =
            field("member_id").ok_or("`member_id` is missing; name one of the members")?;
        let member = self
            .members
            .iter()
            .find(|member| member.member_id() == member_id)
            .ok_or_else(|| {
                let known: Vec<String> = self.members.iter().map(TeamMember::member_id).collect();
                format!(
                    "there is no member `{member_id}`; the members are: {}",
                    known.join(", ")
                )
            })?;
        if matches!(member, TeamMember::Team(_)) && self.depth + 1 > config.max_depth {
            return Err(format!(
                "delegation depth limit ({}) reached: `{member_id}` is a team nested too deep; answer with what you have",
                config.max_depth
            ));
        }
        let expected = field("expected_output");
        let message = match call.name.as_str() {
            FORWARD_TOOL => prompt::member_task(
                self.input.content.as_deref().unwrap_or_default(),
                expected.as_deref(),
            ),
            TRANSFER_TOOL => {
                let task = field("task_description").ok_or("`task_description` is missing")?;
                prompt::member_task(&task, expected.as_deref())
            }
            other => {
                return Err(format!(
                    "there is no tool `{other}`; use `{}`",
                    match config.mode {
                        TeamMode::Route => FORWARD_TOOL,
                        _ => TRANSFER_TOOL,
                    }
                ));
            }
        };
        Ok((member, message))
    }
}

/// Runs a member on `task`, its events joining the team's stream; its journal key (in a
/// durable run) is allocated now, when the future is made.
fn run_member<'a>(
    member: &'a TeamMember,
    task: Message,
    depth: usize,
    sink: &'a EventSink,
) -> BoxFuture<'a, Result<RunResponse>> {
    match member {
        TeamMember::Agent(agent) => {
            let slot = agent.journal_slot();
            Box::pin(agent.execute(task, None, sink, slot))
        }
        TeamMember::Team(team) => {
            let format = team.config.response_format.clone();
            let slot = team.journal_slot();
            team.execute(task, format, depth + 1, sink, slot)
        }
    }
}
