// Checks that an `impl` block with `#[workflow]` but no `run` method is one error on `impl`.
use buddy::prelude::*;

#[workflow]
pub struct NoRun {}

#[workflow]
impl NoRun {
    pub fn helper(&self) -> u32 {
        1
    }
}

fn main() {}
