//! [`SqliteStorage`]: sessions in an SQLite file (or in memory).

mod sql;
mod upgrade;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use buddy_core::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use buddy_core::run::RunRecord;
use buddy_core::session::{Session, SessionKey, SessionQuery, SessionWrite};
use buddy_core::storage::{ReadOptions, Storage, StorageResult};
use buddy_core::{StorageError, StorageErrorKind};
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{db, kind_of};
use crate::ident;
use sql::Sql;
use writer::{Commit, Job, Op, Table, WriterHandle};

/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions in an SQLite database: the embedded default.
///
/// One value stands for one table `{table}` (default `workflow_sessions`) and its run table
/// `{table}_runs`. [`table`](SqliteStorage::table) creates them right away (in the
/// background); the default table is created on first use. Clones, and the values
/// [`table`](SqliteStorage::table) makes, share one connection and one writer.
///
/// # Connection settings and durability
///
/// [`open`](SqliteStorage::open) sets, on every connection:
///
/// - `journal_mode=WAL`: readers never block the writer and the writer never blocks readers;
/// - `synchronous=NORMAL`: a committed transaction survives a crash of the process (it is in
///   the write-ahead log, which the OS holds), but the last transactions before a power loss
///   or an OS crash may be lost (the database itself stays consistent). Use
///   [`from_pool`](SqliteStorage::from_pool) with `synchronous=FULL` if that matters;
/// - `busy_timeout` of 10 s, so a writer waits for another writer (in this process or
///   another) instead of failing; a write still told "busy" is retried a few times;
/// - `foreign_keys=ON`.
///
/// The write-ahead log is copied into the database file (a checkpoint) by a task beside the
/// writer, about 100 ms after writes, rather than by SQLite inside the commit that fills the
/// log: no commit waits for a checkpoint.
///
/// `":memory:"` opens a private in-memory database held by the single connection; it is
/// gone when the last clone is dropped.
///
/// # One writer, group commit
///
/// Every operation of a store goes through one task of its own, the writer, on one
/// connection (opened by [`open`](SqliteStorage::open), so a failure to open shows there).
/// SQLite's page cache therefore stays valid from one transaction to the next, and:
///
/// - a [`commit`](Storage::commit) is usually one trip to SQLite: the writer remembers the
///   session rows it read or wrote, merges the write into its copy
///   ([`Session::apply_write`]: the changed state keys only) and sends one `BEGIN IMMEDIATE`
///   batch that updates the row only if it is still exactly what the writer saw, appends the
///   run and commits. When the row changed underneath (another process, or another store on
///   the same file), the commit reads it under the write lock and merges into that: the
///   result is the same;
/// - commits that queue up while the writer is busy are written in one transaction (group
///   commit). Each caller is told its own outcome; if anything in the group fails, the
///   group is rolled back and its commits run again one by one, so a failing write never
///   loses another's;
/// - a commit handed to the writer completes even if the caller's future is dropped.
///
/// Durable writes ([`Storage::write_durable`]) go through the writer too, grouped with the
/// commits and durable writes queued beside them. One is usually one trip: a batch whose
/// first statement fails unless the write may apply (the run's fence holds, the events
/// follow its log), then the row, the journal entries (by key) and the events; a refused
/// batch is rolled back and the write checked under the write lock, which says exactly why
/// it is refused. A session write it carries is committed by the commit's own statements,
/// in the same transaction.
///
/// Writers of one database are serialised, across threads and processes (every write takes
/// the database's write lock first); none loses another's run or state keys, and for a key
/// written by two runs the later commit wins. Open a file once and clone the value (or call
/// [`table`](SqliteStorage::table)) rather than opening it again: two stores on one file
/// work, but each has its own connection and writer.
///
/// The writer runs on the tokio runtime of the first operation; if that runtime shuts down,
/// the next operation starts a new writer on its own runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), buddy_core::StorageError> {
/// use buddy_storage::SqliteStorage;
///
/// let storage = SqliteStorage::open("tmp/sessions.db").await?.table("workflows")?;
/// # let _ = storage;
/// # Ok(()) }
/// # let _ = demo;
/// ```
#[derive(Clone)]
pub struct SqliteStorage {
    writer: Arc<WriterHandle>,
    location: Arc<str>,
    table: Arc<Table>,
}

