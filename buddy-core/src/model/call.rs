//! One model call inside a run: the `model_call` span, debug output, and the answer's text
//! deltas emitted as the run's content when the run is streamed. Agents and team leaders
//! both call their models through here.

use futures::StreamExt;
use tracing::Instrument;

use super::{Model, ModelError, ModelRequest, ModelResponse, ModelStreamEvent};
use crate::durable::{EntryKind, hash_value};
use crate::engine::RunScope;
use crate::error::{Error, Result};
use crate::run::Role;

/// Sends `request` to `model` for the run `scope` (turn `turn` of its loop): streamed when
/// the run is streamed, text deltas emitted as they come.
///
/// In a durable run the call is a journal entry: the answer is written before it is
/// returned, and on resume a journaled answer is returned (its text re-emitted, marked
/// replayed) without calling the model. A failed call is not journaled: on resume it is
/// made again.
pub(crate) async fn call_model(
    model: &dyn Model,
    request: &ModelRequest,
    scope: &mut RunScope,
    turn: usize,
    debug: bool,
) -> Result<ModelResponse> {
    match scope.allocate(EntryKind::Model, "model") {
        None => Ok(send(model, request, scope, turn, debug).await?),
        // Boxed: a run outside durable runs does not carry this path's state.
        Some(slot) => Box::pin(journaled(slot, model, request, scope, turn, debug)).await,
    }
}

/// A model call that is the journal entry `slot`.
async fn journaled(
    slot: crate::durable::Slot,
    model: &dyn Model,
    request: &ModelRequest,
    scope: &mut RunScope,
    turn: usize,
    debug: bool,
) -> Result<ModelResponse> {
    let input_hash = hash_value(request);
    if let Some(entry) = slot.replay(&input_hash)? {
        let response: ModelResponse =
            crate::durable::decode(&slot.key, entry.output.unwrap_or_default())?;
        if let Some(text) = response.message.content.as_deref()
            && !text.is_empty()
        {
            scope.emit_replayed_content(text);
        }
        return Ok(response);
    }
    let busy = slot.busy();
    crate::fault::point("before_model_call", &slot.key);
    let response = send(model, request, scope, turn, debug).await?;
    let output = serde_json::to_value(&response).map_err(|source| {
        Error::Durable(crate::durable::DurableError::Encode {
            key: slot.key.clone(),
            source,
        })
    })?;
    slot.record(input_hash, Ok(output), None).await?;
    drop(busy);
    crate::fault::point("after_model_call", &slot.key);
    Ok(response)
}

/// One model call: the span, debug output, streaming.
async fn send(
    model: &dyn Model,
    request: &ModelRequest,
    scope: &mut RunScope,
    turn: usize,
    debug: bool,
) -> Result<ModelResponse, ModelError> {
    let span = scope.span().in_scope(|| {
        tracing::info_span!(
            "model_call",
            model = model.id(),
            turn,
            run_id = %scope.run_id(),
            session_id = %scope.session_id(),
        )
    });
    if debug {
        span.in_scope(|| {
            tracing::debug!(
                messages = ?request.messages,
                tools = request.tools.len(),
                "model request"
            )
        });
    }
    let result = if scope.streaming() {
        streamed(model, request, scope)
            .instrument(span.clone())
            .await
    } else {
        model.response(request).instrument(span.clone()).await
    };
    let mut response = result?;
    response.message.role = Role::Assistant;
    if debug {
        span.in_scope(|| {
            tracing::debug!(
                content = response.message.content.as_deref().unwrap_or(""),
                tool_calls = ?response.message.tool_calls,
                finish_reason = ?response.finish_reason,
                metrics = ?response.metrics,
                "model answered"
            )
        });
    }
    Ok(response)
}

async fn streamed(
    model: &dyn Model,
    request: &ModelRequest,
    scope: &mut RunScope,
) -> Result<ModelResponse, ModelError> {
    let mut deltas = model.stream(request);
    while let Some(item) = deltas.next().await {
        match item? {
            ModelStreamEvent::Content(text) => {
                scope.emit_content(text);
                // A durable run's deltas reach its log in short windows, not one by one.
                if let Some(journal) = scope.journal()
                    && let Err(error) = journal.flush_if_due().await
                {
                    tracing::warn!(error = %crate::engine::error_chain(&error), "text deltas could not be written to the event log");
                }
            }
            ModelStreamEvent::Done(response) => return Ok(*response),
        }
    }
    Err(ModelError::StreamInterrupted {
        what: "model stream ended without a final response".into(),
        source: None,
    })
}
