//! Durable runs: the journal, resume that repeats nothing finished, loud nondeterminism,
//! waits for input, and the event log — on every storage that keeps durable runs.

#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use buddy::durable::{self, DurableError, DurableQuery, EntryKind};
use buddy::prelude::*;
use buddy::tool::FunctionTool;
use buddy::{RunStatus, Storage};
use buddy_core::testing::ScriptedModel;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

mod common;

/// What a reviewer sends back.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Approval {
    approved: bool,
    note: String,
}

/// How a resumed body differs from the one that started the run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Variant {
    #[default]
    Same,
    SwapSteps,
    ChangeInput,
    RemoveFirstStep,
    RemoveSecondStep,
}

/// Side effects, counted; a gate that holds the body until opened.
#[derive(Clone, Debug, Default)]
struct Probe {
    side_effects: Arc<AtomicUsize>,
    tool_calls: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
}

impl Probe {
    fn effects(&self) -> usize {
        self.side_effects.load(Ordering::SeqCst)
    }

    async fn gate(&self) {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[workflow]
struct Pipeline {
    #[member]
    researcher: Agent,
    #[member]
    writer: Agent,
    #[member]
    editor: Agent,
    #[field(default)]
    probe: Probe,
    #[field(default)]
    variant: Variant,
}

#[workflow(durable)]
impl Pipeline {
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.run(format!("Research {topic}")).await?;
        let (first, second) = self.steps(&topic).await?;
        self.probe.gate().await;
        let approval: Approval = self
            .wait_for("approve", json!({"outline": research.text()}))
            .await?;
        let (draft, edit) = futures::join!(
            self.writer.run(format!("Write {first}")),
            self.editor.run(format!("Edit {second}")),
        );
        Ok(RunResponse::from_text(format!(
            "{} | {} | {} | {}",
            draft?.text(),
            edit?.text(),
            approval.approved,
            approval.note
        )))
    }
}

impl Pipeline {
    /// The two steps, in the order (and with the input) the variant says.
    async fn steps(&self, topic: &str) -> Result<(String, String)> {
        let probe = self.probe.clone();
        let step = |name: &'static str, input: String| {
            let probe = probe.clone();
            durable::step(name, async move {
                probe.side_effects.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(format!("{name}({input})"))
            })
            .input(&format!("{name}:{topic}"))
        };
        let changed = format!("{topic}!");
        Ok(match self.variant {
            Variant::Same => (
                step("first", topic.into()).await?,
                step("second", topic.into()).await?,
            ),
            Variant::SwapSteps => {
                let second = step("second", topic.into()).await?;
                (step("first", topic.into()).await?, second)
            }
            Variant::ChangeInput => {
                let probe = probe.clone();
                let first = durable::step("first", async move {
                    probe.side_effects.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(String::new())
                })
                .input(&format!("first:{changed}"))
                .await?;
                (first, step("second", topic.into()).await?)
            }
            Variant::RemoveFirstStep => (String::new(), step("second", topic.into()).await?),
            Variant::RemoveSecondStep => (step("first", topic.into()).await?, String::new()),
        })
    }
}

/// The models of one test: what each member answers, shared by every instance.
#[derive(Clone)]
struct Models {
    researcher: ScriptedModel,
    writer: ScriptedModel,
    editor: ScriptedModel,
}

impl Models {
    fn new() -> Self {
        Models {
            researcher: ScriptedModel::new().text("an outline"),
            writer: ScriptedModel::new().text("a draft"),
            editor: ScriptedModel::new().text("an edit"),
        }
    }

    fn calls(&self) -> (usize, usize, usize) {
        (
            self.researcher.calls(),
            self.writer.calls(),
            self.editor.calls(),
        )
    }
}

fn pipeline(storage: &Arc<dyn Storage>, models: &Models, probe: &Probe) -> Pipeline {
    Pipeline::builder()
        .storage(Arc::clone(storage))
        .researcher(Agent::new(models.researcher.clone()).name("researcher"))
        .writer(Agent::new(models.writer.clone()).name("writer"))
        .editor(Agent::new(models.editor.clone()).name("editor"))
        .probe(probe.clone())
        .build()
        .unwrap()
}

