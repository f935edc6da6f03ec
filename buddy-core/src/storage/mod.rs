//! Where sessions live: the [`Storage`] trait and the in-memory [`MemoryStorage`].
//!
//! SQLite and Postgres implementations live in the `buddy-storage` crate (re-exported by
//! `buddy` under features `sqlite` and `postgres`).

mod memory;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use crate::error::StorageError;
use crate::run::RunRecord;
use crate::session::{Session, SessionKey, SessionQuery, SessionWrite};

pub use memory::MemoryStorage;

/// `Result` of storage operations.
pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// How to read a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only return the session if it belongs to this user.
    pub user_id: Option<String>,
    /// How many of the most recent runs to load into [`Session::runs`].
    pub recent_runs: usize,
}

impl ReadOptions {
    /// Read the session with its `recent_runs` most recent runs.
    pub fn with_runs(recent_runs: usize) -> Self {
        ReadOptions {
            user_id: None,
            recent_runs,
        }
    }

    /// Only return the session if it belongs to `user_id`.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// A session store, shared by workflows, agents and teams.
///
/// One storage value stands for one table (plus its run table). A stored session is addressed
/// by its [`SessionKey`]: session id, owner kind and owner scope, so a workflow and its
/// members can share a storage value and a session id without overwriting each other. All
/// operations are atomic on their own, and [`commit`](Storage::commit) is the one that runs
/// use:
///
/// - it appends at most one run, so a write costs the same on a session's 10,000th run as on
///   its first (history is never rewritten);
/// - it merges the writer's [`StatePatch`](crate::session::StatePatch) into the stored state
///   inside one transaction, so two concurrent runs of one session never lose each other's
///   run records or state keys.
///
/// Implementations must pass the conformance suite `buddy_storage::conformance` (feature
/// `conformance` of `buddy-storage`), which runs every case against a fresh store.
#[async_trait]
pub trait Storage: fmt::Debug + Send + Sync {
    /// Reads a session with its most recent runs (oldest first); `None` if it does not exist
    /// or belongs to another user than `options.user_id`.
    async fn read(&self, key: &SessionKey, options: &ReadOptions)
    -> StorageResult<Option<Session>>;

    /// Applies `write` atomically (see [`Session::apply_write`]) and returns the session as
    /// stored afterwards, without runs.
    async fn commit(&self, write: SessionWrite) -> StorageResult<Session>;

    /// Whether a [`commit`](Storage::commit) completes even when its future is dropped
    /// after the first poll (the backend hands the write to a task of its own). When it
    /// does not (the default), runs commit in a spawned task, so that a run whose stream or
    /// future is dropped mid-write is still written; when it does, they save that task.
    fn commit_survives_drop(&self) -> bool {
        false
    }

    /// The `limit` most recent runs of a session (all when `None`), oldest first.
    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>>;

    /// Sessions that match `query`, without runs: the most recently updated first, then by
    /// session id (descending), kind and scope (ascending; strings compared byte-wise), so
    /// every backend gives the same order.
    ///
    /// A stored session that does not decode (a corrupt row) is left out of the listing
    /// rather than failing it: the other sessions are still listed, and the backend reports
    /// the skipped one (the SQL backends log a `tracing` warning naming the session and what
    /// is bad). Reading that session by its key still fails with
    /// [`StorageError::Corrupt`]. A listing with a `limit` can
    /// therefore return fewer sessions than the limit although more exist.
    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>>;

    /// Deletes a session and its runs, with the sessions of its members stored under it
    /// (see [`SessionKey::covers`]); a missing session is not an error.
    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()>;

