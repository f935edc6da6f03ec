// Checks that generic parameters on the workflow struct are one error on the parameter.
use buddy::prelude::*;

#[workflow]
pub struct Generic<T> {
    #[field(default)]
    pub value: T,
}

fn main() {}
