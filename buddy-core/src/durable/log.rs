//! Reading a durable run's event log: replay after a sequence number, then follow new
//! events live until the run ends or pauses; and pruning old runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::record::StoredEvent;
use crate::error::Result;
use crate::run::{RunStatus, now_millis};
use crate::storage::Storage;

/// How many events one read fetches.
const PAGE: usize = 512;

/// How often a follower looks for events written by another process.
const POLL: Duration = Duration::from_millis(50);

/// Followers in this process, woken when a run of theirs is written.
static FOLLOWERS: LazyLock<Mutex<HashMap<String, Weak<Notify>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn followers() -> std::sync::MutexGuard<'static, HashMap<String, Weak<Notify>>> {
    FOLLOWERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wakes this process's followers of `run_id` (after a write of it).
pub(crate) fn notify(run_id: &str) {
    let notify = followers().get(run_id).and_then(Weak::upgrade);
    if let Some(notify) = notify {
        notify.notify_waiters();
    }
}

fn subscribe(run_id: &str) -> Arc<Notify> {
    let mut map = followers();
    map.retain(|_, notify| notify.strong_count() > 0);
    if let Some(notify) = map.get(run_id).and_then(Weak::upgrade) {
        return notify;
    }
    let notify = Arc::new(Notify::new());
    map.insert(run_id.to_owned(), Arc::downgrade(&notify));
    notify
}

/// The events of durable run `run_id` after sequence number `after` (0: from the start),
/// in order, then the new ones as they are written, until the run has ended or paused and
/// every event it wrote was read.
///
/// Writers in this process wake the stream at once; events written by another process on
/// the same database are picked up within 50 ms. Each event comes once, in sequence order,
/// with no gaps, so a reader that saw event `n` resumes exactly with `events(.., n)`.
///
/// A run that does not exist ends the stream after its first read (with nothing).
pub fn events(storage: Arc<dyn Storage>, run_id: impl Into<String>, after: u64) -> EventStream {
    let run_id = run_id.into();
    let notify = subscribe(&run_id);
    let state = Follow {
        storage,
        run_id,
        after,
        buffered: VecDeque::new(),
        notify,
        done: false,
    };
    EventStream {
        inner: Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })),
    }
}

/// The stream [`events`] returns.
#[must_use = "a stream does nothing unless polled"]
pub struct EventStream {
    inner: std::pin::Pin<Box<dyn Stream<Item = Result<StoredEvent>> + Send>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<StoredEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct Follow {
    storage: Arc<dyn Storage>,
    run_id: String,
    after: u64,
    buffered: VecDeque<StoredEvent>,
    notify: Arc<Notify>,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                self.after = event.seq;
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            // Registered before the read, so a write between the read and the wait wakes it.
            let notify = Arc::clone(&self.notify);
            let woken = notify.notified();
            let mut woken = std::pin::pin!(woken);
            woken.as_mut().enable();
            match self.fill().await {
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
                Ok(true) => continue,
                Ok(false) => {}
            }
            // Nothing new: the run's status says whether more can come (read after the
            // events, so an event written just before the run ended is not missed).
            match self.storage.load_durable(&self.run_id).await {
                Err(error) => {
                    self.done = true;
                    return Some(Err(error.into()));
                }
                Ok(None) => return None,
                Ok(Some(state)) => {
                    let resting = state.run.is_finished() || state.run.status == RunStatus::Paused;
                    if resting && state.last_seq <= self.after {
                        return None;
                    }
                    if state.last_seq > self.after {
                        continue;
                    }
                }
            }
            let _ = tokio::time::timeout(POLL, woken).await;
        }
    }

    /// Reads the next page; whether it found anything.
    async fn fill(&mut self) -> Result<bool> {
        let page = self
            .storage
            .read_events(&self.run_id, self.after, PAGE)
            .await?;
        let found = !page.is_empty();
        self.buffered.extend(page);
        Ok(found)
    }
}

/// Deletes the durable runs (with their journals and event logs) that ended more than
/// `retention` ago; returns how many. Runs still running or paused are kept. The default
/// retention is [`DEFAULT_RETENTION`]: call `prune(storage, DEFAULT_RETENTION)` on a
/// schedule.
pub fn prune(storage: &dyn Storage, retention: Duration) -> BoxFuture<'_, Result<u64>> {
    let age = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let before = now_millis().saturating_sub(age);
    Box::pin(async move { Ok(storage.prune_durable(before).await?) })
}

/// How long ended runs are kept by default: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
