//! Tables of an older layout converted to the current one.

use std::collections::HashSet;

use buddy_core::storage::StorageResult;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Sqlite, Transaction};

use super::writer::{TEXT, Table, decode_row};
use crate::codec::{EncodedSession, encode_run};
use crate::error::db;
use crate::migrate::{Layout, V1Row, check_v2_run};

/// Converts a table of an old layout to the current one, in one transaction; returns the
/// layout found (nothing is done for the current one).
pub(super) async fn run(conn: &mut SqliteConnection, table: &Table) -> StorageResult<Layout> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db("upgrade_schema"))?;
    let columns: Vec<String> = sqlx::query_scalar(table.sql.table_columns.clone())
        .bind(&table.name)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("upgrade_schema"))?;
    let layout = Layout::of(&columns);
    if !layout.is_old() {
        return Ok(layout);
    }
    if layout == Layout::V1 {
        upgrade_v1(&mut tx, table).await?;
    }
    upgrade_v2(&mut tx, table).await?;
    tx.commit().await.map_err(db("upgrade_schema"))?;
    tracing::info!(table = %table.name, from = ?layout, "upgraded session table");
    Ok(layout)
}

/// v1 to v2: the new columns, one row per run, the v1-only columns dropped.
async fn upgrade_v1(tx: &mut Transaction<'_, Sqlite>, table: &Table) -> StorageResult<()> {
    let sql = &table.sql;
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
async fn upgrade_v2(tx: &mut Transaction<'_, Sqlite>, table: &Table) -> StorageResult<()> {
    let sql = &table.sql;
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
