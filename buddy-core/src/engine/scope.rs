//! [`RunScope`]: one run of a workflow, an agent or a team, from its ids to its record.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::sink::EventSink;
use crate::durable::{DurableError, EntryKind, Journal, JournalScope, Slot};
use crate::error::{Error, Result};
use crate::run::{RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus, now_millis};
use crate::session::{Session, SessionKey, SessionKind, SessionWrite, StateMerge, StatePatch};
use crate::storage::{ReadOptions, Storage};

/// What an orchestrator says about a run before it starts.
pub(crate) struct RunSpec {
    /// Which kind of component runs.
    pub kind: SessionKind,
    /// The component's id (workflow, agent or team id).
    pub component_id: String,
    /// The component's name, for spans and messages.
    pub name: Option<String>,
    /// The session the run belongs to.
    pub session_id: String,
    /// The user the run is for.
    pub user_id: Option<String>,
    /// Where the component sits below the top-level run (its session scope).
    pub path: Vec<String>,
    /// Where the session is stored, if anywhere.
    pub storage: Option<Arc<dyn Storage>>,
    /// The recorded input (a JSON object).
    pub input: Value,
    /// Whether debug output is on.
    pub debug: bool,
    /// The run's id when it is given (a resumed durable run keeps its own).
    pub run_id: Option<String>,
    /// How the run is journaled.
    pub journaled: Journaled,
}

/// How a run takes part in a durable run's journal.
#[derive(Default)]
pub(crate) enum Journaled {
    /// Not at all: nothing is journaled (every run outside durable workflows).
    #[default]
    No,
    /// The top-level run of a durable workflow: it owns the journal, writes the run's row
    /// when it ends or pauses, and its record goes with it.
    Root(Arc<Journal>),
    /// A member run inside a durable run: its whole response is the entry of `slot`,
    /// written (with its session write when it shares the journal's storage) when it ends.
    Member {
        /// The member run's journal slot.
        slot: Slot,
        /// The hash of its input.
        input_hash: String,
    },
}

impl RunSpec {
    /// The spec of an agent's or a team's run on a message.
    pub(crate) fn member_run(
        kind: SessionKind,
        component: (&str, Option<&String>),
        session_id: &str,
        attachment: &crate::member::Attachment,
        storage: Option<Arc<dyn Storage>>,
        input: &crate::run::Message,
    ) -> RunSpec {
        RunSpec {
            kind,
            component_id: component.0.to_owned(),
            name: component.1.cloned(),
            session_id: session_id.to_owned(),
            user_id: attachment.user(),
            path: attachment.path.clone(),
            storage,
            input: super::message_input(input),
            debug: attachment.debug(),
            run_id: None,
            journaled: Journaled::No,
        }
    }
}

/// One run in progress: its ids, its span, where its events go, and what is needed to
/// record it.
///
/// Every run of a workflow, an agent or a team goes through a scope: [`RunScope::start`]
/// makes the ids and emits `run_started`, [`RunScope::finish`] records the run and commits
/// the session write (state changes only when the run succeeded) and emits `run_completed`.
/// A scope dropped before `finish` (the caller dropped the run's stream or future) records
/// the run as `cancelled` with the text streamed so far, in a background task.
pub(crate) struct RunScope {
    kind: SessionKind,
    run_id: String,
    component_id: String,
    session_id: String,
    user_id: Option<String>,
    path: Vec<String>,
    storage: Option<Arc<dyn Storage>>,
    input: Value,
    started_at: i64,
    started: Instant,
    sink: EventSink,
    /// Whether this run is the top-level run of its stream (not a member sending into its
    /// parent's stream).
    top_level: bool,
    span: tracing::Span,
    /// Text this run produced so far (its own deltas and those its body passed on).
    content: String,
    /// Identity and metadata of the session write, set by the orchestrator; used by
    /// `finish` and by a cancellation.
    template: Option<SessionWrite>,
    /// Whether a drop still has to record the run.
    armed: bool,
    /// How the run is journaled.
    journaled: Journaled,
    /// The journal its events go to, if it is in a durable run.
    journal: Option<Arc<Journal>>,
    /// Where its model requests and tool calls are journaled.
    entries: Option<JournalScope>,
}

/// A failed run: its error, and what it had produced when it failed (kept in its record).
pub(crate) struct Failed {
    pub error: Error,
    pub response: Option<RunResponse>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed {
            error,
            response: None,
        }
    }
}

