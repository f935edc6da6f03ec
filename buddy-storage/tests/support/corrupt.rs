//! The corrupt-row suite: each kind of corruption, made by hand with raw SQL, checked on
//! every read path (`read` with and without runs, `runs`, `list_sessions`, and a `commit`
//! that reads the existing row), the same for every SQL backend.
//!
//! A backend's test file builds a [`Raw`] (a store whose tables allow the NULLs a hand-edited
//! or foreign-made table may hold, plus a way to run SQL on them and to snapshot them) and
//! calls [`check_every_corruption`] and [`refused_write_leaves_the_store_usable`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use buddy_core::StorageError;
use buddy_core::storage::{ReadOptions, Storage};
use buddy_storage::conformance::{key, run, run_write};

/// A boxed future, for the closures of [`Raw`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A store under test, with raw access to its tables.
pub struct Raw {
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// Runs SQL in which `{t}` stands for the sessions table and `{r}` for the runs table.
    pub exec: Arc<dyn Fn(String) -> BoxFuture<()> + Send + Sync>,
    /// Every row of both tables, as text, in a fixed order.
    pub snapshot: Arc<dyn Fn() -> BoxFuture<Vec<String>> + Send + Sync>,
    /// SQL (with `{t}`, `{r}`) that makes the database refuse a run with id `refused`.
    pub refuse_run_sql: &'static str,
    /// Keeps temporary files or schemas alive.
    pub guard: Box<dyn Send>,
}

/// Which part of the stored session a corruption breaks.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// A column of the session row: every read of the row fails, `runs` still works.
    Row,
    /// The newest run record: reads of the runs fail, the session row still reads.
    Run,
    /// `run_count` below the stored history: only a commit can tell.
    RunCount,
}

/// One corruption: its name, the SQL making it (on session `bad`, whose runs have `seq` 1
/// and 2), what part it breaks and the `what` of the expected [`StorageError::Corrupt`].
const CORRUPTIONS: &[(&str, &str, Part, &str)] = &[
    (
        "run record []",
        "UPDATE {r} SET record = '[]' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "run record a string",
        "UPDATE {r} SET record = '\"text\"' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "run record a number",
        "UPDATE {r} SET record = '42' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "run record null JSON",
        "UPDATE {r} SET record = 'null' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "run record {}",
        "UPDATE {r} SET record = '{}' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "run record without run_id",
        "UPDATE {r} SET record = '{\"input\": {}, \"status\": \"completed\"}' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "run record with a numeric run_id",
        "UPDATE {r} SET record = '{\"run_id\": 5}' WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "NULL run record",
        "UPDATE {r} SET record = NULL WHERE session_id = 'bad' AND seq = 2",
        Part::Run,
        "run record",
    ),
    (
        "NULL created_at",
        "UPDATE {t} SET created_at = NULL WHERE session_id = 'bad'",
        Part::Row,
        "created_at",
    ),
    (
        "NULL updated_at",
        "UPDATE {t} SET updated_at = NULL WHERE session_id = 'bad'",
        Part::Row,
        "updated_at",
    ),
    (
        "NULL version",
        "UPDATE {t} SET version = NULL WHERE session_id = 'bad'",
        Part::Row,
        "version",
    ),
    (
        "NULL run_count",
        "UPDATE {t} SET run_count = NULL WHERE session_id = 'bad'",
        Part::Row,
        "run_count",
    ),
    (
        "NULL session_state",
        "UPDATE {t} SET session_state = NULL WHERE session_id = 'bad'",
        Part::Row,
        "session_state",
    ),
    (
        "NULL component_data",
        "UPDATE {t} SET component_data = NULL WHERE session_id = 'bad'",
        Part::Row,
        "component_data",
    ),
    (
        "session_state []",
        "UPDATE {t} SET session_state = '[]' WHERE session_id = 'bad'",
        Part::Row,
        "session_state",
    ),
    (
        "extra_data a string",
        "UPDATE {t} SET extra_data = '\"x\"' WHERE session_id = 'bad'",
        Part::Row,
        "extra_data",
    ),
    (
        "run_count below the history",
        "UPDATE {t} SET run_count = 1 WHERE session_id = 'bad'",
        Part::RunCount,
        "run_count",
    ),
    (
        "run_count zero",
        "UPDATE {t} SET run_count = 0 WHERE session_id = 'bad'",
        Part::RunCount,
        "run_count",
    ),
];

