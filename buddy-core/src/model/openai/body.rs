//! The chat-completions request body as typed structs borrowing from the client's settings
//! and the [`ModelRequest`], serialised straight to bytes.
//!
//! Fields of every struct are in alphabetical order, so the bytes are the ones the earlier
//! `serde_json::Value` builder sent (a `serde_json::Map` sorts its keys): recorded request
//! fixtures and caches keyed on the body still match.

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::Config;
use crate::model::{Message, ModelRequest, ResponseFormat, Role, ToolChoice};

/// A chat-completions request.
#[derive(Serialize)]
pub(super) struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "widened")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    messages: Vec<WireMessage<'a>>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "widened")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "widened")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "widened")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

impl<'a> Body<'a> {
    pub(super) fn new(config: &'a Config, request: &'a ModelRequest, stream: bool) -> Self {
        Body {
            frequency_penalty: config.frequency_penalty,
            max_completion_tokens: config.max_completion_tokens,
            max_tokens: config.max_tokens,
            messages: request.messages.iter().map(WireMessage::new).collect(),
            model: &config.id,
            presence_penalty: config.presence_penalty,
            response_format: request
                .response_format
                .as_ref()
                .map(WireResponseFormat::new),
            seed: config.seed,
            stop: &config.stop,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            temperature: config.temperature,
            tool_choice: request.tool_choice.as_ref().map(WireToolChoice::new),
            tools: request
                .tools
                .iter()
                .map(|tool| WireTool {
                    function: WireToolFunction {
                        description: &tool.description,
                        name: &tool.name,
                        parameters: &tool.parameters,
                        strict: tool.strict,
                    },
                    kind: "function",
                })
                .collect(),
            top_p: config.top_p,
            user: config.user.as_deref(),
        }
    }
}

/// An `f32` setting written as the `f64` it widens to (`0.9` as `0.8999999761581421`), as
/// the `Value` builder wrote it: the bytes stay the same.
fn widened<S: Serializer>(value: &Option<f32>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_f64(f64::from(*value)),
        None => serializer.serialize_none(),
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    /// `null` for an assistant turn that only calls tools, `""` for any other without text.
    content: Option<&'a str>,
    /// The author's name; not sent for tool results (the API refuses it there).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
}

