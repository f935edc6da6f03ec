// Checks that `run` returning a `Result` of something other than `RunResponse` is one error
// naming the supported return types.
use buddy::prelude::*;

#[workflow]
pub struct Texty {}

#[workflow]
impl Texty {
    async fn run(&mut self) -> Result<String> {
        Ok("text".to_string())
    }
}

fn main() {}
