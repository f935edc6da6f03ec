// A generic tool has no single JSON Schema.
use buddy_macros::tool;

/// Echoes.
#[tool(crate = buddy_core)]
fn echo<T: serde::Serialize>(value: T) -> T {
    value
}

fn main() {}
