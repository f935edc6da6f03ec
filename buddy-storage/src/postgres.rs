//! [`PostgresStorage`]: sessions in Postgres, shared by processes and machines.

mod durable;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use buddy_core::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use buddy_core::run::{RunRecord, now_millis};
use buddy_core::session::{Session, SessionKey, SessionQuery, SessionWrite};
use buddy_core::storage::{ReadOptions, Storage, StorageResult};
use buddy_core::{StorageError, StorageErrorKind};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{
    AssertSqlSafe, ConnectOptions, Connection, FromRow, Postgres, Row, SqlSafeStr, SqlStr,
    Transaction,
};
use tokio::sync::{mpsc, oneshot};

use crate::cache::{Cache, Seen};
use crate::codec::{
    EncodedSession, PG_SESSION_COLUMNS, PG_V2_SESSION_COLUMNS, SessionRow, Text, check_run_count,
    decode_run, encode_run, row_error, skip_corrupt, sql_limit,
};
use crate::lane::Lane;

/// Postgres text cannot hold NUL: it is escaped (see the `codec` module).
const TEXT: Text = Text::EscapeNul;

/// How long [`PostgresStorage::connect`] waits for the server, and a pool it creates waits
/// for a free connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
use crate::durable::{Names, finished_statuses};
use crate::error::{db, kind_of};
use crate::ident::{self, index_name, quote, runs_table};
use crate::migrate::{Layout, V1Row, check_v2_run};

/// The key of the advisory lock that serialises buddy's DDL (table creation and upgrades)
/// across processes: concurrent `CREATE TABLE IF NOT EXISTS` can otherwise fail in Postgres.
const DDL_LOCK_KEY: i64 = 0x6275_6464_795f_6464; // "buddy_dd"

/// Sessions in Postgres: for several processes or machines sharing sessions.
///
/// One value stands for one table `{table}` (default `workflow_sessions`) and its run table
/// `{table}_runs`, in the connection's `search_path` or in the [schema](Self::schema) you
/// name (created if missing). Both are created on first use. Clones share the pool.
///
/// # Concurrency
///
/// A [`commit`](Storage::commit) is usually one statement: the store remembers the session
/// rows it read or wrote, merges the write into its copy ([`Session::apply_write`]: the
/// changed state keys only) and sends one statement that updates the row only if it is
/// still exactly that copy and appends the run. When the row changed underneath (another
/// process or machine), the commit takes the locking path instead, one transaction: it
/// inserts the row if it is missing and locks it in one statement
/// (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`), merges the write into the *current*
/// stored session, updates the row and appends the run. Either way the result is the merge
/// into the stored row. Writers of one session queue on the row lock, across connections,
/// processes and machines; writers of different sessions do not wait for each other. No
/// run record or state key is lost; for a key written by two runs the later commit wins.
/// Durability is the server's (`synchronous_commit`).
///
/// Commits go through a task of the store's own, so a commit completes even if its future
/// is dropped. A commit that finds a connection free runs alone (Postgres merges the WAL
/// flushes of concurrent transactions itself); the commits that queue while every
/// connection of the pool is busy are written in one transaction (group commit), each
/// caller told its own outcome; if anything in the group fails, the group is rolled back
/// and its commits run one by one, so a failing write never loses another's.
///
/// # Durable runs
///
/// A [`write_durable`](Storage::write_durable) runs on a task of its own (it completes even
/// if its future is dropped) and is one statement: it locks the run's row (`SELECT ... FOR
/// UPDATE`), so writers of one run queue across processes and machines, and writes the
/// row, the journal entries and the events only if the fence holds and the events follow
/// the stored log; a refused write changes nothing and reports what the stored run says
/// (the rules of [`check_fence`](buddy_core::durable::check_fence) and the in-memory
/// reference). A write that carries a session write runs that statement and the commit's
/// own locking code in one transaction. Durable writes are not grouped: each takes a
/// connection of the pool. A write that finds its connection gone is retried once; if the
/// retry is refused, the write counts as done when the store holds exactly what it wrote
/// (the lost attempt committed).
///
/// Pooled connections are not pinged before each use: an operation that finds its
/// connection gone (the server restarted, a proxy dropped it) is retried once on a
/// connection that answers, and a retried commit checks first whether its run was written.
///
/// # NUL characters
///
/// Postgres text and `jsonb` cannot hold NUL, so every string is stored with NUL written as
/// U+FDD0 `0` (and U+FDD0 as U+FDD0 U+FDD0), reversed exactly on read: any value round-trips
/// (see the crate docs).
///
/// ```no_run
/// # async fn demo() -> Result<(), buddy_core::StorageError> {
/// use buddy_storage::PostgresStorage;
///
/// let storage = PostgresStorage::connect("postgres://app@localhost/app")
///     .await?
///     .schema("buddy")?
///     .table("workflows")?;
/// # let _ = storage;
/// # Ok(()) }
/// # let _ = demo;
/// ```
#[derive(Clone)]
pub struct PostgresStorage {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: Option<String>,
    table: String,
    sql: Sql,
    ready: AtomicBool,
    init: tokio::sync::Mutex<()>,
    /// The session rows this store last read or wrote, for one-statement commits.
    cache: Mutex<Cache>,
    /// Commits written in one statement, for tests of that path.
    one_statement_commits: std::sync::atomic::AtomicUsize,
    /// The way to the task that groups this store's commits (started on first use).
    jobs: Lane<GroupJob>,
    /// Transactions that held more than one commit, for tests of grouping.
    groups: std::sync::atomic::AtomicUsize,
}

/// The most commits one group transaction takes.
const MAX_GROUP: usize = 64;

/// A commit waiting for its group.
struct GroupJob {
    write: SessionWrite,
    reply: oneshot::Sender<StorageResult<Session>>,
}

/// What [`PostgresStorage::locked_write`] did.
enum Locked {
    Written(Session, EncodedSession),
    /// Nothing: a lost attempt had written the run already (the session as stored).
    AlreadyWritten(Session),
}

/// Groups the commits queued for a store. As many groups run at once as the pool has
/// connections, each as a task of its own; a commit that finds a connection free runs
/// alone (Postgres already merges the WAL flushes of concurrent transactions), and the
/// commits that queue while every connection is busy go into one transaction. Holds the
/// store only weakly, so the task ends with the store.
async fn serve_groups(
    inner: Weak<Inner>,
    slots: usize,
    mut jobs: mpsc::UnboundedReceiver<GroupJob>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(slots.max(1)));
    while let Some(first) = jobs.recv().await {
        // A free slot first: the commits that queue meanwhile join this group.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let storage = PostgresStorage { inner };
        tokio::spawn(async move {
            storage.run_group(group).await;
            drop(slot);
        });
    }
}

