// Checks that a `run` argument written as a pattern is one error asking for a plain name.
use buddy::prelude::*;

#[workflow]
pub struct Destructured {}

#[workflow]
impl Destructured {
    async fn run(&mut self, (low, high): (u32, u32)) -> RunResponse {
        RunResponse::from_text(format!("{low}..{high}"))
    }
}

fn main() {}
