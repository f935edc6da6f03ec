//! `OpenAIChat` against the loopback OpenAI-compatible server: exact request bodies and
//! headers, streaming, retries, and every failure mode.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use buddy_core::model::{
    FinishReason, Message, Model, ModelError, ModelRequest, ModelStreamEvent, OpenAIChat,
    ResponseFormat, ToolCall, ToolChoice, ToolDefinition,
};
use buddy_core::testing::{Canned, TestServer, openai};
use futures::StreamExt;
use serde_json::json;

const KEY: &str = "sk-test-SECRET-0123456789";

fn model(server: &TestServer) -> OpenAIChat {
    OpenAIChat::new("gpt-test")
        .base_url(server.base_url())
        .api_key(KEY)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Weather of a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        strict: None,
    }
}

async fn collect(
    model: &OpenAIChat,
    request: &ModelRequest,
) -> (
    Vec<String>,
    Result<buddy_core::model::ModelResponse, ModelError>,
) {
    let mut deltas = Vec::new();
    let mut stream = model.stream(request);
    while let Some(item) = stream.next().await {
        match item {
            Ok(ModelStreamEvent::Content(text)) => deltas.push(text),
            Ok(ModelStreamEvent::Done(response)) => return (deltas, Ok(*response)),
            Ok(_) => {}
            Err(error) => return (deltas, Err(error)),
        }
    }
    panic!("stream ended without Done or error");
}

#[tokio::test]
async fn sends_exact_request_body_and_headers() {
    let server = TestServer::start().await;
    server.push(Canned::json(openai::text_completion("Hello!")));
    let model = model(&server)
        .temperature(0.5)
        .max_tokens(64)
        .top_p(0.9)
        .seed(7)
        .stop(["END"]);
    let request = ModelRequest::new(vec![Message::system("Be brief."), Message::user("Hi")])
        .tools(vec![weather_tool()])
        .tool_choice(ToolChoice::Auto);
    let response = model.response(&request).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("Hello!"));
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.metrics.input_tokens, 10);
    assert_eq!(response.metrics.output_tokens, 5);
    assert_eq!(response.metrics.total_tokens, 15);
    assert!(response.metrics.duration_ms > 0.0);
    assert_eq!(response.model.as_deref(), Some("test-model"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.body,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "temperature": 0.5,
            "max_tokens": 64,
            "top_p": 0.8999999761581421,
            "seed": 7,
            "stop": ["END"],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            }}],
            "tool_choice": "auto",
        })
    );
}

#[tokio::test]
async fn extra_headers_and_max_completion_tokens() {
    let server = TestServer::start().await;
    server.push(Canned::json(openai::text_completion("ok")));
    let model = model(&server)
        .header("OpenAI-Organization", "org-1")
        .max_completion_tokens(99);
    model
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    let sent = &server.requests()[0];
    assert_eq!(sent.header("openai-organization"), Some("org-1"));
    assert_eq!(sent.body["max_completion_tokens"], 99);
    assert!(sent.body.get("max_tokens").is_none());
}

#[tokio::test]
async fn no_authorization_header_without_key() {
    let server = TestServer::start().await;
    server.push(Canned::json(openai::text_completion("ok")));
    let model = model(&server).without_api_key();
    model
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn tool_call_round_trip_wire_format() {
    let server = TestServer::start().await;
    server.push(Canned::json(openai::tool_call_completion(&[
        ("call_a", "get_weather", r#"{"city":"Paris"}"#),
        ("call_b", "get_weather", r#"{"city":"Oslo"}"#),
    ])));
    server.push(Canned::json(openai::text_completion("Sunny and cold.")));
    let model = model(&server);
    let mut messages = vec![Message::user("Weather?")];
    let request = ModelRequest::new(messages.clone()).tools(vec![weather_tool()]);
    let first = model.response(&request).await.unwrap();
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        first.message.tool_calls,
        vec![
            ToolCall::new("call_a", "get_weather", r#"{"city":"Paris"}"#),
            ToolCall::new("call_b", "get_weather", r#"{"city":"Oslo"}"#),
        ]
    );
    messages.push(first.message.clone());
    messages.push(Message::tool_result("call_a", "get_weather", "sunny"));
    messages.push(Message::tool_result("call_b", "get_weather", "cold"));
    model
        .response(&ModelRequest::new(messages).tools(vec![weather_tool()]))
        .await
        .unwrap();
    let body = &server.requests()[1].body;
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            ]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_a"},
            {"role": "tool", "content": "cold", "tool_call_id": "call_b"},
        ])
    );
}

