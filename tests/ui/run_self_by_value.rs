// Checks that `run(self)` (by value) is one error on the receiver.
use buddy::prelude::*;

#[workflow]
pub struct Consumed {}

#[workflow]
impl Consumed {
    async fn run(self, topic: String) -> RunResponse {
        RunResponse::from_text(topic)
    }
}

fn main() {}
