// Checks that a struct-only argument (`description`) on the impl block is one error on the
// key that says where it belongs.
use buddy::prelude::*;

#[workflow]
pub struct Described {}

#[workflow(description = "Does things.")]
impl Described {
    async fn run(&mut self, #[arg(default = 3)] times: u32) -> RunResponse {
        RunResponse::from_text(times.to_string())
    }
}

fn main() {}
