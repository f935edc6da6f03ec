//! What every HTTP model client shares: the process-wide `reqwest::Client` (redirects
//! off), the per-call deadline and timeouts, the one retry loop (exponential backoff with
//! jitter, `Retry-After`, bounded attempts), bounded body reading, and scrubbing the
//! client's secrets out of errors built from what the server sent. A call's status,
//! connection, timeout and redirect errors name its [`Endpoint`] (`host[:port]/path`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::endpoint::Endpoint;
use super::{Limits, ModelError};

/// The longest `Retry-After` honoured; a provider asking for more gets this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Durations longer than this are treated as this (so deadlines never overflow).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What replaces a secret in text that came from the server.
pub(crate) const REDACTED: &str = "[redacted]";

/// How failed requests are retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(20),
        }
    }
}

/// The transport settings every HTTP model client has: retries, timeouts, limits and an
/// optional caller-supplied client. Defaults: see [`OpenAIChat`](super::OpenAIChat).
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub(crate) retry: RetryPolicy,
    /// One attempt, from sending to the last body byte.
    pub(crate) attempt_timeout: Duration,
    /// From sending until the response headers arrive.
    pub(crate) first_byte_timeout: Duration,
    /// The longest wait between two body chunks.
    pub(crate) idle_timeout: Duration,
    /// The whole call: every attempt, every backoff, the body.
    pub(crate) call_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) client: Option<reqwest::Client>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            retry: RetryPolicy::default(),
            attempt_timeout: Duration::from_secs(120),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(300),
            limits: Limits::default(),
            client: None,
        }
    }
}

/// The client shared by every model without its own: connect timeout 10 s, and
/// redirects are never followed (a 3xx is a [`ModelError::Redirect`]).
pub(crate) fn shared_client() -> Result<&'static reqwest::Client, ModelError> {
    static SHARED: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| error.without_url().to_string())
        })
        .as_ref()
        .map_err(|message| ModelError::Config(format!("cannot build HTTP client: {message}")))
}

/// One model call: its settings, where it goes, its deadline, and the secrets to keep out
/// of errors.
pub(crate) struct Call<'a> {
    settings: &'a HttpSettings,
    endpoint: &'a Endpoint,
    /// The endpoint's label as errors name it: scrubbed of the secrets (a key in the path).
    label: Arc<str>,
    deadline: Instant,
    secrets: Vec<String>,
}

impl<'a> Call<'a> {
    /// Starts a call to `endpoint` now; `secrets` are scrubbed from every error it returns.
    pub(crate) fn start(
        settings: &'a HttpSettings,
        endpoint: &'a Endpoint,
        secrets: Vec<String>,
    ) -> Self {
        let secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        let label = endpoint.label();
        let label = if secrets.iter().any(|s| label.contains(s.as_str())) {
            Arc::from(scrub(label, &secrets))
        } else {
            label.clone()
        };
        Call {
            settings,
            endpoint,
            label,
            deadline: Instant::now() + settings.call_timeout.min(MAX_DURATION),
            secrets,
        }
    }

    /// The endpoint as errors name it (`host[:port]/path`).
    pub(crate) fn endpoint(&self) -> Option<String> {
        Some(self.label.to_string())
    }