#[tokio::test]
async fn response_formats_on_the_wire() {
    #[derive(schemars::JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct City {
        name: String,
        population: Option<u64>,
    }
    let server = TestServer::start().await;
    server.push(Canned::json(openai::text_completion("{}")));
    server.push(Canned::json(openai::text_completion("{}")));
    let model = model(&server);
    let messages = vec![Message::user("x")];
    model
        .response(&ModelRequest::new(messages.clone()).response_format(ResponseFormat::JsonObject))
        .await
        .unwrap();
    model
        .response(
            &ModelRequest::new(messages)
                .response_format(ResponseFormat::json_schema_for::<City>())
                .tool_choice(ToolChoice::Tool("get_weather".into())),
        )
        .await
        .unwrap();
    let requests = server.requests();
    assert_eq!(
        requests[0].body["response_format"],
        json!({"type": "json_object"})
    );
    let format = &requests[1].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "City");
    assert_eq!(format["json_schema"]["strict"], true);
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["name", "population"]));
    assert!(schema.get("$schema").is_none());
    assert_eq!(
        requests[1].body["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
}

#[tokio::test]
async fn streams_text_with_usage_from_final_chunk() {
    let server = TestServer::start().await;
    server.push(Canned::sse(openai::text_chunks(&["Hel", "lo", "!"])));
    let model = model(&server);
    let request = ModelRequest::new(vec![Message::user("Hi")]);
    let (deltas, response) = collect(&model, &request).await;
    let response = response.unwrap();
    assert_eq!(deltas, vec!["Hel", "lo", "!"]);
    assert_eq!(response.message.content.as_deref(), Some("Hello!"));
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert_eq!(response.metrics.input_tokens, 10);
    assert_eq!(response.metrics.output_tokens, 3);
    assert_eq!(response.metrics.total_tokens, 13);
    assert!(response.metrics.time_to_first_token_ms.is_some());
    let body = &server.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streams_tool_call_deltas_accumulated_across_chunks() {
    let server = TestServer::start().await;
    server.push(Canned::sse(vec![
        openai::tool_call_chunk(0, Some("call_1"), Some("get_weather"), ""),
        openai::tool_call_chunk(0, None, None, "{\"ci"),
        openai::tool_call_chunk(1, Some("call_2"), Some("get_time"), "{}"),
        openai::tool_call_chunk(0, None, None, "ty\": \"Paris\"}"),
        openai::finish_chunk("tool_calls"),
        openai::usage_chunk(30, 12),
    ]));
    let model = model(&server);
    let (deltas, response) = collect(&model, &ModelRequest::new(vec![Message::user("x")])).await;
    let response = response.unwrap();
    assert!(deltas.is_empty());
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        response.message.tool_calls,
        vec![
            ToolCall::new("call_1", "get_weather", "{\"city\": \"Paris\"}"),
            ToolCall::new("call_2", "get_time", "{}"),
        ]
    );
    assert_eq!(response.metrics.total_tokens, 42);
}

#[tokio::test]
async fn retries_429_honouring_retry_after_then_succeeds() {
    let server = TestServer::start().await;
    server.push(Canned::error(429, "Rate limit reached").header("retry-after", "0.3"));
    server.push(Canned::json(openai::text_completion("finally")));
    let model = model(&server);
    let started = Instant::now();
    let response = model
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "Retry-After was not honoured"
    );
    assert_eq!(response.message.content.as_deref(), Some("finally"));
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retries_connect_errors_then_fails_typed() {
    // A port nobody listens on: bind, note the port, drop the listener.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let model = OpenAIChat::new("m")
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_retries(2)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2));
    let error = model
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(error.is_retryable());
    assert!(!format!("{error:?}{error}").contains(KEY));
    assert!(
        !format!("{error:?}").contains("http://"),
        "URL leaked: {error:?}"
    );
}

