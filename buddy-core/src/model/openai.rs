//! `OpenAIChat`: the OpenAI chat-completions wire format over reqwest.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{self, RetryPolicy, provider_message};
use super::{
    FinishReason, Message, Model, ModelError, ModelRequest, ModelResponse, ModelStream,
    ModelStreamEvent, ResponseFormat, Role, ToolCall, ToolChoice,
};
use crate::run::Metrics;

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A client for OpenAI's chat-completions API and any server that speaks it (vLLM,
/// llama.cpp, Ollama, LiteLLM, ...).
///
/// The base URL comes from `OPENAI_BASE_URL` (default `https://api.openai.com/v1`) and the
/// key from `OPENAI_API_KEY`, unless set with [`base_url`](OpenAIChat::base_url) and
/// [`api_key`](OpenAIChat::api_key). Cloning is cheap (the settings are behind an `Arc`),
/// and every `OpenAIChat` without its own [`http_client`](OpenAIChat::http_client) shares
/// one `reqwest::Client`, so connections are pooled across agents.
///
/// Failed requests are retried in one place: on 408, 429, 5xx, connection failures and
/// timeouts, up to [`max_retries`](OpenAIChat::max_retries) times, with exponential backoff
/// and jitter, waiting as long as a `Retry-After` header asks (at most 60 s). The API key is
/// never printed: `Debug` shows `[redacted]` and errors carry neither key nor URL.
///
/// ```no_run
/// use buddy_core::model::{Message, Model, ModelRequest, OpenAIChat};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), buddy_core::model::ModelError> {
/// let model = OpenAIChat::new("gpt-4o-mini").temperature(0.2).max_tokens(256);
/// let response = model.response(&ModelRequest::new(vec![Message::user("Hi!")])).await?;
/// println!("{:?}", response.message.content);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct OpenAIChat {
    inner: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    id: String,
    base_url: String,
    api_key: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    headers: Vec<(String, String)>,
    top_p: Option<f32>,
    stop: Vec<String>,
    seed: Option<i64>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    user: Option<String>,
    timeout: Option<Duration>,
    max_retries: u32,
    retry_backoff: Duration,
    max_backoff: Duration,
    client: Option<reqwest::Client>,
}

impl fmt::Debug for OpenAIChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.inner;
        f.debug_struct("OpenAIChat")
            .field("id", &c.id)
            .field("base_url", &c.base_url)
            .field("api_key", &c.api_key.as_ref().map(|_| "[redacted]"))
            .field("temperature", &c.temperature)
            .field("max_tokens", &c.max_tokens)
            .field("top_p", &c.top_p)
            .field("stop", &c.stop)
            .field("seed", &c.seed)
            .field("timeout", &c.timeout)
            .field("max_retries", &c.max_retries)
            .finish_non_exhaustive()
    }
}

impl OpenAIChat {
    /// A client for model `id`, configured from `OPENAI_BASE_URL` and `OPENAI_API_KEY`.
    pub fn new(id: impl Into<String>) -> Self {
        let base_url = std::env::var("OPENAI_BASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let api_key = std::env::var("OPENAI_API_KEY")
            .ok()
            .filter(|key| !key.is_empty());
        OpenAIChat {
            inner: Arc::new(Config {
                id: id.into(),
                base_url,
                api_key,
                temperature: None,
                max_tokens: None,
                max_completion_tokens: None,
                headers: Vec::new(),
                top_p: None,
                stop: Vec::new(),
                seed: None,
                frequency_penalty: None,
                presence_penalty: None,
                user: None,
                timeout: Some(Duration::from_secs(120)),
                max_retries: 3,
                retry_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(20),
                client: None,
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.inner)
    }

    /// The server's base URL, up to and including `/v1`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.config().base_url = url.into();
        self
    }

    /// The API key, sent as a bearer token.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config().api_key = Some(key.into());
        self
    }

    /// Sends no API key (local servers).
    pub fn without_api_key(mut self) -> Self {
        self.config().api_key = None;
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.config().temperature = Some(temperature);
        self
    }

    /// The most tokens to generate per call.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.config().max_tokens = Some(max_tokens);
        self
    }

    /// The most tokens to generate per call, as `max_completion_tokens` (OpenAI's reasoning
    /// models refuse `max_tokens`).
    pub fn max_completion_tokens(mut self, max_tokens: u32) -> Self {
        self.config().max_completion_tokens = Some(max_tokens);
        self
    }

