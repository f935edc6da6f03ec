//! The run wrapper: what happens around the user's `run` body on every run.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::Value;
use tracing::Instrument;

use super::{RunWorkflow, Workflow, WorkflowState};
use crate::error::{Error, Result};
use crate::run::{RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus, now_millis};
use crate::session::{SessionWrite, StatePatch};
use crate::storage::Storage;

/// What the user's `run` body produced: a response, or a stream of events.
#[allow(clippy::large_enum_variant)] // one value per run, moved once: boxing buys nothing
pub enum Body<'a> {
    /// `run` returned a response (or an error).
    Response(Result<RunResponse>),
    /// `run` returned a stream of events.
    Stream(BoxStream<'a, Result<RunEvent>>),
}

/// What a non-streaming `run` may return: [`RunResponse`] or `Result<RunResponse, E>` with
/// `E: Into<buddy::Error>` (which includes `Box<dyn Error + Send + Sync>`).
#[diagnostic::on_unimplemented(
    message = "`run` returns `{Self}`, which is not a run result",
    note = "a workflow's `run` returns `RunResponse`, `Result<RunResponse, E>` with `E: Into<buddy::Error>`, or `impl Stream<Item = Result<RunEvent>>`"
)]
pub trait IntoRunResult {
    /// Converts into the wrapper's result.
    fn into_run_result(self) -> Result<RunResponse>;
}

impl IntoRunResult for RunResponse {
    fn into_run_result(self) -> Result<RunResponse> {
        Ok(self)
    }
}

impl<E: Into<Error>> IntoRunResult for std::result::Result<RunResponse, E> {
    fn into_run_result(self) -> Result<RunResponse> {
        self.map_err(Into::into)
    }
}

/// The ids of a run in progress.
struct ActiveRun {
    run_id: String,
    session_id: String,
    workflow_id: String,
    input: Value,
    started_at: i64,
}

impl ActiveRun {
    fn stamp_response(&self, response: &mut RunResponse) {
        response.run_id = Some(self.run_id.clone());
        response.session_id = Some(self.session_id.clone());
        response.workflow_id = Some(self.workflow_id.clone());
    }

    fn stamp_event(&self, event: &mut RunEvent) {
        event.run_id = Some(self.run_id.clone());
        event.session_id = Some(self.session_id.clone());
        event.workflow_id = Some(self.workflow_id.clone());
    }

    fn event(&self, kind: RunEventKind) -> RunEvent {
        let mut event = RunEvent::new(kind);
        self.stamp_event(&mut event);
        event
    }
}

/// The span of one run; debug output is switched on first, so the span is recorded by it.
fn run_span<W: Workflow>(workflow: &W, run_id: &str) -> tracing::Span {
    if workflow.__buddy_core().debug_mode() {
        crate::debug::enable();
    }
    let workflow = W::TYPE_NAME;
    tracing::info_span!(
        "workflow_run",
        workflow,
        run_id,
        workflow_id = tracing::field::Empty,
        session_id = tracing::field::Empty,
    )
}

fn encode_input<T: serde::Serialize>(workflow: &'static str, input: &T) -> Result<Value> {
    serde_json::to_value(input).map_err(|source| Error::Input { workflow, source })
}

/// Steps 1 to 4: ids, session read (state merge, memory), run id, members attached.
async fn begin<W: Workflow>(
    workflow: &mut W,
    run_id: String,
    input: Value,
    span: &tracing::Span,
) -> Result<ActiveRun> {
    let core = workflow.__buddy_core_mut();
    let session_id = core.ensure_session_id();
    // The session is read before a workflow id is made up, so that a continuing session
    // adopts its stored workflow id.
    core.read_session().await?;
    let workflow_id = core.ensure_workflow_id();
    span.record("workflow_id", workflow_id.as_str());
    span.record("session_id", session_id.as_str());
    let user_id = core.user_id().map(str::to_owned);
    let debug_mode = core.debug_mode();
    workflow.__buddy_attach_members(&super::MemberContext {
        session_id: &session_id,
        user_id: user_id.as_deref(),
        workflow_id: Some(&workflow_id),
        debug_mode,
    });
    tracing::debug!("workflow run started");
    Ok(ActiveRun {
        run_id,
        session_id,
        workflow_id,
        input,
        started_at: now_millis(),
    })
}

