//! One team run: the leader's turns, delegation to members (concurrent within a turn),
//! forwarding of member events, and persistence.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::future::{BoxFuture, join_all};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::Instrument;

use super::prompt::{self, FORWARD_TOOL, TRANSFER_TOOL};
use super::{Team, TeamMember, TeamMode};
use crate::error::Error;
use crate::model::{
    Message, ModelRequest, ModelResponse, ModelStreamEvent, ResponseFormat, ToolCall,
};
use crate::run::{
    Metrics, RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus, ToolExecution,
};
use crate::session::{SessionKind, SessionWrite};
use crate::workflow::{Member, MemberContext};

/// The ids every event of one team run carries.
#[derive(Clone)]
struct RunIds {
    run_id: String,
    session_id: String,
    team_id: String,
}

impl RunIds {
    fn event(&self, kind: RunEventKind) -> RunEvent {
        let mut event = RunEvent::new(kind);
        event.run_id = Some(self.run_id.clone());
        event.session_id = Some(self.session_id.clone());
        event.team_id = Some(self.team_id.clone());
        event
    }
}

/// What one delegation produced: the tool result for the leader, and the member's response.
struct Delegation {
    execution: ToolExecution,
    response: Option<RunResponse>,
}

impl Team {
    /// Runs to completion, dropping the events.
    pub(crate) async fn execute(
        self,
        input: Message,
        format: Option<ResponseFormat>,
        depth: usize,
    ) -> crate::Result<RunResponse> {
        let mut stream = self.execute_events(input, format, depth, false);
        while let Some(event) = stream.next().await {
            if let RunEventKind::RunCompleted { response } = event?.kind {
                return Ok(*response);
            }
        }
        Err(Error::msg("team run ended without a response"))
    }

