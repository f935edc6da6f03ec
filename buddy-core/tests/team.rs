//! Teams (issue 5): route, coordinate and collaborate with a scripted leader and members;
//! streaming order, member failures, unknown members, nesting and depth, storage.

#![allow(clippy::unwrap_used)]

use buddy_core::agent::Agent;
use buddy_core::member::{Member, MemberContext};
use buddy_core::model::{ModelError, Role};
use buddy_core::run::{RunEvent, RunEventKind};
use buddy_core::session::SessionKey;
use buddy_core::session::SessionKind;
use buddy_core::storage::{MemoryStorage, ReadOptions, Storage};
use buddy_core::team::{Team, TeamMode};
use buddy_core::testing::ScriptedModel;
use buddy_core::{Error, RunStatus};
use futures::StreamExt;
use serde_json::json;

fn agent(name: &str, model: &ScriptedModel) -> Agent {
    Agent::new(model.clone())
        .name(name)
        .description(format!("the {name}"))
}

#[tokio::test]
async fn route_forwards_the_request_and_returns_the_member_answer() {
    let leader = ScriptedModel::new().tool_call(
        "forward_task_to_member",
        json!({"member_id": "writer", "expected_output": "a haiku"}),
    );
    let researcher = ScriptedModel::new();
    let writer = ScriptedModel::new().text("an old silent pond");
    let team = Team::new(leader.clone(), TeamMode::Route)
        .name("router")
        .member(agent("researcher", &researcher))
        .member(agent("writer", &writer));
    let response = team.run("Write a haiku").await.unwrap();
    assert_eq!(response.text(), "an old silent pond");
    assert_eq!(response.member_responses.len(), 1);
    assert_eq!(leader.calls(), 1, "route stops after the member answered");
    assert_eq!(researcher.calls(), 0);
    // The member got the user's request and the expected output.
    let sent = writer.requests()[0]
        .messages
        .last()
        .unwrap()
        .content
        .clone()
        .unwrap();
    assert!(
        sent.contains("Write a haiku") && sent.contains("a haiku"),
        "{sent}"
    );
    // The leader saw both members and the forward tool.
    let request = &leader.requests()[0];
    let system = request.messages[0].content.clone().unwrap();
    assert!(system.contains("member_id: researcher") && system.contains("the writer"));
    assert_eq!(request.tools[0].name, "forward_task_to_member");
}

#[tokio::test]
async fn route_leader_may_answer_directly() {
    let leader = ScriptedModel::new().text("Hello! We are a team of writers.");
    let team = Team::new(leader, TeamMode::Route).member(agent("writer", &ScriptedModel::new()));
    let response = team.run("hi").await.unwrap();
    assert_eq!(response.text(), "Hello! We are a team of writers.");
    assert!(response.member_responses.is_empty());
}

#[tokio::test]
async fn coordinate_delegates_concurrently_and_synthesises() {
    let leader = ScriptedModel::new()
        .tool_calls(vec![
            ("transfer_task_to_member", json!({"member_id": "researcher", "task_description": "find facts", "expected_output": "3 facts"})),
            ("transfer_task_to_member", json!({"member_id": "critic", "task_description": "list risks"})),
        ])
        .text("final: facts and risks");
    let researcher = ScriptedModel::new().text("fact 1, 2, 3");
    let critic = ScriptedModel::new().text("risk A");
    let team = Team::new(leader.clone(), TeamMode::Coordinate)
        .member(agent("researcher", &researcher))
        .member(agent("critic", &critic));
    let response = team.run("Assess qubits").await.unwrap();
    assert_eq!(response.text(), "final: facts and risks");
    assert_eq!(response.member_responses.len(), 2);
    assert_eq!(response.tools.len(), 2);
    assert_eq!(response.tools[0].result.as_deref(), Some("fact 1, 2, 3"));
    // The second leader call carries both results as tool messages.
    let second = &leader.requests()[1];
    let results: Vec<_> = second
        .messages
        .iter()
        .filter(|message| message.role == Role::Tool)
        .map(|message| message.content.clone().unwrap())
        .collect();
    assert_eq!(results, ["fact 1, 2, 3", "risk A"]);
    let task = researcher.requests()[0]
        .messages
        .last()
        .unwrap()
        .content
        .clone()
        .unwrap();
    assert!(task.contains("find facts") && task.contains("3 facts"));
}

