//! `Claude` against the loopback server speaking Anthropic's Messages API.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use buddy_core::agent::Agent;
use buddy_core::model::{
    Claude, FinishReason, Message, Model, ModelRequest, ModelStreamEvent, ResponseFormat, ToolCall,
    ToolChoice, ToolDefinition,
};
use buddy_core::testing::{Canned, TestServer};
use buddy_core::tool::FunctionTool;
use futures::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-ant-SECRET-42";

fn claude(server: &TestServer) -> Claude {
    Claude::new("claude-test")
        .base_url(format!("http://{}", server.addr()))
        .api_key(KEY)
        .max_tokens(256)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2))
}

fn text_message(text: &str) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-2025",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 4},
    })
}

fn tool_use_message() -> Value {
    json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-test-2025",
        "content": [
            {"type": "text", "text": "Let me add."},
            {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 3}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 9},
    })
}

#[tokio::test]
async fn request_shape_headers_and_text_answer() {
    let server = TestServer::start().await;
    server.push(Canned::json(text_message("Bonjour")));
    let model = claude(&server).temperature(0.1);
    let request = ModelRequest::new(vec![Message::system("Be French."), Message::user("Hi")])
        .tools(vec![ToolDefinition {
            name: "add".into(),
            description: "Adds.".into(),
            parameters: json!({"type": "object", "properties": {}}),
            strict: None,
        }])
        .tool_choice(ToolChoice::Required);
    let response = model.response(&request).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("Bonjour"));
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.metrics.total_tokens, 16);
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.body,
        json!({
            "model": "claude-test",
            "max_tokens": 256,
            "system": "Be French.",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.10000000149011612,
            "tools": [{"name": "add", "description": "Adds.", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any"},
        })
    );
    let debug = format!("{model:?}");
    assert!(debug.contains("[redacted]") && !debug.contains(KEY));
}

#[tokio::test]
async fn agent_tool_loop_over_the_messages_api() {
    let server = TestServer::start().await;
    server.push(Canned::json(tool_use_message()));
    server.push(Canned::json(text_message("5")));
    let add = FunctionTool::new("add", "Adds.", json!({"type": "object"}), |a| async move {
        Ok(json!(a["a"].as_i64().unwrap() + a["b"].as_i64().unwrap()))
    });
    let agent = Agent::new(claude(&server)).tool(add);
    let response = agent.run("2+3?").await.unwrap();
    assert_eq!(response.text(), "5");
    assert_eq!(response.tools[0].result.as_deref(), Some("5"));
    let second = &server.requests()[1].body["messages"];
    assert_eq!(
        second,
        &json!([
            {"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me add."},
                {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 3}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "5"},
            ]},
        ])
    );
}

#[tokio::test]
async fn consecutive_tool_results_share_one_user_turn() {
    let server = TestServer::start().await;
    server.push(Canned::json(text_message("ok")));
    let messages = vec![
        Message::user("x"),
        Message::assistant_tool_calls(
            None,
            vec![
                ToolCall::new("t1", "a", "{}"),
                ToolCall::new("t2", "b", "{}"),
            ],
        ),
        Message::tool_result("t1", "a", "1"),
        Message::tool_result("t2", "b", "2"),
    ];
    claude(&server)
        .response(&ModelRequest::new(messages))
        .await
        .unwrap();
    let body = &server.requests()[0].body;
    assert_eq!(body["messages"].as_array().unwrap().len(), 3);
    assert_eq!(body["messages"][2]["content"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn structured_output_goes_into_the_system_prompt() {
    let server = TestServer::start().await;
    server.push(Canned::json(text_message("{}")));
    let request =
        ModelRequest::new(vec![Message::user("x")]).response_format(ResponseFormat::JsonObject);
    claude(&server).response(&request).await.unwrap();
    let system = server.requests()[0].body["system"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(system.contains("JSON"), "{system}");
}

#[tokio::test]
async fn streams_text_and_tool_input_deltas() {
    let server = TestServer::start().await;
    server.push(Canned::sse(vec![
        json!({"type": "message_start", "message": {"model": "claude-test-2025", "usage": {"input_tokens": 30, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Adding"}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " now"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "add", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 1,"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " \"b\": 2}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ]));
    let model = claude(&server);
    let request = ModelRequest::new(vec![Message::user("x")]);
    let mut stream = model.stream(&request);
    let mut deltas = Vec::new();
    let mut done = None;
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            ModelStreamEvent::Content(text) => deltas.push(text),
            ModelStreamEvent::Done(response) => done = Some(*response),
            _ => {}
        }
    }
    let done = done.unwrap();
    assert_eq!(deltas, vec!["Adding", " now"]);
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        done.message.tool_calls,
        vec![ToolCall::new("toolu_9", "add", "{\"a\": 1, \"b\": 2}")]
    );
    assert_eq!(done.metrics.input_tokens, 30);
    assert_eq!(done.metrics.output_tokens, 15);
    assert_eq!(server.requests()[0].body["stream"], true);
}

#[tokio::test]
async fn errors_retries_and_cut_streams() {
    let server = TestServer::start().await;
    server.push(Canned::json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})).status(529));
    server.push(Canned::json(text_message("fine")));
    server.push(Canned::json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: required"}})).status(400));
    server.push(Canned::sse(vec![
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
    ]).cut());
    let model = claude(&server);
    let request = ModelRequest::new(vec![Message::user("x")]);
    let ok = model.response(&request).await.unwrap();
    assert_eq!(ok.message.content.as_deref(), Some("fine"));
    let error = model.response(&request).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(
        error.to_string().ends_with("max_tokens: required"),
        "{error}"
    );
    let items: Vec<_> = model.stream(&request).collect().await;
    assert!(
        matches!(items.last(), Some(Err(e)) if e.is_protocol()),
        "{items:?}"
    );
    assert_eq!(server.requests().len(), 4);
}
