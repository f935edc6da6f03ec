//! `Claude`: Anthropic's Messages API over reqwest.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::endpoint::{self, Endpoint, InvalidBaseUrl};
use super::http::{self, Call, HttpSettings, provider_message};
use super::wire::null_default;
use super::{
    FinishReason, Limits, Message, Model, ModelError, ModelRequest, ModelResponse, ModelStream,
    ModelStreamEvent, ToolCall, sse,
};
use crate::run::Metrics;

mod body;

const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";

/// The API's path under the base URL.
const PATH: &str = "/v1/messages";

/// A client for Anthropic's Messages API (`/v1/messages`): streaming, tools and usage.
///
/// The key comes from `ANTHROPIC_API_KEY` and the base URL from `ANTHROPIC_BASE_URL`
/// (default `https://api.anthropic.com`), unless set with [`api_key`](Claude::api_key) and
/// [`base_url`](Claude::base_url). Requests go through the same retry loop, shared client
/// (redirects never followed), timeouts and [`Limits`] as [`OpenAIChat`](super::OpenAIChat),
/// with the same defaults, so one call takes at most **300 s** at default settings (see
/// [`OpenAIChat`'s time and size bounds](super::OpenAIChat#time-and-size-bounds)). The key
/// prints as `[redacted]`, and is scrubbed from error messages that echo it. The base URL is
/// parsed once, when it is set; one without a scheme, or not `http`/`https`, makes every
/// request fail with [`ModelError::InvalidBaseUrl`].
///
/// The Messages API has no JSON mode: a [`ResponseFormat`](super::ResponseFormat) other
/// than text is sent as an instruction in the system prompt (with the schema), and the
/// agent decodes the answer.
///
/// ```no_run
/// # extern crate buddy_core as buddy;
/// use buddy::agent::Agent;
/// use buddy::model::Claude;
///
/// let agent = Agent::new(Claude::new("claude-3-5-haiku-latest").max_tokens(512));
/// # let _ = agent;
/// ```
#[derive(Clone)]
pub struct Claude {
    inner: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    id: String,
    base_url: String,
    /// `base_url` parsed, with the API's path: the URL of every request.
    endpoint: Result<Endpoint, InvalidBaseUrl>,
    api_key: Option<String>,
    max_tokens: u32,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    stop: Vec<String>,
    http: HttpSettings,
}

impl fmt::Debug for Claude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.inner;
        f.debug_struct("Claude")
            .field("id", &c.id)
            .field("base_url", &endpoint::redact_url(&c.base_url))
            .field("api_key", &c.api_key.as_ref().map(|_| http::REDACTED))
            .field("max_tokens", &c.max_tokens)
            .field("temperature", &c.temperature)
            .field("timeout", &c.http.attempt_timeout)
            .field("call_timeout", &c.http.call_timeout)
            .field("max_retries", &c.http.retry.max_retries)
            .field("limits", &c.http.limits)
            .finish_non_exhaustive()
    }
}

impl Claude {
    /// A client for model `id`, configured from `ANTHROPIC_BASE_URL` and
    /// `ANTHROPIC_API_KEY`; answers at most 1024 tokens unless told otherwise.
    pub fn new(id: impl Into<String>) -> Self {
        let base_url = std::env::var("ANTHROPIC_BASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let api_key = std::env::var("ANTHROPIC_API_KEY")
            .ok()
            .filter(|key| !key.is_empty());
        Claude {
            inner: Arc::new(Config {
                id: id.into(),
                endpoint: Endpoint::new(&base_url, PATH),
                base_url,
                api_key,
                max_tokens: 1024,
                temperature: None,
                top_p: None,
                top_k: None,
                stop: Vec::new(),
                http: HttpSettings::default(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.inner)
    }

    /// The API's base URL, without `/v1` (`https://api.anthropic.com`); requests go to
    /// `{base_url}/v1/messages`.
    ///
    /// Parsed here, once: a URL without a scheme, or one that is not `http` or `https`,
    /// makes every request fail with [`ModelError::InvalidBaseUrl`].
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        let config = self.config();
        config.base_url = url.into();
        config.endpoint = Endpoint::new(&config.base_url, PATH);
        self
    }

    /// The API key, sent as `x-api-key`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config().api_key = Some(key.into());
        self
    }

    /// The most tokens to generate per call (required by the API; default 1024).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.config().max_tokens = max_tokens;
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.config().temperature = Some(temperature);
        self
    }

    /// Nucleus sampling.
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.config().top_p = Some(top_p);
        self
    }