/// The session id and `what` of a [`StorageError::Corrupt`]; panics on any other error.
fn corrupt(context: &str, error: StorageError) -> (String, &'static str) {
    match error {
        StorageError::Corrupt {
            session_id, what, ..
        } => (session_id, what),
        other => panic!("{context}: expected Corrupt, got {other:?}"),
    }
}

/// Sessions `good` and `bad`, two runs each.
async fn write_sessions(storage: &dyn Storage) {
    for id in ["good", "bad"] {
        for n in 1..=2 {
            storage.commit(run_write(id, n, "k")).await.unwrap();
        }
    }
}

/// Every corruption of [`CORRUPTIONS`], each on a fresh store from `make`.
pub async fn check_every_corruption<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<Raw>>,
{
    for &(name, template, part, what) in CORRUPTIONS {
        let Some(raw) = make().await else { return };
        check_corruption(&raw, name, template, part, what).await;
    }
}

async fn check_corruption(raw: &Raw, name: &str, template: &str, part: Part, what: &str) {
    let storage = &*raw.storage;
    write_sessions(storage).await;
    (raw.exec)(template.to_owned()).await;
    let before = (raw.snapshot)().await;
    let bad = key("bad");
    let expected = ("bad".to_owned(), what);
    let with_runs = storage.read(&bad, &ReadOptions::with_runs(10)).await;
    let without_runs = storage.read(&bad, &ReadOptions::with_runs(0)).await;
    let runs = storage.runs(&bad, None).await;
    let listed = storage.list_sessions(&Default::default()).await.unwrap();
    let listed: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    match part {
        Part::Row => {
            let context = format!("{name}: read with runs");
            assert_eq!(
                corrupt(&context, with_runs.unwrap_err()),
                expected,
                "{context}"
            );
            let context = format!("{name}: read without runs");
            assert_eq!(
                corrupt(&context, without_runs.unwrap_err()),
                expected,
                "{context}"
            );
            assert_eq!(runs.unwrap().len(), 2, "{name}: runs need not read the row");
            assert_eq!(
                listed,
                ["good"],
                "{name}: the corrupt row is skipped, not fatal"
            );
        }
        Part::Run => {
            let context = format!("{name}: read with runs");
            assert_eq!(
                corrupt(&context, with_runs.unwrap_err()),
                expected,
                "{context}"
            );
            assert!(without_runs.unwrap().is_some(), "{name}: read without runs");
            let context = format!("{name}: runs");
            assert_eq!(corrupt(&context, runs.unwrap_err()), expected, "{context}");
            assert_eq!(listed.len(), 2, "{name}: listing reads no runs: {listed:?}");
        }
        Part::RunCount => {
            let session = with_runs.unwrap().unwrap();
            assert_eq!(session.runs.len(), 2, "{name}");
            assert!(without_runs.unwrap().is_some(), "{name}");
            assert_eq!(runs.unwrap().len(), 2, "{name}");
            assert_eq!(listed.len(), 2, "{name}: {listed:?}");
        }
    }
    assert_eq!(
        (raw.snapshot)().await,
        before,
        "{name}: a failed read changed the tables"
    );
    let committed = storage.commit(run_write("bad", 3, "k")).await;
    match part {
        Part::Row | Part::RunCount => {
            let context = format!("{name}: commit");
            assert_eq!(
                corrupt(&context, committed.unwrap_err()),
                expected,
                "{context}"
            );
            assert_eq!(
                (raw.snapshot)().await,
                before,
                "{name}: a refused commit changed the tables"
            );
        }
        Part::Run => {
            // A commit reads the session row, not the runs: it appends after the bad run
            // and leaves that run as it was.
            committed.unwrap();
            let context = format!("{name}: read after commit");
            let error = storage
                .read(&bad, &ReadOptions::with_runs(10))
                .await
                .unwrap_err();
            assert_eq!(corrupt(&context, error), expected, "{context}");
            assert_eq!(
                storage.runs(&bad, Some(1)).await.unwrap()[0].run_id,
                run("bad", 3).run_id
            );
        }
    }
    // The other session is untouched by all this.
    storage.commit(run_write("good", 3, "k")).await.unwrap();
    let good = storage
        .read(&key("good"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(good.runs.len(), 3, "{name}");
    assert_eq!(good.run_count, 3, "{name}");
}

/// A run the database refuses (a trigger or a check made by [`Raw::refuse_run_sql`]) fails
/// the commit, changes nothing, and the same store then commits valid writes.
pub async fn refused_write_leaves_the_store_usable(raw: Raw) {
    let storage = &*raw.storage;
    write_sessions(storage).await;
    (raw.exec)(raw.refuse_run_sql.to_owned()).await;
    let before = (raw.snapshot)().await;
    for _ in 0..3 {
        let mut write = run_write("bad", 3, "refused_key");
        if let Some(run) = &mut write.run {
            run.run_id = "refused".to_owned();
        }
        let error = storage.commit(write).await.unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Database {
                    operation: "commit",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            (raw.snapshot)().await,
            before,
            "the refused commit changed nothing"
        );
    }
    for n in 3..6 {
        storage.commit(run_write("bad", n, "k")).await.unwrap();
    }
    let session = storage
        .read(&key("bad"), &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.runs.len(), 5);
    assert_eq!(session.run_count, 5);
    assert!(!session.session_state.contains_key("refused_key"));
    drop(raw.guard);
}

/// Which part of a stored durable run a corruption breaks.
#[derive(Clone, Copy, Debug)]
enum DurablePart {
    /// The run's row: loading fails, listing skips it, the log still reads.
    Run,
    /// A journal entry: loading fails, listing and the log still work.
    Entry,
    /// An event: reading the log past it fails, loading still works.
    Event,
}

/// Durable rows broken by hand (JSON that is not what was written: `jsonb` columns hold
/// only JSON), on run `bad` (entry `a#1`, events 1 to 3), with the `what` of the expected
/// [`StorageError::CorruptRun`]. `{d}`, `{j}` and `{e}` stand for the durable tables.
const DURABLE_CORRUPTIONS: &[(&str, &str, DurablePart, &str)] = &[
    (
        "run record a number",
        "UPDATE {d} SET record = '42' WHERE run_id = 'bad'",
        DurablePart::Run,
        "run row",
    ),
    (
        "run record an array",
        "UPDATE {d} SET record = '[]' WHERE run_id = 'bad'",
        DurablePart::Run,
        "run row",
    ),
    (
        "run record with a wrong type",
        "UPDATE {d} SET record = '{\"run_id\": \"bad\", \"attempt\": \"one\"}' WHERE run_id = 'bad'",
        DurablePart::Run,
        "run row",
    ),
    (
        "run record without a run id",
        "UPDATE {d} SET record = '{\"status\": \"running\"}' WHERE run_id = 'bad'",
        DurablePart::Run,
        "run row",
    ),
    (
        "journal record without a key",
        "UPDATE {j} SET record = '{\"position\": 1}' WHERE run_id = 'bad'",
        DurablePart::Entry,
        "journal entry",
    ),
    (
        "journal record a string",
        "UPDATE {j} SET record = '\"text\"' WHERE run_id = 'bad' AND key = 'a#1'",
        DurablePart::Entry,
        "journal entry",
    ),
    (
        "journal record with a wrong type",
        "UPDATE {j} SET record = '{\"key\": \"a#1\", \"position\": -1}' WHERE run_id = 'bad'",
        DurablePart::Entry,
        "journal entry `a#1`",
    ),
    (
        "event a number",
        "UPDATE {e} SET event = '7' WHERE run_id = 'bad' AND seq = 2",
        DurablePart::Event,
        "event 2",
    ),
    (
        "event without a kind",
        "UPDATE {e} SET event = '{\"created_at\": 1}' WHERE run_id = 'bad' AND seq = 2",
        DurablePart::Event,
        "event 2",
    ),
];

/// Every corruption of [`DURABLE_CORRUPTIONS`], each on a fresh store from `make`: the
/// read that meets it fails with [`StorageError::CorruptRun`] naming the run and what is
/// bad, the listing skips a corrupt run, reads that do not need the bad part work, and a
/// write that brings the run's row again repairs a corrupt row.
pub async fn check_every_durable_corruption<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<Raw>>,
{
    for &(name, template, part, what) in DURABLE_CORRUPTIONS {
        let Some(raw) = make().await else { return };
        check_durable_corruption(&raw, name, template, part, what).await;
    }
}

async fn check_durable_corruption(
    raw: &Raw,
    name: &str,
    template: &str,
    part: DurablePart,
    what: &str,
) {
    use buddy_core::durable::DurableQuery;
    use buddy_storage::conformance::{durable_run, journal_entry, start_write};

    let storage = &*raw.storage;
    let mut runs = Vec::new();
    for id in ["good", "bad"] {
        let run = durable_run(id, "Wf", 1);
        storage
            .write_durable(start_write(&run, vec![journal_entry("a#1", 0)], 1..=3))
            .await
            .unwrap();
        runs.push(run);
    }
    (raw.exec)(template.to_owned()).await;
    let expected = ("bad".to_owned(), what.to_owned());
    let loaded = storage.load_durable("bad").await;
    let listed = storage.durable_runs(&DurableQuery::all()).await.unwrap();
    let listed: Vec<&str> = listed.iter().map(|run| run.run_id.as_str()).collect();
    let events = storage.read_events("bad", 0, 10).await;
    match part {
        DurablePart::Run | DurablePart::Entry => {
            let context = format!("{name}: load_durable");
            assert_eq!(
                corrupt_run(&context, loaded.unwrap_err()),
                expected,
                "{context}"
            );
            assert_eq!(events.unwrap().len(), 3, "{name}: the log still reads");
        }
        DurablePart::Event => {
            assert_eq!(loaded.unwrap().unwrap().last_seq, 3, "{name}");
            let context = format!("{name}: read_events");
            assert_eq!(
                corrupt_run(&context, events.unwrap_err()),
                expected,
                "{context}"
            );
            assert_eq!(
                storage.read_events("bad", 2, 10).await.unwrap().len(),
                1,
                "{name}: a page after the bad event reads"
            );
        }
    }
    match part {
        DurablePart::Run => assert_eq!(listed, ["good"], "{name}: skipped, not fatal"),
        DurablePart::Entry | DurablePart::Event => {
            assert_eq!(listed, ["bad", "good"], "{name}")
        }
    }
    if let DurablePart::Run = part {
        // The fence reads the row's columns, so a resume can write the row again.
        let mut repair = start_write(&runs[1], Vec::new(), [4]);
        repair.fence = Some(buddy_core::durable::Fence {
            attempt: 1,
            status: None,
        });
        storage.write_durable(repair).await.unwrap();
        let state = storage.load_durable("bad").await.unwrap().unwrap();
        assert_eq!(state.run, runs[1], "{name}: repaired");
        assert_eq!(state.last_seq, 4, "{name}");
    }
    let good = storage.load_durable("good").await.unwrap().unwrap();
    assert_eq!((good.entries.len(), good.last_seq), (1, 3), "{name}");
}

fn corrupt_run(context: &str, error: StorageError) -> (String, String) {
    match error {
        StorageError::CorruptRun { run_id, what, .. } => (run_id, what),
        other => panic!("{context}: expected CorruptRun, got {other:?}"),
    }
}
