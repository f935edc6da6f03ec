// Parameters are decoded from the model's JSON, so they must be owned.
use buddy_macros::tool;

/// Greets someone.
#[tool(crate = buddy_core)]
fn greet(name: &str) -> String {
    format!("hello {name}")
}

fn main() {}
