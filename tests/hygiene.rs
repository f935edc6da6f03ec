//! Hygiene of `#[workflow]`: the expansion names every runtime item through
//! `::buddy::__private`, so it compiles where `Result`, `Option`, `Box`, `String`, `Default`,
//! `Into`, `Some`, `None`, `Ok` and `Err` are the user's own types, without a warning, and
//! every public item it generates carries docs.

#![deny(warnings)]
#![deny(missing_docs)]
#![allow(clippy::unwrap_used)] // tests unwrap

/// Workflows declared where the prelude's names are shadowed by the user's types.
pub mod shadowed {
    use buddy::prelude::{RunEvent, RunResponse, Workflow, workflow};

    /// Shadows `std::result::Result`.
    pub struct Result;
    /// Shadows `std::option::Option`.
    pub struct Option;
    /// Shadows `std::boxed::Box`.
    pub struct Box;
    /// Shadows `std::string::String`.
    pub struct String;
    /// Shadows the `Default` trait.
    pub struct Default;
    /// Shadows the `Into` trait.
    pub struct Into;
    /// Shadows `Option::Some`.
    pub struct Some;
    /// Shadows `Option::None`.
    pub struct None;
    /// Shadows `Result::Ok`.
    pub struct Ok;
    /// Shadows `Result::Err`.
    pub struct Err;

    /// A member that counts how often the workflow attached it.
    #[derive(Clone, Debug)]
    pub struct Helper {
        /// Attachments so far.
        pub attached: usize,
    }

    impl buddy::Member for Helper {
        fn attach(&mut self, _context: &buddy::MemberContext) {
            self.attached += 1;
        }
    }

    /// The session state of [`Greeter`].
    #[derive(Clone, Debug, ::std::default::Default, serde::Serialize, serde::Deserialize)]
    pub struct GreeterState {
        /// Greetings so far.
        pub greetings: u32,
    }

    /// Greets, with every kind of field and argument the macro handles.
    #[workflow(name = "greeter", description = "Greets someone.", state = GreeterState)]
    pub struct Greeter {
        #[member(default = Helper { attached: 0 })]
        helper: Helper,
        #[field(default = ::std::string::String::from("Hello"))]
        greeting: ::std::string::String,
        #[field(default)]
        punctuation: ::std::option::Option<char>,
    }

    #[workflow]
    impl Greeter {
        /// Greets `who`, `times` times.
        async fn run(
            &mut self,
            who: ::std::string::String,
            #[arg(default = 1)] times: u32,
            suffix: ::std::option::Option<::std::string::String>,
        ) -> buddy::Result<RunResponse> {
            self.state_mut().greetings += 1;
            let mark = self.punctuation.unwrap_or('!');
            let text = format!(
                "{} {who}{mark}{} x{times} (attached {})",
                self.greeting,
                suffix.unwrap_or_default(),
                self.helper.attached
            );
            ::std::result::Result::Ok(RunResponse::from_text(text))
        }
    }

    /// Streams one event per count.
    #[workflow]
    pub struct Counter {}

    #[workflow]
    impl Counter {
        /// Counts to `to`.
        async fn run(&mut self, to: u32) -> impl futures::Stream<Item = buddy::Result<RunEvent>> {
            async_stream::stream! {
                for number in 1..=to {
                    yield ::std::result::Result::Ok(RunEvent::content(number.to_string()));
                }
            }
        }
    }

    /// Uses every shadowing type, so none is dead code.
    pub fn all() -> (
        Result,
        Option,
        Box,
        String,
        Default,
        Into,
        Some,
        None,
        Ok,
        Err,
    ) {
        (
            Result, Option, Box, String, Default, Into, Some, None, Ok, Err,
        )
    }
}

use buddy::prelude::*;
use futures::StreamExt;
use shadowed::{Counter, Greeter};

#[tokio::test]
async fn response_workflow_runs_where_std_names_are_shadowed() {
    let _ = shadowed::all();
    let mut greeter = Greeter::default();
    let response = greeter.run("Ada".to_string(), 2, None).await.unwrap();
    assert_eq!(response.text(), "Hello Ada! x2 (attached 1)");
    assert_eq!(greeter.state().greetings, 1);
    assert_eq!(greeter.name(), "greeter");
    assert_eq!(greeter.description(), Some("Greets someone."));

    let mut built = Greeter::builder()
        .greeting("Hi")
        .punctuation(Some('?'))
        .build()
        .unwrap();
    let response = built
        .run_json(serde_json::json!({"who": "Bob", "suffix": "."}))
        .await
        .unwrap();
    assert_eq!(response.text(), "Hi Bob?. x1 (attached 1)");
}

#[tokio::test]
async fn streaming_workflow_runs_where_std_names_are_shadowed() {
    let mut counter = Counter::default();
    let contents: Vec<String> = counter
        .run(3)
        .filter_map(|event| async move { event.unwrap().content_delta().map(str::to_owned) })
        .collect()
        .await;
    assert_eq!(contents, ["1", "2", "3"]);
    assert_eq!(counter.last_response().unwrap().text(), "123");
}
