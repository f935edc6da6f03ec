//! [`SqliteStorage`]: sessions in an SQLite file (or in memory).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use buddy_core::run::{RunRecord, now_millis};
use buddy_core::session::{Session, SessionKey, SessionQuery, SessionWrite};
use buddy_core::storage::{ReadOptions, Storage, StorageResult};
use buddy_core::{StorageError, StorageErrorKind};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, Row, SqlSafeStr, SqlStr, Sqlite, Transaction};

use crate::codec::{
    EncodedSession, SQLITE_SESSION_COLUMNS, SQLITE_V2_SESSION_COLUMNS, SessionRow, Text,
    check_run_count, decode_run, encode_run, row_error, skip_corrupt, sql_limit,
};

/// SQLite stores NUL in text as it is.
const TEXT: Text = Text::Raw;
use crate::error::{db, kind_of};
use crate::ident::{self, index_name, quote, runs_table};
use crate::migrate::{Layout, V1Row, check_v2_run};

/// How long a writer waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a write is retried when SQLite still reports the database busy.
const BUSY_RETRIES: u32 = 5;

/// Sessions in an SQLite database: the embedded default.
///
/// One value stands for one table `{table}` (default `workflow_sessions`) and its run table
/// `{table}_runs`, created on first use. Clones share the connection pool.
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
/// `":memory:"` opens a private in-memory database held by a single connection, so every
/// query sees the same data; it is gone when the last clone is dropped.
///
/// # Concurrency
///
/// [`commit`](Storage::commit) runs in one `BEGIN IMMEDIATE` transaction: it takes the
/// database's write lock first, then reads the session, merges the write into it
/// ([`Session::apply_write`]: the changed state keys only) and appends the one run. Writers
/// of one database are therefore serialised, across threads and processes; none loses
/// another's run or state keys, and for a key written by two runs the later commit wins.
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
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    location: String,
    table: String,
    sql: Sql,
    ready: AtomicBool,
    init: tokio::sync::Mutex<()>,
}

/// Every statement, built once per table from the validated name.
struct Sql {
    create: SqlStr,
    drop: SqlStr,
    read_session: SqlStr,
    begin_select_session: SqlStr,
    upsert_commit: SqlStr,
    upsert_insert_run_commit: SqlStr,
    select_runs: SqlStr,
    list_sessions: SqlStr,
    delete_runs: SqlStr,
    delete_sessions: SqlStr,
    table_columns: SqlStr,
    v1_select: SqlStr,
    v1_alter: SqlStr,
    v1_create_v2: SqlStr,
    v1_update: SqlStr,
    v1_insert_run: SqlStr,
    v1_drop_columns: SqlStr,
    v2_select_sessions: SqlStr,
    v2_select_runs: SqlStr,
    v2_rebuild: SqlStr,
}

fn sql(text: String) -> SqlStr {
    // Safe: `text` splices only table names checked by `ident::validate_table`, quoted.
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}

/// The condition selecting the sessions (or runs) that `SessionKey::covers` the key
/// `(?1, ?2, ?3)`: the session itself and, below it, every scope under `?3` (every non-empty
/// scope when `?3` is `''`). A prefix test by `substr`, not `LIKE`, so `_` and `%` in a scope
/// are plain characters; on the bytes (`BLOB`), because SQLite's text `length` stops at a NUL.
const COVERED: &str = "session_id = ?1 AND ((kind = ?2 AND scope = ?3)
    OR (?3 = '' AND scope <> '')
    OR (?3 <> '' AND substr(CAST(scope AS BLOB), 1, length(CAST(?3 AS BLOB)) + 1)
        = CAST(?3 || '/' AS BLOB)))";

