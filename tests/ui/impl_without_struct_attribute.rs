// Checks that `#[workflow]` on the impl block of a struct without `#[workflow]` is one error
// whose note says to add the attribute to the struct.
use buddy::prelude::*;

pub struct Forgotten {}

#[workflow]
impl Forgotten {
    async fn run(&mut self, topic: String) -> RunResponse {
        RunResponse::from_text(topic)
    }
}

fn main() {}
