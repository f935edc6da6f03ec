//! The way from a store to a task of its own (the SQLite writer, the Postgres commit
//! grouper): jobs go over an unbounded channel (bounded in practice by the callers waiting
//! for their replies), and the task is started on the current tokio runtime on first use,
//! and again whenever the runtime the last one ran on has shut down.

use std::sync::Mutex;

use buddy_core::StorageError;
use buddy_core::storage::StorageResult;
use tokio::sync::mpsc;

pub(crate) struct Lane<J> {
    sender: Mutex<Option<mpsc::UnboundedSender<J>>>,
}

impl<J> Default for Lane<J> {
    fn default() -> Self {
        Lane {
            sender: Mutex::new(None),
        }
    }
}

impl<J: Send + 'static> Lane<J> {
    /// Hands `job` to the task; when there is none, `start` makes it from the receiving
    /// end (or refuses, say for a closed store) and it is spawned with `job` queued.
    pub fn send<F>(
        &self,
        job: J,
        start: impl FnOnce(mpsc::UnboundedReceiver<J>) -> StorageResult<F>,
    ) -> StorageResult<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut sender = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let job = match sender.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            StorageError::database("start the storage task (a tokio runtime is needed)", error)
        })?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let task = start(receiver)?;
        // The receiver is alive (moved into `task`): this send cannot fail.
        let _ = jobs.send(job);
        runtime.spawn(task);
        *sender = Some(jobs);
        Ok(())
    }
}