impl Sql {
    fn new(table: &str) -> Self {
        let t = quote(table);
        let r = quote(&runs_table(table));
        let t_old = quote(&format!("{table}_v2_old"));
        let r_old = quote(&format!("{}_v2_old", runs_table(table)));
        let updated_idx = quote(&index_name(table, "updated_idx"));
        let cols = SQLITE_SESSION_COLUMNS;
        let key = "session_id = ?1 AND kind = ?2 AND scope = ?3";
        let upsert = format!(
            "INSERT INTO {t} (session_id, kind, scope, component_id, user_id, session_name,
                component_data, session_state, extra_data, created_at, updated_at, version,
                run_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (session_id, kind, scope) DO UPDATE SET
                component_id = excluded.component_id, user_id = excluded.user_id,
                session_name = excluded.session_name,
                component_data = excluded.component_data,
                session_state = excluded.session_state, extra_data = excluded.extra_data,
                updated_at = excluded.updated_at, version = excluded.version,
                run_count = excluded.run_count"
        );
        // The run's `seq` is the session's new `run_count` (?13).
        let insert_run = format!(
            "INSERT INTO {r} (session_id, kind, scope, seq, run_id, status, created_at, record)
             VALUES (?1, ?2, ?3, ?13, ?14, ?15, ?16, ?17)"
        );
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                session_id TEXT NOT NULL,
                kind TEXT NOT NULL DEFAULT 'workflow',
                scope TEXT NOT NULL DEFAULT '',
                component_id TEXT,
                user_id TEXT,
                session_name TEXT,
                component_data TEXT NOT NULL DEFAULT '{{}}',
                session_state TEXT NOT NULL DEFAULT '{{}}',
                extra_data TEXT,
                created_at INTEGER NOT NULL DEFAULT 0,
                updated_at INTEGER NOT NULL DEFAULT 0,
                version INTEGER NOT NULL DEFAULT 0,
                run_count INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (session_id, kind, scope)
            );
            CREATE TABLE IF NOT EXISTS {r} (
                session_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                scope TEXT NOT NULL,
                seq INTEGER NOT NULL,
                run_id TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                record TEXT NOT NULL,
                PRIMARY KEY (session_id, kind, scope, seq),
                FOREIGN KEY (session_id, kind, scope)
                    REFERENCES {t} (session_id, kind, scope) ON DELETE CASCADE
            );
            CREATE INDEX IF NOT EXISTS {updated_idx}
                ON {t} (updated_at DESC, session_id DESC, kind, scope);"
        );
        Sql {
            read_session: sql(format!(
                "SELECT {cols}, runs.record AS record, runs.seq AS run_seq FROM {t}
                 LEFT JOIN (SELECT record, seq FROM {r} WHERE {key}
                            ORDER BY seq DESC LIMIT ?4) AS runs
                 WHERE {key} ORDER BY runs.seq DESC"
            )),
            begin_select_session: sql(format!(
                "BEGIN IMMEDIATE; SELECT {cols},
                    (SELECT MAX(seq) FROM {r} WHERE {key}) AS max_seq
                 FROM {t} WHERE {key}"
            )),
            upsert_commit: sql(format!("{upsert}; COMMIT")),
            upsert_insert_run_commit: sql(format!("{upsert}; {insert_run}; COMMIT")),
            drop: sql(format!(
                "DROP TABLE IF EXISTS {r}; DROP TABLE IF EXISTS {t};"
            )),
            select_runs: sql(format!(
                "SELECT record FROM {r} WHERE {key} ORDER BY seq DESC LIMIT ?4"
            )),
            list_sessions: sql(format!(
                "SELECT {cols} FROM {t}
                 WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR component_id = ?2)
                   AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR scope = ?4)
                 ORDER BY updated_at DESC, session_id DESC, kind, scope LIMIT ?5"
            )),
            delete_runs: sql(format!("DELETE FROM {r} WHERE {COVERED}")),
            delete_sessions: sql(format!("DELETE FROM {t} WHERE {COVERED}")),
            table_columns: sql("SELECT name FROM pragma_table_info(?1)".to_owned()),
            v1_select: sql(format!(
                "SELECT session_id, workflow_id, user_id, memory, workflow_data, session_data,
                    extra_data, created_at, updated_at FROM {t}"
            )),
            v1_alter: sql(format!(
                "ALTER TABLE {t} ADD COLUMN kind TEXT NOT NULL DEFAULT 'workflow';
                 ALTER TABLE {t} ADD COLUMN component_id TEXT;
                 ALTER TABLE {t} ADD COLUMN session_name TEXT;
                 ALTER TABLE {t} ADD COLUMN component_data TEXT NOT NULL DEFAULT '{{}}';
                 ALTER TABLE {t} ADD COLUMN session_state TEXT NOT NULL DEFAULT '{{}}';
                 ALTER TABLE {t} ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE {t} ADD COLUMN run_count INTEGER NOT NULL DEFAULT 0;"
            )),
            // The v2 runs table (its sessions table is the altered v1 table).
            v1_create_v2: sql(format!(
                "CREATE TABLE {r} (
                    session_id TEXT NOT NULL REFERENCES {t} (session_id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    run_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    record TEXT NOT NULL,
                    PRIMARY KEY (session_id, seq)
                );"
            )),
            v1_update: sql(format!(
                "UPDATE {t} SET kind = ?2, component_id = ?3, user_id = ?4, session_name = ?5,
                    component_data = ?6, session_state = ?7, extra_data = ?8, created_at = ?9,
                    updated_at = ?10, version = ?11, run_count = ?12
                 WHERE session_id = ?1"
            )),
            v1_insert_run: sql(format!(
                "INSERT INTO {r} (session_id, seq, run_id, status, created_at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            )),
            v1_drop_columns: sql(format!(
                "ALTER TABLE {t} DROP COLUMN memory;
                 ALTER TABLE {t} DROP COLUMN workflow_id;
                 ALTER TABLE {t} DROP COLUMN workflow_data;
                 ALTER TABLE {t} DROP COLUMN session_data;"
            )),
            v2_select_sessions: sql(format!("SELECT {SQLITE_V2_SESSION_COLUMNS} FROM {t}")),
            v2_select_runs: sql(format!("SELECT session_id, record FROM {r}")),
            // SQLite cannot change a primary key: move the v2 tables aside (renaming the
            // sessions table updates the runs table's reference), create the v3 tables,
            // copy, drop the old ones.
            v2_rebuild: sql(format!(
                "DROP INDEX IF EXISTS {updated_idx};
                 ALTER TABLE {r} RENAME TO {r_old};
                 ALTER TABLE {t} RENAME TO {t_old};
                 {create}
                 INSERT INTO {t} (session_id, kind, scope, component_id, user_id, session_name,
                    component_data, session_state, extra_data, created_at, updated_at, version,
                    run_count)
                 SELECT session_id, kind, '', component_id, user_id, session_name,
                    component_data, session_state, extra_data, created_at, updated_at, version,
                    run_count
                 FROM {t_old};
                 INSERT INTO {r} (session_id, kind, scope, seq, run_id, status, created_at,
                    record)
                 SELECT runs.session_id, sessions.kind, '', runs.seq, runs.run_id, runs.status,
                    runs.created_at, runs.record
                 FROM {r_old} AS runs JOIN {t_old} AS sessions
                    ON sessions.session_id = runs.session_id;
                 DROP TABLE {r_old};
                 DROP TABLE {t_old};"
            )),
            create: sql(create),
        }
    }
}

