use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{ReadOptions, Storage, StorageResult};
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
    inner: Arc<Mutex<HashMap<SessionKey, Entry>>>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
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
        let Some(entry) = map.get(key) else {
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
        let key = write.key();
        let existing = map.remove(&key);
        let (previous, mut runs) = match existing {
            Some(entry) => (Some(entry.session), entry.runs),
            None => (None, Vec::new()),
        };
        let session = Session::apply_write(previous, &write, now_millis());
        if let Some(run) = &write.run {
            runs.push(run.clone());
        }
        map.insert(
            key,
            Entry {
                session: session.clone(),
                runs,
            },
        );
        Ok(session)
    }

    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        Ok(self
            .lock()
            .get(key)
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
        // The order every backend gives: newest first, then by key (strings byte-wise).
        sessions.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| b.session_id.cmp(&a.session_id))
                .then_with(|| a.kind.as_str().cmp(b.kind.as_str()))
                .then_with(|| a.scope.cmp(&b.scope))
        });
        if let Some(limit) = query.limit {
            sessions.truncate(limit);
        }
        Ok(sessions)
    }

    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        self.lock().retain(|stored, _| !key.covers(stored));
        Ok(())
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        self.lock().clear();
        Ok(())
    }
}