struct Sql {
    create: SqlStr,
    drop: SqlStr,
    /// Inserts the row if it is missing, locks it and returns it with its highest run `seq`.
    lock_session: SqlStr,
    /// Whether the session already holds the run `$4` (after a lost connection).
    has_run: SqlStr,
    /// One statement: the row updated only if it is still exactly as last seen (and then the
    /// run appended); returns `applied`. By whether the write appends a run.
    swap: [SqlStr; 2],
    /// One statement: the row inserted only if there is none (and then the run appended);
    /// returns `applied`.
    insert_new: [SqlStr; 2],
    read_session: SqlStr,
    update_session: SqlStr,
    update_session_insert_run: SqlStr,
    select_runs: SqlStr,
    list_sessions: SqlStr,
    delete_runs: SqlStr,
    delete_sessions: SqlStr,
    v1_select: SqlStr,
    v1_alter: SqlStr,
    v1_create_v2: SqlStr,
    v1_update: SqlStr,
    v1_insert_run: SqlStr,
    v1_drop_columns: SqlStr,
    v2_select_sessions: SqlStr,
    v2_select_runs: SqlStr,
    v2_alter: SqlStr,
    durable: DurableSql,
}

/// The statements of durable runs (see the `durable` module).
struct DurableSql {
    /// One statement: locks the run's row (`FOR UPDATE`: writers of one run queue on it,
    /// across processes), then writes the row, the entries and the events only if the
    /// write may apply: the fence holds (`$19` attempt, `$20` status; NULL: no fence, any
    /// status), the run exists or the write brings its row, and the events follow the
    /// stored log (`$18`, the last `seq` they must follow; NULL without events). Returns
    /// the stored `attempt`, `status` and `last_seq` the write was checked against, and
    /// whether it `applied`. Binds `$1` the run id, `$2` to `$9` the row (`record` NULL: no
    /// row), `$10` to `$15` the entries as arrays (key, position, kind, status,
    /// updated_at, record), `$16` and `$17` the events (seq, event).
    write: SqlStr,
    /// The row, the last `seq` and the journal (an array of records, by key) in one row.
    load: SqlStr,
    /// `run_id` and `record` of the runs matching `$1` (workflow or NULL) and `$2` (statuses
    /// or NULL), the oldest first, at most `$3`.
    list: SqlStr,
    /// `seq` and `event` after `$2`, at most `$3`.
    events: SqlStr,
    /// Deletes the runs that ended before `$1` with their journals and logs; returns how
    /// many runs.
    prune: SqlStr,
}

fn sql(text: String) -> SqlStr {
    // Safe: `text` splices only schema and table names checked by `ident`, quoted.
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}

/// The condition selecting the sessions (or runs) that `SessionKey::covers` the key
/// `($1, $2, $3)`: the session itself and, below it, every scope under `$3` (every non-empty
/// scope when `$3` is `''`). A prefix test by `substr`, not `LIKE`, so `_` and `%` in a scope
/// are plain characters.
const COVERED: &str = "session_id = $1 AND ((kind = $2 AND scope = $3)
    OR ($3 = '' AND scope <> '')
    OR ($3 <> '' AND substr(scope, 1, length($3) + 1) = $3 || '/'))";

