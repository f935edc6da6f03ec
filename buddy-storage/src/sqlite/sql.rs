//! Every SQL statement of a table, built once from its validated name.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::codec::{SQLITE_SESSION_COLUMNS, SQLITE_V2_SESSION_COLUMNS};
use crate::durable::{Names, finished_statuses};
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
    /// The statements of durable runs.
    pub(super) durable: DurableSql,
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
        let names = Names::of(table);
        let (d, j, e) = (
            quote(&names.runs),
            quote(&names.journal),
            quote(&names.events),
        );
        let durable_create = format!(
            "CREATE TABLE IF NOT EXISTS {d} (
                run_id TEXT NOT NULL PRIMARY KEY,
                workflow TEXT NOT NULL,
                status TEXT NOT NULL,
                attempt INTEGER NOT NULL,
                session_id TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                ended_at INTEGER,
                record TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {list_idx} ON {d} (workflow, status, created_at, run_id);
            CREATE INDEX IF NOT EXISTS {ended_idx} ON {d} (ended_at);
            CREATE TABLE IF NOT EXISTS {j} (
                run_id TEXT NOT NULL,
                key TEXT NOT NULL,
                position INTEGER NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                updated_at INTEGER NOT NULL,
                record TEXT NOT NULL,
                PRIMARY KEY (run_id, key)
            );
            CREATE TABLE IF NOT EXISTS {e} (
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                event TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            );",
            list_idx = quote(&names.list_idx),
            ended_idx = quote(&names.ended_idx),
        );
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
                ON {t} (updated_at DESC, session_id DESC, kind, scope);
            {durable_create}"
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
                "DROP TABLE IF EXISTS {e}; DROP TABLE IF EXISTS {j}; DROP TABLE IF EXISTS {d};
                 DROP TABLE IF EXISTS {r}; DROP TABLE IF EXISTS {t};"
            )),
            select_runs: sql(format!(
                "SELECT record FROM {r} WHERE {key} ORDER BY seq DESC LIMIT ?4"
            )),
            list_sessions: sql(format!(
                "SELECT {cols} FROM {t}
                 WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR component_id = ?2)
                   AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR scope = ?4)
                   AND (?6 IS NULL OR updated_at < ?6 OR (updated_at = ?6
                     AND (session_id < ?7 OR (session_id = ?7
                       AND (kind > ?8 OR (kind = ?8 AND scope > ?9))))))
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
            durable: DurableSql::new(&d, &j, &e),
        }
    }
}

/// The statements of durable runs (tables `d`, `j`, `e`: runs, journal, events).
///
/// A write binds `?1` the run id; `?2` its events and `?3` its entries as JSON arrays (see
/// `EncodedWrite`), inserted with `json_each`, so one statement text serves any number of
/// them; `?4` to `?11` its row's columns (`workflow`, `status`, `attempt`, `session_id`,
/// `created_at`, `updated_at`, `ended_at`, `record`; `record` NULL: the write leaves the row
/// alone); the guard of the one-trip write also `?12` and `?13` the fence's attempt and
/// status (NULL: no fence, any status) and `?14` the log's last `seq` the events must follow
/// (NULL without events).
///
/// The numbering matters: in a batch, sqlx binds a parameter number a statement skips as
/// the next positional argument, counted across the batch, and stops binding a statement
/// (leaving the rest NULL) once that count passes the arguments given. A test below checks
/// that no batch skips more numbers than it binds.
pub(super) struct DurableSql {
    /// One trip: the guard (which fails the batch with a NOT NULL violation unless the fence
    /// holds, the run exists or the write brings its row, and the events follow the stored
    /// log), then the row, the entries and the events: `[begins and commits, begins and
    /// stays in the transaction, inside one]`.
    pub(super) guarded: [SqlStr; 3],
    /// Begins the transaction and reads the stored run's `attempt` and `status` (NULL: no
    /// such run) and its last event's `seq`.
    pub(super) lock: SqlStr,
    /// Writes the row, the entries and the events: `[and stays in the transaction, and
    /// commits]`.
    pub(super) write: [SqlStr; 2],
    /// The row, the last `seq` and every entry (one JSON array, by key) in one row.
    pub(super) load: SqlStr,
    /// `run_id` and `record` of the runs matching `?1` (workflow or NULL), `?2` (a JSON
    /// array of statuses, or NULL), at most `?3`.
    pub(super) list: SqlStr,
    /// A page of the log as one JSON array of `[seq, event]`: after `?2`, at most `?3`.
    pub(super) events: SqlStr,
    /// Deletes the runs that ended before `?1` with their journals and logs, in one
    /// transaction; returns how many runs.
    pub(super) prune: SqlStr,
}