    /// Runs streaming every event.
    pub(crate) fn execute_stream(
        self,
        input: Message,
        format: Option<ResponseFormat>,
        depth: usize,
    ) -> BoxStream<'static, crate::Result<RunEvent>> {
        self.execute_events(input, format, depth, true)
    }

    /// The one implementation of a team run; `streaming` chooses streamed leader calls and
    /// forwarded member events.
    fn execute_events(
        self,
        input: Message,
        format: Option<ResponseFormat>,
        depth: usize,
        streaming: bool,
    ) -> BoxStream<'static, crate::Result<RunEvent>> {
        Box::pin(async_stream::stream! {
            let started = Instant::now();
            let ids = RunIds {
                run_id: uuid::Uuid::new_v4().to_string(),
                session_id: self.current_session_id().to_owned(),
                team_id: self.id().to_owned(),
            };
            let span = tracing::info_span!(
                "team_run",
                team = self.config.name.as_deref().unwrap_or(""),
                team_id = %ids.team_id,
                run_id = %ids.run_id,
                session_id = %ids.session_id,
                mode = self.config.mode.as_str(),
                depth,
            );
            yield Ok(ids.event(RunEventKind::RunStarted));

            // Members run in the team's session, for the team's user.
            let context = MemberContext {
                session_id: &ids.session_id,
                user_id: self.current_user_id(),
                workflow_id: None,
                debug_mode: false,
            };
            let members: Vec<TeamMember> = self
                .config
                .members
                .iter()
                .map(|member| {
                    let mut member = member.clone();
                    member.attach(&context);
                    member
                })
                .collect();

            let mut response = RunResponse::new();
            response.run_id = Some(ids.run_id.clone());
            response.session_id = Some(ids.session_id.clone());
            response.team_id = Some(ids.team_id.clone());
            response.model = Some(self.config.leader.id().to_owned());
            let mut metrics = Metrics::default();
            let mut messages = vec![prompt::system_message(&self, &members), input.clone()];
            let (sink, mut events) = unbounded_channel::<RunEvent>();
            let sink = streaming.then_some(sink);

            let mut outcome: crate::Result<()> = Ok(());
            if self.config.mode == TeamMode::Collaborate {
                let task = input.content.clone().unwrap_or_default();
                let mut calls = Vec::new();
                for member in &members {
                    let call = run_member(member.clone(), prompt::member_task(&task, None), depth, sink.clone(), ids.clone());
                    calls.push(call);
                }
                let mut forwarded = forward_events(join_all(calls).boxed(), &mut events);
                let mut results = Vec::new();
                while let Some(step) = forwarded.next().await {
                    match step {
                        Forwarded::Event(event) => yield Ok(event),
                        Forwarded::Done(done) => results = done,
                    }
                }
                drop(forwarded);
                let mut answers = Vec::new();
                for (member, result) in members.iter().zip(results) {
                    match result {
                        Ok(member_response) => {
                            answers.push((member.member_id(), Ok(member_response.clone())));
                            response.member_responses.push(member_response);
                        }
                        Err(error) => answers.push((member.member_id(), Err(error.to_string()))),
                    }
                }
                messages.push(prompt::collaboration_results(&answers));
                let request = leader_request(&messages, None, format.clone());
                let mut turn = leader_turn(&self, request, streaming);
                let mut final_response = None;
                while let Some(item) = turn.next().await {
                    match item {
                        Ok(LeaderItem::Delta(text)) => yield Ok(ids.event(RunEventKind::RunContent { content: text })),
                        Ok(LeaderItem::Done(done)) => final_response = Some(done),
                        Err(error) => { outcome = Err(error); break; }
                    }
                }
                drop(turn);
                if let Some(done) = final_response {
                    metrics += done.metrics;
                    response.content = done.message.content.clone().map(Value::String);
                    messages.push(done.message);
                }
            } else {
                let tool = prompt::delegation_tool(self.config.mode, &members);
                let mut turns = 0;
                loop {
                    if turns == self.config.max_turns {
                        outcome = Err(Error::MaxTurns {
                            agent: self.config.name.clone().unwrap_or_else(|| ids.team_id.clone()),
                            max_turns: self.config.max_turns,
                        });
                        break;
                    }
                    turns += 1;
                    let request = leader_request(&messages, tool.clone(), format.clone());
                    let mut turn = leader_turn(&self, request, streaming);
                    let mut done = None;
                    while let Some(item) = turn.next().await {
                        match item {
                            Ok(LeaderItem::Delta(text)) => yield Ok(ids.event(RunEventKind::RunContent { content: text })),
                            Ok(LeaderItem::Done(leader)) => done = Some(leader),
                            Err(error) => { outcome = Err(error); break; }
                        }
                    }
                    drop(turn);
                    let Some(leader) = done else { break };
                    metrics += leader.metrics;
                    if leader.message.tool_calls.is_empty() {
                        response.content = leader.message.content.clone().map(Value::String);
                        messages.push(leader.message);
                        break;
                    }
                    let calls = leader.message.tool_calls.clone();
                    messages.push(leader.message);
                    let mut pending = Vec::new();
                    for call in &calls {
                        let started_tool = ToolExecution {
                            tool_call_id: call.id.clone(),
                            tool_name: call.name.clone(),
                            arguments: call.parse_arguments().unwrap_or(Value::Null),
                            ..ToolExecution::default()
                        };
                        yield Ok(ids.event(RunEventKind::ToolCallStarted { tool: started_tool }));
                        pending.push(delegate(&self, &members, call.clone(), &input, depth, sink.clone(), ids.clone()));
                    }
                    let mut forwarded = forward_events(join_all(pending).boxed(), &mut events);
                    let mut delegations = Vec::new();
                    while let Some(step) = forwarded.next().await {
                        match step {
                            Forwarded::Event(event) => yield Ok(event),
                            Forwarded::Done(done) => delegations = done,
                        }
                    }
                    drop(forwarded);
                    let mut routed = None;
                    for delegation in delegations {
                        let text = delegation
                            .execution
                            .result
                            .clone()
                            .or_else(|| delegation.execution.error.clone().map(|e| format!("error: {e}")))
                            .unwrap_or_default();
                        messages.push(Message::tool_result(
                            delegation.execution.tool_call_id.clone(),
                            delegation.execution.tool_name.clone(),
                            text,
                        ));
                        response.tools.push(delegation.execution.clone());
                        yield Ok(ids.event(RunEventKind::ToolCallCompleted { tool: delegation.execution }));
                        if let Some(member_response) = delegation.response {
                            if routed.is_none() && self.config.mode == TeamMode::Route {
                                routed = Some(member_response.clone());
                            }
                            response.member_responses.push(member_response);
                        }
                    }
                    if let Some(routed) = routed {
                        // Route: the member's answer is the team's answer.
                        response.content = routed.content.clone();
                        break;
                    }
                }
            }

            metrics.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            response.metrics = Some(metrics);
            response.messages = messages;
            let failure = outcome.err();
            let persisted = persist(&self, &ids, &input, &response, failure.as_ref()).instrument(span.clone()).await;
            match (failure, persisted) {
                (Some(error), persisted) => {
                    if let Err(storage) = persisted {
                        tracing::error!(parent: &span, error = %storage, "failed team run could not be persisted");
                    }
                    yield Err(error);
                }
                (None, Err(source)) => yield Err(Error::Persist { response: Box::new(response), source }),
                (None, Ok(())) => {
                    tracing::debug!(parent: &span, "team run completed");
                    yield Ok(ids.event(RunEventKind::RunCompleted { response: Box::new(response) }));
                }
            }
        })
    }
}

