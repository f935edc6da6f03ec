//! The run wrapper: what happens around the user's `run` body on every run. The lifecycle
//! (ids, events, record, commit, cancellation) is the run engine's; what is a workflow's own
//! is the session it reads into its core, the members it attaches, and the body.

use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use tracing::Instrument;

use super::RunWorkflow;
use crate::durable::{
    DurableError, DurableRun, Fence, Journal, ResumeFrom, ResumeOptions, prepare_resume,
};
use crate::engine::{EventSink, Failed, Journaled, RunScope, RunSpec, RunStream, catch_panic};
use crate::error::{Error, Result};
use crate::run::{RunEvent, RunResponse, RunStatus, now_millis};
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
    serde_json::to_value(input).map_err(|source| Error::Input {
        workflow,
        field: String::new(),
        source,
    })
}

/// Runs `workflow` to its response: the wrapper around a non-streaming `run`, and the
/// collector of a streaming one.
pub async fn run_to_response<W: RunWorkflow>(
    workflow: &mut W,
    input: W::Input,
) -> Result<RunResponse> {
    run_workflow(workflow, input, &EventSink::disabled(), None).await
}

/// Runs `workflow` as a stream of events: the wrapper around a streaming `run`.
///
/// The stream starts with `run_started`, passes on every event of the body as it comes
/// (stamped with the workflow's run, session and workflow ids; text deltas are accumulated
/// into the response), and ends, after the run is persisted, with one `run_completed`
/// carrying the workflow's response, or with the error.
pub fn run_to_stream<W: RunWorkflow>(workflow: &mut W, input: W::Input) -> RunStream<'_> {
    RunStream::start(move |sink| async move { run_workflow(workflow, input, &sink, None).await })
}

/// Like [`run_to_stream`], but the stream owns the workflow, so it is `'static`: a server
/// can spawn it or hand it to an HTTP response. Dropping it early still records the run as
/// `cancelled`.
pub fn run_to_stream_owned<W: RunWorkflow>(workflow: W, input: W::Input) -> RunStream<'static> {
    RunStream::start(move |sink| async move {
        let mut workflow = workflow;
        run_workflow(&mut workflow, input, &sink, None).await
    })
}

/// Resumes durable run `run_id` of `W` (see [`RunWorkflow::resume`]), its events sent into
/// `sink`.
pub(crate) async fn resume_run<W: RunWorkflow>(
    workflow: &mut W,
    run_id: &str,
    options: &ResumeOptions,
    sink: &EventSink,
) -> Result<RunResponse> {
    if !W::DURABLE {
        return Err(Error::Durable(DurableError::NotDurable {
            what: "`resume`",
            hint: "add `durable` to the workflow's `impl` attribute: `#[workflow(durable)]`",
        }));
    }
    let storage = durable_storage(workflow, "`resume`")?;
    let from = prepare_resume(&*storage, run_id, W::TYPE_NAME, W::VERSION, options).await?;
    let run = &from.state.run;
    if run.status == RunStatus::Paused && !crate::durable::ready(&from.state) {
        // Still waiting: running the body would only pause it again.
        let waits = crate::durable::waiting_keys(&from.state);
        return Err(Error::Durable(DurableError::Paused {
            run_id: run_id.to_owned(),
            waits,
        }));
    }
    let input: W::Input = super::decode_object(W::TYPE_NAME, run.input.clone())?;
    run_workflow(workflow, input, sink, Some(from)).await
}

/// Resumes run `run_id` as a stream (see [`resume_run`]).
pub(crate) fn resume_stream<'a, W: RunWorkflow>(
    workflow: &'a mut W,
    run_id: String,
    options: ResumeOptions,
) -> RunStream<'a> {
    RunStream::start(
        move |sink| async move { resume_run(workflow, &run_id, &options, &sink).await },
    )
}

/// Like [`resume_stream`], but the stream owns the workflow (`'static`).
pub(crate) fn resume_stream_owned<W: RunWorkflow>(
    workflow: W,
    run_id: String,
) -> RunStream<'static> {
    RunStream::start(move |sink| async move {
        let mut workflow = workflow;
        resume_run(&mut workflow, &run_id, &ResumeOptions::default(), &sink).await
    })
}

/// The storage a durable workflow journals into.
fn durable_storage<W: RunWorkflow>(
    workflow: &W,
    what: &'static str,
) -> Result<std::sync::Arc<dyn crate::storage::Storage>> {
    let storage = workflow.__buddy_core().storage().cloned();
    match storage {
        Some(storage) if storage.supports_durable() => Ok(storage),
        _ => Err(Error::Durable(DurableError::NotDurable {
            what,
            hint: "give the workflow a storage that keeps durable runs (SqliteStorage, PostgresStorage, MemoryStorage)",
        })),
    }
}

