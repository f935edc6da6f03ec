//! `OpenAIChat`: the OpenAI chat-completions wire format over reqwest.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::endpoint::{self, Endpoint, InvalidBaseUrl};
use super::http::{self, Call, HttpSettings, provider_message};
use super::wire::null_default;
use super::{
    FinishReason, Limits, Message, Model, ModelError, ModelRequest, ModelResponse, ModelStream,
    ModelStreamEvent, ToolCall, sse,
};
use crate::run::Metrics;

mod body;

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The API's path under the base URL.
const PATH: &str = "/chat/completions";

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
/// never printed: `Debug` shows `[redacted]` (also for user-info and query values in the
/// base URL), errors name the endpoint only as `host[:port]/path` and never carry the key,
/// and a key or header value the server echoes back in an error is replaced by
/// `[redacted]`. Redirects are never followed (a 3xx is [`ModelError::Redirect`]), so
/// credentials and prompts only go to the configured origin.
///
/// The base URL is parsed once, when it is set, and the request URL reused for every
/// request. One without a scheme (`localhost:11434/v1`) or that is not an `http` or `https`
/// URL makes every request fail with [`ModelError::InvalidBaseUrl`], which says what is
/// wrong and how to fix it; nothing is sent.
///
/// # Time and size bounds
///
/// | setting | default |
/// |---|---|
/// | connect (shared client) | 10 s |
/// | [`first_byte_timeout`](OpenAIChat::first_byte_timeout): until the response headers | 60 s |
/// | [`idle_timeout`](OpenAIChat::idle_timeout): between two body chunks | 60 s |
/// | [`timeout`](OpenAIChat::timeout): one attempt, body included | 120 s |
/// | [`call_timeout`](OpenAIChat::call_timeout): the whole call, retries and backoff included | 300 s |
/// | [`max_retries`](OpenAIChat::max_retries) | 3 |
/// | `Retry-After` honoured up to | 60 s |
/// | [`limits`](OpenAIChat::limits) | [`Limits::default`]: 16 MiB body, 4 MiB SSE event, 128 tool calls |
///
/// So at default settings one call takes at most **300 s (5 minutes)**, whatever the
/// server does: a server that accepts connections and never answers costs
/// 4 × 60 s + backoff (about 4 minutes); one that sends a byte a minute is cut by the
/// per-attempt and per-call limits.
///
/// ```no_run
/// # extern crate buddy_core as buddy;
/// use buddy::model::{Message, Model, ModelRequest, OpenAIChat};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), buddy::model::ModelError> {
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
    /// `base_url` parsed, with the API's path: the URL of every request.
    endpoint: Result<Endpoint, InvalidBaseUrl>,
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
    http: HttpSettings,
}

