// Checks that a `run` that is not `async` but awaits in its body is one error on `fn` (none on
// the `.await`).
use buddy::prelude::*;

async fn research(topic: String) -> String {
    topic
}

#[workflow]
pub struct Blocking {}

#[workflow]
impl Blocking {
    fn run(&mut self, topic: String) -> RunResponse {
        RunResponse::from_text(research(topic).await)
    }
}

fn main() {}
