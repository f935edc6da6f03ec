//! The one error type of the HTTP API and how it maps to status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use buddy_core::Error;
use buddy_core::durable::DurableError;
use serde_json::{Value, json};

/// An error answered as `{"detail": "<message>", ...}` with its status code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    extra: serde_json::Map<String, Value>,
}

impl ApiError {
    /// An error with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// The same error with one more field in its body.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(name.to_owned(), value.into());
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("detail".to_owned(), Value::String(self.detail));
        (self.status, axum::Json(Value::Object(body))).into_response()
    }
}

/// The message of `error` with its causes, one after the other: what `detail` says.
pub(crate) use buddy_core::error::chain as message;

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let detail = message(&error);
        let status = match &error {
            Error::Input { field, .. } => {
                return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
                    .with("field", field.clone());
            }
            Error::SessionNotFound { .. } => {
                return ApiError::not_found("Session");
            }
            Error::Durable(durable) => match durable {
                DurableError::RunNotFound { .. } => return ApiError::not_found("Run"),
                DurableError::InvalidWaitValue { errors, .. } => {
                    return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
                        .with("errors", json!(errors));
                }
                DurableError::UnknownWait { pending, .. } => {
                    return ApiError::new(StatusCode::NOT_FOUND, detail)
                        .with("pending", json!(pending));
                }
                DurableError::WaitConflict { .. }
                | DurableError::NotPaused { .. }
                | DurableError::WaitExpired { .. }
                | DurableError::NotResumable { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, detail)
    }
}

impl From<buddy_core::StorageError> for ApiError {
    fn from(error: buddy_core::StorageError) -> Self {
        ApiError::from(Error::Storage(error))
    }
}

/// What handlers return.
pub type ApiResult<T> = std::result::Result<T, ApiError>;
