//! The Messages API request body as typed structs borrowing from the client's settings and
//! the [`ModelRequest`], serialised straight to bytes.
//!
//! Fields of every struct are in alphabetical order, so the bytes are the ones the earlier
//! `serde_json::Value` builder sent (a `serde_json::Map` sorts its keys).

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::Config;
use crate::model::{Message, ModelRequest, ResponseFormat, Role, ToolChoice};

/// A Messages API request.
#[derive(Serialize)]
pub(super) struct Body<'a> {
    max_tokens: u32,
    messages: Vec<WireMessage<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// The system messages and the answer-format instruction, blank-line separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "widened")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "widened")]
    top_p: Option<f32>,
}

impl<'a> Body<'a> {
    pub(super) fn new(config: &'a Config, request: &'a ModelRequest, stream: bool) -> Self {
        Body {
            max_tokens: config.max_tokens,
            messages: wire_messages(&request.messages),
            model: &config.id,
            stop_sequences: &config.stop,
            stream,
            system: system(request),
            temperature: config.temperature,
            tool_choice: request.tool_choice.as_ref().map(WireToolChoice::new),
            tools: request
                .tools
                .iter()
                .map(|tool| WireTool {
                    description: &tool.description,
                    input_schema: &tool.parameters,
                    name: &tool.name,
                })
                .collect(),
            top_k: config.top_k,
            top_p: config.top_p,
        }
    }
}

/// An `f32` setting written as the `f64` it widens to, as the `Value` builder wrote it.
fn widened<S: Serializer>(value: &Option<f32>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_f64(f64::from(*value)),
        None => serializer.serialize_none(),
    }
}

/// The system prompt: the system messages, then the instruction a [`ResponseFormat`] other
/// than text becomes (the Messages API has no JSON mode), borrowed when there is one part.
fn system(request: &ModelRequest) -> Option<Cow<'_, str>> {
    let mut parts: Vec<Cow<'_, str>> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .filter_map(|m| m.content.as_deref())
        .map(Cow::Borrowed)
        .collect();
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => parts.push(Cow::Borrowed(
            "Respond with one JSON object and nothing else.",
        )),
        Some(ResponseFormat::JsonSchema { schema, .. }) => parts.push(Cow::Owned(format!(
            "Respond with one JSON object that fits this JSON Schema, and nothing else:\n{schema}"
        ))),
        _ => {}
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Cow::Owned(parts.join("\n\n"))),
    }
}

#[derive(Serialize)]
struct WireMessage<'a> {
    content: WireContent<'a>,
    role: &'static str,
}

/// A user turn's text, or content blocks.
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlock<'a>>),
}

/// A content block; every variant has its own `type` field, in its alphabetical place.
#[derive(Serialize)]
#[serde(untagged)]
enum WireBlock<'a> {
    Text {
        text: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    ToolUse {
        id: &'a str,
        input: Value,
        name: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    ToolResult {
        content: &'a str,
        tool_use_id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

/// Messages in the Messages API's shape: system messages left out (they go in `system`),
/// tool calls as `tool_use` blocks, tool results as `tool_result` blocks of a user turn
/// (consecutive results share one turn).
fn wire_messages(messages: &[Message]) -> Vec<WireMessage<'_>> {
    let mut wire: Vec<WireMessage<'_>> = Vec::with_capacity(messages.len());
    for message in messages {
        match message.role {
            Role::System => {}
            Role::User => wire.push(WireMessage {
                content: WireContent::Text(message.content.as_deref().unwrap_or_default()),
                role: "user",
            }),
            Role::Assistant => {
                let mut blocks = Vec::with_capacity(message.tool_calls.len() + 1);
                if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
                    blocks.push(WireBlock::Text { text, kind: "text" });
                }
                for call in &message.tool_calls {
                    blocks.push(WireBlock::ToolUse {
                        id: &call.id,
                        // Arguments that are not JSON are sent as `{}` (the API wants an
                        // object); the tool's error result tells the model what went wrong.
                        input: call
                            .parse_arguments()
                            .unwrap_or_else(|_| Value::Object(Default::default())),
                        name: &call.name,
                        kind: "tool_use",
                    });
                }
                wire.push(WireMessage {
                    content: WireContent::Blocks(blocks),
                    role: "assistant",
                });
            }
            Role::Tool => {
                let block = WireBlock::ToolResult {
                    content: message.content.as_deref().unwrap_or_default(),
                    tool_use_id: message.tool_call_id.as_deref().unwrap_or_default(),
                    kind: "tool_result",
                };
                match wire.last_mut() {
                    Some(WireMessage {
                        role: "user",
                        content: WireContent::Blocks(blocks),
                    }) if matches!(blocks.first(), Some(WireBlock::ToolResult { .. })) => {
                        blocks.push(block)
                    }
                    _ => wire.push(WireMessage {
                        content: WireContent::Blocks(vec![block]),
                        role: "user",
                    }),
                }
            }
        }
    }
    wire
}

#[derive(Serialize)]
struct WireTool<'a> {
    description: &'a str,
    input_schema: &'a Value,
    name: &'a str,
}

