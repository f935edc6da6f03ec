//! The run wrapper: what happens around the user's `run` body on every run. The lifecycle
//! (ids, events, record, commit, cancellation) is the run engine's; what is a workflow's own
//! is the session it reads into its core, the members it attaches, and the body.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use tracing::Instrument;

use super::RunWorkflow;
use crate::engine::{EventSink, Failed, RunScope, RunSpec, RunStream, catch_panic};
use crate::error::{Error, Result};
use crate::run::{RunEvent, RunResponse};
use crate::session::{SessionKind, StatePatch};

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

/// Boxes a stream returned by a `run` body (what `#[workflow]` generates for a streaming
/// body).
#[doc(hidden)]
pub fn box_stream<'a, S>(stream: S) -> BoxStream<'a, Result<RunEvent>>
where
    S: futures::Stream<Item = Result<RunEvent>> + Send + 'a,
{
    Box::pin(stream)
}

/// `W` has a `#[workflow]` `run`: the check `#[workflow]` on a struct emits, so that
/// forgetting the attribute on the `impl` block is a compile error.
#[doc(hidden)]
pub const fn assert_run_workflow<W: RunWorkflow>() {}

/// Stands for generated code that cannot be written because the input had an error; it is
/// only compiled next to that `compile_error!`, so it never runs.
#[doc(hidden)]
pub fn expansion_failed() -> ! {
    unreachable!("code generated next to a `#[workflow]` compile error ran")
}

fn encode_input<T: serde::Serialize>(workflow: &'static str, input: &T) -> Result<Value> {
    serde_json::to_value(input).map_err(|source| Error::Input { workflow, source })
}

/// Runs `workflow` to its response: the wrapper around a non-streaming `run`, and the
/// collector of a streaming one.
pub async fn run_to_response<W: RunWorkflow>(
    workflow: &mut W,
    input: W::Input,
) -> Result<RunResponse> {
    run_workflow(workflow, input, &EventSink::disabled()).await
}

/// Runs `workflow` as a stream of events: the wrapper around a streaming `run`.
///
/// The stream starts with `run_started`, passes on every event of the body as it comes
/// (stamped with the workflow's run, session and workflow ids; text deltas are accumulated
/// into the response), and ends, after the run is persisted, with one `run_completed`
/// carrying the workflow's response, or with the error.
pub fn run_to_stream<W: RunWorkflow>(workflow: &mut W, input: W::Input) -> RunStream<'_> {
    RunStream::start(move |sink| async move { run_workflow(workflow, input, &sink).await })
}

/// Like [`run_to_stream`], but the stream owns the workflow, so it is `'static`: a server
/// can spawn it or hand it to an HTTP response. Dropping it early still records the run as
/// `cancelled`.
pub fn run_to_stream_owned<W: RunWorkflow>(workflow: W, input: W::Input) -> RunStream<'static> {
    RunStream::start(move |sink| async move {
        let mut workflow = workflow;
        run_workflow(&mut workflow, input, &sink).await
    })
}

/// One run of `workflow`: session read, members attached, body, record and commit.
async fn run_workflow<W: RunWorkflow>(
    workflow: &mut W,
    input: W::Input,
    sink: &EventSink,
) -> Result<RunResponse> {
    let input_value = encode_input(W::TYPE_NAME, &input)?;
    let core = workflow.__buddy_core_mut();
    // The session is read before a workflow id is made up, so that a continuing session
    // adopts its stored workflow id.
    let session_id = core.ensure_session_id();
    core.read_session().await?;
    let spec = RunSpec {
        kind: SessionKind::Workflow,
        component_id: core.ensure_workflow_id(),
        name: Some(W::TYPE_NAME.to_owned()),
        session_id,
        user_id: core.user_id().map(str::to_owned),
        path: core.path().to_vec(),
        storage: core.storage().cloned(),
        input: input_value,
        debug: core.debug_mode(),
    };
    let mut scope = RunScope::start(spec, sink);
    scope.set_write(core.session_write_without_state(None));
    let before = core.state_snapshot();
    let context = core.member_context();
    workflow.__buddy_attach_members(&context);

    let span = scope.span().clone();
    let outcome = catch_panic(body(workflow, input, &mut scope))
        .instrument(span.clone())
        .await;
    let core = workflow.__buddy_core_mut();
    // A run is all or nothing for state: a failed run's changes are not written, and the
    // instance goes back to the state it had.
    let (outcome, patch) = match outcome {
        Ok(response) => match core.state_patch() {
            Ok(patch) => (Ok(response), patch),
            // The state does not encode: the run is kept (with its response), its state is not.
            Err(error) => {
                core.restore_state(before);
                let response = Some(response);
                (Err(Failed { error, response }), StatePatch::default())
            }
        },
        Err(error) => {
            core.restore_state(before);
            (Err(Failed::from(error)), StatePatch::default())
        }
    };
    let finished = scope.finish(outcome, patch).instrument(span).await;
    core.finish_run(finished.record, finished.stored);
    finished.result
}

/// Runs the body; a streamed body's events are passed on as they come.
async fn body<W: RunWorkflow>(
    workflow: &mut W,
    input: W::Input,
    scope: &mut RunScope,
) -> Result<RunResponse> {
    match workflow.__buddy_call(input).await {
        Body::Response(result) => result,
        Body::Stream(mut events) => {
            while let Some(event) = events.next().await {
                scope.forward(event?);
            }
            Ok(RunResponse::from_text(scope.content()))
        }
    }
}