impl Sql {
    fn new(schema: Option<&str>, table: &str) -> Self {
        let prefix = schema.map(|s| format!("{}.", quote(s))).unwrap_or_default();
        let t = format!("{prefix}{}", quote(table));
        let r = format!("{prefix}{}", quote(&runs_table(table)));
        let updated_idx = quote(&index_name(table, "updated_idx"));
        let names = Names::of(table);
        let d = format!("{prefix}{}", quote(&names.runs));
        let j = format!("{prefix}{}", quote(&names.journal));
        let e = format!("{prefix}{}", quote(&names.events));
        // Run ids and keys sort byte-wise (`COLLATE "C"`), as in Rust.
        let durable_create = format!(
            "CREATE TABLE IF NOT EXISTS {d} (
                run_id TEXT NOT NULL PRIMARY KEY,
                workflow TEXT NOT NULL,
                status TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                session_id TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                ended_at BIGINT,
                record JSONB NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {list_idx}
                ON {d} (workflow, status, created_at, run_id COLLATE \"C\");
            CREATE INDEX IF NOT EXISTS {ended_idx} ON {d} (ended_at);
            CREATE TABLE IF NOT EXISTS {j} (
                run_id TEXT NOT NULL,
                key TEXT NOT NULL,
                position BIGINT NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                updated_at BIGINT NOT NULL,
                record JSONB NOT NULL,
                PRIMARY KEY (run_id, key)
            );
            CREATE TABLE IF NOT EXISTS {e} (
                run_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                event JSONB NOT NULL,
                PRIMARY KEY (run_id, seq)
            );",
            list_idx = quote(&names.list_idx),
            ended_idx = quote(&names.ended_idx),
        );
        let create_schema = schema
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS {};", quote(s)))
            .unwrap_or_default();
        let cols = PG_SESSION_COLUMNS;
        let key = "session_id = $1 AND kind = $2 AND scope = $3";
        let update = format!(
            "UPDATE {t} SET component_id = $4, user_id = $5, session_name = $6,
                component_data = $7::jsonb, session_state = $8::jsonb,
                extra_data = $9::jsonb, created_at = $10, updated_at = $11, version = $12,
                run_count = $13
             WHERE {key}"
        );
        // Text columns sort byte-wise (`COLLATE "C"`), as Rust strings do, whatever the
        // database's collation: the order of `list_sessions` is the same on every backend.
        let index = format!(
            "CREATE INDEX IF NOT EXISTS {updated_idx} ON {t} (updated_at DESC,
                session_id COLLATE \"C\" DESC, kind COLLATE \"C\", scope COLLATE \"C\");"
        );
        // The run's `seq` is the session's new `run_count` ($13).
        let append_run = format!(
            "INSERT INTO {r} (session_id, kind, scope, seq, run_id, status, created_at, record)
             SELECT session_id, kind, scope, $13, $14, $15, $16, $17::jsonb"
        );
        // The update of a one-statement commit: only if every column `Session::apply_write`
        // reads is still what this store saw (the row as last seen from `$o` on), so a row
        // deleted and written again since is never mistaken for it.
        let swap = |o: usize| {
            format!(
                "UPDATE {t} SET component_id = $4, user_id = $5, session_name = $6,
                    component_data = $7::jsonb, session_state = $8::jsonb,
                    extra_data = $9::jsonb, updated_at = $11, version = $12, run_count = $13
                 WHERE {key} AND version = ${} AND created_at = ${} AND updated_at = ${}
                    AND run_count = ${} AND component_id IS NOT DISTINCT FROM ${}::text
                    AND user_id IS NOT DISTINCT FROM ${}::text
                    AND session_name IS NOT DISTINCT FROM ${}::text
                    AND component_data = ${}::jsonb AND session_state = ${}::jsonb
                    AND extra_data IS NOT DISTINCT FROM ${}::jsonb",
                o,
                o + 1,
                o + 2,
                o + 3,
                o + 4,
                o + 5,
                o + 6,
                o + 7,
                o + 8,
                o + 9
            )
        };
        let insert_new = format!(
            "INSERT INTO {t} (session_id, kind, scope, component_id, user_id, session_name,
                component_data, session_state, extra_data, created_at, updated_at, version,
                run_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb, $10, $11, $12, $13)
             ON CONFLICT (session_id, kind, scope) DO NOTHING"
        );
        Sql {
            create: sql(format!(
                "{create_schema}
                CREATE TABLE IF NOT EXISTS {t} (
                    session_id TEXT NOT NULL,
                    kind TEXT NOT NULL DEFAULT 'workflow',
                    scope TEXT NOT NULL DEFAULT '',
                    component_id TEXT,
                    user_id TEXT,
                    session_name TEXT,
                    component_data JSONB NOT NULL DEFAULT '{{}}',
                    session_state JSONB NOT NULL DEFAULT '{{}}',
                    extra_data JSONB,
                    created_at BIGINT NOT NULL DEFAULT 0,
                    updated_at BIGINT NOT NULL DEFAULT 0,
                    version BIGINT NOT NULL DEFAULT 0,
                    run_count BIGINT NOT NULL DEFAULT 0,
                    PRIMARY KEY (session_id, kind, scope)
                );
                CREATE TABLE IF NOT EXISTS {r} (
                    session_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    scope TEXT NOT NULL,
                    seq BIGINT NOT NULL,
                    run_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    record JSONB NOT NULL,
                    PRIMARY KEY (session_id, kind, scope, seq),
                    FOREIGN KEY (session_id, kind, scope)
                        REFERENCES {t} (session_id, kind, scope) ON DELETE CASCADE
                );
                {index}
                {durable_create}"
            )),
            drop: sql(format!("DROP TABLE IF EXISTS {e}, {j}, {d}, {r}, {t};")),
            lock_session: sql(format!(
                "INSERT INTO {t} AS t (session_id, kind, scope, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (session_id, kind, scope) DO UPDATE SET version = t.version
                 RETURNING {cols}, (SELECT MAX(seq) FROM {r} WHERE {key}) AS max_seq"
            )),
            has_run: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {r} WHERE {key} AND run_id = $4)"
            )),
            swap: [
                sql(format!(
                    "WITH updated AS ({} RETURNING 1)
                     SELECT count(*) AS applied FROM updated",
                    swap(14)
                )),
                sql(format!(
                    "WITH updated AS ({} RETURNING session_id, kind, scope),
                     run AS ({append_run} FROM updated)
                     SELECT count(*) AS applied FROM updated",
                    swap(18)
                )),
            ],
            insert_new: [
                sql(format!(
                    "WITH inserted AS ({insert_new} RETURNING 1)
                     SELECT count(*) AS applied FROM inserted"
                )),
                sql(format!(
                    "WITH inserted AS ({insert_new} RETURNING session_id, kind, scope),
                     run AS ({append_run} FROM inserted)
                     SELECT count(*) AS applied FROM inserted"
                )),
            ],
            read_session: sql(format!(
                "SELECT {cols}, runs.record::text AS record, runs.seq AS run_seq FROM {t}
                 LEFT JOIN (SELECT record, seq FROM {r} WHERE {key}
                            ORDER BY seq DESC LIMIT $4) AS runs ON true
                 WHERE {key} ORDER BY runs.seq DESC"
            )),
            update_session: sql(update.clone()),
            // One round trip for both: the run's `seq` is the new `run_count` ($13).
            update_session_insert_run: sql(format!(
                "WITH updated AS ({update} RETURNING session_id, kind, scope)
                 {append_run} FROM updated"
            )),
            select_runs: sql(format!(
                "SELECT record::text FROM {r} WHERE {key} ORDER BY seq DESC LIMIT $4"
            )),
            list_sessions: sql(format!(
                "SELECT {cols} FROM {t}
                 WHERE ($1::text IS NULL OR user_id = $1)
                   AND ($2::text IS NULL OR component_id = $2)
                   AND ($3::text IS NULL OR kind = $3)
                   AND ($4::text IS NULL OR scope = $4)
                   AND ($6::bigint IS NULL OR updated_at < $6 OR (updated_at = $6
                     AND (session_id COLLATE \"C\" < $7 OR (session_id = $7
                       AND (kind COLLATE \"C\" > $8 OR (kind = $8
                         AND scope COLLATE \"C\" > $9))))))
                 ORDER BY updated_at DESC, session_id COLLATE \"C\" DESC, kind COLLATE \"C\",
                    scope COLLATE \"C\"
                 LIMIT $5"
            )),
            delete_runs: sql(format!("DELETE FROM {r} WHERE {COVERED}")),
            delete_sessions: sql(format!("DELETE FROM {t} WHERE {COVERED}")),
            v1_select: sql(format!(
                "SELECT session_id, workflow_id, user_id, memory::text AS memory,
                    workflow_data::text AS workflow_data, session_data::text AS session_data,
                    extra_data::text AS extra_data, created_at, updated_at
                 FROM {t} FOR UPDATE"
            )),
            v1_alter: sql(format!(
                "ALTER TABLE {t}
                    ADD COLUMN kind TEXT NOT NULL DEFAULT 'workflow',
                    ADD COLUMN component_id TEXT,
                    ADD COLUMN session_name TEXT,
                    ADD COLUMN component_data JSONB NOT NULL DEFAULT '{{}}',
                    ADD COLUMN session_state JSONB NOT NULL DEFAULT '{{}}',
                    ADD COLUMN version BIGINT NOT NULL DEFAULT 0,
                    ADD COLUMN run_count BIGINT NOT NULL DEFAULT 0,
                    ALTER COLUMN extra_data TYPE JSONB USING extra_data::text::jsonb,
                    ALTER COLUMN created_at SET DEFAULT 0,
                    ALTER COLUMN updated_at SET DEFAULT 0;"
            )),
            // The v2 runs table (its sessions table is the altered v1 table).
            v1_create_v2: sql(format!(
                "CREATE TABLE {r} (
                    session_id TEXT NOT NULL REFERENCES {t} (session_id) ON DELETE CASCADE,
                    seq BIGINT NOT NULL,
                    run_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    record JSONB NOT NULL,
                    PRIMARY KEY (session_id, seq)
                );"
            )),
            v1_update: sql(format!(
                "UPDATE {t} SET kind = $2, component_id = $3, user_id = $4, session_name = $5,
                    component_data = $6::jsonb, session_state = $7::jsonb,
                    extra_data = $8::jsonb, created_at = $9, updated_at = $10, version = $11,
                    run_count = $12
                 WHERE session_id = $1"
            )),
            v1_insert_run: sql(format!(
                "INSERT INTO {r} (session_id, seq, run_id, status, created_at, record)
                 VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
            )),
            v1_drop_columns: sql(format!(
                "ALTER TABLE {t} DROP COLUMN memory, DROP COLUMN workflow_id,
                    DROP COLUMN workflow_data, DROP COLUMN session_data;"
            )),
            v2_select_sessions: sql(format!(
                "SELECT {PG_V2_SESSION_COLUMNS} FROM {t} FOR UPDATE"
            )),
            v2_select_runs: sql(format!("SELECT session_id, record::text FROM {r}")),
            // The key columns added, the primary keys and the reference replaced (whatever
            // their names), the index rebuilt with the new key.
            v2_alter: sql(format!(
                "DROP INDEX IF EXISTS {prefix}{updated_idx};
                 DO $buddy$ DECLARE c record; BEGIN
                     FOR c IN SELECT conrelid::regclass AS rel, conname FROM pg_constraint
                         WHERE conrelid IN ('{r}'::regclass, '{t}'::regclass)
                           AND contype IN ('p', 'f')
                         ORDER BY conrelid = '{t}'::regclass, contype = 'p'
                     LOOP
                         EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.rel, c.conname);
                     END LOOP;
                 END $buddy$;
                 ALTER TABLE {t} ADD COLUMN scope TEXT NOT NULL DEFAULT '';
                 ALTER TABLE {r} ADD COLUMN kind TEXT, ADD COLUMN scope TEXT NOT NULL DEFAULT '';
                 UPDATE {r} AS runs SET kind = sessions.kind FROM {t} AS sessions
                     WHERE sessions.session_id = runs.session_id;
                 ALTER TABLE {r} ALTER COLUMN kind SET NOT NULL,
                     ALTER COLUMN scope DROP DEFAULT;
                 ALTER TABLE {t} ADD PRIMARY KEY (session_id, kind, scope);
                 ALTER TABLE {r} ADD PRIMARY KEY (session_id, kind, scope, seq),
                     ADD FOREIGN KEY (session_id, kind, scope)
                         REFERENCES {t} (session_id, kind, scope) ON DELETE CASCADE;
                 {index}"
            )),
            durable: DurableSql::new(&d, &j, &e),
        }
    }
}

