//! [`FaultyStorage`]: a storage wrapper that counts operations and fails or slows them on
//! demand.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{StorageError, StorageErrorKind};
use crate::run::RunRecord;
use crate::session::{Session, SessionKey, SessionQuery, SessionWrite};
use crate::storage::{IntoStorage, ReadOptions, Storage, StorageResult};

/// A storage operation, as [`FaultyStorage`] counts and fails them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Storage::read`].
    Read,
    /// [`Storage::commit`].
    Commit,
    /// [`Storage::runs`].
    Runs,
    /// [`Storage::list_sessions`].
    List,
    /// [`Storage::delete_session`].
    Delete,
}

impl Operation {
    const ALL: [Operation; 5] = [
        Operation::Read,
        Operation::Commit,
        Operation::Runs,
        Operation::List,
        Operation::Delete,
    ];

    /// The operation's name, as in the errors it fails with (`read`, `commit`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Commit => "commit",
            Operation::Runs => "runs",
            Operation::List => "list_sessions",
            Operation::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        match self {
            Operation::Read => 0,
            Operation::Commit => 1,
            Operation::Runs => 2,
            Operation::List => 3,
            Operation::Delete => 4,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which calls of an operation fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Only call `n` (counting from 1).
    Nth(usize),
    /// Call `n` and every one after it.
    From(usize),
}

impl Rule {
    fn fails(self, call: usize) -> bool {
        match self {
            Rule::Nth(n) => call == n,
            Rule::From(n) => call >= n,
        }
    }
}

#[derive(Debug, Default)]
struct Plan {
    failures: HashMap<Operation, Rule>,
    delays: HashMap<Operation, Duration>,
}

#[derive(Debug, Default)]
struct Shared {
    calls: [AtomicUsize; 5],
    plan: Mutex<Plan>,
}

/// The error inside a failure injected by [`FaultyStorage`] (the source of its
/// [`StorageError::Database`], of kind [`StorageErrorKind::Unavailable`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("injected failure of {operation} call #{call}")]
pub struct InjectedFault {
    /// The operation that failed.
    pub operation: Operation,
    /// Which call of it failed (counting from 1).
    pub call: usize,
}

/// A storage that wraps another, counts every operation, and fails or slows operations on
/// demand: the failing storage for tests of what a workflow, agent or team does when its
/// database misbehaves.
///
/// - counts: [`reads`](Self::reads), [`commits`](Self::commits), [`run_reads`](Self::run_reads),
///   [`lists`](Self::lists), [`deletes`](Self::deletes) (every call, failed ones included);
/// - failures: [`fail_commit`](Self::fail_commit) (the `n`th commit only),
///   [`fail_commits_from`](Self::fail_commits_from) (the `n`th and every later one),
///   [`fail_reads`](Self::fail_reads), and [`fail_nth`](Self::fail_nth) /
///   [`fail_from`](Self::fail_from) for any [`Operation`]; a failed call does not reach the
///   wrapped storage and returns a [`StorageError::Database`] of kind
///   [`StorageErrorKind::Unavailable`] whose source is an [`InjectedFault`];
/// - delays: [`delay`](Self::delay) sleeps before an operation (on the tokio timer).
///
/// Clones share the counters and the faults, so a test keeps a clone to look at the counts
/// or to change the faults after handing the storage over; [`heal`](Self::heal) removes
/// every fault. `create`, `upgrade_schema` and `drop_tables` are passed through as they are.
///
/// ```
/// # extern crate buddy_core as buddy;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use buddy::session::{SessionKey, SessionKind, SessionWrite};
/// use buddy::storage::{MemoryStorage, ReadOptions, Storage};
/// use buddy::testing::FaultyStorage;
/// use buddy::StorageErrorKind;
///
/// let storage = FaultyStorage::new(MemoryStorage::new()).fail_commit(2);
/// let key = SessionKey::new("s1", SessionKind::Workflow);
/// storage.commit(SessionWrite::new(key.clone())).await.unwrap();
/// let error = storage.commit(SessionWrite::new(key.clone())).await.unwrap_err();
/// assert_eq!(error.kind(), StorageErrorKind::Unavailable);
/// storage.commit(SessionWrite::new(key.clone())).await.unwrap();
///
/// let session = storage.read(&key, &ReadOptions::default()).await.unwrap().unwrap();
/// assert_eq!(session.version, 2, "the failed commit never reached the store");
/// assert_eq!((storage.commits(), storage.reads()), (3, 1));
/// # });
/// ```
#[derive(Clone)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    shared: Arc<Shared>,
}