/// The default table name.
const DEFAULT_TABLE: &str = "workflow_sessions";

impl SqliteStorage {
    /// Opens (creating if needed) the database file at `path`, or a private in-memory
    /// database for `":memory:"`, with the settings described on [`SqliteStorage`]. Missing
    /// parent directories are created. Tables are created on first use.
    ///
    /// # Errors
    ///
    /// [`StorageError::Connect`] naming the path if the file cannot be opened or created (a
    /// directory, a read-only location, a parent that is a file).
    pub async fn open(path: impl AsRef<Path>) -> StorageResult<Self> {
        let path = path.as_ref();
        let base = SqliteConnectOptions::new()
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if path == Path::new(":memory:") {
            // One connection that never closes: every query sees the same database, and the
            // database lives as long as the pool.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(base.in_memory(true))
                .await
                .map_err(db("open"))?;
            return Ok(Self::with_pool(pool, ":memory:".to_owned()));
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
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file cannot hang up: skip the ping (a worker-thread round trip) that
            // would otherwise precede every operation.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|error| cannot_open(kind_of(&error), error.into()))?;
        Ok(Self::with_pool(pool, path.display().to_string()))
    }

    /// Uses an existing pool as it is configured (see [`SqliteStorage`] for the settings
    /// [`open`](SqliteStorage::open) would choose). For an in-memory database the pool must
    /// keep a single connection open, or use a shared cache.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self::with_pool(pool, "pool".to_owned())
    }

    fn with_pool(pool: SqlitePool, location: String) -> Self {
        Self::build(pool, location, DEFAULT_TABLE.to_owned())
    }