impl DurableSql {
    fn new(d: &str, j: &str, e: &str) -> Self {
        let lock = format!(
            "SELECT runs.attempt, runs.status,
                (SELECT MAX(seq) FROM {e} WHERE run_id = ?1) AS last_seq
             FROM (SELECT 1) LEFT JOIN {d} AS runs ON runs.run_id = ?1"
        );
        // `WHERE` after a `SELECT` that ends in `ON CONFLICT`: SQLite's parser needs it.
        let body = format!(
            "INSERT INTO {d} (run_id, workflow, status, attempt, session_id, created_at,
                updated_at, ended_at, record)
             SELECT ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 WHERE ?11 IS NOT NULL
             ON CONFLICT (run_id) DO UPDATE SET workflow = excluded.workflow,
                status = excluded.status, attempt = excluded.attempt,
                session_id = excluded.session_id, created_at = excluded.created_at,
                updated_at = excluded.updated_at, ended_at = excluded.ended_at,
                record = excluded.record;
             INSERT INTO {j} (run_id, key, position, kind, status, updated_at, record)
             SELECT ?1, item.value ->> 0, item.value ->> 1, item.value ->> 2,
                item.value ->> 3, item.value ->> 4, item.value ->> 5
             FROM json_each(?3) AS item WHERE true
             ON CONFLICT (run_id, key) DO UPDATE SET position = excluded.position,
                kind = excluded.kind, status = excluded.status,
                updated_at = excluded.updated_at, record = excluded.record;
             INSERT INTO {e} (run_id, seq, event)
             SELECT ?1, item.value ->> 0, item.value ->> 1 FROM json_each(?2) AS item"
        );
        // SQLite raises errors only in triggers; a row that breaks a NOT NULL constraint
        // fails the statement (and so the batch) just as well, and is inserted only when the
        // write must not apply.
        let guard = format!(
            "INSERT INTO {e} (run_id, seq, event) SELECT ?1, NULL, NULL WHERE NOT (
                (?12 IS NULL OR EXISTS (SELECT 1 FROM {d}
                    WHERE run_id = ?1 AND attempt = ?12 AND (?13 IS NULL OR status = ?13)))
                AND (?11 IS NOT NULL OR EXISTS (SELECT 1 FROM {d} WHERE run_id = ?1))
                AND (?14 IS NULL
                    OR (SELECT ifnull(MAX(seq), 0) FROM {e} WHERE run_id = ?1) = ?14))"
        );
        let finished = format!("status IN ({}) AND ended_at < ?1", finished_statuses());
        DurableSql {
            guarded: [
                sql(format!("BEGIN IMMEDIATE; {guard}; {body}; COMMIT")),
                sql(format!("BEGIN IMMEDIATE; {guard}; {body}")),
                sql(format!("{guard}; {body}")),
            ],
            lock: sql(format!("BEGIN IMMEDIATE; {lock}")),
            write: [sql(body.clone()), sql(format!("{body}; COMMIT"))],
            load: sql(format!(
                "SELECT record, (SELECT MAX(seq) FROM {e} WHERE run_id = ?1) AS last_seq,
                    (SELECT '[' || group_concat(ifnull(record, 'null'), ',' ORDER BY key) || ']'
                     FROM {j} WHERE run_id = ?1) AS entries
                 FROM {d} WHERE run_id = ?1"
            )),
            list: sql(format!(
                "SELECT run_id, record FROM {d}
                 WHERE (?1 IS NULL OR workflow = ?1)
                   AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2)))
                 ORDER BY created_at, run_id LIMIT ?3"
            )),
            events: sql(format!(
                "SELECT '[' || group_concat('[' || seq || ',' || ifnull(event, 'null') || ']',
                    ',' ORDER BY seq) || ']' AS events
                 FROM (SELECT seq, event FROM {e} WHERE run_id = ?1 AND seq > ?2
                       ORDER BY seq LIMIT ?3)"
            )),
            prune: sql(format!(
                "BEGIN IMMEDIATE;
                 DELETE FROM {e} WHERE run_id IN (SELECT run_id FROM {d} WHERE {finished});
                 DELETE FROM {j} WHERE run_id IN (SELECT run_id FROM {d} WHERE {finished});
                 DELETE FROM {d} WHERE {finished};
                 COMMIT;
                 SELECT changes() AS pruned"
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

#[cfg(test)]
mod tests {
    use super::*;

    /// How many parameter numbers the statements of `batch` skip in all (sqlx binds each
    /// skipped one as the next positional argument, across the batch), and the highest
    /// number used.
    fn skipped_and_highest(batch: &str) -> (usize, usize) {
        let mut skipped = 0;
        let mut highest = 0;
        for statement in batch.split(';') {
            let mut numbers = Vec::new();
            let mut rest = statement;
            while let Some(at) = rest.find('?') {
                rest = &rest[at + 1..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(number) = digits.parse::<usize>() {
                    numbers.push(number);
                }
            }
            let max = numbers.iter().copied().max().unwrap_or(0);
            skipped += (1..=max).filter(|n| !numbers.contains(n)).count();
            highest = highest.max(max);
        }
        (skipped, highest)
    }

    /// Every durable batch binds all its parameters (see [`DurableSql`]): it never skips
    /// more numbers than arguments are given (the highest number).
    #[test]
    fn durable_batches_bind_every_parameter() {
        let sql = Sql::new("t");
        let durable = &sql.durable;
        for batch in durable
            .guarded
            .iter()
            .chain(&durable.write)
            .chain([&durable.lock])
        {
            let (skipped, highest) = skipped_and_highest(batch.as_str());
            assert!(
                skipped <= highest,
                "{skipped} skipped in {}",
                batch.as_str()
            );
        }
    }
}
