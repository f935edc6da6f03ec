//! Live runs: every run executes on its own task; HTTP responses only subscribe to its event
//! log. A run that is not durable has its events numbered and written here (with a row that
//! says how it ended); a durable run's journal writes its own log, which is followed.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use buddy_core::component::{Component, RunRequest};
use buddy_core::durable::{self, DurableRun, DurableWrite, Fence, StoredEvent};
use buddy_core::run::now_millis;
use buddy_core::{
    RunEvent, RunEventKind, RunResponse, RunStatus, RunStream, Storage, StorageError,
};
use futures::{Stream, StreamExt};

use crate::error::ApiError;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a run's events may wait before they are written (events also go out at once to
/// subscribers in this process).
const FLUSH_WINDOW: Duration = Duration::from_millis(50);

/// How many events a write of a run carries at most.
const FLUSH_BATCH: usize = 256;

/// How many events a slow subscriber may fall behind before it catches up from the buffer.
const CHANNEL: usize = 1024;

/// The most events a live run keeps in memory, for subscribers that join late or fall
/// behind; one that needs older events reads them from the run's log (and then follows the
/// log). A run of any length holds a bounded amount of memory.
const LIVE_FRAMES: usize = 4 * CHANNEL;

/// A boxed stream of one run's events, in sequence order.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Arc<Frame>> + Send>>;

/// One event of a run's log, shared by every subscriber, with its server-sent-event frame
/// encoded once (ten thousand subscribers of a run do not serialize its events ten thousand
/// times).
pub(crate) struct Frame {
    stored: StoredEvent,
    sse: OnceLock<Bytes>,
}

impl Frame {
    pub(crate) fn new(stored: StoredEvent) -> Arc<Frame> {
        Arc::new(Frame {
            stored,
            sse: OnceLock::new(),
        })
    }

    /// `id: <seq>`, `event: <kind>`, `data: <the RunEvent as one line of JSON>`, a blank line.
    pub(crate) fn sse(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                // Compact JSON holds no line break, so the data is one `data:` line.
                let data =
                    serde_json::to_string(&self.stored.event).unwrap_or_else(|_| "{}".to_owned());
                Bytes::from(format!(
                    "id: {}\nevent: {}\ndata: {data}\n\n",
                    self.stored.seq,
                    self.stored.event.name()
                ))
            })
            .clone()
    }
}

impl std::ops::Deref for Frame {
    type Target = StoredEvent;

    fn deref(&self) -> &StoredEvent {
        &self.stored
    }
}

/// How a run ended, for the response of a request that waited for it.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Completed(Box<RunResponse>),
    Failed(String),
    Paused,
    Cancelled,
}

/// The live runs of this process.
pub(crate) struct Hub {
    /// Where runs that are not durable keep their log.
    pub(crate) storage: Arc<dyn Storage>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Cancelled when the server shuts down: subscriptions end.
    pub(crate) closing: CancellationToken,
    tasks: TaskTracker,
    /// Cleared when shutdown begins: no new runs start.
    accepting: std::sync::atomic::AtomicBool,
}

/// One run executing in this process.
pub(crate) struct Live {
    pub(crate) run_id: String,
    pub(crate) session_id: String,
    pub(crate) durable: bool,
    state: Mutex<LiveState>,
    /// Cancelled by `cancel`: the run is recorded cancelled.
    cancel: CancellationToken,
    /// Cancelled by shutdown: the run stops (a durable one stays resumable).
    stop: CancellationToken,
    outcome: watch::Sender<Option<Outcome>>,
}