    /// Top-k sampling.
    pub fn top_k(mut self, top_k: u32) -> Self {
        self.config().top_k = Some(top_k);
        self
    }

    /// Sequences where generation stops.
    pub fn stop<S: Into<String>>(mut self, stop: impl IntoIterator<Item = S>) -> Self {
        self.config().stop = stop.into_iter().map(Into::into).collect();
        self
    }

    /// The time limit of one attempt, from sending to the last byte of the body, streamed
    /// or not (default 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config().http.attempt_timeout = timeout;
        self
    }

    /// How long one attempt waits for the response headers (default 60 s).
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.config().http.first_byte_timeout = timeout;
        self
    }

    /// The longest wait between two chunks of a body, streamed or not (default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config().http.idle_timeout = timeout;
        self
    }

    /// The time limit of the whole call: every attempt, every backoff and the body
    /// (default 300 s). No retry starts once it would begin after this limit.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config().http.call_timeout = timeout;
        self
    }

    /// How many times a failed request is retried (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config().http.retry.max_retries = retries;
        self
    }

    /// The first retry's backoff, doubled on every further retry (default 500 ms), and the
    /// longest backoff (default 20 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        let config = self.config();
        config.http.retry.initial = initial;
        config.http.retry.max = max;
        self
    }

    /// The size and count limits on answers (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config().http.limits = limits;
        self
    }

    /// Uses `client` instead of the process-wide shared client. Build it with
    /// `redirect(reqwest::redirect::Policy::none())`: a client that follows redirects
    /// sends `x-api-key` along before buddy can refuse the answer from another origin.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.config().http.client = Some(client);
        self
    }

    /// The secrets scrubbed from errors: the key, the base URL's user-info and query values.
    fn secrets(&self) -> Vec<String> {
        let c = &*self.inner;
        let mut secrets: Vec<String> = c.api_key.iter().cloned().collect();
        if let Ok(endpoint) = &c.endpoint {
            secrets.extend(endpoint.secrets().iter().cloned());
        }
        secrets
    }

    /// The request URL, or the error every request reports for an unusable base URL.
    fn endpoint(&self) -> Result<&Endpoint, ModelError> {
        self.inner
            .endpoint
            .as_ref()
            .map_err(InvalidBaseUrl::to_error)
    }

    /// The bytes of the Messages API request body for `request`.
    fn body_bytes(&self, request: &ModelRequest, stream: bool) -> Result<Bytes, ModelError> {
        serde_json::to_vec(&body::Body::new(&self.inner, request, stream))
            .map(Bytes::from)
            .map_err(|error| ModelError::Config(format!("cannot encode the request: {error}")))
    }

    /// The JSON body of a Messages API request for `request`: the same JSON the client
    /// sends (which it serialises straight from typed structs, without this `Value`).
    pub fn request_body(&self, request: &ModelRequest, stream: bool) -> Value {
        serde_json::to_value(body::Body::new(&self.inner, request, stream)).unwrap_or_default()
    }

    async fn send(&self, call: &Call<'_>, body: Bytes) -> Result<reqwest::Response, ModelError> {
        let c = &*self.inner;
        let client = call.client()?;
        call.send(|url| {
            let mut builder = client
                .post(url)
                .header("anthropic-version", API_VERSION)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &c.api_key {
                let mut value = reqwest::header::HeaderValue::from_str(key)
                    .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
                value.set_sensitive(true);
                builder = builder.header("x-api-key", value);
            }
            builder
        })
        .await
    }
}

// Fields the format allows to be absent may also be `null` (`null_default`).
#[derive(Deserialize)]
struct WireResponse {
    #[serde(default, deserialize_with = "null_default")]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    usage: WireUsage,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default, deserialize_with = "null_default")]
        text: String,
    },
    ToolUse {
        #[serde(default, deserialize_with = "null_default")]
        id: String,
        #[serde(default, deserialize_with = "null_default")]
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

/// Token counts: a negative, fractional or too large count is a malformed answer.
#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default, deserialize_with = "null_default")]
    input_tokens: u64,
    #[serde(default, deserialize_with = "null_default")]
    output_tokens: u64,
}

