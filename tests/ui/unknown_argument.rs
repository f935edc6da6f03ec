// Checks that an unknown `#[workflow]` argument is one error on the key, listing the valid ones.
use buddy::prelude::*;

#[workflow(sesion = "x")]
pub struct Typo {}

#[workflow]
impl Typo {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text("ok")
    }
}

fn main() {}