#[tokio::test]
async fn member_failure_and_unknown_member_are_results_the_leader_can_react_to() {
    let leader = ScriptedModel::new()
        .tool_calls(vec![
            (
                "transfer_task_to_member",
                json!({"member_id": "flaky", "task_description": "try"}),
            ),
            (
                "transfer_task_to_member",
                json!({"member_id": "ghost", "task_description": "boo"}),
            ),
        ])
        .text("recovered");
    let flaky = ScriptedModel::new().error(ModelError::Status {
        status: 400,
        message: "bad request".into(),
        retry_after: None,
        endpoint: None,
    });
    let team = Team::new(leader.clone(), TeamMode::Coordinate).member(agent("flaky", &flaky));
    let response = team.run("go").await.unwrap();
    assert_eq!(response.text(), "recovered");
    let errors: Vec<_> = response
        .tools
        .iter()
        .map(|tool| tool.error.clone().unwrap())
        .collect();
    assert!(errors[0].contains("member `flaky` failed"), "{errors:?}");
    assert!(
        errors[1].contains("no member `ghost`") && errors[1].contains("flaky"),
        "{errors:?}"
    );
    let tool_messages: Vec<_> = leader.requests()[1]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone().unwrap())
        .collect();
    assert!(tool_messages.iter().all(|text| text.starts_with("Error: ")));
}

#[tokio::test]
async fn route_falls_back_to_another_member_after_a_failure() {
    let leader = ScriptedModel::new()
        .tool_call("forward_task_to_member", json!({"member_id": "broken"}))
        .tool_call("forward_task_to_member", json!({"member_id": "spare"}));
    let broken =
        ScriptedModel::new().reply(buddy_core::testing::Reply::Panic("member exploded".into()));
    let spare = ScriptedModel::new().text("spare answer");
    let team = Team::new(leader, TeamMode::Route)
        .member(agent("broken", &broken))
        .member(agent("spare", &spare));
    let response = team.run("q").await.unwrap();
    assert_eq!(response.text(), "spare answer");
    assert!(
        response.tools[0]
            .error
            .as_deref()
            .unwrap()
            .contains("member exploded")
    );
}

#[tokio::test]
async fn collaborate_runs_every_member_and_the_leader_synthesises() {
    let leader = ScriptedModel::new().text("synthesis");
    let a = ScriptedModel::new().text("view A");
    let b = ScriptedModel::new().error(ModelError::Status {
        status: 500,
        message: "down".into(),
        retry_after: None,
        endpoint: None,
    });
    let c = ScriptedModel::new().text("view C");
    let team = Team::new(leader.clone(), TeamMode::Collaborate)
        .member(agent("a", &a))
        .member(agent("b", &b))
        .member(agent("c", &c));
    let response = team.run("debate").await.unwrap();
    assert_eq!(response.text(), "synthesis");
    assert_eq!(response.member_responses.len(), 2);
    assert_eq!(leader.calls(), 1);
    let synthesis = leader.requests()[0]
        .messages
        .last()
        .unwrap()
        .content
        .clone()
        .unwrap();
    assert!(
        synthesis.contains("view A")
            && synthesis.contains("view C")
            && synthesis.contains("failed")
    );
    for model in [&a, &c] {
        assert_eq!(
            model.requests()[0]
                .messages
                .last()
                .unwrap()
                .content
                .as_deref(),
            Some("debate")
        );
    }
}

