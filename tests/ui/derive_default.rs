// Checks that `#[derive(Default)]` on a workflow struct is one error on `Default`:
// `#[workflow]` implements `Default` itself.
use buddy::prelude::*;

#[workflow]
#[derive(Default)]
pub struct Defaulted {
    count: u32,
}

#[workflow]
impl Defaulted {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text(self.count.to_string())
    }
}

fn main() {}
