//! Durable runs: a journal of every model request, tool call and step, crash resume that pays
//! for nothing twice, pauses for human input, and a persisted event log.
//!
//! A workflow whose `impl` block says `#[workflow(durable)]` runs durably: its run is stored
//! as `running` when it starts, and everything it finishes is written to a journal in the
//! same storage as its sessions before the body sees the result:
//!
//! - every model request of its agents and teams (at any depth), with the answer;
//! - every tool call, with its result (a team's delegation to a member included);
//! - every whole member run (agent or team), with its response;
//! - every [`step`] of the body, with its output or error;
//! - every [`wait_for`], with the value it got.
//!
//! After a crash (or a dropped run), [`RunWorkflow::resume`](crate::RunWorkflow::resume)
//! runs the body again from the top; what the journal holds is returned from it without
//! calling the model, the tool or the step again, and what it does not hold runs. **Code
//! outside steps runs again on resume**: put side effects (an HTTP call, a file written, an
//! email sent) in a `step` so that they run once.
//!
//! Journal keys are `scope/name#occurrence`, allocated when a future is *created*: futures
//! joined with `join!`, made in a loop or in a `join_all` get the same keys on every run, in
//! whatever order they finish. A body that asks for entries in another order or with
//! another input than its journal holds fails with
//! [`DurableError::NonDeterministic`] naming the key.
//!
//! The events of a durable run are appended to a per-run log with sequence numbers (1, 2,
//! 3, ...) in the same transaction as the journal entry they belong to; [`events`] replays
//! them after a sequence number and follows new ones, from any process on the same
//! database.

mod error;
mod journal;
mod log;
mod record;
mod resume;
mod wait;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::DurableError;
pub use journal::check_fence;
pub use log::{DEFAULT_RETENTION, EventStream, events, prune};
pub use record::{
    DurableQuery, DurableRun, DurableState, DurableWrite, EntryKind, EntryStatus, Fence,
    JournalEntry, StoredEvent, WaitSpec,
};
pub use resume::{Answered, PendingWait, ResumeOptions, answer, cancel, pending_waits, run_status};
pub(crate) use resume::{ResumeFrom, prepare_resume, ready, waiting_keys};
pub use wait::{Wait, wait_for};

pub(crate) use error::RecordedError;
pub(crate) use journal::{Busy, Journal, JournalScope, Slot, hash_value};

use crate::error::{Error, Result};

tokio::task_local! {
    /// The journal scope of the durable run this task is in, if any.
    static CURRENT: JournalScope;
}

/// The journal scope the current task runs in: `None` outside durable runs.
pub(crate) fn current() -> Option<JournalScope> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `future` with `scope` as the current journal scope (as is, without one). Not an
/// `async fn`: the future is held once, in whichever arm applies, so a run outside durable
/// runs carries no second copy of it.
pub(crate) fn within<F: Future>(
    scope: Option<JournalScope>,
    future: F,
) -> futures::future::Either<tokio::task::futures::TaskLocalFuture<JournalScope, F>, F> {
    match scope {
        Some(scope) => futures::future::Either::Left(CURRENT.scope(scope, future)),
        None => futures::future::Either::Right(future),
    }
}

/// Allocates a journal slot for `name` in the current scope (none outside durable runs).
pub(crate) fn allocate(kind: EntryKind, name: &str) -> Option<Slot> {
    current().map(|scope| scope.allocate(kind, name))
}

/// Allocates a journal slot for a member run named by `name()` (called only inside a
/// durable run, so that runs outside one build no name).
pub(crate) fn allocate_member(kind: EntryKind, name: impl FnOnce() -> String) -> Option<Slot> {
    current().map(|scope| scope.allocate(kind, &name()))
}