/// Step 6: record the run in memory and storage; decide what reaches the caller.
async fn finish<W: Workflow>(
    workflow: &mut W,
    run: ActiveRun,
    outcome: Result<RunResponse>,
    partial_content: Option<String>,
) -> Result<RunResponse> {
    let (response, error) = match outcome {
        Ok(mut response) => {
            run.stamp_response(&mut response);
            (response, None)
        }
        Err(error) => {
            let mut response = RunResponse::new();
            response.content = partial_content.map(Value::String);
            run.stamp_response(&mut response);
            (response, Some(error))
        }
    };
    let record = RunRecord {
        run_id: run.run_id,
        session_id: run.session_id,
        status: if error.is_some() {
            RunStatus::Error
        } else {
            RunStatus::Completed
        },
        input: run.input,
        response: response.clone(),
        error: error.as_ref().map(error_message),
        created_at: run.started_at,
    };
    let core = workflow.__buddy_core_mut();
    let (write, encode_error) = session_write(core, record.clone());
    core.record(record);
    let persisted = core.commit(write).await;
    match (error, persisted, encode_error) {
        (None, Ok(()), None) => {
            tracing::debug!("workflow run completed");
            Ok(response)
        }
        (None, Ok(()), Some(encode_error)) => Err(encode_error),
        (None, Err(source), _) => {
            tracing::error!(error = %source, "workflow run could not be persisted");
            Err(Error::Persist {
                response: Box::new(response),
                source,
            })
        }
        (Some(error), persisted, _) => {
            if let Err(storage) = persisted {
                tracing::error!(error = %storage, "failed workflow run could not be persisted");
            }
            tracing::debug!(%error, "workflow run failed");
            Err(error)
        }
    }
}

/// The session write for a run; if the state does not encode, the run is still written
/// (without state changes) and the encoding error is returned beside it.
fn session_write<S: WorkflowState>(
    core: &super::WorkflowCore<S>,
    record: RunRecord,
) -> (SessionWrite, Option<Error>) {
    match core.session_write(Some(record.clone())) {
        Ok(write) => (write, None),
        Err(error) => {
            let mut write = core.session_write_without_state(Some(record));
            write.state_patch = StatePatch::default();
            (write, Some(error))
        }
    }
}

fn error_message(error: &Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn panicked(payload: Box<dyn Any + Send>) -> Error {
    let message = if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    };
    Error::Panicked { message }
}

/// Runs `workflow` to its response: the wrapper around a non-streaming `run`, and the
/// collector of a streaming one.
pub async fn run_to_response<W: RunWorkflow>(
    workflow: &mut W,
    input: W::Input,
) -> Result<RunResponse> {
    if W::STREAMING {
        return collect(run_to_stream(workflow, input)).await;
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    let span = run_span(workflow, &run_id);
    let run = async {
        let input_value = encode_input(W::TYPE_NAME, &input)?;
        let run = begin(workflow, run_id, input_value, &tracing::Span::current()).await?;
        let outcome = match AssertUnwindSafe(workflow.__buddy_call(input))
            .catch_unwind()
            .await
        {
            Ok(Body::Response(result)) => result,
            Ok(Body::Stream(stream)) => drain(stream).await.map(RunResponse::from_text),
            Err(payload) => Err(panicked(payload)),
        };
        finish(workflow, run, outcome, None).await
    };
    run.instrument(span).await
}

async fn drain(stream: BoxStream<'_, Result<RunEvent>>) -> Result<String> {
    let mut content = String::new();
    let mut stream = AssertUnwindSafe(stream).catch_unwind();
    while let Some(item) = stream.next().await {
        let event = item.map_err(panicked)??;
        if let Some(delta) = event.content_delta() {
            content.push_str(delta);
        }
    }
    Ok(content)
}

async fn collect(mut stream: RunStream<'_>) -> Result<RunResponse> {
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event?);
    }
    match last.map(|event| event.kind) {
        Some(RunEventKind::RunCompleted { response }) => Ok(*response),
        _ => Err(Error::msg("workflow stream ended without a response")),
    }
}

/// Runs `workflow` as a stream of events: the wrapper around a streaming `run`.
///
/// The stream starts with `run_started`, passes on every event of the body as it comes
/// (stamped with the workflow's run, session and workflow ids; text deltas are accumulated
/// into the response), and ends, after the run is persisted, with one `run_completed`
/// carrying the workflow's response, or with the error.
pub fn run_to_stream<W: RunWorkflow>(workflow: &mut W, input: W::Input) -> RunStream<'_> {
    let run_id = uuid::Uuid::new_v4().to_string();
    let span = run_span(workflow, &run_id);
    let cancel = Arc::new(Mutex::new(None::<Cancellation>));
    let guard = Arc::clone(&cancel);
    let record_span = span.clone();
    let inner = async_stream::stream! {
        let input_value = match encode_input(W::TYPE_NAME, &input) {
            Ok(value) => value,
            Err(error) => {
                yield Err(error);
                return;
            }
        };
        let run = match begin(workflow, run_id, input_value, &record_span).await {
            Ok(run) => run,
            Err(error) => {
                yield Err(error);
                return;
            }
        };
        // Armed before the first yield: a caller that drops the stream right after
        // `run_started` still leaves a `cancelled` record.
        Cancellation::arm(&guard, workflow.__buddy_core(), &run);
        yield Ok(run.event(RunEventKind::RunStarted));

        let mut content = String::new();
        let outcome = match AssertUnwindSafe(workflow.__buddy_call(input)).catch_unwind().await {
            Err(payload) => Err(panicked(payload)),
            Ok(Body::Response(result)) => result,
            Ok(Body::Stream(body)) => {
                let mut body = AssertUnwindSafe(body).catch_unwind();
                let mut failure = None;
                while let Some(item) = body.next().await {
                    match item {
                        Ok(Ok(mut event)) => {
                            run.stamp_event(&mut event);
                            if let Some(delta) = event.content_delta() {
                                content.push_str(delta);
                                Cancellation::append(&guard, delta);
                            }
                            yield Ok(event);
                        }
                        Ok(Err(error)) => {
                            failure = Some(error);
                            break;
                        }
                        Err(payload) => {
                            failure = Some(panicked(payload));
                            break;
                        }
                    }
                }
                drop(body);
                match failure {
                    Some(error) => Err(error),
                    None => Ok(RunResponse::from_text(content.clone())),
                }
            }
        };
        Cancellation::disarm(&guard);
        match finish(workflow, run, outcome, Some(content)).await {
            Ok(response) => {
                let mut event = RunEvent::completed(response.clone());
                event.run_id = response.run_id.clone();
                event.session_id = response.session_id.clone();
                event.workflow_id = response.workflow_id.clone();
                yield Ok(event);
            }
            Err(error) => yield Err(error),
        }
    };
    RunStream {
        inner: Box::pin(inner),
        cancel,
        span,
    }
}

