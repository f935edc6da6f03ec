use std::time::Duration;

use crate::error::BoxError;

/// What can go wrong when calling a model.
///
/// Callers branch on the predicates ([`is_rate_limited`](ModelError::is_rate_limited),
/// [`is_retryable`](ModelError::is_retryable), ...). No variant ever carries the API key or
/// the whole request URL: errors about a request name its endpoint as `host[:port]/path`
/// ([`endpoint`](ModelError::endpoint)), without user-info or query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The provider answered with an error status; `message` is the provider's own message.
    ///
    /// Sent by an HTTP client, it names the endpoint, and a 404 from a URL without `/v1` in
    /// its path asks whether the base URL needs it:
    /// `model request to localhost:11434/chat/completions failed with status 404: 404 page
    /// not found (does the base URL need a /v1 suffix?)`.
    #[error("{}", status_text(*.status, .message, .endpoint.as_deref()))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The provider's error message (or the response body when it has none).
        message: String,
        /// How long the provider asked to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
        /// Where the request went, as `host[:port]/path` (never user-info or a query), when
        /// an HTTP client sent it.
        endpoint: Option<String>,
    },
    /// The provider could not be reached or the connection failed.
    #[error("{}: {reason}", request_failed(.endpoint.as_deref(), "could not reach the model provider"))]
    Connect {
        /// Where the request went, as `host[:port]/path`, when an HTTP client sent it.
        endpoint: Option<String>,
        /// Why, in a few words: `connection refused`, `DNS lookup failed`, `TLS error`, ...
        reason: &'static str,
        /// The transport's error (without the URL).
        #[source]
        source: BoxError,
    },
    /// The request took longer than the configured timeout.
    #[error("{}", timeout_text(.endpoint.as_deref()))]
    Timeout {
        /// Where the request went, as `host[:port]/path`, when an HTTP client sent it.
        endpoint: Option<String>,
        /// Which limit passed (first byte, idle, the whole call), or the transport's error.
        #[source]
        source: BoxError,
    },
    /// The provider's answer is not the JSON the wire format promises.
    #[error("malformed response from the model provider ({what})")]
    MalformedResponse {
        /// Which part of the answer is wrong.
        what: String,
        /// What the decoder said, if it said anything.
        #[source]
        source: Option<BoxError>,
    },
    /// A streamed answer ended (or failed) before the provider finished it.
    #[error("model response stream ended before the answer was complete ({what})")]
    StreamInterrupted {
        /// What was missing.
        what: String,
        /// The transport error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The provider gave a finish reason buddy does not know.
    #[error("unknown finish reason `{0}` from the model provider")]
    UnknownFinishReason(String),
    /// The provider answered with a redirect (3xx). Model clients never follow redirects,
    /// so the API key, extra headers and the prompt stay with the configured origin.
    #[error(
        "{} with status {status} to host `{target}`; redirects are not followed",
        redirected(.endpoint.as_deref())
    )]
    Redirect {
        /// The HTTP status code (301, 302, 307, ...), or the final status when a
        /// caller-supplied client followed the redirect itself.
        status: u16,
        /// The host the redirect pointed at (never the full URL), or `unknown` when the
        /// `Location` header is missing or unreadable.
        target: String,
        /// Where the request went, as `host[:port]/path`, when an HTTP client sent it.
        endpoint: Option<String>,
    },
    /// The answer broke one of the client's [`Limits`](super::Limits): a body larger than
    /// the maximum response size, an SSE line or event too long, too many tool calls or a
    /// tool-call index out of range.
    #[error("model response exceeds the limit on {what} ({limit})")]
    LimitExceeded {
        /// What was too large (`response bytes`, `tool calls`, ...).
        what: String,
        /// The limit that was exceeded.
        limit: u64,
    },
    /// The provider refused to answer (content filter, refusal).
    #[error("the model refused to answer: {0}")]
    Refused(String),
    /// A request could not be built from the given configuration.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The client's base URL cannot be used: it has no scheme (`localhost:11434`), is not a
    /// URL, or is not `http` or `https`. Nothing was sent.
    #[error("invalid model base URL `{url}`: {reason}")]
    InvalidBaseUrl {
        /// The base URL as configured, user-info and query values replaced by `[redacted]`.
        url: String,
        /// What is wrong with it, and the fix where there is one.
        reason: String,
    },
    /// Any other failure (scripted models, custom implementations).
    #[error(transparent)]
    Other(BoxError),
}

impl ModelError {
    /// An error carrying only a message (for custom models and tests).
    pub fn msg(message: impl std::fmt::Display) -> Self {
        ModelError::Other(message.to_string().into())
    }

