// Checks that a `#[member]` field whose type does not implement `Member` is one error on the
// field's type.
use buddy::prelude::*;

#[workflow]
pub struct Helped {
    #[member(default = String::from("not an agent"))]
    helper: String,
}

#[workflow]
impl Helped {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text(self.helper.clone())
    }
}

fn main() {}
