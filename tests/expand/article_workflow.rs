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
#[workflow(description = "Research a topic, then write an article.")]
pub struct ArticleWorkflow {
    #[member(default = Agent::new("researcher"))]
    researcher: Agent,
    #[member(default = Agent::new("writer"))]
    writer: Agent,
}

#[workflow]
impl ArticleWorkflow {
    /// Researches `topic` and writes an article about it.
    async fn run(&mut self, topic: String) -> Result<RunResponse> {
        let research = self.researcher.answer(&format!("Research: {topic}"));
        let article = self
            .writer
            .answer(&format!("Write an article based on:\n{research}"));
        Ok(RunResponse::from_text(article))
    }
}

fn main() {}
