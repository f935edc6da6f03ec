//! The writer: one task per store that talks to the database file for every operation.
//!
//! # Why a task of its own
//!
//! sqlx runs each SQLite connection on a worker thread and every statement is a hand-off to
//! that thread and back. A commit that reads the session, merges the write in Rust and
//! writes it back costs two such trips, and concurrent commits queue for the write lock one
//! transaction at a time. The writer removes both costs:
//!
//! - **One trip per commit.** The writer remembers every session row it has read or written
//!   ([`Cache`]): a commit merges into that copy and sends one statement batch that updates
//!   the row only if it is still byte for byte what the writer saw (every column the merge
//!   reads is compared), appends the run and commits. Only when the row changed underneath
//!   (another process, another store on the same file) does the commit take the two-trip
//!   path, reading the row under the write lock. The result is the same either way: the
//!   merge of [`Session::apply_write`] on the stored row.
//! - **Group commit.** Commits that queued while the writer was busy go into one
//!   transaction. Each caller gets its own result; if anything in the group fails, the group
//!   is rolled back and every commit of it runs again on its own, so one bad write never
//!   takes another's with it. Durable writes (a run's journal entries and events) are
//!   grouped the same way, with the commits queued beside them.
//! - **One trip per journal write.** A durable write is one batch whose first statement
//!   fails unless the run's fence holds and its events follow the stored log; only a
//!   refused write reads the run under the write lock, to say why.
//! - **One connection.** Every operation goes through the writer's connection (the pool of
//!   [`SqliteStorage::open`](super::SqliteStorage::open) holds exactly one), so SQLite's page
//!   cache stays valid from one transaction to the next.
//! - **Checkpoints off the commit path.** The writer's connection does not checkpoint
//!   ([`Checkpointer`]): the commit that fills the write-ahead log does not wait for it to
//!   be copied into the database file.
//! - **No task per commit.** A job handed to the writer completes even if the caller's
//!   future is dropped right after, so the engine need not spawn a task to protect a run's
//!   record from a dropped stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use buddy_core::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use buddy_core::run::{RunRecord, now_millis};
use buddy_core::session::{Session, SessionKey, SessionQuery, SessionWrite};
use buddy_core::storage::{ReadOptions, StorageResult};
use buddy_core::{StorageError, StorageErrorKind};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqliteRow,
};
use sqlx::{ConnectOptions, Connection};
use sqlx::{FromRow, Row, Sqlite};
use tokio::sync::{Notify, mpsc, oneshot};

use super::sql::{Sql, Writes};
use super::upgrade;
use crate::cache::{Cache, Seen};
use crate::codec::{
    EncodedSession, SessionRow, Text, check_run_count, decode_run, decode_runs, encode_run,
    row_error, skip_corrupt, sql_limit,
};
use crate::durable::{self as dur, EncodedWrite, StoredFence, WRITE};
use crate::error::db;
use crate::lane::Lane;
use crate::migrate::Layout;

/// SQLite stores NUL in text as it is.
pub(super) const TEXT: Text = Text::Raw;

/// How many times a transaction is retried when SQLite still reports the database busy
/// (after the connection's busy timeout).
const BUSY_RETRIES: u32 = 5;

/// The most commits one group transaction takes.
const MAX_GROUP: usize = 256;

/// Evaluates `attempt` (an expression ending in `.await`) again while SQLite reports the
/// database busy or locked (after the busy timeout); every attempt is a whole transaction,
/// so a retry cannot apply twice. (A macro: async closures borrowing the connection do not
/// yet make `Send` futures.)
macro_rules! retry_busy {
    ($attempt:expr) => {{
        let mut tries = 0;
        loop {
            match $attempt {
                Err(error) if tries < BUSY_RETRIES && error.is_busy() => {
                    tries += 1;
                    tracing::debug!(tries, "sqlite database busy; retrying the transaction");
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                }
                result => break result,
            }
        }
    }};
}

/// How long the checkpointer lets commits gather before it copies them into the database
/// file.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(100);

/// Copies the write-ahead log into the database file beside the writer, not inside a commit.
///
/// SQLite's automatic checkpoint runs inside the commit that takes the log past 1,000 pages:
/// that commit waits while the log is copied and the database file synced (several
/// milliseconds; in the server bench every fortieth run or so, which set its p99). The
/// writer's own connection turns it off (`wal_autocheckpoint=0`, set by
/// [`SqliteStorage::open`](super::SqliteStorage::open)) and this task runs a passive
/// checkpoint on a connection of the pool shortly after writes, while the writer goes on
/// appending to the log. A passive checkpoint never waits for a lock: one that cannot copy
/// everything (a reader still needs old pages, another process checkpoints) leaves the rest
/// to the next. It stops with the writer.
struct Checkpointer {
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(pool: SqlitePool) -> Self {
        let wake = Arc::new(Notify::new());
        let woken = Arc::clone(&wake);
        let task = tokio::spawn(async move {
            loop {
                woken.notified().await;
                tokio::time::sleep(CHECKPOINT_AFTER).await;
                if pool.is_closed() {
                    return;
                }
                if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(%error, "sqlite checkpoint failed; the next write tries again");
                }
            }
        });
        Checkpointer { wake, task }
    }

    /// Something was written: checkpoint soon (once for all the writes until then).
    fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One table of the store: its name and its statements.
pub(super) struct Table {
    pub(super) name: String,
    pub(super) sql: Sql,
}

type Reply<T> = oneshot::Sender<StorageResult<T>>;

/// What the writer is asked to do.
// Commits are the common job and move once, into the channel: boxing them would cost an
// allocation each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
    /// A commit or a durable write, grouped with the ones queued behind it.
    Commit(Commit),
    /// Stop after the jobs before this one.
    Close(oneshot::Sender<()>),
    /// Anything else, one at a time.
    Op(Op),
}

