// Checks that a repeated `#[workflow]` argument is one error on the second occurrence.
use buddy::prelude::*;

#[workflow(name = "first", name = "second")]
pub struct Twice {}

#[workflow]
impl Twice {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text("ok")
    }
}

fn main() {}
