//! One agent run: the model/tool loop, events, history and persistence.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, Stream, StreamExt};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::{Agent, prompt};
use crate::error::Error;
use crate::model::{
    Message, ModelError, ModelRequest, ModelResponse, ModelStreamEvent, ResponseFormat, Role,
    ToolCall,
};
use crate::run::{
    Metrics, RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus, ToolExecution,
};
use crate::session::{SessionKey, SessionKind, SessionWrite, StatePatch};
use crate::storage::{MemoryStorage, ReadOptions, Storage};
use crate::tool::result_text;

/// The ids every event and record of one run carries.
struct RunIds {
    run_id: String,
    session_id: String,
    agent_id: String,
}

impl RunIds {
    fn event(&self, kind: RunEventKind) -> RunEvent {
        let mut event = RunEvent::new(kind);
        event.run_id = Some(self.run_id.clone());
        event.session_id = Some(self.session_id.clone());
        event.agent_id = Some(self.agent_id.clone());
        event
    }
}

impl Agent {
    /// Runs to completion, dropping the events.
    pub(crate) async fn execute(
        &self,
        input: Message,
        format: Option<ResponseFormat>,
    ) -> crate::Result<RunResponse> {
        let stream = self.clone().execute_stream(input, format, false);
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let RunEventKind::RunCompleted { response } = item?.kind {
                return Ok(*response);
            }
        }
        Err(Error::msg("agent run ended without a response"))
    }

    /// The one implementation of a run; `streaming` chooses streamed model calls and
    /// content events.
    pub(crate) fn execute_stream(
        self,
        input: Message,
        format: Option<ResponseFormat>,
        streaming: bool,
    ) -> impl Stream<Item = crate::Result<RunEvent>> + Send + 'static {
        async_stream::stream! {
            let started = Instant::now();
            let ids = RunIds {
                run_id: uuid::Uuid::new_v4().to_string(),
                session_id: self.current_session_id().to_owned(),
                agent_id: self.id().to_owned(),
            };
            let config = &*self.config;
            let span = tracing::info_span!(
                "agent_run",
                agent = config.name.as_deref().unwrap_or(""),
                agent_id = %ids.agent_id,
                run_id = %ids.run_id,
                session_id = %ids.session_id,
            );
            let debug = self.debug_mode || crate::debug::env_debug();
            if debug {
                crate::debug::enable();
            }
            yield Ok(ids.event(RunEventKind::RunStarted));

            let input_value = Value::String(input.content.clone().unwrap_or_default());
            let mut response = RunResponse::new();
            response.run_id = Some(ids.run_id.clone());
            response.session_id = Some(ids.session_id.clone());
            response.agent_id = Some(ids.agent_id.clone());
            response.model = Some(config.model.id().to_owned());

            let history = match self.history(&ids.session_id).instrument(span.clone()).await {
                Ok(history) => history,
                Err(error) => {
                    yield Err(self.fail(error, &ids, input_value, response).await);
                    return;
                }
            };
            let system = prompt::system_message(config);
            let has_system = system.is_some();
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

            let mut metrics = Metrics::default();
            let mut turn = 0usize;
            let answer = loop {
                turn += 1;
                let model_span = span.in_scope(|| tracing::info_span!(
                    "model_call",
                    model = config.model.id(),
                    turn,
                    run_id = %ids.run_id,
                    session_id = %ids.session_id,
                ));
                if debug {
                    model_span.in_scope(|| tracing::debug!(
                        messages = ?request.messages,
                        tools = request.tools.len(),
                        "model request"
                    ));
                }
                let result: Result<ModelResponse, ModelError> = if streaming {
                    let mut done = None;
                    let mut failure = None;
                    {
                        let mut deltas = config.model.stream(&request);
                        while let Some(item) = deltas.next().instrument(model_span.clone()).await {
                            match item {
                                Ok(ModelStreamEvent::Content(text)) => {
                                    yield Ok(ids.event(RunEventKind::RunContent { content: text }));
                                }
                                Ok(ModelStreamEvent::Done(model_response)) => {
                                    done = Some(*model_response);
                                    break;
                                }
                                Err(error) => {
                                    failure = Some(error);
                                    break;
                                }
                            }
                        }
                    }
                    match (done, failure) {
                        (_, Some(error)) => Err(error),
                        (Some(done), None) => Ok(done),
                        (None, None) => Err(ModelError::StreamInterrupted {
                            what: "model stream ended without a final response".into(),
                            source: None,
                        }),
                    }
                } else {
                    config.model.response(&request).instrument(model_span.clone()).await
                };
                let model_response = match result {
                    Ok(model_response) => model_response,
                    Err(error) => {
                        response.messages = run_messages(request.messages, has_system, history_len);
                        yield Err(self.fail(error.into(), &ids, input_value, response).await);
                        return;
                    }
                };
                if debug {
                    model_span.in_scope(|| tracing::debug!(
                        content = model_response.message.content.as_deref().unwrap_or(""),
                        tool_calls = ?model_response.message.tool_calls,
                        finish_reason = ?model_response.finish_reason,
                        metrics = ?model_response.metrics,
                        "model answered"
                    ));
                }
                let first_token = metrics.time_to_first_token_ms;
                metrics += model_response.metrics;
                metrics.time_to_first_token_ms = first_token.or(model_response.metrics.time_to_first_token_ms);
                if let Some(model) = model_response.model {
                    response.model = Some(model);
                }
                let mut assistant = model_response.message;
                assistant.role = Role::Assistant;
                if assistant.tool_calls.is_empty() {
                    let answer = assistant.content.clone().unwrap_or_default();
                    request.messages.push(assistant);
                    break answer;
                }
                let calls = assistant.tool_calls.clone();
                request.messages.push(assistant);
                if turn >= config.max_turns {
                    response.messages = run_messages(request.messages, has_system, history_len);
                    let error = Error::MaxTurns {
                        agent: config.name.clone().unwrap_or_else(|| ids.agent_id.clone()),
                        max_turns: config.max_turns,
                    };
                    yield Err(self.fail(error, &ids, input_value, response).await);
                    return;
                }
                for call in &calls {
                    let tool = ToolExecution {
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        arguments: call.parse_arguments().unwrap_or_else(|_| Value::String(call.arguments.clone())),
                        ..ToolExecution::default()
                    };
                    yield Ok(ids.event(RunEventKind::ToolCallStarted { tool }));
                }
                let executions = futures::future::join_all(
                    calls.iter().map(|call| self.call_tool(call, &ids, &span)),
                )
                .await;
                for execution in executions {
                    let text = match (&execution.result, &execution.error) {
                        (Some(result), _) => result.clone(),
                        (None, Some(error)) => format!("Error: {error}"),
                        (None, None) => String::new(),
                    };
                    request.messages.push(Message::tool_result(
                        execution.tool_call_id.clone(),
                        execution.tool_name.clone(),
                        text,
                    ));
                    response.tools.push(execution.clone());
                    yield Ok(ids.event(RunEventKind::ToolCallCompleted { tool: execution }));
                }
            };

            response.content = Some(match &request.response_format {
                Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }) => {
                    serde_json::from_str(answer.trim()).unwrap_or(Value::String(answer))
                }
                _ => Value::String(answer),
            });
            metrics.duration_ms = started.elapsed().as_secs_f64() * 1_000.0;
            response.metrics = Some(metrics);
            response.messages = run_messages(request.messages, has_system, history_len);
            let record = RunRecord {
                run_id: ids.run_id.clone(),
                session_id: ids.session_id.clone(),
                status: RunStatus::Completed,
                input: input_value,
                response,
                error: None,
                created_at: crate::run::now_millis(),
            };
            match self.persist(record).instrument(span.clone()).await {
                Ok(response) => yield Ok(ids.event(RunEventKind::RunCompleted { response: Box::new(response) })),
                Err(error) => yield Err(error),
            }
        }
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

    /// Messages of earlier runs of the session, oldest first, without system messages.
    async fn history(&self, session_id: &str) -> crate::Result<Vec<Message>> {
        let config = &*self.config;
        let Some(storage) = self
            .effective_storage()
            .filter(|_| config.add_history_to_messages)
        else {
            return Ok(Vec::new());
        };
        if config.num_history_runs == 0 {
            return Ok(Vec::new());
        }
        let session = storage
            .read(
                &SessionKey::new(session_id, SessionKind::Agent),
                &ReadOptions::with_runs(config.num_history_runs),
            )
            .await?;
        Ok(session
            .map(|session| {
                session
                    .runs
                    .into_iter()
                    .filter(|run| run.status == RunStatus::Completed)
                    .flat_map(|run| run.response.messages)
                    .filter(|message| message.role != Role::System)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Runs one tool call; errors and panics become the call's error.
    async fn call_tool(
        &self,
        call: &ToolCall,
        ids: &RunIds,
        parent: &tracing::Span,
    ) -> ToolExecution {
        let span = parent.in_scope(|| {
            tracing::info_span!(
                "tool_call",
                tool = %call.name,
                tool_call_id = %call.id,
                run_id = %ids.run_id,
                session_id = %ids.session_id,
            )
        });
        let started = Instant::now();
        let mut execution = ToolExecution {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            ..ToolExecution::default()
        };
        let outcome: Result<String, String> = async {
            let arguments = call
                .parse_arguments()
                .map_err(|error| format!("{error}; send the arguments as a JSON object"))?;
            execution.arguments = arguments.clone();
            let tool = self
                .config
                .tools
                .iter()
                .find(|tool| tool.name() == call.name)
                .ok_or_else(|| {
                    let names: Vec<&str> = self.config.tools.iter().map(|t| t.name()).collect();
                    format!(
                        "tool `{}` does not exist; available tools: {}",
                        call.name,
                        names.join(", ")
                    )
                })?;
            match AssertUnwindSafe(tool.call(arguments)).catch_unwind().await {
                Ok(Ok(value)) => Ok(result_text(&value)),
                Ok(Err(error)) => Err(error_chain(&error)),
                Err(panic) => Err(format!("tool panicked: {}", panic_message(&*panic))),
            }
        }
        .instrument(span.clone())
        .await;
        if execution.arguments.is_null() {
            execution.arguments = Value::String(call.arguments.clone());
        }
        match outcome {
            Ok(result) => {
                span.in_scope(
                    || tracing::debug!(tool = %call.name, result = %result, "tool call succeeded"),
                );
                execution.result = Some(result);
            }
            Err(error) => {
                span.in_scope(
                    || tracing::warn!(tool = %call.name, error = %error, "tool call failed"),
                );
                execution.error = Some(error);
            }
        }
        execution.duration_ms = started.elapsed().as_secs_f64() * 1_000.0;
        execution
    }

    /// Writes a run to the agent's session, when the agent has storage.
    async fn persist(&self, record: RunRecord) -> crate::Result<RunResponse> {
        let config = &*self.config;
        let Some(storage) = self.effective_storage() else {
            return Ok(record.response);
        };
        let mut component_data = Map::new();
        if let Some(name) = &config.name {
            component_data.insert("name".into(), Value::String(name.clone()));
        }
        component_data.insert("model".into(), Value::String(config.model.id().to_owned()));
        let write = SessionWrite {
            session_id: record.session_id.clone(),
            kind: SessionKind::Agent,
            component_id: Some(self.id().to_owned()),
            user_id: self.user_id.as_deref().map(str::to_owned),
            component_data,
            state_patch: config
                .session_state
                .as_ref()
                .map(StatePatch::set_all)
                .unwrap_or_default(),
            run: Some(record),
            ..SessionWrite::default()
        };
        let response = write
            .run
            .as_ref()
            .map(|run| run.response.clone())
            .unwrap_or_default();
        match crate::storage::commit_detached(storage, write).await {
            Ok(_) => Ok(response),
            Err(source) => Err(Error::Persist {
                response: Box::new(response),
                source,
            }),
        }
    }

    /// Records a failed run (best effort) and returns its error.
    async fn fail(&self, error: Error, ids: &RunIds, input: Value, response: RunResponse) -> Error {
        tracing::warn!(run_id = %ids.run_id, session_id = %ids.session_id, error = %error, "agent run failed");
        if self.effective_storage().is_some() {
            let record = RunRecord {
                run_id: ids.run_id.clone(),
                session_id: ids.session_id.clone(),
                status: RunStatus::Error,
                input,
                response,
                error: Some(error.to_string()),
                created_at: crate::run::now_millis(),
            };
            if let Err(persist) = self.persist(record).await {
                tracing::warn!(error = %persist, "could not record the failed agent run");
            }
        }
        error
    }
}

/// The messages a run keeps: its system message and everything after the history.
fn run_messages(mut messages: Vec<Message>, has_system: bool, history_len: usize) -> Vec<Message> {
    let start = usize::from(has_system);
    messages.drain(start..(start + history_len).min(messages.len()));
    messages
}

/// An error's message followed by its sources.
fn error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
