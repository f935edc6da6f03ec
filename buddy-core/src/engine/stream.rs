//! [`RunStream`]: the stream of events of one run, the same type for workflows, agents and
//! teams.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::sink::EventSink;
use crate::error::{Error, Result};
use crate::run::{RunEvent, RunResponse};

/// The events of a run, as they happen: `run_started`, the run's (and its members') events,
/// then `run_completed` with the response — or an `Err` with the run's error as the last
/// item.
///
/// The run itself is a future the stream drives: nothing happens unless the stream is
/// polled, and the run advances only when every event it produced so far has been taken, so
/// a slow reader holds the run back instead of piling up events. Dropping the stream
/// before the end drops the run, which is then recorded `cancelled` with the text produced so
/// far (in a background task on the current tokio runtime).
///
/// [`into_response`](RunStream::into_response) collects the run's response in one call.
#[must_use = "a run stream does nothing unless polled"]
pub struct RunStream<'a> {
    run: Option<BoxFuture<'a, Result<RunResponse>>>,
    events: Option<UnboundedReceiver<RunEvent>>,
    failure: Option<Error>,
}

impl<'a> RunStream<'a> {
    /// A stream driving the run `start(sink)`: the run sends its events into `sink`.
    pub(crate) fn start<F, Fut>(start: F) -> Self
    where
        F: FnOnce(EventSink) -> Fut,
        Fut: Future<Output = Result<RunResponse>> + Send + 'a,
    {
        let (tx, rx) = unbounded_channel();
        RunStream {
            run: Some(start(EventSink::root(tx)).boxed()),
            events: Some(rx),
            failure: None,
        }
    }

    /// A stream that yields `error` and ends.
    pub fn failed(error: Error) -> Self {
        RunStream {
            run: None,
            events: None,
            failure: Some(error),
        }
    }

    /// Drives the run to its end and returns its response (the top-level `run_completed`),
    /// or its error.
    pub async fn into_response(mut self) -> Result<RunResponse> {
        let mut response = None;
        while let Some(item) = self.next().await {
            let event = item?;
            if event.is_top_level()
                && let Some(completed) = event.response()
            {
                response = Some(completed.clone());
            }
        }
        response.ok_or_else(|| Error::msg("run stream ended without a response"))
    }
}

impl Stream for RunStream<'_> {
    type Item = Result<RunEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.run.is_some() {
                if let Some(events) = &mut this.events
                    && let Poll::Ready(Some(event)) = events.poll_recv(cx)
                {
                    return Poll::Ready(Some(Ok(event)));
                }
                let Some(run) = this.run.as_mut() else {
                    continue;
                };
                match run.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => {
                        this.run = None;
                        if let Err(error) = result {
                            this.failure = Some(error);
                        }
                    }
                }
            }
            // The run is over: what it sent, then its error if it failed.
            if let Some(events) = &mut this.events {
                match events.try_recv() {
                    Ok(event) => return Poll::Ready(Some(Ok(event))),
                    Err(_) => this.events = None,
                }
            }
            return Poll::Ready(this.failure.take().map(Err));
        }
    }
}

impl std::fmt::Debug for RunStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStream")
            .field("running", &self.run.is_some())
            .finish_non_exhaustive()
    }
}