/// One event of a streamed answer.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        #[serde(default, deserialize_with = "null_default")]
        message: WireStartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: WireDelta,
    },
    MessageDelta {
        #[serde(default, deserialize_with = "null_default")]
        delta: WireMessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct WireStartMessage {
    #[serde(default, deserialize_with = "null_default")]
    usage: WireUsage,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        #[serde(default, deserialize_with = "null_default")]
        text: String,
    },
    InputJsonDelta {
        #[serde(default, deserialize_with = "null_default")]
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct WireMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

fn finish_reason(reason: Option<&str>, has_calls: bool) -> Result<FinishReason, ModelError> {
    match reason {
        Some("refusal") => Ok(FinishReason::ContentFilter),
        Some("pause_turn") => Ok(FinishReason::Stop),
        Some(reason) => FinishReason::parse(reason)
            .ok_or_else(|| ModelError::UnknownFinishReason(reason.to_owned())),
        None if has_calls => Ok(FinishReason::ToolCalls),
        None => Ok(FinishReason::Stop),
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1_000.0
}

fn usage_metrics(usage: WireUsage, mut metrics: Metrics) -> Metrics {
    metrics.input_tokens = usage.input_tokens;
    metrics.output_tokens = usage.output_tokens;
    metrics.total_tokens = usage.input_tokens.saturating_add(usage.output_tokens);
    metrics
}

#[async_trait]
impl Model for Claude {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn provider(&self) -> &str {
        "anthropic"
    }

    async fn response(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let call = Call::start(&self.inner.http, self.endpoint()?, self.secrets());
        respond(self, &call, request)
            .await
            .map_err(|error| call.scrub_error(error))
    }

    fn stream<'a>(&'a self, request: &'a ModelRequest) -> ModelStream<'a> {
        let secrets = self.secrets();
        Box::pin(
            stream(self, request)
                .map(move |item| item.map_err(|error| http::scrub_error(error, &secrets))),
        )
    }
}

/// A tool-use block's input as arguments text: a missing or `null` input is `{}`.
fn input_arguments(input: Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        input => input.to_string(),
    }
}

/// The non-streamed answer to `request`, errors not yet scrubbed.
async fn respond(
    model: &Claude,
    call: &Call<'_>,
    request: &ModelRequest,
) -> Result<ModelResponse, ModelError> {
    let started = Instant::now();
    let response = model.send(call, model.body_bytes(request, false)?).await?;
    let bytes = call.read_body(response).await?;
    let wire: WireResponse = serde_json::from_slice(&bytes)
        .map_err(|error| ModelError::malformed("messages response", Some(Box::new(error))))?;
    let limits = call.limits();
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in wire.content {
        match block {
            WireBlock::Text { text: piece } => text.push_str(&piece),
            WireBlock::ToolUse { id, name, input } => {
                if calls.len() >= limits.max_tool_calls {
                    return Err(ModelError::limit("tool calls", limits.max_tool_calls));
                }
                calls.push(ToolCall::new(id, name, input_arguments(input)));
            }
            WireBlock::Other => {}
        }
    }
    let finish_reason = finish_reason(wire.stop_reason.as_deref(), !calls.is_empty())?;
    let metrics = usage_metrics(
        wire.usage,
        Metrics {
            duration_ms: millis(started),
            ..Metrics::default()
        },
    );
    Ok(ModelResponse {
        message: Message::assistant_tool_calls((!text.is_empty()).then_some(text), calls),
        finish_reason,
        metrics,
        model: wire.model,
        extra: Map::new(),
    })
}

/// Adds a tool-use block of a streamed answer, keyed by its content-block index within the
/// call's [`Limits`].
fn start_call(
    calls: &mut BTreeMap<u64, ToolCall>,
    limits: Limits,
    index: u64,
    call: ToolCall,
) -> Result<(), ModelError> {
    if index > limits.max_tool_call_index {
        return Err(ModelError::limit(
            "tool-call index",
            limits.max_tool_call_index,
        ));
    }
    if !calls.contains_key(&index) && calls.len() >= limits.max_tool_calls {
        return Err(ModelError::limit("tool calls", limits.max_tool_calls));
    }
    calls.insert(index, call);
    Ok(())
}

/// The streamed answer to `request`, errors not yet scrubbed.
fn stream<'a>(
    model: &'a Claude,
    request: &'a ModelRequest,
) -> impl futures::Stream<Item = Result<ModelStreamEvent, ModelError>> + Send + 'a {
    async_stream::stream! {
        let endpoint = match model.endpoint() {
            Ok(endpoint) => endpoint,
            Err(error) => {
                yield Err(error);
                return;
            }
        };
        let call = Call::start(&model.inner.http, endpoint, model.secrets());
        let started = Instant::now();
        let response = match model.body_bytes(request, true) {
            Ok(body) => model.send(&call, body).await,
            Err(error) => Err(error),
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                yield Err(error);
                return;
            }
        };
        let limits = call.limits();
        let mut events = std::pin::pin!(sse::events(
            call.chunks(response, limits.max_response_bytes),
            limits.max_sse_event_bytes,
        ));
        let mut text = String::new();
        // Tool calls by content-block index.
        let mut calls: BTreeMap<u64, ToolCall> = BTreeMap::new();
        let mut usage = WireUsage::default();
        let mut model_name = None;
        let mut stop_reason: Option<String> = None;
        let mut stopped = false;
        let mut first_token: Option<f64> = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            if event.data.trim().is_empty() {
                continue;
            }
            let parsed: WireEvent = match serde_json::from_str(&event.data) {
                Ok(parsed) => parsed,
                Err(error) => {
                    yield Err(ModelError::malformed("stream event", Some(Box::new(error))));
                    return;
                }
            };
            match parsed {
                WireEvent::MessageStart { message } => {
                    usage.input_tokens = message.usage.input_tokens;
                    model_name = message.model;
                }
                WireEvent::ContentBlockStart { index, content_block } => {
                    if let WireBlock::ToolUse { id, name, .. } = content_block {
                        first_token.get_or_insert_with(|| millis(started));
                        if let Err(error) = start_call(&mut calls, limits, index, ToolCall::new(id, name, "")) {
                            yield Err(error);
                            return;
                        }
                    }
                }
                WireEvent::ContentBlockDelta { index, delta } => match delta {
                    WireDelta::TextDelta { text: piece } if !piece.is_empty() => {
                        first_token.get_or_insert_with(|| millis(started));
                        text.push_str(&piece);
                        yield Ok(ModelStreamEvent::Content(piece));
                    }
                    WireDelta::InputJsonDelta { partial_json } => {
                        if let Some(call) = calls.get_mut(&index) {
                            call.arguments.push_str(&partial_json);
                        }
                    }
                    _ => {}
                },
                WireEvent::MessageDelta { delta, usage: delta_usage } => {
                    if delta.stop_reason.is_some() {
                        stop_reason = delta.stop_reason;
                    }
                    if let Some(delta_usage) = delta_usage {
                        usage.output_tokens = delta_usage.output_tokens;
                    }
                }
                WireEvent::MessageStop => {
                    stopped = true;
                    break;
                }
                WireEvent::Error { error } => {
                    let message = provider_message(&json!({"error": error}).to_string())
                        .unwrap_or_else(|| error.to_string());
                    yield Err(ModelError::Status { status: 200, message, retry_after: None, endpoint: call.endpoint() });
                    return;
                }
                WireEvent::Other => {}
            }
        }
        if !stopped {
            yield Err(ModelError::StreamInterrupted {
                what: "connection closed before message_stop".into(),
                source: None,
            });
            return;
        }
        let calls: Vec<ToolCall> = calls.into_values().collect();
        // Arguments that are not valid JSON are passed on as written: the agent answers
        // them with an error result the model can act on.
        let finish = match finish_reason(stop_reason.as_deref(), !calls.is_empty()) {
            Ok(finish) => finish,
            Err(error) => {
                yield Err(error);
                return;
            }
        };
        let metrics = usage_metrics(usage, Metrics {
            time_to_first_token_ms: first_token,
            duration_ms: millis(started),
            ..Metrics::default()
        });
        yield Ok(ModelStreamEvent::Done(Box::new(ModelResponse {
            message: Message::assistant_tool_calls((!text.is_empty()).then_some(text), calls),
            finish_reason: finish,
            metrics,
            model: model_name,
            extra: Map::new(),
        })));
    }
}