/// One run of `workflow`: session read, members attached, body, record and commit; for a
/// durable workflow, journaled (a new run, or the resume of `resume`).
async fn run_workflow<W: RunWorkflow>(
    workflow: &mut W,
    input: W::Input,
    sink: &EventSink,
    resume: Option<ResumeFrom>,
) -> Result<RunResponse> {
    let input_value = encode_input(W::TYPE_NAME, &input)?;
    let durable_store = match W::DURABLE {
        true => Some(durable_storage(workflow, "a durable workflow")?),
        false => None,
    };
    let core = workflow.__buddy_core_mut();
    if let Some(from) = &resume {
        let run = &from.state.run;
        if core.session_id() != Some(run.session_id.as_str()) {
            core.use_session(run.session_id.clone());
        }
        core.set_user_id(run.user_id.clone());
        if let Some(id) = &run.workflow_id {
            core.adopt_workflow_id(id);
        }
    }
    // The session is read before a workflow id is made up, so that a continuing session
    // adopts its stored workflow id.
    let session_id = core.ensure_session_id();
    core.read_session().await?;
    let mut spec = RunSpec {
        kind: SessionKind::Workflow,
        component_id: core.ensure_workflow_id(),
        name: Some(W::TYPE_NAME.to_owned()),
        session_id,
        user_id: core.user_id().map(str::to_owned),
        path: core.path().to_vec(),
        storage: core.storage().cloned(),
        input: input_value,
        debug: core.debug_mode(),
        run_id: None,
        journaled: Journaled::No,
    };
    let mut fence = None;
    if let Some(storage) = durable_store {
        let (journal, resumed) = new_journal::<W>(storage, &spec, resume);
        spec.run_id = Some(journal.run_id().to_owned());
        fence = resumed;
        spec.journaled = Journaled::Root(journal);
    }
    let mut scope = RunScope::start(spec, sink);
    if let Some(journal) = scope.journal().cloned() {
        // The run is stored `running` (with `run_started`) before any of its work.
        journal.start(fence).await?;
        crate::fault::point("after_run_start", journal.run_id());
    }
    scope.set_write(core.session_write_without_state(None));
    let before = core.state_snapshot();
    let context = core.member_context();
    workflow.__buddy_attach_members(&context);

    let span = scope.span().clone();
    let outcome = match scope.journal().cloned() {
        None => {
            catch_panic(body(workflow, input, &mut scope))
                .instrument(span.clone())
                .await
        }
        Some(journal) => {
            let root = Some(journal.root());
            let body = until_paused(&journal, catch_panic(body(workflow, input, &mut scope)));
            match crate::durable::within(root, body)
                .instrument(span.clone())
                .await
            {
                Some(outcome) => outcome,
                None => {
                    workflow.__buddy_core_mut().restore_state(before);
                    return Err(scope.pause().instrument(span).await);
                }
            }
        }
    };
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
    let durable = scope.journal().map(|journal| journal.run_id().to_owned());
    let finished = scope.finish(outcome, patch).instrument(span).await;
    if let Some(run_id) = durable {
        crate::fault::point("after_run_end", &run_id);
    }
    core.finish_run(finished.record, finished.stored);
    finished.result
}

/// The journal of a durable run: a new run, or the next attempt of `resume`'s (with the
/// fence its first write takes it over with).
fn new_journal<W: RunWorkflow>(
    storage: std::sync::Arc<dyn crate::storage::Storage>,
    spec: &RunSpec,
    resume: Option<ResumeFrom>,
) -> (std::sync::Arc<Journal>, Option<Fence>) {
    let now = now_millis();
    match resume {
        None => {
            let run = DurableRun {
                run_id: uuid::Uuid::new_v4().to_string(),
                workflow: W::TYPE_NAME.to_owned(),
                version: W::VERSION,
                workflow_id: Some(spec.component_id.clone()),
                session_id: spec.session_id.clone(),
                user_id: spec.user_id.clone(),
                status: RunStatus::Running,
                input: spec.input.clone(),
                attempt: 1,
                response: None,
                error: None,
                created_at: now,
                updated_at: now,
                ended_at: None,
                log_only: false,
            };
            (Journal::new(storage, run, None), None)
        }
        Some(from) => {
            let mut run = from.state.run.clone();
            let fence = Fence {
                attempt: run.attempt,
                status: None,
            };
            run.attempt += 1;
            run.status = RunStatus::Running;
            run.version = W::VERSION;
            run.updated_at = now;
            (Journal::new(storage, run, Some(from.state)), Some(fence))
        }
    }
}

/// Drives a durable run's body until it ends (`Some`) or pauses (`None`): it pauses when
/// the body waits for input and no journaled work is running.
async fn until_paused<T>(journal: &Journal, body: impl Future<Output = T>) -> Option<T> {
    let mut body = std::pin::pin!(body);
    std::future::poll_fn(|cx| match body.as_mut().poll(cx) {
        std::task::Poll::Ready(outcome) => std::task::Poll::Ready(Some(outcome)),
        std::task::Poll::Pending if journal.should_pause() => std::task::Poll::Ready(None),
        std::task::Poll::Pending => std::task::Poll::Pending,
    })
    .await
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
