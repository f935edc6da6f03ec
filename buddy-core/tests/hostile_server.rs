//! The model clients against servers that misbehave on purpose: absurd tool-call indexes,
//! endless bodies, byte-order marks and odd line endings in SSE, huge numbers, redirects,
//! echoed secrets, explicit nulls, and servers that never answer. Every case ends in a
//! valid response or a typed [`ModelError`], quickly, and never leaks a credential.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use buddy_core::model::{
    Claude, Limits, Message, Model, ModelError, ModelRequest, ModelResponse, ModelStreamEvent,
    OpenAIChat,
};
use buddy_core::testing::{Canned, TestServer, openai};
use futures::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-test-SECRET-0123456789";
const HEADER_SECRET: &str = "org-SECRET-header-value";

fn model(server: &TestServer) -> OpenAIChat {
    OpenAIChat::new("gpt-test")
        .base_url(server.base_url())
        .api_key(KEY)
        .header("x-org", HEADER_SECRET)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .max_retries(0)
}

fn claude(server: &TestServer) -> Claude {
    Claude::new("claude-test")
        .base_url(format!("http://{}", server.addr()))
        .api_key(KEY)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .max_retries(0)
}

fn request() -> ModelRequest {
    ModelRequest::new(vec![Message::user("x")])
}

/// The final response of a streamed answer, or its first error; the deltas are dropped.
async fn streamed(model: &dyn Model) -> Result<ModelResponse, ModelError> {
    let request = request();
    let mut stream = model.stream(&request);
    while let Some(item) = stream.next().await {
        match item {
            Ok(ModelStreamEvent::Done(response)) => return Ok(*response),
            Ok(_) => {}
            Err(error) => return Err(error),
        }
    }
    panic!("stream ended without Done or error");
}

fn assert_no_secret(error: &ModelError) {
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(
        !text.contains(KEY) && !text.contains(HEADER_SECRET),
        "{text}"
    );
}

fn tool_delta(index: Value) -> String {
    json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": index, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]}, "finish_reason": null}]})
    .to_string()
}

fn claude_event(event: Value) -> String {
    format!(
        "event: {}\ndata: {event}\n\n",
        event["type"].as_str().unwrap()
    )
}

