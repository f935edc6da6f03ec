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
//!   takes another's with it.
//! - **One connection.** Every operation goes through the writer's connection (the pool of
//!   [`SqliteStorage::open`](super::SqliteStorage::open) holds exactly one), so SQLite's page
//!   cache stays valid from one transaction to the next.
//! - **No task per commit.** A job handed to the writer completes even if the caller's
//!   future is dropped right after, so the engine need not spawn a task to protect a run's
//!   record from a dropped stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use buddy_core::StorageError;
use buddy_core::run::{RunRecord, now_millis};
use buddy_core::session::{Session, SessionKey, SessionQuery, SessionWrite};
use buddy_core::storage::{ReadOptions, StorageResult};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqliteRow,
};
use sqlx::{ConnectOptions, Connection};
use sqlx::{FromRow, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::sql::{Sql, Writes};
use super::upgrade;
use crate::cache::{Cache, Seen};
use crate::codec::{
    EncodedSession, SessionRow, Text, check_run_count, decode_run, decode_runs, encode_run,
    row_error, skip_corrupt, sql_limit,
};
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
    /// A commit, grouped with the commits queued behind it.
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
}

pub(super) struct Commit {
    table: Arc<Table>,
    write: SessionWrite,
    reply: Reply<Session>,
}

impl Commit {
    pub(super) fn job(table: Arc<Table>, write: SessionWrite, reply: Reply<Session>) -> Job {
        Job::Commit(Commit {
            table,
            write,
            reply,
        })
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
        }
    }

    /// A writer that takes a connection of `pool` for each operation (or group of commits).
    pub(super) fn pooled(pool: SqlitePool) -> Self {
        WriterHandle {
            pool,
            own: None,
            lane: Lane::default(),
            transactions: Arc::default(),
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
                Job::Op(op) => self.serve_one(op).await,
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
                    let _ = commit.reply.send(Err(error));
                }
                return;
            }
        };
        let conn = lease.conn();
        let mut ready = Vec::with_capacity(group.len());
        for commit in group {
            match self.ensure(conn, &commit.table).await {
                Ok(_) => ready.push(commit),
                Err(error) => {
                    let _ = commit.reply.send(Err(error));
                }
            }
        }
        if ready.len() > 1 {
            match self.commit_group(conn, &ready).await {
                Ok(sessions) => {
                    for (commit, session) in ready.into_iter().zip(sessions) {
                        let _ = commit.reply.send(Ok(session));
                    }
                    lease.done(self);
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, commits = ready.len(), "group commit failed; committing one by one");
                }
            }
        }
        for commit in ready {
            self.transactions.fetch_add(1, Ordering::Relaxed);
            let state = self.state(&commit.table);
            let writes = &commit.table.sql.alone;
            let result =
                retry_busy!(commit_alone(conn, &mut state.cache, writes, &commit.write).await);
            let _ = commit.reply.send(result);
        }
        lease.done(self);
    }

    fn state(&mut self, table: &Table) -> &mut TableState {
        self.tables.entry(table.name.clone()).or_default()
    }

    /// The commits of `group` in one transaction; on any failure the transaction is rolled
    /// back (and what the cache learnt from it forgotten).
    async fn commit_group(
        &mut self,
        conn: &mut SqliteConnection,
        group: &[Commit],
    ) -> StorageResult<Vec<Session>> {
        retry_busy!(
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map(|_| ())
                .map_err(db("commit"))
        )?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let mut sessions = Vec::with_capacity(group.len());
        let mut failure = None;
        for commit in group {
            let state = self.state(&commit.table);
            let writes = &commit.table.sql.grouped;
            match commit_one(conn, &mut state.cache, writes, &commit.write, false).await {
                Ok(session) => sessions.push(session),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if failure.is_none() {
            match sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
                Ok(_) => return Ok(sessions),
                Err(error) => failure = Some(crate::error::database("commit", error)),
            }
        }
        rollback(&mut *conn).await;
        for commit in group {
            self.state(&commit.table).cache.forget(&commit.write.key());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly.
mod tests {
    use buddy_core::run::{RunRecord, RunResponse, RunStatus};
    use buddy_core::session::{SessionKey, SessionKind, SessionWrite, StatePatch};
    use buddy_core::storage::Storage;
    use serde_json::{Map, json};

    use super::Ordering;
    use crate::SqliteStorage;

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
