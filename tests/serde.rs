//! Wire formats (issue 2, item 6): responses, events and sessions round-trip through JSON,
//! events carry their ids, unknown keys are ignored.

#![allow(clippy::unwrap_used)]

use buddy::model::{Message, ToolCall};
use buddy::run::{Metrics, ToolExecution};
use buddy::{RunEvent, RunEventKind, RunRecord, RunResponse, RunStatus, Session, SessionKind};
use serde_json::{Value, json};

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

fn full_response() -> RunResponse {
    RunResponse {
        content: Some(json!({"title": "t"})),
        run_id: Some("r".into()),
        session_id: Some("s".into()),
        workflow_id: Some("w".into()),
        agent_id: Some("a".into()),
        team_id: Some("t".into()),
        model: Some("m".into()),
        messages: vec![
            Message::system("sys"),
            Message {
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }],
                ..Message::assistant("calling")
            },
        ],
        tools: vec![ToolExecution {
            tool_call_id: "c1".into(),
            tool_name: "f".into(),
            arguments: json!({}),
            result: Some("42".into()),
            error: None,
            duration_ms: 1.5,
        }],
        metrics: Some(Metrics {
            input_tokens: 1,
            output_tokens: 2,
            total_tokens: 3,
            time_to_first_token_ms: Some(4.0),
            duration_ms: 5.0,
        }),
        member_responses: vec![RunResponse::from_text("member")],
        extra_data: Some(json!({"k": "v"}).as_object().unwrap().clone()),
        created_at: 1_700_000_000_000,
    }
}

#[test]
fn run_response_round_trips() {
    let response = full_response();
    assert_eq!(round_trip(&response), response);
    assert_eq!(round_trip(&RunResponse::default()), RunResponse::default());
}

#[test]
fn every_event_kind_round_trips_with_ids_on_the_wire() {
    let kinds = vec![
        RunEventKind::RunStarted,
        RunEventKind::RunContent {
            content: "delta".into(),
        },
        RunEventKind::ToolCallStarted {
            tool: full_response().tools[0].clone(),
        },
        RunEventKind::ToolCallCompleted {
            tool: full_response().tools[0].clone(),
        },
        RunEventKind::RunCompleted {
            response: Box::new(full_response()),
        },
        RunEventKind::RunError {
            message: "bad".into(),
        },
        RunEventKind::Custom {
            name: "progress".into(),
            data: json!({"step": 2}),
        },
    ];
    for kind in kinds {
        let mut event = RunEvent::new(kind);
        event.run_id = Some("run-1".into());
        event.session_id = Some("session-1".into());
        event.workflow_id = Some("workflow-1".into());
        // Produced by an agent inside a team inside the workflow: the top-level ids, and
        // where the event came from (the member path and the agent run's own id).
        event.agent_id = Some("agent-1".into());
        event.team_id = Some("team-1".into());
        event.source_run_id = Some("agent-run-7".into());
        event.member_path = vec!["writers".into(), "critic".into()];
        let wire = serde_json::to_value(&event).unwrap();
        assert_eq!(wire["event"], event.name());
        assert_eq!(wire["run_id"], "run-1");
        assert_eq!(wire["session_id"], "session-1");
        assert_eq!(wire["workflow_id"], "workflow-1");
        assert_eq!(wire["agent_id"], "agent-1");
        assert_eq!(wire["team_id"], "team-1");
        assert_eq!(wire["source_run_id"], "agent-run-7");
        assert_eq!(wire["member_path"], json!(["writers", "critic"]));
        assert_eq!(event.member(), Some("critic"));
        assert!(!event.is_top_level());
        assert_eq!(round_trip(&event), event);
    }
}

#[test]
fn a_top_level_event_has_no_member_path_on_the_wire() {
    let mut event = RunEvent::new(RunEventKind::RunStarted);
    event.run_id = Some("run-1".into());
    event.source_run_id = Some("run-1".into());
    let wire = serde_json::to_value(&event).unwrap();
    assert!(wire.get("member_path").is_none(), "{wire}");
    assert!(event.is_top_level());
    assert_eq!(round_trip(&event), event);
    // Events written before origins existed read as top-level.
    let old: RunEvent =
        serde_json::from_value(json!({"event": "run_started", "run_id": "r"})).unwrap();
    assert!(old.is_top_level());
    assert!(old.member_path.is_empty());
}

#[test]
fn run_records_carry_start_end_and_duration() {
    let record = RunRecord {
        run_id: "r".into(),
        session_id: "s".into(),
        status: RunStatus::Error,
        input: json!({"message": "hi"}),
        response: RunResponse::from_text("partial"),
        error: Some("model request failed: timed out".into()),
        created_at: 1_700_000_000_000,
        ended_at: Some(1_700_000_000_250),
        duration_ms: Some(250.5),
    };
    let wire = serde_json::to_value(&record).unwrap();
    assert_eq!(wire["created_at"], 1_700_000_000_000_i64);
    assert_eq!(wire["ended_at"], 1_700_000_000_250_i64);
    assert_eq!(wire["duration_ms"], 250.5);
    assert_eq!(round_trip(&record), record);
    // Records stored before the end time existed still read.
    let old: RunRecord = serde_json::from_value(json!({"run_id": "r", "created_at": 5})).unwrap();
    assert_eq!(old.ended_at, None);
}

#[test]
fn unknown_keys_and_kinds_are_ignored() {
    let response: RunResponse =
        serde_json::from_value(json!({"content": "x", "future_field": [1, 2], "run_id": "r"}))
            .unwrap();
    assert_eq!(response.text(), "x");
    let event: RunEvent = serde_json::from_value(json!({
        "event": "run_content", "content": "d", "run_id": "r", "brand_new": true
    }))
    .unwrap();
    assert_eq!(event.content_delta(), Some("d"));
    let event: RunEvent =
        serde_json::from_value(json!({"event": "reasoning_step", "run_id": "r"})).unwrap();
    assert!(matches!(event.kind, RunEventKind::Unknown));
    let record: RunRecord =
        serde_json::from_value(json!({"run_id": "r", "status": "paused_by_v9", "x": 1})).unwrap();
    assert_eq!(record.status, RunStatus::Unknown);
}

#[test]
fn workflow_session_round_trips_and_accepts_legacy_names() {
    let mut session = Session::new("s-1", SessionKind::Workflow);
    session.component_id = Some("wf".into());
    session.user_id = Some("u".into());
    session.session_name = Some("name".into());
    session.session_state = json!({"a": {"b": [1]}}).as_object().unwrap().clone();
    session.extra_data = Some(json!({"e": 1}).as_object().unwrap().clone());
    session.created_at = 1;
    session.updated_at = 2;
    session.version = 3;
    session.run_count = 1;
    session.runs = vec![RunRecord {
        run_id: "r".into(),
        session_id: "s-1".into(),
        status: RunStatus::Completed,
        input: json!({"topic": "x"}),
        response: full_response(),
        error: None,
        created_at: 1,
        ended_at: Some(2),
        duration_ms: Some(1.0),
    }];
    assert_eq!(round_trip(&session), session);

    let legacy: Session = serde_json::from_value(json!({
        "session_id": "old", "workflow_id": "wf-old", "memory": {"runs": []}, "workflow_data": {}
    }))
    .unwrap();
    assert_eq!(legacy.component_id.as_deref(), Some("wf-old"));
    assert_eq!(legacy.session_state, serde_json::Map::new());
    let _ = Value::Null;
}
