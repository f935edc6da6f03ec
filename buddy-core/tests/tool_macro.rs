//! `#[tool]` on async and sync functions, through `#[tool(crate = buddy_core)]`.

#![allow(clippy::unwrap_used)]

use buddy_core::agent::Agent;
use buddy_core::testing::ScriptedModel;
use buddy_core::tool::Tool;
use buddy_macros::tool;
use serde_json::json;

/// Adds two integers.
///
/// Use it for arithmetic.
#[tool(crate = buddy_core)]
async fn add(
    /// The first term.
    a: i64,
    /// The second term.
    b: i64,
) -> i64 {
    a + b
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
}

/// Current weather of a city.
#[tool(crate = buddy_core, name = "weather")]
fn get_weather(city: String, unit: Option<Unit>) -> Result<String, std::io::Error> {
    if city.is_empty() {
        return Err(std::io::Error::other("no city given"));
    }
    Ok(format!("{city}: 21 degrees {unit:?}"))
}

#[tool(crate = buddy_core, description = "Says hello.")]
async fn hello() -> serde_json::Value {
    json!({"greeting": "hello"})
}

#[test]
fn name_description_and_schema() {
    assert_eq!(Add.name(), "add");
    assert_eq!(
        Add.description(),
        "Adds two integers.\n\nUse it for arithmetic."
    );
    let schema = Add.parameters();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["required"], json!(["a", "b"]));
    assert_eq!(schema["properties"]["a"]["type"], "integer");
    assert_eq!(schema["properties"]["a"]["description"], "The first term.");
    assert!(schema.get("$schema").is_none());

    assert_eq!(GetWeather.name(), "weather");
    let schema = GetWeather.parameters();
    assert_eq!(schema["required"], json!(["city"]));
    assert_eq!(Hello.description(), "Says hello.");
    assert_eq!(Hello.parameters()["properties"], json!({}));
}

#[tokio::test]
async fn calls_decode_arguments_and_encode_results() {
    assert_eq!(Add.call(json!({"a": 2, "b": 40})).await.unwrap(), json!(42));
    assert_eq!(
        GetWeather
            .call(json!({"city": "Oslo", "unit": "celsius"}))
            .await
            .unwrap(),
        json!("Oslo: 21 degrees Some(Celsius)")
    );
    assert_eq!(
        Hello.call(serde_json::Value::Null).await.unwrap(),
        json!({"greeting": "hello"})
    );
    // The original functions stay callable.
    assert_eq!(add(1, 2).await, 3);
}

#[tokio::test]
async fn errors_are_typed() {
    let error = Add.call(json!({"a": "two"})).await.unwrap_err();
    assert!(
        matches!(error, buddy_core::Error::ToolArguments { ref tool, .. } if tool == "add"),
        "{error:?}"
    );
    let error = GetWeather.call(json!({"city": ""})).await.unwrap_err();
    assert_eq!(error.to_string(), "no city given");
}

#[tokio::test]
async fn agent_uses_macro_tools() {
    let model = ScriptedModel::new()
        .tool_calls(vec![
            ("add", json!({"a": 1, "b": 2})),
            ("weather", json!({"city": "Rome"})),
        ])
        .text("3, and sunny in Rome");
    let agent = Agent::new(model.clone()).tool(Add).tool(GetWeather);
    let response = agent.run("go").await.unwrap();
    assert_eq!(response.tools[0].result.as_deref(), Some("3"));
    assert_eq!(
        response.tools[1].result.as_deref(),
        Some("Rome: 21 degrees None")
    );
    let definitions = &model.requests()[0].tools;
    assert_eq!(definitions[1].name, "weather");
    assert_eq!(definitions[1].description, "Current weather of a city.");
}
