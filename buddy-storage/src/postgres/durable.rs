//! Durable runs in Postgres: the write's transaction (the run's row locked, the write
//! checked, written, and the session write committed with the commit's own code) and the
//! reads beside it. The statements are built with the others, in `Sql::new`.

use buddy_core::StorageError;
use buddy_core::durable::{DurableQuery, DurableRun, DurableState, DurableWrite, StoredEvent};
use buddy_core::session::Session;
use buddy_core::storage::StorageResult;
use sqlx::postgres::PgRow;
use sqlx::{Connection, Row};

use super::{Locked, PostgresStorage, TEXT, lost_connection};
use crate::codec::sql_limit;
use crate::durable::{self as dur, EncodedWrite, StoredFence, WRITE};
use crate::error::db;

/// A failed durable transaction, and whether trying it again on another connection is safe
/// (nothing was sent that could have been applied).
struct Failed {
    error: StorageError,
    before_writes: bool,
}

impl Failed {
    fn early(error: StorageError) -> Self {
        Failed {
            error,
            before_writes: true,
        }
    }

    fn late(error: StorageError) -> Self {
        Failed {
            error,
            before_writes: false,
        }
    }
}

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

    /// One transaction: the row locked, the write checked and written, the session write
    /// committed. A connection found dead before anything was written is replaced once.
    async fn write_durable_now(&self, write: &DurableWrite) -> StorageResult<Option<Session>> {
        self.ensure().await?;
        let encoded = EncodedWrite::new(TEXT, write)?;
        let mut conn = self.inner.pool.acquire().await.map_err(db(WRITE))?;
        let result = self.durable_transaction(&mut conn, write, &encoded).await;
        let result = match result {
            Err(failed) if failed.before_writes && lost_connection(&failed.error) => {
                tracing::debug!(error = %failed.error, "postgres connection lost before a durable write; retrying once");
                drop(conn);
                let mut conn = self.live_connection().await?;
                self.durable_transaction(&mut conn, write, &encoded).await
            }
            result => result,
        };
        result.map_err(|failed| {
            if let Some(session) = &write.session {
                self.cache().forget(&session.key());
            }
            failed.error
        })
    }

    async fn durable_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        write: &DurableWrite,
        encoded: &EncodedWrite,
    ) -> Result<Option<Session>, Failed> {
        let statements = &self.inner.sql.durable;
        let mut tx = conn
            .begin()
            .await
            .map_err(|error| Failed::early(crate::error::database(WRITE, error)))?;
        // Writers of one run queue on this lock; a run that does not exist locks nothing
        // (two writers creating one run collide on its first event instead).
        let row = sqlx::query(statements.lock.clone())
            .bind(&encoded.run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|error| Failed::early(crate::error::database(WRITE, error)))?;
        let stored = match row {
            Some(row) => Some(stored_fence(&row, &write.run_id).map_err(Failed::late)?),
            None => None,
        };
        // The events' place in the log is checked by the write itself, on a snapshot taken
        // after the lock was granted.
        if let Err(error) = dur::check(write, stored.as_ref(), None) {
            let _ = tx.rollback().await;
            return Err(Failed::late(error));
        }
        let row = bind_write(sqlx::query(statements.write.clone()), encoded)
            .bind(dur::expected_last(write))
            .fetch_one(&mut *tx)
            .await
            .map_err(|error| Failed::late(crate::error::database(WRITE, error)))?;
        let applied: bool = row
            .try_get("applied")
            .map_err(|error| Failed::late(crate::error::database(WRITE, error)))?;
        if !applied {
            let last: Option<i64> = row
                .try_get("last_seq")
                .map_err(|error| Failed::late(crate::error::database(WRITE, error)))?;
            let last = dur::stored_seq(&write.run_id, last).map_err(Failed::late)?;
            let _ = tx.rollback().await;
            let first = write.events.first().map_or(0, |event| event.seq);
            return Err(Failed::late(dur::out_of_order(&write.run_id, first, last)));
        }
        let session = match &write.session {
            None => None,
            Some(session_write) => {
                // The commit's own path inside this transaction, locking the session row
                // (not the one-statement swap), so that a failure is the commit's error.
                let key = session_write.key();
                self.cache().forget(&key);
                match self
                    .locked_write(&mut tx, session_write, false)
                    .await
                    .map_err(Failed::late)?
                {
                    Locked::Written(session, stored) => {
                        self.cache()
                            .remember(key, crate::cache::Seen::row(&session, stored));
                        Some(session)
                    }
                    Locked::AlreadyWritten(session) => Some(session),
                }
            }
        };
        tx.commit()
            .await
            .map_err(|error| Failed::late(crate::error::database(WRITE, error)))?;
        Ok(session)
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

/// The locked row's `attempt` and `status`.
fn stored_fence(row: &PgRow, run_id: &str) -> StorageResult<StoredFence> {
    Ok(StoredFence {
        attempt: row.try_get("attempt").map_err(durable_row(run_id))?,
        status: row.try_get("status").map_err(durable_row(run_id))?,
    })
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