struct LiveState {
    /// The run's latest events, at most [`LIVE_FRAMES`] (a subscriber that joins late
    /// starts from here, or from the log when it needs older ones).
    events: VecDeque<Arc<Frame>>,
    /// `None` once the run has ended: subscribers then stop.
    sender: Option<broadcast::Sender<Arc<Frame>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Live {
    fn new(run_id: String, session_id: String, durable: bool) -> Arc<Live> {
        let (sender, _) = broadcast::channel(CHANNEL);
        Arc::new(Live {
            run_id,
            session_id,
            durable,
            state: Mutex::new(LiveState {
                events: VecDeque::new(),
                sender: Some(sender),
            }),
            cancel: CancellationToken::new(),
            stop: CancellationToken::new(),
            outcome: watch::channel(None).0,
        })
    }

    /// Adds an event (if it is new) and sends it to subscribers.
    fn publish(&self, event: Arc<Frame>) {
        let mut state = lock(&self.state);
        if state
            .events
            .back()
            .is_some_and(|last| last.seq >= event.seq)
        {
            return;
        }
        if state.events.len() == LIVE_FRAMES {
            state.events.pop_front();
        }
        state.events.push_back(Arc::clone(&event));
        if let Some(sender) = &state.sender {
            // No receiver is fine: nobody is subscribed right now.
            let _ = sender.send(event);
        }
    }

    fn end(&self, outcome: Outcome) {
        lock(&self.state).sender = None;
        self.outcome.send_replace(Some(outcome));
    }

    /// Asks the run to stop.
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Asks the run to stop, unless it has ended.
    pub(crate) fn cancel_if_running(&self) {
        if self.outcome.borrow().is_none() {
            self.cancel.cancel();
        }
    }

    /// Waits until the run has ended.
    pub(crate) async fn finished(&self) -> Outcome {
        let mut outcome = self.outcome.subscribe();
        loop {
            if let Some(outcome) = outcome.borrow_and_update().clone() {
                return outcome;
            }
            if outcome.changed().await.is_err() {
                return Outcome::Cancelled;
            }
        }
    }

    /// The events after `after`, then the new ones until the run ends; from `log` (the
    /// run's stored log, followed) when the buffer no longer holds the next one.
    fn subscribe(self: &Arc<Self>, after: u64, log: Arc<dyn Storage>) -> EventStream {
        let (backlog, receiver) = {
            let state = lock(&self.state);
            if !reaches(&state.events, after) {
                return stored(log, &self.run_id, after);
            }
            let start = state.events.partition_point(|event| event.seq <= after);
            let backlog: Vec<_> = state.events.range(start..).cloned().collect();
            (
                backlog,
                state.sender.as_ref().map(broadcast::Sender::subscribe),
            )
        };
        let live = Arc::clone(self);
        let last = backlog.last().map_or(after, |event| event.seq);
        let follow = futures::stream::unfold(
            Follow {
                receiver,
                pending: Vec::new(),
                last,
                from_log: None,
            },
            move |mut follow| {
                let live = Arc::clone(&live);
                let log = Arc::clone(&log);
                async move {
                    loop {
                        if let Some(events) = follow.from_log.as_mut() {
                            let event = events.next().await?;
                            return Some((event, follow));
                        }
                        if let Some(event) = follow.pending.pop() {
                            follow.last = event.seq;
                            return Some((event, follow));
                        }
                        let rx = follow.receiver.as_mut()?;
                        match rx.recv().await {
                            Ok(event) if event.seq > follow.last => {
                                follow.last = event.seq;
                                return Some((event, follow));
                            }
                            Ok(_) => {}
                            Err(error) => {
                                // Fell behind, or the run ended: take what was missed from
                                // the buffer (in reverse, popped from the end), or from the
                                // log when the buffer has moved past it.
                                let state = lock(&live.state);
                                if reaches(&state.events, follow.last) {
                                    let start =
                                        state.events.partition_point(|e| e.seq <= follow.last);
                                    follow.pending =
                                        state.events.range(start..).rev().cloned().collect();
                                } else {
                                    follow.from_log =
                                        Some(stored(Arc::clone(&log), &live.run_id, follow.last));
                                    follow.receiver = None;
                                }
                                if matches!(error, broadcast::error::RecvError::Closed) {
                                    follow.receiver = None;
                                }
                            }
                        }
                    }
                }
            },
        );
        Box::pin(futures::stream::iter(backlog).chain(follow))
    }
}

/// Where a subscriber of a live run is.
struct Follow {
    /// New events (`None` once the run ended, or when reading from the log).
    receiver: Option<broadcast::Receiver<Arc<Frame>>>,
    /// Missed events taken from the buffer, last first.
    pending: Vec<Arc<Frame>>,
    /// The last event sent.
    last: u64,
    /// The run's stored log, once the buffer no longer held what was missed.
    from_log: Option<EventStream>,
}

/// Whether `events` (a run's latest, in order) hold every event after `after`: nothing
/// older has been dropped that the subscriber still needs.
fn reaches(events: &VecDeque<Arc<Frame>>, after: u64) -> bool {
    // Events are numbered from 1 without gaps; a buffer that starts later was trimmed.
    events.front().is_none_or(|first| first.seq <= after + 1)
}

/// The events of `run_id` after `after` as its stored log has them, followed until the run
/// ends.
fn stored(storage: Arc<dyn Storage>, run_id: &str, after: u64) -> EventStream {
    Box::pin(
        durable::events(storage, run_id, after).filter_map(|item| async move {
            match item {
                Ok(event) => Some(Frame::new(event)),
                Err(error) => {
                    tracing::warn!(error = %crate::error::message(&error), "reading a run's events failed");
                    None
                }
            }
        }),
    )
}

/// What the run task needs to know about the component and the request.
pub(crate) struct Started {
    pub(crate) live: Arc<Live>,
}

impl Hub {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Hub {
        Hub {
            storage,
            live: Mutex::new(HashMap::new()),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
            accepting: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub(crate) fn get(&self, run_id: &str) -> Option<Arc<Live>> {
        lock(&self.live).get(run_id).cloned()
    }

    fn insert(&self, live: &Arc<Live>) {
        lock(&self.live).insert(live.run_id.clone(), Arc::clone(live));
    }

    fn remove(&self, live: &Arc<Live>) {
        let mut map = lock(&self.live);
        if map
            .get(&live.run_id)
            .is_some_and(|found| Arc::ptr_eq(found, live))
        {
            map.remove(&live.run_id);
        }
    }

    /// Starts a run of `component` on its own task and returns once it has started (its
    /// first event, which names the run), or with the error that stopped it before.
    pub(crate) async fn start(
        self: &Arc<Self>,
        component: Arc<dyn Component>,
        request: RunRequest,
    ) -> Result<Started, ApiError> {
        let input = request.input.clone();
        let user_id = request.user_id.clone();
        let stream = component.start(request).map_err(ApiError::from)?;
        let meta = Meta {
            kind: component.kind().as_str(),
            component_id: component.id().to_owned(),
            input,
            user_id,
            durable: component.is_durable(),
            log: if component.is_durable() {
                component
                    .storage()
                    .cloned()
                    .unwrap_or_else(|| self.storage.clone())
            } else {
                self.storage.clone()
            },
        };
        self.spawn(stream, meta).await
    }

    /// Resumes durable run `run_id` of `component` on its own task.
    pub(crate) async fn resume(
        self: &Arc<Self>,
        component: Arc<dyn Component>,
        run: &DurableRun,
    ) -> Result<Started, ApiError> {
        let stream = component.resume(&run.run_id);
        let meta = Meta {
            kind: component.kind().as_str(),
            component_id: component.id().to_owned(),
            input: run.input.clone(),
            user_id: run.user_id.clone(),
            durable: true,
            log: component
                .storage()
                .cloned()
                .unwrap_or_else(|| self.storage.clone()),
        };
        self.spawn(stream, meta).await
    }

    async fn spawn(
        self: &Arc<Self>,
        stream: RunStream<'static>,
        meta: Meta,
    ) -> Result<Started, ApiError> {
        let (started, ready) = tokio::sync::oneshot::channel();
        let hub = Arc::clone(self);
        self.tasks.spawn(async move {
            let _ = drive(hub, stream, meta, started).await;
        });
        match ready.await {
            Ok(result) => result,
            Err(_) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the run stopped before it started",
            )),
        }
    }

