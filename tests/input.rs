//! Typed run input, parameter descriptions, JSON Schema and running from JSON (issue 2, item 4).

#![allow(clippy::unwrap_used)]

use buddy::prelude::*;
use buddy::{DynWorkflow, Parameter};
use serde_json::json;

/// Options of a report.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Options {
    depth: u8,
}

#[workflow(description = "Writes a report.")]
struct Report {}

#[workflow]
impl Report {
    async fn run(
        &mut self,
        topic: String,
        #[arg(default = 3)] sections: u32,
        audience: Option<String>,
        options: Options,
    ) -> RunResponse {
        RunResponse::from_text(format!(
            "{topic}/{sections}/{}/{}",
            audience.unwrap_or_else(|| "all".into()),
            options.depth
        ))
    }
}

#[workflow]
struct NoArgs {}

#[workflow]
impl NoArgs {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text("nothing needed")
    }
}

#[test]
fn parameters_describe_run() {
    assert_eq!(
        Report::PARAMETERS,
        &[
            Parameter {
                name: "topic",
                rust_type: "String",
                default: None,
                required: true
            },
            Parameter {
                name: "sections",
                rust_type: "u32",
                default: Some("3"),
                required: false
            },
            Parameter {
                name: "audience",
                rust_type: "Option<String>",
                default: None,
                required: false
            },
            Parameter {
                name: "options",
                rust_type: "Options",
                default: None,
                required: true
            },
        ]
    );
    const { assert!(!Report::STREAMING) };
    assert!(NoArgs::PARAMETERS.is_empty());
}

#[test]
fn input_schema_lists_properties_required_and_defaults() {
    let schema = serde_json::to_value(Report::input_schema()).unwrap();
    let properties = schema["properties"].as_object().unwrap();
    assert_eq!(
        properties.keys().collect::<Vec<_>>(),
        ["audience", "options", "sections", "topic"]
    );
    let mut required: Vec<_> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["options", "topic"]);
    assert_eq!(properties["sections"]["default"], 3);
    assert_eq!(schema["additionalProperties"], false);
}

// What `#[derive(JsonSchema)]` writes for `ReportInput`: the schema `#[workflow]` writes
// without the derive must be the same, for both contracts. (No doc comment: the derive
// would make it the schema's description.)
#[derive(schemars::JsonSchema)]
#[schemars(rename = "ReportInput")]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only its schema is used
struct DerivedReportInput {
    /// The `topic` argument of `run`.
    topic: String,
    /// The `sections` argument of `run`.
    #[serde(default = "three")]
    sections: u32,
    /// The `audience` argument of `run`.
    #[serde(default)]
    audience: Option<String>,
    /// The `options` argument of `run`.
    options: Options,
}

fn three() -> u32 {
    3
}

#[test]
fn input_schema_is_the_derived_one() {
    assert_eq!(
        serde_json::to_value(Report::input_schema()).unwrap(),
        serde_json::to_value(schemars::schema_for!(DerivedReportInput)).unwrap()
    );
    let for_serialize = schemars::generate::SchemaSettings::default().for_serialize();
    assert_eq!(
        serde_json::to_value(
            for_serialize
                .clone()
                .into_generator()
                .into_root_schema_for::<ReportInput>()
        )
        .unwrap(),
        serde_json::to_value(
            for_serialize
                .into_generator()
                .into_root_schema_for::<DerivedReportInput>()
        )
        .unwrap()
    );
}

#[test]
fn input_struct_round_trips() {
    let input = ReportInput {
        topic: "t".into(),
        sections: 2,
        audience: None,
        options: Options { depth: 1 },
    };
    let value = serde_json::to_value(&input).unwrap();
    assert_eq!(
        value,
        json!({"topic": "t", "sections": 2, "audience": null, "options": {"depth": 1}})
    );
    let back: ReportInput = serde_json::from_value(value).unwrap();
    assert_eq!(back.options, Options { depth: 1 });
}

#[tokio::test]
async fn run_json_applies_defaults_and_rejects_bad_input() {
    let mut report = Report::builder().build().unwrap();
    let response = report
        .run_json(json!({"topic": "rust", "options": {"depth": 2}}))
        .await
        .unwrap();
    assert_eq!(response.text(), "rust/3/all/2");

    let missing = report
        .run_json(json!({"options": {"depth": 2}}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            Error::Input {
                workflow: "Report",
                ..
            }
        ),
        "{missing:?}"
    );
    assert!(
        std::error::Error::source(&missing)
            .unwrap()
            .to_string()
            .contains("topic")
    );

    let unknown = report
        .run_json(json!({"topic": "x", "options": {"depth": 1}, "topik": 1}))
        .await
        .unwrap_err();
    assert!(matches!(unknown, Error::Input { .. }), "{unknown:?}");

    let wrong_type = report
        .run_json(json!({"topic": 5, "options": {"depth": 1}}))
        .await
        .unwrap_err();
    assert!(matches!(wrong_type, Error::Input { .. }));
    assert!(
        report.memory().runs().len() == 1,
        "rejected input does not start a run"
    );

    let mut none = NoArgs::builder().build().unwrap();
    assert_eq!(
        none.run_json(serde_json::Value::Null).await.unwrap().text(),
        "nothing needed"
    );
    assert_eq!(
        none.run_json(json!({})).await.unwrap().text(),
        "nothing needed"
    );
}

#[tokio::test]
async fn a_server_runs_workflows_of_any_type_from_json() {
    let mut registry: Vec<Box<dyn DynWorkflow>> = vec![
        Box::new(Report::builder().build().unwrap()),
        Box::new(NoArgs::builder().build().unwrap()),
    ];
    let mut answers = Vec::new();
    for workflow in &mut registry {
        let input = if workflow.parameters().iter().any(|p| p.name == "topic") {
            json!({"topic": "any", "options": {"depth": 0}, "audience": "devs"})
        } else {
            json!({})
        };
        assert!(workflow.schema().as_object().is_some());
        answers.push((
            workflow.type_name(),
            workflow.call_json(input).await.unwrap().text().into_owned(),
        ));
    }
    assert_eq!(
        answers,
        [
            ("Report", "any/3/devs/0".to_owned()),
            ("NoArgs", "nothing needed".to_owned())
        ]
    );
}
