// Checks that a private `state = T` type behind a public workflow is one error, on the type in
// `state = T` (rustc's E0446: the fix is to make the state type as visible as the workflow).
use buddy::prelude::*;

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    count: u32,
}

#[workflow(state = Tally)]
pub struct Counts {}

#[workflow]
impl Counts {
    async fn run(&mut self) -> RunResponse {
        self.state_mut().count += 1;
        RunResponse::from_text(self.state().count.to_string())
    }
}

fn main() {}