/// What [`forward_events`] yields: a member event, or the awaited work's output (last).
#[allow(clippy::large_enum_variant)] // each item is moved out once; boxing events buys nothing
enum Forwarded<T> {
    Event(RunEvent),
    Done(T),
}

/// Awaits `work` (members running), passing on the events they send as they come, then the
/// ones still queued, then the output. Without a sender left (not streaming) it just awaits.
fn forward_events<'a, T: Send + 'a>(
    work: BoxFuture<'a, T>,
    events: &'a mut UnboundedReceiver<RunEvent>,
) -> BoxStream<'a, Forwarded<T>> {
    Box::pin(async_stream::stream! {
        let mut work = work;
        let output = loop {
            let next = tokio::select! {
                biased;
                Some(event) = events.recv() => Err(event),
                output = &mut work => Ok(output),
            };
            match next {
                Err(event) => yield Forwarded::Event(event),
                Ok(output) => break output,
            }
        };
        while let Ok(event) = events.try_recv() {
            yield Forwarded::Event(event);
        }
        yield Forwarded::Done(output);
    })
}

enum LeaderItem {
    Delta(String),
    Done(ModelResponse),
}

fn leader_request(
    messages: &[Message],
    tool: Option<crate::model::ToolDefinition>,
    format: Option<ResponseFormat>,
) -> ModelRequest {
    let mut request = ModelRequest::new(messages.to_vec());
    if let Some(tool) = tool {
        request = request.tools(vec![tool]);
    }
    if let Some(format) = format {
        request = request.response_format(format);
    }
    request
}

/// One leader model call: text deltas when streaming, then the full response.
fn leader_turn(
    team: &Team,
    request: ModelRequest,
    streaming: bool,
) -> BoxStream<'static, crate::Result<LeaderItem>> {
    let model = team.config.leader.clone();
    Box::pin(async_stream::stream! {
        if streaming {
            let mut stream = model.stream(&request);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ModelStreamEvent::Content(text)) => yield Ok(LeaderItem::Delta(text)),
                    Ok(ModelStreamEvent::Done(response)) => yield Ok(LeaderItem::Done(*response)),
                    Err(error) => {
                        yield Err(Error::from(error));
                        return;
                    }
                }
            }
        } else {
            match model.response(&request).await {
                Ok(response) => yield Ok(LeaderItem::Done(response)),
                Err(error) => yield Err(Error::from(error)),
            }
        }
    })
}

/// Runs one delegation tool call; every failure becomes an error result for the leader.
fn delegate(
    team: &Team,
    members: &[TeamMember],
    call: ToolCall,
    input: &Message,
    depth: usize,
    sink: Option<UnboundedSender<RunEvent>>,
    ids: RunIds,
) -> BoxFuture<'static, Delegation> {
    let started = Instant::now();
    let mut execution = ToolExecution {
        tool_call_id: call.id.clone(),
        tool_name: call.name.clone(),
        ..ToolExecution::default()
    };
    let prepared = prepare(team, members, &call, input, depth);
    Box::pin(async move {
        let (member, task) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                execution.arguments = call.parse_arguments().unwrap_or(Value::Null);
                execution.error = Some(error);
                execution.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                return Delegation {
                    execution,
                    response: None,
                };
            }
        };
        execution.arguments = call.parse_arguments().unwrap_or(Value::Null);
        let name = member.member_id();
        let result = run_member(member, task, depth, sink, ids).await;
        execution.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(response) => {
                execution.result = Some(response.text().into_owned());
                Delegation {
                    execution,
                    response: Some(response),
                }
            }
            Err(error) => {
                execution.error = Some(format!("member `{name}` failed: {error}"));
                Delegation {
                    execution,
                    response: None,
                }
            }
        }
    })
}

