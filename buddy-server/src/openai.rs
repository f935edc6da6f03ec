//! An OpenAI-compatible facade: `GET /v1/models` and `POST /v1/chat/completions`, so any
//! OpenAI client or chat UI can talk to a served agent, team, or workflow that takes one
//! text argument. `model` names the component by its id (agents first, then teams, then
//! workflows); the last user message is the run's input.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use buddy_core::component::RunRequest;
use buddy_core::{RunEventKind, SessionKind};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Served;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::hub::Outcome;
use crate::routes::{AppState, acting_user, body};

/// How a component takes a chat message as its input.
fn input_for(served: &Served, text: String) -> Option<Value> {
    match served.component.kind() {
        SessionKind::Agent | SessionKind::Team => Some(json!({"message": text})),
        _ => {
            let parameters = served.component.parameters();
            match parameters {
                [only] if only.rust_type == "String" => Some(json!({only.name: text})),
                _ => None,
            }
        }
    }
}

/// The components a chat client can talk to, in lookup order.
fn models(state: &AppState) -> impl Iterator<Item = &Served> {
    state
        .registry
        .agents
        .iter()
        .chain(&state.registry.teams)
        .chain(&state.registry.workflows)
        .filter(|served| input_for(served, String::new()).is_some())
}

/// An error in the shape OpenAI clients read (`error.message`), with `detail` as well.
fn openai_error(status: StatusCode, message: String, code: &str) -> Response {
    let body = json!({
        "detail": message,
        "error": {"message": message, "type": "invalid_request_error", "code": code},
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) async fn list_models(State(state): State<AppState>) -> axum::Json<Value> {
    let data: Vec<Value> = models(&state)
        .map(|served| {
            json!({
                "id": served.id,
                "object": "model",
                "created": 0,
                "owned_by": served.component.kind().as_str(),
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data}))
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    user: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// A message's text: a string, or the text parts of an array of parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let request: ChatRequest = body(bytes)?;
    let Some(served) = models(&state).find(|served| served.id == request.model) else {
        return Ok(openai_error(
            StatusCode::NOT_FOUND,
            format!("The model `{}` does not exist", request.model),
            "model_not_found",
        ));
    };
    let Some(text) = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == "user")
        .map(|message| text_of(&message.content))
    else {
        return Ok(openai_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the request has no user message".to_owned(),
            "invalid_messages",
        ));
    };
    let input = input_for(served, text).unwrap_or_default();
    if !state.hub.is_accepting() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let mut run = RunRequest::new(input);
    run.user_id = acting_user(&caller, request.user)?;
    let live = state
        .hub
        .start(Arc::clone(&served.component), run)
        .await?
        .live;
    let id = format!("chatcmpl-{}", live.run_id);
    let created = buddy_core::run::now_millis() / 1000;
    let model = served.id.clone();
    if !request.stream {
        return Ok(match live.finished().await {
            Outcome::Completed(response) => axum::Json(json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": response.text()},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }))
            .into_response(),
            Outcome::Failed(message) => {
                openai_error(StatusCode::INTERNAL_SERVER_ERROR, message, "run_failed")
            }
            Outcome::Paused => openai_error(
                StatusCode::CONFLICT,
                "the run paused for input; answer it at /v1/runs/{run_id}/waits".to_owned(),
                "run_paused",
            ),
            Outcome::Cancelled => openai_error(
                StatusCode::CONFLICT,
                "the run was cancelled".to_owned(),
                "run_cancelled",
            ),
        });
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let events = state
        .hub
        .subscribe(&live.run_id, state.hub.storage.clone(), 0);
    let mut streamed = false;
    let first = futures::stream::once({
        let first = chunk(json!({"role": "assistant", "content": ""}), None);
        async move { first }
    });
    let body = events.flat_map(move |event| {
        let out: Vec<String> = match &event.event.kind {
            RunEventKind::RunContent { content } if event.event.is_top_level() => {
                streamed = true;
                vec![chunk(json!({"content": content}), None)]
            }
            RunEventKind::RunCompleted { response } if event.event.is_top_level() => {
                // A run that streamed nothing sends its whole answer at the end.
                let mut out = Vec::new();
                if !streamed {
                    out.push(chunk(json!({"content": response.text()}), None));
                }
                out.push(chunk(json!({}), Some("stop")));
                out
            }
            RunEventKind::RunError { message } if event.event.is_top_level() => {
                vec![json!({"error": {"message": message, "type": "server_error"}}).to_string()]
            }
            RunEventKind::RunCancelled | RunEventKind::RunPaused { .. } => {
                vec![chunk(json!({}), Some("stop"))]
            }
            _ => Vec::new(),
        };
        futures::stream::iter(out)
    });
    let done = futures::stream::once(async { "[DONE]".to_owned() });
    let stream = first
        .chain(body)
        .chain(done)
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Ok(Sse::new(stream).into_response())
}