#[tokio::test]
async fn timeouts_are_retried_and_typed() {
    let server = TestServer::start().await;
    server
        .fallback(Canned::json(openai::text_completion("late")).delay(Duration::from_millis(500)));
    let model = model(&server)
        .timeout(Duration::from_millis(50))
        .max_retries(1);
    let error = model
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_exhaust_retries() {
    let server = TestServer::start().await;
    server.fallback(Canned::error(500, "The server had an error"));
    let model = model(&server).max_retries(3);
    let error = model
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert!(error.is_retryable());
    assert!(error.to_string().contains("The server had an error"));
    assert_eq!(server.requests().len(), 4, "one attempt plus three retries");
}

#[tokio::test]
async fn client_errors_surface_the_provider_message_without_retry() {
    let server = TestServer::start().await;
    server.push(Canned::error(400, "Invalid value for 'temperature'."));
    let error = model(&server)
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(error.is_client_error());
    assert!(!error.is_rate_limited());
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        format!(
            "model request to {}/v1/chat/completions failed with status 400: \
             Invalid value for 'temperature'.",
            server.addr()
        )
    );
    assert_eq!(server.requests().len(), 1);

    // The same through buddy's error type.
    let error: buddy_core::Error = error.into();
    assert!(error.model_error().is_some_and(ModelError::is_client_error));
}