impl DurableSql {
    fn new(d: &str, j: &str, e: &str) -> Self {
        let finished = format!("status IN ({}) AND ended_at < $1", finished_statuses());
        DurableSql {
            // The row is locked first (`state` reads `locked`, and every write reads
            // `ok`). After waiting for the lock, `FOR UPDATE` returns the row as the writer
            // that held it committed it; the log's end comes from the statement's snapshot,
            // which may be older, but a stale end can only refuse a write (or make its first
            // event collide with a stored one), never let a gap or a duplicate in.
            write: sql(format!(
                "WITH locked AS (SELECT attempt, status FROM {d} WHERE run_id = $1 FOR UPDATE),
                last AS (SELECT COALESCE(MAX(seq), 0) AS seq FROM {e} WHERE run_id = $1),
                state AS (SELECT locked.attempt, locked.status, last.seq AS last_seq
                    FROM last LEFT JOIN locked ON true),
                ok AS (SELECT 1 FROM state
                    WHERE ($19::bigint IS NULL
                            OR (attempt = $19 AND ($20::text IS NULL OR status = $20)))
                        AND ($9::text IS NOT NULL OR attempt IS NOT NULL)
                        AND ($18::bigint IS NULL OR last_seq = $18)),
                run AS (
                    INSERT INTO {d} (run_id, workflow, status, attempt, session_id,
                        created_at, updated_at, ended_at, record)
                    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb FROM ok
                    WHERE $9::text IS NOT NULL
                    ON CONFLICT (run_id) DO UPDATE SET workflow = EXCLUDED.workflow,
                        status = EXCLUDED.status, attempt = EXCLUDED.attempt,
                        session_id = EXCLUDED.session_id, created_at = EXCLUDED.created_at,
                        updated_at = EXCLUDED.updated_at, ended_at = EXCLUDED.ended_at,
                        record = EXCLUDED.record
                ),
                entries AS (
                    INSERT INTO {j} (run_id, key, position, kind, status, updated_at, record)
                    SELECT $1, x.key, x.position, x.kind, x.status, x.updated_at,
                        x.record::jsonb
                    FROM ok, unnest($10::text[], $11::bigint[], $12::text[], $13::text[],
                        $14::bigint[], $15::text[])
                        AS x(key, position, kind, status, updated_at, record)
                    ON CONFLICT (run_id, key) DO UPDATE SET position = EXCLUDED.position,
                        kind = EXCLUDED.kind, status = EXCLUDED.status,
                        updated_at = EXCLUDED.updated_at, record = EXCLUDED.record
                ),
                events AS (
                    INSERT INTO {e} (run_id, seq, event)
                    SELECT $1, x.seq, x.event::jsonb
                    FROM ok, unnest($16::bigint[], $17::text[]) AS x(seq, event)
                )
                SELECT attempt, status, last_seq, EXISTS (SELECT 1 FROM ok) AS applied
                FROM state"
            )),
            load: sql(format!(
                "SELECT record::text AS record,
                    (SELECT MAX(seq) FROM {e} WHERE run_id = $1) AS last_seq,
                    (SELECT array_agg(record::text ORDER BY key COLLATE \"C\")
                     FROM {j} WHERE run_id = $1) AS entries
                 FROM {d} WHERE run_id = $1"
            )),
            list: sql(format!(
                "SELECT run_id, record::text AS record FROM {d}
                 WHERE ($1::text IS NULL OR workflow = $1)
                   AND ($2::text[] IS NULL OR status = ANY($2))
                 ORDER BY created_at, run_id COLLATE \"C\" LIMIT $3"
            )),
            events: sql(format!(
                "SELECT seq, event::text AS event FROM {e} WHERE run_id = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            )),
            prune: sql(format!(
                "WITH pruned AS (DELETE FROM {d} WHERE {finished} RETURNING run_id),
                journal AS (DELETE FROM {j} WHERE run_id IN (SELECT run_id FROM pruned)),
                events AS (DELETE FROM {e} WHERE run_id IN (SELECT run_id FROM pruned))
                SELECT count(*) AS pruned FROM pruned"
            )),
        }
    }
}

/// The default table name.
const DEFAULT_TABLE: &str = "workflow_sessions";

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`)
    /// with a pool of up to 10 connections. Tables are created on first use.
    ///
    /// The first connection is made at once and may take up to 5 seconds (connecting and
    /// the server's answer); later, an operation waits up to 5 seconds for a free or new
    /// connection before failing with a [`StorageError::Database`] of kind `Unavailable`.
    /// Build the pool yourself and use [`from_pool`](Self::from_pool) for other settings.
    ///
    /// # Errors
    ///
    /// [`StorageError::Database`] if the URL is malformed; [`StorageError::Connect`] if the
    /// server cannot be reached or refuses the connection, naming the host, port and
    /// database and saying why (`connection refused`, `timed out`, ...). The URL itself (and
    /// so any password in it) is never part of an error.
    pub async fn connect(url: &str) -> StorageResult<Self> {
        let options: PgConnectOptions = url.parse().map_err(db("connect"))?;
        let target = format!(
            "postgres server {}:{}, database {}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        // One connection made here, so that a failure says why: the pool itself would retry
        // a refused connection until its timeout and then report only the timeout.
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await;
        let failure = match connection {
            Ok(Ok(connection)) => {
                // Not kept: the pool opens its own connections.
                let _ = connection.close().await;
                None
            }
            Ok(Err(error)) => Some((connect_reason(&error), kind_of(&error), error.into())),
            Err(elapsed) => Some((
                "timed out",
                StorageErrorKind::Unavailable,
                Box::new(elapsed) as Box<dyn std::error::Error + Send + Sync>,
            )),
        };
        if let Some((reason, kind, source)) = failure {
            return Err(StorageError::Connect {
                target,
                reason,
                kind,
                source,
            });
        }
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(CONNECT_TIMEOUT)
            // No ping before every operation (a round trip each): an operation that finds its
            // connection dead is retried once on another instead.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self::from_pool(pool))
    }

    /// Uses an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::build(pool, None, DEFAULT_TABLE.to_owned())
    }

    fn build(pool: PgPool, schema: Option<String>, table: String) -> Self {
        PostgresStorage {
            inner: Arc::new(Inner {
                sql: Sql::new(schema.as_deref(), &table),
                pool,
                schema,
                table,
                ready: AtomicBool::new(false),
                init: tokio::sync::Mutex::new(()),
                cache: Mutex::default(),
                one_statement_commits: Default::default(),
                jobs: Lane::default(),
                groups: Default::default(),
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
            self.inner.schema.clone(),
            name.to_owned(),
        ))
    }

    /// Puts the tables in schema `name` (created on first use) instead of the connection's
    /// `search_path`.
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidTableName`] unless `name` matches
    /// `^[A-Za-z_][A-Za-z0-9_]{0,62}$`.
    pub fn schema(self, name: &str) -> StorageResult<Self> {
        ident::validate(name)?;
        Ok(Self::build(
            self.inner.pool.clone(),
            Some(name.to_owned()),
            self.inner.table.clone(),
        ))
    }

    /// The sessions table's name.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The schema given with [`schema`](Self::schema), if any.
    pub fn schema_name(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// The connection pool, for queries of your own.
    pub fn pool(&self) -> &PgPool {
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
        let mut tx = self.begin_ddl("create").await?;
        let layout = self.layout(&mut tx).await?;
        if layout.is_old() {
            return Err(layout.needs_upgrade(&self.inner.table));
        }
        sqlx::raw_sql(self.inner.sql.create.clone())
            .execute(&mut *tx)
            .await
            .map_err(db("create"))?;
        tx.commit().await.map_err(db("create"))?;
        self.inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// A transaction holding the DDL advisory lock.
    async fn begin_ddl(
        &self,
        operation: &'static str,
    ) -> StorageResult<Transaction<'static, Postgres>> {
        let mut tx = self.inner.pool.begin().await.map_err(db(operation))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(db(operation))?;
        Ok(tx)
    }

    /// The layout of the sessions table, from its columns.
    async fn layout(&self, tx: &mut Transaction<'static, Postgres>) -> StorageResult<Layout> {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
                WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
        )
        .bind(&self.inner.schema)
        .bind(&self.inner.table)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("create"))?;
        Ok(Layout::of(&columns))
    }