#[tokio::test]
async fn coordinate_turns_are_bounded() {
    let leader = ScriptedModel::new();
    for _ in 0..3 {
        leader.push(buddy_core::testing::Reply::Response(
            buddy_core::model::ModelResponse::tool_calls(vec![buddy_core::model::ToolCall::new(
                "c",
                "transfer_task_to_member",
                json!({"member_id": "w", "task_description": "again"}).to_string(),
            )]),
        ));
    }
    let worker = ScriptedModel::new().text("1").text("2").text("3");
    let team = Team::new(leader, TeamMode::Coordinate)
        .name("loopy")
        .max_turns(2)
        .member(agent("w", &worker));
    let error = team.run("loop").await.unwrap_err();
    assert!(
        matches!(error, Error::MaxTurns { max_turns: 2, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn nested_teams_delegate_and_depth_is_bounded() {
    let inner_leader =
        ScriptedModel::new().tool_call("forward_task_to_member", json!({"member_id": "poet"}));
    let poet = ScriptedModel::new().text("a poem");
    let inner = Team::new(inner_leader, TeamMode::Route)
        .name("poets")
        .description("writes poems")
        .member(agent("poet", &poet));
    let outer_leader = ScriptedModel::new()
        .tool_call(
            "transfer_task_to_member",
            json!({"member_id": "poets", "task_description": "a poem please"}),
        )
        .text("outer done");
    let outer = Team::new(outer_leader, TeamMode::Coordinate).member(inner.clone());
    let response = outer.run("poem").await.unwrap();
    assert_eq!(response.text(), "outer done");
    assert_eq!(response.member_responses[0].text(), "a poem");
    assert_eq!(
        response.member_responses[0].member_responses[0].text(),
        "a poem"
    );

    let blocked_leader = ScriptedModel::new()
        .tool_call(
            "transfer_task_to_member",
            json!({"member_id": "poets", "task_description": "x"}),
        )
        .text("gave up");
    let shallow = Team::new(blocked_leader, TeamMode::Coordinate)
        .max_depth(0)
        .member(inner);
    let response = shallow.run("poem").await.unwrap();
    assert!(
        response.tools[0]
            .error
            .as_deref()
            .unwrap()
            .contains("depth limit")
    );
}

#[tokio::test]
async fn streaming_orders_member_events_inside_the_delegation_and_tags_them() {
    let leader = ScriptedModel::new()
        .tool_call(
            "transfer_task_to_member",
            json!({"member_id": "writer", "task_description": "draft"}),
        )
        .chunks(["The ", "answer"]);
    let writer = ScriptedModel::new().chunks(["dr", "aft"]);
    let team = Team::new(leader, TeamMode::Coordinate)
        .name("t")
        .member(agent("writer", &writer));
    let events: Vec<RunEvent> = team.run_stream("go").map(Result::unwrap).collect().await;
    let trace: Vec<String> = events
        .iter()
        .map(|event| {
            format!(
                "{}{}",
                event.member().map(|m| format!("{m}:")).unwrap_or_default(),
                event.name()
            )
        })
        .collect();
    let started = trace.iter().position(|t| t == "tool_call_started").unwrap();
    let completed = trace
        .iter()
        .position(|t| t == "tool_call_completed")
        .unwrap();
    let member_events: Vec<_> = trace
        .iter()
        .enumerate()
        .filter(|(_, t)| t.starts_with("writer:"))
        .collect();
    assert!(!member_events.is_empty());
    assert!(
        member_events
            .iter()
            .all(|(i, _)| *i > started && *i < completed),
        "{trace:?}"
    );
    assert_eq!(trace.first().unwrap(), "run_started");
    assert_eq!(trace.last().unwrap(), "run_completed");
    let deltas: String = events
        .iter()
        .filter(|event| event.member().is_some())
        .filter_map(|event| event.content_delta())
        .collect();
    assert_eq!(deltas, "draft");
    let team_text: String = events
        .iter()
        .filter(|event| event.member().is_none())
        .filter_map(|event| event.content_delta())
        .collect();
    assert_eq!(team_text, "The answer");
    assert!(events.iter().all(|event| event.team_id.is_some()));
}

#[tokio::test]
async fn structured_output_works_for_teams() {
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema, PartialEq)]
    struct Verdict {
        score: u8,
    }
    let leader = ScriptedModel::new().json(json!({"score": 7}));
    let team = Team::new(leader.clone(), TeamMode::Collaborate)
        .member(agent("judge", &ScriptedModel::new().text("7/10")));
    let verdict: Verdict = team.run_typed("rate").await.unwrap();
    assert_eq!(verdict, Verdict { score: 7 });
    assert!(leader.requests()[0].response_format.is_some());

    let misfit = Team::new(
        ScriptedModel::new().json(json!({"grade": "A"})),
        TeamMode::Collaborate,
    );
    let error = misfit.run_typed::<Verdict>("rate").await.unwrap_err();
    assert!(matches!(error, Error::StructuredOutput { .. }), "{error:?}");
}

#[tokio::test]
async fn team_sessions_are_stored_and_members_share_the_workflow_session() {
    let storage = MemoryStorage::new();
    let leader =
        ScriptedModel::new().tool_call("forward_task_to_member", json!({"member_id": "writer"}));
    let writer = ScriptedModel::new().text("stored answer");
    let mut team = Team::new(leader, TeamMode::Route)
        .name("desk")
        .storage(storage.clone())
        .member(agent("writer", &writer));
    team.attach(
        &MemberContext::new("wf-session")
            .user_id(Some("user-9".into()))
            .workflow_id(Some("wf".into()))
            .member("desk"),
    );
    let response = team.run("q").await.unwrap();
    assert_eq!(response.session_id.as_deref(), Some("wf-session"));
    assert_eq!(
        response.member_responses[0].session_id.as_deref(),
        Some("wf-session")
    );
    let session = storage
        .read(
            &SessionKey::new("wf-session", SessionKind::Team).scope("desk"),
            &ReadOptions::with_runs(5),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.kind, SessionKind::Team);
    assert_eq!(session.user_id.as_deref(), Some("user-9"));
    assert_eq!(session.component_data["name"], "desk");
    assert_eq!(session.runs[0].status, RunStatus::Completed);
    assert_eq!(
        session.runs[0].response.member_responses[0].text(),
        "stored answer"
    );
}

#[tokio::test]
async fn leader_failure_is_an_error_and_is_recorded() {
    let storage = MemoryStorage::new();
    let leader = ScriptedModel::new().error(ModelError::Status {
        status: 401,
        message: "no key".into(),
        retry_after: None,
        endpoint: None,
    });
    let team = Team::new(leader, TeamMode::Coordinate)
        .storage(storage.clone())
        .session_id("s");
    let error = team.run("q").await.unwrap_err();
    assert!(matches!(error, Error::Model(_)), "{error:?}");
    let runs = storage
        .runs(&SessionKey::new("s", SessionKind::Team), None)
        .await
        .unwrap();
    assert_eq!(runs[0].status, RunStatus::Error);
    let _ = RunEventKind::RunStarted;
}

#[tokio::test]
async fn team_over_the_openai_wire_format_on_loopback() {
    use buddy_core::model::OpenAIChat;
    use buddy_core::testing::{Canned, TestServer, openai};

    let server = TestServer::start().await;
    // Leader delegates; the member answers; the leader writes the final answer.
    server.push(Canned::json(openai::tool_call_completion(&[(
        "call_1",
        "transfer_task_to_member",
        r#"{"member_id": "researcher", "task_description": "find one fact"}"#,
    )])));
    server.push(Canned::json(openai::text_completion(
        "water boils at 100 C",
    )));
    server.push(Canned::json(openai::text_completion(
        "Final: water boils at 100 C.",
    )));
    let model = |id: &str| {
        OpenAIChat::new(id)
            .base_url(server.base_url())
            .api_key("test-key")
    };
    let team = Team::new(model("leader-model"), TeamMode::Coordinate)
        .member(Agent::new(model("member-model")).name("researcher"));
    let response = team.run("Tell me a fact").await.unwrap();
    assert_eq!(response.text(), "Final: water boils at 100 C.");

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body["model"], "leader-model");
    assert_eq!(
        requests[0].body["tools"][0]["function"]["name"],
        "transfer_task_to_member"
    );
    assert_eq!(requests[1].body["model"], "member-model");
    assert_eq!(
        requests[1].body["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"],
        "find one fact"
    );
    let third = requests[2].body["messages"].as_array().unwrap();
    let tool_message = third.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(tool_message["tool_call_id"], "call_1");
    assert_eq!(tool_message["content"], "water boils at 100 C");
}