    /// Adds an HTTP header to every request (gateways, organisation ids, ...). Its value is
    /// marked sensitive, so it never appears in debug output.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config().headers.push((name.into(), value.into()));
        self
    }

    /// Nucleus sampling.
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.config().top_p = Some(top_p);
        self
    }

    /// Sequences where generation stops.
    pub fn stop<S: Into<String>>(mut self, stop: impl IntoIterator<Item = S>) -> Self {
        self.config().stop = stop.into_iter().map(Into::into).collect();
        self
    }

    /// The sampling seed.
    pub fn seed(mut self, seed: i64) -> Self {
        self.config().seed = Some(seed);
        self
    }

    /// Frequency penalty.
    pub fn frequency_penalty(mut self, penalty: f32) -> Self {
        self.config().frequency_penalty = Some(penalty);
        self
    }

    /// Presence penalty.
    pub fn presence_penalty(mut self, penalty: f32) -> Self {
        self.config().presence_penalty = Some(penalty);
        self
    }

    /// The end-user id sent to the provider.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config().user = Some(user.into());
        self
    }

    /// The time limit of one attempt, including reading a streamed body (default 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config().timeout = Some(timeout);
        self
    }

    /// How many times a failed request is retried (default 3; 0 disables retries).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config().max_retries = retries;
        self
    }

    /// The first retry's backoff, doubled on every further retry (default 500 ms), and the
    /// longest backoff (default 20 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        let config = self.config();
        config.retry_backoff = initial;
        config.max_backoff = max;
        self
    }

    /// Uses `client` instead of the process-wide shared client.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.config().client = Some(client);
        self
    }

    fn client(&self) -> Result<&reqwest::Client, ModelError> {
        match &self.inner.client {
            Some(client) => Ok(client),
            None => http::shared_client(),
        }
    }

    /// The JSON body of a chat-completions request for `request`.
    pub fn request_body(&self, request: &ModelRequest, stream: bool) -> Value {
        let c = &*self.inner;
        let mut body = Map::new();
        body.insert("model".into(), Value::String(c.id.clone()));
        body.insert(
            "messages".into(),
            Value::Array(request.messages.iter().map(wire_message).collect()),
        );
        if stream {
            body.insert("stream".into(), Value::Bool(true));
            body.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(key.into(), value);
            }
        };
        put("temperature", c.temperature.map(|v| json!(v)));
        put("max_tokens", c.max_tokens.map(|v| json!(v)));
        put(
            "max_completion_tokens",
            c.max_completion_tokens.map(|v| json!(v)),
        );
        put("top_p", c.top_p.map(|v| json!(v)));
        put("seed", c.seed.map(|v| json!(v)));
        put("frequency_penalty", c.frequency_penalty.map(|v| json!(v)));
        put("presence_penalty", c.presence_penalty.map(|v| json!(v)));
        put("user", c.user.as_ref().map(|v| json!(v)));
        put("stop", (!c.stop.is_empty()).then(|| json!(c.stop)));
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|tool| {
                    let mut function = json!({
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    });
                    if let (Some(strict), Some(map)) = (tool.strict, function.as_object_mut()) {
                        map.insert("strict".into(), Value::Bool(strict));
                    }
                    json!({ "type": "function", "function": function })
                })
                .collect();
            put("tools", Some(Value::Array(tools)));
        }
        put(
            "tool_choice",
            request.tool_choice.as_ref().map(|choice| match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            }),
        );
        put(
            "response_format",
            request.response_format.as_ref().map(|format| match format {
                ResponseFormat::Text => json!({"type": "text"}),
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                } => json!({
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": strict},
                }),
            }),
        );
        Value::Object(body)
    }

    /// Sends `body` through the shared retry loop.
    async fn send(&self, body: &Value) -> Result<reqwest::Response, ModelError> {
        let c = &*self.inner;
        let client = self.client()?;
        let url = format!("{}/chat/completions", c.base_url.trim_end_matches('/'));
        let policy = RetryPolicy {
            max_retries: c.max_retries,
            initial: c.retry_backoff,
            max: c.max_backoff,
        };
        http::send_with_retry(policy, || {
            let mut builder = client.post(&url).json(body);
            if let Some(key) = &c.api_key {
                builder = builder.bearer_auth(key);
            }
            for (name, value) in &c.headers {
                if let Ok(mut value) = reqwest::header::HeaderValue::from_str(value) {
                    value.set_sensitive(true);
                    builder = builder.header(name.as_str(), value);
                }
            }
            if let Some(timeout) = c.timeout {
                builder = builder.timeout(timeout);
            }
            builder
        })
        .await
    }
}

fn wire_message(message: &Message) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut map = Map::new();
    map.insert("role".into(), Value::String(role.into()));
    let content = match &message.content {
        Some(content) => Value::String(content.clone()),
        None if !message.tool_calls.is_empty() => Value::Null,
        None => Value::String(String::new()),
    };
    map.insert("content".into(), content);
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
        map.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &message.tool_call_id {
        map.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    if let (Some(name), false) = (&message.name, message.role == Role::Tool) {
        map.insert("name".into(), Value::String(name.clone()));
    }
    Value::Object(map)
}

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default, alias = "delta")]
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: WireFunction,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