impl<'a> WireMessage<'a> {
    fn new(message: &'a Message) -> Self {
        let role = match message.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let content = match &message.content {
            Some(content) => Some(content.as_str()),
            None if !message.tool_calls.is_empty() => None,
            None => Some(""),
        };
        WireMessage {
            content,
            name: message
                .name
                .as_deref()
                .filter(|_| message.role != Role::Tool),
            role,
            tool_call_id: message.tool_call_id.as_deref(),
            tool_calls: message
                .tool_calls
                .iter()
                .map(|call| WireToolCall {
                    function: WireCalledFunction {
                        arguments: &call.arguments,
                        name: &call.name,
                    },
                    id: &call.id,
                    kind: "function",
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    function: WireCalledFunction<'a>,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct WireCalledFunction<'a> {
    arguments: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    function: WireToolFunction<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct WireToolFunction<'a> {
    description: &'a str,
    name: &'a str,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// `"auto"`, `"none"`, `"required"`, or `{"function": {"name": ..}, "type": "function"}`.
#[derive(Serialize)]
#[serde(untagged)]
enum WireToolChoice<'a> {
    Mode(&'static str),
    Function {
        function: WireFunctionName<'a>,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

impl<'a> WireToolChoice<'a> {
    fn new(choice: &'a ToolChoice) -> Self {
        match choice {
            ToolChoice::Auto => WireToolChoice::Mode("auto"),
            ToolChoice::None => WireToolChoice::Mode("none"),
            ToolChoice::Required => WireToolChoice::Mode("required"),
            ToolChoice::Tool(name) => WireToolChoice::Function {
                function: WireFunctionName { name },
                kind: "function",
            },
        }
    }
}

#[derive(Serialize)]
struct WireFunctionName<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct WireResponseFormat<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<WireJsonSchema<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> WireResponseFormat<'a> {
    fn new(format: &'a ResponseFormat) -> Self {
        match format {
            ResponseFormat::Text => WireResponseFormat {
                json_schema: None,
                kind: "text",
            },
            ResponseFormat::JsonObject => WireResponseFormat {
                json_schema: None,
                kind: "json_object",
            },
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => WireResponseFormat {
                json_schema: Some(WireJsonSchema {
                    name,
                    schema,
                    strict: *strict,
                }),
                kind: "json_schema",
            },
        }
    }
}

#[derive(Serialize)]
struct WireJsonSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    strict: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use crate::model::{
        Message, ModelRequest, OpenAIChat, ResponseFormat, ToolCall, ToolChoice, ToolDefinition,
    };

    fn chat() -> OpenAIChat {
        OpenAIChat::new("gpt-test").base_url("http://127.0.0.1:1/v1")
    }

    /// The body `chat` sends for `request`, as bytes; the same as the `Value` it reports.
    fn sent(chat: &OpenAIChat, request: &ModelRequest, stream: bool) -> String {
        let bytes = chat.body_bytes(request, stream).unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            chat.request_body(request, stream)
        );
        text
    }

    #[test]
    fn the_body_is_the_old_shape_byte_for_byte() {
        let chat = chat()
            .temperature(0.5)
            .max_tokens(64)
            .max_completion_tokens(80)
            .top_p(0.9)
            .seed(-7)
            .frequency_penalty(0.25)
            .presence_penalty(-0.5)
            .user("end-user-1")
            .stop(["END", "STOP"]);
        let mut named = Message::user("Hi");
        named.name = Some("ann".into());
        let request = ModelRequest::new(vec![
            Message::system("Be brief."),
            named,
            Message::assistant_tool_calls(
                Some("Looking.".into()),
                vec![ToolCall::new("call_1", "get_weather", r#"{"city":"Oslo"}"#)],
            ),
            Message::assistant_tool_calls(None, vec![ToolCall::new("call_2", "f", "")]),
            Message::tool_result("call_1", "get_weather", "sunny"),
            Message {
                content: None,
                ..Message::user("")
            },
        ])
        .tools(vec![
            ToolDefinition {
                name: "get_weather".into(),
                description: "Weather of a city.".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                strict: Some(true),
            },
            ToolDefinition {
                name: "f".into(),
                description: String::new(),
                parameters: json!({}),
                strict: None,
            },
        ])
        .tool_choice(ToolChoice::Tool("get_weather".into()))
        .response_format(ResponseFormat::JsonSchema {
            name: "Answer".into(),
            schema: json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            strict: true,
        });
        // What the `Value` builder made (a `serde_json::Map` sorts keys, so its text is in
        // key order whatever the order here).
        let old = json!({
            "frequency_penalty": 0.25,
            "max_completion_tokens": 80,
            "max_tokens": 64,
            "messages": [
                {"content": "Be brief.", "role": "system"},
                {"content": "Hi", "name": "ann", "role": "user"},
                {"content": "Looking.", "role": "assistant", "tool_calls": [
                    {"function": {"arguments": "{\"city\":\"Oslo\"}", "name": "get_weather"}, "id": "call_1", "type": "function"},
                ]},
                {"content": null, "role": "assistant", "tool_calls": [
                    {"function": {"arguments": "", "name": "f"}, "id": "call_2", "type": "function"},
                ]},
                {"content": "sunny", "role": "tool", "tool_call_id": "call_1"},
                {"content": "", "role": "user"},
            ],
            "model": "gpt-test",
            "presence_penalty": -0.5,
            "response_format": {"json_schema": {
                "name": "Answer",
                "schema": {"properties": {"text": {"type": "string"}}, "type": "object"},
                "strict": true,
            }, "type": "json_schema"},
            "seed": -7,
            "stop": ["END", "STOP"],
            "temperature": 0.5,
            "tool_choice": {"function": {"name": "get_weather"}, "type": "function"},
            "tools": [
                {"function": {
                    "description": "Weather of a city.",
                    "name": "get_weather",
                    "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"},
                    "strict": true,
                }, "type": "function"},
                {"function": {"description": "", "name": "f", "parameters": {}}, "type": "function"},
            ],
            // `top_p(0.9)` is an `f32`: written as the `f64` it widens to.
            "top_p": 0.8999999761581421,
            "user": "end-user-1",
        });
        assert_eq!(sent(&chat, &request, false), old.to_string());

        let mut streamed = old;
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        assert_eq!(sent(&chat, &request, true), streamed.to_string());
    }

    #[test]
    fn the_other_choices_and_formats_and_a_bare_request() {
        let request = ModelRequest::new(vec![Message::user("x")]);
        assert_eq!(
            sent(&chat(), &request, false),
            r#"{"messages":[{"content":"x","role":"user"}],"model":"gpt-test"}"#
        );
        for (choice, wire) in [
            (ToolChoice::Auto, json!("auto")),
            (ToolChoice::None, json!("none")),
            (ToolChoice::Required, json!("required")),
        ] {
            let body = chat().request_body(&request.clone().tool_choice(choice), false);
            assert_eq!(body["tool_choice"], wire);
        }
        for (format, wire) in [
            (ResponseFormat::Text, json!({"type": "text"})),
            (ResponseFormat::JsonObject, json!({"type": "json_object"})),
        ] {
            let text = sent(&chat(), &request.clone().response_format(format), false);
            assert!(
                text.contains(&format!("\"response_format\":{wire}")),
                "{text}"
            );
        }
        // A non-finite setting is `null`, as `json!` made it.
        let body = chat().temperature(f32::NAN).request_body(&request, false);
        assert_eq!(body["temperature"], Value::Null);
    }
}
