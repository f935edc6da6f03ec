//! Every SQL statement of a table, built once from its validated name.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::codec::{SQLITE_SESSION_COLUMNS, SQLITE_V2_SESSION_COLUMNS};
use crate::ident::{index_name, quote, runs_table};

/// Every statement, built once per table from the validated name.
pub(super) struct Sql {
    pub(super) create_in_transaction: SqlStr,
    pub(super) drop: SqlStr,
    pub(super) read_session: SqlStr,
    /// The statements of a commit on its own, in a transaction of its own.
    pub(super) alone: Writes,
    /// The statements of a commit inside a group's transaction, under a savepoint.
    pub(super) grouped: Writes,
    pub(super) select_runs: SqlStr,
    pub(super) list_sessions: SqlStr,
    pub(super) delete_runs: SqlStr,
    pub(super) delete_sessions: SqlStr,
    pub(super) table_columns: SqlStr,
    pub(super) v1_select: SqlStr,
    pub(super) v1_alter: SqlStr,
    pub(super) v1_create_v2: SqlStr,
    pub(super) v1_update: SqlStr,
    pub(super) v1_insert_run: SqlStr,
    pub(super) v1_drop_columns: SqlStr,
    pub(super) v2_select_sessions: SqlStr,
    pub(super) v2_select_runs: SqlStr,
    pub(super) v2_rebuild: SqlStr,
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
    pub(super) fn new(table: &str) -> Self {
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
        let writes = Bodies::new(&t, &r, cols, key, &upsert, &insert_run);
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
            // One row, so one hand-off back from sqlx's worker thread (it sends rows one by
            // one): the most recent runs' records as one JSON array, oldest first (NULL
            // without runs; a NULL record as `null`, which decodes as corrupt).
            read_session: sql(format!(
                "SELECT {cols},
                    (SELECT '[' || group_concat(ifnull(record, 'null'), ',' ORDER BY seq) || ']'
                     FROM (SELECT record, seq FROM {r} WHERE {key}
                           ORDER BY seq DESC LIMIT ?4)) AS records
                 FROM {t} WHERE {key}"
            )),
            alone: writes.wrap("BEGIN IMMEDIATE", "COMMIT"),
            grouped: writes.wrap("SAVEPOINT commit_one", "RELEASE commit_one"),
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
            create_in_transaction: sql(format!(
                "BEGIN IMMEDIATE; {}; COMMIT",
                create.trim_end().trim_end_matches(';')
            )),
        }
    }
}

/// The statements a commit runs, wrapped in a transaction ([`Sql::alone`]) or a savepoint
/// ([`Sql::grouped`]). Indexed by whether the write appends a run.
///
/// Every variant binds the same arguments: `?1` to `?13` the session row as written,
/// `?14` to `?17` the run (NULL without one), and for [`swap`](Self::swap) `?18` to `?27`
/// the row as this store last saw it.
pub(super) struct Writes {
    /// Begins, then reads the session row and its highest run `seq` (the slow path's first
    /// trip).
    pub(super) read: SqlStr,
    /// Writes the row (and the run) and ends (the slow path's second trip).
    pub(super) write: [SqlStr; 2],
    /// One trip: begins, updates the row only if it is still exactly as last seen (and then
    /// appends the run), ends, and returns `applied` (1 or 0).
    pub(super) swap: [SqlStr; 2],
    /// One trip: begins, inserts the row only if there is none (and then appends the run),
    /// ends, and returns `applied` (1 or 0).
    pub(super) insert: [SqlStr; 2],
}

/// The unwrapped statements [`Writes`] are made of.
struct Bodies {
    select: String,
    upsert: String,
    insert_run: String,
    guarded_run: String,
    swap: String,
    insert_new: String,
}

impl Bodies {
    fn new(t: &str, r: &str, cols: &str, key: &str, upsert: &str, insert_run: &str) -> Self {
        Bodies {
            select: format!(
                "SELECT {cols}, (SELECT MAX(seq) FROM {r} WHERE {key}) AS max_seq
                 FROM {t} WHERE {key}"
            ),
            upsert: upsert.to_owned(),
            insert_run: insert_run.to_owned(),
            // Appends the run only if the statement before it changed the session row.
            guarded_run: format!(
                "INSERT INTO {r} (session_id, kind, scope, seq, run_id, status, created_at, record)
                 SELECT ?1, ?2, ?3, ?13, ?14, ?15, ?16, ?17 WHERE changes() = 1"
            ),
            // Every column `Session::apply_write` reads is compared, so a row deleted and
            // written again since (the same version, other contents) is never mistaken for
            // the one this store saw.
            swap: format!(
                "UPDATE {t} SET component_id = ?4, user_id = ?5, session_name = ?6,
                    component_data = ?7, session_state = ?8, extra_data = ?9, updated_at = ?11,
                    version = ?12, run_count = ?13
                 WHERE {key} AND version = ?18 AND created_at = ?19 AND updated_at = ?20
                    AND run_count = ?21 AND component_id IS ?22 AND user_id IS ?23
                    AND session_name IS ?24 AND component_data = ?25 AND session_state = ?26
                    AND extra_data IS ?27"
            ),
            insert_new: format!(
                "INSERT INTO {t} (session_id, kind, scope, component_id, user_id, session_name,
                    component_data, session_state, extra_data, created_at, updated_at, version,
                    run_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (session_id, kind, scope) DO NOTHING"
            ),
        }
    }

    fn wrap(&self, begin: &str, end: &str) -> Writes {
        let Bodies {
            select,
            upsert,
            insert_run,
            guarded_run,
            swap,
            insert_new,
        } = self;
        // `changes()` after the end is the count of the last INSERT or UPDATE: the guarded
        // run when there is one, else the row's statement.
        let one_trip = |body: &str| {
            [
                sql(format!(
                    "{begin}; {body}; {end}; SELECT changes() AS applied"
                )),
                sql(format!(
                    "{begin}; {body}; {guarded_run}; {end}; SELECT changes() AS applied"
                )),
            ]
        };
        Writes {
            read: sql(format!("{begin}; {select}")),
            write: [
                sql(format!("{upsert}; {end}")),
                sql(format!("{upsert}; {insert_run}; {end}")),
            ],
            swap: one_trip(swap),
            insert: one_trip(insert_new),
        }
    }
}
