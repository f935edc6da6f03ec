//! Server-sent events: `id: <seq>`, `event: <kind>`, `data: <one JSON RunEvent>`, a blank
//! line; keep-alive comments every 15 s.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::hub::{EventStream, Live};

/// How often a stream sends a comment (so proxies keep an idle stream open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event stream as an SSE response. With `cancel_with` set, the run is cancelled when
/// the client goes away before the run ends.
///
/// The body is written here rather than with axum's `Sse`: every subscriber of a run sends
/// the same frames, encoded once per event ([`crate::hub::Frame::sse`]), where `Sse` would
/// build each frame again for each subscriber.
pub(crate) fn respond(events: EventStream, cancel_with: Option<Arc<Live>>) -> Response {
    let guard = cancel_with.map(CancelOnDrop);
    let start = tokio::time::Instant::now() + KEEP_ALIVE;
    let keep_alive = tokio::time::interval_at(start, KEEP_ALIVE);
    let body = futures::stream::unfold(
        (events, keep_alive, guard),
        |(mut events, mut keep_alive, guard)| async move {
            let chunk = tokio::select! {
                event = events.next() => event?.sse(),
                _ = keep_alive.tick() => Bytes::from_static(b":\n\n"),
            };
            Some((Ok::<_, Infallible>(chunk), (events, keep_alive, guard)))
        },
    );
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Cancels the run when the response is dropped before the run has ended.
pub(crate) struct CancelOnDrop(pub(crate) Arc<Live>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel_if_running();
    }
}

/// Where a reconnecting client left off: `Last-Event-ID`, else `?after=`, else 0.
pub(crate) fn resume_point(
    headers: &HeaderMap,
    after: Option<u64>,
) -> Result<u64, crate::ApiError> {
    match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| crate::ApiError::bad_request("`Last-Event-ID` must be an event number")),
        None => Ok(after.unwrap_or(0)),
    }
}
