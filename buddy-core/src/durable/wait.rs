//! [`wait_for`]: a durable pause for input from outside the run.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{DurableError, EntryKind, EntryStatus, Slot, WaitSpec, allocate, decode, hash_value};
use crate::error::{Error, Result};
use crate::run::now_millis;

/// Waits, durably, for a value of type `T` from outside the run: a person's approval, a
/// reviewer's edits, a webhook.
///
/// In a durable run with no value for this wait yet, the wait is recorded (its key, the
/// `prompt`, the JSON Schema of `T`, its deadline), and once nothing else in the run is
/// working, the run is stored as `paused`, emits `run_paused` and returns
/// [`DurableError::Paused`]: the process may exit, and a paused run holds no task. A value
/// given with `resume_with(run_id, key, value)` is checked against the schema, stored, and
/// the run continues: this `wait_for` then returns it.
///
/// The key is `key#occurrence` in the scope it is made in (`approve_outline#1`; in a loop,
/// `review#1`, `review#2`, ...). Several waits may be pending at once (under `join!`),
/// each answered by its key.
///
/// With [`timeout`](Wait::timeout), a wait that gets no value in time resolves with
/// [`DurableError::WaitExpired`], which the body may handle (a paused run whose deadline
/// passed is picked up by [`resume_unfinished`](crate::workflow::resume_unfinished)).
///
/// Outside a durable run it fails with [`DurableError::NotDurable`].
pub fn wait_for<T>(key: &str, prompt: impl Serialize) -> Wait<T>
where
    T: DeserializeOwned + schemars::JsonSchema + Send + 'static,
{
    Wait {
        slot: allocate(EntryKind::Wait, key),
        prompt: serde_json::to_value(prompt),
        timeout: None,
        driver: None,
        _value: PhantomData,
    }
}

/// A pending [`wait_for`]. Its key is fixed when it is created.
#[must_use = "a wait does nothing unless awaited"]
pub struct Wait<T> {
    slot: Option<Slot>,
    prompt: serde_json::Result<Value>,
    timeout: Option<Duration>,
    driver: Option<BoxFuture<'static, Result<T>>>,
    _value: PhantomData<fn() -> T>,
}

impl<T> Wait<T> {
    /// Resolves the wait with [`DurableError::WaitExpired`] when no value came within
    /// `timeout` of the wait's first recording (kept across resumes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The wait's key (`key#occurrence` in its scope), in a durable run.
    pub fn key(&self) -> Option<&str> {
        self.slot.as_ref().map(|slot| slot.key.as_str())
    }
}

impl<T> Future for Wait<T>
where
    T: DeserializeOwned + schemars::JsonSchema + Send + 'static,
{
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.driver.is_none() {
            let prompt = std::mem::replace(&mut this.prompt, Ok(Value::Null));
            this.driver = Some(Box::pin(run_wait::<T>(
                this.slot.take(),
                prompt,
                this.timeout,
            )));
        }
        match this.driver.as_mut() {
            Some(driver) => driver.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Unregisters a wait whose future is dropped (a `select!` that took another branch).
struct Blocked(Slot);

impl Drop for Blocked {
    fn drop(&mut self) {
        self.0.unblock();
    }
}

async fn run_wait<T>(
    slot: Option<Slot>,
    prompt: serde_json::Result<Value>,
    timeout: Option<Duration>,
) -> Result<T>
where
    T: DeserializeOwned + schemars::JsonSchema,
{
    let Some(slot) = slot else {
        return Err(Error::Durable(DurableError::NotDurable {
            what: "`wait_for`",
            hint: "add `durable` to the workflow's `impl` attribute: `#[workflow(durable)]`",
        }));
    };
    let prompt = prompt.map_err(|source| {
        Error::Durable(DurableError::Encode {
            key: slot.key.clone(),
            source,
        })
    })?;
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    let input_hash = hash_value(&(&prompt, &schema));
    let key = slot.key.clone();
    let expired = || {
        Err(Error::Durable(DurableError::WaitExpired {
            key: key.clone(),
        }))
    };
    let existing = slot.replay(&input_hash)?;
    let deadline = match &existing {
        Some(entry) => match entry.status {
            EntryStatus::Done => {
                return decode(&slot.key, entry.output.clone().unwrap_or_default());
            }
            EntryStatus::Expired => return expired(),
            _ => entry.wait.as_ref().and_then(|wait| wait.deadline),
        },
        None => timeout.map(|timeout| {
            now_millis().saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX))
        }),
    };
    if let Some(deadline) = deadline
        && deadline <= now_millis()
    {
        let entry = existing
            .unwrap_or_else(|| pending_entry(&slot, &input_hash, &prompt, &schema, Some(deadline)));
        slot.expire(entry).await?;
        return expired();
    }
    let spec = WaitSpec {
        prompt,
        schema,
        deadline,
    };
    let entry = existing.unwrap_or_else(|| {
        pending_entry(
            &slot,
            &input_hash,
            &spec.prompt,
            &spec.schema,
            spec.deadline,
        )
    });
    slot.block(entry);
    let blocked = Blocked(slot);
    match deadline {
        None => std::future::pending::<()>().await,
        Some(deadline) => {
            let left = u64::try_from(deadline.saturating_sub(now_millis())).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(left)).await;
        }
    }
    // The deadline passed while the run was still working: the wait expires here.
    let slot = blocked.0.clone();
    drop(blocked);
    let entry = pending_entry(
        &slot,
        &input_hash,
        &spec.prompt,
        &spec.schema,
        spec.deadline,
    );
    slot.expire(entry).await?;
    expired()
}

fn pending_entry(
    slot: &Slot,
    input_hash: &str,
    prompt: &Value,
    schema: &Value,
    deadline: Option<i64>,
) -> super::JournalEntry {
    let mut entry = slot.entry(EntryStatus::Pending, input_hash.to_owned());
    entry.wait = Some(WaitSpec {
        prompt: prompt.clone(),
        schema: schema.clone(),
        deadline,
    });
    entry
}
