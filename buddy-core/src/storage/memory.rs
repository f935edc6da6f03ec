use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{ReadOptions, Storage, StorageResult};
use crate::run::{RunRecord, now_millis};
use crate::session::{Session, SessionQuery, SessionWrite};

/// Sessions kept in process memory: for tests, demos and short-lived processes.
///
/// Clones share the same sessions. Operations hold a mutex for the time of a map update, so
/// concurrent commits are applied one after the other and nothing is lost.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use buddy_core::session::{SessionKind, SessionWrite};
/// use buddy_core::storage::{MemoryStorage, ReadOptions, Storage};
///
/// let storage = MemoryStorage::new();
/// let write = SessionWrite { session_id: "s1".into(), kind: SessionKind::Workflow, ..Default::default() };
/// storage.commit(write).await.unwrap();
/// assert!(storage.read("s1", &ReadOptions::default()).await.unwrap().is_some());
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
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
        session_id: &str,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        let map = self.lock();
        let Some(entry) = map.get(session_id) else {
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
        let mut map = self.lock();
        let existing = map.remove(&write.session_id);
        let (previous, mut runs) = match existing {
            Some(entry) => (Some(entry.session), entry.runs),
            None => (None, Vec::new()),
        };
        let session = Session::apply_write(previous, &write, now_millis());
        if let Some(run) = &write.run {
            runs.push(run.clone());
        }
        map.insert(
            write.session_id.clone(),
            Entry {
                session: session.clone(),
                runs,
            },
        );
        Ok(session)
    }

    async fn upsert(&self, session: &Session) -> StorageResult<Session> {
        let mut map = self.lock();
        let now = now_millis();
        let mut stored = session.clone();
        stored.runs.clear();
        stored.updated_at = now;
        let runs = match map.remove(&session.session_id) {
            Some(entry) => {
                stored.created_at = entry.session.created_at;
                stored.version = entry.session.version + 1;
                stored.run_count = entry.session.run_count;
                stored.updated_at = now.max(entry.session.updated_at);
                entry.runs
            }
            None => {
                stored.created_at = now;
                stored.version = 1;
                stored.run_count = 0;
                Vec::new()
            }
        };
        map.insert(
            session.session_id.clone(),
            Entry {
                session: stored.clone(),
                runs,
            },
        );
        Ok(stored)
    }

    async fn runs(&self, session_id: &str, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        Ok(self
            .lock()
            .get(session_id)
            .map(|entry| recent(&entry.runs, limit))
            .unwrap_or_default())
    }

    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        let map = self.lock();
        let mut sessions: Vec<Session> = map
            .values()
            .filter(|entry| query.matches(&entry.session))
            .map(|entry| entry.session.clone())
            .collect();
        sessions.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| b.session_id.cmp(&a.session_id))
        });
        if let Some(limit) = query.limit {
            sessions.truncate(limit);
        }
        Ok(sessions)
    }

    async fn delete_session(&self, session_id: &str) -> StorageResult<()> {
        self.lock().remove(session_id);
        Ok(())
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        self.lock().clear();
        Ok(())
    }
}
