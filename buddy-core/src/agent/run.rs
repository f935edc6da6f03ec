//! One agent run: the session read (history, state), the model/tool loop, and the tool
//! calls. The lifecycle around it (ids, events, record, commit) is the run engine's.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use serde_json::{Map, Value};
use tracing::Instrument;

use super::{Agent, prompt};
use crate::durable::{Slot, within};
use crate::engine::{
    EventSink, MemberStart, RunScope, RunSpec, begin_member, catch_panic, error_chain,
    panic_message,
};
use crate::error::{Error, Result};
use crate::model::call::call_model;
use crate::model::{Message, ModelRequest, ResponseFormat, Role, ToolCall};
use crate::run::{Metrics, RunResponse, RunStatus};
use crate::session::{SessionKind, SessionWrite, StatePatch};
use crate::storage::{MemoryStorage, Storage};
use crate::tool::turn::{CallOutcome, run_calls};
use crate::tool::{ToolConfirmation, result_text};

impl Agent {
    /// The journal slot of a run of this agent made now, in a durable run.
    pub(crate) fn journal_slot(&self) -> Option<Slot> {
        crate::durable::allocate_member(crate::durable::EntryKind::Agent, || {
            self.attached
                .journal_name(self.config.name.as_deref(), "agent")
        })
    }

    /// One run of the agent on `input`, its events sent into `sink`; in a durable run, the
    /// journal entry `slot`.
    pub(crate) async fn execute(
        &self,
        input: Message,
        format: Option<ResponseFormat>,
        sink: &EventSink,
        slot: Option<Slot>,
    ) -> Result<RunResponse> {
        let config = &*self.config;
        let mut spec = RunSpec::member_run(
            SessionKind::Agent,
            (self.id(), config.name.as_ref()),
            self.current_session_id(),
            &self.attached,
            self.effective_storage().cloned(),
            &input,
        );
        let busy = match begin_member(&mut spec, sink, slot, &(&input, &format))? {
            MemberStart::Replayed(response) => return Ok(*response),
            MemberStart::Run(busy) => busy,
        };
        let mut scope = RunScope::start(spec, sink);
        scope.set_write(self.session_write());
        let span = scope.span().clone();
        let mut response = RunResponse::new();
        response.model = Some(config.model.id().to_owned());
        let entries = scope.entries().cloned();
        let outcome = catch_panic(within(
            entries,
            self.turns(&mut scope, input, format, &mut response),
        ))
        .instrument(span.clone())
        .await;
        let result = scope.conclude(outcome, response).instrument(span).await;
        drop(busy);
        result
    }

    fn debug_enabled(&self) -> bool {
        self.attached.debug()
    }

    /// The session write's identity and metadata.
    fn session_write(&self) -> SessionWrite {
        let config = &*self.config;
        let mut component_data = Map::new();
        if let Some(name) = &config.name {
            component_data.insert("name".into(), Value::String(name.clone()));
        }
        component_data.insert("model".into(), Value::String(config.model.id().to_owned()));
        SessionWrite {
            component_id: Some(self.id().to_owned()),
            user_id: self.attached.user(),
            component_data,
            ..SessionWrite::default()
        }
    }

    /// The model/tool loop; fills `response` as it goes and returns the state patch.
    async fn turns(
        &self,
        scope: &mut RunScope,
        input: Message,
        format: Option<ResponseFormat>,
        response: &mut RunResponse,
    ) -> Result<StatePatch> {
        let config = &*self.config;
        let debug = self.debug_enabled();
        let (history, patch) = self.read_session(scope).await?;
        let system = prompt::system_message(config);
        let kept_from = usize::from(system.is_some());
        let history_len = history.len();
        let mut request = ModelRequest {
            messages: Vec::with_capacity(history_len + 4),
            tools: config.tools.iter().map(|tool| tool.definition()).collect(),
            tool_choice: config.tool_choice.clone(),
            response_format: format.or_else(|| config.response_format.clone()),
        };
        request.messages.extend(system);
        request.messages.extend(history);
        request.messages.push(input);

        let started = Instant::now();
        let mut metrics = Metrics::default();
        let mut turn = 0;
        let outcome = loop {
            turn += 1;
            let answer = match call_model(&*config.model, &request, scope, turn, debug).await {
                Ok(answer) => answer,
                Err(error) => break Err(error),
            };
            let first_token = metrics.time_to_first_token_ms;
            metrics += answer.metrics;
            metrics.time_to_first_token_ms = first_token.or(answer.metrics.time_to_first_token_ms);
            if let Some(model) = answer.model {
                response.model = Some(model);
            }
            let assistant = answer.message;
            if assistant.tool_calls.is_empty() {
                let text = assistant.content.clone().unwrap_or_default();
                request.messages.push(assistant);
                response.content = Some(answer_content(&request.response_format, text));
                break Ok(());
            }
            let calls = assistant.tool_calls.clone();
            request.messages.push(assistant);
            if turn >= config.max_turns {
                break Err(Error::MaxTurns {
                    agent: config.name.clone().unwrap_or_else(|| self.id().to_owned()),
                    max_turns: config.max_turns,
                });
            }
            let scope = &*scope;
            let ran = run_calls(scope, &calls, &mut request.messages, response, |call| {
                self.call_tool(call, scope).boxed()
            })
            .await;
            if let Err(error) = ran {
                break Err(error);
            }
        };
        metrics.duration_ms = started.elapsed().as_secs_f64() * 1_000.0;
        response.metrics = Some(metrics);
        // The run keeps its system message and everything after the history.
        let mut messages = request.messages;
        messages.drain(kept_from..(kept_from + history_len).min(messages.len()));
        response.messages = messages;
        outcome.map(|()| patch)
    }

