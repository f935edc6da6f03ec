//! The journal of one durable run in progress: key allocation, replay with the
//! nondeterminism checks, the event buffer, and the fenced writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::error::DurableError;
use super::record::{
    DurableRun, DurableState, DurableWrite, EntryKind, EntryStatus, Fence, JournalEntry,
    StoredEvent,
};
use crate::error::{Error, Result};
use crate::run::{RunEvent, RunStatus, now_millis};
use crate::session::{Session, SessionWrite};
use crate::storage::Storage;

/// How long text deltas may wait in the buffer before they are written on their own.
const DELTA_WINDOW: Duration = Duration::from_millis(100);

/// One durable run's journal, shared by everything that runs inside it.
pub(crate) struct Journal {
    storage: Arc<dyn Storage>,
    run_id: String,
    session_id: String,
    workflow_id: Option<String>,
    attempt: u32,
    state: Mutex<State>,
    /// Held while a write is in flight, so that the run's writes reach the storage in the
    /// order their events were numbered.
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("run_id", &self.run_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The run's row as this process last wrote it.
    run: DurableRun,
    /// Entries stored by earlier attempts (and this one), by key.
    recorded: HashMap<String, JournalEntry>,
    /// Which key sits at (scope, position) in `recorded`.
    at: HashMap<(String, u32), String>,
    /// Keys this attempt has asked for (or that belong to an entry it replayed whole).
    consumed: HashSet<String>,
    counters: HashMap<String, Counter>,
    next_seq: u64,
    /// Events numbered but not written yet.
    events: Vec<StoredEvent>,
    last_flush: Option<Instant>,
    /// Journaled work running now (not replayed), by key: a run pauses only when all of it
    /// is blocked on a wait inside it.
    in_flight: HashMap<String, usize>,
    /// Waits this attempt is blocked on, by key.
    waiting: BTreeMap<String, JournalEntry>,
    /// Whether this attempt resumes an earlier one.
    resumed: bool,
    /// Whether the run is pausing (its waits stay registered while its body is dropped).
    pausing: bool,
    /// Why the run must stop whatever its body does: it was not deterministic (a body may
    /// swallow the error, the run still fails), or another process took it over.
    poison: Option<Error>,
}

#[derive(Default)]
struct Counter {
    next_position: u32,
    names: HashMap<String, u32>,
}

/// Where in a run's journal new entries are allocated: the workflow body (`""`), or the
/// entry of a member run or a tool call that the new entries belong to.
#[derive(Clone, Debug)]
pub(crate) struct JournalScope {
    journal: Arc<Journal>,
    path: Arc<str>,
}

/// A journal key allocated for one future: fixed when the future is created.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    journal: Arc<Journal>,
    pub(crate) scope: String,
    pub(crate) key: String,
    pub(crate) position: u32,
    pub(crate) kind: EntryKind,
}

/// Counts journaled work in flight while alive.
pub(crate) struct Busy(Arc<Journal>, String);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if let Some(count) = state.in_flight.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                state.in_flight.remove(&self.1);
            }
        }
    }
}

