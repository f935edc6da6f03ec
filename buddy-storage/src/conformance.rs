//! The storage conformance suite: what every [`Storage`] must do, as runnable cases.
//!
//! Each case is written once against an `Arc<dyn Storage>`; the in-memory
//! [`MemoryStorage`] defines what is right, and the
//! project's SQLite and Postgres backends run the same cases. A backend of your own passes
//! when [`run_all`] returns:
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use buddy_core::storage::MemoryStorage;
//! use buddy_storage::conformance::{self, Fixture};
//!
//! // A fresh, empty store per case (here in memory; yours would create a temporary database
//! // and keep what must stay alive, such as a temporary directory, as the fixture's guard).
//! conformance::run_all(|| async { Fixture::new(MemoryStorage::new(), ()) }).await;
//! # });
//! ```
//!
//! [`run_all`] needs a multi-threaded tokio runtime (some cases write from several tasks at
//! once) and panics with the case's name at the first failure. To get one test per case
//! instead (failures reported separately, cases run in parallel), use
//! [`conformance_tests!`](crate::conformance_tests) in a test file.
//!
//! Cases take a few seconds in all against a local database; each starts from an empty
//! store and may create, write and drop its tables.

// A conformance case reports a failure by panicking, as a test does.
#![allow(clippy::unwrap_used)]

use std::any::Any;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use buddy_core::durable::{
    DurableQuery, DurableRun, DurableState, DurableWrite, EntryKind, EntryStatus, Fence,
    JournalEntry, StoredEvent, WaitSpec,
};
use buddy_core::run::{Metrics, RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus};
use buddy_core::session::{
    Session, SessionCursor, SessionKey, SessionKind, SessionQuery, SessionWrite, StatePatch,
};
use buddy_core::storage::{MemoryStorage, ReadOptions, Storage};
use buddy_core::{StorageError, StorageErrorKind};
use serde_json::{Map, Value, json};

/// A storage under test plus whatever must live as long as it (a temporary directory, a
/// guard that drops a test schema).
pub struct Fixture {
    storage: Arc<dyn Storage>,
    _guard: Box<dyn Any + Send>,
}

impl Fixture {
    /// A fixture for `storage`, keeping `guard` alive until the case is over (pass `()` if
    /// there is nothing to keep).
    pub fn new(storage: impl Storage + 'static, guard: impl Any + Send) -> Self {
        Fixture {
            storage: Arc::new(storage),
            _guard: Box::new(guard),
        }
    }

    /// The storage under test.
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage)
    }
}

impl From<Arc<dyn Storage>> for Fixture {
    fn from(storage: Arc<dyn Storage>) -> Self {
        Fixture {
            storage,
            _guard: Box::new(()),
        }
    }
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// The future of one running case.
pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One conformance case: a name and the check it runs against a fresh storage.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name (a function name of this module).
    pub name: &'static str,
    /// Runs the case; panics when the storage does not conform.
    pub run: fn(Arc<dyn Storage>) -> CaseFuture,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        /// Every case, in the order [`run_all`] runs them.
        pub const CASES: &[Case] = &[
            $(Case { name: stringify!($case), run: |storage| Box::pin($case(storage)) },)*
        ];
    };
}

cases!(
    read_missing_is_none,
    commit_creates_session,
    commit_returns_session_without_runs,
    runs_are_appended_and_recent_ones_read,
    run_records_round_trip,
    exact_numbers_and_unicode_round_trip,
    nul_round_trips_in_every_field,
    state_patch_merges_into_current_state,
    identity_is_kept_and_metadata_merged,
    created_at_never_changes,
    read_filters_by_user,
    list_sessions_newest_first_with_filters,
    list_sessions_order_is_deterministic,
    delete_session_removes_runs,
    kind_and_scope_are_part_of_the_key,
    member_sessions_never_overwrite_each_other,
    delete_covers_members_below_the_key,
    scopes_are_compared_literally,
    drop_tables_then_use_again,
    create_and_upgrade_are_idempotent,
    concurrent_runs_on_one_session,
    concurrent_members_of_one_session,
    sessions_are_independent,
    same_results_as_memory_storage,
    durable_runs_are_supported,
    durable_write_and_load_round_trip,
    fenced_writes_change_nothing,
    event_gaps_and_duplicates_conflict,
    durable_write_commits_its_session_write,
    journal_entries_are_replaced_by_key,
    durable_runs_oldest_first_with_filters,
    read_events_pages_through_the_log,
    prune_deletes_only_runs_that_ended_before,
    drop_tables_drops_durable_runs,
    concurrent_writers_of_one_run,
    concurrent_writes_of_many_runs,
    same_durable_results_as_memory_storage,
);

/// Runs the case called `name` against `storage`.
///
/// # Panics
///
/// When there is no such case, or the storage fails it.
pub async fn run_case(name: &str, storage: Arc<dyn Storage>) {
    let Some(case) = CASES.iter().find(|case| case.name == name) else {
        panic!("no conformance case `{name}`");
    };
    (case.run)(storage).await;
}

/// Runs every case, each against a fresh fixture from `make`, one after the other.
///
/// Each case runs as a task of the current tokio runtime, which must be multi-threaded.
///
/// # Panics
///
/// At the first case that fails, with the case's name and the failure.
pub async fn run_all<F, Fut, T>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    T: Into<Fixture>,
{
    for case in CASES {
        let fixture: Fixture = make().await.into();
        let outcome = tokio::spawn((case.run)(fixture.storage())).await;
        drop(fixture);
        if let Err(error) = outcome {
            let reason = match error.try_into_panic() {
                Ok(payload) => panic_message(payload.as_ref()),
                Err(error) => error.to_string(),
            };
            panic!("storage conformance case `{}` failed: {reason}", case.name);
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Generates one `#[tokio::test]` per conformance case (multi-threaded runtime), each with a
/// fresh fixture from `$fixture`, plus a test checking that no case is missing.
///
/// `$fixture` is an `async fn() -> Option<Fixture>`; `None` skips the case (say why on
/// stderr, e.g. no database server configured). The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features.
///
/// ```ignore
/// use buddy_storage::conformance::Fixture;
///
/// async fn fixture() -> Option<Fixture> {
///     Some(Fixture::new(MyStorage::open_temporary().await?, ()))
/// }
///
/// buddy_storage::conformance_tests!(fixture);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path) => {
        $crate::conformance_tests!(@cases $fixture;
            read_missing_is_none,
            commit_creates_session,
            commit_returns_session_without_runs,
            runs_are_appended_and_recent_ones_read,
            run_records_round_trip,
            exact_numbers_and_unicode_round_trip,
            nul_round_trips_in_every_field,
            state_patch_merges_into_current_state,
            identity_is_kept_and_metadata_merged,
            created_at_never_changes,
            read_filters_by_user,
            list_sessions_newest_first_with_filters,
            list_sessions_order_is_deterministic,
            delete_session_removes_runs,
            kind_and_scope_are_part_of_the_key,
            member_sessions_never_overwrite_each_other,
            delete_covers_members_below_the_key,
            scopes_are_compared_literally,
            drop_tables_then_use_again,
            create_and_upgrade_are_idempotent,
            concurrent_runs_on_one_session,
            concurrent_members_of_one_session,
            sessions_are_independent,
            same_results_as_memory_storage,
            durable_runs_are_supported,
            durable_write_and_load_round_trip,
            fenced_writes_change_nothing,
            event_gaps_and_duplicates_conflict,
            durable_write_commits_its_session_write,
            journal_entries_are_replaced_by_key,
            durable_runs_oldest_first_with_filters,
            read_events_pages_through_the_log,
            prune_deletes_only_runs_that_ended_before,
            drop_tables_drops_durable_runs,
            concurrent_writers_of_one_run,
            concurrent_writes_of_many_runs,
            same_durable_results_as_memory_storage,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $fixture().await else { return };
                $crate::conformance::run_case(stringify!($case), fixture.storage()).await;
                drop(fixture);
            }
        )*

        #[test]
        fn conformance_tests_cover_every_case() {
            let listed = [$(stringify!($case)),*];
            let all: ::std::vec::Vec<&str> =
                $crate::conformance::CASES.iter().map(|case| case.name).collect();
            assert_eq!(listed.as_slice(), all.as_slice());
        }
    };
}

// Helpers, public so backend-specific tests can build the same writes.

/// The key of the top-level workflow session `session_id`.
pub fn key(session_id: &str) -> SessionKey {
    SessionKey::new(session_id, SessionKind::Workflow)
}

/// `value` as a JSON object.
///
/// # Panics
///
/// When `value` is not an object.
pub fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// An empty write to the top-level workflow session `session_id`.
pub fn write(session_id: &str) -> SessionWrite {
    SessionWrite::new(key(session_id))
}

/// Run `n` of session `session_id`: id `{session_id}-run-{n}`, input `{"n": n}`.
pub fn run(session_id: &str, n: usize) -> RunRecord {
    RunRecord {
        run_id: format!("{session_id}-run-{n}"),
        session_id: session_id.to_owned(),
        status: RunStatus::Completed,
        input: json!({ "n": n }),
        response: RunResponse::from_text(format!("answer {n}")),
        error: None,
        created_at: 1_700_000_000_000 + i64::try_from(n).unwrap_or(0),
        ended_at: Some(1_700_000_000_500 + i64::try_from(n).unwrap_or(0)),
        duration_ms: Some(500.25),
    }
}

/// A write to the workflow session `session_id` that appends run `n` and sets state key
/// `key` to `n`.
pub fn run_write(session_id: &str, n: usize, key: &str) -> SessionWrite {
    run_write_at(self::key(session_id), n, key)
}

/// [`run_write`] for the session `at`.
pub fn run_write_at(at: SessionKey, n: usize, key: &str) -> SessionWrite {
    let run = run(&at.session_id, n);
    SessionWrite {
        state_patch: StatePatch::diff(&Map::new(), &obj(json!({ key: n }))),
        run: Some(run),
        ..SessionWrite::new(at)
    }
}

fn run_ids(runs: &[RunRecord]) -> Vec<String> {
    runs.iter().map(|run| run.run_id.clone()).collect()
}

async fn read(storage: &dyn Storage, at: &SessionKey, runs: usize) -> Session {
    match storage
        .read(at, &ReadOptions::with_runs(runs))
        .await
        .unwrap()
    {
        Some(session) => session,
        None => panic!("{at} not found"),
    }
}