/// Builds the response once the answer is complete: checks the finish reason and the tool
/// calls' arguments, fills the metrics.
fn finish(
    content: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<&str>,
    usage: Option<WireUsage>,
    model: Option<String>,
    metrics: Metrics,
) -> Result<ModelResponse, ModelError> {
    let finish_reason = match finish_reason {
        Some(reason) => FinishReason::parse(reason)
            .ok_or_else(|| ModelError::UnknownFinishReason(reason.to_owned()))?,
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    for call in &tool_calls {
        call.parse_arguments()
            .map_err(|source| ModelError::invalid_tool_arguments(call, source))?;
    }
    let mut metrics = metrics;
    if let Some(usage) = usage {
        metrics.input_tokens = usage.prompt_tokens;
        metrics.output_tokens = usage.completion_tokens;
        metrics.total_tokens = if usage.total_tokens > 0 {
            usage.total_tokens
        } else {
            usage.prompt_tokens + usage.completion_tokens
        };
    }
    Ok(ModelResponse {
        message: Message::assistant_tool_calls(content, tool_calls),
        finish_reason,
        metrics,
        model,
        extra: Map::new(),
    })
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1_000.0
}

#[async_trait]
impl Model for OpenAIChat {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn provider(&self) -> &str {
        "openai"
    }

    async fn response(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let started = Instant::now();
        let body = self.request_body(request, false);
        let response = self.send(&body).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ModelError::StreamInterrupted {
                what: "response body".into(),
                source: Some(Box::new(error.without_url())),
            })?;
        let completion: WireCompletion = serde_json::from_slice(&bytes)
            .map_err(|error| ModelError::malformed("chat completion", Some(Box::new(error))))?;
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::malformed("no choices", None))?;
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            return Err(ModelError::Refused(refusal));
        }
        let tool_calls = choice
            .message
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(i, call)| ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: call.function.name.unwrap_or_default(),
                arguments: call.function.arguments.unwrap_or_default(),
            })
            .collect();
        let metrics = Metrics {
            duration_ms: millis(started),
            ..Metrics::default()
        };
        finish(
            choice.message.content,
            tool_calls,
            choice.finish_reason.as_deref(),
            completion.usage,
            completion.model,
            metrics,
        )
    }

    fn stream<'a>(&'a self, request: &'a ModelRequest) -> ModelStream<'a> {
        Box::pin(async_stream::stream! {
            let started = Instant::now();
            let body = self.request_body(request, true);
            let response = match self.send(&body).await {
                Ok(response) => response,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            let mut events = response
                .bytes_stream()
                .map(|chunk| chunk.map_err(reqwest::Error::without_url))
                .eventsource();
            let mut content = String::new();
            let mut calls: Vec<ToolCall> = Vec::new();
            let mut finish_reason: Option<String> = None;
            let mut usage: Option<WireUsage> = None;
            let mut model: Option<String> = None;
            let mut first_token: Option<f64> = None;
            let mut done = false;
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        yield Err(ModelError::StreamInterrupted {
                            what: "transport error mid-stream".into(),
                            source: Some(Box::new(error)),
                        });
                        return;
                    }
                };
                let data = event.data.trim();
                if data == "[DONE]" {
                    done = true;
                    break;
                }
                if data.is_empty() {
                    continue;
                }
                if let Some(message) = provider_message(data) {
                    yield Err(ModelError::Status { status: 200, message, retry_after: None });
                    return;
                }
                let chunk: WireCompletion = match serde_json::from_str(data) {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        yield Err(ModelError::malformed("stream chunk", Some(Box::new(error))));
                        return;
                    }
                };
                if chunk.model.is_some() {
                    model = chunk.model;
                }
                if chunk.usage.is_some() {
                    usage = chunk.usage;
                }
                for choice in chunk.choices {
                    let delta = choice.message;
                    if let Some(text) = delta.content.filter(|text| !text.is_empty()) {
                        first_token.get_or_insert_with(|| millis(started));
                        content.push_str(&text);
                        yield Ok(ModelStreamEvent::Content(text));
                    }
                    if let Some(refusal) = delta.refusal.filter(|r| !r.is_empty()) {
                        yield Err(ModelError::Refused(refusal));
                        return;
                    }
                    for call in delta.tool_calls {
                        first_token.get_or_insert_with(|| millis(started));
                        let index = call.index.unwrap_or(calls.len().saturating_sub(1));
                        while calls.len() <= index {
                            calls.push(ToolCall::default());
                        }
                        let slot = &mut calls[index];
                        if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                            slot.id = id;
                        }
                        // Servers send the name once; some repeat it in every delta.
                        if let Some(name) = call.function.name.filter(|n| *n != slot.name) {
                            slot.name.push_str(&name);
                        }
                        if let Some(arguments) = call.function.arguments {
                            slot.arguments.push_str(&arguments);
                        }
                    }
                    if choice.finish_reason.is_some() {
                        finish_reason = choice.finish_reason;
                    }
                }
            }
            if finish_reason.is_none() {
                let what = if done { "no finish reason before [DONE]" } else { "connection closed before a finish reason" };
                yield Err(ModelError::StreamInterrupted { what: what.into(), source: None });
                return;
            }
            for (i, call) in calls.iter_mut().enumerate() {
                if call.id.is_empty() {
                    call.id = format!("call_{i}");
                }
            }
            let metrics = Metrics {
                time_to_first_token_ms: first_token,
                duration_ms: millis(started),
                ..Metrics::default()
            };
            let content = (!content.is_empty()).then_some(content);
            match finish(content, calls, finish_reason.as_deref(), usage, model, metrics) {
                Ok(response) => yield Ok(ModelStreamEvent::Done(Box::new(response))),
                Err(error) => yield Err(error),
            }
        })
    }
}