    /// Stops accepting runs and ends subscriptions.
    pub(crate) fn begin_shutdown(&self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.closing.cancel();
    }

    /// Whether new runs may start.
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Shuts down: subscriptions end at once; runs get `grace` to finish, then are
    /// cancelled (a durable run is only stopped, so it resumes later).
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.closing.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let lives: Vec<_> = lock(&self.live).values().cloned().collect();
            for live in lives {
                live.stop.cancel();
            }
            self.tasks.wait().await;
        }
    }

    /// The events of `run_id` after `after`: from this process when the run is live here,
    /// else from `storage` (replayed, then followed until the run ends).
    pub(crate) fn subscribe(
        &self,
        run_id: &str,
        storage: Arc<dyn Storage>,
        after: u64,
    ) -> EventStream {
        let events = match self.get(run_id) {
            Some(live) => live.subscribe(after, storage),
            None => stored(storage, run_id, after),
        };
        let closing = self.closing.clone();
        Box::pin(events.take_until(closing.cancelled_owned()))
    }
}

struct Meta {
    kind: &'static str,
    component_id: String,
    input: serde_json::Value,
    user_id: Option<String>,
    durable: bool,
    /// Where the run's log is.
    log: Arc<dyn Storage>,
}

type StartedSender = tokio::sync::oneshot::Sender<Result<Started, ApiError>>;