/// The default table name.
const DEFAULT_TABLE: &str = "workflow_sessions";

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path`, or a private in-memory
    /// database for `":memory:"`, with the settings described on [`SqliteStorage`], and
    /// opens its one connection. Missing parent directories are created.
    ///
    /// # Errors
    ///
    /// [`StorageError::Connect`] naming the path if the file cannot be opened or created (a
    /// directory, a read-only location, a parent that is a file).
    pub async fn open(path: impl AsRef<Path>) -> StorageResult<Self> {
        let path = path.as_ref();
        // sqlx logs every statement at `debug`; a commit is several, so leave that to users
        // who ask for it (`pool()` queries can set their own options).
        let base = SqliteConnectOptions::new()
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .disable_statement_logging();
        if path == Path::new(":memory:") {
            // One connection that never closes: it is the database. The writer takes it
            // for each operation.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(base.in_memory(true))
                .await
                .map_err(db("open"))?;
            return Ok(Self::with_writer(
                WriterHandle::pooled(pool),
                ":memory:".to_owned(),
            ));
        }
        let cannot_open =
            |kind, source: Box<dyn std::error::Error + Send + Sync>| StorageError::Connect {
                target: format!("sqlite database {}", path.display()),
                reason: "cannot open the file",
                kind,
                source,
            };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|error| cannot_open(StorageErrorKind::Unavailable, error.into()))?;
        }
        let options = base
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        // The writer's own connection, kept open: SQLite's page cache stays warm and no
        // pool hand-back (a spawned task in sqlx) follows each operation. It leaves
        // checkpoints to a task beside it (`writer::Checkpointer`), so no commit waits for
        // one.
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0");
        let connection = writer_options
            .connect()
            .await
            .map_err(|error| cannot_open(kind_of(&error), error.into()))?;
        // For `pool()` only: opened when first used.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file cannot hang up: no ping (a worker-thread round trip) first.
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        Ok(Self::with_writer(
            WriterHandle::own(pool, connection, writer_options),
            path.display().to_string(),
        ))
    }

    /// Uses an existing pool as it is configured (see [`SqliteStorage`] for the settings
    /// [`open`](SqliteStorage::open) would choose). The writer takes one of its connections
    /// for each operation (or group of commits); a pool of one connection keeps the page
    /// cache warm. For an in-memory database the pool must keep a single connection open, or
    /// use a shared cache.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self::with_writer(WriterHandle::pooled(pool), "pool".to_owned())
    }

    fn with_writer(writer: WriterHandle, location: String) -> Self {
        SqliteStorage {
            writer: Arc::new(writer),
            location: location.into(),
            table: Self::table_of(DEFAULT_TABLE),
        }
    }

    fn table_of(name: &str) -> Arc<Table> {
        Arc::new(Table {
            name: name.to_owned(),
            sql: Sql::new(name),
        })
    }

    /// Stores sessions in table `name` (and runs in `{name}_runs`) instead of
    /// `workflow_sessions`, sharing this value's connection and writer. The tables are
    /// created now, in the background (an error, such as a table of an older layout, is
    /// reported by the first operation).
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidTableName`] unless `name` matches
    /// `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and `{name}_runs` fits in 63 characters.
    pub fn table(self, name: &str) -> StorageResult<Self> {
        ident::validate_table(name)?;
        let table = Self::table_of(name);
        // Outside a runtime the table is created on first use instead.
        let _ = self.writer.send(Job::Op(Op::Prepare(Arc::clone(&table))));
        Ok(SqliteStorage { table, ..self })
    }

    /// The sessions table's name.
    pub fn table_name(&self) -> &str {
        &self.table.name
    }

    /// The connection pool, for queries of your own. For a store made by
    /// [`open`](SqliteStorage::open) it holds the writer's one connection, so a query of
    /// yours waits for the writer's current operation, and the writer for your query.
    pub fn pool(&self) -> &SqlitePool {
        self.writer.pool()
    }

    /// Finishes the operations already handed to the writer, then closes the connection;
    /// operations afterwards fail with [`StorageError::Database`].
    pub async fn close(&self) {
        self.writer.close().await;
    }

    fn shared_table(&self) -> Arc<Table> {
        Arc::clone(&self.table)
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("location", &self.location)
            .field("table", &self.table.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn read(
        &self,
        key: &SessionKey,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Read {
                    table: self.shared_table(),
                    key: key.clone(),
                    options: options.clone(),
                    reply,
                })
            })
            .await
    }

    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        self.writer
            .ask(|reply| Commit::job(self.shared_table(), write, reply))
            .await
    }

    fn commit_survives_drop(&self) -> bool {
        true
    }

    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Runs {
                    table: self.shared_table(),
                    key: key.clone(),
                    limit,
                    reply,
                })
            })
            .await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::List {
                    table: self.shared_table(),
                    query: query.clone(),
                    reply,
                })
            })
            .await
    }

    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Delete {
                    table: self.shared_table(),
                    key: key.clone(),
                    reply,
                })
            })
            .await
    }

    async fn create(&self) -> StorageResult<()> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Create {
                    table: self.shared_table(),
                    reply,
                })
            })
            .await
    }

    async fn upgrade_schema(&self) -> StorageResult<()> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Upgrade {
                    table: self.shared_table(),
                    reply,
                })
            })
            .await
            .map(|_| ())
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Drop {
                    table: self.shared_table(),
                    reply,
                })
            })
            .await
    }

    fn supports_durable(&self) -> bool {
        true
    }

    async fn write_durable(&self, write: DurableWrite) -> StorageResult<Option<Session>> {
        self.writer
            .ask(|reply| Commit::durable_job(self.shared_table(), write, reply))
            .await
    }

    async fn load_durable(&self, run_id: &str) -> StorageResult<Option<DurableState>> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::LoadDurable {
                    table: self.shared_table(),
                    run_id: run_id.to_owned(),
                    reply,
                })
            })
            .await
    }

    async fn durable_runs(&self, query: &DurableQuery) -> StorageResult<Vec<DurableRun>> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::DurableRuns {
                    table: self.shared_table(),
                    query: query.clone(),
                    reply,
                })
            })
            .await
    }

    async fn read_events(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<StoredEvent>> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::ReadEvents {
                    table: self.shared_table(),
                    run_id: run_id.to_owned(),
                    after,
                    limit,
                    reply,
                })
            })
            .await
    }

    async fn prune_durable(&self, ended_before: i64) -> StorageResult<u64> {
        self.writer
            .ask(|reply| {
                Job::Op(Op::Prune {
                    table: self.shared_table(),
                    ended_before,
                    reply,
                })
            })
            .await
    }
}
