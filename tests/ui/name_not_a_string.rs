// Checks that `name` given something other than a string literal is one error on the value.
use buddy::prelude::*;

#[workflow(name = 3)]
pub struct Numbered {}

#[workflow]
impl Numbered {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text("ok")
    }
}

fn main() {}
