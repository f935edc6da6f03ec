use std::time::Duration;

use crate::error::BoxError;

/// What can go wrong when calling a model.
///
/// Callers branch on the predicates ([`is_rate_limited`](ModelError::is_rate_limited),
/// [`is_retryable`](ModelError::is_retryable), ...). No variant ever carries the API key or
/// the request URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The provider answered with an error status; `message` is the provider's own message.
    #[error("model provider returned status {status}: {message}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The provider's error message (or the response body when it has none).
        message: String,
        /// How long the provider asked to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The provider could not be reached or the connection failed.
    #[error("could not reach the model provider")]
    Connect(#[source] BoxError),
    /// The request took longer than the configured timeout.
    #[error("model request timed out")]
    Timeout(#[source] BoxError),
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
        "model provider redirected with status {status} to host `{target}`; redirects are not followed"
    )]
    Redirect {
        /// The HTTP status code (301, 302, 307, ...), or the final status when a
        /// caller-supplied client followed the redirect itself.
        status: u16,
        /// The host the redirect pointed at (never the full URL), or `unknown` when the
        /// `Location` header is missing or unreadable.
        target: String,
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
        matches!(self, ModelError::Timeout(_))
    }

    /// Whether the provider could not be reached.
    pub fn is_connect(&self) -> bool {
        matches!(self, ModelError::Connect(_))
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
            ModelError::Connect(_) | ModelError::Timeout(_) => true,
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

    pub(crate) fn timeout(what: &str) -> Self {
        ModelError::Timeout(what.to_owned().into())
    }

    pub(crate) fn malformed(what: impl Into<String>, source: Option<BoxError>) -> Self {
        ModelError::MalformedResponse {
            what: what.into(),
            source,
        }
    }
}
