// Checks that an unsupported return type (`String`) is one error on the type.
use buddy::prelude::*;

#[workflow]
pub struct Stringly {}

#[workflow]
impl Stringly {
    async fn run(&mut self, topic: String) -> String {
        topic
    }
}

fn main() {}