/// What a finished run leaves: the caller's result and, when it was committed, the session
/// as stored afterwards.
pub(crate) struct Finished {
    pub result: Result<RunResponse>,
    pub record: RunRecord,
    pub stored: Option<Session>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl RunScope {
    /// Starts a run: a fresh run id, the span, `run_started` on `sink`.
    pub(crate) fn start(spec: RunSpec, sink: &EventSink) -> RunScope {
        let run_id = spec.run_id.clone().unwrap_or_else(new_id);
        let (journal, entries) = match &spec.journaled {
            Journaled::No => (None, None),
            Journaled::Root(journal) => (Some(Arc::clone(journal)), Some(journal.root())),
            Journaled::Member { slot, .. } => {
                (Some(Arc::clone(slot.journal())), Some(slot.child()))
            }
        };
        let resumed = match &spec.journaled {
            Journaled::Root(journal) => journal.resumed_attempt(),
            _ => None,
        };
        if spec.debug {
            crate::debug::enable();
        }
        let workflow_id =
            (spec.kind == SessionKind::Workflow).then_some(spec.component_id.as_str());
        let within = match &spec.journaled {
            Journaled::Member { slot, .. } => {
                let journal = slot.journal();
                let (run, session, workflow) = journal.ids();
                Some(sink.within_durable((run, session, workflow)))
            }
            _ => None,
        };
        let (sink, top_level) =
            within
                .as_ref()
                .unwrap_or(sink)
                .for_run(&run_id, &spec.session_id, workflow_id);
        let span = run_span(&spec, &run_id);
        let scope = RunScope {
            kind: spec.kind,
            run_id,
            component_id: spec.component_id,
            session_id: spec.session_id,
            user_id: spec.user_id,
            path: spec.path,
            storage: spec.storage,
            input: spec.input,
            started_at: now_millis(),
            started: Instant::now(),
            sink,
            top_level,
            span,
            content: String::new(),
            template: None,
            armed: true,
            journaled: spec.journaled,
            journal,
            entries,
        };
        scope
            .span
            .in_scope(|| tracing::debug!("{} run started", scope.kind.as_str()));
        match resumed {
            Some(attempt) => scope.emit(RunEventKind::RunResumed { attempt }),
            None => scope.emit(RunEventKind::RunStarted),
        }
        scope
    }

    /// Where this run's model requests and tool calls are journaled (none outside durable
    /// runs).
    pub(crate) fn entries(&self) -> Option<&JournalScope> {
        self.entries.as_ref()
    }

    /// Allocates a journal slot for this run's next `kind` entry named `name`.
    pub(crate) fn allocate(&self, kind: EntryKind, name: &str) -> Option<Slot> {
        self.entries
            .as_ref()
            .map(|scope| scope.allocate(kind, name))
    }

    /// The journal of the durable run this run is in.
    pub(crate) fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// The run's id.
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's session id.
    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The run's span; the orchestrator instruments its work with it.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The sink, for members that run inside this run (their events join this stream).
    pub(crate) fn sink(&self) -> &EventSink {
        &self.sink
    }

    /// Whether the run's events are read by anyone (a live stream, or a durable run's log).
    pub(crate) fn streaming(&self) -> bool {
        self.sink.is_enabled() || self.journal.is_some()
    }

    /// The key of this run's session.
    pub(crate) fn key(&self) -> SessionKey {
        SessionKey {
            session_id: self.session_id.clone(),
            kind: self.kind,
            scope: self.path.join("/"),
        }
    }

    /// Sets the identity and metadata the run's session write carries (component data,
    /// session name, extra data); the state patch and the run are filled in by `finish`.
    pub(crate) fn set_write(&mut self, mut template: SessionWrite) {
        let key = self.key();
        template.session_id = key.session_id;
        template.kind = key.kind;
        template.scope = key.scope;
        template.run = None;
        if template.user_id.is_none() {
            template.user_id.clone_from(&self.user_id);
        }
        self.template = Some(template);
    }

    /// The session write of this run: the template, or the bare key and user.
    fn write(&mut self) -> SessionWrite {
        self.template.take().unwrap_or_else(|| SessionWrite {
            user_id: self.user_id.clone(),
            ..SessionWrite::new(self.key())
        })
    }

    /// An event of this run, with its origin.
    pub(crate) fn event(&self, kind: RunEventKind) -> RunEvent {
        let mut event = RunEvent::new(kind);
        event.source_run_id = Some(self.run_id.clone());
        event.member_path = self.path.clone();
        let id = Some(self.component_id.clone());
        match self.kind {
            SessionKind::Workflow => event.workflow_id = id,
            SessionKind::Agent => event.agent_id = id,
            SessionKind::Team => event.team_id = id,
        }
        event
    }

    /// Emits an event of this run (to its stream, and to the log of a durable run).
    pub(crate) fn emit(&self, kind: RunEventKind) {
        match &self.journal {
            None => {
                if self.sink.is_enabled() {
                    self.sink.send(self.event(kind));
                }
            }
            Some(journal) => {
                let mut event = self.event(kind);
                self.sink.stamp(&mut event);
                if self.sink.is_enabled() {
                    journal.push_event(event.clone());
                    self.sink.deliver(event);
                } else {
                    journal.push_event(event);
                }
            }
        }
    }

    /// Emits an event that repeats what the journal holds: to the stream only, marked
    /// replayed (the log has it already).
    pub(crate) fn emit_replayed(&self, kind: RunEventKind) {
        if self.sink.is_enabled() {
            let mut event = self.event(kind);
            event.replayed = true;
            self.sink.send(event);
        }
    }

    /// Emits a text delta of this run and keeps the text.
    pub(crate) fn emit_content(&mut self, text: String) {
        self.content.push_str(&text);
        if self.sink.is_enabled() || self.journal.is_some() {
            self.emit(RunEventKind::RunContent { content: text });
        }
    }

    /// Keeps the text of a replayed model answer and emits it, marked replayed.
    pub(crate) fn emit_replayed_content(&mut self, text: &str) {
        self.content.push_str(text);
        self.emit_replayed(RunEventKind::RunContent {
            content: text.to_owned(),
        });
    }

    /// Passes on an event a workflow body yielded: it keeps its origin (an event without one
    /// becomes this run's own) and gets this run's stamp; text deltas are kept as the run's
    /// text.
    pub(crate) fn forward(&mut self, mut event: RunEvent) {
        if let Some(delta) = event.content_delta() {
            self.content.push_str(delta);
        }
        // The body's own events; a member's were logged by the member's run (members in a
        // durable run are journaled in it).
        let own = event.source_run_id.is_none();
        if own {
            event.source_run_id = Some(self.run_id.clone());
            event.member_path = self.path.clone();
            if self.kind == SessionKind::Workflow && event.workflow_id.is_none() {
                event.workflow_id = Some(self.component_id.clone());
            }
        }
        if let Some(journal) = &self.journal
            && own
            && !event.replayed
        {
            self.sink.stamp(&mut event);
            journal.push_event(event.clone());
            self.sink.deliver(event);
            return;
        }
        self.sink.send(event);
    }

    /// The text produced so far.
    pub(crate) fn content(&self) -> &str {
        &self.content
    }

    /// Reads this run's stored session with its `recent_runs` most recent runs.
    pub(crate) async fn read_session(&self, recent_runs: usize) -> Result<Option<Session>> {
        let Some(storage) = &self.storage else {
            return Ok(None);
        };
        Ok(storage
            .read(&self.key(), &ReadOptions::with_runs(recent_runs))
            .await?)
    }

    /// Finishes a run whose work filled `response` and returned its state patch (or failed
    /// part-way, `response` then holding what it had produced): the caller's result.
    pub(crate) async fn conclude(
        self,
        outcome: Result<StatePatch>,
        response: RunResponse,
    ) -> Result<RunResponse> {
        let (outcome, patch) = match outcome {
            Ok(patch) => (Ok(response), patch),
            Err(error) => {
                let response = Some(response);
                (Err(Failed { error, response }), StatePatch::default())
            }
        };
        self.finish(outcome, patch).await.result
    }

    /// Records the run and commits its session write; emits `run_completed` when all went
    /// well. `state_patch` is applied only when `outcome` is a success; a failure keeps the
    /// response it carries (or the text streamed so far) in the record.
    ///
    /// In a durable run the write goes through the journal: the top-level run's row, its
    /// last events and its session write in one transaction; a member's whole response as
    /// its journal entry (with its session write when it shares the journal's storage).
    pub(crate) async fn finish(
        mut self,
        outcome: Result<RunResponse, Failed>,
        state_patch: StatePatch,
    ) -> Finished {
        self.armed = false;
        let (mut response, error) = match outcome {
            Ok(response) => (response, None),
            Err(failed) => {
                let mut response = failed.response.unwrap_or_else(RunResponse::new);
                if response.content.is_none() && !self.content.is_empty() {
                    response.content = Some(Value::String(std::mem::take(&mut self.content)));
                }
                (response, Some(failed.error))
            }
        };
        self.stamp(&mut response);
        let status = if error.is_some() {
            RunStatus::Error
        } else {
            RunStatus::Completed
        };
        let message = error.as_ref().map(|error| error_chain(error));
        let record = self.record(status, response.clone(), message.clone());
        if let Journaled::Root(journal) = &self.journaled
            && let Some(stop) = journal.stop_reason(error.is_none())
        {
            // Not deterministic, or taken over by another process: nothing more is written
            // and the run stays resumable.
            let _entered = self.span.enter();
            tracing::error!(error = %error_chain(&stop), "durable run stopped");
            return Finished {
                result: Err(stop),
                record,
                stored: None,
            };
        }
        let mut write = self.write();
        if error.is_none() {
            write.state_patch = state_patch;
        }
        write.run = Some(record.clone());
        // Built only when someone reads it: a run nobody streams pays nothing for it.
        let read = self.sink.is_enabled() || self.journal.is_some();
        let closing = match &message {
            _ if !read => None,
            None => Some(RunEventKind::RunCompleted {
                response: Box::new(response.clone()),
            }),
            Some(message) if !self.top_level || self.journal.is_some() => {
                Some(RunEventKind::RunError {
                    message: message.clone(),
                })
            }
            Some(_) => None,
        }
        .map(|kind| {
            let mut event = self.event(kind);
            self.sink.stamp(&mut event);
            event
        });
        let committed = self
            .commit(write, &response, message, closing.as_ref())
            .await;
        let _entered = self.span.enter();
        // The top-level run's failure is its stream's `Err`, not an event.
        let failed = error.is_some();
        let deliver = |event: Option<RunEvent>| {
            if let Some(event) = event
                && (!failed || !self.top_level)
            {
                self.sink.deliver(event);
            }
        };
        match (error, committed) {
            (None, Ok(stored)) => {
                tracing::debug!("{} run completed", self.kind.as_str());
                deliver(closing);
                Finished {
                    result: Ok(response),
                    record,
                    stored,
                }
            }
            (None, Err(source)) => {
                tracing::error!(error = %error_chain(&source), "run finished but could not be persisted");
                let result = match source {
                    Error::Storage(source) => Err(Error::Persist {
                        response: Box::new(response),
                        source,
                    }),
                    other => Err(other),
                };
                Finished {
                    result,
                    record,
                    stored: None,
                }
            }
            (Some(error), committed) => {
                if let Err(storage) = &committed {
                    tracing::error!(error = %error_chain(storage), "failed run could not be persisted");
                }
                tracing::debug!(error = %error_chain(&error), "{} run failed", self.kind.as_str());
                deliver(closing);
                Finished {
                    result: Err(error),
                    record,
                    stored: committed.ok().flatten(),
                }
            }
        }
    }

    /// Writes a finished run: its session write, through the journal in a durable run
    /// (with `closing`, the run's last event, in the same transaction).
    async fn commit(
        &self,
        write: SessionWrite,
        response: &RunResponse,
        error: Option<String>,
        closing: Option<&RunEvent>,
    ) -> Result<Option<Session>> {
        match &self.journaled {
            Journaled::No => self.commit_session(write).await,
            // Boxed: a run outside durable runs does not carry this path's state.
            _ => Box::pin(self.commit_journaled(write, response, error, closing)).await,
        }
    }

    /// Commits the session write on its own (detached from the caller), if the run has a
    /// storage.
    async fn commit_session(&self, write: SessionWrite) -> Result<Option<Session>> {
        match &self.storage {
            None => Ok(None),
            Some(storage) => Ok(Some(crate::storage::commit_detached(storage, write).await?)),
        }
    }

    /// [`commit`](RunScope::commit) in a durable run.
    async fn commit_journaled(
        &self,
        write: SessionWrite,
        response: &RunResponse,
        error: Option<String>,
        closing: Option<&RunEvent>,
    ) -> Result<Option<Session>> {
        match &self.journaled {
            Journaled::No => self.commit_session(write).await,
            Journaled::Root(journal) => {
                if let Some(event) = closing {
                    journal.push_event(event.clone());
                }
                let status = if error.is_some() {
                    RunStatus::Error
                } else {
                    RunStatus::Completed
                };
                let session = self.storage.is_some().then_some(write);
                journal
                    .end(status, Some(response.clone()), error, session)
                    .await
            }
            // A failed member run is not journaled: on resume it runs again.
            Journaled::Member { .. } if error.is_some() => {
                let stored = self.commit_session(write).await;
                if let (Some(event), Some(journal)) = (closing, &self.journal) {
                    journal.push_event(event.clone());
                }
                stored
            }
            Journaled::Member { slot, input_hash } => {
                let output = serde_json::to_value(response).map_err(|source| {
                    Error::Durable(DurableError::Encode {
                        key: slot.key.clone(),
                        source,
                    })
                })?;
                if let Some(event) = closing {
                    slot.journal().push_event(event.clone());
                }
                let shared = self
                    .storage
                    .as_ref()
                    .is_some_and(|storage| Arc::ptr_eq(storage, slot.journal().storage()));
                if shared {
                    return slot
                        .record(input_hash.clone(), Ok(output), Some(write))
                        .await;
                }
                // Two stores: the session first, then the entry. A crash in between runs the
                // member again on resume (its model calls come from the journal) and
                // records it twice in its own session.
                let stored = self.commit_session(write).await?;
                slot.record(input_hash.clone(), Ok(output), None).await?;
                Ok(stored)
            }
        }
    }

    /// Pauses a durable top-level run: its row becomes `paused` with its pending waits and
    /// `run_paused`; no record is written (the run is not over). Returns the pause as the
    /// run's error.
    pub(crate) async fn pause(mut self) -> Error {
        self.armed = false;
        let Journaled::Root(journal) = &self.journaled else {
            return Error::msg("only a durable run can pause");
        };
        if let Some(stop) = journal.stop_reason(false) {
            return stop;
        }
        let waits = journal.pending_waits();
        let mut event = self.event(RunEventKind::RunPaused { waits });
        self.sink.stamp(&mut event);
        journal.push_event(event.clone());
        match journal.pause().await {
            Ok(keys) => {
                self.sink.deliver(event);
                self.span
                    .in_scope(|| tracing::info!(waits = ?keys, "durable run paused"));
                Error::Durable(DurableError::Paused {
                    run_id: self.run_id.clone(),
                    waits: keys,
                })
            }
            Err(error) => error,
        }
    }

    fn stamp(&self, response: &mut RunResponse) {
        response.run_id = Some(self.run_id.clone());
        response.session_id = Some(self.session_id.clone());
        let id = Some(self.component_id.clone());
        match self.kind {
            SessionKind::Workflow => response.workflow_id = id,
            SessionKind::Agent => response.agent_id = id,
            SessionKind::Team => response.team_id = id,
        }
    }

    fn record(&self, status: RunStatus, response: RunResponse, error: Option<String>) -> RunRecord {
        let ended_at = now_millis();
        RunRecord {
            run_id: self.run_id.clone(),
            session_id: self.session_id.clone(),
            status,
            input: self.input.clone(),
            response,
            error,
            created_at: self.started_at,
            ended_at: Some(ended_at.max(self.started_at)),
            duration_ms: Some(self.started.elapsed().as_secs_f64() * 1_000.0),
        }
    }
}

impl Drop for RunScope {
    /// A run dropped before `finish`: recorded `cancelled` with the text so far, without
    /// blocking: handed to the backend's own writer when it has one
    /// ([`Storage::commit_survives_drop`](crate::storage::Storage::commit_survives_drop)),
    /// else in a spawned task.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Journaled::Root(_) = self.journaled {
            // A durable run dropped (a caller gave up, the process is going down) is left
            // `running`: it is resumed, not recorded cancelled.
            return;
        }
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let mut response = RunResponse::new();
        if !self.content.is_empty() {
            response.content = Some(Value::String(std::mem::take(&mut self.content)));
        }
        self.stamp(&mut response);
        let record = self.record(RunStatus::Cancelled, response, None);
        let mut write = self.write();
        write.state_patch = StatePatch::default();
        write.run = Some(record);
        if storage.commit_survives_drop() {
            // The backend completes a commit once it has been polled: poll it here, so the
            // write is handed over before the drop returns (a program that exits right
            // after, having waited for its storage, keeps the record), and no task is spawned.
            let mut commit = storage.commit(write);
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(Err(error)) = commit.as_mut().poll(&mut context) {
                tracing::error!(parent: &self.span, %error, "cancelled run could not be persisted");
            }
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(parent: &self.span, "run dropped outside a tokio runtime; its cancellation is not recorded");
            return;
        };
        let span = self.span.clone();
        runtime.spawn(async move {
            if let Err(error) = storage.commit(write).await {
                tracing::error!(parent: &span, %error, "cancelled run could not be persisted");
            }
        });
    }
}