    fn build(pool: SqlitePool, location: String, table: String) -> Self {
        SqliteStorage {
            inner: Arc::new(Inner {
                sql: Sql::new(&table),
                pool,
                location,
                table,
                ready: AtomicBool::new(false),
                init: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Stores sessions in table `name` (and runs in `{name}_runs`) instead of
    /// `workflow_sessions`.
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidTableName`] unless `name` matches
    /// `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and `{name}_runs` fits in 63 characters.
    pub fn table(self, name: &str) -> StorageResult<Self> {
        ident::validate_table(name)?;
        Ok(Self::build(
            self.inner.pool.clone(),
            self.inner.location.clone(),
            name.to_owned(),
        ))
    }

    /// The sessions table's name.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The connection pool, for queries of your own.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Closes every connection; operations afterwards fail with [`StorageError::Database`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    async fn ensure(&self) -> StorageResult<()> {
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.inner.init.lock().await;
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let layout = Layout::of(&self.columns().await?);
        if layout.is_old() {
            return Err(layout.needs_upgrade(&self.inner.table));
        }
        let mut tx = self.begin_immediate("create").await?;
        sqlx::raw_sql(self.inner.sql.create.clone())
            .execute(&mut *tx)
            .await
            .map_err(db("create"))?;
        tx.commit().await.map_err(db("create"))?;
        self.inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The column names of the sessions table (empty if it does not exist).
    async fn columns(&self) -> StorageResult<Vec<String>> {
        sqlx::query_scalar(self.inner.sql.table_columns.clone())
            .bind(&self.inner.table)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("create"))
    }

    async fn begin_immediate(
        &self,
        operation: &'static str,
    ) -> StorageResult<Transaction<'static, Sqlite>> {
        self.inner
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db(operation))
    }

    /// Runs `attempt` again while SQLite reports the database busy or locked (after the
    /// busy timeout); every attempt is a whole transaction, so a retry cannot apply twice.
    async fn retry_busy<T, F, Fut>(&self, mut attempt: F) -> StorageResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StorageResult<T>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(error) if tries < BUSY_RETRIES && error.is_busy() => {
                    tries += 1;
                    tracing::debug!(tries, "sqlite database busy; retrying the transaction");
                    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
                }
                result => return result,
            }
        }
    }

    /// One commit in two round trips to SQLite's worker thread: `BEGIN IMMEDIATE` with the
    /// read of the session, then the session row, the run and `COMMIT` together.
    async fn commit_once(&self, write: &SessionWrite) -> StorageResult<Session> {
        let sql = &self.inner.sql;
        let conn = self.inner.pool.acquire().await.map_err(db("commit"))?;
        let mut tx = ManualTransaction { conn: Some(conn) };
        let result = async {
            let conn = tx.conn()?;
            let row = sqlx::query(sql.begin_select_session.clone())
                .bind(&write.session_id)
                .bind(write.kind.as_str())
                .bind(&write.scope)
                .fetch_optional(&mut **conn)
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
            let encoded = EncodedSession::new(&session, TEXT)?;
            let statement = match write.run {
                Some(_) => sql.upsert_insert_run_commit.clone(),
                None => sql.upsert_commit.clone(),
            };
            let mut query = bind_session(sqlx::query(statement), &session, encoded);
            if let Some(run) = &write.run {
                query = query
                    .bind(run.run_id.clone())
                    .bind(run.status.as_str())
                    .bind(run.created_at)
                    .bind(encode_run(TEXT, &session.session_id, run)?);
            }
            query.execute(&mut **conn).await.map_err(db("commit"))?;
            Ok(session)
        }
        .await;
        match result {
            Ok(session) => {
                tx.committed();
                Ok(session)
            }
            Err(error) => {
                tx.rollback().await;
                Err(error)
            }
        }
    }

    async fn delete_once(&self, key: &SessionKey) -> StorageResult<()> {
        let sql = &self.inner.sql;
        let mut tx = self.begin_immediate("delete").await?;
        for statement in [&sql.delete_runs, &sql.delete_sessions] {
            sqlx::query(statement.clone())
                .bind(&key.session_id)
                .bind(key.kind.as_str())
                .bind(&key.scope)
                .execute(&mut *tx)
                .await
                .map_err(db("delete"))?;
        }
        tx.commit().await.map_err(db("delete"))
    }

    /// Converts a table of an old layout to the current one, in one transaction; returns
    /// the layout found (nothing is done for the current one).
    async fn upgrade_once(&self) -> StorageResult<Layout> {
        let mut tx = self.begin_immediate("upgrade_schema").await?;
        let columns: Vec<String> = sqlx::query_scalar(self.inner.sql.table_columns.clone())
            .bind(&self.inner.table)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("upgrade_schema"))?;
        let layout = Layout::of(&columns);
        if !layout.is_old() {
            return Ok(layout);
        }
        if layout == Layout::V1 {
            self.upgrade_v1(&mut tx).await?;
        }
        self.upgrade_v2(&mut tx).await?;
        tx.commit().await.map_err(db("upgrade_schema"))?;
        Ok(layout)
    }

    /// v1 to v2: the new columns, one row per run, the v1-only columns dropped.
    async fn upgrade_v1(&self, tx: &mut Transaction<'static, Sqlite>) -> StorageResult<()> {
        let sql = &self.inner.sql;
        // Read the old rows before the layout changes; abort on the first that is corrupt.
        let rows: Vec<V1Row> = sqlx::query_as(sql.v1_select.clone())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        let mut converted = Vec::with_capacity(rows.len());
        for row in rows {
            converted.push(row.convert()?);
        }
        for statement in [&sql.v1_alter, &sql.v1_create_v2] {
            sqlx::raw_sql(statement.clone())
                .execute(&mut **tx)
                .await
                .map_err(db("upgrade_schema"))?;
        }
        for (session, runs) in converted {
            let id = session.session_id.as_str();
            let encoded = EncodedSession::new(&session, TEXT)?;
            sqlx::query(sql.v1_update.clone())
                .bind(id)
                .bind(session.kind.as_str())
                .bind(&session.component_id)
                .bind(&session.user_id)
                .bind(&session.session_name)
                .bind(encoded.component_data)
                .bind(encoded.session_state)
                .bind(encoded.extra_data)
                .bind(session.created_at)
                .bind(session.updated_at)
                .bind(session.version)
                .bind(session.run_count)
                .execute(&mut **tx)
                .await
                .map_err(db("upgrade_schema"))?;
            for (seq, run) in (1_i64..).zip(&runs) {
                sqlx::query(sql.v1_insert_run.clone())
                    .bind(id)
                    .bind(seq)
                    .bind(&run.run_id)
                    .bind(run.status.as_str())
                    .bind(run.created_at)
                    .bind(encode_run(TEXT, id, run)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(db("upgrade_schema"))?;
            }
        }
        sqlx::raw_sql(sql.v1_drop_columns.clone())
            .execute(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        Ok(())
    }

    /// v2 to v3: every row checked, then the tables rebuilt with the full key.
    async fn upgrade_v2(&self, tx: &mut Transaction<'static, Sqlite>) -> StorageResult<()> {
        let sql = &self.inner.sql;
        let rows = sqlx::query(sql.v2_select_sessions.clone())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        let mut ids = HashSet::with_capacity(rows.len());
        for row in &rows {
            ids.insert(decode_row(row, "upgrade_schema")?.session_id);
        }
        let runs: Vec<(String, String)> = sqlx::query_as(sql.v2_select_runs.clone())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        for (session_id, record) in &runs {
            check_v2_run(&ids, session_id, record)?;
        }
        sqlx::raw_sql(sql.v2_rebuild.clone())
            .execute(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        Ok(())
    }
}

fn decode_row(row: &SqliteRow, operation: &'static str) -> StorageResult<Session> {
    let id: String = row
        .try_get("session_id")
        .map_err(|error| row_error(operation, "?", error))?;
    SessionRow::from_row(row)
        .map_err(|error| row_error(operation, &id, error))?
        .into_session(TEXT)
}

/// Binds `?1` to `?13` of the session upsert.
fn bind_session<'q>(
    query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    session: &Session,
    encoded: EncodedSession,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    query
        .bind(session.session_id.clone())
        .bind(session.kind.as_str())
        .bind(session.scope.clone())
        .bind(session.component_id.clone())
        .bind(session.user_id.clone())
        .bind(session.session_name.clone())
        .bind(encoded.component_data)
        .bind(encoded.session_state)
        .bind(encoded.extra_data)
        .bind(session.created_at)
        .bind(session.updated_at)
        .bind(session.version)
        .bind(session.run_count)
}

/// A pooled connection in a transaction begun with a plain `BEGIN IMMEDIATE` statement
/// (sqlx's `Transaction` needs a round trip of its own for `BEGIN` and for `COMMIT`).
///
/// Unless [`committed`](Self::committed) is called, the transaction is rolled back before
/// the connection goes back to the pool: explicitly by [`rollback`](Self::rollback), or, if
/// the future was dropped half-way, by a task spawned from `drop`.
struct ManualTransaction {
    conn: Option<PoolConnection<Sqlite>>,
}

impl ManualTransaction {
    fn conn(&mut self) -> StorageResult<&mut PoolConnection<Sqlite>> {
        self.conn
            .as_mut()
            .ok_or_else(|| StorageError::database("commit", "transaction already finished"))
    }

    /// The last statement was `COMMIT`: the connection goes back to the pool as it is.
    fn committed(mut self) {
        self.conn = None;
    }

    async fn rollback(mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Fails harmlessly ("no transaction is active") if `BEGIN` itself failed.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        }
    }
}