impl FaultyStorage {
    /// Wraps `inner`, with no faults yet.
    pub fn new(inner: impl IntoStorage) -> Self {
        FaultyStorage {
            inner: inner.into_storage(),
            shared: Arc::default(),
        }
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // The plan is a pair of maps updated in one step: a panic elsewhere cannot leave it
        // half-changed.
        self.shared
            .plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails call `n` of `operation` (counting from 1, among all calls so far) and no other.
    pub fn fail_nth(self, operation: Operation, n: usize) -> Self {
        self.plan().failures.insert(operation, Rule::Nth(n));
        self
    }

    /// Fails call `n` of `operation` (counting from 1) and every later one; `n` of 0 or 1
    /// fails every call.
    pub fn fail_from(self, operation: Operation, n: usize) -> Self {
        self.plan().failures.insert(operation, Rule::From(n));
        self
    }

    /// Fails the `n`th commit (counting from 1) only.
    pub fn fail_commit(self, n: usize) -> Self {
        self.fail_nth(Operation::Commit, n)
    }

    /// Fails the `n`th commit (counting from 1) and every later one:
    /// `fail_commits_from(1)` fails every commit.
    pub fn fail_commits_from(self, n: usize) -> Self {
        self.fail_from(Operation::Commit, n)
    }

    /// Fails every read of a session and of its runs ([`Storage::read`] and
    /// [`Storage::runs`]) from now on.
    pub fn fail_reads(self) -> Self {
        let reads = self.reads() + 1;
        let runs = self.run_reads() + 1;
        self.fail_from(Operation::Read, reads)
            .fail_from(Operation::Runs, runs)
    }

    /// Sleeps for `delay` before every call of `operation` (a zero delay removes it).
    pub fn delay(self, operation: Operation, delay: Duration) -> Self {
        {
            let mut plan = self.plan();
            if delay.is_zero() {
                plan.delays.remove(&operation);
            } else {
                plan.delays.insert(operation, delay);
            }
        }
        self
    }

    /// Removes every failure and delay; the counts stay.
    pub fn heal(&self) {
        let mut plan = self.plan();
        plan.failures.clear();
        plan.delays.clear();
    }

    /// How many times `operation` was called, failed calls included.
    pub fn count(&self, operation: Operation) -> usize {
        self.shared.calls[operation.index()].load(Ordering::SeqCst)
    }

    /// How many reads ([`Storage::read`]) were made.
    pub fn reads(&self) -> usize {
        self.count(Operation::Read)
    }

    /// How many commits were made.
    pub fn commits(&self) -> usize {
        self.count(Operation::Commit)
    }

    /// How many reads of runs ([`Storage::runs`]) were made (not `runs`, which would hide
    /// the trait method).
    pub fn run_reads(&self) -> usize {
        self.count(Operation::Runs)
    }

    /// How many lists ([`Storage::list_sessions`]) were made.
    pub fn lists(&self) -> usize {
        self.count(Operation::List)
    }

    /// How many deletes were made.
    pub fn deletes(&self) -> usize {
        self.count(Operation::Delete)
    }

    /// Counts a call of `operation`, waits its delay, and fails it if the plan says so.
    async fn enter(&self, operation: Operation) -> StorageResult<()> {
        let call = self.shared.calls[operation.index()].fetch_add(1, Ordering::SeqCst) + 1;
        let (delay, rule) = {
            let plan = self.plan();
            (
                plan.delays.get(&operation).copied(),
                plan.failures.get(&operation).copied(),
            )
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if rule.is_some_and(|rule| rule.fails(call)) {
            return Err(StorageError::database_with_kind(
                operation.as_str(),
                StorageErrorKind::Unavailable,
                InjectedFault { operation, call },
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counts = f.debug_struct("FaultyStorage");
        counts.field("inner", &self.inner);
        for operation in Operation::ALL {
            counts.field(operation.as_str(), &self.count(operation));
        }
        counts.finish_non_exhaustive()
    }
}

#[async_trait]
impl Storage for FaultyStorage {
    async fn read(
        &self,
        key: &SessionKey,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        self.enter(Operation::Read).await?;
        self.inner.read(key, options).await
    }

    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        self.enter(Operation::Commit).await?;
        self.inner.commit(write).await
    }

    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        self.enter(Operation::Runs).await?;
        self.inner.runs(key, limit).await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        self.enter(Operation::List).await?;
        self.inner.list_sessions(query).await
    }

    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        self.enter(Operation::Delete).await?;
        self.inner.delete_session(key).await
    }

    async fn create(&self) -> StorageResult<()> {
        self.inner.create().await
    }

    async fn upgrade_schema(&self) -> StorageResult<()> {
        self.inner.upgrade_schema().await
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        self.inner.drop_tables().await
    }
}