/// The jobs that are not commits.
pub(super) enum Op {
    /// Create the table if needed, now (no one waits for it).
    Prepare(Arc<Table>),
    Read {
        table: Arc<Table>,
        key: SessionKey,
        options: ReadOptions,
        reply: Reply<Option<Session>>,
    },
    Runs {
        table: Arc<Table>,
        key: SessionKey,
        limit: Option<usize>,
        reply: Reply<Vec<RunRecord>>,
    },
    List {
        table: Arc<Table>,
        query: SessionQuery,
        reply: Reply<Vec<Session>>,
    },
    Delete {
        table: Arc<Table>,
        key: SessionKey,
        reply: Reply<()>,
    },
    Create {
        table: Arc<Table>,
        reply: Reply<()>,
    },
    Upgrade {
        table: Arc<Table>,
        reply: Reply<Layout>,
    },
    Drop {
        table: Arc<Table>,
        reply: Reply<()>,
    },
    LoadDurable {
        table: Arc<Table>,
        run_id: String,
        reply: Reply<Option<DurableState>>,
    },
    DurableRuns {
        table: Arc<Table>,
        query: DurableQuery,
        reply: Reply<Vec<DurableRun>>,
    },
    ReadEvents {
        table: Arc<Table>,
        run_id: String,
        after: u64,
        limit: usize,
        reply: Reply<Vec<StoredEvent>>,
    },
    Prune {
        table: Arc<Table>,
        ended_before: i64,
        reply: Reply<u64>,
    },
}

impl Op {
    /// Whether the job may write to the file.
    fn writes(&self) -> bool {
        !matches!(
            self,
            Op::Read { .. }
                | Op::Runs { .. }
                | Op::List { .. }
                | Op::LoadDurable { .. }
                | Op::DurableRuns { .. }
                | Op::ReadEvents { .. }
        )
    }
}

/// A write that may share a transaction with the ones queued behind it.
pub(super) struct Commit {
    table: Arc<Table>,
    write: Write,
}

// A commit is the common write and moves once, into the channel, unboxed (see `Job`).
#[allow(clippy::large_enum_variant)]
enum Write {
    /// A session commit.
    Session(SessionWrite, Reply<Session>),
    /// A durable write (with the session write it may carry). Boxed: a durable write is
    /// twice a commit's size, and one allocation is small beside its encoding.
    Durable(Box<DurableWrite>, Reply<Option<Session>>),
}

/// What a [`Write`] returned, before its caller is told.
enum Written {
    Session(Session),
    Durable(Option<Session>),
}

impl Commit {
    pub(super) fn job(table: Arc<Table>, write: SessionWrite, reply: Reply<Session>) -> Job {
        Job::Commit(Commit {
            table,
            write: Write::Session(write, reply),
        })
    }

    pub(super) fn durable_job(
        table: Arc<Table>,
        write: DurableWrite,
        reply: Reply<Option<Session>>,
    ) -> Job {
        Job::Commit(Commit {
            table,
            write: Write::Durable(Box::new(write), reply),
        })
    }

    /// The key of the session this write commits, if any.
    fn session_key(&self) -> Option<SessionKey> {
        match &self.write {
            Write::Session(write, _) => Some(write.key()),
            Write::Durable(write, _) => write.session.as_ref().map(SessionWrite::key),
        }
    }

    /// Tells the caller `result`.
    fn answer(self, result: StorageResult<Written>) {
        // Outcomes are made from their own writes, so the last two arms cannot happen.
        let mixed = || StorageError::database("commit", "a write's outcome was mixed up");
        let _ = match (self.write, result) {
            (Write::Session(_, reply), Ok(Written::Session(session))) => {
                reply.send(Ok(session)).map_err(drop)
            }
            (Write::Durable(_, reply), Ok(Written::Durable(session))) => {
                reply.send(Ok(session)).map_err(drop)
            }
            (Write::Session(_, reply), Err(error)) => reply.send(Err(error)).map_err(drop),
            (Write::Durable(_, reply), Err(error)) => reply.send(Err(error)).map_err(drop),
            (Write::Session(_, reply), Ok(Written::Durable(_))) => {
                reply.send(Err(mixed())).map_err(drop)
            }
            (Write::Durable(_, reply), Ok(Written::Session(_))) => {
                reply.send(Err(mixed())).map_err(drop)
            }
        };
    }
}

/// The store's way to its writer: starts one on the current runtime when there is none (on
/// first use, or when the runtime the last one ran on has shut down).
pub(super) struct WriterHandle {
    pool: SqlitePool,
    /// For a file: the writer's own connection until a writer takes it, and how to open
    /// another (for a writer started on a new runtime). `None`: the writer uses `pool`.
    own: Option<Own>,
    lane: Lane<Job>,
    /// Transactions begun for commits (a group counts once), for tests of grouping.
    transactions: Arc<AtomicUsize>,
    /// Durable writes that took the checked path, for tests of the one-trip path.
    checked: Arc<AtomicUsize>,
}

/// A writer's own connection, outside any pool.
struct Own {
    connection: Mutex<Option<SqliteConnection>>,
    options: SqliteConnectOptions,
}

impl WriterHandle {
    /// A writer on a connection of its own (`connection`, opened with `options`); `pool`
    /// serves [`SqliteStorage::pool`](super::SqliteStorage::pool) only.
    pub(super) fn own(
        pool: SqlitePool,
        connection: SqliteConnection,
        options: SqliteConnectOptions,
    ) -> Self {
        WriterHandle {
            pool,
            own: Some(Own {
                connection: Mutex::new(Some(connection)),
                options,
            }),
            lane: Lane::default(),
            transactions: Arc::default(),
            checked: Arc::default(),
        }
    }

    /// A writer that takes a connection of `pool` for each operation (or group of commits).
    pub(super) fn pooled(pool: SqlitePool) -> Self {
        WriterHandle {
            pool,
            own: None,
            lane: Lane::default(),
            transactions: Arc::default(),
            checked: Arc::default(),
        }
    }

    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Hands `job` to the writer.
    pub(super) fn send(&self, job: Job) -> StorageResult<()> {
        self.lane.send(job, |receiver| {
            if self.pool.is_closed() {
                return Err(closed());
            }
            let source = match &self.own {
                None => Source::Pool,
                Some(own) => Source::Own {
                    connection: lock(&own.connection).take(),
                    options: Box::new(own.options.clone()),
                },
            };
            let writer = Writer {
                pool: self.pool.clone(),
                source,
                tables: HashMap::new(),
                transactions: Arc::clone(&self.transactions),
                checked: Arc::clone(&self.checked),
            };
            Ok(writer.serve(receiver))
        })
    }

    /// Sends the job `make` builds and waits for its reply.
    pub(super) async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> StorageResult<T> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stops the writer after the jobs before this one and closes the connection.
    pub(super) async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Job::Close(reply)).is_ok() {
            let _ = done.await;
        }
        self.pool.close().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn closed() -> StorageError {
    StorageError::database_with_kind(
        "sqlite",
        buddy_core::StorageErrorKind::Unavailable,
        "the storage was closed",
    )
}

