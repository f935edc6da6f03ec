//! How much of a model server's answer a client accepts: the [`Limits`] every HTTP model
//! client enforces, so a hostile or broken server cannot make it allocate without bound.

/// Size and count limits on what a model server may send, enforced by
/// [`OpenAIChat`](super::OpenAIChat) and [`Claude`](super::Claude) (set with their
/// `limits` method). Breaking one is a [`ModelError::LimitExceeded`](super::ModelError),
/// never an allocation the server chose.
///
/// | limit | default |
/// |---|---|
/// | [`max_response_bytes`](Limits::max_response_bytes) | 16 MiB |
/// | [`max_error_body_bytes`](Limits::max_error_body_bytes) | 4 KiB (truncated, not an error) |
/// | [`max_sse_event_bytes`](Limits::max_sse_event_bytes) | 4 MiB |
/// | [`max_tool_calls`](Limits::max_tool_calls) | 128 |
/// | [`max_tool_call_index`](Limits::max_tool_call_index) | 1023 |
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::model::{Limits, OpenAIChat};
///
/// let model = OpenAIChat::new("gpt-4o-mini")
///     .limits(Limits::default().max_response_bytes(1 << 20).max_tool_calls(8));
/// # let _ = model;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The most bytes read of one answer's body, streamed or not.
    pub max_response_bytes: usize,
    /// The most bytes read of an error answer's body (the rest is dropped).
    pub max_error_body_bytes: usize,
    /// The longest line, and the largest event (its `data:` lines joined), of a streamed
    /// (server-sent events) answer.
    pub max_sse_event_bytes: usize,
    /// The most tool calls in one answer.
    pub max_tool_calls: usize,
    /// The largest tool-call `index` a streamed answer may use.
    pub max_tool_call_index: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_response_bytes: 16 * 1024 * 1024,
            max_error_body_bytes: 4 * 1024,
            max_sse_event_bytes: 4 * 1024 * 1024,
            max_tool_calls: 128,
            max_tool_call_index: 1023,
        }
    }
}

impl Limits {
    /// Sets [`max_response_bytes`](Limits::max_response_bytes).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Sets [`max_error_body_bytes`](Limits::max_error_body_bytes).
    pub fn max_error_body_bytes(mut self, bytes: usize) -> Self {
        self.max_error_body_bytes = bytes;
        self
    }

    /// Sets [`max_sse_event_bytes`](Limits::max_sse_event_bytes).
    pub fn max_sse_event_bytes(mut self, bytes: usize) -> Self {
        self.max_sse_event_bytes = bytes;
        self
    }

    /// Sets [`max_tool_calls`](Limits::max_tool_calls).
    pub fn max_tool_calls(mut self, calls: usize) -> Self {
        self.max_tool_calls = calls;
        self
    }

    /// Sets [`max_tool_call_index`](Limits::max_tool_call_index).
    pub fn max_tool_call_index(mut self, index: u64) -> Self {
        self.max_tool_call_index = index;
        self
    }
}
