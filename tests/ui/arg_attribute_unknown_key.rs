// Checks that a misspelt key in `#[arg(...)]` is one error listing the valid key, and that the
// workflow still expands: the `run` call in `main` adds no error.
use buddy::prelude::*;

#[workflow]
pub struct Repeats {}

#[workflow]
impl Repeats {
    async fn run(&mut self, text: String, #[arg(defualt = 2)] times: u32) -> Result<RunResponse> {
        Ok(RunResponse::from_text(text.repeat(times as usize)))
    }
}

async fn repeat() -> Result<String> {
    let mut workflow = Repeats::default();
    Ok(workflow.run("ab".to_string(), 2).await?.text().into_owned())
}

fn main() {
    let _ = repeat();
}