impl fmt::Debug for OpenAIChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.inner;
        f.debug_struct("OpenAIChat")
            .field("id", &c.id)
            .field("base_url", &endpoint::redact_url(&c.base_url))
            .field("api_key", &c.api_key.as_ref().map(|_| http::REDACTED))
            .field(
                "headers",
                &c.headers
                    .iter()
                    .map(|(name, _)| (name.as_str(), http::REDACTED))
                    .collect::<Vec<_>>(),
            )
            .field("temperature", &c.temperature)
            .field("max_tokens", &c.max_tokens)
            .field("top_p", &c.top_p)
            .field("stop", &c.stop)
            .field("seed", &c.seed)
            .field("timeout", &c.http.attempt_timeout)
            .field("call_timeout", &c.http.call_timeout)
            .field("max_retries", &c.http.retry.max_retries)
            .field("limits", &c.http.limits)
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
                endpoint: Endpoint::new(&base_url, PATH),
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
                http: HttpSettings::default(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.inner)
    }

    /// The server's base URL, up to and including `/v1` (`http://localhost:11434/v1`);
    /// requests go to `{base_url}/chat/completions`, with any query of the base URL kept.
    ///
    /// Parsed here, once: a URL without a scheme, or one that is not `http` or `https`,
    /// makes every request fail with [`ModelError::InvalidBaseUrl`].
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        let config = self.config();
        config.base_url = url.into();
        config.endpoint = Endpoint::new(&config.base_url, PATH);
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

    /// How many times a failed request is retried (default 3; 0 disables retries).
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
    /// sends the key along before buddy can refuse the answer from another origin.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.config().http.client = Some(client);
        self
    }

    /// The secrets scrubbed from errors: the key, every extra header value, the base URL's
    /// user-info and query values.
    fn secrets(&self) -> Vec<String> {
        let c = &*self.inner;
        let mut secrets: Vec<String> = c.api_key.iter().cloned().collect();
        secrets.extend(c.headers.iter().map(|(_, value)| value.clone()));
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

    /// The bytes of the chat-completions request body for `request`.
    fn body_bytes(&self, request: &ModelRequest, stream: bool) -> Result<Bytes, ModelError> {
        serde_json::to_vec(&body::Body::new(&self.inner, request, stream))
            .map(Bytes::from)
            .map_err(|error| ModelError::Config(format!("cannot encode the request: {error}")))
    }

    /// The JSON body of a chat-completions request for `request`: the same JSON the client
    /// sends (which it serialises straight from typed structs, without this `Value`).
    pub fn request_body(&self, request: &ModelRequest, stream: bool) -> Value {
        serde_json::to_value(body::Body::new(&self.inner, request, stream)).unwrap_or_default()
    }

    /// Sends `body` through the shared retry loop.
    async fn send(&self, call: &Call<'_>, body: Bytes) -> Result<reqwest::Response, ModelError> {
        let c = &*self.inner;
        let client = call.client()?;
        call.send(|url| {
            let mut builder = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &c.api_key {
                builder = builder.bearer_auth(key);
            }
            for (name, value) in &c.headers {
                if let Ok(mut value) = reqwest::header::HeaderValue::from_str(value) {
                    value.set_sensitive(true);
                    builder = builder.header(name.as_str(), value);
                }
            }
            builder
        })
        .await
    }

    async fn respond(
        &self,
        call: &Call<'_>,
        request: &ModelRequest,
    ) -> Result<ModelResponse, ModelError> {
        let started = Instant::now();
        let body = self.body_bytes(request, false)?;
        let response = self.send(call, body).await?;
        let bytes = call.read_body(response).await?;
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
        let limits = call.limits();
        if choice.message.tool_calls.len() > limits.max_tool_calls {
            return Err(ModelError::limit("tool calls", limits.max_tool_calls));
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
}

/// Tool calls of a streamed answer, keyed by the `index` the server gives each delta (a
/// map, so an absurd index costs nothing), within the call's [`Limits`].
struct StreamedCalls {
    calls: BTreeMap<u64, ToolCall>,
    last: Option<u64>,
    limits: Limits,
}

impl StreamedCalls {
    fn new(limits: Limits) -> Self {
        StreamedCalls {
            calls: BTreeMap::new(),
            last: None,
            limits,
        }
    }

    /// Adds one delta; a delta without an index continues the last call.
    fn add(&mut self, delta: WireToolCall) -> Result<(), ModelError> {
        let index = delta.index.or(self.last).unwrap_or(0);
        if index > self.limits.max_tool_call_index {
            return Err(ModelError::limit(
                "tool-call index",
                self.limits.max_tool_call_index,
            ));
        }
        if !self.calls.contains_key(&index) && self.calls.len() >= self.limits.max_tool_calls {
            return Err(ModelError::limit("tool calls", self.limits.max_tool_calls));
        }
        self.last = Some(index);
        let slot = self.calls.entry(index).or_default();
        if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
            slot.id = id;
        }
        // Servers send the name once; some repeat it in every delta.
        if let Some(name) = delta.function.name.filter(|n| *n != slot.name) {
            slot.name.push_str(&name);
        }
        if let Some(arguments) = delta.function.arguments {
            slot.arguments.push_str(&arguments);
        }
        Ok(())
    }

    /// The calls in index order, a missing id filled in by position.
    fn into_calls(self) -> Vec<ToolCall> {
        self.calls
            .into_values()
            .enumerate()
            .map(|(i, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{i}");
                }
                call
            })
            .collect()
    }
}

// Every field may be absent or `null` (`null_default`): the wire format allows both.
#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default, deserialize_with = "null_default")]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default, alias = "delta", deserialize_with = "null_default")]
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
    #[serde(default, deserialize_with = "null_default")]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    /// Any `u64` decodes; [`StreamedCalls`] checks it against the limits.
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    function: WireFunction,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Token counts: a negative, fractional or too large count is a malformed answer.
#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default, deserialize_with = "null_default")]
    prompt_tokens: u64,
    #[serde(default, deserialize_with = "null_default")]
    completion_tokens: u64,
    #[serde(default, deserialize_with = "null_default")]
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
    // Arguments that are not valid JSON (a call cut off at `max_tokens`, say) are passed on
    // as written: the agent answers them with an error result the model can act on.
    let mut metrics = metrics;
    if let Some(usage) = usage {
        metrics.input_tokens = usage.prompt_tokens;
        metrics.output_tokens = usage.completion_tokens;
        metrics.total_tokens = if usage.total_tokens > 0 {
            usage.total_tokens
        } else {
            usage.prompt_tokens.saturating_add(usage.completion_tokens)
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
        let call = Call::start(&self.inner.http, self.endpoint()?, self.secrets());
        self.respond(&call, request)
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

/// The streamed answer to `request`, errors not yet scrubbed.
fn stream<'a>(
    model: &'a OpenAIChat,
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
        let mut content = String::new();
        let mut calls = StreamedCalls::new(limits);
        let mut finish_reason: Option<String> = None;
        let mut usage: Option<WireUsage> = None;
        let mut model_name: Option<String> = None;
        let mut first_token: Option<f64> = None;
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    yield Err(error);
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
                yield Err(ModelError::Status { status: 200, message, retry_after: None, endpoint: call.endpoint() });
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
                model_name = chunk.model;
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
                for tool_call in delta.tool_calls {
                    first_token.get_or_insert_with(|| millis(started));
                    if let Err(error) = calls.add(tool_call) {
                        yield Err(error);
                        return;
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
        let metrics = Metrics {
            time_to_first_token_ms: first_token,
            duration_ms: millis(started),
            ..Metrics::default()
        };
        let content = (!content.is_empty()).then_some(content);
        match finish(content, calls.into_calls(), finish_reason.as_deref(), usage, model_name, metrics) {
            Ok(response) => yield Ok(ModelStreamEvent::Done(Box::new(response))),
            Err(error) => yield Err(error),
        }
    }
}
