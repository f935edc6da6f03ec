//! The OpenAPI 3.1 document of every route, with each served component's input schema.

use serde_json::{Map, Value, json};

use crate::{Registry, Served};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {}}}})
}

fn sse_response() -> Value {
    json!({
        "description": "Server-sent events: `id` is the event's sequence number, `event` its kind, `data` one JSON RunEvent",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}
    })
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_parameter(name: &str, kind: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": kind}})
}

fn operation(id: &str, summary: &str, parameters: Vec<Value>, responses: Value) -> Value {
    json!({"operationId": id, "summary": summary, "parameters": parameters, "responses": responses})
}

/// A JSON Schema as an OpenAPI 3.1 schema object: the same dialect, with `$schema` dropped
/// and its `$defs` moved into `components/schemas` under `prefix` (a `$ref` inside the
/// document resolves against the document, not the schema).
fn schema_object(schema: &Value, prefix: &str, shared: &mut Map<String, Value>) -> Value {
    let mut schema = schema.clone();
    if let Some(map) = schema.as_object_mut() {
        map.remove("$schema");
        if let Some(Value::Object(defs)) = map.remove("$defs") {
            for (name, mut def) in defs {
                rewrite_refs(&mut def, prefix);
                shared.insert(format!("{prefix}{name}"), def);
            }
        }
    }
    rewrite_refs(&mut schema, prefix);
    schema
}

fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = reference.strip_prefix("#/$defs/")
            {
                *reference = format!("#/components/schemas/{prefix}{name}");
            }
            map.values_mut()
                .for_each(|value| rewrite_refs(value, prefix));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|value| rewrite_refs(value, prefix)),
        _ => {}
    }
}

fn run_body_schema(served: &Served, prefix: &str, shared: &mut Map<String, Value>) -> Value {
    let schema = serde_json::to_value(served.component.input_schema()).unwrap_or_default();
    let input = schema_object(&schema, prefix, shared);
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "input": input,
            "session_id": {"type": "string"},
            "user_id": {"type": "string"},
            "stream": {"type": "boolean"},
            "background": {"type": "boolean"},
            "cancel_on_disconnect": {"type": "boolean"}
        }
    })
}