/// `{"type": "auto" | "none" | "any"}` or `{"name": .., "type": "tool"}`.
#[derive(Serialize)]
struct WireToolChoice<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> WireToolChoice<'a> {
    fn new(choice: &'a ToolChoice) -> Self {
        let (kind, name) = match choice {
            ToolChoice::Auto => ("auto", None),
            ToolChoice::None => ("none", None),
            ToolChoice::Required => ("any", None),
            ToolChoice::Tool(name) => ("tool", Some(name.as_str())),
        };
        WireToolChoice { name, kind }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use crate::model::{
        Claude, Message, ModelRequest, ResponseFormat, ToolCall, ToolChoice, ToolDefinition,
    };

    fn sent(claude: &Claude, request: &ModelRequest, stream: bool) -> String {
        let bytes = claude.body_bytes(request, stream).unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            claude.request_body(request, stream)
        );
        text
    }

    #[test]
    fn the_body_is_the_old_shape_byte_for_byte() {
        let claude = Claude::new("claude-test")
            .base_url("http://127.0.0.1:1")
            .max_tokens(512)
            .temperature(0.5)
            .top_p(0.9)
            .top_k(40)
            .stop(["END"]);
        let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        let request = ModelRequest::new(vec![
            Message::system("Be brief."),
            Message::user("Weather?"),
            Message::assistant_tool_calls(
                Some("Looking.".into()),
                vec![
                    ToolCall::new("t1", "get_weather", r#"{"city":"Oslo"}"#),
                    ToolCall::new("t2", "get_weather", "not json"),
                ],
            ),
            Message::tool_result("t1", "get_weather", "sunny"),
            Message::tool_result("t2", "get_weather", "error"),
            Message::assistant_tool_calls(Some(String::new()), vec![ToolCall::new("t3", "f", "")]),
            Message::tool_result("t3", "f", "ok"),
            Message::user("Thanks"),
        ])
        .tools(vec![ToolDefinition {
            name: "get_weather".into(),
            description: "Weather of a city.".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict: Some(true),
        }])
        .tool_choice(ToolChoice::Tool("get_weather".into()))
        .response_format(ResponseFormat::JsonSchema {
            name: "Answer".into(),
            schema: schema.clone(),
            strict: true,
        });
        let old = json!({
            "max_tokens": 512,
            "messages": [
                {"content": "Weather?", "role": "user"},
                {"content": [
                    {"text": "Looking.", "type": "text"},
                    {"id": "t1", "input": {"city": "Oslo"}, "name": "get_weather", "type": "tool_use"},
                    {"id": "t2", "input": {}, "name": "get_weather", "type": "tool_use"},
                ], "role": "assistant"},
                {"content": [
                    {"content": "sunny", "tool_use_id": "t1", "type": "tool_result"},
                    {"content": "error", "tool_use_id": "t2", "type": "tool_result"},
                ], "role": "user"},
                {"content": [
                    {"id": "t3", "input": {}, "name": "f", "type": "tool_use"},
                ], "role": "assistant"},
                {"content": [
                    {"content": "ok", "tool_use_id": "t3", "type": "tool_result"},
                ], "role": "user"},
                {"content": "Thanks", "role": "user"},
            ],
            "model": "claude-test",
            "stop_sequences": ["END"],
            "system": format!(
                "Be brief.\n\nRespond with one JSON object that fits this JSON Schema, and nothing else:\n{schema}"
            ),
            "temperature": 0.5,
            "tool_choice": {"name": "get_weather", "type": "tool"},
            "tools": [{
                "description": "Weather of a city.",
                "input_schema": {"properties": {"city": {"type": "string"}}, "type": "object"},
                "name": "get_weather",
            }],
            "top_k": 40,
            "top_p": 0.8999999761581421,
        });
        assert_eq!(sent(&claude, &request, false), old.to_string());
        let mut streamed = old;
        streamed["stream"] = json!(true);
        assert_eq!(sent(&claude, &request, true), streamed.to_string());
    }

    #[test]
    fn the_other_choices_and_formats_and_a_bare_request() {
        let claude = Claude::new("c").base_url("http://127.0.0.1:1");
        let request = ModelRequest::new(vec![Message::user("x")]);
        assert_eq!(
            sent(&claude, &request, false),
            r#"{"max_tokens":1024,"messages":[{"content":"x","role":"user"}],"model":"c"}"#
        );
        for (choice, wire) in [
            (ToolChoice::Auto, json!({"type": "auto"})),
            (ToolChoice::None, json!({"type": "none"})),
            (ToolChoice::Required, json!({"type": "any"})),
        ] {
            let body = claude.request_body(&request.clone().tool_choice(choice), false);
            assert_eq!(body["tool_choice"], wire);
        }
        let json_mode = request.clone().response_format(ResponseFormat::JsonObject);
        assert_eq!(
            claude.request_body(&json_mode, false)["system"],
            "Respond with one JSON object and nothing else."
        );
        let text = request.response_format(ResponseFormat::Text);
        assert!(claude.request_body(&text, false).get("system").is_none());
    }
}
