//! The storage conformance suite: every case is written once against `Arc<dyn Storage>`
//! and run for every backend by [`conformance_suite!`]; the in-memory storage defines what
//! is right.
//!
//! A backend's test file declares a factory `async fn fixture() -> Option<Fixture>`
//! (`None` skips the suite, e.g. without a database server) and invokes the macro.

#![allow(clippy::unwrap_used, dead_code)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use buddy_core::run::{RunRecord, RunResponse, RunStatus};
use buddy_core::session::{Session, SessionKind, SessionQuery, SessionWrite, StatePatch};
use buddy_core::storage::{ReadOptions, Storage};
use serde_json::{Map, Value, json};

/// A storage under test plus whatever keeps it alive (a temporary directory, a schema that
/// is dropped afterwards).
pub struct Fixture {
    pub storage: Arc<dyn Storage>,
    pub guard: Box<dyn std::any::Any + Send>,
}

impl Fixture {
    pub fn new(storage: impl Storage + 'static, guard: impl std::any::Any + Send) -> Self {
        Fixture {
            storage: Arc::new(storage),
            guard: Box::new(guard),
        }
    }
}

/// Generates one `#[tokio::test]` per case, each with a fresh fixture from `$fixture`.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:path) => {
        $crate::conformance_suite!(@cases $fixture;
            read_missing_is_none,
            commit_creates_session,
            commit_returns_session_without_runs,
            runs_are_appended_and_recent_ones_read,
            run_records_round_trip,
            state_patch_merges_into_current_state,
            identity_is_kept_and_metadata_merged,
            created_at_never_changes,
            upsert_writes_whole_session,
            read_filters_by_user,
            list_sessions_newest_first_with_filters,
            delete_session_removes_runs,
            drop_tables_then_use_again,
            create_and_upgrade_are_idempotent,
            concurrent_runs_on_one_session,
            sessions_are_independent,
            same_results_as_memory_storage,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $fixture().await else { return };
                $crate::conformance::$case(fixture.storage.clone()).await;
                drop(fixture);
            }
        )*
    };
}

pub fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub fn write(session_id: &str) -> SessionWrite {
    SessionWrite {
        session_id: session_id.to_owned(),
        kind: SessionKind::Workflow,
        ..SessionWrite::default()
    }
}

pub fn run(session_id: &str, n: usize) -> RunRecord {
    RunRecord {
        run_id: format!("{session_id}-run-{n}"),
        session_id: session_id.to_owned(),
        status: RunStatus::Completed,
        input: json!({ "n": n }),
        response: RunResponse::from_text(format!("answer {n}")),
        error: None,
        created_at: 1_700_000_000_000 + n as i64,
    }
}

/// A write that appends run `n` and sets state key `key` to `n`.
pub fn run_write(session_id: &str, n: usize, key: &str) -> SessionWrite {
    SessionWrite {
        state_patch: StatePatch::diff(&Map::new(), &obj(json!({ key: n }))),
        run: Some(run(session_id, n)),
        ..write(session_id)
    }
}

fn run_ids(runs: &[RunRecord]) -> Vec<String> {
    runs.iter().map(|run| run.run_id.clone()).collect()
}

