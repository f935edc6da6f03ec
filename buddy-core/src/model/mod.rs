//! Language models: the [`Model`] trait, the request and response types it speaks, and the
//! [`OpenAIChat`] client for OpenAI-compatible chat-completions servers.
//!
//! A model takes one [`ModelRequest`] (messages, tool definitions, an optional structured
//! output format) and answers with one [`ModelResponse`], or with a stream of
//! [`ModelStreamEvent`]s ending in the full response. [`Claude`] speaks Anthropic's
//! Messages API. Agents hold models as
//! `Arc<dyn Model>`, so one model value is shared by every clone of an agent.
//!
//! Both HTTP clients treat the server as untrusted: answers are read within [`Limits`]
//! (body size, SSE event size, tool calls), every call has a bounded duration (at most
//! 300 s at default settings), redirects are never followed, and credentials never reach
//! an error message or `Debug` output.

mod anthropic;
pub(crate) mod call;
mod endpoint;
mod error;
mod http;
mod limits;
mod openai;
mod request;
mod sse;
mod wire;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use crate::run::{Message, Role, ToolCall};
pub use anthropic::Claude;
pub use error::ModelError;
pub use limits::Limits;
pub use openai::OpenAIChat;
pub use request::{
    FinishReason, ModelRequest, ModelResponse, ModelStreamEvent, ResponseFormat, ToolChoice,
    ToolDefinition, strict_json_schema,
};

/// A stream of [`ModelStreamEvent`]s borrowed from a model and its request.
pub type ModelStream<'a> = BoxStream<'a, Result<ModelStreamEvent, ModelError>>;

/// A language model: one request in, one response (or a stream of deltas) out.
///
/// Implementations are `Send + Sync` and object safe; agents hold them as `Arc<dyn Model>`.
/// Only [`response`](Model::response) is required: the default
/// [`stream`](Model::stream) yields the whole answer as one delta.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use async_trait::async_trait;
/// use buddy::model::{Model, ModelError, ModelRequest, ModelResponse, Message};
///
/// #[derive(Debug)]
/// struct Echo;
///
/// #[async_trait]
/// impl Model for Echo {
///     fn id(&self) -> &str { "echo" }
///     async fn response(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
///         let last = request.messages.last().and_then(|m| m.content.clone()).unwrap_or_default();
///         Ok(ModelResponse::text(last))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let request = ModelRequest::new(vec![Message::user("ping")]);
/// let response = Echo.response(&request).await.unwrap();
/// assert_eq!(response.message.content.as_deref(), Some("ping"));
/// # }
/// ```
#[async_trait]
pub trait Model: fmt::Debug + Send + Sync {
    /// The model's name as sent to the provider (`gpt-4o-mini`, ...).
    fn id(&self) -> &str;

    /// The provider's name (`openai`, ...).
    fn provider(&self) -> &str {
        "custom"
    }

    /// Sends `request` and waits for the whole answer.
    async fn response(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError>;

    /// Sends `request` and streams the answer: text deltas as they come, then
    /// [`ModelStreamEvent::Done`] with the full response (tool calls assembled, usage).
    fn stream<'a>(&'a self, request: &'a ModelRequest) -> ModelStream<'a> {
        Box::pin(async_stream::stream! {
            match self.response(request).await {
                Ok(response) => {
                    if let Some(text) = response.message.content.as_ref().filter(|t| !t.is_empty()) {
                        yield Ok(ModelStreamEvent::Content(text.clone()));
                    }
                    yield Ok(ModelStreamEvent::Done(Box::new(response)));
                }
                Err(error) => yield Err(error),
            }
        })
    }
}

/// Converts a model value into the shared handle agents hold.
pub trait IntoModel {
    /// The shared handle.
    fn into_model(self) -> Arc<dyn Model>;
}

impl<M: Model + 'static> IntoModel for M {
    fn into_model(self) -> Arc<dyn Model> {
        Arc::new(self)
    }
}

impl<M: Model + 'static> IntoModel for Arc<M> {
    fn into_model(self) -> Arc<dyn Model> {
        self
    }
}

impl IntoModel for Arc<dyn Model> {
    fn into_model(self) -> Arc<dyn Model> {
        self
    }
}