/// Like [`run_to_stream`], but the stream owns the workflow, so it is `'static`: a server
/// can spawn it or hand it to an HTTP response. Dropping it early still records the run as
/// `cancelled`.
pub fn run_to_stream_owned<W: RunWorkflow>(workflow: W, input: W::Input) -> RunStream<'static> {
    let inner = async_stream::stream! {
        let mut workflow = workflow;
        let mut stream = run_to_stream(&mut workflow, input);
        while let Some(item) = stream.next().await {
            yield item;
        }
    };
    RunStream {
        inner: Box::pin(inner),
        cancel: Arc::new(Mutex::new(None)),
        span: tracing::Span::none(),
    }
}

/// What is needed to record a streamed run its caller dropped before the end.
struct Cancellation {
    storage: Option<Arc<dyn Storage>>,
    write: SessionWrite,
    content: String,
}

impl Cancellation {
    fn lock(
        guard: &Mutex<Option<Cancellation>>,
    ) -> std::sync::MutexGuard<'_, Option<Cancellation>> {
        guard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn arm<S: WorkflowState>(
        guard: &Mutex<Option<Cancellation>>,
        core: &super::WorkflowCore<S>,
        run: &ActiveRun,
    ) {
        let mut response = RunResponse::new();
        run.stamp_response(&mut response);
        let record = RunRecord {
            run_id: run.run_id.clone(),
            session_id: run.session_id.clone(),
            status: RunStatus::Cancelled,
            input: run.input.clone(),
            response,
            error: None,
            created_at: run.started_at,
        };
        *Cancellation::lock(guard) = Some(Cancellation {
            storage: core.storage().cloned(),
            write: core.session_write_without_state(Some(record)),
            content: String::new(),
        });
    }

    fn append(guard: &Mutex<Option<Cancellation>>, delta: &str) {
        if let Some(cancellation) = Cancellation::lock(guard).as_mut() {
            cancellation.content.push_str(delta);
        }
    }

    fn disarm(guard: &Mutex<Option<Cancellation>>) {
        Cancellation::lock(guard).take();
    }

    /// Writes the cancelled run in a spawned task, so that dropping never blocks.
    fn record(self) {
        let Some(storage) = self.storage else {
            return;
        };
        let mut write = self.write;
        if let Some(run) = write.run.as_mut() {
            run.response.content = Some(Value::String(self.content));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "streamed run dropped outside a tokio runtime; its cancellation is not recorded"
            );
            return;
        };
        runtime.spawn(async move {
            if let Err(error) = storage.commit(write).await {
                tracing::error!(%error, "cancelled run could not be persisted");
            }
        });
    }
}

/// The stream of events of a workflow run (see [`run_to_stream`]).
///
/// Dropping it before the end records the run with status `cancelled` and the content
/// streamed so far, in a background task on the current tokio runtime.
#[must_use = "a run stream does nothing unless polled"]
pub struct RunStream<'a> {
    inner: BoxStream<'a, Result<RunEvent>>,
    cancel: Arc<Mutex<Option<Cancellation>>>,
    span: tracing::Span,
}

impl RunStream<'_> {
    /// A stream that yields `error` and ends.
    pub fn failed(error: Error) -> Self {
        RunStream {
            inner: futures::stream::once(std::future::ready(Err(error))).boxed(),
            cancel: Arc::new(Mutex::new(None)),
            span: tracing::Span::none(),
        }
    }
}

impl Stream for RunStream<'_> {
    type Item = Result<RunEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.poll_next_unpin(cx)
    }
}

impl Drop for RunStream<'_> {
    fn drop(&mut self) {
        if let Some(cancellation) = Cancellation::lock(&self.cancel).take() {
            cancellation.record();
        }
    }
}

impl std::fmt::Debug for RunStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStream").finish_non_exhaustive()
    }
}
