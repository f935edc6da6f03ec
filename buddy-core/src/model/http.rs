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
    let retry_after = retry_after(response.headers());
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
