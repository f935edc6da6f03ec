//! One model call inside a run: the `model_call` span, debug output, and the answer's text
//! deltas emitted as the run's content when the run is streamed. Agents and team leaders
//! both call their models through here.

use futures::StreamExt;
use tracing::Instrument;

use super::{Model, ModelError, ModelRequest, ModelResponse, ModelStreamEvent};
use crate::engine::RunScope;
use crate::run::Role;

/// Sends `request` to `model` for the run `scope` (turn `turn` of its loop): streamed when
/// the run is streamed, text deltas emitted as they come.
pub(crate) async fn call_model(
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
            ModelStreamEvent::Content(text) => scope.emit_content(text),
            ModelStreamEvent::Done(response) => return Ok(*response),
        }
    }
    Err(ModelError::StreamInterrupted {
        what: "model stream ended without a final response".into(),
        source: None,
    })
}