fn claude_text_stream(text: &str) -> Vec<String> {
    vec![
        claude_event(
            json!({"type": "message_start", "message": {"model": "c", "usage": {"input_tokens": 3}}}),
        ),
        claude_event(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        claude_event(
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        ),
        claude_event(json!({"type": "message_stop"})),
    ]
}

// 1. Tool-call indexes and counts.

#[tokio::test]
async fn huge_tool_call_index_is_a_typed_error_not_an_abort() {
    let server = TestServer::start().await;
    for index in [
        json!(4_294_967_295u64),
        json!(100_000_000u64),
        json!(u64::MAX),
    ] {
        server.push(Canned::sse_raw(vec![tool_delta(index.clone())]));
        let error = streamed(&model(&server)).await.unwrap_err();
        assert!(
            matches!(error, ModelError::LimitExceeded { .. }) && error.is_limit_exceeded(),
            "{index}: {error:?}"
        );
    }
    // Not a u64 at all: malformed, not a panic.
    for index in [json!(-1), json!(1e30), json!("zero")] {
        server.push(Canned::sse_raw(vec![tool_delta(index.clone())]));
        let error = streamed(&model(&server)).await.unwrap_err();
        assert!(error.is_protocol(), "{index}: {error:?}");
    }
    // A sparse but allowed index is fine: calls are keyed, not positioned.
    server.push(Canned::sse_raw(vec![
        tool_delta(json!(1000)),
        openai::finish_chunk("tool_calls").to_string(),
    ]));
    let response = streamed(&model(&server)).await.unwrap();
    assert_eq!(response.message.tool_calls.len(), 1);
}

#[tokio::test]
async fn too_many_tool_calls_is_a_typed_error() {
    let server = TestServer::start().await;
    let limited = model(&server).limits(Limits::default().max_tool_calls(2));
    server.push(Canned::sse_raw(
        (0..3).map(|i| tool_delta(json!(i))).collect(),
    ));
    let error = streamed(&limited).await.unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
    server.push(Canned::json(openai::tool_call_completion(&[
        ("a", "f", "{}"),
        ("b", "f", "{}"),
        ("c", "f", "{}"),
    ])));
    let error = limited.response(&request()).await.unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
    // Claude: a content-block index out of range, then too many tool-use blocks.
    server.push(Canned::sse_raw(vec![
        json!({"type": "content_block_start", "index": u64::MAX, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}).to_string(),
    ]));
    let error = streamed(&claude(&server)).await.unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
    let blocks: Vec<Value> = (0..3)
        .map(|i| json!({"type": "tool_use", "id": format!("t{i}"), "name": "f", "input": {}}))
        .collect();
    server.push(Canned::json(
        json!({"content": blocks, "stop_reason": "tool_use"}),
    ));
    let error = claude(&server)
        .limits(Limits::default().max_tool_calls(2))
        .response(&request())
        .await
        .unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
}

// 2. Unbounded bodies.

#[tokio::test]
async fn endless_bodies_stop_at_the_response_limit() {
    let server = TestServer::start().await;
    let small = Limits::default().max_response_bytes(256 * 1024);
    // Non-streamed, at the default limit (16 MiB over loopback) and at a small one.
    server.push(Canned::endless(vec![b' '; 64 * 1024]));
    let error = model(&server).response(&request()).await.unwrap_err();
    assert!(
        matches!(error, ModelError::LimitExceeded { limit, .. } if limit == 16 * 1024 * 1024),
        "{error:?}"
    );
    server.push(Canned::endless(vec![b' '; 4096]));
    let error = claude(&server)
        .limits(small)
        .response(&request())
        .await
        .unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
    // Streamed: an endless run of small, valid deltas.
    let delta = format!("data: {}\n\n", openai::content_chunk("x", None));
    server.push(Canned::endless(delta.repeat(100).into_bytes()));
    let error = streamed(&model(&server).limits(small)).await.unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
    let delta = claude_event(
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}),
    );
    server.push(Canned::endless(delta.repeat(100).into_bytes()));
    let error = streamed(&claude(&server).limits(small)).await.unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
}

#[tokio::test]
async fn endless_error_bodies_are_read_only_in_part() {
    let server = TestServer::start().await;
    server.push(Canned::endless(vec![b'e'; 8192]).status(500));
    let error = model(&server).response(&request()).await.unwrap_err();
    assert_eq!(error.status(), Some(500));
    assert!(error.to_string().len() < 1024, "{error}");
    server.push(Canned::endless(vec![b'e'; 8192]).status(400));
    let error = streamed(&claude(&server)).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
}

// 3. SSE framing.

#[tokio::test]
async fn sse_with_a_byte_order_mark_and_any_line_ending() {
    let server = TestServer::start().await;
    for ending in ["\n", "\r\n", "\r"] {
        let mut body = b"\xEF\xBB\xBF".to_vec();
        for chunk in openai::text_chunks(&["Hel", "lo"]) {
            body.extend_from_slice(
                format!(": keep-alive{ending}data: {chunk}{ending}{ending}").as_bytes(),
            );
        }
        body.extend_from_slice(format!("data: [DONE]{ending}{ending}").as_bytes());
        // Whole, then one byte per chunk (a BOM and a CRLF split across reads).
        server.push(Canned::chunks(vec![body.clone()]));
        server.push(Canned::chunks(body.iter().map(|b| vec![*b]).collect()));
        for _ in 0..2 {
            let response = streamed(&model(&server)).await.unwrap();
            assert_eq!(
                response.message.content.as_deref(),
                Some("Hello"),
                "{ending:?}"
            );
        }
    }
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(claude_text_stream("hi").concat().into_bytes());
    server.push(Canned::chunks(vec![body]));
    let response = streamed(&claude(&server)).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("hi"));
    assert_eq!(response.metrics.total_tokens, 5);
}

