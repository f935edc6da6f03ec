//! Where an HTTP model client sends its requests: the base URL parsed and checked once, when
//! it is set, joined with the API's path; the `host:port/path` label errors name (never
//! user-info, never a query); and the URL's secrets, kept out of every error and `Debug`.

use std::fmt;
use std::sync::Arc;

use super::ModelError;
use super::http::REDACTED;

/// Query values shorter than this are not treated as secrets to scrub from what the server
/// sends back (`?debug=1` would otherwise turn every `1` of a message into `[redacted]`).
/// They never appear in an error or `Debug` output anyway: those drop or redact the query.
const MIN_QUERY_SECRET_LEN: usize = 8;

/// The request URL of a client, parsed once and reused for every request.
#[derive(Clone)]
pub(crate) struct Endpoint {
    url: reqwest::Url,
    /// `host[:port]/path`, what errors name.
    label: Arc<str>,
    /// User-info and query values of the base URL: secrets to scrub from errors.
    secrets: Vec<String>,
}

/// Shows only the label: the URL may hold user-info or secrets in its query.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Endpoint").field(&self.label).finish()
    }
}

impl Endpoint {
    /// The base URL `base` with `path` (`/chat/completions`) appended to its path; a query
    /// is kept (`?api-version=...`), a fragment dropped.
    pub(crate) fn new(base: &str, path: &str) -> Result<Endpoint, InvalidBaseUrl> {
        let invalid = |reason: String| InvalidBaseUrl {
            url: redact_url(base),
            reason,
        };
        let trimmed = base.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if !trimmed.contains("://") {
            return Err(invalid(missing_scheme(&redact_url(trimmed))));
        }
        let mut url = reqwest::Url::parse(trimmed)
            .map_err(|error| invalid(format!("it is not a URL ({error})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "the scheme `{}` is not supported; use `http://` or `https://`",
                url.scheme()
            )));
        }
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_fragment(None);
        let host = url.host_str().unwrap_or_default();
        let label = match url.port() {
            Some(port) => format!("{host}:{port}{}", url.path()),
            None => format!("{host}{}", url.path()),
        };
        Ok(Endpoint {
            secrets: secrets(&url),
            label: label.into(),
            url,
        })
    }

    /// The URL requests go to.
    pub(crate) fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// `host[:port]/path` of the request URL: what errors name.
    pub(crate) fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// The base URL's user-info and query values, to scrub from errors.
    pub(crate) fn secrets(&self) -> &[String] {
        &self.secrets
    }
}

/// A base URL that cannot be used, kept as set and reported by every request.
#[derive(Clone, Debug)]
pub(crate) struct InvalidBaseUrl {
    /// The base URL, user-info and query values redacted.
    url: String,
    reason: String,
}

