// Checks that generic parameters on `run` are one error on the parameter.
use buddy::prelude::*;

#[workflow]
pub struct GenericRun {}

#[workflow]
impl GenericRun {
    async fn run<T: ToString>(&mut self, topic: T) -> RunResponse {
        RunResponse::from_text(topic.to_string())
    }
}

fn main() {}
