//! The error type of buddy's runtime.

use std::fmt;

use crate::run::RunResponse;

/// A boxed error that can cross threads, the currency of user-defined failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error's message followed by its causes, `message: cause: cause`: the one wording of a
/// failed run's record and of an HTTP error's `detail`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Everything that can go wrong in a workflow, an agent or a team.
///
/// `Debug` prints the message and its causes (what `main` returning
/// `Result<(), buddy::Error>` shows), and `{:#?}` the variant's fields.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A run panicked (a workflow body, a model, a team's leader); the run was recorded with
    /// status `error`.
    #[error("run panicked: {message}")]
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A durable run paused, is not deterministic, cannot be resumed, or got a bad value.
    #[error(transparent)]
    Durable(#[from] crate::durable::DurableError),
    /// The run itself finished, but writing it to storage failed.
    ///
    /// The run's response is kept here so that nothing the run produced is lost.
    #[error("run `{run_id}` finished but could not be persisted", run_id = response.run_id.as_deref().unwrap_or("?"))]
    Persist {
        /// The response of the run that could not be written.
        response: Box<RunResponse>,
        /// Why the write failed.
        #[source]
        source: StorageError,
    },
    /// The stored session state does not decode into the workflow's state type.
    #[error("session state of session `{session_id}` does not decode into `{type_name}`")]
    StateDecode {
        /// The session whose state is malformed.
        session_id: String,
        /// The Rust type the state should decode into.
        type_name: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The session state could not be encoded to JSON.
    #[error("session state does not encode to a JSON object")]
    StateEncode(#[source] serde_json::Error),
    /// Run input given as JSON does not match the component's parameters.
    #[error("invalid run input for `{workflow}`")]
    Input {
        /// The workflow type (or `Agent`, `Team`) that rejected the input.
        workflow: &'static str,
        /// Where in the input the problem is, as a path (`options.depth`, `items[2]`);
        /// empty when it is the input as a whole.
        field: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A session that was asked for by id does not exist.
    #[error("session `{session_id}` not found")]
    SessionNotFound {
        /// The id asked for.
        session_id: String,
    },
    /// A builder was finished without a value for a field that has no default.
    #[error(
        "missing value for field `{field}` of `{type_name}`; set it on the builder or give it a default"
    )]
    MissingField {
        /// The type being built.
        type_name: &'static str,
        /// The field without a value.
        field: &'static str,
    },
    /// A configuration value is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A model call failed (after retries, for retryable failures).
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// An agent's tool-call loop went past its `max_turns` model calls.
    #[error("agent `{agent}` reached its limit of {max_turns} model turns without a final answer")]
    MaxTurns {
        /// The agent's name or id.
        agent: String,
        /// The limit.
        max_turns: usize,
    },
    /// A model's structured output does not decode into the requested Rust type.
    #[error("model output does not fit `{type_name}`")]
    StructuredOutput {
        /// The Rust type the output should decode into.
        type_name: &'static str,
        /// The model's output, as text.
        content: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A tool was called with arguments that do not decode into its parameters.
    #[error("invalid arguments for tool `{tool}`")]
    ToolArguments {
        /// The tool's name.
        tool: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A message from user code (`Error::msg`).
    #[error("{0}")]
    Message(String),
    /// Any other error from user code.
    #[error(transparent)]
    Other(BoxError),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.fields(f);
        }
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        if source.is_some() {
            f.write_str("\n\nCaused by:")?;
        }
        let mut index = 0;
        while let Some(cause) = source {
            write!(f, "\n    {index}: {cause}")?;
            index += 1;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    /// The variant and its fields, for `{:#?}`.
    fn fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Panicked { message } => f
                .debug_struct("Panicked")
                .field("message", message)
                .finish(),
            Error::Storage(error) => f.debug_tuple("Storage").field(error).finish(),
            Error::Durable(error) => f.debug_tuple("Durable").field(error).finish(),
            Error::Persist { response, source } => f
                .debug_struct("Persist")
                .field("response", response)
                .field("source", source)
                .finish(),
            Error::StateDecode {
                session_id,
                type_name,
                source,
            } => f
                .debug_struct("StateDecode")
                .field("session_id", session_id)
                .field("type_name", type_name)
                .field("source", source)
                .finish(),
            Error::StateEncode(source) => f.debug_tuple("StateEncode").field(source).finish(),
            Error::Input {
                workflow,
                field,
                source,
            } => f
                .debug_struct("Input")
                .field("workflow", workflow)
                .field("field", field)
                .field("source", source)
                .finish(),
            Error::SessionNotFound { session_id } => f
                .debug_struct("SessionNotFound")
                .field("session_id", session_id)
                .finish(),
            Error::MissingField { type_name, field } => f
                .debug_struct("MissingField")
                .field("type_name", type_name)
                .field("field", field)
                .finish(),
            Error::Config(message) => f.debug_tuple("Config").field(message).finish(),
            Error::Model(error) => f.debug_tuple("Model").field(error).finish(),
            Error::MaxTurns { agent, max_turns } => f
                .debug_struct("MaxTurns")
                .field("agent", agent)
                .field("max_turns", max_turns)
                .finish(),
            Error::StructuredOutput {
                type_name,
                content,
                source,
            } => f
                .debug_struct("StructuredOutput")
                .field("type_name", type_name)
                .field("content", content)
                .field("source", source)
                .finish(),
            Error::ToolArguments { tool, source } => f
                .debug_struct("ToolArguments")
                .field("tool", tool)
                .field("source", source)
                .finish(),
            Error::Message(message) => f.debug_tuple("Message").field(message).finish(),
            Error::Other(error) => f.debug_tuple("Other").field(error).finish(),
        }
    }

    /// An error carrying only a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Message(message.to_string())
    }

    /// Wraps any error type.
    pub fn other(error: impl Into<BoxError>) -> Self {
        Error::Other(error.into())
    }

    /// The response that a failed persist still carries, if any.
    pub fn response(&self) -> Option<&RunResponse> {
        match self {
            Error::Persist { response, .. } => Some(response),
            _ => None,
        }
    }

    /// The model error, if a model call failed.
    pub fn model_error(&self) -> Option<&crate::model::ModelError> {
        match self {
            Error::Model(error) => Some(error),
            _ => None,
        }
    }

    /// The durable-run error, if it is one.
    pub fn durable_error(&self) -> Option<&crate::durable::DurableError> {
        match self {
            Error::Durable(error) => Some(error),
            _ => None,
        }
    }

    /// Whether a durable run paused for input (the run is stored, waiting for its values).
    pub fn is_paused(&self) -> bool {
        self.durable_error().is_some_and(|error| error.is_paused())
    }

    /// Whether this error came from the storage backend (reading or writing).
    pub fn is_storage(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::Persist { .. })
    }
}

