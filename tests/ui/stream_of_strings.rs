// Checks that a streaming `run` whose items are not `Result<RunEvent>` is one error.
use buddy::prelude::*;

#[workflow]
pub struct Chatty {}

#[workflow]
impl Chatty {
    async fn run(&mut self) -> impl Stream<Item = String> {
        buddy::stream! {
            yield "hello".to_string();
        }
    }
}

fn main() {}
