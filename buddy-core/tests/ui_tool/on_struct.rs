// `#[tool]` goes on functions only.
use buddy_macros::tool;

/// Not a function.
#[tool(crate = buddy_core)]
struct Adder;

fn main() {}