impl Journal {
    /// The journal of a run starting (`state` is `None`) or resuming (`state` is what is
    /// stored, and `run` the row this attempt writes).
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        run: DurableRun,
        stored: Option<DurableState>,
    ) -> Arc<Journal> {
        let mut state = State {
            next_seq: 1,
            ..State::default()
        };
        if let Some(stored) = stored {
            state.resumed = true;
            state.next_seq = stored.last_seq + 1;
            for entry in stored.entries {
                state
                    .at
                    .insert((entry.scope.clone(), entry.position), entry.key.clone());
                state.recorded.insert(entry.key.clone(), entry);
            }
        }
        let run_id = run.run_id.clone();
        let session_id = run.session_id.clone();
        let workflow_id = run.workflow_id.clone();
        let attempt = run.attempt;
        state.run = run;
        Arc::new(Journal {
            storage,
            run_id,
            session_id,
            workflow_id,
            attempt,
            state: Mutex::new(state),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update below is one assignment or one insert; a panic cannot leave half of
        // one behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The run's id.
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The run's id, session id and workflow id: what its events are stamped with.
    pub(crate) fn ids(&self) -> (&str, &str, Option<&str>) {
        (&self.run_id, &self.session_id, self.workflow_id.as_deref())
    }

    /// The storage the journal is written to.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The scope of the workflow body.
    pub(crate) fn root(self: &Arc<Self>) -> JournalScope {
        JournalScope {
            journal: Arc::clone(self),
            path: Arc::from(""),
        }
    }

    /// Numbers `event` and keeps it for the next write.
    pub(crate) fn push_event(&self, event: RunEvent) {
        let mut state = self.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        state.events.push(StoredEvent {
            run_id: self.run_id.clone(),
            seq,
            event,
        });
    }

    /// Writes the buffered events when the oldest has waited a delta window.
    pub(crate) async fn flush_if_due(self: &Arc<Self>) -> Result<()> {
        let due = {
            let state = self.lock();
            !state.events.is_empty()
                && state
                    .last_flush
                    .is_none_or(|flushed| flushed.elapsed() >= DELTA_WINDOW)
        };
        if due {
            crate::fault::point("before_event_flush", &self.run_id);
            self.write(DurableWrite::new(self.run_id.clone())).await?;
            crate::fault::point("after_event_flush", &self.run_id);
        }
        Ok(())
    }

    /// Marks journaled work at `key` in flight until the guard drops.
    fn busy(self: &Arc<Self>, key: &str) -> Busy {
        *self.lock().in_flight.entry(key.to_owned()).or_insert(0) += 1;
        Busy(Arc::clone(self), key.to_owned())
    }

    /// Whether the run should pause now: it waits for input, and everything still working
    /// is blocked on one of those waits (a tool call waiting for its confirmation, the agent
    /// run around it). When it should, its waits are kept from then on (the body is dropped
    /// next).
    pub(crate) fn should_pause(&self) -> bool {
        let mut state = self.lock();
        let blocked = |key: &String| {
            state.waiting.keys().any(|wait| {
                wait.len() > key.len()
                    && wait.starts_with(key.as_str())
                    && wait.as_bytes()[key.len()] == b'/'
            })
        };
        let pause = !state.waiting.is_empty() && state.in_flight.keys().all(blocked);
        state.pausing |= pause;
        pause
    }

    /// The attempt, when this one resumes an earlier one.
    pub(crate) fn resumed_attempt(&self) -> Option<u32> {
        self.lock().resumed.then_some(self.attempt)
    }

    /// Why the run must stop now, if it must: the first nondeterminism or fencing error,
    /// or (for a body that `finished`) a journal entry it never asked for.
    pub(crate) fn stop_reason(&self, finished: bool) -> Option<Error> {
        if let Some(poison) = self.lock().poison.take() {
            return Some(poison);
        }
        if !finished {
            return None;
        }
        let entry = self.first_unconsumed()?;
        Some(Error::Durable(DurableError::NonDeterministic {
            run_id: self.run_id.clone(),
            key: entry.key.clone(),
            recorded: format!(
                "a {} at position {} of its scope",
                entry.kind.as_str(),
                entry.position
            ),
            asked: "nothing: the body finished without asking for it".to_owned(),
        }))
    }

    /// Keeps the first reason the run must stop.
    fn poison(&self, error: Error) {
        let mut state = self.lock();
        if state.poison.is_none() {
            state.poison = Some(error);
        }
    }

    /// The waits this attempt is blocked on, as a pause announces them.
    pub(crate) fn pending_waits(&self) -> Vec<super::PendingWait> {
        self.lock()
            .waiting
            .values()
            .map(|entry| {
                let wait = entry.wait.clone().unwrap_or_default();
                super::PendingWait {
                    key: entry.key.clone(),
                    prompt: wait.prompt,
                    schema: wait.schema,
                    deadline: wait.deadline,
                }
            })
            .collect()
    }

    /// Writes `write` with the buffered events, fenced on this attempt of a running run.
    async fn write(&self, mut write: DurableWrite) -> Result<Option<Session>> {
        if self.lock().poison.is_some() {
            return Err(Error::Durable(DurableError::Stopped {
                run_id: self.run_id.clone(),
            }));
        }
        let _writing = self.writer.lock().await;
        let events = {
            let mut state = self.lock();
            state.last_flush = Some(Instant::now());
            std::mem::take(&mut state.events)
        };
        write.events = events;
        if write.fence.is_none() {
            write.fence = Some(Fence {
                attempt: self.attempt,
                status: Some(RunStatus::Running),
            });
        }
        match self.storage.write_durable(write).await {
            Ok(stored) => {
                super::log::notify(&self.run_id);
                Ok(stored)
            }
            Err(error) => {
                if let crate::StorageError::Fenced { run_id, what } = &error {
                    self.poison(Error::Storage(crate::StorageError::Fenced {
                        run_id: run_id.clone(),
                        what: what.clone(),
                    }));
                }
                Err(error.into())
            }
        }
    }

    /// Writes the run's row for this attempt: a new run (`fence` none), or a resumed one
    /// (fenced on the attempt it resumes), with the events so far.
    pub(crate) async fn start(&self, fence: Option<Fence>) -> Result<()> {
        let run = self.lock().run.clone();
        let mut write = DurableWrite::new(self.run_id.clone());
        write.run = Some(run);
        write.fence = fence;
        if fence.is_none() {
            // A new run: nothing to check, but `write` must not add the running fence.
            let _writing = self.writer.lock().await;
            write.events = std::mem::take(&mut self.lock().events);
            self.storage.write_durable(write).await?;
            super::log::notify(&self.run_id);
            return Ok(());
        }
        self.write(write).await.map(drop)
    }

    /// Ends the run: its row gets `status` (and the response or error), the final events
    /// and the session write are written with it.
    pub(crate) async fn end(
        &self,
        status: RunStatus,
        response: Option<crate::run::RunResponse>,
        error: Option<String>,
        session: Option<SessionWrite>,
    ) -> Result<Option<Session>> {
        let run = {
            let mut state = self.lock();
            let now = now_millis();
            state.run.status = status;
            state.run.response = response;
            state.run.error = error;
            state.run.updated_at = now;
            state.run.ended_at = Some(now);
            state.run.clone()
        };
        let mut write = DurableWrite::new(self.run_id.clone());
        write.run = Some(run);
        write.session = session;
        crate::fault::point("before_run_end", &self.run_id);
        self.write(write).await
    }

    /// Pauses the run: its row becomes `paused`, its waits are stored as pending, with the
    /// `run_paused` event pushed by the caller. Returns the keys waited for.
    pub(crate) async fn pause(&self) -> Result<Vec<String>> {
        let (run, waits) = {
            let mut state = self.lock();
            state.run.status = RunStatus::Paused;
            state.run.updated_at = now_millis();
            let waits: Vec<JournalEntry> = state.waiting.values().cloned().collect();
            (state.run.clone(), waits)
        };
        let keys = waits.iter().map(|wait| wait.key.clone()).collect();
        let mut write = DurableWrite::new(self.run_id.clone());
        write.run = Some(run);
        write.entries = waits;
        crate::fault::point("before_pause", &self.run_id);
        self.write(write).await?;
        crate::fault::point("after_pause", &self.run_id);
        Ok(keys)
    }

    /// The first recorded entry this attempt never asked for (in journal order), if any:
    /// a body that no longer asks for it is not deterministic.
    pub(crate) fn first_unconsumed(&self) -> Option<JournalEntry> {
        let state = self.lock();
        state
            .recorded
            .values()
            .filter(|entry| !state.consumed.contains(&entry.key))
            .min_by(|a, b| (&a.scope, a.position).cmp(&(&b.scope, b.position)))
            .cloned()
    }
}

impl JournalScope {
    /// Allocates the next key for `name` in this scope.
    pub(crate) fn allocate(&self, kind: EntryKind, name: &str) -> Slot {
        let mut state = self.journal.lock();
        let counter = state.counters.entry(self.path.to_string()).or_default();
        let position = counter.next_position;
        counter.next_position += 1;
        let occurrence = counter.names.entry(name.to_owned()).or_insert(0);
        *occurrence += 1;
        let key = if self.path.is_empty() {
            format!("{name}#{occurrence}")
        } else {
            format!("{}/{name}#{occurrence}", self.path)
        };
        Slot {
            journal: Arc::clone(&self.journal),
            scope: self.path.to_string(),
            key,
            position,
            kind,
        }
    }
}

impl Slot {
    /// The scope of the entries made inside this one (a member's model calls, a tool's
    /// member run).
    pub(crate) fn child(&self) -> JournalScope {
        JournalScope {
            journal: Arc::clone(&self.journal),
            path: Arc::from(self.key.as_str()),
        }
    }

    /// The journal.
    pub(crate) fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Marks this slot's work in flight until the guard drops.
    pub(crate) fn busy(&self) -> Busy {
        self.journal.busy(&self.key)
    }

    /// The nondeterminism error at this slot; the run is poisoned with it too, so that a
    /// body that swallows it still fails.
    fn non_deterministic(&self, recorded: String, asked: String) -> Error {
        let error = || {
            Error::Durable(DurableError::NonDeterministic {
                run_id: self.journal.run_id.clone(),
                key: self.key.clone(),
                recorded: recorded.clone(),
                asked: asked.clone(),
            })
        };
        self.journal.poison(error());
        error()
    }

    /// The recorded entry of this slot, if an earlier attempt finished it; an entry of
    /// another kind, place or input here is a [`DurableError::NonDeterministic`].
    pub(crate) fn replay(&self, input_hash: &str) -> Result<Option<JournalEntry>> {
        match self.check(input_hash) {
            Ok(found) => Ok(found),
            Err((recorded, asked)) => Err(self.non_deterministic(recorded, asked)),
        }
    }

    /// [`replay`](Slot::replay) without the error: what the journal holds and what was
    /// asked, when they differ.
    fn check(
        &self,
        input_hash: &str,
    ) -> std::result::Result<Option<JournalEntry>, (String, String)> {
        let mut state = self.journal.lock();
        if let Some(entry) = state.recorded.get(&self.key) {
            if entry.kind != self.kind || entry.position != self.position {
                return Err((
                    format!(
                        "a {} at position {} of its scope",
                        entry.kind.as_str(),
                        entry.position
                    ),
                    format!("a {} at position {}", self.kind.as_str(), self.position),
                ));
            }
            if entry.input_hash != input_hash {
                return Err((
                    format!("input hash {}", entry.input_hash),
                    format!("input hash {input_hash}"),
                ));
            }
            let entry = entry.clone();
            state.consumed.insert(self.key.clone());
            if entry.status == EntryStatus::Done {
                // A member run or a tool call replayed whole: what ran inside it is not
                // asked for again, and that is not a change.
                let prefix = format!("{}/", self.key);
                let inner: Vec<String> = state
                    .recorded
                    .keys()
                    .filter(|key| key.starts_with(&prefix))
                    .cloned()
                    .collect();
                state.consumed.extend(inner);
            }
            return Ok(Some(entry));
        }
        if let Some(other) = state.at.get(&(self.scope.clone(), self.position)) {
            return Err((
                format!("`{other}` at this point"),
                format!("`{}`", self.key),
            ));
        }
        state.consumed.insert(self.key.clone());
        Ok(None)
    }

    /// A new entry of this slot.
    pub(crate) fn entry(&self, status: EntryStatus, input_hash: String) -> JournalEntry {
        let now = now_millis();
        JournalEntry {
            key: self.key.clone(),
            scope: self.scope.clone(),
            position: self.position,
            kind: self.kind,
            status,
            input_hash,
            output: None,
            error: None,
            wait: None,
            attempt: self.journal.attempt,
            created_at: now,
            updated_at: now,
        }
    }

    /// Records what this slot's work returned (with the events so far, and `session`, a
    /// member's session write, in the same transaction) before the caller sees it.
    pub(crate) async fn record(
        &self,
        input_hash: String,
        outcome: std::result::Result<Value, String>,
        session: Option<SessionWrite>,
    ) -> Result<Option<Session>> {
        let mut entry = self.entry(EntryStatus::Done, input_hash);
        match outcome {
            Ok(output) => entry.output = Some(output),
            Err(error) => entry.error = Some(error),
        }
        let mut write = DurableWrite::new(self.journal.run_id.clone());
        write.entries.push(entry);
        write.session = session;
        self.journal.write(write).await
    }

    /// Records that this wait expired.
    pub(crate) async fn expire(&self, mut entry: JournalEntry) -> Result<()> {
        entry.status = EntryStatus::Expired;
        entry.updated_at = now_millis();
        let mut write = DurableWrite::new(self.journal.run_id.clone());
        write.entries.push(entry);
        self.journal.write(write).await.map(drop)
    }

    /// Registers this wait as one the run is blocked on (stored as pending when it pauses).
    pub(crate) fn block(&self, entry: JournalEntry) {
        self.journal.lock().waiting.insert(self.key.clone(), entry);
    }

    /// No longer blocked on this wait (its future was dropped).
    pub(crate) fn unblock(&self) {
        let mut state = self.journal.lock();
        if !state.pausing {
            state.waiting.remove(&self.key);
        }
    }
}

/// Checks a durable write's fence against the stored run: the one rule every backend
/// applies before it writes anything.
pub fn check_fence(
    run_id: &str,
    fence: Fence,
    stored: Option<&DurableRun>,
) -> std::result::Result<(), crate::StorageError> {
    let fenced = |what: String| crate::StorageError::Fenced {
        run_id: run_id.to_owned(),
        what,
    };
    let Some(run) = stored else {
        return Err(fenced("no such run".into()));
    };
    if run.attempt != fence.attempt {
        return Err(fenced(format!(
            "attempt {}, expected {}",
            run.attempt, fence.attempt
        )));
    }
    if let Some(status) = fence.status
        && run.status != status
    {
        return Err(fenced(format!(
            "status {}, expected {}",
            run.status.as_str(),
            status.as_str()
        )));
    }
    Ok(())
}

/// A stable hash of a JSON value, hex: FNV-1a over its serialization, whose object keys
/// are sorted (serde_json's map is ordered), so equal values hash equal in every process
/// and every version. Written here because std's hashers promise no stability across
/// releases and this needs sixteen lines, not a crate.
pub(crate) fn hash_value(value: &impl serde::Serialize) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut hash = OFFSET;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:016x}")
}