/// Runs `future` as a durable step named `name`: in a durable run its output is journaled
/// before it is returned, and on resume the journaled output is returned without running
/// the future again. Outside durable runs it just runs the future.
///
/// The future's error is journaled too and returned again on resume, as
/// [`DurableError::StepFailed`]. Declare what the step depends on with
/// [`Step::input`]: a different input on resume is a
/// [`DurableError::NonDeterministic`] error instead of a stale output.
///
/// ```
/// # extern crate buddy_core as buddy;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let facts: Vec<String> = buddy::durable::step("fetch_facts", async {
///     Ok::<_, buddy::Error>(vec!["water is wet".to_owned()])
/// })
/// .input(&"water")
/// .await?;
/// assert_eq!(facts.len(), 1);
/// # Ok::<(), buddy::Error>(())
/// # }).unwrap();
/// ```
pub fn step<'a, T, E, F>(name: &str, future: F) -> Step<'a, T>
where
    F: Future<Output = Result<T, E>> + Send + 'a,
    T: Serialize + DeserializeOwned + Send + 'a,
    E: Into<Error> + 'a,
{
    Step {
        name: name.to_owned(),
        slot: allocate(EntryKind::Step, name),
        input: Value::Null,
        future: Some(Box::pin(async move { future.await.map_err(Into::into) })),
        driver: None,
    }
}

/// A durable step: see [`step`]. Its journal key is fixed when it is created.
#[must_use = "a step does nothing unless awaited"]
pub struct Step<'a, T> {
    name: String,
    slot: Option<Slot>,
    input: Value,
    future: Option<BoxFuture<'a, Result<T>>>,
    driver: Option<BoxFuture<'a, Result<T>>>,
}

impl<T> Step<'_, T> {
    /// Declares what the step depends on: it is hashed into the journal, and a different
    /// value on resume fails the run instead of returning the old output.
    pub fn input(mut self, input: &impl Serialize) -> Self {
        self.input = serde_json::to_value(input).unwrap_or(Value::Null);
        self
    }

    /// The step's journal key (`name#occurrence` in its scope), in a durable run.
    pub fn key(&self) -> Option<&str> {
        self.slot.as_ref().map(|slot| slot.key.as_str())
    }
}

impl<'a, T: Serialize + DeserializeOwned + Send + 'a> Future for Step<'a, T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.driver.is_none() {
            let Some(future) = this.future.take() else {
                return Poll::Ready(Err(Error::msg("step polled after it finished")));
            };
            let name = std::mem::take(&mut this.name);
            let input = std::mem::take(&mut this.input);
            this.driver = Some(Box::pin(run_step(name, this.slot.take(), input, future)));
        }
        match this.driver.as_mut() {
            Some(driver) => driver.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

async fn run_step<T: Serialize + DeserializeOwned>(
    name: String,
    slot: Option<Slot>,
    input: Value,
    future: BoxFuture<'_, Result<T>>,
) -> Result<T> {
    let failed = |key: &str, source: crate::BoxError| {
        Error::Durable(DurableError::StepFailed {
            key: key.to_owned(),
            source,
        })
    };
    let Some(slot) = slot else {
        return future.await.map_err(|error| failed(&name, Box::new(error)));
    };
    let input_hash = hash_value(&input);
    if let Some(entry) = slot.replay(&input_hash)? {
        return match entry.error {
            Some(error) => Err(failed(&slot.key, Box::new(RecordedError(error)))),
            None => decode(&slot.key, entry.output.unwrap_or(Value::Null)),
        };
    }
    let busy = slot.busy();
    crate::fault::point("before_step", &slot.key);
    let result = within(Some(slot.child()), future).await;
    let outcome = match &result {
        Ok(output) => Ok(serde_json::to_value(output).map_err(|source| {
            Error::Durable(DurableError::Encode {
                key: slot.key.clone(),
                source,
            })
        })?),
        Err(error) => Err(crate::engine::error_chain(error)),
    };
    slot.record(input_hash, outcome, None).await?;
    drop(busy);
    crate::fault::point("after_step", &slot.key);
    result.map_err(|error| failed(&slot.key, Box::new(error)))
}

/// Decodes a journaled value into `T`.
pub(crate) fn decode<T: DeserializeOwned>(key: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| {
        Error::Durable(DurableError::Decode {
            key: key.to_owned(),
            type_name: std::any::type_name::<T>(),
            source,
        })
    })
}
