//! The tool calls of one model turn, as agents and team leaders both make them: announced,
//! run concurrently, reported, and answered in the conversation.

use std::time::Instant;

use futures::future::{BoxFuture, join_all};
use serde_json::Value;

use crate::engine::RunScope;
use crate::run::{Message, RunEventKind, RunResponse, ToolCall, ToolExecution};

/// What one call produced: the execution, and the response of a member it ran (teams).
pub(crate) struct CallOutcome {
    pub execution: ToolExecution,
    pub response: Option<RunResponse>,
}

impl CallOutcome {
    /// A call that returned `result`, or failed with `error`, having started at `started`.
    pub(crate) fn new(call: &ToolCall, started: Instant, result: Result<String, String>) -> Self {
        let mut execution = started_execution(call);
        match result {
            Ok(result) => execution.result = Some(result),
            Err(error) => execution.error = Some(error),
        }
        execution.duration_ms = started.elapsed().as_secs_f64() * 1_000.0;
        CallOutcome {
            execution,
            response: None,
        }
    }
}

/// The execution of `call` before it ran: its id, name and arguments (as JSON when they
/// parse, as the model's text otherwise).
pub(crate) fn started_execution(call: &ToolCall) -> ToolExecution {
    ToolExecution {
        tool_call_id: call.id.clone(),
        tool_name: call.name.clone(),
        arguments: call
            .parse_arguments()
            .unwrap_or_else(|_| Value::String(call.arguments.clone())),
        ..ToolExecution::default()
    }
}

/// Runs the calls of one turn concurrently with `run`: `tool_call_started` for each first,
/// then `tool_call_completed` for each in the order of the calls; every execution is added to
/// `response.tools` and answered in `messages` as a tool result (`Error: ...` for a failure).
pub(crate) async fn run_calls<'a>(
    scope: &RunScope,
    calls: &'a [ToolCall],
    messages: &mut Vec<Message>,
    response: &mut RunResponse,
    run: impl FnMut(&'a ToolCall) -> BoxFuture<'a, CallOutcome>,
) -> Vec<CallOutcome> {
    for call in calls {
        scope.emit(RunEventKind::ToolCallStarted {
            tool: started_execution(call),
        });
    }
    let outcomes = join_all(calls.iter().map(run)).await;
    for outcome in &outcomes {
        let execution = &outcome.execution;
        let text = match (&execution.result, &execution.error) {
            (Some(result), _) => result.clone(),
            (None, Some(error)) => format!("Error: {error}"),
            (None, None) => String::new(),
        };
        messages.push(Message::tool_result(
            execution.tool_call_id.clone(),
            execution.tool_name.clone(),
            text,
        ));
        response.tools.push(execution.clone());
        scope.emit(RunEventKind::ToolCallCompleted {
            tool: execution.clone(),
        });
    }
    outcomes
}
