// Checks that a field named like a generated setting (`session_id`) is one error on the field.
use buddy::prelude::*;

#[workflow]
pub struct Clash {
    #[field(default)]
    session_id: String,
}

#[workflow]
impl Clash {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text(self.session_id.clone())
    }
}

fn main() {}
