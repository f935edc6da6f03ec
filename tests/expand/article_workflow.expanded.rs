//! The canonical `#[workflow]` example; `article_workflow.expanded.rs` is what it expands to
//! (checked by `buddy-macros`' snapshot test, rewritten with `BUDDY_BLESS=1`).
use buddy::prelude::*;
/// A stand-in for an agent, so the example needs no model.
#[derive(Clone, Debug, Default)]
pub struct Agent {
    role: String,
    session_id: Option<String>,
}
impl Agent {
    /// An agent with a role.
    pub fn new(role: &str) -> Self {
        Agent {
            role: role.to_owned(),
            session_id: None,
        }
    }
    /// Answers a prompt.
    pub fn answer(&self, prompt: &str) -> String {
        format!("{} ({:?}): {prompt}", self.role, self.session_id)
    }
}
impl Member for Agent {
    fn attach(&mut self, context: &MemberContext) {
        self.session_id = Some(context.session_id.clone());
    }
}
/// Researches a topic, then writes an article.
#[derive(::buddy::__private::Clone)]
pub struct ArticleWorkflow {
    researcher: Agent,
    writer: Agent,
    #[doc(hidden)]
    __buddy: ::buddy::__private::WorkflowCore<::buddy::__private::JsonState>,
}
#[automatically_derived]
impl ::buddy::__private::Workflow for ArticleWorkflow {
    type State = ::buddy::__private::JsonState;
    const TYPE_NAME: &'static ::buddy::__private::str = "ArticleWorkflow";
    const DESCRIPTION: ::buddy::__private::Option<&'static ::buddy::__private::str> = ::buddy::__private::Some(
        "Research a topic, then write an article.",
    );
    fn __buddy_core(&self) -> &::buddy::__private::WorkflowCore<Self::State> {
        &self.__buddy
    }
    fn __buddy_core_mut(
        &mut self,
    ) -> &mut ::buddy::__private::WorkflowCore<Self::State> {
        &mut self.__buddy
    }
    fn __buddy_attach_members(&mut self, context: &::buddy::__private::MemberContext) {
        ::buddy::__private::attach_member(&mut self.researcher, context, "researcher");
        ::buddy::__private::attach_member(&mut self.writer, context, "writer");
    }
}
#[automatically_derived]
impl ::buddy::__private::Member for ArticleWorkflow {
    fn attach(&mut self, context: &::buddy::__private::MemberContext) {
        self.__buddy.attach(context);
    }
}
impl ArticleWorkflow {
    /// Starts building this workflow: set fields and workflow settings, then `build()`.
    pub fn builder() -> ArticleWorkflowBuilder {
        ::buddy::__private::Default::default()
    }
}
/// Builder of [`ArticleWorkflow`]: its fields, and the workflow settings through [`WorkflowBuilder`](buddy::WorkflowBuilder). Created by [`ArticleWorkflow::builder`].
#[must_use]
#[derive(::buddy::__private::Default)]
pub struct ArticleWorkflowBuilder {
    researcher: ::buddy::__private::Option<Agent>,
    writer: ::buddy::__private::Option<Agent>,
    __buddy: ::buddy::__private::WorkflowSettings,
}
impl ArticleWorkflowBuilder {
    /// Sets the field `researcher`.
    pub fn researcher(mut self, value: impl ::buddy::__private::Into<Agent>) -> Self {
        self.researcher = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the field `writer`.
    pub fn writer(mut self, value: impl ::buddy::__private::Into<Agent>) -> Self {
        self.writer = ::buddy::__private::Some(::buddy::__private::Into::into(value));
        self
    }
    /// Builds the workflow; fails if a field without default was not set, or if
    /// the session state or extra data is not a JSON object.
    pub fn build(
        self,
    ) -> ::buddy::__private::Result<ArticleWorkflow, ::buddy::__private::Error> {
        let __buddy = ::buddy::__private::WorkflowCore::from_settings(
            self.__buddy,
            "ArticleWorkflow",
            ::buddy::__private::Some("Research a topic, then write an article."),
        )?;
        ::buddy::__private::Ok(ArticleWorkflow {
            researcher: match self.researcher {
                ::buddy::__private::Some(value) => value,
                ::buddy::__private::None => Agent::new("researcher"),
            },
            writer: match self.writer {
                ::buddy::__private::Some(value) => value,
                ::buddy::__private::None => Agent::new("writer"),
            },
            __buddy,
        })
    }
}
#[automatically_derived]
impl ::buddy::__private::WorkflowBuilder for ArticleWorkflowBuilder {
    fn __buddy_settings(&mut self) -> &mut ::buddy::__private::WorkflowSettings {
        &mut self.__buddy
    }
}
#[automatically_derived]
impl ::buddy::__private::Default for ArticleWorkflow {
    fn default() -> Self {
        ArticleWorkflow {
            researcher: Agent::new("researcher"),
            writer: Agent::new("writer"),
            __buddy: ::buddy::__private::WorkflowCore::with_defaults(
                "ArticleWorkflow",
                ::buddy::__private::Some("Research a topic, then write an article."),
            ),
        }
    }
}
const _: () = ::buddy::__private::assert_run_workflow::<ArticleWorkflow>();
impl ArticleWorkflow {
    #[doc(hidden)]
    async fn __buddy_run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.answer(&format!("Research: {topic}"));
        let article = self
            .writer
            .answer(&format!("Write an article based on:\n{research}"));
        Ok(RunResponse::from_text(article))
    }
    /// Researches `topic` and writes an article about it.
    ///
    /// Runs the workflow: reads the session, runs the body, records the run and writes
    /// the session back (generated by `#[workflow]`).
    pub async fn run(
        &mut self,
        topic: String,
    ) -> ::buddy::__private::Result<
        ::buddy::__private::RunResponse,
        ::buddy::__private::Error,
    > {
        ::buddy::__private::run_to_response(self, ArticleWorkflowInput { topic }).await
    }
}
/// The arguments of [`ArticleWorkflow::run`] as one value: what `run_json` decodes and what the JSON Schema describes (generated by `#[workflow]`).
#[derive(::buddy::__private::serde::Serialize, ::buddy::__private::serde::Deserialize)]
#[serde(crate = "::buddy::__private::serde", deny_unknown_fields)]
pub struct ArticleWorkflowInput {
    /// The `topic` argument of `run`.
    #[serde(
        serialize_with = "::buddy::__private::serialize_arg::<String, _>",
        deserialize_with = "::buddy::__private::deserialize_arg"
    )]
    pub topic: String,
}
#[automatically_derived]
impl ::buddy::__private::schemars::JsonSchema for ArticleWorkflowInput {
    fn schema_name() -> ::buddy::__private::Cow<'static, ::buddy::__private::str> {
        ::buddy::__private::Cow::Borrowed("ArticleWorkflowInput")
    }
    fn schema_id() -> ::buddy::__private::Cow<'static, ::buddy::__private::str> {
        ::buddy::__private::input_schema_id::<Self>()
    }
    fn json_schema(
        generator: &mut ::buddy::__private::schemars::SchemaGenerator,
    ) -> ::buddy::__private::schemars::Schema {
        ::buddy::__private::InputSchema::new(generator)
            .required::<String>("topic", "The `topic` argument of `run`.")
            .finish()
    }
}
#[automatically_derived]
impl ::buddy::__private::RunWorkflow for ArticleWorkflow {
    type Input = ArticleWorkflowInput;
    const STREAMING: ::buddy::__private::bool = false;
    const PARAMETERS: &'static [::buddy::__private::Parameter] = &[
        ::buddy::__private::Parameter::required("topic", "String"),
    ];
    fn __buddy_call(
        &mut self,
        input: Self::Input,
    ) -> ::buddy::__private::BoxFuture<'_, ::buddy::__private::Body<'_>> {
        ::buddy::__private::Box::pin(async move {
            ::buddy::__private::Body::Response(
                ::buddy::__private::IntoRunResult::into_run_result(
                    self.__buddy_run(input.topic).await,
                ),
            )
        })
    }
}
fn main() {}
