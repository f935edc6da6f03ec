// Checks that a misspelt key in a field attribute is one error listing the valid key, and that
// the workflow still expands: `Misspelt::default()` in `main` adds no error.
use buddy::prelude::*;

#[workflow]
pub struct Misspelt {
    #[field(defualt)]
    count: u32,
}

#[workflow]
impl Misspelt {
    async fn run(&mut self) -> RunResponse {
        RunResponse::from_text(self.count.to_string())
    }
}

fn main() {
    let _ = Misspelt::default();
}
