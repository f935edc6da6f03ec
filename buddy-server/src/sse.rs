//! Server-sent events: `id: <seq>`, `event: <kind>`, `data: <one JSON RunEvent>`, a blank
//! line; keep-alive comments every 15 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::hub::{EventStream, Live};

/// How often an idle stream sends a comment (so proxies keep it open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event stream as an SSE response. With `cancel_with` set, the run is cancelled when
/// the client goes away before the run ends.
pub(crate) fn respond(events: EventStream, cancel_with: Option<std::sync::Arc<Live>>) -> Response {
    let guard = cancel_with.map(CancelOnDrop);
    let stream = events.map(move |event| {
        let _keep = &guard;
        let data = serde_json::to_string(&event.event).unwrap_or_else(|_| "{}".to_owned());
        Ok::<_, Infallible>(
            Event::default()
                .id(event.seq.to_string())
                .event(event.event.name())
                .data(data),
        )
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Tell proxies not to buffer the stream.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

/// Cancels the run when the response is dropped before the run has ended.
pub(crate) struct CancelOnDrop(pub(crate) std::sync::Arc<Live>);

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
