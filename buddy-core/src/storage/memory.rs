use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{ReadOptions, Storage, StorageResult};
use crate::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use crate::error::StorageError;
use crate::run::{RunRecord, now_millis};
use crate::session::{Session, SessionKey, SessionQuery, SessionWrite};

/// Sessions kept in process memory: for tests, demos and short-lived processes.
///
/// Clones share the same sessions. Operations hold a mutex for the time of a map update, so
/// concurrent commits are applied one after the other and nothing is lost.
///
/// ```
/// # extern crate buddy_core as buddy;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use buddy::session::{SessionKey, SessionKind, SessionWrite};
/// use buddy::storage::{MemoryStorage, ReadOptions, Storage};
///
/// let storage = MemoryStorage::new();
/// let key = SessionKey::new("s1", SessionKind::Workflow);
/// storage.commit(SessionWrite::new(key.clone())).await.unwrap();
/// assert!(storage.read(&key, &ReadOptions::default()).await.unwrap().is_some());
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionKey, Entry>,
    durable: HashMap<String, Durable>,
}

/// A durable run with its journal (by key) and its events (in order).
#[derive(Debug, Default)]
struct Durable {
    run: DurableRun,
    entries: BTreeMap<String, crate::durable::JournalEntry>,
    events: Vec<StoredEvent>,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    runs: Vec<RunRecord>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write: every update
        // below builds the new entry first and inserts it in one step.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn recent(runs: &[RunRecord], limit: Option<usize>) -> Vec<RunRecord> {
    let start = limit.map_or(0, |limit| runs.len().saturating_sub(limit));
    runs[start..].to_vec()
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn read(
        &self,
        key: &SessionKey,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        let map = self.lock();
        let Some(entry) = map.sessions.get(key) else {
            return Ok(None);
        };
        if options
            .user_id
            .as_ref()
            .is_some_and(|user| entry.session.user_id.as_ref() != Some(user))
        {
            return Ok(None);
        }
        let mut session = entry.session.clone();
        session.runs = recent(&entry.runs, Some(options.recent_runs));
        Ok(Some(session))
    }

    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        Ok(commit(&mut self.lock().sessions, &write))
    }

    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        Ok(self
            .lock()
            .sessions
            .get(key)
            .map(|entry| recent(&entry.runs, limit))
            .unwrap_or_default())
    }

    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        let map = self.lock();
        let mut sessions: Vec<Session> = map
            .sessions
            .values()
            .filter(|entry| query.matches(&entry.session))
            .map(|entry| entry.session.clone())
            .collect();
        // The order every backend gives: newest first, then by key (strings byte-wise).
        sessions.sort_by(|a, b| a.list_position().cmp(&b.list_position()));
        if let Some(limit) = query.limit {
            sessions.truncate(limit);
        }
        Ok(sessions)
    }

    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        self.lock().sessions.retain(|stored, _| !key.covers(stored));
        Ok(())
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        let mut inner = self.lock();
        inner.sessions.clear();
        inner.durable.clear();
        Ok(())
    }

    fn supports_durable(&self) -> bool {
        true
    }

    async fn write_durable(&self, write: DurableWrite) -> StorageResult<Option<Session>> {
        let mut inner = self.lock();
        let Inner { sessions, durable } = &mut *inner;
        if let Some(fence) = write.fence {
            let run = durable.get(&write.run_id).map(|stored| &stored.run);
            crate::durable::check_fence(&write.run_id, fence, run)?;
        }
        let existing = durable.get(&write.run_id);
        let last = existing
            .and_then(|stored| stored.events.last())
            .map_or(0, |event| event.seq);
        let mut next = last;
        for event in &write.events {
            if Some(event.seq) != next.checked_add(1) {
                return Err(StorageError::database_with_kind(
                    "write_durable",
                    crate::StorageErrorKind::Conflict,
                    format!(
                        "event {} of run `{}` does not follow event {next}",
                        event.seq, write.run_id
                    ),
                ));
            }
            next = event.seq;
        }
        if existing.is_none() && write.run.is_none() {
            return Err(StorageError::Fenced {
                run_id: write.run_id.clone(),
                what: "no such run".into(),
            });
        }
        // Checked above: nothing below fails, so the write is all or nothing.
        let session = write
            .session
            .as_ref()
            .map(|session| commit(sessions, session));
        let stored = durable.entry(write.run_id.clone()).or_default();
        if let Some(mut run) = write.run {
            run.run_id.clone_from(&write.run_id);
            stored.run = run;
        }
        for entry in write.entries {
            stored.entries.insert(entry.key.clone(), entry);
        }
        let run_id = &write.run_id;
        stored
            .events
            .extend(write.events.into_iter().map(|mut event| {
                event.run_id.clone_from(run_id);
                event
            }));
        Ok(session)
    }

    async fn load_durable(&self, run_id: &str) -> StorageResult<Option<DurableState>> {
        Ok(self.lock().durable.get(run_id).map(|stored| DurableState {
            run: stored.run.clone(),
            entries: stored.entries.values().cloned().collect(),
            last_seq: stored.events.last().map_or(0, |event| event.seq),
        }))
    }

    async fn durable_runs(&self, query: &DurableQuery) -> StorageResult<Vec<DurableRun>> {
        let inner = self.lock();
        let mut runs: Vec<DurableRun> = inner
            .durable
            .values()
            .map(|stored| &stored.run)
            .filter(|run| query.matches(run))
            .cloned()
            .collect();
        runs.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.run_id.cmp(&b.run_id))
        });
        if let Some(limit) = query.limit {
            runs.truncate(limit);
        }
        Ok(runs)
    }

    async fn read_events(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<StoredEvent>> {
        let inner = self.lock();
        let Some(stored) = inner.durable.get(run_id) else {
            return Ok(Vec::new());
        };
        let start = stored.events.partition_point(|event| event.seq <= after);
        Ok(stored.events[start..].iter().take(limit).cloned().collect())
    }

    async fn prune_durable(&self, ended_before: i64) -> StorageResult<u64> {
        let mut inner = self.lock();
        let before = inner.durable.len();
        inner.durable.retain(|_, stored| {
            !(stored.run.is_finished() && stored.run.ended_at.is_some_and(|at| at < ended_before))
        });
        Ok((before - inner.durable.len()) as u64)
    }
}

/// Applies a session write to the map: the session merged, its run appended.
fn commit(sessions: &mut HashMap<SessionKey, Entry>, write: &SessionWrite) -> Session {
    let key = write.key();
    let existing = sessions.remove(&key);
    let (previous, mut runs) = match existing {
        Some(entry) => (Some(entry.session), entry.runs),
        None => (None, Vec::new()),
    };
    let session = Session::apply_write(previous, write, now_millis());
    if let Some(run) = &write.run {
        runs.push(run.clone());
    }
    sessions.insert(
        key,
        Entry {
            session: session.clone(),
            runs,
        },
    );
    session
}