#[tokio::test]
async fn rate_limit_predicate_and_key_never_in_errors() {
    let server = TestServer::start().await;
    server.fallback(Canned::error(429, "slow down"));
    let error = model(&server)
        .max_retries(0)
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(error.is_rate_limited());
    let model_debug = format!("{:?}", model(&server));
    assert!(model_debug.contains("[redacted]"));
    assert!(!model_debug.contains(KEY));
    let error: buddy_core::Error = error.into();
    for text in [
        format!("{error}"),
        format!("{error:?}"),
        format!("{error:#?}"),
    ] {
        assert!(!text.contains(KEY), "{text}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_typed_error() {
    let server = TestServer::start().await;
    server.push(Canned::raw("{\"choices\": [ {\"message\": "));
    let error = model(&server)
        .response(&ModelRequest::new(vec![Message::user("x")]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ModelError::MalformedResponse { .. }),
        "{error:?}"
    );
    assert!(error.is_protocol());
    assert!(std::error::Error::source(&error).is_some());
}

#[tokio::test]
async fn malformed_stream_chunk_is_a_typed_error() {
    let server = TestServer::start().await;
    server.push(Canned::sse_raw(vec!["{\"choices\": [".into()]));
    let (_, result) = collect(
        &model(&server),
        &ModelRequest::new(vec![Message::user("x")]),
    )
    .await;
    assert!(
        matches!(result, Err(ModelError::MalformedResponse { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn cut_stream_is_a_typed_error_after_the_deltas() {
    let server = TestServer::start().await;
    server.push(
        Canned::sse(vec![
            openai::content_chunk("Hel", None),
            openai::content_chunk("lo", None),
        ])
        .cut(),
    );
    let (deltas, result) = collect(
        &model(&server),
        &ModelRequest::new(vec![Message::user("x")]),
    )
    .await;
    assert_eq!(deltas, vec!["Hel", "lo"]);
    let error = result.unwrap_err();
    assert!(
        matches!(error, ModelError::StreamInterrupted { .. }),
        "{error:?}"
    );
    assert!(error.is_protocol());
}

#[tokio::test]
async fn stream_closed_without_finish_is_interrupted() {
    let server = TestServer::start().await;
    server.push(Canned::sse(vec![openai::content_chunk("Hel", None)]).without_done());
    let (_, result) = collect(
        &model(&server),
        &ModelRequest::new(vec![Message::user("x")]),
    )
    .await;
    assert!(
        matches!(result, Err(ModelError::StreamInterrupted { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn unknown_finish_reason_is_a_typed_error() {
    let server = TestServer::start().await;
    let mut body = openai::text_completion("hm");
    body["choices"][0]["finish_reason"] = json!("galaxy_brain");
    server.push(Canned::json(body));
    server.push(Canned::sse(vec![
        openai::content_chunk("hm", None),
        openai::finish_chunk("galaxy_brain"),
    ]));
    let model = model(&server);
    let request = ModelRequest::new(vec![Message::user("x")]);
    let error = model.response(&request).await.unwrap_err();
    assert!(
        matches!(&error, ModelError::UnknownFinishReason(r) if r == "galaxy_brain"),
        "{error:?}"
    );
    let (_, result) = collect(&model, &request).await;
    assert!(
        matches!(result, Err(ModelError::UnknownFinishReason(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn invalid_tool_arguments_are_passed_on_and_answered_as_a_tool_error() {
    let server = TestServer::start().await;
    // Cut at max_tokens: the arguments never close.
    server.push(Canned::json(openai::tool_call_completion(&[(
        "call_1",
        "get_weather",
        "{\"city\": \"Par",
    )])));
    let model = model(&server);
    let request = ModelRequest::new(vec![Message::user("x")]).tools(vec![weather_tool()]);
    let response = model.response(&request).await.unwrap();
    assert_eq!(response.message.tool_calls[0].arguments, "{\"city\": \"Par");

    // An agent answers the broken call with an error result, and the model tries again.
    let weather = buddy_core::tool::FunctionTool::new(
        "get_weather",
        "Weather.",
        json!({"type": "object"}),
        |_| async { Ok(json!("sunny")) },
    );
    server.push(Canned::json(openai::tool_call_completion(&[(
        "call_1",
        "get_weather",
        "{\"city\": \"Par",
    )])));
    server.push(Canned::json(openai::tool_call_completion(&[(
        "call_2",
        "get_weather",
        "{\"city\": \"Paris\"}",
    )])));
    server.push(Canned::json(openai::text_completion("It is sunny.")));
    let agent = buddy_core::agent::Agent::new(model).tool(weather);
    let answer = agent.run("weather?").await.unwrap();
    assert_eq!(answer.text(), "It is sunny.");
    assert!(
        answer.tools[0]
            .error
            .as_deref()
            .unwrap()
            .contains("invalid JSON arguments")
    );
    assert_eq!(answer.tools[1].result.as_deref(), Some("sunny"));
}

#[tokio::test]
async fn error_object_inside_a_stream_is_surfaced() {
    let server = TestServer::start().await;
    server.push(Canned::sse(vec![
        json!({"error": {"message": "context length exceeded"}}),
    ]));
    let (_, result) = collect(
        &model(&server),
        &ModelRequest::new(vec![Message::user("x")]),
    )
    .await;
    let error = result.unwrap_err();
    assert!(
        error.to_string().contains("context length exceeded"),
        "{error}"
    );
}

#[tokio::test]
async fn status_error_before_stream_is_retried() {
    let server = TestServer::start().await;
    server.push(Canned::error(503, "overloaded"));
    server.push(Canned::sse(openai::text_chunks(&["ok"])));
    let (deltas, result) = collect(
        &model(&server),
        &ModelRequest::new(vec![Message::user("x")]),
    )
    .await;
    assert_eq!(deltas, vec!["ok"]);
    assert!(result.is_ok());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn clones_share_settings_and_client() {
    let server = TestServer::start().await;
    server.fallback(Canned::json(openai::text_completion("ok")));
    let model = model(&server);
    let clone = model.clone();
    let request = ModelRequest::new(vec![Message::user("x")]);
    let (a, b) = tokio::join!(model.response(&request), clone.response(&request));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(model.id(), "gpt-test");
    assert_eq!(model.provider(), "openai");
}

#[tokio::test]
async fn agent_streams_a_tool_loop_over_http() {
    use buddy_core::RunEventKind;
    use buddy_core::agent::Agent;
    use buddy_core::tool::FunctionTool;

    let server = TestServer::start().await;
    server.push(Canned::sse(vec![
        openai::tool_call_chunk(0, Some("call_w"), Some("get_weather"), "{\"city\":"),
        openai::tool_call_chunk(0, None, None, " \"Paris\"}"),
        openai::finish_chunk("tool_calls"),
        openai::usage_chunk(40, 8),
    ]));
    server.push(Canned::sse(openai::text_chunks(&["Sunny", " in Paris."])));
    let weather = FunctionTool::new(
        "get_weather",
        "Weather of a city.",
        json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        |args| async move {
            Ok(json!(format!(
                "sunny in {}",
                args["city"].as_str().unwrap_or("?")
            )))
        },
    );
    let agent = Agent::new(model(&server)).tool(weather);
    let events: Vec<_> = agent.run_stream("Weather in Paris?").collect().await;
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        vec![
            "run_started",
            "tool_call_started",
            "tool_call_completed",
            "run_content",
            "run_content",
            "run_completed"
        ]
    );
    let RunEventKind::RunCompleted { response } = &events[5].kind else {
        panic!("no response");
    };
    assert_eq!(response.text(), "Sunny in Paris.");
    assert_eq!(response.tools[0].result.as_deref(), Some("sunny in Paris"));
    let metrics = response.metrics.unwrap();
    assert_eq!(metrics.input_tokens, 50);
    assert_eq!(metrics.output_tokens, 10);
    let second = &server.requests()[1].body;
    assert_eq!(second["stream"], true);
    assert_eq!(
        second["messages"][2],
        json!({"role": "tool", "content": "sunny in Paris", "tool_call_id": "call_w"})
    );
}
