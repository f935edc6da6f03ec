//! What a run produces: the [`RunResponse`], the streamed [`RunEvent`]s, and the
//! [`RunRecord`] kept in a session's history.

mod event;
mod message;
mod record;
mod response;

pub use event::{RunEvent, RunEventKind};
pub use message::{Message, Role, ToolCall};
pub use record::{RunRecord, RunStatus};
pub use response::{Metrics, RunResponse, ToolExecution};

/// Current time as unix milliseconds, the unit of every timestamp buddy stores.
pub fn now_millis() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