    /// Inserts the session row if it is missing and locks it, in one statement: the start of
    /// every two-trip write. Fails with [`StorageError::Corrupt`] if the row does not decode
    /// or its `run_count` is below its stored history.
    async fn lock_session(
        &self,
        tx: &mut sqlx::PgConnection,
        key: &SessionKey,
        now: i64,
        operation: &'static str,
    ) -> StorageResult<Session> {
        let row = sqlx::query(self.inner.sql.lock_session.clone())
            .bind(TEXT.store(&key.session_id))
            .bind(key.kind.as_str())
            .bind(TEXT.store(&key.scope))
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db(operation))?;
        let session = decode_row(&row, operation)?;
        let max_seq: Option<i64> = row
            .try_get("max_seq")
            .map_err(|error| row_error(operation, &key.session_id, error))?;
        check_run_count(&session, max_seq)?;
        Ok(session)
    }

    /// A pooled connection that answers a ping: after a lost connection, the others in the
    /// pool may be dead too (a server restart ends them all); each dead one is closed.
    async fn live_connection(&self) -> StorageResult<PoolConnection<Postgres>> {
        let mut tries = 0;
        loop {
            let mut conn = self.inner.pool.acquire().await.map_err(db("commit"))?;
            match conn.ping().await {
                Ok(()) => return Ok(conn),
                Err(error) if tries <= self.inner.pool.size() => {
                    tracing::debug!(%error, "postgres connection dead; closing it");
                    conn.close_on_drop();
                    tries += 1;
                }
                Err(error) => return Err(crate::error::database("commit", error)),
            }
        }
    }

    /// Hands a commit to the grouping task, starting it on the current runtime if there is
    /// none (first use, or the runtime it ran on has shut down).
    fn send(&self, job: GroupJob) -> StorageResult<()> {
        self.inner.jobs.send(job, |receiver| {
            let slots = self.inner.pool.options().get_max_connections();
            let slots = usize::try_from(slots).unwrap_or(usize::MAX);
            Ok(serve_groups(Arc::downgrade(&self.inner), slots, receiver))
        })
    }

    /// The commits of one group: in one transaction when there are several, each on its
    /// own if that fails (with the check for an already written run if the group lost its
    /// connection, since it may have committed).
    async fn run_group(&self, group: Vec<GroupJob>) {
        if let Err(error) = self.ensure().await {
            // Each commit gets its own error (the first is this one).
            let mut first = Some(error);
            for job in group {
                let result = match first.take() {
                    Some(error) => Err(error),
                    None => match self.ensure().await {
                        Ok(()) => self.commit_alone(&job.write, false).await,
                        Err(error) => Err(error),
                    },
                };
                let _ = job.reply.send(result);
            }
            return;
        }
        let mut retrying = false;
        if group.len() > 1 {
            let writes: Vec<&SessionWrite> = group.iter().map(|job| &job.write).collect();
            match self.commit_group(&writes).await {
                Ok(sessions) => {
                    self.inner.groups.fetch_add(1, Ordering::Relaxed);
                    for (job, session) in group.into_iter().zip(sessions) {
                        let _ = job.reply.send(Ok(session));
                    }
                    return;
                }
                Err((error, lost)) => {
                    tracing::debug!(%error, commits = group.len(), "group commit failed; committing one by one");
                    retrying = lost;
                }
            }
        }
        for job in group {
            let result = self.commit_alone(&job.write, retrying).await;
            let _ = job.reply.send(result);
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One attempt at a commit: in one statement when this store knows the row, else (or
    /// when the row changed since) in a transaction that locks it.
    ///
    /// `retrying`: the previous attempt lost its connection, so it may have been applied; the
    /// locked path then checks whether the session already holds the run.
    async fn commit_once(&self, write: &SessionWrite, retrying: bool) -> StorageResult<Session> {
        let key = write.key();
        let seen = if retrying {
            None
        } else {
            self.cache().take(&key)
        };
        if let Some(seen) = seen {
            let mut conn = self.inner.pool.acquire().await.map_err(db("commit"))?;
            match self.one_statement(&mut conn, write, seen).await {
                Ok(Some((session, stored))) => {
                    self.cache().remember(key, Seen::row(&session, stored));
                    self.inner
                        .one_statement_commits
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(session);
                }
                Ok(None) => {
                    tracing::trace!(session_id = %write.session_id, "session changed since last seen; locking it");
                }
                Err(error) if error.kind() == StorageErrorKind::Unavailable => return Err(error),
                Err(error) => {
                    tracing::debug!(session_id = %write.session_id, %error, "one-statement commit failed; locking the row");
                }
            }
        }
        let (session, stored) = self.locked_commit(write, retrying).await?;
        if let Some(stored) = stored {
            self.cache().remember(key, Seen::row(&session, stored));
        }
        Ok(session)
    }

    /// The commit as one statement, if the row is still as `seen`: `None` (nothing written)
    /// if it is not.
    async fn one_statement(
        &self,
        conn: &mut sqlx::PgConnection,
        write: &SessionWrite,
        seen: Seen,
    ) -> StorageResult<Option<(Session, EncodedSession)>> {
        let sql = &self.inner.sql;
        let has_run = usize::from(write.run.is_some());
        let (existing, compared) = seen.split(TEXT);
        let statement = match compared {
            Some(_) => &sql.swap[has_run],
            None => &sql.insert_new[has_run],
        };
        let session = Session::apply_write(existing, write, now_millis());
        let stored = EncodedSession::new(&session, TEXT)?;
        let mut query = bind_session(sqlx::query(statement.clone()), &session, stored.clone());
        if let Some(run) = &write.run {
            query = bind_run(query, &session.session_id, run)?;
        }
        // Then the row as last seen.
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

    /// The commit in a transaction that locks the row first (four round trips: `BEGIN`, the
    /// lock, the write, `COMMIT`). The stored JSON is `None` when nothing was written because
    /// a lost attempt had already written the run.
    async fn locked_commit(
        &self,
        write: &SessionWrite,
        retrying: bool,
    ) -> StorageResult<(Session, Option<EncodedSession>)> {
        let mut conn = if retrying {
            self.live_connection().await?
        } else {
            self.inner.pool.acquire().await.map_err(db("commit"))?
        };
        let mut tx = conn.begin().await.map_err(db("commit"))?;
        match self.locked_write(&mut tx, write, retrying).await? {
            Locked::Written(session, stored) => {
                tx.commit().await.map_err(db("commit"))?;
                Ok((session, Some(stored)))
            }
            Locked::AlreadyWritten(session) => {
                tx.rollback().await.map_err(db("commit"))?;
                Ok((session, None))
            }
        }
    }

    /// Inside the caller's transaction: locks the row (inserting it if missing), merges the
    /// write into it and writes it. `retrying`: first check whether a lost attempt already
    /// wrote the run.
    async fn locked_write(
        &self,
        conn: &mut sqlx::PgConnection,
        write: &SessionWrite,
        retrying: bool,
    ) -> StorageResult<Locked> {
        let now = now_millis();
        let current = self.lock_session(conn, &write.key(), now, "commit").await?;
        if let (true, Some(run)) = (retrying, &write.run) {
            let written: bool = sqlx::query_scalar(self.inner.sql.has_run.clone())
                .bind(TEXT.store(&write.session_id))
                .bind(write.kind.as_str())
                .bind(TEXT.store(&write.scope))
                .bind(TEXT.store(&run.run_id))
                .fetch_one(&mut *conn)
                .await
                .map_err(db("commit"))?;
            if written {
                return Ok(Locked::AlreadyWritten(current));
            }
        }
        // A row just inserted by `lock_session` has version 0: apply the write as to a new
        // session, exactly as the in-memory reference does.
        let existing = (current.version > 0).then_some(current);
        let session = Session::apply_write(existing, write, now);
        let stored = EncodedSession::new(&session, TEXT)?;
        let statement = match &write.run {
            None => self.inner.sql.update_session.clone(),
            Some(_) => self.inner.sql.update_session_insert_run.clone(),
        };
        let mut query = bind_session(sqlx::query(statement), &session, stored.clone());
        if let Some(run) = &write.run {
            query = bind_run(query, &session.session_id, run)?;
        }
        let written = query.execute(&mut *conn).await.map_err(db("commit"))?;
        if written.rows_affected() != 1 {
            // Cannot happen while the row is locked; never commit half a write.
            return Err(StorageError::database(
                "commit",
                "the locked session row was not updated",
            ));
        }
        Ok(Locked::Written(session, stored))
    }

    /// Several commits in one transaction (one WAL flush for all). On any failure the
    /// transaction is rolled back, what the cache learnt from it forgotten, and the error
    /// returned with whether the connection was lost (the group may then have committed).
    async fn commit_group(
        &self,
        writes: &[&SessionWrite],
    ) -> Result<Vec<Session>, (StorageError, bool)> {
        let lost = |error: StorageError| {
            let lost = lost_connection(&error);
            (error, lost)
        };
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|error| lost(crate::error::database("commit", error)))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(|error| lost(crate::error::database("commit", error)))?;
        let mut sessions = Vec::with_capacity(writes.len());
        let mut failure = None;
        for write in writes {
            match self.group_member(&mut tx, write).await {
                Ok(session) => sessions.push(session),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let outcome = match failure {
            None => match tx.commit().await {
                Ok(()) => return Ok(sessions),
                Err(error) => crate::error::database("commit", error),
            },
            Some(error) => {
                let _ = tx.rollback().await;
                error
            }
        };
        let mut cache = self.cache();
        for write in writes {
            cache.forget(&write.key());
        }
        Err(lost(outcome))
    }

    /// One commit of a group, inside its transaction.
    async fn group_member(
        &self,
        tx: &mut sqlx::PgConnection,
        write: &SessionWrite,
    ) -> StorageResult<Session> {
        let key = write.key();
        let seen = self.cache().take(&key);
        if let Some(seen) = seen
            && let Some((session, stored)) = self.one_statement(tx, write, seen).await?
        {
            self.cache().remember(key, Seen::row(&session, stored));
            return Ok(session);
        }
        match self.locked_write(tx, write, false).await? {
            Locked::Written(session, stored) => {
                self.cache().remember(key, Seen::row(&session, stored));
                Ok(session)
            }
            Locked::AlreadyWritten(session) => Ok(session),
        }
    }

    /// A commit on its own: retried once, on a live connection, if its connection was lost.
    async fn commit_alone(&self, write: &SessionWrite, retrying: bool) -> StorageResult<Session> {
        if retrying {
            return self.commit_once(write, true).await;
        }
        match self.commit_once(write, false).await {
            // Pooled connections are not pinged before use: one found dead (the server
            // restarted, a proxy dropped it) costs one retry on another.
            Err(error) if lost_connection(&error) => {
                tracing::debug!(%error, "postgres connection lost during a commit; retrying once");
                self.commit_once(write, true).await
            }
            result => result,
        }
    }

    async fn select_runs(
        &self,
        conn: &mut sqlx::PgConnection,
        key: &SessionKey,
        limit: Option<usize>,
    ) -> StorageResult<Vec<RunRecord>> {
        let records: Vec<Option<String>> = sqlx::query_scalar(self.inner.sql.select_runs.clone())
            .bind(TEXT.store(&key.session_id))
            .bind(key.kind.as_str())
            .bind(TEXT.store(&key.scope))
            .bind(sql_limit(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(|error| row_error("runs", &key.session_id, error))?;
        let mut runs = records
            .iter()
            .map(|record| decode_run(TEXT, &key.session_id, record.as_deref()))
            .collect::<StorageResult<Vec<_>>>()?;
        runs.reverse();
        Ok(runs)
    }

    /// v1 to v2: the new columns, one row per run, the v1-only columns dropped.
    async fn upgrade_v1(&self, tx: &mut Transaction<'static, Postgres>) -> StorageResult<()> {
        let sql = &self.inner.sql;
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
            // Old layouts never held escaped text: they are read and written as they are.
            let encoded = EncodedSession::new(&session, Text::Raw)?;
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
                    .bind(encode_run(Text::Raw, id, run)?)
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

    /// v2 to v3: every row checked, then the key columns and constraints replaced.
    async fn upgrade_v2(&self, tx: &mut Transaction<'static, Postgres>) -> StorageResult<()> {
        let sql = &self.inner.sql;
        let rows = sqlx::query(sql.v2_select_sessions.clone())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        let mut ids = HashSet::with_capacity(rows.len());
        for row in &rows {
            ids.insert(decode_row_as(row, "upgrade_schema", Text::Raw)?.session_id);
        }
        let runs: Vec<(String, String)> = sqlx::query_as(sql.v2_select_runs.clone())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        for (session_id, record) in &runs {
            check_v2_run(&ids, session_id, record)?;
        }
        sqlx::raw_sql(sql.v2_alter.clone())
            .execute(&mut **tx)
            .await
            .map_err(db("upgrade_schema"))?;
        Ok(())
    }
}

/// Binds `$1` to `$13` of the session update.
/// Binds `$14` to `$17`: the run appended.
fn bind_run<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    session_id: &str,
    run: &RunRecord,
) -> StorageResult<sqlx::query::Query<'q, Postgres, PgArguments>> {
    Ok(query
        .bind(TEXT.store(&run.run_id).into_owned())
        .bind(run.status.as_str())
        .bind(run.created_at)
        .bind(encode_run(TEXT, session_id, run)?))
}

/// Whether `error` says the connection went away (and the operation may be retried once on
/// another): an I/O or TLS failure, or the server ending the session (SQLSTATE class `57P`,
/// as when a backend is terminated or the server shuts down); not a full or closed pool.
fn lost_connection(error: &StorageError) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(error) = cause.downcast_ref::<sqlx::Error>() {
            return match error {
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db_error) => {
                    db_error.code().is_some_and(|code| code.starts_with("57P"))
                }
                _ => false,
            };
        }
        source = cause.source();
    }
    false
}

fn bind_session<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    session: &Session,
    encoded: EncodedSession,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    query
        .bind(TEXT.store(&session.session_id).into_owned())
        .bind(session.kind.as_str())
        .bind(TEXT.store(&session.scope).into_owned())
        .bind(TEXT.store_opt(session.component_id.as_deref()))
        .bind(TEXT.store_opt(session.user_id.as_deref()))
        .bind(TEXT.store_opt(session.session_name.as_deref()))
        .bind(encoded.component_data)
        .bind(encoded.session_state)
        .bind(encoded.extra_data)
        .bind(session.created_at)
        .bind(session.updated_at)
        .bind(session.version)
        .bind(session.run_count)
}

/// Why a first connection failed, in a few words.
fn connect_reason(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused",
            std::io::ErrorKind::TimedOut => "timed out",
            _ => "network error",
        },
        sqlx::Error::Tls(_) => "tls error",
        sqlx::Error::Database(_) => "rejected by the server",
        _ => "connection failed",
    }
}

