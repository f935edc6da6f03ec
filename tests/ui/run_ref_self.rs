// Checks that `run(&self)` is one error on the receiver: the run records into the session.
use buddy::prelude::*;

#[workflow]
pub struct Shared {}

#[workflow]
impl Shared {
    async fn run(&self, topic: String) -> RunResponse {
        RunResponse::from_text(topic)
    }
}

fn main() {}
