// Checks that a `run` without a return type is one error asking for one.
use buddy::prelude::*;

#[workflow]
pub struct Silent {}

#[workflow]
impl Silent {
    async fn run(&mut self, topic: String) {
        let _ = topic;
    }
}

fn main() {}