    /// Creates the tables if they do not exist (done on first use anyway).
    async fn create(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Migrates tables written by an older version to the current schema.
    async fn upgrade_schema(&self) -> StorageResult<()> {
        Ok(())
    }

    /// Drops the tables and everything in them.
    async fn drop_tables(&self) -> StorageResult<()>;

    /// Whether this storage keeps durable runs (the methods below). The default is no:
    /// they fail with [`StorageError::Unsupported`].
    fn supports_durable(&self) -> bool {
        false
    }

    /// Applies `write` in one transaction, all or nothing. The checks, in this order:
    ///
    /// 1. the fence (a stored run that does not match, or none, fails with
    ///    [`StorageError::Fenced`]);
    /// 2. the events continue the stored log exactly (the first is the last stored seq + 1,
    ///    each next one + 1; a duplicate or a gap fails as a
    ///    [conflict](crate::StorageErrorKind::Conflict));
    /// 3. a write without the run's row for a run that is not stored fails with
    ///    [`StorageError::Fenced`] (`no such run`).
    ///
    /// Then the run's row is replaced, its journal entries are replaced by key, its events
    /// appended, and the session write committed as [`commit`](Storage::commit) does.
    /// Everything is stored under `write.run_id` (the run ids inside the row, the entries and
    /// the events are expected to equal it). Returns the session as stored after the session
    /// write, if there was one.
    async fn write_durable(&self, write: DurableWrite) -> StorageResult<Option<Session>> {
        let _ = write;
        Err(StorageError::Unsupported {
            operation: "durable runs",
        })
    }

    /// The durable run `run_id` with its journal and its last event's sequence number.
    async fn load_durable(&self, run_id: &str) -> StorageResult<Option<DurableState>> {
        let _ = run_id;
        Err(StorageError::Unsupported {
            operation: "durable runs",
        })
    }

    /// Durable runs matching `query`, the oldest first (then by run id). A stored run that
    /// does not decode is left out of the listing (and logged by the SQL backends), as in
    /// [`list_sessions`](Storage::list_sessions); loading it by id fails with
    /// [`StorageError::CorruptRun`].
    async fn durable_runs(&self, query: &DurableQuery) -> StorageResult<Vec<DurableRun>> {
        let _ = query;
        Err(StorageError::Unsupported {
            operation: "durable runs",
        })
    }

    /// The events of run `run_id` with a sequence number above `after`, in order, at most
    /// `limit`.
    async fn read_events(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<StoredEvent>> {
        let _ = (run_id, after, limit);
        Err(StorageError::Unsupported {
            operation: "durable runs",
        })
    }

    /// Deletes the durable runs that ended before `ended_before` (Unix milliseconds), with
    /// their journals and events; returns how many runs it deleted. Runs that have not
    /// ended are kept.
    async fn prune_durable(&self, ended_before: i64) -> StorageResult<u64> {
        let _ = ended_before;
        Err(StorageError::Unsupported {
            operation: "durable runs",
        })
    }
}

#[async_trait]
impl<S: Storage + ?Sized> Storage for Arc<S> {
    async fn read(
        &self,
        key: &SessionKey,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        (**self).read(key, options).await
    }
    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        (**self).commit(write).await
    }
    fn commit_survives_drop(&self) -> bool {
        (**self).commit_survives_drop()
    }
    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        (**self).runs(key, limit).await
    }
    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        (**self).list_sessions(query).await
    }
    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        (**self).delete_session(key).await
    }
    async fn create(&self) -> StorageResult<()> {
        (**self).create().await
    }
    async fn upgrade_schema(&self) -> StorageResult<()> {
        (**self).upgrade_schema().await
    }
    async fn drop_tables(&self) -> StorageResult<()> {
        (**self).drop_tables().await
    }
    fn supports_durable(&self) -> bool {
        (**self).supports_durable()
    }
    async fn write_durable(&self, write: DurableWrite) -> StorageResult<Option<Session>> {
        (**self).write_durable(write).await
    }
    async fn load_durable(&self, run_id: &str) -> StorageResult<Option<DurableState>> {
        (**self).load_durable(run_id).await
    }
    async fn durable_runs(&self, query: &DurableQuery) -> StorageResult<Vec<DurableRun>> {
        (**self).durable_runs(query).await
    }
    async fn read_events(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<StoredEvent>> {
        (**self).read_events(run_id, after, limit).await
    }
    async fn prune_durable(&self, ended_before: i64) -> StorageResult<u64> {
        (**self).prune_durable(ended_before).await
    }
}

/// Applies `write` so that a run dropped while its write is in flight (a stream dropped, a
/// timeout) is still written: directly when the backend guarantees that itself
/// ([`Storage::commit_survives_drop`]), else as its own task on the current tokio runtime
/// (inline without one). A panic inside a spawned commit becomes a database error.
pub(crate) async fn commit_detached(
    storage: &Arc<dyn Storage>,
    write: SessionWrite,
) -> StorageResult<Session> {
    if storage.commit_survives_drop() {
        return storage.commit(write).await;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let storage = Arc::clone(storage);
            runtime
                .spawn(async move { storage.commit(write).await })
                .await
                .map_err(|error| StorageError::database("commit", error))?
        }
        Err(_) => storage.commit(write).await,
    }
}

/// Converts a storage value into the shared handle workflows, agents and teams hold.
pub trait IntoStorage {
    /// The shared handle.
    fn into_storage(self) -> Arc<dyn Storage>;
}

impl<S: Storage + 'static> IntoStorage for S {
    fn into_storage(self) -> Arc<dyn Storage> {
        Arc::new(self)
    }
}