fn stopped() -> StorageError {
    StorageError::database_with_kind(
        "sqlite",
        buddy_core::StorageErrorKind::Unavailable,
        "the sqlite writer stopped before answering (its runtime shut down)",
    )
}

/// The writer task's state.
struct Writer {
    pool: SqlitePool,
    source: Source,
    tables: HashMap<String, TableState>,
    transactions: Arc<AtomicUsize>,
    checked: Arc<AtomicUsize>,
}

/// Where the writer's connection comes from.
enum Source {
    /// Its own, kept between jobs (`None` while a job holds it, or after it was lost).
    Own {
        connection: Option<SqliteConnection>,
        options: Box<SqliteConnectOptions>,
    },
    /// A connection of the pool for each job.
    Pool,
}

#[derive(Default)]
struct TableState {
    ready: bool,
    cache: Cache,
}

impl Writer {
    async fn serve(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        // Only the writer's own connection leaves checkpoints to it; a pool's connections
        // are as their owner configured them.
        let checkpointer = matches!(self.source, Source::Own { .. })
            .then(|| Checkpointer::start(self.pool.clone()));
        let wrote = || {
            if let Some(checkpointer) = &checkpointer {
                checkpointer.wake();
            }
        };
        let mut next = None;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None => match jobs.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            match job {
                Job::Commit(first) => {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match jobs.try_recv() {
                            Ok(Job::Commit(commit)) => group.push(commit),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(group).await;
                    wrote();
                }
                Job::Close(reply) => {
                    if let Source::Own { connection, .. } = &mut self.source
                        && let Some(connection) = connection.take()
                    {
                        let _ = connection.close().await;
                    }
                    self.pool.close().await;
                    let _ = reply.send(());
                    return;
                }
                Job::Op(op) => {
                    let writes = op.writes();
                    self.serve_one(op).await;
                    if writes {
                        wrote();
                    }
                }
            }
        }
    }

    /// The connection for one job: the writer's own (opened again if it was lost), or one of
    /// the pool. Handed back by [`Lease::done`]; a job dropped half-way (its runtime shut
    /// down, maybe inside a transaction) closes it instead, which rolls back.
    async fn lease(&mut self) -> StorageResult<Lease> {
        match &mut self.source {
            Source::Own {
                connection,
                options,
            } => {
                let connection = match connection.take() {
                    Some(connection) => connection,
                    None => options.connect().await.map_err(db("open"))?,
                };
                Ok(Lease::Own(Some(connection)))
            }
            Source::Pool => {
                let connection = self.pool.acquire().await.map_err(db("acquire"))?;
                Ok(Lease::Pooled(Some(connection)))
            }
        }
    }