    /// Reads what the run needs of its session: the history (when it is sent) and the
    /// stored state, into which the configured state is merged (stored values win unless
    /// the agent says otherwise).
    async fn read_session(&self, scope: &RunScope) -> Result<(Vec<Message>, StatePatch)> {
        let config = &*self.config;
        let history_runs = if config.add_history_to_messages {
            config.num_history_runs
        } else {
            0
        };
        if history_runs == 0 && config.session_state.is_none() {
            return Ok((Vec::new(), StatePatch::default()));
        }
        let Some(session) = scope.read_session(history_runs).await? else {
            let patch = config
                .session_state
                .as_ref()
                .map(StatePatch::set_all)
                .unwrap_or_default();
            return Ok((Vec::new(), patch));
        };
        let (_, patch) = crate::engine::merge_code_state(
            &session.session_state,
            config.session_state.as_ref(),
            config.state_merge,
        );
        let history = session
            .runs
            .into_iter()
            .filter(|run| run.status == RunStatus::Completed)
            .flat_map(|run| run.response.messages)
            .filter(|message| message.role != Role::System)
            .collect();
        Ok((history, patch))
    }

    /// Where runs are written and history is read: the agent's storage, or, when it has none
    /// but reads history, an in-process store shared by its clones (the Python reference's
    /// agent memory).
    fn effective_storage(&self) -> Option<&Arc<dyn Storage>> {
        let config = &*self.config;
        match &config.storage {
            Some(storage) => Some(storage),
            None if config.add_history_to_messages => Some(
                config
                    .memory
                    .get_or_init(|| Arc::new(MemoryStorage::new()) as Arc<dyn Storage>),
            ),
            None => None,
        }
    }

    /// Runs one tool call; bad arguments, an unknown tool, an error and a panic all become
    /// the call's error, which the model reads as the tool's result.
    async fn call_tool(&self, call: &ToolCall, scope: &RunScope) -> CallOutcome {
        let span = scope.span().in_scope(|| {
            tracing::info_span!(
                "tool_call",
                tool = %call.name,
                tool_call_id = %call.id,
                run_id = %scope.run_id(),
                session_id = %scope.session_id(),
            )
        });
        let started = Instant::now();
        let result = self.tool_result(call).instrument(span.clone()).await;
        span.in_scope(|| match &result {
            Ok(result) => tracing::debug!(tool = %call.name, %result, "tool call succeeded"),
            Err(error) => tracing::warn!(tool = %call.name, %error, "tool call failed"),
        });
        CallOutcome::new(call, started, result)
    }

    async fn tool_result(&self, call: &ToolCall) -> Result<String, String> {
        let tools = &self.config.tools;
        let arguments = call.parse_arguments().map_err(|error| {
            format!("invalid JSON arguments ({error}); send the arguments as a JSON object")
        })?;
        let tool = tools
            .iter()
            .find(|tool| tool.name() == call.name)
            .ok_or_else(|| {
                let names: Vec<&str> = tools.iter().map(|tool| tool.name()).collect();
                format!(
                    "tool `{}` does not exist; available tools: {}",
                    call.name,
                    names.join(", ")
                )
            })?;
        let arguments =
            if tool.requires_confirmation() || self.config.confirm_tools.contains(&call.name) {
                confirm(call, arguments).await?
            } else {
                arguments
            };
        match AssertUnwindSafe(tool.call(arguments)).catch_unwind().await {
            Ok(Ok(value)) => Ok(result_text(&value)),
            Ok(Err(error)) => Err(error_chain(&error)),
            Err(panic) => Err(format!("tool panicked: {}", panic_message(&*panic))),
        }
    }
}

/// Asks for the confirmation of a call (a durable wait in the call's own journal scope): the
/// arguments to run it with, or the rejection the model reads.
async fn confirm(call: &ToolCall, arguments: Value) -> Result<Value, String> {
    let prompt = serde_json::json!({
        "tool": call.name,
        "arguments": arguments,
        "question": format!("Run `{}` with these arguments?", call.name),
    });
    let decision = crate::durable::wait_for::<ToolConfirmation>("confirm", prompt).await;
    match decision {
        Ok(ToolConfirmation::Approve) => Ok(arguments),
        Ok(ToolConfirmation::Edit { arguments }) => Ok(arguments),
        Ok(ToolConfirmation::Reject { reason }) => Err(match reason {
            Some(reason) => format!("the user rejected this call: {reason}"),
            None => "the user rejected this call".to_owned(),
        }),
        Err(error) => Err(format!(
            "this call needs a person's confirmation and could not get it: {}",
            error_chain(&error)
        )),
    }
}

/// The final answer as content: parsed JSON for structured output (text when it does not
/// parse), else the text.
fn answer_content(format: &Option<ResponseFormat>, text: String) -> Value {
    match format {
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }) => {
            serde_json::from_str(text.trim()).unwrap_or(Value::String(text))
        }
        _ => Value::String(text),
    }
}