impl Drop for ManualTransaction {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                });
            }
            // No runtime to roll back on: closing the connection rolls back instead.
            Err(_) => conn.close_on_drop(),
        }
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("location", &self.inner.location)
            .field("table", &self.inner.table)
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
        self.ensure().await?;
        // One statement, so one snapshot: the session's columns on every row, joined with
        // its most recent runs (one row with a NULL record when it has none).
        let rows = sqlx::query(self.inner.sql.read_session.clone())
            .bind(&key.session_id)
            .bind(key.kind.as_str())
            .bind(&key.scope)
            .bind(sql_limit(Some(options.recent_runs)))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("read"))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut session = decode_row(first, "read")?;
        if options
            .user_id
            .as_ref()
            .is_some_and(|user| session.user_id.as_ref() != Some(user))
        {
            return Ok(None);
        }
        session.runs = decode_joined_runs(&rows, &key.session_id)?;
        Ok(Some(session))
    }

    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        self.ensure().await?;
        self.retry_busy(|| self.commit_once(&write)).await
    }

    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        self.ensure().await?;
        let mut conn = self.inner.pool.acquire().await.map_err(db("runs"))?;
        select_runs(&mut conn, &self.inner.sql, key, limit).await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        self.ensure().await?;
        let rows = sqlx::query(self.inner.sql.list_sessions.clone())
            .bind(&query.user_id)
            .bind(&query.component_id)
            .bind(query.kind.map(|kind| kind.as_str()))
            .bind(&query.scope)
            .bind(sql_limit(query.limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("list_sessions"))?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            sessions.extend(skip_corrupt(decode_row(row, "list_sessions"))?);
        }
        Ok(sessions)
    }

    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        self.ensure().await?;
        self.retry_busy(|| self.delete_once(key)).await
    }

    async fn create(&self) -> StorageResult<()> {
        self.ensure().await
    }

    async fn upgrade_schema(&self) -> StorageResult<()> {
        let guard = self.inner.init.lock().await;
        let layout = self.retry_busy(|| self.upgrade_once()).await?;
        if layout.is_old() {
            tracing::info!(table = %self.inner.table, from = ?layout, "upgraded session table");
        }
        drop(guard);
        self.ensure().await
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        let _guard = self.inner.init.lock().await;
        self.retry_busy(|| async {
            let mut tx = self.begin_immediate("drop_tables").await?;
            sqlx::raw_sql(self.inner.sql.drop.clone())
                .execute(&mut *tx)
                .await
                .map_err(db("drop_tables"))?;
            tx.commit().await.map_err(db("drop_tables"))
        })
        .await?;
        self.inner.ready.store(false, Ordering::Release);
        Ok(())
    }
}

/// The runs of the rows of a `read_session` query, oldest first.
fn decode_joined_runs(rows: &[SqliteRow], session_id: &str) -> StorageResult<Vec<RunRecord>> {
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows.iter().rev() {
        // No `seq`: the one row of a session without runs. A run row with a NULL record is
        // corrupt, not skipped.
        let seq: Option<i64> = row
            .try_get("run_seq")
            .map_err(|error| row_error("read", session_id, error))?;
        if seq.is_none() {
            continue;
        }
        let record: Option<String> = row
            .try_get("record")
            .map_err(|error| row_error("read", session_id, error))?;
        runs.push(decode_run(TEXT, session_id, record.as_deref())?);
    }
    Ok(runs)
}

async fn select_runs(
    conn: &mut sqlx::SqliteConnection,
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
