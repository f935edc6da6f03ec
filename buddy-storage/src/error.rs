//! Driver errors to [`StorageError`]s of the right [`StorageErrorKind`].

use buddy_core::{StorageError, StorageErrorKind};

/// Wraps `error` from `operation`, classified by [`kind_of`].
pub(crate) fn database(operation: &'static str, error: sqlx::Error) -> StorageError {
    StorageError::database_with_kind(operation, kind_of(&error), error)
}

/// The closure form of [`database`], for `map_err`.
pub(crate) fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> StorageError {
    move |error| database(operation, error)
}

/// What kind of failure a driver error is.
pub(crate) fn kind_of(error: &sqlx::Error) -> StorageErrorKind {
    match error {
        sqlx::Error::PoolClosed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StorageErrorKind::Unavailable,
        sqlx::Error::Database(db_error) => database_kind(db_error.as_ref()),
        _ => StorageErrorKind::Other,
    }
}

fn database_kind(db_error: &dyn sqlx::error::DatabaseError) -> StorageErrorKind {
    #[cfg(feature = "sqlite")]
    if let Some(error) = db_error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
        return sqlite_kind(error);
    }
    #[cfg(feature = "postgres")]
    if let Some(error) = db_error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres_kind(error.code());
    }
    match db_error.kind() {
        sqlx::error::ErrorKind::UniqueViolation => StorageErrorKind::Conflict,
        _ => StorageErrorKind::Other,
    }
}

/// SQLite result codes: the primary code is the low byte of the extended one.
#[cfg(feature = "sqlite")]
fn sqlite_kind(error: &sqlx::sqlite::SqliteError) -> StorageErrorKind {
    use sqlx::error::DatabaseError;

    let code = error
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .unwrap_or(0);
    match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED
        5 | 6 => StorageErrorKind::Busy,
        // SQLITE_CANTOPEN: the database file cannot be reached.
        14 => StorageErrorKind::Unavailable,
        _ if error.kind() == sqlx::error::ErrorKind::UniqueViolation => StorageErrorKind::Conflict,
        _ => StorageErrorKind::Other,
    }
}

/// Postgres SQLSTATE codes.
#[cfg(feature = "postgres")]
fn postgres_kind(code: &str) -> StorageErrorKind {
    match code {
        // unique_violation
        "23505" => StorageErrorKind::Conflict,
        // serialization_failure, deadlock_detected, lock_not_available
        "40001" | "40P01" | "55P03" => StorageErrorKind::Busy,
        // too_many_connections, admin/crash shutdown, cannot connect now
        "53300" | "57P01" | "57P02" | "57P03" => StorageErrorKind::Unavailable,
        // connection_exception and its subclasses
        _ if code.starts_with("08") => StorageErrorKind::Unavailable,
        _ => StorageErrorKind::Other,
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes() {
        assert_eq!(postgres_kind("23505"), StorageErrorKind::Conflict);
        assert_eq!(postgres_kind("40P01"), StorageErrorKind::Busy);
        assert_eq!(postgres_kind("08006"), StorageErrorKind::Unavailable);
        assert_eq!(postgres_kind("42P01"), StorageErrorKind::Other);
        assert_eq!(
            kind_of(&sqlx::Error::PoolClosed),
            StorageErrorKind::Unavailable
        );
        assert_eq!(kind_of(&sqlx::Error::RowNotFound), StorageErrorKind::Other);
    }
}
