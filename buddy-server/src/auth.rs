//! Bearer API keys: several keys, each optionally bound to a user, compared in constant time.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// One accepted key, and the user it is bound to (if any).
#[derive(Clone)]
pub(crate) struct ApiKey {
    key: Vec<u8>,
    user_id: Option<String>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"[redacted]")
            .field("user_id", &self.user_id)
            .finish()
    }
}

impl ApiKey {
    pub(crate) fn new(key: impl Into<String>, user_id: Option<String>) -> Self {
        ApiKey {
            key: key.into().into_bytes(),
            user_id,
        }
    }

    /// Parses `BUDDY_API_KEYS`-style text: entries separated by commas or whitespace, each
    /// `KEY` or `USER_ID:KEY` (a key bound to that user). Empty entries are skipped.
    pub(crate) fn parse_list(text: &str) -> Vec<ApiKey> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.split_once(':') {
                Some((user, key)) if !user.is_empty() && !key.is_empty() => {
                    ApiKey::new(key, Some(user.to_owned()))
                }
                _ => ApiKey::new(entry, None),
            })
            .collect()
    }
}

/// Who is calling: the user a key is bound to, if any. Handlers scope what they show and
/// change to it.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The user the caller's key is bound to; `None` for an unbound key or no auth.
    pub user_id: Option<String>,
}

impl Caller {
    /// Whether the caller may see what belongs to `owner`.
    pub(crate) fn may_see(&self, owner: Option<&str>) -> bool {
        match &self.user_id {
            None => true,
            Some(user) => owner == Some(user.as_str()),
        }
    }
}

/// Finds the key among `keys`: every key is compared (in constant time for keys of the same
/// length), so the time taken does not tell which key came close.
fn find<'a>(keys: &'a [ApiKey], presented: &[u8]) -> Option<&'a ApiKey> {
    let mut found = None;
    for key in keys {
        if bool::from(key.key.as_slice().ct_eq(presented)) {
            found = Some(key);
        }
    }
    found
}

/// The auth layer: with keys configured, every request needs `Authorization: Bearer <key>`
/// (401 with `WWW-Authenticate` otherwise); the caller's bound user is put in the request.
pub(crate) async fn require_key(
    State(keys): State<Arc<[ApiKey]>>,
    mut request: Request,
    next: Next,
) -> Response {
    if keys.is_empty() {
        request.extensions_mut().insert(Caller::default());
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(key) = presented.and_then(|presented| find(&keys, presented.as_bytes())) else {
        let detail = if presented.is_some() {
            "Invalid API key"
        } else {
            "Missing bearer token"
        };
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"buddy\""),
        );
        return response;
    };
    request.extensions_mut().insert(Caller {
        user_id: key.user_id.clone(),
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_bound_and_unbound_keys() {
        let keys = ApiKey::parse_list("k1, alice:k2\nk3,,");
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[1].user_id.as_deref(), Some("alice"));
        assert!(find(&keys, b"k2").is_some());
        assert!(find(&keys, b"k4").is_none());
        assert!(!format!("{keys:?}").contains("k2"));
    }
}
