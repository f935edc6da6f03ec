//! Durable runs in Postgres: the write (one statement that locks the run's row, checks and
//! writes, in a transaction with the session write's commit when there is one) and the
//! reads beside it. The statements are built with the others, in `Sql::new`.

use buddy_core::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use buddy_core::session::Session;
use buddy_core::storage::{ReadOptions, Storage, StorageResult};
use buddy_core::{StorageError, StorageErrorKind};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres, Row};

use super::{Locked, PostgresStorage, TEXT, lost_connection};
use crate::cache::Seen;
use crate::codec::sql_limit;
use crate::durable::{self as dur, EncodedWrite, StoredFence, WRITE};
use crate::error::db;

impl PostgresStorage {
    /// [`Storage::write_durable`](buddy_core::storage::Storage::write_durable), on a task of
    /// its own when there is a runtime, so that a write that has started completes even if
    /// the caller's future is dropped (as commits do).
    pub(super) async fn write_durable_detached(
        &self,
        write: DurableWrite,
    ) -> StorageResult<Option<Session>> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let storage = self.clone();
                runtime
                    .spawn(async move { storage.write_durable_now(&write).await })
                    .await
                    .map_err(|error| StorageError::database(WRITE, error))?
            }
            Err(_) => self.write_durable_now(&write).await,
        }
    }

    /// The write: one statement (its own transaction) without a session write, else a
    /// transaction of that statement and the session commit. A connection found dead is
    /// replaced once; when the retry is refused, the write is checked for having been
    /// applied by the lost attempt (the connection may have died after the commit).
    async fn write_durable_now(&self, write: &DurableWrite) -> StorageResult<Option<Session>> {
        self.ensure().await?;
        let encoded = EncodedWrite::new(TEXT, write)?;
        let conn = self.inner.pool.acquire().await.map_err(db(WRITE))?;
        let result = self.durable_attempt(conn, write, &encoded).await;
        let error = match result {
            Err(error) if lost_connection(&error) => error,
            result => return result,
        };
        tracing::debug!(%error, "postgres connection lost during a durable write; retrying once");
        let conn = self.live_connection().await?;
        match self.durable_attempt(conn, write, &encoded).await {
            Err(refused @ (StorageError::Fenced { .. } | StorageError::Database { .. }))
                if refused.is_conflict() =>
            {
                if !self.already_written(write).await? {
                    return Err(refused);
                }
                match &write.session {
                    None => Ok(None),
                    Some(session) => {
                        let options = ReadOptions::default();
                        Storage::read(self, &session.key(), &options).await
                    }
                }
            }
            result => result,
        }
    }

    /// One attempt on `conn`; on failure the session's cached row is forgotten.
    async fn durable_attempt(
        &self,
        mut conn: PoolConnection<Postgres>,
        write: &DurableWrite,
        encoded: &EncodedWrite,
    ) -> StorageResult<Option<Session>> {
        let result = match &write.session {
            None => self
                .durable_statement(&mut conn, write, encoded)
                .await
                .map(|()| None),
            Some(_) => self.durable_transaction(&mut conn, write, encoded).await,
        };
        if result.is_err()
            && let Some(session) = &write.session
        {
            self.cache().forget(&session.key());
        }
        result
    }

    /// The durable statement (see `DurableSql::write`); refused: the error the reference
    /// gives, from the stored state the statement was checked against.
    async fn durable_statement(
        &self,
        conn: &mut sqlx::PgConnection,
        write: &DurableWrite,
        encoded: &EncodedWrite,
    ) -> StorageResult<()> {
        // Events that do not follow each other are refused whatever is stored (`-1` matches
        // no log); the stored state then says what the reference reports first.
        let expected = match dur::check_events(&write.run_id, &write.events, None) {
            Ok(()) => dur::expected_last(write),
            Err(_) => Some(-1),
        };
        let row = bind_write(sqlx::query(self.inner.sql.durable.write.clone()), encoded)
            .bind(expected)
            .bind(write.fence.map(|fence| i64::from(fence.attempt)))
            .bind(
                write
                    .fence
                    .and_then(|fence| fence.status)
                    .map(|status| status.as_str()),
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(db(WRITE))?;
        let run_id = write.run_id.as_str();
        let applied: bool = row.try_get("applied").map_err(durable_row(run_id))?;
        if applied {
            return Ok(());
        }
        let attempt: Option<i64> = row.try_get("attempt").map_err(durable_row(run_id))?;
        let status: Option<String> = row.try_get("status").map_err(durable_row(run_id))?;
        let last: Option<i64> = row.try_get("last_seq").map_err(durable_row(run_id))?;
        let stored = attempt
            .zip(status)
            .map(|(attempt, status)| StoredFence { attempt, status });
        let last = dur::stored_seq(run_id, last)?;
        dur::check(write, stored.as_ref(), Some(last))?;
        // The statement refused what the same rules accept: the run changed in between.
        Err(StorageError::database_with_kind(
            WRITE,
            StorageErrorKind::Conflict,
            format!("durable run `{run_id}` changed while it was written"),
        ))
    }

    /// The durable statement and the session write's commit (the commit's own locking
    /// path, not the one-statement swap, so that a failure is the commit's error) in one
    /// transaction.
    async fn durable_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        write: &DurableWrite,
        encoded: &EncodedWrite,
    ) -> StorageResult<Option<Session>> {
        let mut tx = conn.begin().await.map_err(db(WRITE))?;
        self.durable_statement(&mut tx, write, encoded).await?;
        let Some(session_write) = &write.session else {
            tx.commit().await.map_err(db(WRITE))?;
            return Ok(None);
        };
        let key = session_write.key();
        self.cache().forget(&key);
        let session = match self.locked_write(&mut tx, session_write, false).await? {
            Locked::Written(session, stored) => {
                tx.commit().await.map_err(db(WRITE))?;
                self.cache().remember(key, Seen::row(&session, stored));
                session
            }
            Locked::AlreadyWritten(session) => {
                tx.commit().await.map_err(db(WRITE))?;
                session
            }
        };
        Ok(Some(session))
    }

    /// Whether everything `write` writes is stored as it writes it: its row, its entries
    /// and its events (after a lost connection, whose attempt may have committed).
    async fn already_written(&self, write: &DurableWrite) -> StorageResult<bool> {
        let Some(state) = self.load_durable_now(&write.run_id).await? else {
            return Ok(false);
        };
        if write.run.as_ref().is_some_and(|run| *run != state.run) {
            return Ok(false);
        }
        let entries_stored = write.entries.iter().all(|entry| {
            // The last of a key is the one stored.
            let last = write.entries.iter().rev().find(|e| e.key == entry.key);
            state.entries.iter().any(|stored| Some(stored) == last)
        });
        if !entries_stored {
            return Ok(false);
        }
        let Some(first) = write.events.first() else {
            return Ok(true);
        };
        let stored = self
            .read_events_now(
                &write.run_id,
                first.seq.saturating_sub(1),
                write.events.len(),
            )
            .await?;
        Ok(stored.len() == write.events.len()
            && stored.iter().zip(&write.events).all(|(stored, written)| {
                stored.seq == written.seq && stored.event == written.event
            }))
    }

    pub(super) async fn load_durable_now(
        &self,
        run_id: &str,
    ) -> StorageResult<Option<DurableState>> {
        self.ensure().await?;
        let stored_id = TEXT.store(run_id).into_owned();
        // One statement: the row, the log's end and the journal from one snapshot.
        let query = || sqlx::query(self.inner.sql.durable.load.clone()).bind(stored_id.clone());
        let row = match query()
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("load_durable"))
        {
            Err(error) if lost_connection(&error) => {
                let mut conn = self.live_connection().await?;
                query()
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db("load_durable"))?
            }
            row => row?,
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let record: Option<String> = row.try_get("record").map_err(durable_row(run_id))?;
        let last_seq: Option<i64> = row.try_get("last_seq").map_err(durable_row(run_id))?;
        let entries: Option<Vec<Option<String>>> =
            row.try_get("entries").map_err(durable_row(run_id))?;
        let mut decoded = Vec::new();
        for record in entries.unwrap_or_default() {
            let record =
                record.ok_or_else(|| dur::corrupt(run_id, "journal entry", "`record` is NULL"))?;
            decoded.push(dur::decode_entry(TEXT, run_id, &record)?);
        }
        Ok(Some(DurableState {
            run: dur::decode_run(TEXT, run_id, record.as_deref())?,
            entries: decoded,
            last_seq: dur::stored_seq(run_id, last_seq)?,
        }))
    }

    pub(super) async fn durable_runs_now(
        &self,
        query: &DurableQuery,
    ) -> StorageResult<Vec<DurableRun>> {
        self.ensure().await?;
        let workflow = TEXT.store_opt(query.workflow.as_deref());
        let statuses = dur::query_statuses(query);
        let statement = || {
            sqlx::query_as::<_, (String, Option<String>)>(self.inner.sql.durable.list.clone())
                .bind(workflow.clone())
                .bind(statuses.clone())
                .bind(sql_limit(query.limit))
        };
        let rows = match statement()
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("durable_runs"))
        {
            Err(error) if lost_connection(&error) => {
                let mut conn = self.live_connection().await?;
                statement()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db("durable_runs"))?
            }
            rows => rows?,
        };
        let mut runs = Vec::with_capacity(rows.len());
        for (run_id, record) in rows {
            let run_id = TEXT.load(run_id);
            runs.extend(dur::skip_corrupt(dur::decode_run(
                TEXT,
                &run_id,
                record.as_deref(),
            ))?);
        }
        Ok(runs)
    }

    pub(super) async fn read_events_now(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<StoredEvent>> {
        self.ensure().await?;
        let stored_id = TEXT.store(run_id).into_owned();
        let statement = || {
            sqlx::query_as::<_, (i64, Option<String>)>(self.inner.sql.durable.events.clone())
                .bind(stored_id.clone())
                .bind(dur::sql_seq(after))
                .bind(sql_limit(Some(limit)))
        };
        let rows = match statement()
            .fetch_all(&self.inner.pool)
            .await
            .map_err(durable_error(run_id))
        {
            Err(error) if lost_connection(&error) => {
                let mut conn = self.live_connection().await?;
                statement()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(durable_error(run_id))?
            }
            rows => rows?,
        };
        rows.into_iter()
            .map(|(seq, event)| {
                let seq = dur::stored_seq(run_id, Some(seq))?;
                dur::decode_event(TEXT, run_id, seq, event.as_deref())
            })
            .collect()
    }

    pub(super) async fn prune_durable_now(&self, ended_before: i64) -> StorageResult<u64> {
        self.ensure().await?;
        // One statement, so the runs and their journals and logs go together.
        let pruned: i64 = sqlx::query_scalar(self.inner.sql.durable.prune.clone())
            .bind(ended_before)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("prune_durable"))?;
        Ok(u64::try_from(pruned).unwrap_or(0))
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `$1` to `$17` of the durable write (see `DurableSql::write`).
fn bind_write<'q>(query: Query<'q>, write: &EncodedWrite) -> Query<'q> {
    let query = query.bind(write.run_id.clone());
    let query = match &write.run {
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
    };
    let entries = &write.entries;
    query
        .bind(entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.position).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.status.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.updated_at).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.record.clone()).collect::<Vec<_>>())
        .bind(write.events.iter().map(|(seq, _)| *seq).collect::<Vec<_>>())
        .bind(
            write
                .events
                .iter()
                .map(|(_, event)| event.clone())
                .collect::<Vec<_>>(),
        )
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

/// [`durable_row`] for a whole query (its rows decoded by sqlx).
fn durable_error(run_id: &str) -> impl Fn(sqlx::Error) -> StorageError + '_ {
    let row = durable_row(run_id);
    move |error| match error {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => row(error),
        error => {
            let kind = crate::error::kind_of(&error);
            StorageError::database_with_kind("read_events", kind, error)
        }
    }
}
