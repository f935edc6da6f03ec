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
    fn attach(&mut self, context: &MemberContext<'_>) {
        self.session_id = Some(context.session_id.to_owned());
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
    fn __buddy_attach_members(
        &mut self,
        context: &::buddy::__private::MemberContext<'_>,
    ) {
        ::buddy::__private::Member::attach(&mut self.researcher, context);
        ::buddy::__private::Member::attach(&mut self.writer, context);
    }
}
#[automatically_derived]
impl ::buddy::__private::Member for ArticleWorkflow {
    fn attach(&mut self, context: &::buddy::__private::MemberContext<'_>) {
        self.__buddy.attach(context);
    }
}
impl ArticleWorkflow {
    /// Starts building this workflow: set fields and workflow settings, then `build()`.
    pub fn builder() -> ArticleWorkflowBuilder {
        ArticleWorkflowBuilder {
            researcher: ::buddy::__private::None,
            writer: ::buddy::__private::None,
            __buddy: ::buddy::__private::Default::default(),
        }
    }
}
/// Builder of [`ArticleWorkflow`]: its fields and the workflow settings. Created by [`ArticleWorkflow::builder`].
#[must_use]
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
    /// Sets the display name (default: the type name).
    pub fn name(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::String>,
    ) -> Self {
        self.__buddy.name = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the workflow id (default: a fresh UUID, or the stored one).
    pub fn workflow_id(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::String>,
    ) -> Self {
        self.__buddy.workflow_id = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the description.
    pub fn description(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::String>,
    ) -> Self {
        self.__buddy.description = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the user the sessions belong to.
    pub fn user_id(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::String>,
    ) -> Self {
        self.__buddy.user_id = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the session to run in (default: a fresh UUID).
    pub fn session_id(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::String>,
    ) -> Self {
        self.__buddy.session_id = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the session name.
    pub fn session_name(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::String>,
    ) -> Self {
        self.__buddy.session_name = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets the initial session state (a JSON object): the state of a new session, and
    /// the keys added to a stored session that lacks them.
    pub fn session_state(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::serde_json::Value>,
    ) -> Self {
        self.__buddy.session_state = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Sets how the initial state meets a stored session's state (default: stored wins).
    pub fn state_merge(mut self, value: ::buddy::__private::StateMerge) -> Self {
        self.__buddy.state_merge = value;
        self
    }
    /// Sets the memory the workflow starts with.
    pub fn memory(mut self, value: ::buddy::__private::WorkflowMemory) -> Self {
        self.__buddy.memory = ::buddy::__private::Some(value);
        self
    }
    /// Sets where sessions are persisted.
    pub fn storage(mut self, value: impl ::buddy::__private::IntoStorage) -> Self {
        self.__buddy.set_storage(value);
        self
    }
    /// Sets extra data stored with the session (a JSON object).
    pub fn extra_data(
        mut self,
        value: impl ::buddy::__private::Into<::buddy::__private::serde_json::Value>,
    ) -> Self {
        self.__buddy.extra_data = ::buddy::__private::Some(
            ::buddy::__private::Into::into(value),
        );
        self
    }
    /// Turns debug logging on.
    pub fn debug_mode(mut self, value: ::buddy::__private::bool) -> Self {
        self.__buddy.debug_mode = value;
        self
    }
    /// Sets how many recent runs are read into memory (default 20).
    pub fn history_runs(mut self, value: ::buddy::__private::usize) -> Self {
        self.__buddy.history_runs = ::buddy::__private::Some(value);
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
        serialize_with = "ArticleWorkflowInput::__buddy_serialize::<String, _>",
        deserialize_with = "ArticleWorkflowInput::__buddy_deserialize"
    )]
    pub topic: String,
}
impl ArticleWorkflowInput {
    /// Serializes an argument.
    #[doc(hidden)]
    fn __buddy_serialize<T, S>(
        value: &T,
        serializer: S,
    ) -> ::buddy::__private::Result<S::Ok, S::Error>
    where
        T: ::buddy::__private::serde::Serialize,
        S: ::buddy::__private::serde::Serializer,
    {
        ::buddy::__private::serde::Serialize::serialize(value, serializer)
    }
    /// Deserializes an argument.
    #[doc(hidden)]
    fn __buddy_deserialize<'de, T, D>(
        deserializer: D,
    ) -> ::buddy::__private::Result<T, D::Error>
    where
        T: ::buddy::__private::serde::Deserialize<'de>,
        D: ::buddy::__private::serde::Deserializer<'de>,
    {
        T::deserialize(deserializer)
    }
}
const _: () = {
    #[derive(::buddy::__private::schemars::JsonSchema)]
    #[schemars(crate = "::buddy::__private::schemars", rename = "ArticleWorkflowInput")]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct __BuddyInputSchema {
        /// The `topic` argument of `run`.
        pub topic: String,
    }
    #[automatically_derived]
    impl ::buddy::__private::schemars::JsonSchema for ArticleWorkflowInput {
        fn schema_name() -> ::std::borrow::Cow<'static, ::buddy::__private::str> {
            <__BuddyInputSchema as ::buddy::__private::schemars::JsonSchema>::schema_name()
        }
        fn schema_id() -> ::std::borrow::Cow<'static, ::buddy::__private::str> {
            <__BuddyInputSchema as ::buddy::__private::schemars::JsonSchema>::schema_id()
        }
        fn json_schema(
            generator: &mut ::buddy::__private::schemars::SchemaGenerator,
        ) -> ::buddy::__private::schemars::Schema {
            <__BuddyInputSchema as ::buddy::__private::schemars::JsonSchema>::json_schema(
                generator,
            )
        }
    }
};
#[automatically_derived]
impl ::buddy::__private::RunWorkflow for ArticleWorkflow {
    type Input = ArticleWorkflowInput;
    const STREAMING: ::buddy::__private::bool = false;
    const PARAMETERS: &'static [::buddy::__private::Parameter] = &[
        ::buddy::__private::Parameter {
            name: "topic",
            rust_type: "String",
            default: ::buddy::__private::None,
            required: true,
        },
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