/// Finds the member and the message to send it, or says why the call cannot run.
fn prepare(
    team: &Team,
    members: &[TeamMember],
    call: &ToolCall,
    input: &Message,
    depth: usize,
) -> Result<(TeamMember, Message), String> {
    let arguments = call.parse_arguments().map_err(|error| {
        format!("the arguments are not valid JSON ({error}); call the tool again")
    })?;
    let field = |key: &str| {
        arguments
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let member_id = field("member_id").ok_or("`member_id` is missing; name one of the members")?;
    let known: Vec<String> = members.iter().map(TeamMember::member_id).collect();
    let member = members
        .iter()
        .find(|member| member.member_id() == member_id)
        .cloned()
        .ok_or_else(|| {
            format!(
                "there is no member `{member_id}`; the members are: {}",
                known.join(", ")
            )
        })?;
    if matches!(member, TeamMember::Team(_)) && depth + 1 > team.config.max_depth {
        return Err(format!(
            "delegation depth limit ({}) reached: `{member_id}` is a team nested too deep; answer with what you have",
            team.config.max_depth
        ));
    }
    let expected = field("expected_output");
    let message = match call.name.as_str() {
        FORWARD_TOOL => prompt::member_task(
            input.content.as_deref().unwrap_or_default(),
            expected.as_deref(),
        ),
        TRANSFER_TOOL => {
            let task = field("task_description").ok_or("`task_description` is missing")?;
            prompt::member_task(&task, expected.as_deref())
        }
        other => {
            return Err(format!(
                "there is no tool `{other}`; use `{}`",
                match team.config.mode {
                    TeamMode::Route => FORWARD_TOOL,
                    _ => TRANSFER_TOOL,
                }
            ));
        }
    };
    Ok((member, message))
}

/// Runs a member (catching panics); when streaming, forwards its events tagged with its id.
async fn run_member(
    member: TeamMember,
    task: Message,
    depth: usize,
    sink: Option<UnboundedSender<RunEvent>>,
    ids: RunIds,
) -> crate::Result<RunResponse> {
    let name = member.member_id();
    let run = async move {
        let mut stream: BoxStream<'static, crate::Result<RunEvent>> = match &member {
            TeamMember::Agent(agent) => {
                Box::pin(agent.clone().execute_stream(task, None, sink.is_some()))
            }
            TeamMember::Team(team) => {
                let format = team.config.response_format.clone();
                team.clone()
                    .execute_events(task, format, depth + 1, sink.is_some())
            }
        };
        while let Some(event) = stream.next().await {
            let mut event = event?;
            if let RunEventKind::RunCompleted { response } = &event.kind {
                let response = (**response).clone();
                if let Some(sink) = &sink {
                    tag(&mut event, &name, &ids);
                    let _ = sink.send(event);
                }
                return Ok(response);
            }
            if let Some(sink) = &sink {
                tag(&mut event, &name, &ids);
                let _ = sink.send(event);
            }
        }
        Err(Error::msg(format!(
            "member `{name}` ended without a response"
        )))
    };
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err(Error::Panicked { message })
        }
    }
}

/// Marks a member's event as coming from `member` of this team (a nested team's events keep
/// the innermost member's name).
fn tag(event: &mut RunEvent, member: &str, ids: &RunIds) {
    if event.member.is_none() {
        event.member = Some(member.to_owned());
    }
    if event.team_id.is_none() {
        event.team_id = Some(ids.team_id.clone());
    }
}

/// Writes the run (with its member interactions) to the team's session, if it has storage.
async fn persist(
    team: &Team,
    ids: &RunIds,
    input: &Message,
    response: &RunResponse,
    failure: Option<&Error>,
) -> Result<(), crate::StorageError> {
    let Some(storage) = &team.config.storage else {
        return Ok(());
    };
    let mut component_data = Map::new();
    if let Some(name) = &team.config.name {
        component_data.insert("name".into(), json!(name));
    }
    component_data.insert("mode".into(), json!(team.config.mode.as_str()));
    let record = RunRecord {
        run_id: ids.run_id.clone(),
        session_id: ids.session_id.clone(),
        status: if failure.is_some() {
            RunStatus::Error
        } else {
            RunStatus::Completed
        },
        input: serde_json::to_value(input).unwrap_or(Value::Null),
        response: response.clone(),
        error: failure.map(ToString::to_string),
        created_at: response.created_at,
    };
    let write = SessionWrite {
        session_id: ids.session_id.clone(),
        kind: SessionKind::Team,
        component_id: Some(ids.team_id.clone()),
        user_id: team.current_user_id().map(str::to_owned),
        component_data,
        run: Some(record),
        ..SessionWrite::default()
    };
    crate::storage::commit_detached(storage, write)
        .await
        .map(|_| ())
}
