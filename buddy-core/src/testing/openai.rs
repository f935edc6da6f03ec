//! Builders of OpenAI chat-completions JSON for [`TestServer`](super::TestServer) scripts.

use serde_json::{Value, json};

/// A usage object.
pub fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)})
}

/// A non-streamed completion answering `content`.
pub fn text_completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
        }],
        "usage": usage(10, 5),
    })
}

/// A non-streamed completion calling tools: `(id, name, arguments JSON text)`.
pub fn tool_call_completion(calls: &[(&str, &str, &str)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": calls},
            "finish_reason": "tool_calls",
        }],
        "usage": usage(20, 10),
    })
}

/// A stream chunk with a content delta (and an optional finish reason).
pub fn content_chunk(content: &str, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}],
    })
}

/// A stream chunk with a tool-call delta.
pub fn tool_call_chunk(
    index: usize,
    id: Option<&str>,
    name: Option<&str>,
    arguments: &str,
) -> Value {
    let mut function = json!({"arguments": arguments});
    if let (Some(name), Some(map)) = (name, function.as_object_mut()) {
        map.insert("name".into(), json!(name));
    }
    let mut call = json!({"index": index, "type": "function", "function": function});
    if let (Some(id), Some(map)) = (id, call.as_object_mut()) {
        map.insert("id".into(), json!(id));
    }
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}],
    })
}

/// A stream chunk carrying only a finish reason.
pub fn finish_chunk(finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
    })
}

/// The final usage chunk (`stream_options.include_usage`).
pub fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [],
        "usage": usage(prompt, completion),
    })
}

/// A whole streamed text answer: one chunk per piece, a stop chunk and a usage chunk.
pub fn text_chunks(pieces: &[&str]) -> Vec<Value> {
    let mut chunks: Vec<Value> = pieces.iter().map(|p| content_chunk(p, None)).collect();
    chunks.push(finish_chunk("stop"));
    chunks.push(usage_chunk(10, pieces.len() as u64));
    chunks
}