/// The span of one run: `workflow_run`, `agent_run` or `team_run`.
fn run_span(spec: &RunSpec, run_id: &str) -> tracing::Span {
    let name = spec.name.as_deref().unwrap_or("");
    let id = spec.component_id.as_str();
    let session_id = spec.session_id.as_str();
    let member = spec.path.join("/");
    match spec.kind {
        SessionKind::Workflow => tracing::info_span!(
            "workflow_run",
            workflow = name,
            workflow_id = %id,
            run_id = %run_id,
            session_id = %session_id,
            member = %member
        ),
        SessionKind::Agent => tracing::info_span!(
            "agent_run",
            agent = name,
            agent_id = %id,
            run_id = %run_id,
            session_id = %session_id,
            member = %member
        ),
        SessionKind::Team => tracing::info_span!(
            "team_run",
            team = name,
            team_id = %id,
            run_id = %run_id,
            session_id = %session_id,
            member = %member
        ),
    }
}

pub(crate) use crate::error::chain as error_chain;

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Merges the state given in code into a stored state by `merge`'s rule and returns the
/// merged state with the patch that writes it: what agents and teams do on every run with
/// their configured `session_state` (a workflow does the same through its core).
pub(crate) fn merge_code_state(
    stored: &Map<String, Value>,
    code: Option<&Map<String, Value>>,
    merge: StateMerge,
) -> (Map<String, Value>, StatePatch) {
    let mut merged = stored.clone();
    if let Some(code) = code {
        merge.combine(&mut merged, code);
    }
    let patch = StatePatch::diff(stored, &merged);
    (merged, patch)
}

