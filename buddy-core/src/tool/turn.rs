//! The tool calls of one model turn, as agents and team leaders both make them: announced,
//! run concurrently, reported, and answered in the conversation.

use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::durable::{EntryKind, JournalEntry, Slot, hash_value, within};
use crate::engine::RunScope;
use crate::error::Result;
use crate::run::{Message, RunEventKind, RunResponse, ToolCall, ToolExecution};

/// What one call produced: the execution, and the response of a member it ran (teams).
#[derive(Serialize, Deserialize)]
pub(crate) struct CallOutcome {
    pub execution: ToolExecution,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
///
/// In a durable run every call is a journal entry (its key allocated in the order of the
/// calls): a call the journal holds is not run again, and what a call runs inside it (a
/// team's member) is journaled under its key.
pub(crate) async fn run_calls<'a>(
    scope: &RunScope,
    calls: &'a [ToolCall],
    messages: &mut Vec<Message>,
    response: &mut RunResponse,
    mut run: impl FnMut(&'a ToolCall) -> BoxFuture<'a, CallOutcome>,
) -> Result<Vec<CallOutcome>> {
    let mut planned = Vec::with_capacity(calls.len());
    for call in calls {
        let slot = scope.allocate(EntryKind::Tool, &format!("tool:{}", call.name));
        let input_hash = hash_value(&(&call.name, &call.arguments));
        let recorded = match &slot {
            Some(slot) => slot.replay(&input_hash)?,
            None => None,
        };
        let started = RunEventKind::ToolCallStarted {
            tool: started_execution(call),
        };
        match recorded {
            Some(_) => scope.emit_replayed(started),
            None => scope.emit(started),
        }
        planned.push((call, slot, input_hash, recorded));
    }
    let futures =
        planned.into_iter().map(
            |(call, slot, input_hash, recorded)| match (slot, recorded) {
                (Some(slot), Some(entry)) => {
                    async move { replayed(&slot, entry).map(|o| (o, true)) }.boxed()
                }
                (Some(slot), None) => {
                    let future = run(call);
                    async move {
                        let busy = slot.busy();
                        crate::fault::point("before_tool_call", &slot.key);
                        let outcome = within(Some(slot.child()), future).await;
                        record(&slot, input_hash, &outcome).await?;
                        drop(busy);
                        crate::fault::point("after_tool_call", &slot.key);
                        Ok((outcome, false))
                    }
                    .boxed()
                }
                (None, _) => {
                    let future = run(call);
                    async move { Ok((future.await, false)) }.boxed()
                }
            },
        );
    let results: Vec<Result<(CallOutcome, bool)>> = join_all(futures).await;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        let (outcome, was_replayed) = result?;
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
        let completed = RunEventKind::ToolCallCompleted {
            tool: execution.clone(),
        };
        if was_replayed {
            scope.emit_replayed(completed);
        } else {
            scope.emit(completed);
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A call the journal holds.
fn replayed(slot: &Slot, entry: JournalEntry) -> Result<CallOutcome> {
    crate::durable::decode(&slot.key, entry.output.unwrap_or_default())
}

/// Journals a call's outcome before the model sees it.
async fn record(slot: &Slot, input_hash: String, outcome: &CallOutcome) -> Result<()> {
    let output = serde_json::to_value(outcome).map_err(|source| {
        crate::Error::Durable(crate::durable::DurableError::Encode {
            key: slot.key.clone(),
            source,
        })
    })?;
    slot.record(input_hash, Ok(output), None).await.map(drop)
}