#[tokio::test]
async fn sse_multi_line_data_is_joined() {
    let server = TestServer::start().await;
    // One JSON chunk spread over three `data:` lines (joined with newlines: still JSON).
    let chunk = "data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"ok\"},\ndata: \"finish_reason\": \"stop\"}]}\n\n";
    server.push(Canned::chunks(vec![chunk.as_bytes().to_vec()]));
    let response = streamed(&model(&server)).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("ok"));
}

#[tokio::test]
async fn sse_invalid_utf8_and_oversized_events_are_typed_errors() {
    let server = TestServer::start().await;
    server.push(Canned::chunks(vec![
        b"data: {\"choices\": \xFF\xFE}\n\n".to_vec(),
    ]));
    let error = streamed(&model(&server)).await.unwrap_err();
    assert!(
        matches!(error, ModelError::MalformedResponse { .. }),
        "{error:?}"
    );
    // A character split across two reads is not invalid.
    let chunk = format!("data: {}\n\n", openai::content_chunk("é", Some("stop")));
    let bytes = chunk.as_bytes();
    let split = chunk.find('é').unwrap() + 1;
    server.push(Canned::chunks(vec![
        bytes[..split].to_vec(),
        bytes[split..].to_vec(),
    ]));
    let response = streamed(&model(&server)).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("é"));
    // One event over the default 4 MiB limit: a typed error, not seconds of work.
    let big = "x".repeat(5 * 1024 * 1024);
    server.push(Canned::sse_raw(vec![
        openai::content_chunk(&big, Some("stop")).to_string(),
    ]));
    let error = streamed(&model(&server)).await.unwrap_err();
    assert!(error.is_limit_exceeded(), "{error:?}");
    // Under the limit (3 MiB in one event, in 64 KiB reads): accepted, linear time.
    let big = "y".repeat(3 * 1024 * 1024);
    let body = format!("data: {}\n\n", openai::content_chunk(&big, Some("stop")));
    server.push(Canned::chunks(
        body.as_bytes()
            .chunks(64 * 1024)
            .map(<[u8]>::to_vec)
            .collect(),
    ));
    let response = streamed(&model(&server)).await.unwrap();
    assert_eq!(response.message.content.map(|c| c.len()), Some(big.len()));
    // Claude too.
    server.push(Canned::chunks(vec![b"event: x\ndata: \xC3\n\n".to_vec()]));
    let error = streamed(&claude(&server)).await.unwrap_err();
    assert!(error.is_protocol(), "{error:?}");
}

// 4. Numbers from the server.