    /// The client to send with.
    pub(crate) fn client(&self) -> Result<&'a reqwest::Client, ModelError> {
        match &self.settings.client {
            Some(client) => Ok(client),
            None => shared_client(),
        }
    }

    /// The limits of this call.
    pub(crate) fn limits(&self) -> Limits {
        self.settings.limits
    }

    fn remaining(&self) -> Result<Duration, ModelError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            Err(ModelError::timeout(
                "the call's total time limit passed",
                self.endpoint(),
            ))
        } else {
            Ok(remaining)
        }
    }

    /// Sends the request `build` makes for the endpoint's URL (parsed once, when the base
    /// URL was set), retrying retryable failures (408, 429, 5xx, connection failures,
    /// timeouts) as the settings say; the one place retries happen. No retry starts that
    /// could not begin before the call's deadline.
    pub(crate) async fn send(
        &self,
        build: impl Fn(reqwest::Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ModelError> {
        let policy = self.settings.retry;
        let mut attempt: u32 = 0;
        loop {
            let error = match self.attempt(&build).await {
                Ok(response) => return Ok(response),
                Err(error) => self.scrub_error(error),
            };
            if attempt >= policy.max_retries || !error.is_retryable() {
                return Err(error);
            }
            let delay = match error.retry_after() {
                Some(wait) => wait.min(MAX_RETRY_AFTER),
                None => backoff(policy.initial, policy.max, attempt),
            };
            if Instant::now()
                .checked_add(delay)
                .is_none_or(|resume| resume >= self.deadline)
            {
                return Err(error);
            }
            attempt = attempt.saturating_add(1);
            tracing::warn!(
                attempt,
                max_retries = policy.max_retries,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retrying model request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        build: &impl Fn(reqwest::Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ModelError> {
        let remaining = self.remaining()?;
        let url = self.endpoint.url();
        let request = build(url.clone()).timeout(self.settings.attempt_timeout.min(remaining));
        let first_byte = self.settings.first_byte_timeout.min(remaining);
        let response = match tokio::time::timeout(first_byte, request.send()).await {
            Err(_) => {
                return Err(ModelError::timeout(
                    "no response within the first-byte timeout",
                    self.endpoint(),
                ));
            }
            Ok(Err(error)) => return Err(transport_error(error, self.endpoint())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_redirection() {
            let target = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|location| response.url().join(location).ok())
                .and_then(|target| target.host_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(ModelError::Redirect {
                status: status.as_u16(),
                target,
                endpoint: self.endpoint(),
            });
        }
        // A caller-supplied client may follow redirects itself: refuse an answer from
        // another origin.
        if url.origin() != response.url().origin() {
            return Err(ModelError::Redirect {
                status: status.as_u16(),
                target: response.url().host_str().unwrap_or("unknown").to_owned(),
                endpoint: self.endpoint(),
            });
        }
        if status.is_success() {
            Ok(response)
        } else {
            Err(self.status_error(response).await)
        }
    }

    /// The body as chunks: at most the idle timeout between two, all before the call's
    /// deadline, at most `max` bytes in all (more is [`ModelError::LimitExceeded`]).
    pub(crate) fn chunks(
        &self,
        response: reqwest::Response,
        max: usize,
    ) -> impl Stream<Item = Result<Bytes, ModelError>> + Send + 'static {
        let idle = self.settings.idle_timeout.min(MAX_DURATION);
        let deadline = self.deadline;
        let label = self.label.clone();
        let endpoint = move || Some(label.to_string());
        async_stream::stream! {
            let mut body = response.bytes_stream();
            let mut total: usize = 0;
            loop {
                let wait_until = (Instant::now() + idle).min(deadline);
                let next = tokio::time::timeout_at(wait_until.into(), body.next()).await;
                match next {
                    Err(_) if wait_until >= deadline => {
                        yield Err(ModelError::timeout("the call's total time limit passed", endpoint()));
                        return;
                    }
                    Err(_) => {
                        yield Err(ModelError::timeout("no data from the model provider within the idle timeout", endpoint()));
                        return;
                    }
                    Ok(None) => return,
                    Ok(Some(Err(error))) => {
                        yield Err(body_error(error, endpoint()));
                        return;
                    }
                    Ok(Some(Ok(chunk))) => {
                        total = total.saturating_add(chunk.len());
                        if total > max {
                            yield Err(ModelError::limit("response bytes", max));
                            return;
                        }
                        yield Ok(chunk);
                    }
                }
            }
        }
    }

    /// The whole body, at most the maximum response size.
    pub(crate) async fn read_body(
        &self,
        response: reqwest::Response,
    ) -> Result<Vec<u8>, ModelError> {
        let mut chunks =
            std::pin::pin!(self.chunks(response, self.settings.limits.max_response_bytes));
        let mut body = Vec::new();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok(body)
    }

    async fn status_error(&self, response: reqwest::Response) -> ModelError {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let max = self.settings.limits.max_error_body_bytes;
        // Read at most `max` bytes of an error body; a cut or slow one gives what came.
        let mut body = Vec::new();
        let mut chunks = std::pin::pin!(self.chunks(response, usize::MAX));
        while body.len() < max {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    let room = max - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                _ => break,
            }
        }
        let body = String::from_utf8_lossy(&body);
        let message = provider_message(&body).unwrap_or_else(|| {
            let trimmed = body.trim();
            if trimmed.is_empty() {
                "no error message".to_owned()
            } else {
                trimmed.chars().take(500).collect()
            }
        });
        ModelError::Status {
            status,
            message: self.scrub(&message),
            retry_after,
            endpoint: self.endpoint(),
        }
    }

    /// `text` with every secret of this call replaced by `[redacted]`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// `error` with the call's secrets scrubbed from every text the server could have
    /// chosen (messages, tool names and arguments, decoder messages).
    pub(crate) fn scrub_error(&self, error: ModelError) -> ModelError {
        scrub_error(error, &self.secrets)
    }
}

/// `text` with every one of `secrets` replaced by `[redacted]`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    text
}

fn scrub_source(
    source: Option<crate::error::BoxError>,
    secrets: &[String],
) -> Option<crate::error::BoxError> {
    let source = source?;
    let text = source.to_string();
    let debug = format!("{source:?}");
    if secrets
        .iter()
        .any(|s| !s.is_empty() && (text.contains(s.as_str()) || debug.contains(s.as_str())))
    {
        Some(scrub(&text, secrets).into())
    } else {
        Some(source)
    }
}

/// `error` with `secrets` scrubbed from every text the server could have chosen.
pub(crate) fn scrub_error(error: ModelError, secrets: &[String]) -> ModelError {
    if secrets.is_empty() {
        return error;
    }
    match error {
        ModelError::Status {
            status,
            message,
            retry_after,
            endpoint,
        } => ModelError::Status {
            status,
            message: scrub(&message, secrets),
            retry_after,
            endpoint,
        },
        ModelError::MalformedResponse { what, source } => ModelError::MalformedResponse {
            what: scrub(&what, secrets),
            source: scrub_source(source, secrets),
        },
        ModelError::StreamInterrupted { what, source } => ModelError::StreamInterrupted {
            what: scrub(&what, secrets),
            source: scrub_source(source, secrets),
        },
        ModelError::UnknownFinishReason(reason) => {
            ModelError::UnknownFinishReason(scrub(&reason, secrets))
        }
        ModelError::Refused(message) => ModelError::Refused(scrub(&message, secrets)),
        ModelError::Redirect {
            status,
            target,
            endpoint,
        } => ModelError::Redirect {
            status,
            target: scrub(&target, secrets),
            endpoint,
        },
        other => other,
    }
}

/// Exponential backoff with jitter: a random wait between half and all of
/// `initial * 2^attempt`, capped at `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let full = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max);
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000) as u32;
    // `(full / 2 / 1000) * random` is at most `full / 2`: no overflow for any setting.
    full / 2 + (full / 2 / 1_000) * random
}

/// A failure to send a request: a timeout, or a connection that failed (and why).
pub(crate) fn transport_error(error: reqwest::Error, endpoint: Option<String>) -> ModelError {
    let error = error.without_url();
    if error.is_timeout() {
        ModelError::Timeout {
            endpoint,
            source: Box::new(error),
        }
    } else {
        ModelError::Connect {
            endpoint,
            reason: connect_reason(&error),
            source: Box::new(error),
        }
    }
}

/// Why a request could not be sent, in a few words, from the transport's error chain.
fn connect_reason(error: &reqwest::Error) -> &'static str {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut texts = String::new();
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused => return "connection refused",
                ErrorKind::ConnectionReset => return "connection reset by the server",
                ErrorKind::ConnectionAborted => return "connection aborted",
                ErrorKind::TimedOut => return "connection timed out",
                ErrorKind::HostUnreachable => return "host unreachable",
                ErrorKind::NetworkUnreachable => return "network unreachable",
                ErrorKind::AddrNotAvailable => return "address not available",
                _ => {}
            }
        }
        texts.push_str(&error.to_string().to_ascii_lowercase());
        texts.push('\n');
        cause = error.source();
    }
    // hyper and rustls say these only in words.
    if texts.contains("dns error") {
        "DNS lookup failed"
    } else if texts.contains("certificate") || texts.contains("tls") {
        "TLS error"
    } else if texts.contains("invalid http") {
        "the answer is not HTTP"
    } else if texts.contains("connection closed") {
        "connection closed by the server"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    }
}

