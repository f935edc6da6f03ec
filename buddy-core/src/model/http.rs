//! What every HTTP model client shares: the process-wide `reqwest::Client`, and the one
//! retry loop (exponential backoff with jitter, `Retry-After`, bounded attempts).

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::ModelError;

/// The longest `Retry-After` honoured; a provider asking for more gets this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

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

/// The client shared by every model without its own.
pub(crate) fn shared_client() -> Result<&'static reqwest::Client, ModelError> {
    static SHARED: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|error| error.without_url().to_string())
        })
        .as_ref()
        .map_err(|message| ModelError::Config(format!("cannot build HTTP client: {message}")))
}

/// Sends the request `build` makes, retrying retryable failures (408, 429, 5xx, connection
/// failures, timeouts) as `policy` says; the one place retries happen.
pub(crate) async fn send_with_retry(
    policy: RetryPolicy,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, ModelError> {
    let mut attempt: u32 = 0;
    loop {
        let error = match build().send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => status_error(response).await,
            Err(error) => transport_error(error),
        };
        if attempt >= policy.max_retries || !error.is_retryable() {
            return Err(error);
        }
        let delay = match error.retry_after() {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => backoff(policy.initial, policy.max, attempt),
        };
        attempt += 1;
        tracing::warn!(
            attempt,
            max_retries = policy.max_retries,
            delay_ms = delay.as_millis() as u64,
            error = %error,
            "retrying model request"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff with jitter: a random wait between half and all of
/// `initial * 2^attempt`, capped at `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let full = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(max);
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000) as u32;
    full / 2 + (full / 2) * random / 1_000
}

pub(crate) fn transport_error(error: reqwest::Error) -> ModelError {
    let error = error.without_url();
    if error.is_timeout() {
        ModelError::Timeout(Box::new(error))
    } else {
        ModelError::Connect(Box::new(error))
    }
}

pub(crate) async fn status_error(response: reqwest::Response) -> ModelError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())));
    let body = response.text().await.unwrap_or_default();
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
        message,
        retry_after,
    }
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