#[tokio::test]
async fn token_counts_saturate_or_are_typed_errors() {
    let server = TestServer::start().await;
    let mut completion = openai::text_completion("hi");
    completion["usage"] = json!({"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX});
    server.push(Canned::json(completion.clone()));
    completion["usage"] = json!({"prompt_tokens": 1});
    let response = model(&server).response(&request()).await.unwrap();
    assert_eq!(response.metrics.total_tokens, u64::MAX);
    for usage in [
        r#"{"prompt_tokens": -1}"#,
        r#"{"completion_tokens": 1e300}"#,
        r#"{"total_tokens": 18446744073709551616}"#,
        r#"{"total_tokens": 1.5}"#,
    ] {
        let body = completion
            .to_string()
            .replace(&completion["usage"].to_string(), usage);
        assert!(body.contains(usage));
        server.push(Canned::raw(body));
        let error = model(&server).response(&request()).await.unwrap_err();
        assert!(error.is_protocol(), "{usage}: {error:?}");
    }
    let mut stream = claude_text_stream("hi");
    stream[0] = claude_event(
        json!({"type": "message_start", "message": {"usage": {"input_tokens": u64::MAX}}}),
    );
    stream[2] = claude_event(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": u64::MAX}}),
    );
    server.push(Canned::chunks(vec![stream.concat().into_bytes()]));
    let response = streamed(&claude(&server)).await.unwrap();
    assert_eq!(response.metrics.total_tokens, u64::MAX);
}

// 5. Credentials stay with their origin.

#[tokio::test]
async fn redirects_are_refused_and_never_followed() {
    let elsewhere = TestServer::start().await;
    let server = TestServer::start().await;
    let target = format!(
        "http://localhost:{}/v1/chat/completions",
        elsewhere.addr().port()
    );
    for status in [301, 302, 307, 308] {
        server.push(Canned::redirect(status, &target));
        let error = model(&server)
            .max_retries(3)
            .response(&request())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ModelError::Redirect { status: s, target, .. } if *s == status && target == "localhost"),
            "{error:?}"
        );
        assert!(error.is_redirect() && !error.is_retryable());
        assert!(error.to_string().contains("localhost"), "{error}");
    }
    server.push(Canned::redirect(
        307,
        &format!("http://localhost:{}/v1/messages", elsewhere.addr().port()),
    ));
    let error = streamed(&claude(&server)).await.unwrap_err();
    assert!(error.is_redirect(), "{error:?}");
    server.push(Canned::raw("").status(302));
    let error = model(&server).response(&request()).await.unwrap_err();
    assert!(
        matches!(&error, ModelError::Redirect { target, .. } if target == "unknown"),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 6, "one request each, no retries");
    assert!(elsewhere.requests().is_empty(), "a redirect was followed");
}

#[tokio::test]
async fn echoed_secrets_are_scrubbed_from_errors() {
    let server = TestServer::start().await;
    let echo = format!("Incorrect API key provided: {KEY} (org {HEADER_SECRET})");
    server.push(Canned::error(401, &echo));
    let error = model(&server).response(&request()).await.unwrap_err();
    assert_no_secret(&error);
    assert!(error.to_string().contains("[redacted]"), "{error}");
    // In a stream's error object, a refusal, a finish reason, a decoder message.
    server.push(Canned::sse_raw(vec![
        json!({"error": {"message": echo}}).to_string(),
    ]));
    server.push(Canned::sse_raw(vec![
        json!({"choices": [{"delta": {"refusal": KEY}}]}).to_string(),
    ]));
    server.push(Canned::sse_raw(vec![openai::finish_chunk(KEY).to_string()]));
    server.push(Canned::sse_raw(vec![
        json!({"choices": [{"delta": {"content": 1}}], "model": KEY, "usage": KEY}).to_string(),
    ]));
    for _ in 0..4 {
        let error = streamed(&model(&server)).await.unwrap_err();
        assert_no_secret(&error);
    }
    server.push(Canned::json(json!({"usage": {"input_tokens": KEY}})));
    let error = claude(&server).response(&request()).await.unwrap_err();
    assert_no_secret(&error);
    // Claude knows only its key (the header secret belongs to the other client).
    let echo = format!("invalid x-api-key: {KEY}");
    server.push(
        Canned::json(
            json!({"type": "error", "error": {"type": "authentication_error", "message": echo}}),
        )
        .status(401),
    );
    let error = streamed(&claude(&server)).await.unwrap_err();
    assert_no_secret(&error);
    assert!(error.to_string().contains("[redacted]"), "{error}");
}

