//! The run engine: the one lifecycle every run of a workflow, an agent or a team goes
//! through.
//!
//! An orchestrator describes its run ([`RunSpec`]: kind, ids, member path, storage, input)
//! and gets a [`RunScope`], which owns what all runs share: the run id and span, the event
//! sink (events stamped with the top-level run's ids and with their own origin), the
//! record (`created_at` at the start, `ended_at` and duration at the end, one input shape,
//! one error wording), the commit (state changes only when the run succeeded; the write
//! detached from the caller so a dropped run is still written), and the `cancelled` record
//! of a run dropped half-way. What differs between workflows, agents and teams — the body,
//! the model loop, the delegation — is the orchestrator's own named async function.
//!
//! A streamed run is a [`RunStream`], the same type for all three: a thin adapter that
//! drives the run's future and hands out the events the run sent.

mod scope;
mod sink;
mod stream;

pub(crate) use scope::{
    Failed, Journaled, MemberStart, RunScope, RunSpec, begin_member, error_chain, merge_code_state,
    panic_message,
};
pub(crate) use sink::EventSink;
pub use stream::RunStream;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::error::{Error, Result};

/// The recorded input of an agent or team run: `{"message": "<text>"}`.
pub(crate) fn message_input(input: &crate::run::Message) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert(
        "message".into(),
        serde_json::Value::String(input.content.clone().unwrap_or_default()),
    );
    serde_json::Value::Object(map)
}

/// Awaits `body`, turning a panic into [`Error::Panicked`].
pub(crate) async fn catch_panic<T>(body: impl Future<Output = Result<T>>) -> Result<T> {
    match AssertUnwindSafe(body).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Error::Panicked {
            message: panic_message(&*payload),
        }),
    }
}