/// Drives `run` until the journal of the (only) durable run holds `key`, then drops it: a
/// crash right after that entry. Whether it was dropped (false: the run ended first).
async fn drop_once_journaled<F: std::future::Future>(
    storage: &Arc<dyn Storage>,
    key: &str,
    run: F,
) -> bool {
    let journaled = async {
        loop {
            let runs = storage.durable_runs(&DurableQuery::all()).await.unwrap();
            if let Some(run) = runs.first() {
                let state = storage.load_durable(&run.run_id).await.unwrap().unwrap();
                if state.entries.iter().any(|entry| entry.key == key) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::select! {
        _ = run => false,
        () = journaled => true,
    }
}

fn paused_waits(error: &Error) -> Vec<String> {
    match error.durable_error() {
        Some(DurableError::Paused { waits, .. }) => waits.clone(),
        _ => panic!("expected a pause, got {error:?}"),
    }
}

async fn only_run(storage: &Arc<dyn Storage>) -> durable::DurableRun {
    let runs = storage.durable_runs(&DurableQuery::all()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_run_pauses_then_finishes_with_the_value_and_every_event_logged() {
    for (name, storage, _dir) in common::stores("durable_a_run_pauses_then_finish", true).await {
        let models = Models::new();
        let probe = Probe::default();
        probe.open.store(true, Ordering::SeqCst);
        let mut workflow = pipeline(&storage, &models, &probe);
        let error = workflow.run("tides".into()).await.unwrap_err();
        assert!(error.is_paused(), "{name}: {error:?}");
        assert_eq!(paused_waits(&error), vec!["approve#1"], "{name}");
        let run = only_run(&storage).await;
        assert_eq!(run.status, RunStatus::Paused, "{name}");
        let waits = durable::pending_waits(&*storage, &run.run_id)
            .await
            .unwrap();
        assert_eq!(waits.len(), 1);
        assert_eq!(waits[0].prompt, json!({"outline": "an outline"}));
        assert!(
            waits[0].schema["properties"]["approved"].is_object(),
            "{name}"
        );

        // A fresh instance (another process would do the same) continues with the value.
        let mut fresh = pipeline(&storage, &models, &probe);
        let response = fresh
            .resume_with(
                &run.run_id,
                "approve",
                json!({"approved": true, "note": "ok"}),
            )
            .await
            .unwrap();
        assert_eq!(response.text(), "a draft | an edit | true | ok", "{name}");
        assert_eq!(response.run_id.as_deref(), Some(run.run_id.as_str()));
        assert_eq!(models.calls(), (1, 1, 1), "{name}: no model call twice");
        assert_eq!(probe.effects(), 2, "{name}: no step twice");

        let run = only_run(&storage).await;
        assert_eq!(run.status, RunStatus::Completed, "{name}");
        assert_eq!(run.attempt, 2);
        let state = storage.load_durable(&run.run_id).await.unwrap().unwrap();
        let mut keys: Vec<(EntryKind, String)> = state
            .entries
            .iter()
            .map(|entry| (entry.kind, entry.key.clone()))
            .collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            keys,
            vec![
                (EntryKind::Wait, "approve#1".into()),
                (EntryKind::Agent, "editor#1".into()),
                (EntryKind::Model, "editor#1/model#1".into()),
                (EntryKind::Step, "first#1".into()),
                (EntryKind::Agent, "researcher#1".into()),
                (EntryKind::Model, "researcher#1/model#1".into()),
                (EntryKind::Step, "second#1".into()),
                (EntryKind::Agent, "writer#1".into()),
                (EntryKind::Model, "writer#1/model#1".into()),
            ],
            "{name}"
        );

        // The log: numbered from 1 without gaps, started, paused, resumed, completed.
        let events: Vec<_> = durable::events(Arc::clone(&storage), &run.run_id, 0)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events.len() as u64, state.last_seq, "{name}");
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event.seq, index as u64 + 1, "{name}");
            assert!(!event.event.replayed, "{name}: replays are not logged");
            assert_eq!(event.event.run_id.as_deref(), Some(run.run_id.as_str()));
        }
        let top: Vec<&str> = events
            .iter()
            .filter(|event| event.event.is_top_level())
            .map(|event| event.event.name())
            .collect();
        assert_eq!(
            top,
            vec!["run_started", "run_paused", "run_resumed", "run_completed"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_dropped_run_resumes_without_repeating_a_finished_model_call_or_step() {
    for (name, storage, _dir) in common::stores("durable_a_dropped_run_resumes_wi", true).await {
        let models = Models::new();
        let probe = Probe::default();
        let mut workflow = pipeline(&storage, &models, &probe);
        // Held at the gate after the research and both steps, then dropped (a crash).
        let dropped = drop_once_journaled(&storage, "second#1", workflow.run("tides".into())).await;
        assert!(dropped, "{name}");
        let run = only_run(&storage).await;
        assert_eq!(
            run.status,
            RunStatus::Running,
            "{name}: a dropped durable run stays running"
        );
        assert_eq!((models.calls(), probe.effects()), ((1, 0, 0), 2));

        probe.open.store(true, Ordering::SeqCst);
        let resumed = durable_resume(&storage, &models, &probe, &run.run_id).await;
        assert!(resumed.unwrap_err().is_paused(), "{name}");
        assert_eq!((models.calls(), probe.effects()), ((1, 0, 0), 2), "{name}");
        let mut fresh = pipeline(&storage, &models, &probe);
        let response = fresh
            .resume_with(
                &run.run_id,
                "approve#1",
                json!({"approved": false, "note": "redo"}),
            )
            .await
            .unwrap();
        assert_eq!(response.text(), "a draft | an edit | false | redo");
        assert_eq!((models.calls(), probe.effects()), ((1, 1, 1), 2), "{name}");
        // The resumed run's session holds one record of each run, not two.
        let session = buddy::SessionKey::new(run.session_id.clone(), buddy::SessionKind::Workflow);
        let records = storage.runs(&session, None).await.unwrap();
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(records[0].run_id, run.run_id);
    }
}

async fn durable_resume(
    storage: &Arc<dyn Storage>,
    models: &Models,
    probe: &Probe,
    run_id: &str,
) -> Result<RunResponse> {
    let mut workflow = pipeline(storage, models, probe);
    workflow.resume(run_id).await
}

#[tokio::test]
async fn a_changed_body_is_a_typed_error_naming_the_key() {
    let cases = [
        (Variant::SwapSteps, "second#1"),
        (Variant::ChangeInput, "first#1"),
        (Variant::RemoveFirstStep, "second#1"),
        (Variant::RemoveSecondStep, "approve#1"),
    ];
    for (name, storage, _dir) in common::stores("durable_a_changed_body_is_a_type", true).await {
        for (variant, key) in cases {
            let models = Models::new();
            let probe = Probe::default();
            probe.open.store(true, Ordering::SeqCst);
            let mut workflow = pipeline(&storage, &models, &probe);
            let paused = workflow.run(format!("{variant:?}")).await.unwrap_err();
            let run_id = match paused.durable_error() {
                Some(DurableError::Paused { run_id, .. }) => run_id.clone(),
                other => panic!("{other:?}"),
            };
            durable::answer(
                &*storage,
                &run_id,
                "approve",
                json!({"approved": true, "note": ""}),
            )
            .await
            .unwrap();
            for _ in 0..2 {
                // Every time: the run is not continued and says where it parted.
                let mut changed = pipeline(&storage, &models, &probe);
                changed.variant = variant;
                let error = changed.resume(&run_id).await.unwrap_err();
                match error.durable_error() {
                    Some(DurableError::NonDeterministic { key: at, .. }) => {
                        assert_eq!(at, key, "{name} {variant:?}: {error}")
                    }
                    other => panic!("{name} {variant:?}: expected nondeterminism, got {other:?}"),
                }
                assert_eq!(probe.effects(), 2, "{name} {variant:?}: no step ran again");
                assert_eq!(models.calls(), (1, 0, 0), "{name} {variant:?}");
            }
            // The unchanged body still finishes it.
            let response = durable_resume(&storage, &models, &probe, &run_id)
                .await
                .unwrap();
            assert!(response.text().starts_with("a draft"), "{name} {variant:?}");
        }
    }
}

#[tokio::test]
async fn bad_values_are_typed_errors_and_change_nothing() {
    for (name, storage, _dir) in common::stores("durable_bad_values_are_typed_err", true).await {
        let models = Models::new();
        let probe = Probe::default();
        probe.open.store(true, Ordering::SeqCst);
        let mut workflow = pipeline(&storage, &models, &probe);
        let run_id = match workflow.run("x".into()).await.unwrap_err().durable_error() {
            Some(DurableError::Paused { run_id, .. }) => run_id.clone(),
            other => panic!("{other:?}"),
        };
        let before = storage.load_durable(&run_id).await.unwrap().unwrap();
        let answer = |key: &'static str, value: Value, run: &str| {
            let storage = Arc::clone(&storage);
            let run = run.to_owned();
            async move {
                durable::answer(&*storage, &run, key, value)
                    .await
                    .unwrap_err()
            }
        };
        let wrong_type = answer("approve", json!({"approved": "yes", "note": ""}), &run_id).await;
        assert!(
            matches!(wrong_type.durable_error(), Some(DurableError::InvalidWaitValue { errors, .. }) if errors[0].starts_with("/approved")),
            "{name}: {wrong_type}"
        );
        let missing = answer("approve", json!({"approved": true}), &run_id).await;
        assert!(
            matches!(
                missing.durable_error(),
                Some(DurableError::InvalidWaitValue { .. })
            ),
            "{name}: {missing}"
        );
        let unknown_key = answer("approval", json!({}), &run_id).await;
        assert!(
            matches!(unknown_key.durable_error(), Some(DurableError::UnknownWait { pending, .. }) if pending == &["approve#1"]),
            "{name}: {unknown_key}"
        );
        let unknown_run = answer("approve", json!({}), "no-such-run").await;
        assert!(
            matches!(
                unknown_run.durable_error(),
                Some(DurableError::RunNotFound { .. })
            ),
            "{name}: {unknown_run}"
        );
        assert_eq!(
            storage.load_durable(&run_id).await.unwrap().unwrap(),
            before,
            "{name}"
        );
        // Resuming a run that still waits runs nothing.
        let still = durable_resume(&storage, &models, &probe, &run_id)
            .await
            .unwrap_err();
        assert!(still.is_paused(), "{name}");
        assert_eq!(
            storage.load_durable(&run_id).await.unwrap().unwrap(),
            before,
            "{name}"
        );

        // The same value twice is one answer; another value is a conflict.
        let good = json!({"approved": true, "note": "fine"});
        assert!(
            durable::answer(&*storage, &run_id, "approve", good.clone())
                .await
                .unwrap()
                .stored
        );
        assert!(
            !durable::answer(&*storage, &run_id, "approve", good)
                .await
                .unwrap()
                .stored
        );
        let conflict = answer("approve", json!({"approved": false, "note": ""}), &run_id).await;
        assert!(
            matches!(
                conflict.durable_error(),
                Some(DurableError::WaitConflict { .. })
            ),
            "{name}: {conflict}"
        );

        // A run that is not paused takes no value.
        let mut other = pipeline(&storage, &Models::new(), &probe);
        let second = match other.run("y".into()).await.unwrap_err().durable_error() {
            Some(DurableError::Paused { run_id, .. }) => run_id.clone(),
            error => panic!("{error:?}"),
        };
        durable::cancel(&*storage, &second).await.unwrap();
        let not_paused = answer("approve", json!({"approved": true, "note": ""}), &second).await;
        assert!(
            matches!(
                not_paused.durable_error(),
                Some(DurableError::NotPaused {
                    status: RunStatus::Cancelled,
                    ..
                })
            ),
            "{name}: {not_paused}"
        );
        let cancelled = durable_resume(&storage, &models, &probe, &second)
            .await
            .unwrap_err();
        assert!(
            matches!(
                cancelled.durable_error(),
                Some(DurableError::NotResumable { .. })
            ),
            "{name}: {cancelled}"
        );
    }
}

/// A loop that asks for a value on every iteration.
#[workflow]
struct Survey {
    #[field(default)]
    probe: Probe,
}

#[workflow(durable)]
impl Survey {
    async fn run(&mut self, questions: u32) -> Result<RunResponse> {
        let mut total = 0;
        for question in 0..questions {
            let answer: u32 = self
                .wait_for("answer", json!({"question": question}))
                .await?;
            let probe = self.probe.clone();
            total += self
                .step("record", async move {
                    probe.side_effects.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(answer)
                })
                .await?;
        }
        Ok(RunResponse::from_text(total.to_string()))
    }
}

#[tokio::test]
async fn a_wait_in_a_loop_gets_one_key_per_iteration() {
    for (name, storage, _dir) in common::stores("durable_a_wait_in_a_loop_gets_on", true).await {
        let probe = Probe::default();
        let survey = || {
            let mut survey = Survey::builder()
                .storage(Arc::clone(&storage))
                .build()
                .unwrap();
            survey.probe = probe.clone();
            survey
        };
        let error = survey().run(100).await.unwrap_err();
        let run_id = match error.durable_error() {
            Some(DurableError::Paused { run_id, waits }) => {
                assert_eq!(waits, &["answer#1"]);
                run_id.clone()
            }
            other => panic!("{other:?}"),
        };
        for iteration in 1..=100u32 {
            let key = format!("answer#{iteration}");
            let result = survey().resume_with(&run_id, &key, json!(iteration)).await;
            if iteration < 100 {
                let waits = paused_waits(&result.unwrap_err());
                assert_eq!(waits, vec![format!("answer#{}", iteration + 1)], "{name}");
            } else {
                assert_eq!(result.unwrap().text(), "5050", "{name}");
            }
        }
        assert_eq!(probe.effects(), 100, "{name}: no duplicate side effect");
        let state = storage.load_durable(&run_id).await.unwrap().unwrap();
        let waits = state
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Wait)
            .count();
        assert_eq!(waits, 100, "{name}: exactly 100 waits were ever created");
    }
}

/// Two waits at once, and a wait with a deadline.
#[workflow]
struct Gatekeeper {}

#[workflow(durable)]
impl Gatekeeper {
    async fn run(&mut self, deadline_ms: u64) -> Result<RunResponse> {
        if deadline_ms > 0 {
            let expired = self
                .wait_for::<bool>("quick", "answer fast")
                .timeout(Duration::from_millis(deadline_ms))
                .await;
            return Ok(RunResponse::from_text(match expired {
                Err(Error::Durable(DurableError::WaitExpired { key })) => format!("expired {key}"),
                other => format!("{other:?}"),
            }));
        }
        let (legal, finance) = futures::join!(
            self.wait_for::<bool>("legal", "ok?"),
            self.wait_for::<bool>("finance", "ok?"),
        );
        Ok(RunResponse::from_text(format!("{} {}", legal?, finance?)))
    }
}

#[tokio::test]
async fn joined_waits_are_pending_together_and_answered_by_key() {
    for (name, storage, _dir) in common::stores("durable_joined_waits_are_pending", true).await {
        let gatekeeper = || {
            Gatekeeper::builder()
                .storage(Arc::clone(&storage))
                .build()
                .unwrap()
        };
        let error = gatekeeper().run(0).await.unwrap_err();
        let mut waits = paused_waits(&error);
        waits.sort();
        assert_eq!(waits, vec!["finance#1", "legal#1"], "{name}");
        let run_id = only_run(&storage).await.run_id;
        let still = gatekeeper()
            .resume_with(&run_id, "legal", json!(true))
            .await
            .unwrap_err();
        assert_eq!(paused_waits(&still), vec!["finance#1"], "{name}");
        let done = gatekeeper()
            .resume_with(&run_id, "finance", json!(false))
            .await
            .unwrap();
        assert_eq!(done.text(), "true false", "{name}");
    }
}

#[tokio::test]
async fn a_wait_past_its_deadline_expires_with_the_documented_error() {
    for (name, storage, _dir) in common::stores("durable_a_wait_past_its_deadline", true).await {
        let gatekeeper = || {
            Gatekeeper::builder()
                .storage(Arc::clone(&storage))
                .build()
                .unwrap()
        };
        let error = gatekeeper().run(30).await.unwrap_err();
        assert!(error.is_paused(), "{name}");
        tokio::time::sleep(Duration::from_millis(60)).await;
        let resumed = buddy::workflow::resume_unfinished(gatekeeper)
            .await
            .unwrap();
        assert_eq!(resumed.len(), 1, "{name}");
        let response = resumed.into_iter().next().unwrap().result.unwrap();
        assert_eq!(response.text(), "expired quick#1", "{name}");
    }
}

/// An agent with a tool, for the tool-call journal.
#[workflow]
struct Toolsmith {
    #[member]
    smith: Agent,
}

#[workflow(durable)]
impl Toolsmith {
    async fn run(&mut self, task: String) -> Result<RunResponse> {
        let answer = self.smith.run(task).await?;
        Ok(RunResponse::from_text(answer.text()))
    }
}

/// A scripted model that holds its `hold_at`-th call at the probe's gate.
#[derive(Clone, Debug)]
struct Gated {
    inner: ScriptedModel,
    probe: Probe,
    hold_at: usize,
    seen: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl buddy::model::Model for Gated {
    fn id(&self) -> &str {
        "gated"
    }

    fn provider(&self) -> &str {
        "test"
    }

    async fn response(
        &self,
        request: &buddy::model::ModelRequest,
    ) -> Result<buddy::model::ModelResponse, buddy::model::ModelError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.hold_at {
            self.probe.gate().await;
        }
        self.inner.response(request).await
    }
}

#[tokio::test]
async fn a_finished_tool_call_is_not_made_again_on_resume() {
    for (name, storage, _dir) in common::stores("durable_a_finished_tool_call_is", true).await {
        let inner = ScriptedModel::new()
            .tool_call("hammer", json!({"nail": 1}))
            .text("hammered");
        let probe = Probe::default();
        let model = Gated {
            inner: inner.clone(),
            probe: probe.clone(),
            hold_at: 2,
            seen: Arc::default(),
        };
        let smith = || {
            let calls = Arc::clone(&probe.tool_calls);
            let tool = FunctionTool::new(
                "hammer",
                "Hits a nail.",
                json!({"type": "object"}),
                move |_| {
                    let calls = Arc::clone(&calls);
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(json!("bang"))
                    }
                },
            );
            Toolsmith::builder()
                .storage(Arc::clone(&storage))
                .smith(Agent::new(model.clone()).name("smith").tool(tool))
                .build()
                .unwrap()
        };
        // Dropped while the second model call waits: the first call and the tool are done.
        let dropped = drop_once_journaled(
            &storage,
            "smith#1/tool:hammer#1",
            smith().run("nail it".into()),
        )
        .await;
        assert!(dropped);
        assert_eq!(
            (inner.calls(), probe.tool_calls.load(Ordering::SeqCst)),
            (1, 1)
        );
        probe.open.store(true, Ordering::SeqCst);
        let run_id = only_run(&storage).await.run_id;
        let mut resumer = smith();
        let mut stream = resumer.resume_stream(&run_id);
        let mut names = Vec::new();
        let mut response = None;
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            names.push(event.name());
            if event.is_top_level() && event.response().is_some() {
                response = event.response().cloned();
            }
        }
        assert_eq!(response.unwrap().text(), "hammered", "{name}");
        assert_eq!(names.first(), Some(&"run_resumed"), "{name}: {names:?}");
        assert_eq!(
            (inner.calls(), probe.tool_calls.load(Ordering::SeqCst)),
            (2, 1),
            "{name}: the tool ran once, the first model call was not repeated"
        );
        let entries = storage
            .load_durable(&run_id)
            .await
            .unwrap()
            .unwrap()
            .entries;
        let tool = entries
            .iter()
            .find(|e| e.key == "smith#1/tool:hammer#1")
            .unwrap();
        assert_eq!(tool.attempt, 1, "{name}: written by the first attempt");
        let second = entries.iter().find(|e| e.key == "smith#1/model#2").unwrap();
        assert_eq!(second.attempt, 2, "{name}: written by the resume");
    }
}

/// Not durable: waits are refused, steps just run.
#[workflow]
struct Plain {}

#[workflow]
impl Plain {
    async fn run(&mut self) -> Result<RunResponse> {
        let value = self.step("one", async { Ok::<_, Error>(1) }).await?;
        let waited = self.wait_for::<bool>("never", "?").await;
        Ok(RunResponse::from_text(format!(
            "{value} {}",
            waited.unwrap_err()
        )))
    }
}

#[tokio::test]
async fn outside_durable_runs_steps_run_and_waits_are_refused() {
    let storage = MemoryStorage::new();
    let mut plain = Plain::builder().storage(storage.clone()).build().unwrap();
    let response = plain.run().await.unwrap();
    assert!(
        response
            .text()
            .starts_with("1 `wait_for` needs a durable run"),
        "{}",
        response.text()
    );
    assert!(
        storage
            .durable_runs(&DurableQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
    let error = plain.resume("any").await.unwrap_err();
    assert!(matches!(
        error.durable_error(),
        Some(DurableError::NotDurable { .. })
    ));
}

#[tokio::test]
async fn a_follower_sees_every_event_once_in_order_and_replay_from_any_point_matches() {
    for (name, storage, _dir) in common::stores("durable_a_follower_sees_every_ev", true).await {
        let models = Models::new();
        let probe = Probe::default();
        let mut workflow = pipeline(&storage, &models, &probe);
        let running = tokio::spawn(async move { workflow.run("logs".into()).await });
        // The follower starts once the run exists, and follows it live.
        let run_id = loop {
            if let Some(run) = storage
                .durable_runs(&DurableQuery::all())
                .await
                .unwrap()
                .pop()
            {
                break run.run_id;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let follower = tokio::spawn(
            durable::events(Arc::clone(&storage), run_id.clone(), 0)
                .map(|event| event.unwrap())
                .collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
        probe.open.store(true, Ordering::SeqCst);
        assert!(running.await.unwrap().unwrap_err().is_paused());
        let live = follower.await.unwrap();
        let stored = storage.read_events(&run_id, 0, usize::MAX).await.unwrap();
        assert_eq!(live, stored, "{name}");
        for after in 0..=stored.len() as u64 {
            let replay: Vec<_> = durable::events(Arc::clone(&storage), run_id.clone(), after)
                .map(|event| event.unwrap())
                .collect()
                .await;
            assert_eq!(replay[..], stored[after as usize..], "{name} after {after}");
        }
    }
}

/// An agent whose `delete` tool needs a person's confirmation.
#[workflow]
struct Janitor {
    #[member]
    janitor: Agent,
}

#[workflow(durable)]
impl Janitor {
    async fn run(&mut self, task: String) -> Result<RunResponse> {
        Ok(RunResponse::from_text(self.janitor.run(task).await?.text()))
    }
}

#[tokio::test]
async fn a_tool_that_needs_confirmation_waits_and_a_rejection_goes_to_the_model() {
    for (name, storage, _dir) in common::stores("durable_a_tool_that_needs_confir", true).await {
        for (decision, expected_calls, expected_args) in [
            (json!({"decision": "reject", "reason": "keep it"}), 0, None),
            (
                json!({"decision": "approve"}),
                1,
                Some(json!({"path": "/tmp/a"})),
            ),
            (
                json!({"decision": "edit", "arguments": {"path": "/tmp/b"}}),
                1,
                Some(json!({"path": "/tmp/b"})),
            ),
        ] {
            let model = ScriptedModel::new()
                .tool_call("delete", json!({"path": "/tmp/a"}))
                .text("done");
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let janitor = || {
                let seen = Arc::clone(&seen);
                let tool = FunctionTool::new(
                    "delete",
                    "Deletes a file.",
                    json!({"type": "object"}),
                    move |args| {
                        let seen = Arc::clone(&seen);
                        async move {
                            seen.lock().unwrap().push(args);
                            Ok(json!("deleted"))
                        }
                    },
                );
                Janitor::builder()
                    .storage(Arc::clone(&storage))
                    .janitor(
                        Agent::new(model.clone())
                            .name("janitor")
                            .tool(tool)
                            .confirm_tools(["delete"]),
                    )
                    .build()
                    .unwrap()
            };
            let paused = janitor().run("clean up".into()).await.unwrap_err();
            let key = "janitor#1/tool:delete#1/confirm#1";
            assert_eq!(paused_waits(&paused), vec![key], "{name}");
            let run_id = match paused.durable_error() {
                Some(DurableError::Paused { run_id, .. }) => run_id.clone(),
                _ => unreachable!(),
            };
            let waits = durable::pending_waits(&*storage, &run_id).await.unwrap();
            assert_eq!(waits[0].prompt["tool"], "delete", "{name}");
            assert!(
                seen.lock().unwrap().is_empty(),
                "{name}: nothing ran before the answer"
            );
            let bad = durable::answer(&*storage, &run_id, key, json!({"decision": "maybe"}))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    bad.durable_error(),
                    Some(DurableError::InvalidWaitValue { .. })
                ),
                "{name}"
            );
            let response = janitor()
                .resume_with(&run_id, key, decision.clone())
                .await
                .unwrap();
            assert_eq!(response.text(), "done", "{name}");
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), expected_calls, "{name} {decision}");
            assert_eq!(seen.first().cloned(), expected_args, "{name} {decision}");
            assert_eq!(
                model.calls(),
                2,
                "{name}: the first model call was not made again"
            );
            let tool_result = model.requests()[1]
                .messages
                .iter()
                .find(|message| message.role == buddy::model::Role::Tool)
                .and_then(|message| message.content.clone())
                .unwrap();
            match expected_calls {
                0 => assert_eq!(tool_result, "Error: the user rejected this call: keep it"),
                _ => assert_eq!(tool_result, "deleted"),
            }
        }
    }
}

/// A streaming body that passes on its agent's stream.
#[workflow]
struct Narrator {
    #[member]
    voice: Agent,
    #[field(default)]
    probe: Probe,
}

#[workflow(durable)]
impl Narrator {
    async fn run(&mut self) -> impl Stream<Item = Result<RunEvent>> {
        buddy::try_stream! {
            let mut story = self.voice.run_stream("tell me");
            while let Some(event) = story.next().await {
                yield event?;
            }
            self.probe.gate().await;
        }
    }
}

#[tokio::test]
async fn a_resumed_stream_repeats_finished_text_marked_replayed_and_logs_it_once() {
    for (name, storage, _dir) in common::stores("durable_a_resumed_stream_repeats", true).await {
        let model = ScriptedModel::new().chunks(["once ", "upon"]);
        let probe = Probe::default();
        let narrator = || {
            Narrator::builder()
                .storage(Arc::clone(&storage))
                .voice(Agent::new(model.clone()).name("voice"))
                .probe(probe.clone())
                .build()
                .unwrap()
        };
        let mut first = narrator();
        let dropped = drop_once_journaled(&storage, "voice#1", async {
            let mut stream = first.run();
            while let Some(event) = stream.next().await {
                event.unwrap();
            }
        })
        .await;
        assert!(dropped, "{name}: the run was dropped at the gate");
        probe.open.store(true, Ordering::SeqCst);
        let run_id = only_run(&storage).await.run_id;
        let mut resumer = narrator();
        let mut stream = resumer.resume_stream(&run_id);
        let mut replayed_text = String::new();
        let mut response = None;
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            if event.replayed
                && let Some(delta) = event.content_delta()
            {
                replayed_text.push_str(delta);
            }
            if event.is_top_level() && event.response().is_some() {
                response = event.response().cloned();
            }
        }
        assert_eq!(replayed_text, "once upon", "{name}");
        assert_eq!(response.unwrap().text(), "once upon", "{name}");
        assert_eq!(model.calls(), 1, "{name}");
        let log = storage.read_events(&run_id, 0, usize::MAX).await.unwrap();
        let text: String = log.iter().filter_map(|e| e.event.content_delta()).collect();
        assert_eq!(
            text, "once upon",
            "{name}: the log has the text once, from the first attempt"
        );
    }
}

#[tokio::test]
async fn a_run_of_another_version_is_refused_unless_allowed_and_ended_runs_are_pruned() {
    for (name, storage, _dir) in common::stores("durable_a_run_of_another_version", true).await {
        let gatekeeper = || {
            Gatekeeper::builder()
                .storage(Arc::clone(&storage))
                .build()
                .unwrap()
        };
        assert!(gatekeeper().run(0).await.unwrap_err().is_paused());
        let state = storage
            .load_durable(&only_run(&storage).await.run_id)
            .await
            .unwrap()
            .unwrap();
        // As if an older build (version 7) had started it.
        let mut old = state.run.clone();
        old.version = 7;
        let mut write = durable::DurableWrite::new(old.run_id.clone());
        write.fence = Some(durable::Fence {
            attempt: old.attempt,
            status: Some(RunStatus::Paused),
        });
        write.run = Some(old.clone());
        storage.write_durable(write).await.unwrap();
        for key in ["legal", "finance"] {
            durable::answer(&*storage, &old.run_id, key, json!(true))
                .await
                .unwrap();
        }
        let refused = gatekeeper().resume(&old.run_id).await.unwrap_err();
        assert!(
            matches!(
                refused.durable_error(),
                Some(DurableError::VersionMismatch {
                    recorded: 7,
                    current: 1,
                    ..
                })
            ),
            "{name}: {refused}"
        );
        let options = durable::ResumeOptions::new().allow_version_change(true);
        let response = gatekeeper()
            .resume_with_options(&old.run_id, options)
            .await
            .unwrap();
        assert_eq!(response.text(), "true true", "{name}");
        let run = only_run(&storage).await;
        assert_eq!(
            (run.status, run.version),
            (RunStatus::Completed, 1),
            "{name}"
        );

        // Kept for the retention period; pruned after it, journal and log with it.
        assert_eq!(
            durable::prune(&*storage, durable::DEFAULT_RETENTION)
                .await
                .unwrap(),
            0
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            durable::prune(&*storage, Duration::ZERO).await.unwrap(),
            1,
            "{name}"
        );
        assert!(
            storage.load_durable(&run.run_id).await.unwrap().is_none(),
            "{name}"
        );
        assert!(
            storage
                .read_events(&run.run_id, 0, 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

/// Wipes everything; a person confirms each call.
#[buddy::tool(requires_confirmation)]
async fn wipe() -> String {
    "wiped".to_owned()
}

#[test]
fn a_tool_can_require_confirmation_in_its_attribute() {
    use buddy::tool::Tool;
    assert!(Wipe.requires_confirmation());
    assert!(
        !FunctionTool::new("x", "y", json!({}), |_| async { Ok(json!(1)) }).requires_confirmation()
    );
}