/// Runs one run to its end.
async fn drive(
    hub: Arc<Hub>,
    mut stream: RunStream<'static>,
    meta: Meta,
    started: StartedSender,
) -> Option<()> {
    let first = match stream.next().await {
        Some(Ok(event)) => event,
        Some(Err(error)) => {
            let _ = started.send(Err(ApiError::from(error)));
            return None;
        }
        None => {
            let _ = started.send(Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the run ended before it started",
            )));
            return None;
        }
    };
    let run_id = first
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let session_id = first.session_id.clone().unwrap_or_default();
    let live = Live::new(run_id, session_id, meta.durable);
    hub.insert(&live);
    let outcome = if meta.durable {
        let _ = started.send(Ok(Started {
            live: Arc::clone(&live),
        }));
        drive_durable(&live, stream, &meta).await
    } else {
        // The run's row is written before anyone hears of the run.
        let mut log = Log::new(&live, &meta);
        log.push(first);
        let _ = log.flush(None).await;
        let _ = started.send(Ok(Started {
            live: Arc::clone(&live),
        }));
        drive_logged(&live, stream, log).await
    };
    live.end(outcome);
    hub.remove(&live);
    Some(())
}

/// A durable run: its journal writes the log; one follower per run feeds subscribers here.
async fn drive_durable(live: &Arc<Live>, mut stream: RunStream<'static>, meta: &Meta) -> Outcome {
    let follower = {
        let live = Arc::clone(live);
        let mut events = durable::events(meta.log.clone(), live.run_id.clone(), 0);
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    Ok(event) => live.publish(Frame::new(event)),
                    Err(error) => {
                        tracing::warn!(error = %crate::error::message(&error), "following a durable run failed");
                        break;
                    }
                }
            }
        })
    };
    let mut outcome = None;
    loop {
        tokio::select! {
            _ = live.cancel.cancelled() => {
                if let Err(error) = durable::cancel(&*meta.log, &live.run_id).await {
                    tracing::warn!(run_id = %live.run_id, error = %crate::error::message(&error), "recording a run cancelled failed");
                }
                outcome = Some(Outcome::Cancelled);
                break;
            }
            _ = live.stop.cancelled() => {
                outcome = Some(Outcome::Cancelled);
                break;
            }
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    if let Some(response) = event.response().filter(|_| event.is_top_level()) {
                        outcome = Some(Outcome::Completed(Box::new(response.clone())));
                    }
                }
                Some(Err(error)) if error.is_paused() => {
                    outcome = Some(Outcome::Paused);
                    break;
                }
                Some(Err(error)) => {
                    outcome = Some(Outcome::Failed(crate::error::message(&error)));
                    break;
                }
                None => break,
            }
        }
    }
    // Stopping a durable run leaves it resumable; `cancel` records it cancelled first.
    drop(stream);
    // The follower ends once the run's row says it ended or paused and its log is read; a
    // run stopped by shutdown stays running, so give the log a moment, then stop.
    let mut follower = follower;
    if tokio::time::timeout(Duration::from_secs(2), &mut follower)
        .await
        .is_err()
    {
        follower.abort();
    }
    outcome.unwrap_or(Outcome::Cancelled)
}

/// A run that is not durable: its events are numbered and written here, with a row saying
/// where the run is.
async fn drive_logged(
    live: &Arc<Live>,
    mut stream: RunStream<'static>,
    mut log: Log<'_>,
) -> Outcome {
    let mut deadline = tokio::time::Instant::now() + FLUSH_WINDOW;
    let outcome = loop {
        tokio::select! {
            biased;
            _ = live.cancel.cancelled() => break Outcome::Cancelled,
            _ = live.stop.cancelled() => break Outcome::Cancelled,
            _ = tokio::time::sleep_until(deadline), if !log.pending.is_empty() => {
                if log.flush(None).await.is_err() {
                    break Outcome::Cancelled;
                }
            }
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    if log.pending.is_empty() {
                        deadline = tokio::time::Instant::now() + FLUSH_WINDOW;
                    }
                    if let Some(response) = event.response().filter(|_| event.is_top_level()) {
                        log.response = Some(response.clone());
                    }
                    log.push(event);
                    if log.pending.len() >= FLUSH_BATCH && log.flush(None).await.is_err() {
                        break Outcome::Cancelled;
                    }
                }
                Some(Err(error)) => break Outcome::Failed(crate::error::message(&error)),
                None => match log.response.clone() {
                    Some(response) => break Outcome::Completed(Box::new(response)),
                    None => break Outcome::Failed("the run ended without a response".to_owned()),
                },
            }
        }
    };
    // Dropping the stream of a run that did not end records it cancelled in its session.
    drop(stream);
    let status = match &outcome {
        Outcome::Completed(_) => RunStatus::Completed,
        Outcome::Failed(message) => {
            log.push(RunEvent::new(RunEventKind::RunError {
                message: message.clone(),
            }));
            RunStatus::Error
        }
        Outcome::Paused | Outcome::Cancelled => {
            log.push(RunEvent::new(RunEventKind::RunCancelled));
            RunStatus::Cancelled
        }
    };
    if let Outcome::Failed(message) = &outcome {
        log.error = Some(message.clone());
    }
    let _ = log.flush(Some(status)).await;
    outcome
}