/// A missing session reads as `None`, with no runs, and an empty store lists nothing.
pub async fn read_missing_is_none(storage: Arc<dyn Storage>) {
    assert!(
        storage
            .read(&key("missing"), &ReadOptions::with_runs(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .runs(&key("missing"), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A first commit creates the session with every field of the write.
pub async fn commit_creates_session(storage: Arc<dyn Storage>) {
    let at = SessionKey::new("s1", SessionKind::Agent).scope("helper");
    let write = SessionWrite {
        component_id: Some("agent-1".into()),
        user_id: Some("ann".into()),
        session_name: Some("first".into()),
        component_data: obj(json!({"name": "helper"})),
        state_patch: StatePatch::set_all(&obj(json!({"count": 1, "nested": {"a": [1, 2]}}))),
        extra_data: Some(obj(json!({"tag": "x"}))),
        run: Some(run("s1", 1)),
        ..SessionWrite::new(at.clone())
    };
    let committed = storage.commit(write).await.unwrap();
    let read = read(&*storage, &at, 0).await;
    assert_eq!(read, committed);
    assert_eq!(read.key(), at);
    assert_eq!(read.session_id, "s1");
    assert_eq!(read.kind, SessionKind::Agent);
    assert_eq!(read.scope, "helper");
    assert_eq!(read.component_id.as_deref(), Some("agent-1"));
    assert_eq!(read.user_id.as_deref(), Some("ann"));
    assert_eq!(read.session_name.as_deref(), Some("first"));
    assert_eq!(read.component_data, obj(json!({"name": "helper"})));
    assert_eq!(
        read.session_state,
        obj(json!({"count": 1, "nested": {"a": [1, 2]}}))
    );
    assert_eq!(read.extra_data, Some(obj(json!({"tag": "x"}))));
    assert!(read.created_at > 0);
    assert_eq!(read.created_at, read.updated_at);
    assert_eq!(read.version, 1);
    assert_eq!(read.run_count, 1);
    assert!(read.runs.is_empty(), "recent_runs = 0 loads no runs");
}

/// A commit returns the stored session without runs; a write without a run is a version,
/// not a run.
pub async fn commit_returns_session_without_runs(storage: Arc<dyn Storage>) {
    storage.commit(run_write("s", 1, "a")).await.unwrap();
    let second = storage.commit(run_write("s", 2, "b")).await.unwrap();
    assert!(second.runs.is_empty());
    assert_eq!(second.version, 2);
    assert_eq!(second.run_count, 2);
    assert_eq!(second.session_state, obj(json!({"a": 1, "b": 2})));
    let third = storage.commit(write("s")).await.unwrap();
    assert_eq!((third.version, third.run_count), (3, 2));
}

/// Runs are appended in order; reads load the most recent ones, oldest first.
pub async fn runs_are_appended_and_recent_ones_read(storage: Arc<dyn Storage>) {
    for n in 1..=7 {
        storage.commit(run_write("s", n, "k")).await.unwrap();
    }
    let session = read(&*storage, &key("s"), 3).await;
    assert_eq!(session.run_count, 7);
    assert_eq!(run_ids(&session.runs), ["s-run-5", "s-run-6", "s-run-7"]);
    let all = read(&*storage, &key("s"), 100).await;
    assert_eq!(all.runs.len(), 7);
    assert_eq!(all.runs[0].run_id, "s-run-1");
    assert_eq!(
        run_ids(&storage.runs(&key("s"), None).await.unwrap()),
        run_ids(&all.runs)
    );
    assert_eq!(
        run_ids(&storage.runs(&key("s"), Some(2)).await.unwrap()),
        ["s-run-6", "s-run-7"]
    );
    assert!(storage.runs(&key("s"), Some(0)).await.unwrap().is_empty());
}

/// Run records read back equal to what was written, whatever their status.
pub async fn run_records_round_trip(storage: Arc<dyn Storage>) {
    let mut record = run("s", 1);
    record.status = RunStatus::Error;
    record.error = Some("model unavailable".into());
    record.input = json!({"topic": "quantum", "deep": {"list": [1, null, "x"]}});
    record.response = RunResponse::from_json(json!({"title": "t", "score": 0.5}));
    record.response.run_id = Some("s-run-1".into());
    record.response.extra_data = Some(obj(json!({"k": "v"})));
    let mut cancelled = run("s", 2);
    cancelled.status = RunStatus::Cancelled;
    for record in [record.clone(), cancelled.clone()] {
        storage
            .commit(SessionWrite {
                run: Some(record),
                ..write("s")
            })
            .await
            .unwrap();
    }
    assert_eq!(
        storage.runs(&key("s"), None).await.unwrap(),
        [record, cancelled]
    );
}

/// Floats that are hard to print and parse back.
const AWKWARD_FLOATS: [f64; 8] = [
    0.1,
    0.11910699999999999,
    1e-300,
    5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    2.2250738585072014e-308,
    123_456_789.123_456_78,
];

/// Text in every script direction and plane: emoji (with joiners and modifiers), combining
/// marks, right-to-left text, astral-plane characters, escapes JSON must keep.
const AWKWARD_TEXT: [&str; 7] = [
    "emoji 🎉 👩‍👩‍👧‍👦 👍🏽 🏳️‍🌈",
    "combining e\u{301} a\u{30a}\u{323} Z\u{335}\u{31b}",
    "right to left: שלום עולם / مرحبا بالعالم",
    "astral 𝄞 𐍈 𠜎 🀄",
    "quotes \" \\ / \u{8} \u{c} \n \r \t and \u{1f} control",
    "bom \u{feff} and line separator \u{2028} paragraph \u{2029}",
    "",
];

fn awkward_value() -> Value {
    let floats: Vec<Value> = AWKWARD_FLOATS.iter().map(|&f| json!(f)).collect();
    json!({
        "floats": floats,
        "negative_zero": -0.0_f64,
        "integers": [i64::MAX, i64::MIN, u64::MAX, 0, -1, 9_007_199_254_740_993_i64],
        "text": AWKWARD_TEXT,
        "🔑 ключ مفتاح": {"𝄞": "nested key in the astral plane"},
    })
}

fn assert_floats_exact(value: &Value, what: &str) {
    let floats = value["floats"].as_array().unwrap();
    assert_eq!(floats.len(), AWKWARD_FLOATS.len(), "{what}");
    for (stored, expected) in floats.iter().zip(AWKWARD_FLOATS) {
        let stored = stored.as_f64().unwrap();
        assert_eq!(
            stored.to_bits(),
            expected.to_bits(),
            "{what}: {expected:e} read back as {stored:e}"
        );
    }
    // The sign of zero may be lost (Postgres `jsonb` numbers have no negative zero), the
    // value may not.
    assert_eq!(value["negative_zero"].as_f64(), Some(0.0), "{what}");
    assert_eq!(value["integers"][0].as_i64(), Some(i64::MAX), "{what}");
    assert_eq!(value["integers"][1].as_i64(), Some(i64::MIN), "{what}");
    assert_eq!(value["integers"][2].as_u64(), Some(u64::MAX), "{what}");
}

/// Floats read back bit for bit, integers at the limits of `i64` and `u64` exactly, and any
/// Unicode text unchanged: in session state, extra data, component data and run records.
pub async fn exact_numbers_and_unicode_round_trip(storage: Arc<dyn Storage>) {
    let value = awkward_value();
    let mut record = run("ünï-🎉", 1);
    record.input = value.clone();
    record.response = RunResponse::from_json(value.clone());
    record.response.metrics = Some(Metrics {
        input_tokens: u64::MAX,
        output_tokens: u64::MAX - 1,
        total_tokens: (1 << 53) | 1,
        time_to_first_token_ms: Some(0.11910699999999999),
        duration_ms: 5e-324,
    });
    record.response.extra_data = Some(obj(json!({"awkward": value})));
    record.error = Some(AWKWARD_TEXT.concat());
    let at = SessionKey::new("ünï-🎉", SessionKind::Agent).scope("שלום/👩‍👩‍👧‍👦");
    let written = SessionWrite {
        session_name: Some(AWKWARD_TEXT[0].to_owned()),
        component_data: obj(json!({"awkward": value})),
        state_patch: StatePatch::set_all(&obj(json!({"awkward": value, "f": 0.1}))),
        extra_data: Some(obj(json!({"awkward": value}))),
        run: Some(record.clone()),
        ..SessionWrite::new(at.clone())
    };
    let committed = storage.commit(written).await.unwrap();
    let session = read(&*storage, &at, 1).await;
    for (what, stored) in [
        ("session state", &session.session_state["awkward"]),
        ("component data", &session.component_data["awkward"]),
        (
            "extra data",
            &session.extra_data.as_ref().unwrap()["awkward"],
        ),
        ("run input", &session.runs[0].input),
        (
            "run content",
            session.runs[0].response.content.as_ref().unwrap(),
        ),
        (
            "run extra data",
            &session.runs[0].response.extra_data.as_ref().unwrap()["awkward"],
        ),
    ] {
        assert_eq!(stored, &value, "{what}");
        assert_floats_exact(stored, what);
    }
    assert_eq!(
        session.session_state["f"].as_f64().map(f64::to_bits),
        Some(0.1_f64.to_bits())
    );
    let metrics = session.runs[0].response.metrics.unwrap();
    assert_eq!(metrics, record.response.metrics.unwrap());
    assert_eq!(metrics.duration_ms.to_bits(), 5e-324_f64.to_bits());
    assert_eq!(
        metrics.time_to_first_token_ms.map(f64::to_bits),
        Some(0.11910699999999999_f64.to_bits())
    );
    assert_eq!(session.session_name.as_deref(), Some(AWKWARD_TEXT[0]));
    assert_eq!(session.key(), at);
    assert_eq!(session.runs, [record]);
    let mut without_runs = session.clone();
    without_runs.runs.clear();
    assert_eq!(without_runs, committed);
    let listed = storage
        .list_sessions(&SessionQuery::all().scope(at.scope.clone()))
        .await
        .unwrap();
    assert_eq!(listed, [committed]);
}

/// Text around NUL that a backend escaping NUL must still keep apart: NUL alone, doubled
/// and at the ends, next to U+FDD0 (a noncharacter a backend may use as its escape) and next
/// to the JSON spelling of NUL written literally.
const NUL_TEXT: [&str; 6] = [
    "\0",
    "a\0b\0\0c",
    "\0start and end\0",
    "\u{FDD0}0 \u{FDD0}\u{FDD0} \0\u{FDD0} \u{FDD0}",
    "literal \\u0000 and \\\0 after a backslash",
    "model output \0 with \u{1} control \u{7f} characters",
];

/// A NUL character (`\u0000`) anywhere, in ids, names, state, extra data and run records
/// (object keys included), is stored and read back unchanged, on every read path; and a
/// session whose key holds NUL is found, listed, written again and deleted like any other.
pub async fn nul_round_trips_in_every_field(storage: Arc<dyn Storage>) {
    let text: Value = NUL_TEXT.iter().map(|&t| json!(t)).collect();
    let mut keyed = Map::new();
    for (n, t) in NUL_TEXT.iter().enumerate() {
        keyed.insert(format!("{t}{n}"), json!(t));
    }
    let value = json!({"text": text, "keyed": keyed, "nul\0key": "\0"});
    let at = SessionKey::new("id\0with nul \u{FDD0}", SessionKind::Agent).scope("team\0/member\0");
    let mut record = run(&at.session_id, 1);
    record.run_id = "run\0id".to_owned();
    record.input = value.clone();
    record.response = RunResponse::from_text(NUL_TEXT.concat());
    record.response.extra_data = Some(obj(json!({"nul": value})));
    record.error = Some("error \0 text".to_owned());
    let written = SessionWrite {
        component_id: Some("component\0".to_owned()),
        user_id: Some("user\0\u{FDD0}".to_owned()),
        session_name: Some(NUL_TEXT[1].to_owned()),
        component_data: obj(json!({"nul": value})),
        state_patch: StatePatch::set_all(&obj(json!({"nul": value, "a\0": 1}))),
        extra_data: Some(obj(json!({"nul": value}))),
        run: Some(record.clone()),
        ..SessionWrite::new(at.clone())
    };
    let committed = storage.commit(written).await.unwrap();
    let session = read(&*storage, &at, 5).await;
    assert_eq!(session.key(), at);
    assert_eq!(session.component_id.as_deref(), Some("component\0"));
    assert_eq!(session.user_id.as_deref(), Some("user\0\u{FDD0}"));
    assert_eq!(session.session_name.as_deref(), Some(NUL_TEXT[1]));
    assert_eq!(session.component_data["nul"], value);
    assert_eq!(session.session_state["nul"], value);
    assert_eq!(session.session_state["a\0"], json!(1));
    assert_eq!(session.extra_data.as_ref().unwrap()["nul"], value);
    assert_eq!(session.runs, [record.clone()]);
    let mut without_runs = session.clone();
    without_runs.runs.clear();
    assert_eq!(without_runs, committed);
    assert_eq!(storage.runs(&at, None).await.unwrap(), [record.clone()]);
    // Listed, also when filtered by the fields holding NUL.
    let query = SessionQuery::all()
        .user("user\0\u{FDD0}")
        .component("component\0")
        .scope(at.scope.clone());
    assert_eq!(storage.list_sessions(&query).await.unwrap(), [committed]);
    // A second write merges into the stored session, which was read back exactly.
    let mut second = run(&at.session_id, 2);
    second.response = RunResponse::from_text("\0");
    let again = storage
        .commit(SessionWrite {
            state_patch: StatePatch::set_all(&obj(json!({"b\0": "\0"}))),
            run: Some(second.clone()),
            ..SessionWrite::new(at.clone())
        })
        .await
        .unwrap();
    assert_eq!(again.session_state["nul"], value);
    assert_eq!(again.session_state["b\0"], json!("\0"));
    assert_eq!(again.run_count, 2);
    assert_eq!(storage.runs(&at, None).await.unwrap(), [record, second]);
    // A session whose ids differ only where the other has NUL is another session.
    let plain = SessionKey::new("id", SessionKind::Agent).scope("team");
    storage
        .commit(SessionWrite::new(plain.clone()))
        .await
        .unwrap();
    // Deleting covers the members below, compared with NUL as a character like any other.
    let below = SessionKey::new(at.session_id.clone(), SessionKind::Agent)
        .scope(format!("{}/sub\0", at.scope));
    let beside = SessionKey::new(at.session_id.clone(), SessionKind::Agent)
        .scope(format!("{}\0x/sub", at.scope));
    let short = SessionKey::new(at.session_id.clone(), SessionKind::Agent).scope("team");
    for member in [&below, &beside, &short] {
        storage
            .commit(SessionWrite::new(member.clone()))
            .await
            .unwrap();
    }
    storage.delete_session(&at).await.unwrap();
    assert!(
        storage
            .read(&below, &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    for kept in [&beside, &short] {
        assert!(
            storage
                .read(kept, &ReadOptions::default())
                .await
                .unwrap()
                .is_some(),
            "{kept}"
        );
    }
    assert!(
        storage
            .read(&at, &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .read(&plain, &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );
}

/// Each writer's state changes are merged into the state stored at commit time.
pub async fn state_patch_merges_into_current_state(storage: Arc<dyn Storage>) {
    let initial = obj(json!({"a": 1, "b": 2, "nested": {"x": 1, "y": 1}}));
    storage
        .commit(SessionWrite {
            state_patch: StatePatch::set_all(&initial),
            ..write("s")
        })
        .await
        .unwrap();
    // Two writers loaded `initial`; each changes its own keys.
    let first = StatePatch::diff(
        &initial,
        &obj(json!({"a": 10, "b": 2, "nested": {"x": 5, "y": 1}})),
    );
    let second = StatePatch::diff(
        &initial,
        &obj(json!({"a": 1, "nested": {"x": 1, "y": 1}, "c": 3})),
    );
    for patch in [first, second] {
        storage
            .commit(SessionWrite {
                state_patch: patch,
                ..write("s")
            })
            .await
            .unwrap();
    }
    let session = read(&*storage, &key("s"), 0).await;
    assert_eq!(
        session.session_state,
        obj(json!({"a": 10, "nested": {"x": 5, "y": 1}, "c": 3})),
        "both writers' changes are kept; `b` was removed by the second"
    );
}

/// Identity set at creation is kept; component data and extra data are merged.
pub async fn identity_is_kept_and_metadata_merged(storage: Arc<dyn Storage>) {
    storage
        .commit(SessionWrite {
            component_id: Some("wf".into()),
            user_id: Some("ann".into()),
            session_name: Some("one".into()),
            component_data: obj(json!({"name": "wf", "description": "d"})),
            extra_data: Some(obj(json!({"a": {"x": 1}, "b": 1}))),
            ..write("s")
        })
        .await
        .unwrap();
    let after = storage
        .commit(SessionWrite {
            component_id: Some("other".into()),
            user_id: Some("bob".into()),
            session_name: None,
            component_data: obj(json!({"name": "wf2"})),
            extra_data: Some(obj(json!({"a": {"y": 2}}))),
            ..write("s")
        })
        .await
        .unwrap();
    assert_eq!(after.kind, SessionKind::Workflow);
    assert_eq!(after.component_id.as_deref(), Some("wf"));
    assert_eq!(after.user_id.as_deref(), Some("ann"));
    assert_eq!(after.session_name.as_deref(), Some("one"));
    assert_eq!(
        after.component_data,
        obj(json!({"name": "wf2", "description": "d"}))
    );
    assert_eq!(
        after.extra_data,
        Some(obj(json!({"a": {"x": 1, "y": 2}, "b": 1})))
    );
    let renamed = storage
        .commit(SessionWrite {
            session_name: Some("two".into()),
            ..write("s")
        })
        .await
        .unwrap();
    assert_eq!(renamed.session_name.as_deref(), Some("two"));
    assert_eq!(read(&*storage, &key("s"), 0).await, renamed);
}

/// `created_at` is set once; `updated_at` moves forward with every write.
pub async fn created_at_never_changes(storage: Arc<dyn Storage>) {
    let first = storage.commit(run_write("s", 1, "a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = storage.commit(run_write("s", 2, "a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let third = storage.commit(write("s")).await.unwrap();
    for session in [&second, &third] {
        assert_eq!(session.created_at, first.created_at);
    }
    assert!(second.updated_at > first.updated_at);
    assert!(third.updated_at > second.updated_at);
    let read = read(&*storage, &key("s"), 0).await;
    assert_eq!(read.created_at, first.created_at);
    assert_eq!(read.updated_at, third.updated_at);
}

/// A read for another user than the session's finds nothing.
pub async fn read_filters_by_user(storage: Arc<dyn Storage>) {
    storage
        .commit(SessionWrite {
            user_id: Some("ann".into()),
            ..write("s")
        })
        .await
        .unwrap();
    storage.commit(write("anonymous")).await.unwrap();
    let ann = ReadOptions::default().user("ann");
    let bob = ReadOptions::default().user("bob");
    assert!(storage.read(&key("s"), &ann).await.unwrap().is_some());
    assert!(storage.read(&key("s"), &bob).await.unwrap().is_none());
    assert!(
        storage
            .read(&key("anonymous"), &ann)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .read(&key("anonymous"), &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );
}

async fn listed_ids(storage: &dyn Storage, query: SessionQuery) -> Vec<String> {
    storage
        .list_sessions(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|session| session.session_id)
        .collect()
}

/// Listing filters by user, component, kind and scope, newest first, with a limit.
pub async fn list_sessions_newest_first_with_filters(storage: Arc<dyn Storage>) {
    let specs = [
        ("a", SessionKind::Workflow, "wf1", "ann"),
        ("b", SessionKind::Workflow, "wf2", "bob"),
        ("c", SessionKind::Agent, "ag1", "ann"),
        ("d", SessionKind::Team, "wf1", "ann"),
    ];
    for (id, kind, component, user) in specs {
        storage
            .commit(SessionWrite {
                component_id: Some(component.into()),
                user_id: Some(user.into()),
                ..SessionWrite::new(SessionKey::new(id, kind))
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Touch `a` again: it becomes the newest.
    storage.commit(run_write("a", 1, "k")).await.unwrap();
    let ids = |query| listed_ids(&*storage, query);
    assert_eq!(ids(SessionQuery::all()).await, ["a", "d", "c", "b"]);
    assert_eq!(ids(SessionQuery::all().user("ann")).await, ["a", "d", "c"]);
    assert_eq!(ids(SessionQuery::all().component("wf1")).await, ["a", "d"]);
    assert_eq!(
        ids(SessionQuery::all().kind(SessionKind::Agent)).await,
        ["c"]
    );
    assert_eq!(
        ids(SessionQuery::all()
            .user("ann")
            .kind(SessionKind::Workflow)
            .component("wf1"))
        .await,
        ["a"]
    );
    assert_eq!(ids(SessionQuery::all().limit(2)).await, ["a", "d"]);
    assert!(ids(SessionQuery::all().user("nobody")).await.is_empty());
    assert_eq!(ids(SessionQuery::all().scope("")).await.len(), 4);
    assert!(ids(SessionQuery::all().scope("writer")).await.is_empty());
    let sessions = storage.list_sessions(&SessionQuery::all()).await.unwrap();
    assert!(sessions.iter().all(|session| session.runs.is_empty()));
    assert_eq!(sessions[0].run_count, 1);
}

/// Sessions with equal `updated_at` are listed by session id (descending), then kind and
/// scope (ascending), strings compared byte-wise.
pub async fn list_sessions_order_is_deterministic(storage: Arc<dyn Storage>) {
    let keys = [
        SessionKey::new("s", SessionKind::Workflow),
        SessionKey::new("s", SessionKind::Agent).scope("b"),
        SessionKey::new("s", SessionKind::Agent).scope("a"),
        SessionKey::new("s", SessionKind::Agent).scope("B"),
        SessionKey::new("s", SessionKind::Team).scope("a"),
        SessionKey::new("s", SessionKind::Agent),
        SessionKey::new("S", SessionKind::Workflow),
        SessionKey::new("t", SessionKind::Workflow),
        SessionKey::new("é", SessionKind::Workflow),
    ];
    for at in &keys {
        storage.commit(SessionWrite::new(at.clone())).await.unwrap();
    }
    let listed = storage.list_sessions(&SessionQuery::all()).await.unwrap();
    let mut expected = listed.clone();
    expected.sort_by(|x, y| {
        y.updated_at
            .cmp(&x.updated_at)
            .then_with(|| y.session_id.cmp(&x.session_id))
            .then_with(|| x.kind.as_str().cmp(y.kind.as_str()))
            .then_with(|| x.scope.cmp(&y.scope))
    });
    let listed_keys: Vec<SessionKey> = listed.iter().map(Session::key).collect();
    let expected_keys: Vec<SessionKey> = expected.iter().map(Session::key).collect();
    assert_eq!(listed_keys, expected_keys);
    assert_eq!(listed.len(), keys.len());

    // Commits within one millisecond share `updated_at`, so the key order above decides
    // most of the list. A limit keeps the first ones of the same order.
    let limited = storage
        .list_sessions(&SessionQuery::all().limit(3))
        .await
        .unwrap();
    let limited_keys: Vec<SessionKey> = limited.iter().map(Session::key).collect();
    assert_eq!(limited_keys, expected_keys[..3]);

    // Pages of two, each after the last session of the page before, list the same sessions
    // in the same order, none lost and none twice; with a filter too.
    for filter in [
        SessionQuery::all(),
        SessionQuery::all().kind(SessionKind::Agent),
    ] {
        let mut paged = Vec::new();
        let mut query = filter.clone().limit(2);
        loop {
            let page = storage.list_sessions(&query).await.unwrap();
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 2);
            query = filter.clone().limit(2).after(SessionCursor::of(last));
            paged.extend(page.iter().map(Session::key));
        }
        let wanted: Vec<SessionKey> = expected
            .iter()
            .filter(|session| filter.matches(session))
            .map(Session::key)
            .collect();
        assert_eq!(paged, wanted, "{filter:?}");
    }
}

/// Deleting a session removes it and its runs; its id can be used again from scratch.
pub async fn delete_session_removes_runs(storage: Arc<dyn Storage>) {
    for n in 1..=3 {
        storage.commit(run_write("s", n, "k")).await.unwrap();
    }
    storage.commit(run_write("other", 1, "k")).await.unwrap();
    storage.delete_session(&key("s")).await.unwrap();
    storage.delete_session(&key("s")).await.unwrap();
    storage.delete_session(&key("never-existed")).await.unwrap();
    assert!(
        storage
            .read(&key("s"), &ReadOptions::with_runs(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(storage.runs(&key("s"), None).await.unwrap().is_empty());
    assert_eq!(storage.runs(&key("other"), None).await.unwrap().len(), 1);
    let again = storage.commit(run_write("s", 9, "k")).await.unwrap();
    assert_eq!((again.version, again.run_count), (1, 1));
    assert_eq!(
        run_ids(&storage.runs(&key("s"), None).await.unwrap()),
        ["s-run-9"]
    );
}

/// Sessions with one id but another kind or scope are other sessions.
pub async fn kind_and_scope_are_part_of_the_key(storage: Arc<dyn Storage>) {
    let workflow = key("s");
    let agent = SessionKey::new("s", SessionKind::Agent);
    let scoped = SessionKey::new("s", SessionKind::Workflow).scope("inner");
    storage
        .commit(run_write_at(workflow.clone(), 1, "w"))
        .await
        .unwrap();
    storage
        .commit(run_write_at(agent.clone(), 2, "a"))
        .await
        .unwrap();
    storage
        .commit(run_write_at(scoped.clone(), 3, "i"))
        .await
        .unwrap();
    for (at, state_key, run_id) in [
        (&workflow, "w", "s-run-1"),
        (&agent, "a", "s-run-2"),
        (&scoped, "i", "s-run-3"),
    ] {
        let session = read(&*storage, at, 10).await;
        assert_eq!(&session.key(), at);
        assert_eq!(
            session.session_state.keys().collect::<Vec<_>>(),
            [state_key]
        );
        assert_eq!(run_ids(&session.runs), [run_id]);
        assert_eq!((session.version, session.run_count), (1, 1));
    }
    assert!(
        storage
            .read(
                &SessionKey::new("s", SessionKind::Team),
                &ReadOptions::default()
            )
            .await
            .unwrap()
            .is_none()
    );
    // Deleting a member's key leaves the top-level sessions.
    storage.delete_session(&scoped).await.unwrap();
    assert!(
        storage
            .read(&scoped, &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    read(&*storage, &workflow, 0).await;
    read(&*storage, &agent, 0).await;
    // Deleting a top-level key (scope "") leaves the other kinds' top-level sessions.
    storage
        .commit(run_write_at(scoped.clone(), 4, "i"))
        .await
        .unwrap();
    storage.delete_session(&agent).await.unwrap();
    assert!(
        storage
            .read(&agent, &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        storage
            .read(&scoped, &ReadOptions::default())
            .await
            .unwrap()
            .is_none(),
        "members below a top-level key go with it"
    );
    read(&*storage, &workflow, 0).await;
}

/// The sessions of one workflow run: the workflow's own, two agents, a team and the team's
/// member, all with the same session id.
fn workflow_tree() -> [SessionKey; 5] {
    [
        SessionKey::new("conversation", SessionKind::Workflow),
        SessionKey::new("conversation", SessionKind::Agent).scope("researcher"),
        SessionKey::new("conversation", SessionKind::Agent).scope("writer"),
        SessionKey::new("conversation", SessionKind::Team).scope("writers"),
        SessionKey::new("conversation", SessionKind::Agent).scope("writers/critic"),
    ]
}

async fn write_tree(storage: &dyn Storage) -> [SessionKey; 5] {
    let tree = workflow_tree();
    for (index, at) in tree.iter().enumerate() {
        for n in 0..=index {
            storage
                .commit(SessionWrite {
                    component_id: Some(format!("component-{index}")),
                    ..run_write_at(at.clone(), index * 10 + n, &format!("key_{index}"))
                })
                .await
                .unwrap();
        }
    }
    tree
}

/// A workflow and its members share a session id and a store without overwriting each
/// other's state, runs or counters, and each is listed under its scope.
pub async fn member_sessions_never_overwrite_each_other(storage: Arc<dyn Storage>) {
    let tree = write_tree(&*storage).await;
    for (index, at) in tree.iter().enumerate() {
        let session = read(&*storage, at, 100).await;
        assert_eq!(&session.key(), at);
        assert_eq!(
            session.session_state,
            obj(json!({ format!("key_{index}"): index * 11 })),
            "{at}"
        );
        assert_eq!(session.run_count, i64::try_from(index + 1).unwrap(), "{at}");
        assert_eq!(session.version, i64::try_from(index + 1).unwrap(), "{at}");
        assert_eq!(
            session.component_id.as_deref(),
            Some(format!("component-{index}").as_str())
        );
        let expected: Vec<String> = (0..=index)
            .map(|n| format!("conversation-run-{}", index * 10 + n))
            .collect();
        assert_eq!(run_ids(&session.runs), expected, "{at}");
        assert_eq!(
            run_ids(&storage.runs(at, None).await.unwrap()),
            expected,
            "{at}"
        );
    }
    let scopes = |query: SessionQuery| {
        let storage = storage.clone();
        async move {
            let mut keys: Vec<SessionKey> = storage
                .list_sessions(&query)
                .await
                .unwrap()
                .iter()
                .map(Session::key)
                .collect();
            keys.sort();
            keys
        }
    };
    let mut all = tree.to_vec();
    all.sort();
    assert_eq!(scopes(SessionQuery::all()).await, all);
    assert_eq!(
        scopes(SessionQuery::all().scope("")).await,
        [tree[0].clone()]
    );
    assert_eq!(
        scopes(SessionQuery::all().scope("writers")).await,
        [tree[3].clone()]
    );
    assert_eq!(
        scopes(SessionQuery::all().scope("writers/critic")).await,
        [tree[4].clone()]
    );
    assert_eq!(
        scopes(SessionQuery::all().kind(SessionKind::Agent))
            .await
            .len(),
        3
    );
    assert_eq!(
        scopes(SessionQuery::all().component("component-2")).await,
        [tree[2].clone()]
    );
}

/// Deleting a session deletes the members stored under it and nothing else.
pub async fn delete_covers_members_below_the_key(storage: Arc<dyn Storage>) {
    let tree = write_tree(&*storage).await;
    // A standalone agent with the same session id, scope "", and another conversation.
    let standalone = SessionKey::new("conversation", SessionKind::Agent);
    storage
        .commit(run_write_at(standalone.clone(), 99, "alone"))
        .await
        .unwrap();
    let other = SessionKey::new("other", SessionKind::Agent).scope("researcher");
    storage
        .commit(run_write_at(other.clone(), 1, "k"))
        .await
        .unwrap();
    let exists = |at: SessionKey| {
        let storage = storage.clone();
        async move {
            storage
                .read(&at, &ReadOptions::default())
                .await
                .unwrap()
                .is_some()
        }
    };

    // The team: itself and its member, not the siblings nor the workflow.
    storage.delete_session(&tree[3]).await.unwrap();
    for (at, kept) in [
        (&tree[0], true),
        (&tree[1], true),
        (&tree[2], true),
        (&tree[3], false),
        (&tree[4], false),
    ] {
        assert_eq!(exists(at.clone()).await, kept, "{at}");
    }
    assert!(storage.runs(&tree[4], None).await.unwrap().is_empty());
    // Deleting a member's key does not reach its parent or siblings.
    storage.delete_session(&tree[1]).await.unwrap();
    assert!(!exists(tree[1].clone()).await);
    assert!(exists(tree[2].clone()).await);
    assert!(exists(tree[0].clone()).await);

    // Write the tree again; delete the workflow's key: everything under it goes.
    let tree = write_tree(&*storage).await;
    storage.delete_session(&tree[0]).await.unwrap();
    for at in &tree {
        assert!(!exists(at.clone()).await, "{at}");
        assert!(storage.runs(at, None).await.unwrap().is_empty(), "{at}");
    }
    assert!(
        exists(standalone.clone()).await,
        "a standalone agent survives"
    );
    assert_eq!(
        run_ids(&storage.runs(&standalone, None).await.unwrap()),
        ["conversation-run-99"]
    );
    assert!(exists(other.clone()).await, "another session id survives");
}

/// Scopes are compared as plain strings: `_` and `%` match only themselves, and a scope is
/// below another only after a `/`.
pub async fn scopes_are_compared_literally(storage: Arc<dyn Storage>) {
    let at = |scope: &str| SessionKey::new("s", SessionKind::Agent).scope(scope);
    let all = [
        "a_c", "abc", "a_c/x", "abc/x", "a%", "a%/x", "aXY/x", "a_cd", "a_c/", "a_c//y",
    ];
    for scope in all {
        storage.commit(SessionWrite::new(at(scope))).await.unwrap();
    }
    storage
        .delete_session(&SessionKey::new("s", SessionKind::Team).scope("a_c"))
        .await
        .unwrap();
    storage
        .delete_session(&SessionKey::new("s", SessionKind::Team).scope("a%"))
        .await
        .unwrap();
    let mut left: Vec<String> = storage
        .list_sessions(&SessionQuery::all())
        .await
        .unwrap()
        .into_iter()
        .map(|session| session.scope)
        .collect();
    left.sort();
    // Another kind at the same scope is not the same session ("a_c", "a%" stay); the rest
    // below them is removed.
    assert_eq!(left, ["a%", "aXY/x", "a_c", "a_cd", "abc", "abc/x"]);
    let memory = MemoryStorage::new();
    for scope in all {
        memory.commit(SessionWrite::new(at(scope))).await.unwrap();
    }
    for scope in ["a_c", "a%"] {
        memory
            .delete_session(&SessionKey::new("s", SessionKind::Team).scope(scope))
            .await
            .unwrap();
    }
    let mut reference: Vec<String> = memory
        .list_sessions(&SessionQuery::all())
        .await
        .unwrap()
        .into_iter()
        .map(|session| session.scope)
        .collect();
    reference.sort();
    assert_eq!(left, reference, "the same as the reference");
}

/// Dropped tables are created again on next use.
pub async fn drop_tables_then_use_again(storage: Arc<dyn Storage>) {
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    storage.drop_tables().await.unwrap();
    assert!(
        storage
            .read(&key("s"), &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    storage.commit(run_write("s", 2, "k")).await.unwrap();
    assert_eq!(
        run_ids(&storage.runs(&key("s"), None).await.unwrap()),
        ["s-run-2"]
    );
    storage.drop_tables().await.unwrap();
    storage.drop_tables().await.unwrap();
}

/// `create` and `upgrade_schema` may be called any number of times, before or after use.
pub async fn create_and_upgrade_are_idempotent(storage: Arc<dyn Storage>) {
    storage.create().await.unwrap();
    storage.create().await.unwrap();
    storage.upgrade_schema().await.unwrap();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    storage.upgrade_schema().await.unwrap();
    storage.create().await.unwrap();
    assert_eq!(storage.runs(&key("s"), None).await.unwrap().len(), 1);
}

/// 200 runs on one session from 8 concurrent tasks: every run and every state key is kept.
pub async fn concurrent_runs_on_one_session(storage: Arc<dyn Storage>) {
    const TASKS: usize = 8;
    const RUNS: usize = 200;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for n in (task..RUNS).step_by(TASKS) {
                storage
                    .commit(run_write("shared", n, &format!("key_{n}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_all_runs_kept(&*storage, &key("shared"), 0..RUNS).await;
}

/// The members of one session written concurrently: each keeps exactly its own runs.
pub async fn concurrent_members_of_one_session(storage: Arc<dyn Storage>) {
    const RUNS: usize = 40;
    let tree = workflow_tree();
    let mut handles = Vec::new();
    for at in tree.clone() {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for n in 0..RUNS {
                storage
                    .commit(run_write_at(at.clone(), n, &format!("key_{n}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    for at in &tree {
        assert_all_runs_kept(&*storage, at, 0..RUNS).await;
    }
}

/// Checks that the session `at` holds exactly the runs `expected` (run `n` has input
/// `{"n": n}`, as [`run_write`] writes them), one version per run, and a state key `key_{n}`
/// for each of them.
///
/// # Panics
///
/// When it does not.
pub async fn assert_all_runs_kept(
    storage: &dyn Storage,
    at: &SessionKey,
    expected: impl Iterator<Item = usize>,
) {
    let expected: BTreeSet<usize> = expected.collect();
    let session = read(storage, at, expected.len() + 10).await;
    let count = i64::try_from(expected.len()).unwrap();
    assert_eq!(session.run_count, count, "{at}");
    assert_eq!(session.version, count, "{at}");
    assert_eq!(session.runs.len(), expected.len(), "{at}");
    let ns: BTreeSet<usize> = session
        .runs
        .iter()
        .map(|run| usize::try_from(run.input["n"].as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(ns, expected, "every run of {at} is recorded exactly once");
    let keys: BTreeSet<String> = session.session_state.keys().cloned().collect();
    let expected_keys: BTreeSet<String> = expected.iter().map(|n| format!("key_{n}")).collect();
    assert_eq!(keys, expected_keys, "every run's state key of {at} is kept");
}

/// Writes to two sessions do not touch each other.
pub async fn sessions_are_independent(storage: Arc<dyn Storage>) {
    for n in 1..=3 {
        storage.commit(run_write("x", n, "x")).await.unwrap();
    }
    storage.commit(run_write("y", 1, "y")).await.unwrap();
    let x = read(&*storage, &key("x"), 10).await;
    let y = read(&*storage, &key("y"), 10).await;
    assert_eq!((x.run_count, y.run_count), (3, 1));
    assert_eq!(x.session_state, obj(json!({"x": 3})));
    assert_eq!(y.session_state, obj(json!({"y": 1})));
    assert_eq!(run_ids(&y.runs), ["y-run-1"]);
}

/// A deterministic pseudo-random sequence of commits, reads, lists and deletes over several
/// ids, kinds and scopes gives the same results on the storage as on `MemoryStorage`
/// (timestamps aside: each store reads its own clock).
pub async fn same_results_as_memory_storage(storage: Arc<dyn Storage>) {
    fn normalize(mut session: Session) -> Session {
        session.created_at = 0;
        session.updated_at = 0;
        session
    }
    let reference = MemoryStorage::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    let ids = ["a", "b", "c"];
    let users = [None, Some("ann"), Some("bob")];
    let kinds = [SessionKind::Workflow, SessionKind::Agent, SessionKind::Team];
    let scopes = ["", "m", "m/n", "m/n/o", "mn", "x"];
    for step in 0..400_usize {
        let at = SessionKey::new(ids[next(3)], kinds[next(3)]).scope(scopes[next(6)]);
        match next(10) {
            0..=5 => {
                let key = format!("k{}", next(6));
                let mut after = Map::new();
                if next(5) > 0 {
                    after.insert(key.clone(), json!({"step": step, "nested": {"v": next(3)}}));
                }
                let before = obj(json!({ key: {"step": -1} }));
                let write = SessionWrite {
                    component_id: Some(format!("wf{}", next(2))),
                    user_id: users[next(3)].map(str::to_owned),
                    session_name: (next(3) == 0).then(|| format!("name {step}")),
                    component_data: obj(json!({"step": step})),
                    state_patch: StatePatch::diff(&before, &after),
                    extra_data: (next(4) == 0).then(|| obj(json!({"e": {"s": step}}))),
                    run: (next(3) > 0).then(|| run(&at.session_id, step)),
                    ..SessionWrite::new(at.clone())
                };
                let expected = reference.commit(write.clone()).await.unwrap();
                let actual = storage.commit(write).await.unwrap();
                assert_eq!(
                    normalize(actual),
                    normalize(expected),
                    "commit at step {step}"
                );
            }
            6 => {
                reference.delete_session(&at).await.unwrap();
                storage.delete_session(&at).await.unwrap();
            }
            _ => {
                let mut options = ReadOptions::with_runs(next(5));
                if let Some(user) = users[next(3)] {
                    options = options.user(user);
                }
                let expected = reference.read(&at, &options).await.unwrap().map(normalize);
                let actual = storage.read(&at, &options).await.unwrap().map(normalize);
                assert_eq!(actual, expected, "read at step {step}");
                let limit = (next(2) == 0).then(|| next(4));
                assert_eq!(
                    storage.runs(&at, limit).await.unwrap(),
                    reference.runs(&at, limit).await.unwrap(),
                    "runs at step {step}"
                );
            }
        }
    }
    for query in [
        SessionQuery::all(),
        SessionQuery::all().user("ann"),
        SessionQuery::all().component("wf1"),
        SessionQuery::all().kind(SessionKind::Agent),
        SessionQuery::all().scope(""),
        SessionQuery::all().scope("m/n"),
        SessionQuery::all().kind(SessionKind::Team).scope("m"),
    ] {
        let sorted = |sessions: Vec<Session>| {
            let mut sessions: Vec<Session> = sessions.into_iter().map(normalize).collect();
            sessions.sort_by_key(Session::key);
            sessions
        };
        assert_eq!(
            sorted(storage.list_sessions(&query).await.unwrap()),
            sorted(reference.list_sessions(&query).await.unwrap()),
            "{query:?}"
        );
    }
}

// Durable runs: the run's row, its journal and its event log (`Storage::write_durable` and
// the reads beside it).

/// Durable run `run_id` of workflow type `workflow`, attempt 1, `running`, started at
/// `created_at`, in session `{run_id}-session`.
pub fn durable_run(run_id: &str, workflow: &str, created_at: i64) -> DurableRun {
    DurableRun {
        run_id: run_id.to_owned(),
        workflow: workflow.to_owned(),
        version: 3,
        workflow_id: Some(format!("{workflow}-id")),
        session_id: format!("{run_id}-session"),
        user_id: Some("ann".to_owned()),
        status: RunStatus::Running,
        input: json!({"topic": "quantum", "n": 1}),
        attempt: 1,
        response: None,
        error: None,
        created_at,
        updated_at: created_at,
        ended_at: None,
        log_only: false,
    }
}

/// A finished step `key` at `position` of the workflow body, returning `{"key": key}`.
pub fn journal_entry(key: &str, position: u32) -> JournalEntry {
    JournalEntry {
        key: key.to_owned(),
        scope: String::new(),
        position,
        kind: EntryKind::Step,
        status: EntryStatus::Done,
        input_hash: format!("{:016x}", u64::from(position) * 0x9e37_79b9),
        output: Some(json!({ "key": key })),
        error: None,
        wait: None,
        attempt: 1,
        created_at: 1_700_000_000_000 + i64::from(position),
        updated_at: 1_700_000_000_000 + i64::from(position),
    }
}

/// Event `seq` of run `run_id`: a custom event named `e{seq}`.
pub fn stored_event(run_id: &str, seq: u64) -> StoredEvent {
    let mut event = RunEvent::custom(format!("e{seq}"), json!({ "seq": seq }));
    event.run_id = Some(run_id.to_owned());
    event.created_at = 1_700_000_000_000 + i64::try_from(seq).unwrap_or(0);
    StoredEvent {
        run_id: run_id.to_owned(),
        seq,
        event,
    }
}

/// The events `seqs` of run `run_id` ([`stored_event`]).
pub fn stored_events(run_id: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<StoredEvent> {
    seqs.into_iter()
        .map(|seq| stored_event(run_id, seq))
        .collect()
}

/// The write that starts `run` (no fence), with `entries` and the events `seqs`.
pub fn start_write(
    run: &DurableRun,
    entries: Vec<JournalEntry>,
    seqs: impl IntoIterator<Item = u64>,
) -> DurableWrite {
    DurableWrite {
        fence: None,
        run: Some(run.clone()),
        entries,
        events: stored_events(&run.run_id, seqs),
        ..DurableWrite::new(run.run_id.clone())
    }
}

fn fence(attempt: u32, status: Option<RunStatus>) -> Option<Fence> {
    Some(Fence { attempt, status })
}

/// Everything stored of a durable run: its state (entries sorted by key) and every event.
async fn durable_snapshot(
    storage: &dyn Storage,
    run_id: &str,
) -> (Option<DurableState>, Vec<StoredEvent>) {
    let mut state = storage.load_durable(run_id).await.unwrap();
    if let Some(state) = &mut state {
        state.entries.sort_by(|a, b| a.key.cmp(&b.key));
    }
    let events = storage.read_events(run_id, 0, usize::MAX).await.unwrap();
    (state, events)
}

fn durable_ids(runs: &[DurableRun]) -> Vec<&str> {
    runs.iter().map(|run| run.run_id.as_str()).collect()
}

#[track_caller]
fn assert_fenced(result: Result<Option<Session>, StorageError>, run_id: &str, what: &str) {
    match result {
        Err(StorageError::Fenced {
            run_id: fenced,
            what: said,
        }) => {
            assert_eq!(fenced, run_id, "the fenced run");
            assert_eq!(said, what, "what the fence says");
        }
        other => panic!("expected `Fenced` ({what}) for `{run_id}`, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict(result: Result<Option<Session>, StorageError>, what: &str) {
    match result {
        Err(StorageError::Database {
            kind: StorageErrorKind::Conflict,
            ..
        }) => {}
        other => panic!("{what}: expected a `Database` error of kind `Conflict`, got {other:?}"),
    }
}

/// A storage that passes this suite keeps durable runs.
pub async fn durable_runs_are_supported(storage: Arc<dyn Storage>) {
    assert!(storage.supports_durable());
    assert!(storage.load_durable("missing").await.unwrap().is_none());
    assert!(
        storage
            .read_events("missing", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .durable_runs(&DurableQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(storage.prune_durable(i64::MAX).await.unwrap(), 0);
}

/// A run's row, its journal entries (every field, waits and errors included) and its events
/// read back exactly as written, awkward numbers and text, NUL and U+FDD0 included; a write
/// without a session write returns `None`.
pub async fn durable_write_and_load_round_trip(storage: Arc<dyn Storage>) {
    let value = awkward_value();
    // Events are compared as JSON text, and Postgres `jsonb` has no negative zero.
    let mut exact = value.clone();
    exact.as_object_mut().unwrap().remove("negative_zero");
    let nul: Value = NUL_TEXT.iter().map(|&t| json!(t)).collect();
    let mut run = durable_run("run-1", "ArticleWorkflow", 1_700_000_000_000);
    run.input = json!({"awkward": value, "nul": nul});
    run.user_id = None;
    let mut first = journal_entry("researcher#1/model#1", 0);
    first.scope = "researcher#1".to_owned();
    first.kind = EntryKind::Model;
    first.output = Some(json!({"awkward": value, "nul\0key": nul}));
    let mut failed = journal_entry("tool#1", 1);
    failed.kind = EntryKind::Tool;
    failed.output = None;
    failed.error = Some(format!("tool failed: {}", AWKWARD_TEXT.concat()));
    failed.attempt = 2;
    let mut wait = journal_entry("approval\0#1", 2);
    wait.kind = EntryKind::Wait;
    wait.status = EntryStatus::Pending;
    wait.output = None;
    wait.wait = Some(WaitSpec {
        prompt: json!({"question": "Publish? \u{FDD0}0", "draft": "\0"}),
        schema: json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"]}),
        deadline: Some(1_700_000_360_000),
    });
    let mut expired = journal_entry("late#1", 3);
    expired.kind = EntryKind::Wait;
    expired.status = EntryStatus::Expired;
    expired.wait = Some(WaitSpec::default());
    let entries = vec![first, failed, wait, expired];
    let mut events = stored_events("run-1", 1..=3);
    events[0].event = RunEvent::content(format!("text {} \0 {}", AWKWARD_TEXT[0], NUL_TEXT[3]));
    events[1].event = RunEvent::custom("awkward", exact.clone());
    events[1].event.member_path = vec!["researcher".into(), "critic\0".into()];
    events[1].event.source_run_id = Some("member-run".into());
    events[1].event.replayed = true;
    events[2].event = RunEvent::completed(RunResponse::from_json(exact.clone()));
    for event in &mut events {
        event.event.run_id = Some("run-1".into());
        event.event.session_id = Some(run.session_id.clone());
    }
    let written = DurableWrite {
        entries: entries.clone(),
        events: events.clone(),
        ..start_write(&run, Vec::new(), [])
    };
    assert_eq!(storage.write_durable(written).await.unwrap(), None);

    let (state, stored) = durable_snapshot(&*storage, "run-1").await;
    let state = state.expect("the run was written");
    assert_eq!(state.run, run);
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(state.entries, sorted);
    assert_eq!(state.last_seq, 3);
    assert_eq!(stored, events);
    for (read, written) in stored.iter().zip(&events) {
        // Bit for bit: the JSON of the event read back is the JSON written.
        assert_eq!(
            serde_json::to_string(&read.event).unwrap(),
            serde_json::to_string(&written.event).unwrap(),
            "event {}",
            written.seq
        );
    }
    let model = state
        .entries
        .iter()
        .find(|entry| entry.kind == EntryKind::Model)
        .unwrap();
    assert_floats_exact(&model.output.as_ref().unwrap()["awkward"], "journal output");
    assert_floats_exact(&state.run.input["awkward"], "run input");

    // The row of a run that ended, with its response and error, replaces the first.
    let mut ended = run.clone();
    ended.status = RunStatus::Error;
    ended.attempt = 1;
    ended.response = Some(RunResponse::from_text(NUL_TEXT.concat()));
    ended.error = Some("model unavailable \0".into());
    ended.updated_at = run.created_at + 500;
    ended.ended_at = Some(run.created_at + 500);
    let end = DurableWrite {
        fence: fence(1, Some(RunStatus::Running)),
        run: Some(ended.clone()),
        events: stored_events("run-1", [4]),
        ..DurableWrite::new("run-1")
    };
    assert_eq!(storage.write_durable(end).await.unwrap(), None);
    let (state, stored) = durable_snapshot(&*storage, "run-1").await;
    let state = state.unwrap();
    assert_eq!(state.run, ended);
    assert_eq!(state.entries, sorted, "the journal is kept");
    assert_eq!(state.last_seq, 4);
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[3], stored_event("run-1", 4));
    assert!(storage.load_durable("run-2").await.unwrap().is_none());
}

/// A write whose fence does not hold (another attempt, another status, no such run), or a
/// write of a run that does not exist without a row, fails with `Fenced` saying what
/// differs, and changes nothing: not the row, not the journal, not the log, and not the
/// session it would have committed.
pub async fn fenced_writes_change_nothing(storage: Arc<dyn Storage>) {
    let mut run = durable_run("run", "Wf", 1_000);
    run.attempt = 2;
    let start = start_write(&run, vec![journal_entry("a#1", 0)], 1..=2);
    storage.write_durable(start).await.unwrap();
    let before = durable_snapshot(&*storage, "run").await;
    let session = key("fenced-session");
    let attempt = |run_id: &str, fence: Option<Fence>, with_row: bool| {
        let mut row = run.clone();
        row.run_id = run_id.to_owned();
        row.status = RunStatus::Completed;
        row.attempt = 3;
        row.ended_at = Some(2_000);
        let mut changed = journal_entry("a#1", 0);
        changed.output = Some(json!("changed"));
        DurableWrite {
            fence,
            run: with_row.then_some(row),
            entries: vec![changed, journal_entry("b#1", 1)],
            events: stored_events(run_id, 3..=4),
            session: Some(run_write_at(session.clone(), 1, "k")),
            ..DurableWrite::new(run_id)
        }
    };
    let cases = [
        (
            attempt("run", fence(1, None), true),
            "run",
            "attempt 2, expected 1",
        ),
        (
            attempt("run", fence(3, Some(RunStatus::Running)), false),
            "run",
            "attempt 2, expected 3",
        ),
        (
            attempt("run", fence(2, Some(RunStatus::Paused)), true),
            "run",
            "status running, expected paused",
        ),
        (
            attempt("run", fence(2, Some(RunStatus::Completed)), false),
            "run",
            "status running, expected completed",
        ),
        (
            attempt("missing", fence(1, None), true),
            "missing",
            "no such run",
        ),
        (
            attempt("missing", fence(1, Some(RunStatus::Running)), false),
            "missing",
            "no such run",
        ),
    ];
    for (write, run_id, what) in cases {
        assert_fenced(storage.write_durable(write).await, run_id, what);
        assert_eq!(durable_snapshot(&*storage, "run").await, before, "{what}");
        assert_eq!(
            durable_snapshot(&*storage, "missing").await,
            (None, Vec::new()),
            "{what}"
        );
        assert!(
            storage
                .read(&session, &ReadOptions::default())
                .await
                .unwrap()
                .is_none(),
            "the session write of a fenced write is not applied ({what})"
        );
    }
    // Without a fence, a write of a run that does not exist must bring its row.
    let mut rowless = attempt("missing", None, false);
    rowless.events = stored_events("missing", 1..=1);
    assert_fenced(
        storage.write_durable(rowless).await,
        "missing",
        "no such run",
    );
    assert_eq!(
        durable_snapshot(&*storage, "missing").await,
        (None, Vec::new())
    );
    assert!(
        storage
            .read(&session, &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    // The fence is checked before the events: a fenced write with a gap is `Fenced`.
    let mut gap = attempt("run", fence(1, None), true);
    gap.events = stored_events("run", [7]);
    assert_fenced(
        storage.write_durable(gap).await,
        "run",
        "attempt 2, expected 1",
    );
    // The right fence passes, and a fence is optional.
    let mut right = attempt("run", fence(2, Some(RunStatus::Running)), true);
    right.session = None;
    storage.write_durable(right).await.unwrap();
    let (state, events) = durable_snapshot(&*storage, "run").await;
    let state = state.unwrap();
    assert_eq!(
        (state.run.attempt, state.run.status),
        (3, RunStatus::Completed)
    );
    assert_eq!(state.entries.len(), 2);
    assert_eq!(state.entries[0].output, Some(json!("changed")));
    assert_eq!(events.len(), 4);
    let mut unfenced = DurableWrite::new("run");
    unfenced.events = stored_events("run", [5]);
    storage.write_durable(unfenced).await.unwrap();
    assert_eq!(
        storage.load_durable("run").await.unwrap().unwrap().last_seq,
        5
    );
}

/// Events must continue the run's log exactly: a write whose events repeat a stored
/// sequence number, leave a gap, or skip or repeat one among themselves fails as a
/// `Conflict` and writes nothing (row, entries, other events, session write).
pub async fn event_gaps_and_duplicates_conflict(storage: Arc<dyn Storage>) {
    let run = durable_run("run", "Wf", 1_000);
    storage
        .write_durable(start_write(&run, vec![journal_entry("a#1", 0)], 1..=2))
        .await
        .unwrap();
    let before = durable_snapshot(&*storage, "run").await;
    let session = key("conflict-session");
    for seqs in [
        vec![2],
        vec![1, 2, 3],
        vec![4],
        vec![3, 5],
        vec![3, 3],
        vec![3, 4, 4],
        vec![0],
    ] {
        let mut row = run.clone();
        row.status = RunStatus::Paused;
        let write = DurableWrite {
            fence: fence(1, Some(RunStatus::Running)),
            run: Some(row),
            entries: vec![journal_entry("b#1", 1)],
            events: stored_events("run", seqs.clone()),
            session: Some(run_write_at(session.clone(), 1, "k")),
            ..DurableWrite::new("run")
        };
        assert_conflict(storage.write_durable(write).await, &format!("{seqs:?}"));
        assert_eq!(
            durable_snapshot(&*storage, "run").await,
            before,
            "{seqs:?} changed nothing"
        );
        assert!(
            storage
                .read(&session, &ReadOptions::default())
                .await
                .unwrap()
                .is_none(),
            "{seqs:?}: no session write"
        );
    }
    // A new run's log starts at 1.
    let fresh = durable_run("fresh", "Wf", 1_000);
    assert_conflict(
        storage
            .write_durable(start_write(&fresh, Vec::new(), [2]))
            .await,
        "a new run's log starting at 2",
    );
    assert_eq!(
        durable_snapshot(&*storage, "fresh").await,
        (None, Vec::new())
    );
    storage
        .write_durable(start_write(&fresh, Vec::new(), [1]))
        .await
        .unwrap();
    // The next one in order is accepted, after a conflict as before it.
    let next = DurableWrite {
        events: stored_events("run", 3..=5),
        ..DurableWrite::new("run")
    };
    storage.write_durable(next).await.unwrap();
    let (state, events) = durable_snapshot(&*storage, "run").await;
    assert_eq!(state.unwrap().last_seq, 5);
    assert_eq!(events, stored_events("run", 1..=5));
}

/// A durable write's session write is committed as `commit` does (state merged, run
/// appended, version and run count advanced), in the same transaction: the session is read
/// back with the run's record, and the write returns it as stored.
pub async fn durable_write_commits_its_session_write(storage: Arc<dyn Storage>) {
    let at = key("durable-session");
    storage
        .commit(run_write("durable-session", 1, "a"))
        .await
        .unwrap();
    let run = durable_run("run", "Wf", 1_000);
    storage
        .write_durable(start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    let mut ended = run.clone();
    ended.status = RunStatus::Completed;
    ended.response = Some(RunResponse::from_text("done"));
    ended.ended_at = Some(2_000);
    let mut record = self::run("durable-session", 2);
    record.run_id = "run".to_owned();
    let end = DurableWrite {
        fence: fence(1, Some(RunStatus::Running)),
        run: Some(ended.clone()),
        entries: vec![journal_entry("last#1", 0)],
        events: stored_events("run", [2]),
        session: Some(SessionWrite {
            state_patch: StatePatch::diff(&Map::new(), &obj(json!({"b": 2}))),
            run: Some(record.clone()),
            ..SessionWrite::new(at.clone())
        }),
        ..DurableWrite::new("run")
    };
    let returned = storage
        .write_durable(end)
        .await
        .unwrap()
        .expect("the session as stored");
    assert!(returned.runs.is_empty());
    assert_eq!(returned.version, 2);
    assert_eq!(returned.run_count, 2);
    assert_eq!(returned.session_state, obj(json!({"a": 1, "b": 2})));
    let session = read(&*storage, &at, 10).await;
    let mut without_runs = session.clone();
    without_runs.runs.clear();
    assert_eq!(without_runs, returned);
    assert_eq!(run_ids(&session.runs), ["durable-session-run-1", "run"]);
    assert_eq!(session.runs[1], record);
    let state = storage.load_durable("run").await.unwrap().unwrap();
    assert_eq!(state.run, ended);
    assert_eq!(state.last_seq, 2);
    assert_eq!(state.entries, [journal_entry("last#1", 0)]);

    // A session write may create its session, and may come without a row.
    let member = SessionKey::new("durable-session", SessionKind::Agent).scope("researcher");
    let write = DurableWrite {
        session: Some(run_write_at(member.clone(), 1, "m")),
        ..DurableWrite::new("run")
    };
    let created = storage.write_durable(write).await.unwrap().unwrap();
    assert_eq!((created.version, created.run_count), (1, 1));
    assert_eq!(created.key(), member);
    assert_eq!(read(&*storage, &member, 5).await.runs.len(), 1);
    // Deleting the session leaves the durable run alone.
    storage.delete_session(&at).await.unwrap();
    assert_eq!(storage.load_durable("run").await.unwrap().unwrap(), state);
    assert_eq!(storage.read_events("run", 0, 10).await.unwrap().len(), 2);
}

/// A journal entry written again under its key replaces the stored one; other keys and
/// other runs' entries are untouched; within one write the last entry of a key wins.
pub async fn journal_entries_are_replaced_by_key(storage: Arc<dyn Storage>) {
    let run = durable_run("run", "Wf", 1_000);
    let other = durable_run("other", "Wf", 1_000);
    let mut wait = journal_entry("approval#1", 1);
    wait.kind = EntryKind::Wait;
    wait.status = EntryStatus::Pending;
    wait.output = None;
    wait.wait = Some(WaitSpec {
        prompt: json!("ok?"),
        schema: json!({"type": "boolean"}),
        deadline: None,
    });
    storage
        .write_durable(start_write(
            &run,
            vec![journal_entry("step#1", 0), wait.clone()],
            [],
        ))
        .await
        .unwrap();
    storage
        .write_durable(start_write(&other, vec![wait.clone()], []))
        .await
        .unwrap();
    let mut answered = wait.clone();
    answered.status = EntryStatus::Done;
    answered.output = Some(json!(true));
    answered.wait = None;
    answered.updated_at += 10;
    answered.position = 5;
    let write = DurableWrite {
        fence: fence(1, Some(RunStatus::Running)),
        entries: vec![answered.clone()],
        ..DurableWrite::new("run")
    };
    storage.write_durable(write).await.unwrap();
    let state = durable_snapshot(&*storage, "run").await.0.unwrap();
    assert_eq!(
        state.entries,
        [answered.clone(), journal_entry("step#1", 0)]
    );
    let others = durable_snapshot(&*storage, "other").await.0.unwrap();
    assert_eq!(
        others.entries,
        [wait],
        "another run's entry of the same key"
    );

    let mut first = journal_entry("twice#1", 2);
    first.output = Some(json!("first"));
    let mut second = first.clone();
    second.output = Some(json!("second"));
    let write = DurableWrite {
        entries: vec![first, second.clone()],
        ..DurableWrite::new("run")
    };
    storage.write_durable(write).await.unwrap();
    let state = durable_snapshot(&*storage, "run").await.0.unwrap();
    assert_eq!(
        state.entries,
        [answered, journal_entry("step#1", 0), second],
        "the last of a key in one write wins"
    );
}

/// `durable_runs` lists the oldest first (then by run id, byte-wise), filtered by workflow
/// type and any of the statuses asked for, at most `limit`.
pub async fn durable_runs_oldest_first_with_filters(storage: Arc<dyn Storage>) {
    let runs = [
        ("d", "A", 300, RunStatus::Running),
        ("b", "A", 100, RunStatus::Paused),
        ("c", "B", 100, RunStatus::Running),
        ("a", "A", 200, RunStatus::Completed),
        ("e", "B", 50, RunStatus::Cancelled),
        ("B", "A", 100, RunStatus::Running),
        ("é", "A", 100, RunStatus::Error),
    ];
    for (run_id, workflow, created_at, status) in runs {
        let mut run = durable_run(run_id, workflow, created_at);
        run.status = status;
        storage
            .write_durable(start_write(&run, Vec::new(), []))
            .await
            .unwrap();
    }
    let listed = |query: DurableQuery| {
        let storage = Arc::clone(&storage);
        async move {
            let runs = storage.durable_runs(&query).await.unwrap();
            for run in &runs {
                assert!(query.matches(run), "{query:?} listed {run:?}");
            }
            durable_ids(&runs)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(DurableQuery::all()).await,
        ["e", "B", "b", "c", "é", "a", "d"]
    );
    assert_eq!(
        listed(DurableQuery::all().workflow("A")).await,
        ["B", "b", "é", "a", "d"]
    );
    assert_eq!(
        listed(DurableQuery::all().status(RunStatus::Running)).await,
        ["B", "c", "d"]
    );
    assert_eq!(
        listed(
            DurableQuery::all()
                .workflow("A")
                .status(RunStatus::Running)
                .status(RunStatus::Paused)
        )
        .await,
        ["B", "b", "d"]
    );
    assert_eq!(
        listed(DurableQuery::all().status(RunStatus::Unknown)).await,
        Vec::<String>::new()
    );
    assert_eq!(listed(DurableQuery::all().limit(3)).await, ["e", "B", "b"]);
    assert_eq!(
        listed(DurableQuery::all().workflow("B").limit(1)).await,
        ["e"]
    );
    assert!(listed(DurableQuery::all().limit(0)).await.is_empty());
    assert!(listed(DurableQuery::all().workflow("C")).await.is_empty());
    // A row written again moves with its new values.
    let mut moved = durable_run("e", "A", 400);
    moved.status = RunStatus::Running;
    storage
        .write_durable(start_write(&moved, Vec::new(), []))
        .await
        .unwrap();
    assert_eq!(
        listed(DurableQuery::all().status(RunStatus::Running)).await,
        ["B", "c", "d", "e"]
    );
    let all = storage.durable_runs(&DurableQuery::all()).await.unwrap();
    assert_eq!(all.last(), Some(&moved), "rows are listed whole");
}

/// `read_events` returns the events after a sequence number, in order, at most `limit`:
/// what a reader pages through and then follows.
pub async fn read_events_pages_through_the_log(storage: Arc<dyn Storage>) {
    let run = durable_run("run", "Wf", 1_000);
    storage
        .write_durable(start_write(&run, Vec::new(), 1..=4))
        .await
        .unwrap();
    for chunk in [5..=7, 8..=10] {
        let write = DurableWrite {
            fence: fence(1, None),
            events: stored_events("run", chunk),
            ..DurableWrite::new("run")
        };
        storage.write_durable(write).await.unwrap();
    }
    let other = durable_run("other", "Wf", 1_000);
    storage
        .write_durable(start_write(&other, Vec::new(), 1..=3))
        .await
        .unwrap();
    let seqs = |events: Vec<StoredEvent>| {
        for event in &events {
            assert_eq!(event.run_id, "run");
        }
        events
            .into_iter()
            .map(|event| event.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seqs(storage.read_events("run", 0, 3).await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(
        seqs(storage.read_events("run", 3, 3).await.unwrap()),
        [4, 5, 6]
    );
    assert_eq!(
        seqs(storage.read_events("run", 6, 100).await.unwrap()),
        [7, 8, 9, 10]
    );
    assert!(
        storage
            .read_events("run", 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(storage.read_events("run", 0, 0).await.unwrap().is_empty());
    assert!(
        storage
            .read_events("run", u64::MAX, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        storage.read_events("run", 9, usize::MAX).await.unwrap(),
        [stored_event("run", 10)]
    );
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let page = storage.read_events("run", after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, stored_events("run", 1..=10));
    assert_eq!(
        storage.read_events("other", 1, 10).await.unwrap(),
        stored_events("other", 2..=3)
    );
}

/// `prune_durable` deletes the runs that ended (completed, error, cancelled) before the
/// cutoff, with their journals and logs, and returns how many; runs that have not ended,
/// or ended at or after the cutoff, are kept whole.
pub async fn prune_deletes_only_runs_that_ended_before(storage: Arc<dyn Storage>) {
    let runs = [
        ("completed-early", RunStatus::Completed, Some(100)),
        ("error-early", RunStatus::Error, Some(200)),
        ("cancelled-early", RunStatus::Cancelled, Some(499)),
        ("completed-at-cutoff", RunStatus::Completed, Some(500)),
        ("completed-late", RunStatus::Completed, Some(900)),
        ("running", RunStatus::Running, None),
        ("paused", RunStatus::Paused, None),
        // Not finished, whatever its `ended_at` says.
        ("running-with-end", RunStatus::Running, Some(50)),
        ("paused-with-end", RunStatus::Paused, Some(50)),
        // Finished without an end time: kept.
        ("completed-without-end", RunStatus::Completed, None),
    ];
    for (run_id, status, ended_at) in runs {
        let mut run = durable_run(run_id, "Wf", 10);
        run.status = status;
        run.ended_at = ended_at;
        storage
            .write_durable(start_write(&run, vec![journal_entry("a#1", 0)], 1..=3))
            .await
            .unwrap();
    }
    let mut kept = Vec::new();
    for (run_id, ..) in &runs[3..] {
        kept.push(durable_snapshot(&*storage, run_id).await);
    }
    assert_eq!(storage.prune_durable(500).await.unwrap(), 3);
    for (run_id, ..) in &runs[..3] {
        assert_eq!(
            durable_snapshot(&*storage, run_id).await,
            (None, Vec::new()),
            "{run_id} pruned with its journal and log"
        );
    }
    for ((run_id, ..), before) in runs[3..].iter().zip(&kept) {
        assert_eq!(
            &durable_snapshot(&*storage, run_id).await,
            before,
            "{run_id}"
        );
    }
    assert_eq!(storage.prune_durable(500).await.unwrap(), 0);
    assert_eq!(
        storage
            .durable_runs(&DurableQuery::all())
            .await
            .unwrap()
            .len(),
        7
    );
    // A run started again under a pruned id starts from an empty journal and log.
    let again = durable_run("completed-early", "Wf", 10);
    storage
        .write_durable(start_write(&again, Vec::new(), [1]))
        .await
        .unwrap();
    let (state, events) = durable_snapshot(&*storage, "completed-early").await;
    let state = state.unwrap();
    assert!(state.entries.is_empty());
    assert_eq!((state.last_seq, events.len()), (1, 1));
    assert_eq!(storage.prune_durable(i64::MAX).await.unwrap(), 2);
}

/// `drop_tables` drops durable runs, journals and logs too; they work again afterwards.
pub async fn drop_tables_drops_durable_runs(storage: Arc<dyn Storage>) {
    let run = durable_run("run", "Wf", 1_000);
    storage
        .write_durable(start_write(&run, vec![journal_entry("a#1", 0)], 1..=2))
        .await
        .unwrap();
    storage.drop_tables().await.unwrap();
    assert_eq!(durable_snapshot(&*storage, "run").await, (None, Vec::new()));
    assert!(
        storage
            .durable_runs(&DurableQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
    storage
        .write_durable(start_write(&run, Vec::new(), [1]))
        .await
        .unwrap();
    let (state, events) = durable_snapshot(&*storage, "run").await;
    assert!(state.unwrap().entries.is_empty());
    assert_eq!(events, stored_events("run", [1]));
    storage.drop_tables().await.unwrap();
}

/// Several processes' worth of writers on one run: each appends its event at the log's
/// end it last read, under the run's fence; writes that lost the race fail as conflicts
/// and are tried again. The log ends up with every event exactly once, without gaps; and
/// of several resumes of one attempt exactly one wins.
pub async fn concurrent_writers_of_one_run(storage: Arc<dyn Storage>) {
    const TASKS: usize = 6;
    const EVENTS: usize = 15;
    let run = durable_run("run", "Wf", 1_000);
    storage
        .write_durable(start_write(&run, Vec::new(), []))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let storage = Arc::clone(&storage);
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for n in 0..EVENTS {
                loop {
                    let last = storage.load_durable("run").await.unwrap().unwrap().last_seq;
                    let mut event = stored_event("run", last + 1);
                    event.event = RunEvent::custom("append", json!({"task": task, "n": n}));
                    let write = DurableWrite {
                        fence: fence(1, Some(RunStatus::Running)),
                        entries: vec![journal_entry(&format!("t{task}#{n}"), 0)],
                        events: vec![event],
                        ..DurableWrite::new("run")
                    };
                    match storage.write_durable(write).await {
                        Ok(_) => break,
                        Err(error) if error.is_conflict() => conflicts += 1,
                        Err(error) => panic!("task {task}: {error:?}"),
                    }
                    assert!(conflicts < 10_000, "no progress");
                }
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let (state, events) = durable_snapshot(&*storage, "run").await;
    let state = state.unwrap();
    let total = (TASKS * EVENTS) as u64;
    assert_eq!(state.last_seq, total);
    assert_eq!(state.entries.len(), TASKS * EVENTS);
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let appended: BTreeSet<String> = events
        .iter()
        .map(|event| match &event.event.kind {
            RunEventKind::Custom { data, .. } => data.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(appended.len(), TASKS * EVENTS, "every event once");

    // Resumes racing for attempt 1: one moves the run to attempt 2, the others are fenced.
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let storage = Arc::clone(&storage);
        let mut resumed = run.clone();
        resumed.attempt = 2;
        resumed.input = json!({ "resumed_by": task });
        handles.push(tokio::spawn(async move {
            let write = DurableWrite {
                fence: fence(1, Some(RunStatus::Running)),
                run: Some(resumed),
                ..DurableWrite::new("run")
            };
            storage.write_durable(write).await
        }));
    }
    let mut won = 0;
    for handle in handles {
        match handle.await.unwrap() {
            Ok(None) => won += 1,
            Err(StorageError::Fenced { what, .. }) => {
                assert_eq!(what, "attempt 2, expected 1");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one resume wins");
}

/// Writes to many runs at once (as a server driving many runs does) each apply on their
/// own, with their session writes; a fenced one among them costs the others nothing.
pub async fn concurrent_writes_of_many_runs(storage: Arc<dyn Storage>) {
    const RUNS: usize = 24;
    for n in 0..RUNS {
        let run = durable_run(&format!("run-{n}"), "Wf", 1_000);
        storage
            .write_durable(start_write(&run, Vec::new(), [1]))
            .await
            .unwrap();
    }
    let writes = (0..RUNS).map(|n| {
        let run_id = format!("run-{n}");
        let storage = Arc::clone(&storage);
        tokio::spawn(async move {
            let mut write = DurableWrite {
                // Every fifth is fenced out.
                fence: fence(if n % 5 == 4 { 7 } else { 1 }, Some(RunStatus::Running)),
                entries: vec![journal_entry("a#1", 0)],
                events: stored_events(&run_id, [2]),
                ..DurableWrite::new(run_id.clone())
            };
            if n % 3 == 0 {
                write.session = Some(run_write(&format!("session-{n}"), n, "k"));
            }
            storage.write_durable(write).await
        })
    });
    let results = futures_join(writes.collect()).await;
    for (n, result) in results.into_iter().enumerate() {
        let run_id = format!("run-{n}");
        let state = storage.load_durable(&run_id).await.unwrap().unwrap();
        if n % 5 == 4 {
            assert_fenced(result, &run_id, "attempt 1, expected 7");
            assert_eq!(state.last_seq, 1);
            assert!(state.entries.is_empty());
        } else {
            let session = result.unwrap();
            assert_eq!(state.last_seq, 2);
            assert_eq!(state.entries.len(), 1);
            assert_eq!(session.is_some(), n % 3 == 0, "{run_id}");
        }
        let committed = storage
            .read(&key(&format!("session-{n}")), &ReadOptions::with_runs(1))
            .await
            .unwrap();
        assert_eq!(
            committed.is_some(),
            n % 3 == 0 && n % 5 != 4,
            "session-{n} written exactly when its durable write was"
        );
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

/// What a durable write's outcome is, comparable across stores: the session as stored
/// (timestamps aside), or the kind of failure.
#[derive(Debug, PartialEq)]
enum Outcome {
    Written(Option<Box<Session>>),
    Fenced(String),
    Conflict,
}

fn outcome(result: Result<Option<Session>, StorageError>) -> Outcome {
    match result {
        Ok(session) => Outcome::Written(session.map(|mut session| {
            session.created_at = 0;
            session.updated_at = 0;
            Box::new(session)
        })),
        Err(StorageError::Fenced { what, .. }) => Outcome::Fenced(what),
        Err(StorageError::Database {
            kind: StorageErrorKind::Conflict,
            ..
        }) => Outcome::Conflict,
        Err(error) => panic!("unexpected error: {error:?}"),
    }
}

/// A deterministic pseudo-random sequence of durable writes (right and wrong fences, right
/// and wrong sequence numbers, rows, entries, session writes), reads, listings and prunes
/// gives the same results on the storage as on `MemoryStorage`.
pub async fn same_durable_results_as_memory_storage(storage: Arc<dyn Storage>) {
    let reference = MemoryStorage::new();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    let ids = ["r0", "r1", "r2", "r3"];
    let statuses = [
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Error,
        RunStatus::Cancelled,
    ];
    for step in 0..300_usize {
        let run_id = ids[next(ids.len())];
        match next(10) {
            0..=6 => {
                let known = reference.load_durable(run_id).await.unwrap();
                let (attempt, status, last) =
                    known.as_ref().map_or((1, RunStatus::Running, 0), |state| {
                        (state.run.attempt, state.run.status, state.last_seq)
                    });
                let mut write = DurableWrite::new(run_id);
                write.fence = match next(6) {
                    0 => None,
                    1 => fence(attempt + 1, None),
                    2 => fence(attempt, Some(statuses[next(statuses.len())])),
                    _ => fence(attempt, Some(status)),
                };
                if next(3) == 0 || known.is_none() && next(2) == 0 {
                    let step = i64::try_from(step).unwrap();
                    let mut run = durable_run(run_id, ["A", "B"][next(2)], 100 * (step % 7));
                    run.status = statuses[next(statuses.len())];
                    run.attempt = attempt + u32::from(next(3) == 0);
                    run.updated_at = step;
                    run.ended_at = run.is_finished().then_some(step * 10);
                    write.run = Some(run);
                }
                for _ in 0..next(3) {
                    let mut entry = journal_entry(&format!("k{}", next(4)), 0);
                    entry.output = Some(json!({"step": step}));
                    entry.status = [EntryStatus::Done, EntryStatus::Pending][next(2)];
                    write.entries.push(entry);
                }
                let first = match next(8) {
                    0 => last,
                    1 => last + 2,
                    _ => last + 1,
                };
                let count = next(3) as u64;
                write.events = stored_events(run_id, first..first + count);
                if next(4) == 0 {
                    write.session = Some(run_write(&format!("s{}", next(2)), step, "k"));
                }
                let expected = outcome(reference.write_durable(write.clone()).await);
                let actual = outcome(storage.write_durable(write).await);
                assert_eq!(actual, expected, "write at step {step}");
            }
            7 => {
                let (expected, expected_events) = durable_snapshot(&reference, run_id).await;
                let (actual, actual_events) = durable_snapshot(&*storage, run_id).await;
                assert_eq!(actual, expected, "load at step {step}");
                assert_eq!(actual_events, expected_events, "events at step {step}");
                let after = next(4) as u64;
                let limit = next(4);
                assert_eq!(
                    storage.read_events(run_id, after, limit).await.unwrap(),
                    reference.read_events(run_id, after, limit).await.unwrap(),
                    "read_events at step {step}"
                );
            }
            8 => {
                let mut query = DurableQuery::all();
                if next(2) == 0 {
                    query = query.workflow(["A", "B"][next(2)]);
                }
                for _ in 0..next(3) {
                    query = query.status(statuses[next(statuses.len())]);
                }
                if next(2) == 0 {
                    query = query.limit(next(4));
                }
                assert_eq!(
                    storage.durable_runs(&query).await.unwrap(),
                    reference.durable_runs(&query).await.unwrap(),
                    "durable_runs({query:?}) at step {step}"
                );
            }
            _ => {
                let before = i64::try_from(step * 5).unwrap();
                assert_eq!(
                    storage.prune_durable(before).await.unwrap(),
                    reference.prune_durable(before).await.unwrap(),
                    "prune at step {step}"
                );
            }
        }
    }
    for run_id in ids {
        assert_eq!(
            durable_snapshot(&*storage, run_id).await,
            durable_snapshot(&reference, run_id).await,
            "{run_id} at the end"
        );
    }
    for session in ["s0", "s1"] {
        let normalize = |session: Option<Session>| {
            session.map(|mut session| {
                session.created_at = 0;
                session.updated_at = 0;
                session
            })
        };
        let options = ReadOptions::with_runs(1000);
        assert_eq!(
            normalize(storage.read(&key(session), &options).await.unwrap()),
            normalize(reference.read(&key(session), &options).await.unwrap()),
            "{session}"
        );
    }
}