#[test]
fn debug_never_shows_a_credential() {
    let url = "https://user:pa55word@example.com/v1";
    let openai = format!(
        "{:?}",
        OpenAIChat::new("m")
            .base_url(url)
            .api_key(KEY)
            .header("x-org", HEADER_SECRET)
    );
    let claude = format!("{:?}", Claude::new("m").base_url(url).api_key(KEY));
    for text in [openai, claude] {
        assert!(text.contains("https://[redacted]@example.com/v1"), "{text}");
        for secret in [KEY, HEADER_SECRET, "pa55word", "user:"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

// 6. Nulls where absence is allowed.

#[tokio::test]
async fn explicit_nulls_are_absent_fields() {
    let server = TestServer::start().await;
    server.push(Canned::json(json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": null, "refusal": null}, "finish_reason": null, "logprobs": null}],
        "usage": null, "model": null,
    })));
    server.push(Canned::json(json!({
        "choices": [{"message": {"content": null, "tool_calls": [{"id": null, "type": "function", "function": {"name": "f", "arguments": null}}]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": null, "completion_tokens": 2, "total_tokens": null},
    })));
    let response = model(&server).response(&request()).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("hi"));
    let response = model(&server).response(&request()).await.unwrap();
    assert_eq!(response.message.tool_calls[0].name, "f");
    assert_eq!(response.metrics.total_tokens, 2);
    server.push(Canned::sse_raw(vec![
        json!({"choices": [{"index": 0, "delta": {"content": null, "tool_calls": null}, "finish_reason": null}], "usage": null}).to_string(),
        json!({"choices": [{"index": 0, "delta": null, "finish_reason": "stop"}]}).to_string(),
        json!({"choices": null, "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).to_string(),
    ]));
    let response = streamed(&model(&server)).await.unwrap();
    assert_eq!(response.metrics.total_tokens, 2);
    server.push(Canned::json(json!({
        "content": [{"type": "text", "text": null}, {"type": "tool_use", "id": "t", "name": "f", "input": null}],
        "stop_reason": null, "usage": null, "model": null,
    })));
    let response = claude(&server).response(&request()).await.unwrap();
    assert_eq!(response.message.tool_calls[0].arguments, "{}");
    server.push(Canned::json(
        json!({"content": null, "usage": {"input_tokens": null}}),
    ));
    assert!(claude(&server).response(&request()).await.is_ok());
}

// 7. Slow failures are bounded.

#[tokio::test]
async fn a_server_that_never_answers_costs_the_first_byte_timeout_per_attempt() {
    // A raw TCP server that accepts and then says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let model = OpenAIChat::new("m")
        .base_url(format!("http://{addr}/v1"))
        .api_key(KEY)
        .first_byte_timeout(Duration::from_millis(100))
        .max_retries(1)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(2));
    let error = model.response(&request()).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_no_secret(&error);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    let error = Claude::new("m")
        .base_url(format!("http://{addr}"))
        .first_byte_timeout(Duration::from_millis(100))
        .max_retries(0)
        .response(&request())
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    task.abort();
}

/// A raw TCP server answering every connection with `reply` and then closing it.
async fn raw_server(reply: &'static [u8]) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head (enough for these small requests), then answer.
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn raw_garbage_and_short_bodies_are_typed_errors() {
    let replies: [&'static [u8]; 4] = [
        // Not HTTP at all.
        b"SSH-2.0-hello\r\n",
        // A body shorter than its Content-Length.
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"cho",
        // A chunked SSE body cut inside a chunk, after a BOM.
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n20\r\n\xEF\xBB\xBFdata: {\"choices\": [",
        // A redirect without a body.
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://elsewhere.test/v1\r\ncontent-length: 0\r\n\r\n",
    ];
    for reply in replies {
        let (addr, task) = raw_server(reply).await;
        let openai = OpenAIChat::new("m")
            .base_url(format!("http://{addr}/v1"))
            .api_key(KEY)
            .max_retries(0);
        let claude = Claude::new("m")
            .base_url(format!("http://{addr}"))
            .api_key(KEY)
            .max_retries(0);
        for error in [
            openai.response(&request()).await.unwrap_err(),
            streamed(&openai).await.unwrap_err(),
            claude.response(&request()).await.unwrap_err(),
            streamed(&claude).await.unwrap_err(),
        ] {
            assert!(
                error.is_connect() || error.is_protocol() || error.is_redirect(),
                "{:?}: {error:?}",
                String::from_utf8_lossy(reply)
            );
            assert_no_secret(&error);
        }
        task.abort();
    }
}

#[tokio::test]
async fn a_stalled_body_costs_the_idle_timeout() {
    let server = TestServer::start().await;
    let first = format!("data: {}\n\n", openai::content_chunk("Hel", None));
    server.push(Canned::stall(first.into_bytes()));
    let error = streamed(&model(&server).idle_timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    server.push(Canned::stall(b"{\"choices\": [".to_vec()).content_type("application/json"));
    let error = claude(&server)
        .idle_timeout(Duration::from_millis(100))
        .response(&request())
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn the_call_timeout_bounds_every_retry() {
    let server = TestServer::start().await;
    server.fallback(Canned::json(openai::text_completion("late")).delay(Duration::from_secs(30)));
    let error = model(&server)
        .max_retries(1_000)
        .first_byte_timeout(Duration::from_millis(50))
        .call_timeout(Duration::from_millis(300))
        .response(&request())
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(server.requests().len() < 1_000);
    // Retry-After asking for a day is waited at most 60 s, and not at all when it would
    // end after the call's deadline.
    let server = TestServer::start().await;
    server.fallback(Canned::error(429, "slow down").header("retry-after", "86400"));
    let error = model(&server)
        .max_retries(3)
        .call_timeout(Duration::from_secs(2))
        .response(&request())
        .await
        .unwrap_err();
    assert!(error.is_rate_limited(), "{error:?}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_answer_from_another_origin_is_refused_even_with_a_following_client() {
    // A caller-supplied client that follows redirects: the answer from the other origin is
    // not used (the docs ask callers to turn redirects off on their own clients).
    let elsewhere = TestServer::start().await;
    elsewhere.fallback(Canned::json(openai::text_completion("from elsewhere")));
    let server = TestServer::start().await;
    server.push(Canned::redirect(
        307,
        &format!(
            "http://localhost:{}/v1/chat/completions",
            elsewhere.addr().port()
        ),
    ));
    let error = model(&server)
        .http_client(reqwest::Client::new())
        .response(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ModelError::Redirect { status: 200, target, .. } if target == "localhost"),
        "{error:?}"
    );
}

// 8. Errors name the endpoint, never the key; unusable base URLs are typed errors.

/// Display, Debug and every cause of `error`, for looking for what must not leak.
fn everything(error: &ModelError) -> String {
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn a_404_names_the_endpoint_and_asks_about_v1() {
    let server = TestServer::start().await;
    let addr = server.addr();
    server.fallback(Canned::raw("404 page not found").status(404));
    // Ollama's root instead of its `/v1`: the hint, in the plain and the streamed call.
    let openai = model(&server).base_url(format!("http://{addr}"));
    for error in [
        openai.response(&request()).await.unwrap_err(),
        streamed(&openai).await.unwrap_err(),
    ] {
        assert_eq!(error.status(), Some(404));
        assert_eq!(
            error.to_string(),
            format!(
                "model request to {addr}/chat/completions failed with status 404: \
                 404 page not found (does the base URL need a /v1 suffix?)"
            )
        );
        assert_eq!(
            error.endpoint(),
            Some(format!("{addr}/chat/completions").as_str())
        );
        assert_no_secret(&error);
    }
    // With `/v1`: the endpoint, no hint.
    let error = model(&server).response(&request()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "model request to {addr}/v1/chat/completions failed with status 404: 404 page not found"
        )
    );
    // Claude adds `/v1` itself: a base URL ending in `/v1` doubles it.
    let error = claude(&server)
        .base_url(format!("http://{addr}/v1"))
        .response(&request())
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "model request to {addr}/v1/v1/messages failed with status 404"
        )) && error
            .to_string()
            .ends_with("(is /v1 in the base URL twice?)"),
        "{error}"
    );
    assert_no_secret(&error);
    assert_eq!(server.requests()[0].path, "/chat/completions");
}

#[tokio::test]
async fn a_base_url_without_a_scheme_is_a_typed_error_and_nothing_is_sent() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let no_scheme = format!("{addr}/v1");
    let openai = model(&server).base_url(no_scheme.clone());
    let claude = claude(&server).base_url(format!("localhost:{}", addr.port()));
    for (error, fix) in [
        (
            openai.response(&request()).await.unwrap_err(),
            format!("http://{no_scheme}"),
        ),
        (
            streamed(&openai).await.unwrap_err(),
            format!("http://{no_scheme}"),
        ),
        (
            claude.response(&request()).await.unwrap_err(),
            format!("http://localhost:{}", addr.port()),
        ),
        (
            streamed(&claude).await.unwrap_err(),
            format!("http://localhost:{}", addr.port()),
        ),
    ] {
        assert!(
            matches!(error, ModelError::InvalidBaseUrl { .. }) && error.is_invalid_base_url(),
            "{error:?}"
        );
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(
            text.contains("the scheme is missing") && text.contains(&format!("write `{fix}`")),
            "{text}"
        );
        assert_no_secret(&error);
    }
    // Not a URL at all (a port out of range), or not HTTP: typed too, never a panic.
    for base in [
        format!("http://127.0.0.1:99999/v1?key={KEY}"),
        "ftp://127.0.0.1/v1".to_owned(),
    ] {
        let error = model(&server)
            .base_url(base)
            .response(&request())
            .await
            .unwrap_err();
        assert!(error.is_invalid_base_url(), "{error:?}");
        assert_no_secret(&error);
    }
    assert!(server.requests().is_empty(), "a request was sent");
}

#[tokio::test]
async fn connection_refused_names_the_endpoint_and_says_so() {
    // A port nobody listens on: bind, note the port, drop the listener.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let openai = OpenAIChat::new("m")
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_retries(0);
    let claude = Claude::new("m")
        .base_url(format!("http://127.0.0.1:{port}"))
        .api_key(KEY)
        .max_retries(0);
    for (error, path) in [
        (
            openai.response(&request()).await.unwrap_err(),
            "/v1/chat/completions",
        ),
        (streamed(&openai).await.unwrap_err(), "/v1/chat/completions"),
        (
            claude.response(&request()).await.unwrap_err(),
            "/v1/messages",
        ),
    ] {
        assert!(
            matches!(
                error,
                ModelError::Connect {
                    reason: "connection refused",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("model request to 127.0.0.1:{port}{path} failed: connection refused")
        );
        assert_no_secret(&error);
        assert!(!everything(&error).contains("http://"), "{error:?}");
    }
}

#[tokio::test]
async fn errors_name_host_and_path_but_never_user_info_or_the_query() {
    const QUERY_SECRET: &str = "query-SECRET-value";
    let server = TestServer::start().await;
    let addr = server.addr();
    server.fallback(Canned::error(500, "boom"));
    let openai = model(&server).base_url(format!(
        "http://bob:pa55word@{addr}/v1?api-key={QUERY_SECRET}"
    ));
    for error in [
        openai.response(&request()).await.unwrap_err(),
        streamed(&openai).await.unwrap_err(),
    ] {
        assert_eq!(
            error.to_string(),
            format!("model request to {addr}/v1/chat/completions failed with status 500: boom")
        );
        let text = everything(&error);
        for secret in [KEY, HEADER_SECRET, QUERY_SECRET, "pa55word", "bob"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_eq!(server.requests()[0].path, "/v1/chat/completions");
    let debug = format!("{openai:?}");
    assert!(debug.contains("api-key=[redacted]"), "{debug}");
    for secret in [KEY, HEADER_SECRET, QUERY_SECRET, "pa55word"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}
