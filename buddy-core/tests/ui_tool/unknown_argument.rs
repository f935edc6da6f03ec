// A misspelt attribute argument lists the valid ones.
use buddy_macros::tool;

/// Adds.
#[tool(crate = buddy_core, nam = "plus")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn main() {}
