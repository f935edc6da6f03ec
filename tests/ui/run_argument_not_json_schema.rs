// Checks that a `run` argument type that derives serde but not `JsonSchema` is one error on that
// type naming the derive and its crate.
use buddy::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Options {
    depth: u8,
}

#[workflow]
pub struct Takes {}

#[workflow]
impl Takes {
    async fn run(&mut self, options: Options) -> RunResponse {
        RunResponse::from_text(options.depth.to_string())
    }
}

fn main() {}
