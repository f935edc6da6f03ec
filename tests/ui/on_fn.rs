// Checks that `#[workflow]` on a function is one error on `fn`.
use buddy::prelude::*;

#[workflow]
pub async fn run(topic: String) -> RunResponse {
    RunResponse::from_text(topic)
}

fn main() {}