/// An error while reading a body: a timeout, or a cut connection.
fn body_error(error: reqwest::Error, endpoint: Option<String>) -> ModelError {
    let error = error.without_url();
    if error.is_timeout() {
        ModelError::Timeout {
            endpoint,
            source: Box::new(error),
        }
    } else {
        ModelError::StreamInterrupted {
            what: "transport error while reading the body".into(),
            source: Some(Box::new(error)),
        }
    }
}

/// How long the provider asks to wait: `retry-after-ms` (OpenAI), else `Retry-After` in
/// seconds or as an HTTP date; capped at [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
    };
    let wait = if let Some(ms) = header("retry-after-ms").and_then(seconds) {
        Duration::from_secs_f64((ms / 1_000.0).min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let value = header("retry-after")?;
        match seconds(value) {
            Some(s) => Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())),
            None => httpdate::parse_http_date(value)
                .ok()?
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO),
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `error.message` (or a string `error`) of an OpenAI-style error body.
pub(crate) fn provider_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    match error {
        Value::String(message) => Some(message.clone()),
        Value::Object(map) => map.get("message")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use reqwest::header::{HeaderMap, HeaderValue};

    use super::{MAX_RETRY_AFTER, backoff, retry_after};

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.insert(*name, value);
            }
        }
        map
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after(&headers(&[])), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2".into())])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.5".into())])),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after-ms", "250".into()),
                ("retry-after", "9".into())
            ])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "86400".into())])),
            Some(MAX_RETRY_AFTER)
        );
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = retry_after(&headers(&[("retry-after", date)])).unwrap_or_default();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", past)])),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "soon".into())])),
            None
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 0..4u32 {
            let full = (initial * 2u32.pow(attempt)).min(max);
            for _ in 0..20 {
                let wait = backoff(initial, max, attempt);
                assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
            }
        }
        assert!(backoff(initial, max, 30) <= max);
    }
}