fn decode_row(row: &PgRow, operation: &'static str) -> StorageResult<Session> {
    decode_row_as(row, operation, TEXT)
}

fn decode_row_as(row: &PgRow, operation: &'static str, text: Text) -> StorageResult<Session> {
    let id: String = row
        .try_get("session_id")
        .map_err(|error| row_error(operation, "?", error))?;
    let id = text.load(id);
    SessionRow::from_row(row)
        .map_err(|error| row_error(operation, &id, error))?
        .into_session(text)
}

/// [`decode_row`], with the row's JSON columns as stored.
fn decode_row_stored(
    row: &PgRow,
    operation: &'static str,
) -> StorageResult<(Session, Option<EncodedSession>)> {
    let id: String = row
        .try_get("session_id")
        .map_err(|error| row_error(operation, "?", error))?;
    let id = TEXT.load(id);
    SessionRow::from_row(row)
        .map_err(|error| row_error(operation, &id, error))?
        .into_session_stored(TEXT)
}

impl fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No connection options: they may hold a password.
        f.debug_struct("PostgresStorage")
            .field("schema", &self.inner.schema)
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn read(
        &self,
        key: &SessionKey,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        self.ensure().await?;
        // One statement, so one snapshot: the session's columns on every row, joined with
        // its most recent runs (one row with a NULL record when it has none).
        let query = || {
            sqlx::query(self.inner.sql.read_session.clone())
                .bind(TEXT.store(&key.session_id).into_owned())
                .bind(key.kind.as_str())
                .bind(TEXT.store(&key.scope).into_owned())
                .bind(sql_limit(Some(options.recent_runs)))
        };
        let rows = match query()
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("read"))
        {
            Err(error) if lost_connection(&error) => {
                tracing::debug!(%error, "postgres connection lost during a read; retrying once");
                let mut conn = self.live_connection().await?;
                query().fetch_all(&mut *conn).await.map_err(db("read"))?
            }
            rows => rows?,
        };
        let Some(first) = rows.first() else {
            self.cache().remember(key.clone(), Seen::Absent);
            return Ok(None);
        };
        let (mut session, stored) = decode_row_stored(first, "read")?;
        if let Some(stored) = stored {
            self.cache()
                .remember(key.clone(), Seen::row(&session, stored));
        }
        if options
            .user_id
            .as_ref()
            .is_some_and(|user| session.user_id.as_ref() != Some(user))
        {
            return Ok(None);
        }
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            // No `seq`: the one row of a session without runs. A run row with a NULL record
            // is corrupt, not skipped.
            let seq: Option<i64> = row
                .try_get("run_seq")
                .map_err(|error| row_error("read", &key.session_id, error))?;
            if seq.is_none() {
                continue;
            }
            let record: Option<String> = row
                .try_get("record")
                .map_err(|error| row_error("read", &key.session_id, error))?;
            runs.push(decode_run(TEXT, &key.session_id, record.as_deref())?);
        }
        session.runs = runs;
        Ok(Some(session))
    }

    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        // Handed over before anything is awaited, so that the commit completes even if this
        // future is dropped (the grouping task creates the tables if needed).
        let (reply, answer) = oneshot::channel();
        self.send(GroupJob { write, reply })?;
        answer.await.map_err(|_| {
            StorageError::database_with_kind(
                "commit",
                StorageErrorKind::Unavailable,
                "the postgres commit task stopped before answering (its runtime shut down)",
            )
        })?
    }

    fn commit_survives_drop(&self) -> bool {
        true
    }

    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        self.ensure().await?;
        let mut conn = self.inner.pool.acquire().await.map_err(db("runs"))?;
        self.select_runs(&mut conn, key, limit).await
    }

    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        self.ensure().await?;
        let rows = sqlx::query(self.inner.sql.list_sessions.clone())
            .bind(TEXT.store_opt(query.user_id.as_deref()))
            .bind(TEXT.store_opt(query.component_id.as_deref()))
            .bind(query.kind.map(|kind| kind.as_str()))
            .bind(TEXT.store_opt(query.scope.as_deref()))
            .bind(sql_limit(query.limit))
            .bind(query.after.as_ref().map(|cursor| cursor.updated_at))
            .bind(
                query
                    .after
                    .as_ref()
                    .map(|cursor| TEXT.store(&cursor.key.session_id).into_owned()),
            )
            .bind(query.after.as_ref().map(|cursor| cursor.key.kind.as_str()))
            .bind(
                query
                    .after
                    .as_ref()
                    .map(|cursor| TEXT.store(&cursor.key.scope).into_owned()),
            )
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
        self.cache().forget_covered(key);
        let sql = &self.inner.sql;
        let mut tx = self.inner.pool.begin().await.map_err(db("delete"))?;
        for statement in [&sql.delete_runs, &sql.delete_sessions] {
            sqlx::query(statement.clone())
                .bind(TEXT.store(&key.session_id))
                .bind(key.kind.as_str())
                .bind(TEXT.store(&key.scope))
                .execute(&mut *tx)
                .await
                .map_err(db("delete"))?;
        }
        tx.commit().await.map_err(db("delete"))
    }

    async fn create(&self) -> StorageResult<()> {
        self.ensure().await
    }

    async fn upgrade_schema(&self) -> StorageResult<()> {
        let guard = self.inner.init.lock().await;
        *self.cache() = Cache::default();
        let mut tx = self.begin_ddl("upgrade_schema").await?;
        let layout = self.layout(&mut tx).await?;
        if layout.is_old() {
            if layout == Layout::V1 {
                self.upgrade_v1(&mut tx).await?;
            }
            self.upgrade_v2(&mut tx).await?;
            tx.commit().await.map_err(db("upgrade_schema"))?;
            tracing::info!(table = %self.inner.table, from = ?layout, "upgraded session table");
        }
        drop(guard);
        self.ensure().await
    }

    async fn drop_tables(&self) -> StorageResult<()> {
        let _guard = self.inner.init.lock().await;
        *self.cache() = Cache::default();
        let mut tx = self.begin_ddl("drop_tables").await?;
        sqlx::raw_sql(self.inner.sql.drop.clone())
            .execute(&mut *tx)
            .await
            .map_err(db("drop_tables"))?;
        tx.commit().await.map_err(db("drop_tables"))?;
        self.inner.ready.store(false, Ordering::Release);
        Ok(())
    }
    fn supports_durable(&self) -> bool {
        true
    }

    async fn write_durable(&self, write: DurableWrite) -> StorageResult<Option<Session>> {
        self.write_durable_detached(write).await
    }

    async fn load_durable(&self, run_id: &str) -> StorageResult<Option<DurableState>> {
        self.load_durable_now(run_id).await
    }

    async fn durable_runs(&self, query: &DurableQuery) -> StorageResult<Vec<DurableRun>> {
        self.durable_runs_now(query).await
    }

    async fn read_events(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<StoredEvent>> {
        self.read_events_now(run_id, after, limit).await
    }

    async fn prune_durable(&self, ended_before: i64) -> StorageResult<u64> {
        self.prune_durable_now(ended_before).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly.
mod tests {
    use super::*;

    /// Commits of a session this store has seen take the one-statement path; one that finds
    /// the row changed by another store takes the locking path and is still merged.
    #[tokio::test]
    async fn commits_of_a_seen_row_are_one_statement() {
        let Ok(url) = std::env::var("BUDDY_TEST_POSTGRES_URL") else {
            eprintln!("SKIPPED: set BUDDY_TEST_POSTGRES_URL to run this Postgres test");
            return;
        };
        let table = format!("one_statement_{}", std::process::id());
        let a = PostgresStorage::connect(&url)
            .await
            .unwrap()
            .table(&table)
            .unwrap();
        let b = PostgresStorage::connect(&url)
            .await
            .unwrap()
            .table(&table)
            .unwrap();
        let write = |n: usize| {
            let mut write = SessionWrite::new(SessionKey::new(
                "s",
                buddy_core::session::SessionKind::Workflow,
            ));
            let mut after = serde_json::Map::new();
            after.insert(format!("k{n}"), serde_json::json!(n));
            write.state_patch =
                buddy_core::session::StatePatch::diff(&serde_json::Map::new(), &after);
            write
        };
        let count = |s: &PostgresStorage| s.inner.one_statement_commits.load(Ordering::Relaxed);
        a.commit(write(0)).await.unwrap();
        for n in 1..5 {
            a.commit(write(n)).await.unwrap();
        }
        assert_eq!(count(&a), 4);
        b.commit(write(5)).await.unwrap();
        let merged = a.commit(write(6)).await.unwrap();
        assert_eq!(count(&a), 4, "the changed row is locked, not swapped");
        assert_eq!(merged.session_state.len(), 7);
        a.drop_tables().await.unwrap();
    }

    fn run_write(session_id: &str, n: usize) -> SessionWrite {
        let mut write = SessionWrite::new(SessionKey::new(
            session_id,
            buddy_core::session::SessionKind::Workflow,
        ));
        let mut after = serde_json::Map::new();
        after.insert(format!("k{n}"), serde_json::json!(n));
        write.state_patch = buddy_core::session::StatePatch::diff(&serde_json::Map::new(), &after);
        write.run = Some(RunRecord {
            run_id: format!("{session_id}-{n}"),
            session_id: session_id.to_owned(),
            ..RunRecord::default()
        });
        write
    }

    /// Commits queued together go into one transaction, each caller told its own result; a
    /// commit that fails inside a group (a corrupt row) costs the others nothing.
    #[tokio::test]
    async fn queued_commits_are_grouped_and_a_failure_loses_no_other() {
        let Ok(url) = std::env::var("BUDDY_TEST_POSTGRES_URL") else {
            eprintln!("SKIPPED: set BUDDY_TEST_POSTGRES_URL to run this Postgres test");
            return;
        };
        let table = format!("grouped_{}", std::process::id());
        let storage = PostgresStorage::connect(&url)
            .await
            .unwrap()
            .table(&table)
            .unwrap();
        storage.create().await.unwrap();
        storage.commit(run_write("bad", 0)).await.unwrap();
        storage.commit(run_write("bad", 1)).await.unwrap();
        let corrupt = format!("UPDATE \"{table}\" SET run_count = 1 WHERE session_id = 'bad'");
        sqlx::raw_sql(AssertSqlSafe(corrupt))
            .execute(storage.pool())
            .await
            .unwrap();

        let before = storage.inner.groups.load(Ordering::Relaxed);
        let commits = (0..32).map(|n| storage.commit(run_write(&format!("s{}", n % 4), n)));
        let results = futures::future::join_all(commits).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(
            storage.inner.groups.load(Ordering::Relaxed) > before,
            "grouped"
        );

        let commits = (0..16).map(|n| {
            let session = if n == 7 {
                "bad".to_owned()
            } else {
                format!("g{}", n % 2)
            };
            storage.commit(run_write(&session, 100 + n))
        });
        let results = futures::future::join_all(commits).await;
        for (n, result) in results.into_iter().enumerate() {
            if n == 7 {
                assert!(result.unwrap_err().is_corrupt());
            } else {
                result.unwrap();
            }
        }
        let mut stored = 0;
        for s in ["g0", "g1"] {
            let key = SessionKey::new(s, buddy_core::session::SessionKind::Workflow);
            stored += storage.runs(&key, None).await.unwrap().len();
        }
        assert_eq!(stored, 15);
        for s in 0..4 {
            let key = SessionKey::new(format!("s{s}"), buddy_core::session::SessionKind::Workflow);
            assert_eq!(storage.runs(&key, None).await.unwrap().len(), 8);
        }
        storage.drop_tables().await.unwrap();
    }
}
