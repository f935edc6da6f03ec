// Checks that `#[workflow]` on a trait impl is one error on the trait (and no second one about
// the inherent `#[workflow]` impl next to it).
use std::fmt;

use buddy::prelude::*;

#[workflow]
pub struct Shown {}

#[workflow]
impl Shown {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text(self.to_string())
    }
}

#[workflow]
impl fmt::Display for Shown {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("shown")
    }
}

fn main() {}