impl InvalidBaseUrl {
    /// The error a request reports.
    pub(crate) fn to_error(&self) -> ModelError {
        ModelError::InvalidBaseUrl {
            url: self.url.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// What to say about a base URL without `://`, with the fix.
fn missing_scheme(url: &str) -> String {
    // `http:host` or `https:/host`: the scheme is there, the slashes are not.
    for scheme in ["http", "https"] {
        let rest = url
            .get(..scheme.len() + 1)
            .filter(|head| head.eq_ignore_ascii_case(&format!("{scheme}:")))
            .map(|_| &url[scheme.len() + 1..]);
        if let Some(rest) = rest {
            return format!(
                "`//` is missing after the scheme; write `{scheme}://{}`",
                rest.trim_start_matches('/')
            );
        }
    }
    format!("the scheme is missing; write `http://{url}` (or `https://{url}` for TLS)")
}

/// The password, user name and (long enough) query values of `url`, raw and decoded.
fn secrets(url: &reqwest::Url) -> Vec<String> {
    let mut secrets: Vec<String> = url.password().map(str::to_owned).into_iter().collect();
    if !url.username().is_empty() {
        secrets.push(url.username().to_owned());
    }
    if let Some(query) = url.query() {
        for pair in query.split('&') {
            let raw = pair.split_once('=').map_or(pair, |(_, value)| value);
            secrets.push(raw.to_owned());
        }
        secrets.extend(url.query_pairs().map(|(_, value)| value.into_owned()));
    }
    secrets.retain(|secret| secret.len() >= MIN_QUERY_SECRET_LEN || url_userinfo(url, secret));
    secrets.sort();
    secrets.dedup();
    secrets
}

/// Whether `secret` is the user name or password of `url` (kept whatever its length).
fn url_userinfo(url: &reqwest::Url, secret: &str) -> bool {
    (!secret.is_empty() && url.username() == secret) || url.password() == Some(secret)
}

/// `url` for `Debug` and errors: user-info (`user:password@`) and every query value replaced
/// by `[redacted]`, the fragment dropped. Works on text that does not parse, too.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                None => REDACTED.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Endpoint, redact_url};
    use crate::model::ModelError;

    fn error(base: &str) -> String {
        Endpoint::new(base, "/chat/completions")
            .unwrap_err()
            .to_error()
            .to_string()
    }

    #[test]
    fn joins_the_path_once_and_labels_host_port_path() {
        let endpoint = Endpoint::new("http://127.0.0.1:18080/v1/", "/chat/completions").unwrap();
        assert_eq!(
            endpoint.url().as_str(),
            "http://127.0.0.1:18080/v1/chat/completions"
        );
        assert_eq!(&**endpoint.label(), "127.0.0.1:18080/v1/chat/completions");
        let endpoint = Endpoint::new("https://api.anthropic.com", "/v1/messages").unwrap();
        assert_eq!(&**endpoint.label(), "api.anthropic.com/v1/messages");
        let endpoint = Endpoint::new("http://[::1]:8080", "/v1/messages").unwrap();
        assert_eq!(&**endpoint.label(), "[::1]:8080/v1/messages");
        // A query stays on the request URL and out of the label.
        let endpoint = Endpoint::new(
            "https://user:pa55word@x.example/openai/d1?api-version=2024-10-21#frag",
            "/chat/completions",
        )
        .unwrap();
        assert_eq!(
            endpoint.url().as_str(),
            "https://user:pa55word@x.example/openai/d1/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(&**endpoint.label(), "x.example/openai/d1/chat/completions");
        assert_eq!(endpoint.secrets(), ["2024-10-21", "pa55word", "user"]);
        assert!(!format!("{endpoint:?}").contains("pa55word"));
    }

    #[test]
    fn a_base_url_without_a_scheme_says_so_and_shows_the_fix() {
        assert_eq!(
            error("127.0.0.1:8080/v1"),
            "invalid model base URL `127.0.0.1:8080/v1`: the scheme is missing; write \
             `http://127.0.0.1:8080/v1` (or `https://127.0.0.1:8080/v1` for TLS)"
        );
        // `localhost:11434` parses as a URL of scheme `localhost`: still a missing scheme.
        assert!(
            error("localhost:11434")
                .contains("the scheme is missing; write `http://localhost:11434`"),
            "{}",
            error("localhost:11434")
        );
        assert!(error("http:localhost:8080/v1").contains("write `http://localhost:8080/v1`"));
        assert!(error("HTTPS:/api.example/v1").contains("write `https://api.example/v1`"));
    }

    #[test]
    fn other_bad_base_urls_are_typed_errors() {
        for (base, says) in [
            ("", "it is empty"),
            ("http://", "it is not a URL (empty host)"),
            (
                "http://host:99999/v1",
                "it is not a URL (invalid port number)",
            ),
            ("ftp://host/v1", "the scheme `ftp` is not supported"),
        ] {
            let error = Endpoint::new(base, "/chat/completions")
                .unwrap_err()
                .to_error();
            assert!(
                matches!(error, ModelError::InvalidBaseUrl { .. }) && error.is_invalid_base_url(),
                "{error:?}"
            );
            assert!(error.to_string().contains(says), "{base}: {error}");
        }
    }

    #[test]
    fn invalid_base_urls_never_show_user_info_or_query_values() {
        for base in [
            "user:pa55word@localhost:8080/v1?key=sk-SECRET-1",
            "http://user:pa55word@host:99999/v1?key=sk-SECRET-1",
        ] {
            let error = Endpoint::new(base, "/chat/completions")
                .unwrap_err()
                .to_error();
            let text = format!("{error} {error:?}");
            for secret in ["pa55word", "user:", "sk-SECRET-1"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("[redacted]@"), "{text}");
        }
    }

    #[test]
    fn redact_url_forms() {
        assert_eq!(
            redact_url("https://user:pw@example.com/v1"),
            "https://[redacted]@example.com/v1"
        );
        assert_eq!(
            redact_url("https://example.com/v1?api-version=1&sk-bare#top"),
            "https://example.com/v1?api-version=[redacted]&[redacted]"
        );
        assert_eq!(redact_url("u:p@host:1/v1"), "[redacted]@host:1/v1");
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
    }
}
