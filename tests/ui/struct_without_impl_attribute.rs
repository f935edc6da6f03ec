// Checks that `#[workflow]` on a struct whose `impl` block lacks it is one error whose note says
// to add the attribute to the `impl` block that defines `run` (without the check, `run` would be
// a plain method: no ids, nothing persisted).
use buddy::prelude::*;

#[workflow]
pub struct Forgotten {}

impl Forgotten {
    pub async fn run(&mut self, topic: String) -> RunResponse {
        RunResponse::from_text(topic)
    }
}

fn main() {}