pub async fn read_missing_is_none(storage: Arc<dyn Storage>) {
    assert!(
        storage
            .read("missing", &ReadOptions::with_runs(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(storage.runs("missing", None).await.unwrap().is_empty());
    assert!(
        storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn commit_creates_session(storage: Arc<dyn Storage>) {
    let write = SessionWrite {
        kind: SessionKind::Agent,
        component_id: Some("agent-1".into()),
        user_id: Some("ann".into()),
        session_name: Some("first".into()),
        component_data: obj(json!({"name": "helper"})),
        state_patch: StatePatch::set_all(&obj(json!({"count": 1, "nested": {"a": [1, 2]}}))),
        extra_data: Some(obj(json!({"tag": "x"}))),
        run: Some(run("s1", 1)),
        ..write("s1")
    };
    let committed = storage.commit(write).await.unwrap();
    let read = storage
        .read("s1", &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, committed);
    assert_eq!(read.session_id, "s1");
    assert_eq!(read.kind, SessionKind::Agent);
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

pub async fn commit_returns_session_without_runs(storage: Arc<dyn Storage>) {
    storage.commit(run_write("s", 1, "a")).await.unwrap();
    let second = storage.commit(run_write("s", 2, "b")).await.unwrap();
    assert!(second.runs.is_empty());
    assert_eq!(second.version, 2);
    assert_eq!(second.run_count, 2);
    assert_eq!(second.session_state, obj(json!({"a": 1, "b": 2})));
    // A write without a run counts as a version, not a run.
    let third = storage.commit(write("s")).await.unwrap();
    assert_eq!((third.version, third.run_count), (3, 2));
}

pub async fn runs_are_appended_and_recent_ones_read(storage: Arc<dyn Storage>) {
    for n in 1..=7 {
        storage.commit(run_write("s", n, "k")).await.unwrap();
    }
    let session = storage
        .read("s", &ReadOptions::with_runs(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.run_count, 7);
    assert_eq!(run_ids(&session.runs), ["s-run-5", "s-run-6", "s-run-7"]);
    let all = storage
        .read("s", &ReadOptions::with_runs(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.runs.len(), 7);
    assert_eq!(all.runs[0].run_id, "s-run-1");
    assert_eq!(
        run_ids(&storage.runs("s", None).await.unwrap()),
        run_ids(&all.runs)
    );
    assert_eq!(
        run_ids(&storage.runs("s", Some(2)).await.unwrap()),
        ["s-run-6", "s-run-7"]
    );
    assert!(storage.runs("s", Some(0)).await.unwrap().is_empty());
}

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
    assert_eq!(storage.runs("s", None).await.unwrap(), [record, cancelled]);
}

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
    let session = storage
        .read("s", &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.session_state,
        obj(json!({"a": 10, "nested": {"x": 5, "y": 1}, "c": 3})),
        "both writers' changes are kept; `b` was removed by the second"
    );
}

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
            kind: SessionKind::Team,
            component_id: Some("other".into()),
            user_id: Some("bob".into()),
            session_name: None,
            component_data: obj(json!({"name": "wf2"})),
            extra_data: Some(obj(json!({"a": {"y": 2}}))),
            ..write("s")
        })
        .await
        .unwrap();
    assert_eq!(after.kind, SessionKind::Workflow, "kind is set at creation");
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
    let read = storage
        .read("s", &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, renamed);
}

pub async fn created_at_never_changes(storage: Arc<dyn Storage>) {
    let first = storage.commit(run_write("s", 1, "a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = storage.commit(run_write("s", 2, "a")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut whole = second.clone();
    whole.session_state = obj(json!({"replaced": true}));
    let upserted = storage.upsert(&whole).await.unwrap();
    for session in [&second, &upserted] {
        assert_eq!(session.created_at, first.created_at);
    }
    assert!(second.updated_at > first.updated_at);
    assert!(upserted.updated_at > second.updated_at);
    let read = storage
        .read("s", &ReadOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.created_at, first.created_at);
    assert_eq!(read.updated_at, upserted.updated_at);
}

pub async fn upsert_writes_whole_session(storage: Arc<dyn Storage>) {
    let mut session = Session::new("s", SessionKind::Agent);
    session.user_id = Some("ann".into());
    session.session_state = obj(json!({"a": 1}));
    session.runs = vec![run("s", 1)];
    session.version = 42;
    session.run_count = 42;
    let created = storage.upsert(&session).await.unwrap();
    assert_eq!((created.version, created.run_count), (1, 0));
    assert!(created.runs.is_empty());
    assert!(
        storage.runs("s", None).await.unwrap().is_empty(),
        "upsert writes no runs"
    );
    storage.commit(run_write("s", 1, "b")).await.unwrap();

    let mut replacement = Session::new("s", SessionKind::Team);
    replacement.user_id = Some("bob".into());
    replacement.session_name = Some("renamed".into());
    replacement.session_state = obj(json!({"only": true}));
    let stored = storage.upsert(&replacement).await.unwrap();
    assert_eq!(stored.kind, SessionKind::Team);
    assert_eq!(stored.user_id.as_deref(), Some("bob"));
    assert_eq!(stored.session_state, obj(json!({"only": true})));
    assert_eq!(stored.created_at, created.created_at);
    assert_eq!((stored.version, stored.run_count), (3, 1));
    let read = storage
        .read("s", &ReadOptions::with_runs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.runs.len(), 1, "runs survive an upsert");
    let mut without_runs = read.clone();
    without_runs.runs.clear();
    assert_eq!(without_runs, stored);
}

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
    assert!(storage.read("s", &ann).await.unwrap().is_some());
    assert!(storage.read("s", &bob).await.unwrap().is_none());
    assert!(storage.read("anonymous", &ann).await.unwrap().is_none());
    assert!(
        storage
            .read("anonymous", &ReadOptions::default())
            .await
            .unwrap()
            .is_some()
    );
}

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
                kind,
                component_id: Some(component.into()),
                user_id: Some(user.into()),
                ..write(id)
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Touch `a` again: it becomes the newest.
    storage.commit(run_write("a", 1, "k")).await.unwrap();
    let ids = |query: SessionQuery| {
        let storage = storage.clone();
        async move { storage.list_session_ids(&query).await.unwrap() }
    };
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
    let sessions = storage.list_sessions(&SessionQuery::all()).await.unwrap();
    assert!(sessions.iter().all(|session| session.runs.is_empty()));
    assert_eq!(sessions[0].run_count, 1);

    // Equal `updated_at`: the larger session id first (upsert the same instant is not
    // controllable, so compare with what the store says).
    let mut sorted = sessions.clone();
    sorted.sort_by(|x, y| {
        y.updated_at
            .cmp(&x.updated_at)
            .then_with(|| y.session_id.cmp(&x.session_id))
    });
    assert_eq!(sorted, sessions);
}

pub async fn delete_session_removes_runs(storage: Arc<dyn Storage>) {
    for n in 1..=3 {
        storage.commit(run_write("s", n, "k")).await.unwrap();
    }
    storage.commit(run_write("other", 1, "k")).await.unwrap();
    storage.delete_session("s").await.unwrap();
    storage.delete_session("s").await.unwrap();
    storage.delete_session("never-existed").await.unwrap();
    assert!(
        storage
            .read("s", &ReadOptions::with_runs(10))
            .await
            .unwrap()
            .is_none()
    );
    assert!(storage.runs("s", None).await.unwrap().is_empty());
    assert_eq!(storage.runs("other", None).await.unwrap().len(), 1);
    // The id can be used again, from scratch.
    let again = storage.commit(run_write("s", 9, "k")).await.unwrap();
    assert_eq!((again.version, again.run_count), (1, 1));
    assert_eq!(
        run_ids(&storage.runs("s", None).await.unwrap()),
        ["s-run-9"]
    );
}

pub async fn drop_tables_then_use_again(storage: Arc<dyn Storage>) {
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    storage.drop_tables().await.unwrap();
    assert!(
        storage
            .read("s", &ReadOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    storage.commit(run_write("s", 2, "k")).await.unwrap();
    assert_eq!(
        run_ids(&storage.runs("s", None).await.unwrap()),
        ["s-run-2"]
    );
    storage.drop_tables().await.unwrap();
    storage.drop_tables().await.unwrap();
}

pub async fn create_and_upgrade_are_idempotent(storage: Arc<dyn Storage>) {
    storage.create().await.unwrap();
    storage.create().await.unwrap();
    storage.upgrade_schema().await.unwrap();
    storage.commit(run_write("s", 1, "k")).await.unwrap();
    storage.upgrade_schema().await.unwrap();
    storage.create().await.unwrap();
    assert_eq!(storage.runs("s", None).await.unwrap().len(), 1);
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
    assert_all_runs_kept(&*storage, "shared", 0..RUNS).await;
}

/// Checks that session `id` holds exactly the runs `expected` and state keys `key_{n}` for
/// each of them.
pub async fn assert_all_runs_kept(
    storage: &dyn Storage,
    id: &str,
    expected: impl Iterator<Item = usize>,
) {
    let expected: BTreeSet<usize> = expected.collect();
    let session = storage
        .read(id, &ReadOptions::with_runs(expected.len() + 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.run_count, expected.len() as i64);
    assert_eq!(session.version, expected.len() as i64);
    assert_eq!(session.runs.len(), expected.len());
    let ns: BTreeSet<usize> = session
        .runs
        .iter()
        .map(|run| run.input["n"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(ns, expected, "every run is recorded exactly once");
    let keys: BTreeSet<String> = session.session_state.keys().cloned().collect();
    let expected_keys: BTreeSet<String> = expected.iter().map(|n| format!("key_{n}")).collect();
    assert_eq!(keys, expected_keys, "every run's state key is kept");
}

pub async fn sessions_are_independent(storage: Arc<dyn Storage>) {
    for n in 1..=3 {
        storage.commit(run_write("x", n, "x")).await.unwrap();
    }
    storage.commit(run_write("y", 1, "y")).await.unwrap();
    let x = storage
        .read("x", &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    let y = storage
        .read("y", &ReadOptions::with_runs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((x.run_count, y.run_count), (3, 1));
    assert_eq!(x.session_state, obj(json!({"x": 3})));
    assert_eq!(y.session_state, obj(json!({"y": 1})));
    assert_eq!(run_ids(&y.runs), ["y-run-1"]);
}

/// Environment variable that puts a re-executed test binary in writer-child mode.
pub const CHILD_ENV: &str = "BUDDY_STORAGE_TEST_CHILD";

/// The runs a child process writes: `offset..offset + count`.
pub const CHILD_RUNS: usize = 100;

/// Runs the test `child_test` of this test binary in two other processes at once, each with
/// `CHILD_ENV` set to `target` and `BUDDY_STORAGE_TEST_OFFSET` to 0 and `CHILD_RUNS`; returns
/// once both exited successfully.
pub fn run_two_writer_processes(child_test: &str, target: &str) {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = [0, CHILD_RUNS]
        .into_iter()
        .map(|offset| {
            std::process::Command::new(&exe)
                .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, target)
                .env("BUDDY_STORAGE_TEST_OFFSET", offset.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "writer process failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The child must really have run the writer, not skipped it.
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("child wrote"),
            "child did not write: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// In a child process: writes `CHILD_RUNS` runs (from 4 tasks) to session `shared`, starting
/// at the offset the parent chose.
pub async fn child_writes(storage: Arc<dyn Storage>) {
    let offset: usize = std::env::var("BUDDY_STORAGE_TEST_OFFSET")
        .unwrap()
        .parse()
        .unwrap();
    let mut handles = Vec::new();
    for task in 0..4 {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for n in (offset + task..offset + CHILD_RUNS).step_by(4) {
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
    println!("child wrote {CHILD_RUNS} runs from offset {offset}");
}

/// A deterministic pseudo-random sequence of operations gives the same results on the
/// backend as on `MemoryStorage` (timestamps aside: each store reads its own clock).
pub async fn same_results_as_memory_storage(storage: Arc<dyn Storage>) {
    use buddy_core::storage::MemoryStorage;

    fn normalize(mut session: Session) -> Session {
        session.created_at = 0;
        session.updated_at = 0;
        session
    }
    let reference = MemoryStorage::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let ids = ["a", "b", "c", "d"];
    let users = [None, Some("ann"), Some("bob")];
    let kinds = [SessionKind::Workflow, SessionKind::Agent, SessionKind::Team];
    for step in 0..300_usize {
        let id = ids[next(4) as usize];
        match next(10) {
            0..=5 => {
                let key = format!("k{}", next(6));
                let mut after = Map::new();
                if next(5) > 0 {
                    after.insert(key.clone(), json!({"step": step, "nested": {"v": next(3)}}));
                }
                let before = obj(json!({ key: {"step": -1} }));
                let write = SessionWrite {
                    kind: kinds[next(3) as usize],
                    component_id: Some(format!("wf{}", next(2))),
                    user_id: users[next(3) as usize].map(str::to_owned),
                    session_name: (next(3) == 0).then(|| format!("name {step}")),
                    component_data: obj(json!({"step": step})),
                    state_patch: StatePatch::diff(&before, &after),
                    extra_data: (next(4) == 0).then(|| obj(json!({"e": {"s": step}}))),
                    run: (next(3) > 0).then(|| run(id, step)),
                    ..write(id)
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
                let mut session = Session::new(id, kinds[next(3) as usize]);
                session.user_id = users[next(3) as usize].map(str::to_owned);
                session.session_state = obj(json!({"upserted": step}));
                let expected = reference.upsert(&session).await.unwrap();
                let actual = storage.upsert(&session).await.unwrap();
                assert_eq!(
                    normalize(actual),
                    normalize(expected),
                    "upsert at step {step}"
                );
            }
            7 => {
                reference.delete_session(id).await.unwrap();
                storage.delete_session(id).await.unwrap();
            }
            _ => {
                let mut options = ReadOptions::with_runs(next(5) as usize);
                if let Some(user) = users[next(3) as usize] {
                    options = options.user(user);
                }
                let expected = reference.read(id, &options).await.unwrap().map(normalize);
                let actual = storage.read(id, &options).await.unwrap().map(normalize);
                assert_eq!(actual, expected, "read at step {step}");
                let limit = (next(2) == 0).then(|| next(4) as usize);
                assert_eq!(
                    storage.runs(id, limit).await.unwrap(),
                    reference.runs(id, limit).await.unwrap(),
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
    ] {
        let sorted = |sessions: Vec<Session>| {
            let mut sessions: Vec<Session> = sessions.into_iter().map(normalize).collect();
            sessions.sort_by(|x, y| x.session_id.cmp(&y.session_id));
            sessions
        };
        assert_eq!(
            sorted(storage.list_sessions(&query).await.unwrap()),
            sorted(reference.list_sessions(&query).await.unwrap()),
            "{query:?}"
        );
    }
}