/// The event log of a run that is not durable, as this process writes it.
struct Log<'a> {
    live: &'a Arc<Live>,
    storage: Arc<dyn Storage>,
    row: DurableRun,
    next_seq: u64,
    pending: Vec<StoredEvent>,
    written: bool,
    response: Option<RunResponse>,
    error: Option<String>,
    /// Set when a write failed: the log is no longer written.
    broken: bool,
}

impl<'a> Log<'a> {
    fn new(live: &'a Arc<Live>, meta: &Meta) -> Self {
        let now = now_millis();
        Log {
            live,
            storage: meta.log.clone(),
            row: DurableRun {
                run_id: live.run_id.clone(),
                workflow: meta.kind.to_owned(),
                version: 1,
                workflow_id: Some(meta.component_id.clone()),
                session_id: live.session_id.clone(),
                user_id: meta.user_id.clone(),
                status: RunStatus::Running,
                input: meta.input.clone(),
                attempt: 1,
                created_at: now,
                updated_at: now,
                log_only: true,
                ..DurableRun::default()
            },
            next_seq: 1,
            pending: Vec::new(),
            written: false,
            response: None,
            error: None,
            broken: false,
        }
    }

    fn push(&mut self, mut event: RunEvent) {
        if event.replayed {
            return;
        }
        if event.run_id.is_none() {
            event.run_id = Some(self.live.run_id.clone());
            event.session_id = Some(self.live.session_id.clone());
            event.created_at = now_millis();
        }
        let stored = StoredEvent {
            run_id: self.live.run_id.clone(),
            seq: self.next_seq,
            event,
        };
        self.next_seq += 1;
        self.live.publish(Frame::new(stored.clone()));
        self.pending.push(stored);
    }

    /// Writes the pending events (and the row when the run starts or ends with `status`).
    /// An error means the run must stop: it was cancelled elsewhere (fenced).
    async fn flush(&mut self, status: Option<RunStatus>) -> Result<(), ()> {
        if self.broken {
            return Ok(());
        }
        let mut write = DurableWrite::new(self.live.run_id.clone());
        write.events = std::mem::take(&mut self.pending);
        if !self.written || status.is_some() {
            let mut row = self.row.clone();
            if let Some(status) = status {
                let now = now_millis();
                row.status = status;
                row.updated_at = now;
                row.ended_at = Some(now);
                row.response = self.response.clone();
                row.error = self.error.clone();
            }
            write.run = Some(row);
        }
        if self.written {
            write.fence = Some(Fence {
                attempt: 1,
                status: Some(RunStatus::Running),
            });
        }
        match self.storage.write_durable(write).await {
            Ok(_) => {
                self.written = true;
                Ok(())
            }
            Err(StorageError::Fenced { .. }) => {
                // Cancelled by another process: the row says so already.
                self.broken = true;
                Err(())
            }
            Err(error) => {
                tracing::warn!(run_id = %self.live.run_id, error = %crate::error::message(&error), "writing a run's event log failed; its events are only sent live");
                self.broken = true;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_run_keeps_a_bounded_number_of_events() {
        let live = Live::new("r".to_owned(), "s".to_owned(), false);
        for seq in 1..=(LIVE_FRAMES as u64 + 500) {
            live.publish(Frame::new(StoredEvent {
                run_id: "r".to_owned(),
                seq,
                event: RunEvent::custom("n", serde_json::json!(seq)),
            }));
        }
        let state = lock(&live.state);
        assert_eq!(state.events.len(), LIVE_FRAMES);
        assert_eq!(state.events.front().map(|event| event.seq), Some(501));
        assert!(!reaches(&state.events, 499), "event 500 was dropped");
        assert!(reaches(&state.events, 500));
    }
}
