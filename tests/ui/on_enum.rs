// Checks that `#[workflow]` on an enum is one error on `enum`.
use buddy::prelude::*;

#[workflow]
pub enum Choice {
    Left,
    Right,
}

fn main() {
    let _ = [Choice::Left, Choice::Right];
}