impl From<BoxError> for Error {
    fn from(error: BoxError) -> Self {
        match error.downcast::<Error>() {
            Ok(error) => *error,
            Err(error) => Error::Other(error),
        }
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// What can go wrong in a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A table (or schema) name is not a plain SQL identifier.
    #[error("invalid table name `{name}`: {reason}")]
    InvalidTableName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A stored row does not decode.
    #[error("stored session `{session_id}` is corrupt ({what})")]
    Corrupt {
        /// The session the row belongs to.
        session_id: String,
        /// Which part of the row is bad.
        what: &'static str,
        /// What the decoder said.
        #[source]
        source: BoxError,
    },
    /// A value could not be encoded for storage.
    #[error("session `{session_id}` could not be encoded for storage")]
    Encode {
        /// The session being written.
        session_id: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The database could not be opened or connected to, when a storage was created.
    ///
    /// `target` names what was being reached (the server's host, port and database, or the
    /// database file's path), never a password or a whole connection URL.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// What was being reached, for example `postgres server 10.0.0.5:5432, database app`
        /// or `sqlite database /var/lib/app/sessions.db`.
        target: String,
        /// Why, in a few words: `connection refused`, `timed out`, `cannot open the file`.
        reason: &'static str,
        /// What kind of failure it is, as far as the backend can tell.
        kind: StorageErrorKind,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The storage does not implement an operation (a custom backend without durable runs).
    #[error("this storage does not support {operation}")]
    Unsupported {
        /// What is not supported.
        operation: &'static str,
    },
    /// A durable write's fence did not hold: the run changed since the writer read it (another
    /// process resumed it, it was answered, cancelled or it ended). Nothing was written.
    #[error("durable run `{run_id}` changed under this write ({what})")]
    Fenced {
        /// The run.
        run_id: String,
        /// What differs: `attempt 3, expected 2`, `status completed, expected paused`,
        /// `no such run`.
        what: String,
    },
    /// A stored durable run, journal entry or event does not decode.
    #[error("stored durable run `{run_id}` is corrupt ({what})")]
    CorruptRun {
        /// The run the row belongs to.
        run_id: String,
        /// Which row or part is bad.
        what: String,
        /// What the decoder said.
        #[source]
        source: BoxError,
    },
    /// The database answered with an error or could not be reached.
    #[error("database error during {operation}")]
    Database {
        /// The storage operation that failed (`read`, `commit`, ...).
        operation: &'static str,
        /// What kind of failure it is, as far as the backend can tell.
        kind: StorageErrorKind,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

/// What kind of storage failure an error is: what a caller branches on (retry, report,
/// give up) without looking at driver errors.
///
/// Backends classify the errors they know; anything else is [`Other`](Self::Other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The database is locked by another writer (SQLite `SQLITE_BUSY` or `SQLITE_LOCKED`,
    /// a Postgres lock timeout, serialization failure or deadlock): trying again later may
    /// succeed.
    Busy,
    /// A write collided with a row that already exists (a unique or primary key violation).
    Conflict,
    /// A stored row does not decode ([`StorageError::Corrupt`]).
    Corrupt,
    /// The database cannot be reached: the pool is closed or timed out, the connection was
    /// refused or lost, or the server is shutting down.
    Unavailable,
    /// A table or schema name is not a plain SQL identifier
    /// ([`StorageError::InvalidTableName`]).
    InvalidName,
    /// A value could not be encoded for storage ([`StorageError::Encode`]).
    Encode,
    /// The operation is not implemented by this storage ([`StorageError::Unsupported`]).
    Unsupported,
    /// Any other failure.
    Other,
}

impl StorageErrorKind {
    /// The kind in words (`busy`, `conflict`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StorageErrorKind::Busy => "busy",
            StorageErrorKind::Conflict => "conflict",
            StorageErrorKind::Corrupt => "corrupt",
            StorageErrorKind::Unavailable => "unavailable",
            StorageErrorKind::InvalidName => "invalid name",
            StorageErrorKind::Encode => "encode",
            StorageErrorKind::Unsupported => "unsupported",
            StorageErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StorageError {
    /// What kind of failure this is.
    pub fn kind(&self) -> StorageErrorKind {
        match self {
            StorageError::InvalidTableName { .. } => StorageErrorKind::InvalidName,
            StorageError::Corrupt { .. } | StorageError::CorruptRun { .. } => {
                StorageErrorKind::Corrupt
            }
            StorageError::Unsupported { .. } => StorageErrorKind::Unsupported,
            StorageError::Fenced { .. } => StorageErrorKind::Conflict,
            StorageError::Encode { .. } => StorageErrorKind::Encode,
            StorageError::Database { kind, .. } | StorageError::Connect { kind, .. } => *kind,
        }
    }

    /// Whether a stored row failed to decode.
    pub fn is_corrupt(&self) -> bool {
        self.kind() == StorageErrorKind::Corrupt
    }

    /// Whether the database was busy (locked by another writer); trying again may succeed.
    pub fn is_busy(&self) -> bool {
        self.kind() == StorageErrorKind::Busy
    }

    /// Whether a write collided with an existing row.
    pub fn is_conflict(&self) -> bool {
        self.kind() == StorageErrorKind::Conflict
    }

    /// Whether the database could not be reached.
    pub fn is_unavailable(&self) -> bool {
        self.kind() == StorageErrorKind::Unavailable
    }

    /// Wraps a driver error for `operation`, of kind [`StorageErrorKind::Other`].
    pub fn database(operation: &'static str, source: impl Into<BoxError>) -> Self {
        StorageError::database_with_kind(operation, StorageErrorKind::Other, source)
    }

    /// Wraps a driver error for `operation` that the backend knows to be of `kind`.
    pub fn database_with_kind(
        operation: &'static str,
        kind: StorageErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        StorageError::Database {
            operation,
            kind,
            source: source.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_kind() {
        let corrupt = StorageError::Corrupt {
            session_id: "s".into(),
            what: "row",
            source: "bad".into(),
        };
        assert_eq!(corrupt.kind(), StorageErrorKind::Corrupt);
        assert!(corrupt.is_corrupt());
        let name = StorageError::InvalidTableName {
            name: "x y".into(),
            reason: "space",
        };
        assert_eq!(name.kind(), StorageErrorKind::InvalidName);
        let encode = StorageError::Encode {
            session_id: "s".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        assert_eq!(encode.kind(), StorageErrorKind::Encode);
        let connect = StorageError::Connect {
            target: "postgres server 127.0.0.1:1, database app".into(),
            reason: "connection refused",
            kind: StorageErrorKind::Unavailable,
            source: "refused".into(),
        };
        assert!(connect.is_unavailable());
        assert_eq!(
            connect.to_string(),
            "cannot connect to postgres server 127.0.0.1:1, database app: connection refused"
        );
        let other = StorageError::database("read", "boom");
        assert_eq!(other.kind(), StorageErrorKind::Other);
        assert!(!other.is_busy() && !other.is_unavailable() && !other.is_conflict());
        let busy = StorageError::database_with_kind("commit", StorageErrorKind::Busy, "locked");
        assert!(busy.is_busy());
        assert_eq!(busy.to_string(), "database error during commit");
        assert!(
            StorageError::database_with_kind("read", StorageErrorKind::Unavailable, "gone")
                .is_unavailable()
        );
        assert!(
            StorageError::database_with_kind("commit", StorageErrorKind::Conflict, "dup")
                .is_conflict()
        );
        assert_eq!(StorageErrorKind::Unavailable.to_string(), "unavailable");
    }
}
