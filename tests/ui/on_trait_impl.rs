// Checks that `#[workflow]` on a trait impl is one error on the trait.
use std::fmt;

use buddy::prelude::*;

#[workflow]
pub struct Shown {}

#[workflow]
impl fmt::Display for Shown {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("shown")
    }
}

fn main() {}
