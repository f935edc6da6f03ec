// Checks that a `run` that is not `async` is one error on `fn`.
use buddy::prelude::*;

#[workflow]
pub struct Blocking {}

#[workflow]
impl Blocking {
    fn run(&mut self, topic: String) -> RunResponse {
        RunResponse::from_text(topic)
    }
}

fn main() {}