/// The document.
pub(crate) fn document(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut shared = Map::new();
    shared.insert(
        "Error".into(),
        json!({"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}, "field": {"type": "string"}}}),
    );
    let secured = json!([{"bearer": []}]);
    paths.insert(
        "/health".into(),
        json!({"get": {"operationId": "health", "summary": "Liveness", "security": [], "responses": {"200": json_response("The server is up")}}}),
    );
    for (kind, title) in [
        ("workflows", "workflow"),
        ("agents", "agent"),
        ("teams", "team"),
    ] {
        paths.insert(
            format!("/v1/{kind}"),
            json!({"get": operation(&format!("list_{kind}"), &format!("List the served {kind}"), vec![], json!({"200": json_response(&format!("The {kind}"))}))}),
        );
        let served_kind = match kind {
            "agents" => buddy_core::SessionKind::Agent,
            "teams" => buddy_core::SessionKind::Team,
            _ => buddy_core::SessionKind::Workflow,
        };
        for served in registry.of(served_kind) {
            let base = format!("/v1/{kind}/{}", served.id);
            let op =
                |name: &str| format!("{name}_{title}_{}", served.id.replace(['-', '.', ':'], "_"));
            paths.insert(
                base.clone(),
                json!({"get": operation(&op("describe"), &format!("Describe {title} `{}`", served.id), vec![], json!({"200": json_response("The description"), "404": error_response("Unknown component")}))}),
            );
            let mut run = operation(
                &op("run"),
                &format!("Run {title} `{}`", served.id),
                vec![],
                json!({
                    "200": {"description": "The run's response, or its events when `stream` is true", "content": {"application/json": {"schema": {}}, "text/event-stream": {"schema": {"type": "string"}}}},
                    "202": json_response("Started in the background, or paused"),
                    "400": error_response("Malformed JSON"),
                    "404": error_response("Unknown component or session"),
                    "413": error_response("The body is too large"),
                    "422": error_response("The input does not fit; `field` names where"),
                    "500": error_response("The run failed")
                }),
            );
            let prefix = format!("{title}.{}.", served.id);
            let body = run_body_schema(served, &prefix, &mut shared);
            run["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
            paths.insert(format!("{base}/runs"), json!({"post": run}));
            paths.insert(
                format!("{base}/sessions"),
                json!({"get": operation(&op("list_sessions"), "List sessions, newest first", vec![query_parameter("user_id", "string"), query_parameter("limit", "integer"), query_parameter("cursor", "string")], json!({"200": json_response("A page of sessions with titles")}))}),
            );
            let session = vec![path_parameter("session_id")];
            paths.insert(
                format!("{base}/sessions/{{session_id}}"),
                json!({
                    "get": operation(&op("read_session"), "Read a session with a page of its runs", [session.clone(), vec![query_parameter("limit", "integer"), query_parameter("offset", "integer")]].concat(), json!({"200": json_response("The session"), "404": error_response("Session not found")})),
                    "patch": {
                        "operationId": op("rename_session"), "summary": "Rename a session", "parameters": session.clone(),
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["session_name"], "properties": {"session_name": {"type": "string"}}}}}},
                        "responses": {"200": json_response("The renamed session"), "404": error_response("Session not found")}
                    },
                    "delete": operation(&op("delete_session"), "Delete a session (idempotent)", session, json!({"204": {"description": "Deleted"}}))
                }),
            );
        }
    }
    let run = vec![path_parameter("run_id")];
    paths.insert("/v1/runs/{run_id}".into(), json!({"get": operation("run_record", "A run's status, response and pending waits", run.clone(), json!({"200": json_response("The run"), "404": error_response("Run not found")}))}));
    let mut events = operation("run_events", "The run's events: replay after `Last-Event-ID` or `after`, then live", [run.clone(), vec![query_parameter("after", "integer"), json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}})]].concat(), json!({"200": sse_response(), "404": error_response("Run not found")}));
    events["x-streaming"] = json!(true);
    paths.insert("/v1/runs/{run_id}/events".into(), json!({"get": events}));
    paths.insert("/v1/runs/{run_id}/cancel".into(), json!({"post": operation("cancel_run", "Cancel a run (idempotent)", run.clone(), json!({"200": json_response("The run"), "404": error_response("Run not found")}))}));
    paths.insert("/v1/runs/{run_id}/waits".into(), json!({"get": operation("run_waits", "The waits a paused run is blocked on, with their schemas", run.clone(), json!({"200": json_response("The pending waits"), "404": error_response("Run not found")}))}));
    let mut answer = operation(
        "answer_wait",
        "Give a wait its value; the run resumes when it waits for nothing else",
        [run, vec![path_parameter("key")]].concat(),
        json!({"200": json_response("Still paused"), "202": json_response("Resumed"), "404": error_response("Unknown run or wait"), "409": error_response("Another value was given"), "422": error_response("The value does not match the wait's schema")}),
    );
    answer["requestBody"] =
        json!({"required": true, "content": {"application/json": {"schema": {}}}});
    paths.insert(
        "/v1/runs/{run_id}/waits/{key}".into(),
        json!({"post": answer}),
    );
    paths.insert("/v1/models".into(), json!({"get": operation("openai_models", "OpenAI-compatible: the components a chat client can name as `model`", vec![], json!({"200": json_response("The models")}))}));
    let mut chat = operation(
        "openai_chat_completions",
        "OpenAI-compatible chat completions: the last user message runs the component named by `model`",
        vec![],
        json!({"200": {"description": "A chat completion, or chunks as server-sent events when `stream` is true", "content": {"application/json": {"schema": {}}, "text/event-stream": {"schema": {"type": "string"}}}}, "404": error_response("Unknown model")}),
    );
    chat["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["model", "messages"], "properties": {"model": {"type": "string"}, "messages": {"type": "array", "items": {"type": "object"}}, "stream": {"type": "boolean"}, "user": {"type": "string"}}}}}});
    paths.insert("/v1/chat/completions".into(), json!({"post": chat}));
    paths.insert("/openapi.json".into(), json!({"get": operation("openapi", "This document", vec![], json!({"200": json_response("The OpenAPI document")}))}));
    json!({
        "openapi": "3.1.0",
        "info": {"title": "buddy", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "security": secured,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": shared
        }
    })
}
