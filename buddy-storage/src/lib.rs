//! SQLite and Postgres session storage for buddy, built on [sqlx].
//!
//! Both backends implement [`buddy_core::storage::Storage`] with the semantics of the
//! in-memory reference [`MemoryStorage`](buddy_core::storage::MemoryStorage), and pass the
//! same conformance suite.
//!
//! # Which one?
//!
//! - [`SqliteStorage`] (feature `sqlite`, on by default): one file next to your program, no
//!   server. Right for a single machine, including several processes sharing the file.
//!   `":memory:"` gives a throw-away database for tests.
//! - [`PostgresStorage`] (feature `postgres`): for sessions shared by several machines or
//!   services, or when you already run Postgres. Connect from a URL or reuse a `PgPool`;
//!   tables can live in their own schema.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=NORMAL`, so a committed write
//! survives a crash of the process, but the last writes before a power loss or OS crash may
//! be lost (the file stays consistent); Postgres gives what the server is configured for
//! (with the default `synchronous_commit=on`, a committed write survives both).
//!
//! Both write a run in about the same time whatever the length of the session's history,
//! usually in one trip to the database (see [`SqliteStorage`] and [`PostgresStorage`]): on a
//! small shared machine, 60–130 µs per commit for SQLite and 0.28–0.38 ms for Postgres over
//! loopback (`cargo bench -p buddy-storage`, which prints floors beside the figures).
//!
//! ```no_run
//! # async fn demo() -> Result<(), buddy_core::StorageError> {
//! use buddy_core::session::{SessionKey, SessionKind, SessionWrite};
//! use buddy_core::storage::{ReadOptions, Storage};
//! use buddy_storage::SqliteStorage;
//!
//! let storage = SqliteStorage::open("tmp/workflows.db").await?.table("workflows")?;
//! // With feature `postgres`:
//! // let storage = PostgresStorage::connect("postgres://app@db/app").await?.schema("buddy")?;
//!
//! // A workflow's session, and the session of its member `researcher` under the same id.
//! let workflow = SessionKey::new("s1", SessionKind::Workflow);
//! let researcher = SessionKey::new("s1", SessionKind::Agent).scope("researcher");
//! storage.commit(SessionWrite::new(workflow.clone())).await?;
//! storage.commit(SessionWrite::new(researcher.clone())).await?;
//! let session = storage.read(&workflow, &ReadOptions::with_runs(20)).await?;
//! assert!(session.is_some());
//! // Deleting the workflow's session deletes its members' too.
//! storage.delete_session(&workflow).await?;
//! # Ok(()) }
//! # let _ = demo;
//! ```
//!
//! # Schema
//!
//! A storage value stands for one sessions table `{table}` and one runs table
//! `{table}_runs`. `SqliteStorage::table` creates them right away; otherwise they are
//! created on first use (or by [`Storage::create`]):
//!
//! | `{table}` | |
//! | --- | --- |
//! | `session_id`, `kind`, `scope` | primary key (a [`SessionKey`](buddy_core::session::SessionKey)) |
//! | `kind` | `workflow`, `agent` or `team` |
//! | `scope` | the owner's member path (`""` for a top-level component, `"writers/critic"`) |
//! | `component_id`, `user_id`, `session_name` | text, nullable |
//! | `component_data`, `session_state`, `extra_data` | JSON (`jsonb` in Postgres) |
//! | `created_at`, `updated_at` | Unix milliseconds; `created_at` never changes |
//! | `version` | incremented on every write |
//! | `run_count` | runs recorded in all |
//!
//! `{table}_runs` holds one row per run: `session_id`, `kind`, `scope`, `seq` (1, 2, ... per
//! session), `run_id`, `status`, `created_at` and the whole
//! [`RunRecord`](buddy_core::RunRecord) as JSON in `record`, with primary key
//! `(session_id, kind, scope, seq)` and a foreign key to its session. A write appends one row
//! and never rewrites older ones, so the 10,000th run of a session costs what the first did,
//! and a read loads only the most recent runs it asks for.
//!
//! ## Durable runs
//!
//! Both backends keep durable runs ([`Storage::write_durable`] and the reads beside it) in
//! three more tables named after `{table}`, created and dropped with the others:
//!
//! | table | primary key | columns |
//! | --- | --- | --- |
//! | `{table}_durable_runs` | `run_id` | `workflow`, `status`, `attempt`, `session_id`, `created_at`, `updated_at`, `ended_at`, and the whole [`DurableRun`](buddy_core::durable::DurableRun) as JSON in `record` |
//! | `{table}_journal` | `(run_id, key)` | `position`, `kind`, `status`, `updated_at`, and the whole [`JournalEntry`](buddy_core::durable::JournalEntry) as JSON in `record` |
//! | `{table}_events` | `(run_id, seq)` | the [`RunEvent`](buddy_core::RunEvent) as JSON in `event` |
//!
//! with indexes for listing (`workflow, status, created_at`) and pruning (`ended_at`). A
//! table name too long for `{table}_durable_runs` to fit in 63 characters gets shortened
//! durable table names (a prefix and a hash, as index names). Durable runs are not part of
//! a session: deleting a session keeps them; `prune_durable` and `drop_tables` remove them.
//!
//! A durable write is one transaction: the run's fence
//! ([`check_fence`](buddy_core::durable::check_fence)) and the events' sequence numbers are
//! checked first (a write that fails either changes nothing), then the row is replaced, the
//! entries upserted by key, the events appended and the session write committed by the
//! commit's own code. SQLite usually does it in one trip (a statement that fails the batch
//! unless the write may apply, then the writes), and groups durable writes with the commits
//! queued beside them; Postgres locks the run's row (`SELECT ... FOR UPDATE`), so writers of
//! one run in several processes queue. A journal write (one entry and one event) takes
//! about what a commit does (`journal_write_us` in the bench).
//!
//! A stored run, entry or event that does not decode is
//! [`StorageError::CorruptRun`](buddy_core::StorageError::CorruptRun) naming the run and
//! what is bad (`run row`, ``journal entry `key#1` ``, `event 7`); `durable_runs` skips a
//! corrupt run with a `tracing` warning, as `list_sessions` skips a corrupt session.
//!
//! [`Storage::write_durable`]: buddy_core::storage::Storage::write_durable
//!
//! Every statement addresses a session by its whole key. Deleting a session deletes the
//! sessions stored under it, exactly as
//! [`SessionKey::covers`](buddy_core::session::SessionKey::covers) says (a prefix test on
//! `scope`, never `LIKE`). Sessions are listed newest first, then by session id (descending),
//! kind and scope (ascending), strings compared byte-wise on both backends.
//!
//! Floats are written as the shortest text that reads back to the same `f64`, and read back
//! bit for bit (serde_json's `float_roundtrip`); integers up to `u64::MAX` and down to
//! `i64::MIN` are exact. Postgres `jsonb` has no negative zero: `-0.0` reads back as `0.0`.
//!
//! Table and schema names must match `^[A-Za-z_][A-Za-z0-9_]{0,62}$`; anything else is
//! [`StorageError::InvalidTableName`](buddy_core::StorageError::InvalidTableName) when the
//! name is given, before any SQL runs. Queries are checked at run time, so no database is
//! needed to compile.
//!
//! # Upgrading older tables
//!
//! [`Storage::upgrade_schema`] converts, in place and in one transaction, tables of the v1
//! layout (one JSON `memory` column holding every run, as the Python original wrote them)
//! and of the v2 layout (sessions keyed by `session_id` alone); existing sessions get scope
//! `""`. Every old row is decoded first, and one that does not decode aborts the upgrade
//! with [`StorageError::Corrupt`](buddy_core::StorageError::Corrupt), leaving the tables as
//! they were. A store that finds an old layout refuses to use it, with an error saying to
//! call `upgrade_schema()`.
//!
//! # Testing a backend: the conformance suite
//!
//! Feature `conformance` adds the module `buddy_storage::conformance`, the cases every [`Storage`] must pass (the
//! SQLite and Postgres backends here and the in-memory reference run them in this crate's
//! tests). Call `conformance::run_all` from a test of your own backend with a factory of
//! fresh stores, or generate one test per case with `buddy_storage::conformance_tests!`.
//!
//! [`Storage`]: buddy_core::storage::Storage
//!
//! # Concurrency: nothing is lost
//!
//! [`Storage::commit`] is one transaction that locks the session, reads its *current* stored
//! state, merges the writer's [`StatePatch`](buddy_core::session::StatePatch) into it (only
//! the keys that run set or removed), writes the row and appends the run:
//!
//! - Postgres inserts the row if it is missing (`ON CONFLICT DO NOTHING`) and then locks it
//!   with `SELECT ... FOR UPDATE`, so writers of one session queue on the row lock while
//!   other sessions are written in parallel;
//! - SQLite starts the transaction with `BEGIN IMMEDIATE`, taking the database's write lock
//!   up front; writers (threads or processes) wait up to the busy timeout and a write that
//!   still finds the database busy is retried.
//!
//! The guarantee: concurrent runs of one session, in one process or many, never lose a run
//! record, and a state key written by one run is never reverted by a run that did not write
//! it. When two runs write the same key, the one that commits last wins.
//!
//! # Errors
//!
//! Driver errors become [`StorageError::Database`](buddy_core::StorageError::Database) (with
//! the operation's name; never a connection URL), and a stored row that does not decode
//! becomes [`StorageError::Corrupt`](buddy_core::StorageError::Corrupt) naming the session:
//! the session is never silently reset. Fields unknown to this version (written by a newer
//! one) are ignored.
//!
//! What counts as corrupt, on every read path (`read`, `runs`, and the read of the existing
//! row that starts a `commit`): a JSON column that is not JSON or not an object; a run record
//! that is NULL, not a JSON object, or has no string `run_id`; a NULL in a column that needs
//! a value (`created_at`, `updated_at`, `version`, `run_count`, `component_data`,
//! `session_state`); an unknown `kind`; and, at commit, a `run_count` below the highest
//! stored run `seq` (the next run would collide with a stored one). A failed read or commit
//! leaves the row as it was. [`Storage::list_sessions`] skips a corrupt session instead of
//! failing: it logs a `tracing` warning naming the session and what is bad, and lists the
//! others.
//!
//! Opening or connecting fails with
//! [`StorageError::Connect`](buddy_core::StorageError::Connect), which names what could not
//! be reached (the SQLite file's path; the Postgres host, port and database, never a
//! password) and why (`connection refused`, `timed out`, ...).
//! `PostgresStorage::connect` gives up after 5 seconds, and its pool waits at most 5
//! seconds for a connection.
//!
//! # NUL characters
//!
//! Everything that can be stored is stored, NUL (`\u{0}`) included, in ids, names, state,
//! extra data and run records. SQLite keeps NUL as it is. Postgres `TEXT` refuses NUL bytes
//! and `jsonb` refuses `\u0000`, so the Postgres backend writes NUL as the two characters
//! U+FDD0 `0` and U+FDD0 itself as U+FDD0 U+FDD0 (in text columns and in every JSON string
//! and key) and reverses this exactly on read. U+FDD0 is a Unicode noncharacter, reserved
//! for such internal use; what other programs read directly from the tables is the escaped
//! form, and sessions whose ids contain NUL or U+FDD0 are ordered by it.
//!
//! Every error has a [`kind`](buddy_core::StorageError::kind): a database locked by another
//! writer is `Busy` (SQLite `SQLITE_BUSY`/`SQLITE_LOCKED`; Postgres lock timeouts,
//! serialization failures, deadlocks), a unique or primary key violation is `Conflict`, a
//! closed or timed-out pool, a refused or lost connection or a server shutting down is
//! `Unavailable`; anything else the driver reports is `Other`.
//!
//! [`Storage::commit`]: buddy_core::storage::Storage::commit
//! [`Storage::list_sessions`]: buddy_core::storage::Storage::list_sessions
//! [`Storage::create`]: buddy_core::storage::Storage::create
//! [`Storage::upgrade_schema`]: buddy_core::storage::Storage::upgrade_schema

#![doc(test(attr(deny(warnings))))]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod cache;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod durable;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod ident;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod lane;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStorage;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStorage;