/// How a member run inside a durable run begins.
pub(crate) enum MemberStart {
    /// The journal holds it whole: its recorded response (its events sent again, marked
    /// replayed).
    Replayed(Box<RunResponse>),
    /// It runs: journaled as its slot (set on the spec), in flight while the guard lives.
    Run(Option<crate::durable::Busy>),
}

/// Begins member run `spec` as journal entry `slot` (none outside durable runs), its input
/// hashed from `input`: replayed when the journal holds it, else journaled as it runs.
pub(crate) fn begin_member(
    spec: &mut RunSpec,
    sink: &EventSink,
    slot: Option<Slot>,
    input: &impl serde::Serialize,
) -> Result<MemberStart> {
    let Some(slot) = slot else {
        return Ok(MemberStart::Run(None));
    };
    let input_hash = crate::durable::hash_value(input);
    if let Some(entry) = slot.replay(&input_hash)? {
        let response: RunResponse =
            crate::durable::decode(&slot.key, entry.output.unwrap_or_default())?;
        replay_member_events(spec, sink, &response);
        return Ok(MemberStart::Replayed(Box::new(response)));
    }
    let busy = slot.busy();
    spec.journaled = Journaled::Member { slot, input_hash };
    Ok(MemberStart::Run(Some(busy)))
}

/// Sends the events of a member run that the journal holds whole to `sink`, marked replayed:
/// `run_started`, its text, `run_completed` with the recorded response (a stream reading
/// the member still gets its response; the log has these events already).
pub(crate) fn replay_member_events(spec: &RunSpec, sink: &EventSink, response: &RunResponse) {
    if !sink.is_enabled() {
        return;
    }
    let run_id = response.run_id.clone().unwrap_or_default();
    let (sink, _) = sink.for_run(&run_id, &spec.session_id, None);
    let send = |kind: RunEventKind| {
        let mut event = RunEvent::new(kind);
        event.source_run_id = Some(run_id.clone());
        event.member_path = spec.path.clone();
        let id = Some(spec.component_id.clone());
        match spec.kind {
            SessionKind::Workflow => event.workflow_id = id,
            SessionKind::Agent => event.agent_id = id,
            SessionKind::Team => event.team_id = id,
        }
        event.replayed = true;
        sink.send(event);
    };
    send(RunEventKind::RunStarted);
    let text = response.text();
    if !text.is_empty() {
        send(RunEventKind::RunContent {
            content: text.into_owned(),
        });
    }
    send(RunEventKind::RunCompleted {
        response: Box::new(response.clone()),
    });
}
