use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::model::{
    FinishReason, Model, ModelError, ModelRequest, ModelResponse, ModelStream, ModelStreamEvent,
    ToolCall,
};
use crate::run::Metrics;

/// One scripted answer of a [`ScriptedModel`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// A whole response (streamed as one content delta, then done).
    Response(ModelResponse),
    /// A streamed answer: these text deltas, then a response with their concatenation.
    Chunks(Vec<String>),
    /// A failure.
    Error(ModelError),
    /// A panic inside the model call (to test panic handling).
    Panic(String),
}

/// A model that answers from a queue of scripted replies and records every request.
///
/// Clones share the queue and the recorded requests, so a test can keep one clone and give
/// another to an agent.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::testing::ScriptedModel;
/// use serde_json::json;
///
/// let model = ScriptedModel::new()
///     .tool_call("add", json!({"a": 1, "b": 2}))
///     .text("3");
/// assert_eq!(model.remaining(), 2);
/// ```
#[derive(Clone, Default)]
pub struct ScriptedModel {
    id: Arc<str>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    requests: Vec<ModelRequest>,
    latency: Option<Duration>,
    calls: usize,
}

impl fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("id", &self.id)
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl ScriptedModel {
    /// A model with no replies yet, named `scripted`.
    pub fn new() -> Self {
        ScriptedModel {
            id: Arc::from("scripted"),
            state: Arc::default(),
        }
    }

    /// Renames the model.
    pub fn named(mut self, id: &str) -> Self {
        self.id = Arc::from(id);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a reply.
    pub fn push(&self, reply: Reply) {
        self.lock().replies.push_back(reply);
    }

    /// Queues a reply (builder form).
    pub fn reply(self, reply: Reply) -> Self {
        self.push(reply);
        self
    }

    /// Queues a text answer.
    pub fn text(self, text: impl Into<String>) -> Self {
        self.reply(Reply::Response(ModelResponse::text(text)))
    }

    /// Queues an answer that calls one tool.
    pub fn tool_call(self, name: &str, arguments: Value) -> Self {
        self.tool_calls(vec![(name, arguments)])
    }

    /// Queues an answer that calls several tools at once (ids `call_0`, `call_1`, ...).
    pub fn tool_calls(self, calls: Vec<(&str, Value)>) -> Self {
        let calls = calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| {
                ToolCall::new(format!("call_{i}"), name, arguments.to_string())
            })
            .collect();
        self.reply(Reply::Response(ModelResponse::tool_calls(calls)))
    }

    /// Queues an answer that calls a tool with raw (possibly invalid) argument text.
    pub fn raw_tool_call(self, name: &str, arguments: &str) -> Self {
        self.reply(Reply::Response(ModelResponse::tool_calls(vec![
            ToolCall::new("call_0", name, arguments),
        ])))
    }

    /// Queues a structured answer: `value` as JSON text.
    pub fn json(self, value: Value) -> Self {
        self.reply(Reply::Response(ModelResponse::json(&value)))
    }

    /// Queues a streamed answer made of `chunks`.
    pub fn chunks<S: Into<String>>(self, chunks: impl IntoIterator<Item = S>) -> Self {
        self.reply(Reply::Chunks(chunks.into_iter().map(Into::into).collect()))
    }

    /// Queues a failure.
    pub fn error(self, error: ModelError) -> Self {
        self.reply(Reply::Error(error))
    }

    /// Waits `latency` before every answer.
    pub fn latency(self, latency: Duration) -> Self {
        self.lock().latency = Some(latency);
        self
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ModelRequest> {
        self.lock().requests.clone()
    }

    /// How many calls the model received.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// How many replies are left.
    pub fn remaining(&self) -> usize {
        self.lock().replies.len()
    }

    async fn next(&self, request: &ModelRequest) -> Reply {
        let (reply, latency) = {
            let mut state = self.lock();
            state.calls += 1;
            state.requests.push(request.clone());
            (state.replies.pop_front(), state.latency)
        };
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        reply.unwrap_or_else(|| Reply::Error(ModelError::msg("scripted model has no reply left")))
    }
}

fn metrics() -> Metrics {
    Metrics {
        input_tokens: 1,
        output_tokens: 1,
        total_tokens: 2,
        ..Metrics::default()
    }
}

#[async_trait]
impl Model for ScriptedModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn provider(&self) -> &str {
        "scripted"
    }

    async fn response(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        match self.next(request).await {
            Reply::Response(response) => Ok(response.with_metrics(metrics())),
            Reply::Chunks(chunks) => {
                Ok(ModelResponse::text(chunks.concat()).with_metrics(metrics()))
            }
            Reply::Error(error) => Err(error),
            Reply::Panic(message) => panic!("{message}"),
        }
    }

    fn stream<'a>(&'a self, request: &'a ModelRequest) -> ModelStream<'a> {
        Box::pin(async_stream::stream! {
            match self.next(request).await {
                Reply::Response(response) => {
                    if let Some(text) = response.message.content.clone().filter(|t| !t.is_empty()) {
                        yield Ok(ModelStreamEvent::Content(text));
                    }
                    yield Ok(ModelStreamEvent::Done(Box::new(response.with_metrics(metrics()))));
                }
                Reply::Chunks(chunks) => {
                    for chunk in &chunks {
                        yield Ok(ModelStreamEvent::Content(chunk.clone()));
                    }
                    let mut response = ModelResponse::text(chunks.concat()).with_metrics(metrics());
                    response.finish_reason = FinishReason::Stop;
                    yield Ok(ModelStreamEvent::Done(Box::new(response)));
                }
                Reply::Error(error) => yield Err(error),
                Reply::Panic(message) => panic!("{message}"),
            }
        })
    }
}

type Answer = dyn Fn(&ModelRequest) -> Result<ModelResponse, ModelError> + Send + Sync;

/// A model that answers every request with a closure.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::model::ModelResponse;
/// use buddy::testing::FunctionModel;
///
/// let model = FunctionModel::new(|request| {
///     Ok(ModelResponse::text(format!("{} messages", request.messages.len())))
/// });
/// # use buddy::model::Model;
/// assert_eq!(model.id(), "function");
/// ```
#[derive(Clone)]
pub struct FunctionModel {
    id: Arc<str>,
    answer: Arc<Answer>,
}

impl FunctionModel {
    /// A model named `function` that answers with `answer`.
    pub fn new(
        answer: impl Fn(&ModelRequest) -> Result<ModelResponse, ModelError> + Send + Sync + 'static,
    ) -> Self {
        FunctionModel {
            id: Arc::from("function"),
            answer: Arc::new(answer),
        }
    }

    /// Renames the model.
    pub fn named(mut self, id: &str) -> Self {
        self.id = Arc::from(id);
        self
    }
}

impl fmt::Debug for FunctionModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionModel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Model for FunctionModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn provider(&self) -> &str {
        "function"
    }

    async fn response(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        (self.answer)(request)
    }
}
