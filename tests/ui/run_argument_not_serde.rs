// Checks that a `run` argument whose type is not serde-serialisable is reported on that type:
// one error per missing trait (`Serialize`, `Deserialize`, `JsonSchema`), none inside serde's code.
use buddy::prelude::*;

pub struct Opaque;

#[workflow]
pub struct Takes {}

#[workflow]
impl Takes {
    async fn run(&mut self, opaque: Opaque) -> RunResponse {
        let Opaque = opaque;
        RunResponse::from_text("ok")
    }
}

fn main() {}
