// A tool without a doc comment or `description`: the model could not know what it does.
use buddy_macros::tool;

#[tool(crate = buddy_core)]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn main() {}