    async fn serve_one(&mut self, op: Op) {
        let mut lease = match self.lease().await {
            Ok(lease) => lease,
            Err(error) => return fail(op, error),
        };
        let conn = lease.conn();
        match op {
            Op::Prepare(table) => {
                if let Err(error) = self.ensure(conn, &table).await {
                    tracing::debug!(table = %table.name, %error, "table not created yet");
                }
            }
            Op::Read {
                table,
                key,
                options,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(state) => read(conn, state, &table.sql, &key, &options).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::Runs {
                table,
                key,
                limit,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(_) => select_runs(conn, &table.sql, &key, limit).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::List {
                table,
                query,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(_) => list(conn, &table.sql, &query).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::Delete { table, key, reply } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(state) => {
                        state.cache.forget_covered(&key);
                        retry_busy!(delete(conn, &table.sql, &key).await)
                    }
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::Create { table, reply } => {
                let result = self.ensure(conn, &table).await.map(|_| ());
                let _ = reply.send(result);
            }
            Op::Upgrade { table, reply } => {
                self.tables.remove(&table.name);
                let result = retry_busy!(upgrade::run(conn, &table).await);
                let result = match result {
                    Ok(layout) => self.ensure(conn, &table).await.map(|_| layout),
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::Drop { table, reply } => {
                self.tables.remove(&table.name);
                let result = retry_busy!(drop_tables(conn, &table.sql).await);
                let _ = reply.send(result);
            }
            Op::LoadDurable {
                table,
                run_id,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(_) => load_durable(conn, &table.sql, &run_id).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::DurableRuns {
                table,
                query,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(_) => durable_runs(conn, &table.sql, &query).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::ReadEvents {
                table,
                run_id,
                after,
                limit,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(_) => read_events(conn, &table.sql, &run_id, after, limit).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Op::Prune {
                table,
                ended_before,
                reply,
            } => {
                let result = match self.ensure(conn, &table).await {
                    Ok(_) => retry_busy!(prune(conn, &table.sql, ended_before).await),
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
        }
        lease.done(self);
    }

    /// Creates `table` unless it is known to exist (in the current layout); its state.
    async fn ensure(
        &mut self,
        conn: &mut SqliteConnection,
        table: &Table,
    ) -> StorageResult<&mut TableState> {
        let ready = self
            .tables
            .get(&table.name)
            .is_some_and(|state| state.ready);
        if !ready {
            let columns: Vec<String> = sqlx::query_scalar(table.sql.table_columns.clone())
                .bind(&table.name)
                .fetch_all(&mut *conn)
                .await
                .map_err(db("create"))?;
            let layout = Layout::of(&columns);
            if layout.is_old() {
                return Err(layout.needs_upgrade(&table.name));
            }
            retry_busy!(create(conn, table).await)?;
        }
        let state = self.tables.entry(table.name.clone()).or_default();
        state.ready = true;
        Ok(state)
    }

    /// Applies a group of commits: in one transaction when there are several, each on its
    /// own if that fails.
    async fn commit(&mut self, group: Vec<Commit>) {
        let mut lease = match self.lease().await {
            Ok(lease) => lease,
            Err(error) => {
                let kind = error.kind();
                let message = error.to_string();
                for commit in group {
                    let error = StorageError::database_with_kind("commit", kind, message.clone());
                    commit.answer(Err(error));
                }
                return;
            }
        };
        let conn = lease.conn();
        let mut ready = Vec::with_capacity(group.len());
        for commit in group {
            match self.ensure(conn, &commit.table).await {
                Ok(_) => ready.push(commit),
                Err(error) => commit.answer(Err(error)),
            }
        }
        if ready.len() > 1 {
            match self.commit_group(conn, &ready).await {
                Ok(outcomes) => {
                    for (commit, outcome) in ready.into_iter().zip(outcomes) {
                        commit.answer(Ok(outcome));
                    }
                    lease.done(self);
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, commits = ready.len(), "group commit failed; committing one by one");
                }
            }
        }
        let checked = Arc::clone(&self.checked);
        for commit in ready {
            self.transactions.fetch_add(1, Ordering::Relaxed);
            let state = self.state(&commit.table);
            let sql = &commit.table.sql;
            let result = match &commit.write {
                Write::Session(write, _) => {
                    retry_busy!(commit_alone(conn, &mut state.cache, &sql.alone, write).await)
                        .map(Written::Session)
                }
                Write::Durable(write, _) => {
                    let cache = &mut state.cache;
                    retry_busy!(durable_write(conn, cache, sql, write, true, &checked).await)
                        .map(Written::Durable)
                }
            };
            commit.answer(result);
        }
        lease.done(self);
    }

    fn state(&mut self, table: &Table) -> &mut TableState {
        self.tables.entry(table.name.clone()).or_default()
    }

    /// The writes of `group` in one transaction; on any failure the transaction is rolled
    /// back (and what the cache learnt from it forgotten).
    async fn commit_group(
        &mut self,
        conn: &mut SqliteConnection,
        group: &[Commit],
    ) -> StorageResult<Vec<Written>> {
        retry_busy!(
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(db("commit"))
        )?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let mut outcomes = Vec::with_capacity(group.len());
        let mut failure = None;
        let checked = Arc::clone(&self.checked);
        for commit in group {
            let state = self.state(&commit.table);
            let sql = &commit.table.sql;
            let outcome = match &commit.write {
                Write::Session(write, _) => {
                    commit_one(conn, &mut state.cache, &sql.grouped, write, false)
                        .await
                        .map(Written::Session)
                }
                Write::Durable(write, _) => {
                    durable_write(conn, &mut state.cache, sql, write, false, &checked)
                        .await
                        .map(Written::Durable)
                }
            };
            match outcome {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if failure.is_none() {
            match sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
                Ok(_) => return Ok(outcomes),
                Err(error) => failure = Some(crate::error::database("commit", error)),
            }
        }
        rollback(&mut *conn).await;
        for commit in group {
            if let Some(key) = commit.session_key() {
                self.state(&commit.table).cache.forget(&key);
            }
        }
        Err(failure.unwrap_or_else(|| StorageError::database("commit", "group failed")))
    }
}

/// Answers `op` with `error` (its connection could not be had).
fn fail(op: Op, error: StorageError) {
    let _ = match op {
        Op::Prepare(_) => Ok(()),
        Op::Read { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::Runs { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::List { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::Delete { reply, .. } | Op::Create { reply, .. } | Op::Drop { reply, .. } => {
            reply.send(Err(error)).map_err(drop)
        }
        Op::Upgrade { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::LoadDurable { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::DurableRuns { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::ReadEvents { reply, .. } => reply.send(Err(error)).map_err(drop),
        Op::Prune { reply, .. } => reply.send(Err(error)).map_err(drop),
    };
}

/// A connection held for one job.
enum Lease {
    Own(Option<SqliteConnection>),
    Pooled(Option<PoolConnection<Sqlite>>),
}

impl Lease {
    fn conn(&mut self) -> &mut SqliteConnection {
        match self {
            Lease::Own(Some(connection)) => connection,
            Lease::Pooled(Some(connection)) => connection,
            Lease::Own(None) | Lease::Pooled(None) => {
                unreachable!("a lease holds its connection until `done`")
            }
        }
    }

    /// The job finished (no transaction open): the connection goes back to the writer, or
    /// to the pool.
    fn done(mut self, writer: &mut Writer) {
        match (&mut self, &mut writer.source) {
            (
                Lease::Own(connection),
                Source::Own {
                    connection: slot, ..
                },
            ) => {
                *slot = connection.take();
            }
            (Lease::Pooled(connection), _) => drop(connection.take()),
            (Lease::Own(_), Source::Pool) => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped before `done`: the writer's runtime shut down mid-job. A pooled connection
        // is closed rather than returned; an own one closes as it drops.
        if let Lease::Pooled(connection) = self
            && let Some(mut connection) = connection.take()
        {
            connection.close_on_drop();
        }
    }
}

/// Creates the tables of `table` in a transaction of their own.
async fn create(conn: &mut SqliteConnection, table: &Table) -> StorageResult<()> {
    let result = sqlx::raw_sql(table.sql.create_in_transaction.clone())
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(db("create"));
    if result.is_err() {
        rollback(conn).await;
    }
    result
}

/// A commit in a transaction of its own, rolled back if it fails.
async fn commit_alone(
    conn: &mut SqliteConnection,
    cache: &mut Cache,
    writes: &Writes,
    write: &SessionWrite,
) -> StorageResult<Session> {
    let result = commit_one(conn, cache, writes, write, true).await;
    if result.is_err() {
        rollback(conn).await;
    }
    result
}

/// Ends a failed transaction; harmless ("no transaction is active") if there is none.
async fn rollback(conn: &mut SqliteConnection) {
    let _ = sqlx::raw_sql("ROLLBACK").execute(conn).await;
}

/// One commit with the statements of `writes`: in one trip when the cache knows the row,
/// else (or when the row changed since) in two. Leaves a transaction open on error.
///
/// `alone`: the commit has its transaction to itself, so a failed one-trip attempt is
/// rolled back and the commit tried again in two trips, whose error (a corrupt row, say)
/// is the one that counts. In a group the error is returned as it is (the group is rolled
/// back and every commit of it tried alone).
async fn commit_one(
    conn: &mut SqliteConnection,
    cache: &mut Cache,
    writes: &Writes,
    write: &SessionWrite,
    alone: bool,
) -> StorageResult<Session> {
    let key = write.key();
    if let Some(seen) = cache.take(&key) {
        match one_trip(conn, writes, write, seen).await {
            Ok(Some((session, stored))) => {
                cache.remember(key, Seen::row(&session, stored));
                return Ok(session);
            }
            Ok(None) => {
                tracing::trace!(session_id = %write.session_id, "session changed since last seen; reading it");
            }
            Err(error) if alone => {
                tracing::debug!(session_id = %write.session_id, %error, "one-trip commit failed; reading the row");
                rollback(conn).await;
            }
            Err(error) => return Err(error),
        }
    }
    let (session, stored) = two_trips(conn, writes, write).await?;
    cache.remember(key, Seen::row(&session, stored));
    Ok(session)
}

/// The commit in one statement batch, if the row is still as `seen`: `None` (and nothing
/// written) if it is not.
async fn one_trip(
    conn: &mut SqliteConnection,
    writes: &Writes,
    write: &SessionWrite,
    seen: Seen,
) -> StorageResult<Option<(Session, EncodedSession)>> {
    let has_run = usize::from(write.run.is_some());
    let (existing, compared) = seen.split(TEXT);
    let statement = match compared {
        Some(_) => &writes.swap[has_run],
        None => &writes.insert[has_run],
    };
    let session = Session::apply_write(existing, write, now_millis());
    let stored = EncodedSession::new(&session, TEXT)?;
    let query = bind_write(sqlx::query(statement.clone()), &session, &stored);
    let mut query = bind_run(query, &session.session_id, write.run.as_ref())?;
    // `?18` to `?27`: the row as last seen.
    if let Some(compared) = compared {
        for number in compared.numbers {
            query = query.bind(number);
        }
        for text in compared.texts {
            query = query.bind(text);
        }
    }
    let row = query.fetch_one(&mut *conn).await.map_err(db("commit"))?;
    let applied: i64 = row.try_get("applied").map_err(db("commit"))?;
    Ok((applied == 1).then_some((session, stored)))
}

/// The commit in two trips: read the row under the write lock, merge, write.
async fn two_trips(
    conn: &mut SqliteConnection,
    writes: &Writes,
    write: &SessionWrite,
) -> StorageResult<(Session, EncodedSession)> {
    let has_run = usize::from(write.run.is_some());
    let row = sqlx::query(writes.read.clone())
        .bind(&write.session_id)
        .bind(write.kind.as_str())
        .bind(&write.scope)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("commit"))?;
    let existing = match row {
        Some(row) => {
            let session = decode_row(&row, "commit")?;
            let max_seq: Option<i64> = row
                .try_get("max_seq")
                .map_err(|error| row_error("commit", &session.session_id, error))?;
            check_run_count(&session, max_seq)?;
            Some(session)
        }
        None => None,
    };
    let session = Session::apply_write(existing, write, now_millis());
    let stored = EncodedSession::new(&session, TEXT)?;
    let query = bind_write(
        sqlx::query(writes.write[has_run].clone()),
        &session,
        &stored,
    );
    bind_run(query, &session.session_id, write.run.as_ref())?
        .execute(&mut *conn)
        .await
        .map_err(db("commit"))?;
    Ok((session, stored))
}

type Query = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// Binds `?1` to `?13`: the session row as written.
fn bind_write(query: Query, session: &Session, stored: &EncodedSession) -> Query {
    query
        .bind(session.session_id.clone())
        .bind(session.kind.as_str())
        .bind(session.scope.clone())
        .bind(session.component_id.clone())
        .bind(session.user_id.clone())
        .bind(session.session_name.clone())
        .bind(stored.component_data.clone())
        .bind(stored.session_state.clone())
        .bind(stored.extra_data.clone())
        .bind(session.created_at)
        .bind(session.updated_at)
        .bind(session.version)
        .bind(session.run_count)
}

/// Binds `?14` to `?17`: the run appended (NULL without one).
fn bind_run(query: Query, session_id: &str, run: Option<&RunRecord>) -> StorageResult<Query> {
    Ok(match run {
        Some(run) => query
            .bind(run.run_id.clone())
            .bind(run.status.as_str())
            .bind(run.created_at)
            .bind(encode_run(TEXT, session_id, run)?),
        None => query
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<String>),
    })
}

pub(super) fn decode_row(row: &SqliteRow, operation: &'static str) -> StorageResult<Session> {
    decode_row_stored(row, operation).map(|(session, _)| session)
}

/// The session of `row`, with its JSON columns as stored.
fn decode_row_stored(
    row: &SqliteRow,
    operation: &'static str,
) -> StorageResult<(Session, Option<EncodedSession>)> {
    let id: String = row
        .try_get("session_id")
        .map_err(|error| row_error(operation, "?", error))?;
    SessionRow::from_row(row)
        .map_err(|error| row_error(operation, &id, error))?
        .into_session_stored(TEXT)
}

async fn read(
    conn: &mut SqliteConnection,
    state: &mut TableState,
    sql: &Sql,
    key: &SessionKey,
    options: &ReadOptions,
) -> StorageResult<Option<Session>> {
    // One statement, so one snapshot of the row and its most recent runs.
    let row = sqlx::query(sql.read_session.clone())
        .bind(&key.session_id)
        .bind(key.kind.as_str())
        .bind(&key.scope)
        .bind(sql_limit(Some(options.recent_runs)))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("read"))?;
    let Some(row) = row else {
        state.cache.remember(key.clone(), Seen::Absent);
        return Ok(None);
    };
    let (mut session, stored) = decode_row_stored(&row, "read")?;
    if let Some(stored) = stored {
        state
            .cache
            .remember(key.clone(), Seen::row(&session, stored));
    }
    if options
        .user_id
        .as_ref()
        .is_some_and(|user| session.user_id.as_ref() != Some(user))
    {
        return Ok(None);
    }
    let records: Option<String> = row
        .try_get("records")
        .map_err(|error| row_error("read", &key.session_id, error))?;
    session.runs = decode_runs(TEXT, &key.session_id, records.as_deref())?;
    Ok(Some(session))
}

async fn select_runs(
    conn: &mut SqliteConnection,
    sql: &Sql,
    key: &SessionKey,
    limit: Option<usize>,
) -> StorageResult<Vec<RunRecord>> {
    let session_id = key.session_id.as_str();
    let records: Vec<Option<String>> = sqlx::query_scalar(sql.select_runs.clone())
        .bind(session_id)
        .bind(key.kind.as_str())
        .bind(&key.scope)
        .bind(sql_limit(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| row_error("runs", session_id, error))?;
    let mut runs = records
        .iter()
        .map(|record| decode_run(TEXT, session_id, record.as_deref()))
        .collect::<StorageResult<Vec<_>>>()?;
    runs.reverse();
    Ok(runs)
}

async fn list(
    conn: &mut SqliteConnection,
    sql: &Sql,
    query: &SessionQuery,
) -> StorageResult<Vec<Session>> {
    let rows = sqlx::query(sql.list_sessions.clone())
        .bind(&query.user_id)
        .bind(&query.component_id)
        .bind(query.kind.map(|kind| kind.as_str()))
        .bind(&query.scope)
        .bind(sql_limit(query.limit))
        .bind(query.after.as_ref().map(|cursor| cursor.updated_at))
        .bind(query.after.as_ref().map(|cursor| &cursor.key.session_id))
        .bind(query.after.as_ref().map(|cursor| cursor.key.kind.as_str()))
        .bind(query.after.as_ref().map(|cursor| &cursor.key.scope))
        .fetch_all(&mut *conn)
        .await
        .map_err(db("list_sessions"))?;
    let mut sessions = Vec::with_capacity(rows.len());
    for row in &rows {
        sessions.extend(skip_corrupt(decode_row(row, "list_sessions"))?);
    }
    Ok(sessions)
}

async fn delete(conn: &mut SqliteConnection, sql: &Sql, key: &SessionKey) -> StorageResult<()> {
    let result = async {
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db("delete"))?;
        for statement in [&sql.delete_runs, &sql.delete_sessions] {
            sqlx::query(statement.clone())
                .bind(&key.session_id)
                .bind(key.kind.as_str())
                .bind(&key.scope)
                .execute(&mut *conn)
                .await
                .map_err(db("delete"))?;
        }
        sqlx::raw_sql("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(db("delete"))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        rollback(conn).await;
    }
    result
}

async fn drop_tables(conn: &mut SqliteConnection, sql: &Sql) -> StorageResult<()> {
    let result = async {
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(db("drop_tables"))?;
        sqlx::raw_sql(sql.drop.clone())
            .execute(&mut *conn)
            .await
            .map_err(db("drop_tables"))?;
        sqlx::raw_sql("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(db("drop_tables"))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        rollback(conn).await;
    }
    result
}

/// A durable write (see [`Storage::write_durable`]) with the session write it may carry,
/// in one transaction.
///
/// Usually one trip: a batch whose first statement fails unless the write may apply (the
/// fence holds, the run exists or the write brings its row, the events follow the stored
/// log; the in-memory reference's rules, checked in SQL), then writes the row, the entries
/// and the events. When that batch fails, the write takes the checked path: it reads the
/// stored run's `attempt`, `status` and last event under the write lock, checks the write
/// against them in Rust (which says exactly what failed, in the reference's order), and
/// writes. A session write is then committed with the statements of a commit inside a
/// group ([`Sql::grouped`]), in the same transaction.
///
/// `alone`: the write has a transaction of its own, begun and committed here and rolled back
/// on any error. Else it runs inside a group's transaction, which the caller ends (and rolls
/// back on any error, then runs every write of the group alone): there only the one-trip
/// batch is tried.
///
/// [`Storage::write_durable`]: buddy_core::storage::Storage::write_durable
async fn durable_write(
    conn: &mut SqliteConnection,
    cache: &mut Cache,
    sql: &Sql,
    write: &DurableWrite,
    alone: bool,
    checked: &AtomicUsize,
) -> StorageResult<Option<Session>> {
    let result = durable_steps(conn, cache, sql, write, alone, checked).await;
    if result.is_err() && alone {
        rollback(conn).await;
        if let Some(session) = &write.session {
            cache.forget(&session.key());
        }
    }
    result
}

async fn durable_steps(
    conn: &mut SqliteConnection,
    cache: &mut Cache,
    sql: &Sql,
    write: &DurableWrite,
    alone: bool,
    checked: &AtomicUsize,
) -> StorageResult<Option<Session>> {
    let encoded = EncodedWrite::new(TEXT, write)?;
    // Events that do not follow each other fail whatever is stored; the checked path says
    // how (after the fence, as the reference does).
    let in_order = dur::check_events(&write.run_id, &write.events, None);
    let guarded = match in_order {
        Ok(()) => guarded_write(conn, sql, write, &encoded, alone).await,
        Err(error) => Err(error),
    };
    match guarded {
        Ok(()) => {}
        Err(error) if !alone => return Err(error),
        Err(error)
            if matches!(
                error.kind(),
                StorageErrorKind::Busy | StorageErrorKind::Unavailable
            ) =>
        {
            return Err(error);
        }
        Err(error) => {
            tracing::trace!(run_id = %write.run_id, %error, "guarded durable write refused; checking it");
            rollback(conn).await;
            checked.fetch_add(1, Ordering::Relaxed);
            checked_write(conn, sql, write, &encoded).await?;
        }
    }
    let Some(session_write) = &write.session else {
        return Ok(None);
    };
    // The commit reads the row under the lock (two trips) rather than trying the one-trip
    // swap first, so that a failure is the commit's own error, not the swap's.
    cache.forget(&session_write.key());
    let session = commit_one(conn, cache, &sql.grouped, session_write, false).await?;
    if alone {
        sqlx::raw_sql("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(db(WRITE))?;
    }
    Ok(Some(session))
}

/// The one-trip write: fails (a NOT NULL violation, nothing written) unless the write may
/// apply. Commits when it is alone and no session write follows.
async fn guarded_write(
    conn: &mut SqliteConnection,
    sql: &Sql,
    write: &DurableWrite,
    encoded: &EncodedWrite,
    alone: bool,
) -> StorageResult<()> {
    let mode = match (alone, write.session.is_some()) {
        (true, false) => 0,
        (true, true) => 1,
        (false, _) => 2,
    };
    let query = bind_durable(sqlx::query(sql.durable.guarded[mode].clone()), encoded)
        .bind(write.fence.map(|fence| i64::from(fence.attempt)))
        .bind(
            write
                .fence
                .and_then(|fence| fence.status)
                .map(|status| status.as_str()),
        )
        .bind(dur::expected_last(write));
    query.execute(&mut *conn).await.map_err(db(WRITE))?;
    Ok(())
}

/// The checked write, in a transaction begun here and left open unless it commits (no
/// session write follows): the stored run read under the write lock, the write checked
/// against it, then written.
async fn checked_write(
    conn: &mut SqliteConnection,
    sql: &Sql,
    write: &DurableWrite,
    encoded: &EncodedWrite,
) -> StorageResult<()> {
    let run_id = write.run_id.as_str();
    let statements = &sql.durable;
    let row = sqlx::query(statements.lock.clone())
        .bind(run_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(WRITE))?;
    let attempt: Option<i64> = row.try_get("attempt").map_err(durable_row(run_id))?;
    let status: Option<String> = row.try_get("status").map_err(durable_row(run_id))?;
    let last_seq: Option<i64> = row.try_get("last_seq").map_err(durable_row(run_id))?;
    let stored = attempt
        .zip(status)
        .map(|(attempt, status)| StoredFence { attempt, status });
    let last = dur::stored_seq(run_id, last_seq)?;
    dur::check(write, stored.as_ref(), Some(last))?;
    let commits = write.session.is_none();
    bind_durable(
        sqlx::query(statements.write[usize::from(commits)].clone()),
        encoded,
    )
    .execute(&mut *conn)
    .await
    .map_err(db(WRITE))?;
    Ok(())
}

/// Binds `?1` to `?11` of a durable write (see [`DurableSql`](super::sql::DurableSql)).
fn bind_durable(query: Query, write: &EncodedWrite) -> Query {
    let query = query
        .bind(write.run_id.clone())
        .bind(write.events_json())
        .bind(write.entries_json());
    match &write.run {
        Some(run) => query
            .bind(run.workflow.clone())
            .bind(run.status)
            .bind(run.attempt)
            .bind(run.session_id.clone())
            .bind(run.created_at)
            .bind(run.updated_at)
            .bind(run.ended_at)
            .bind(run.record.clone()),
        None => query
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<String>),
    }
}

/// Maps a driver error while decoding a durable row of `run_id` to `CorruptRun`, any other
/// error to `Database`.
fn durable_row(run_id: &str) -> impl Fn(sqlx::Error) -> StorageError + '_ {
    move |error| match error {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => {
            dur::corrupt(run_id, "row", error)
        }
        error => crate::error::database("durable runs", error),
    }
}

async fn load_durable(
    conn: &mut SqliteConnection,
    sql: &Sql,
    run_id: &str,
) -> StorageResult<Option<DurableState>> {
    // One statement: the row, the log's end and the journal in one snapshot.
    let row = sqlx::query(sql.durable.load.clone())
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("load_durable"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record: Option<String> = row.try_get("record").map_err(durable_row(run_id))?;
    let last_seq: Option<i64> = row.try_get("last_seq").map_err(durable_row(run_id))?;
    let entries: Option<String> = row.try_get("entries").map_err(durable_row(run_id))?;
    Ok(Some(DurableState {
        run: dur::decode_run(TEXT, run_id, record.as_deref())?,
        entries: dur::decode_entries(TEXT, run_id, entries.as_deref())?,
        last_seq: dur::stored_seq(run_id, last_seq)?,
    }))
}

async fn durable_runs(
    conn: &mut SqliteConnection,
    sql: &Sql,
    query: &DurableQuery,
) -> StorageResult<Vec<DurableRun>> {
    let statuses = dur::query_statuses(query)
        .map(|statuses| serde_json::to_string(&statuses).unwrap_or_else(|_| "[]".to_owned()));
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(sql.durable.list.clone())
        .bind(&query.workflow)
        .bind(statuses)
        .bind(sql_limit(query.limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db("durable_runs"))?;
    let mut runs = Vec::with_capacity(rows.len());
    for (run_id, record) in &rows {
        runs.extend(dur::skip_corrupt(dur::decode_run(
            TEXT,
            run_id,
            record.as_deref(),
        ))?);
    }
    Ok(runs)
}

async fn read_events(
    conn: &mut SqliteConnection,
    sql: &Sql,
    run_id: &str,
    after: u64,
    limit: usize,
) -> StorageResult<Vec<StoredEvent>> {
    // One row (the page as one JSON array): one hand-off back from sqlx's worker thread.
    let events: Option<String> = sqlx::query_scalar(sql.durable.events.clone())
        .bind(run_id)
        .bind(dur::sql_seq(after))
        .bind(sql_limit(Some(limit)))
        .fetch_one(&mut *conn)
        .await
        .map_err(durable_row(run_id))?;
    dur::decode_events(TEXT, run_id, events.as_deref())
}

async fn prune(conn: &mut SqliteConnection, sql: &Sql, ended_before: i64) -> StorageResult<u64> {
    let result = sqlx::query_scalar::<_, i64>(sql.durable.prune.clone())
        .bind(ended_before)
        .fetch_one(&mut *conn)
        .await
        .map_err(db("prune_durable"));
    match result {
        Ok(pruned) => Ok(u64::try_from(pruned).unwrap_or(0)),
        Err(error) => {
            rollback(conn).await;
            Err(error)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly.
mod tests {
    use buddy_core::StorageError;
    use buddy_core::durable::{DurableWrite, Fence};
    use buddy_core::run::{RunRecord, RunResponse, RunStatus};
    use buddy_core::session::{SessionKey, SessionKind, SessionWrite, StatePatch};
    use buddy_core::storage::Storage;
    use serde_json::{Map, json};

    use super::Ordering;
    use crate::{SqliteStorage, conformance};

    fn write(session_id: &str, n: usize) -> SessionWrite {
        let mut after = Map::new();
        after.insert(format!("key_{n}"), json!(n));
        SessionWrite {
            session_id: session_id.to_owned(),
            kind: SessionKind::Workflow,
            state_patch: StatePatch::diff(&Map::new(), &after),
            run: Some(RunRecord {
                run_id: format!("{session_id}-{n}"),
                session_id: session_id.to_owned(),
                status: RunStatus::Completed,
                input: json!({}),
                response: RunResponse::from_text("done"),
                error: None,
                created_at: 1,
                ended_at: Some(2),
                duration_ms: Some(1.0),
            }),
            ..SessionWrite::default()
        }
    }

    fn transactions(storage: &SqliteStorage) -> usize {
        storage.writer.transactions.load(Ordering::Relaxed)
    }

    fn checked(storage: &SqliteStorage) -> usize {
        storage.writer.checked.load(Ordering::Relaxed)
    }

    /// A journal write of run `run_id`: one entry, the event `seq`, fenced on `attempt`.
    fn journal_write(run_id: &str, seq: u64, attempt: u32) -> DurableWrite {
        DurableWrite {
            fence: Some(Fence {
                attempt,
                status: Some(RunStatus::Running),
            }),
            entries: vec![conformance::journal_entry(&format!("step#{seq}"), 0)],
            events: conformance::stored_events(run_id, [seq]),
            ..DurableWrite::new(run_id)
        }
    }

    async fn start_runs(storage: &SqliteStorage, runs: usize) {
        for n in 0..runs {
            let run = conformance::durable_run(&format!("run-{n}"), "Wf", 1);
            storage
                .write_durable(conformance::start_write(&run, Vec::new(), []))
                .await
                .unwrap();
        }
    }

    /// Durable writes queued while the writer is busy share one transaction, each in one
    /// trip (none takes the checked path), with commits queued among them.
    #[tokio::test]
    async fn queued_durable_writes_share_one_transaction() {
        let storage = SqliteStorage::open(":memory:").await.unwrap();
        start_runs(&storage, 16).await;
        let (before, checked_before) = (transactions(&storage), checked(&storage));
        let durable =
            (0..16).map(|n| storage.write_durable(journal_write(&format!("run-{n}"), 1, 1)));
        let commits = (0..4).map(|n| storage.commit(write(&format!("s{n}"), n)));
        let (durable, commits) = futures::future::join(
            futures::future::join_all(durable),
            futures::future::join_all(commits),
        )
        .await;
        assert_eq!(transactions(&storage) - before, 1, "one group");
        assert_eq!(checked(&storage), checked_before, "every write in one trip");
        assert!(
            durable.iter().all(|result| matches!(result, Ok(None))),
            "{durable:?}"
        );
        assert!(commits.iter().all(Result::is_ok));
        for n in 0..16 {
            let state = storage
                .load_durable(&format!("run-{n}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((state.last_seq, state.entries.len()), (1, 1));
        }
    }

    /// A durable write on its own is one trip too: the guarded batch, not the checked path,
    /// with or without a session write.
    #[tokio::test]
    async fn a_durable_write_alone_takes_one_trip() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path().join("db")).await.unwrap();
        start_runs(&storage, 1).await;
        let before = checked(&storage);
        for seq in 1..=5 {
            let mut write = journal_write("run-0", seq, 1);
            if seq == 5 {
                write.session = Some(super::tests::write("s", 1));
            }
            storage.write_durable(write).await.unwrap();
        }
        assert_eq!(checked(&storage), before, "no write took the checked path");
        assert_eq!(
            storage
                .load_durable("run-0")
                .await
                .unwrap()
                .unwrap()
                .last_seq,
            5
        );
    }

    /// A durable write refused inside a group (its fence does not hold) costs the others
    /// nothing: the group is rolled back and each write runs alone, the refused one taking
    /// the checked path to say why.
    #[tokio::test]
    async fn a_fenced_durable_write_in_a_group_loses_no_other() {
        let storage = SqliteStorage::open(":memory:").await.unwrap();
        start_runs(&storage, 12).await;
        let (before, checked_before) = (transactions(&storage), checked(&storage));
        let writes = (0..12).map(|n| {
            let attempt = if n == 5 { 2 } else { 1 };
            storage.write_durable(journal_write(&format!("run-{n}"), 1, attempt))
        });
        let results = futures::future::join_all(writes).await;
        assert_eq!(transactions(&storage) - before, 1 + 12);
        assert_eq!(checked(&storage) - checked_before, 1);
        for (n, result) in results.into_iter().enumerate() {
            let state = storage
                .load_durable(&format!("run-{n}"))
                .await
                .unwrap()
                .unwrap();
            if n == 5 {
                assert!(
                    matches!(result, Err(StorageError::Fenced { .. })),
                    "{result:?}"
                );
                assert_eq!(state.last_seq, 0);
            } else {
                assert_eq!(result.unwrap(), None);
                assert_eq!(state.last_seq, 1);
            }
        }
    }

    /// Commits queued while the writer is busy (here: all of them, sent before it first
    /// runs) are written in one transaction, and each caller gets its own session back.
    #[tokio::test]
    async fn queued_commits_share_one_transaction() {
        let storage = SqliteStorage::open(":memory:").await.unwrap();
        storage.create().await.unwrap();
        let before = transactions(&storage);
        let commits = (0..64).map(|n| storage.commit(write(&format!("s{}", n % 8), n)));
        let sessions = futures::future::join_all(commits).await;
        assert_eq!(transactions(&storage) - before, 1, "one group");
        for (n, session) in sessions.into_iter().enumerate() {
            let session = session.unwrap();
            assert_eq!(session.session_id, format!("s{}", n % 8));
            assert_eq!(session.run_count as usize, n / 8 + 1);
        }
        for s in 0..8 {
            let key = SessionKey::new(format!("s{s}"), SessionKind::Workflow);
            assert_eq!(storage.runs(&key, None).await.unwrap().len(), 8);
        }
    }

    /// A commit that fails inside a group costs the others nothing: the group is rolled back
    /// and each commit runs alone, the failing one with its own error.
    #[tokio::test]
    async fn a_failing_commit_in_a_group_loses_no_other() {
        let storage = SqliteStorage::open(":memory:").await.unwrap();
        storage.commit(write("bad", 0)).await.unwrap();
        storage.commit(write("bad", 1)).await.unwrap();
        sqlx::query("UPDATE workflow_sessions SET run_count = 1 WHERE session_id = 'bad'")
            .execute(storage.pool())
            .await
            .unwrap();
        let before = transactions(&storage);
        let commits = (0..31).map(|n| {
            let session = if n == 15 {
                "bad".to_owned()
            } else {
                format!("good{}", n % 4)
            };
            storage.commit(write(&session, n + 10))
        });
        let results = futures::future::join_all(commits).await;
        // The failed group, then each commit on its own.
        assert_eq!(transactions(&storage) - before, 1 + 31);
        for (n, result) in results.into_iter().enumerate() {
            if n == 15 {
                assert!(result.unwrap_err().is_corrupt());
            } else {
                result.unwrap();
            }
        }
        let mut stored = 0;
        for s in 0..4 {
            let key = SessionKey::new(format!("good{s}"), SessionKind::Workflow);
            let runs = storage.runs(&key, None).await.unwrap();
            stored += runs.len();
        }
        assert_eq!(stored, 30);
    }
}