    /// The HTTP status the provider answered with, if this is a status error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ModelError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the provider said "too many requests" (HTTP 429).
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ModelError::Timeout { .. })
    }

    /// Whether the provider could not be reached.
    pub fn is_connect(&self) -> bool {
        matches!(self, ModelError::Connect { .. })
    }

    /// Whether the client's base URL cannot be used (no request was sent).
    pub fn is_invalid_base_url(&self) -> bool {
        matches!(self, ModelError::InvalidBaseUrl { .. })
    }

    /// Where the request went (`host[:port]/path`), if an HTTP client sent it and the error
    /// is about the request: a status, a connection failure, a timeout or a redirect.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            ModelError::Status { endpoint, .. }
            | ModelError::Connect { endpoint, .. }
            | ModelError::Timeout { endpoint, .. }
            | ModelError::Redirect { endpoint, .. } => endpoint.as_deref(),
            _ => None,
        }
    }

    /// Whether the provider rejected the request itself (HTTP 4xx other than 408 and 429).
    pub fn is_client_error(&self) -> bool {
        self.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
    }

    /// Whether sending the same request again may succeed: 408, 429, 5xx, connection
    /// failures and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Status { status, .. } => {
                *status == 408 || *status == 429 || (500..600).contains(status)
            }
            ModelError::Connect { .. } | ModelError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether the answer broke the wire format (malformed JSON, cut stream, unknown finish
    /// reason, a limit exceeded).
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            ModelError::MalformedResponse { .. }
                | ModelError::StreamInterrupted { .. }
                | ModelError::UnknownFinishReason(_)
                | ModelError::LimitExceeded { .. }
        )
    }

    /// Whether the provider answered with a redirect, which is never followed.
    pub fn is_redirect(&self) -> bool {
        matches!(self, ModelError::Redirect { .. })
    }

    /// Whether the answer broke one of the client's [`Limits`](super::Limits).
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(self, ModelError::LimitExceeded { .. })
    }

    /// How long the provider asked to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn limit(what: impl Into<String>, limit: impl TryInto<u64>) -> Self {
        ModelError::LimitExceeded {
            what: what.into(),
            limit: limit.try_into().unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn timeout(what: &str, endpoint: Option<String>) -> Self {
        ModelError::Timeout {
            endpoint,
            source: what.to_owned().into(),
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, source: Option<BoxError>) -> Self {
        ModelError::MalformedResponse {
            what: what.into(),
            source,
        }
    }
}

/// `model request to {endpoint} failed`, or `without` for an error no HTTP client sent.
fn request_failed(endpoint: Option<&str>, without: &str) -> String {
    match endpoint {
        Some(endpoint) => format!("model request to {endpoint} failed"),
        None => without.to_owned(),
    }
}

fn status_text(status: u16, message: &str, endpoint: Option<&str>) -> String {
    let Some(endpoint) = endpoint else {
        return format!("model provider returned status {status}: {message}");
    };
    let hint = match endpoint.find('/').map(|at| &endpoint[at..]) {
        Some(path) if status == 404 && !path.contains("/v1") => {
            " (does the base URL need a /v1 suffix?)"
        }
        Some(path) if status == 404 && path.contains("/v1/v1/") => {
            " (is /v1 in the base URL twice?)"
        }
        _ => "",
    };
    format!("model request to {endpoint} failed with status {status}: {message}{hint}")
}

fn timeout_text(endpoint: Option<&str>) -> String {
    match endpoint {
        Some(endpoint) => format!("model request to {endpoint} timed out"),
        None => "model request timed out".to_owned(),
    }
}

fn redirected(endpoint: Option<&str>) -> String {
    match endpoint {
        Some(endpoint) => format!("model request to {endpoint} was redirected"),
        None => "model provider redirected".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::ModelError;

    fn status(status: u16, endpoint: Option<&str>) -> String {
        ModelError::Status {
            status,
            message: "not found".into(),
            retry_after: None,
            endpoint: endpoint.map(str::to_owned),
        }
        .to_string()
    }

    #[test]
    fn a_404_hints_at_a_missing_or_doubled_v1() {
        assert_eq!(
            status(404, Some("127.0.0.1:8080/chat/completions")),
            "model request to 127.0.0.1:8080/chat/completions failed with status 404: \
             not found (does the base URL need a /v1 suffix?)"
        );
        assert!(
            status(404, Some("api.example/v1/v1/messages"))
                .ends_with("(is /v1 in the base URL twice?)")
        );
        for fine in [
            status(404, Some("127.0.0.1:8080/v1/chat/completions")),
            status(404, Some("api.example/api/v1beta/openai/chat/completions")),
            status(500, Some("127.0.0.1:8080/chat/completions")),
            // A host named v1 is not a path.
            status(404, Some("v1.example/v1/messages")),
        ] {
            assert!(!fine.contains('('), "{fine}");
        }
        assert_eq!(
            status(404, None),
            "model provider returned status 404: not found"
        );
    }
}
