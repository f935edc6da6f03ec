// Checks that `#[workflow]` on a tuple struct is one error on its fields.
use buddy::prelude::*;

#[workflow]
pub struct Pair(u32, u32);

fn main() {}
