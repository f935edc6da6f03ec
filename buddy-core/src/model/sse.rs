//! A small server-sent-events parser for streamed model answers.
//!
//! Hand-written rather than taken from a crate because the crate used before panicked on a
//! legal leading byte-order mark ("start byte index 1 is not a char boundary") and took
//! quadratic time on one large event (16 MiB: 17 s). This one follows the WHATWG
//! event-stream grammar: a leading BOM is ignored; lines end with `\n`, `\r\n` or `\r`
//! (also when split across chunks); `data:` lines of one event are joined with `\n`;
//! lines starting with `:` are comments; `event:` and `id:` are kept; other fields are
//! ignored. It scans every byte once, so it is linear in the stream's length, and a line
//! or an event longer than the limit, or a line that is not UTF-8, is a typed
//! [`ModelError`], never a panic.
//!
//! One leniency: at a clean end of the stream, an event whose lines all arrived but whose
//! blank terminating line did not is still dispatched; an unterminated last line is
//! dropped, as the grammar says.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::ModelError;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when the event had none).
    pub(crate) event: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
    /// The last `id:` seen so far in the stream, if any.
    #[allow(dead_code)] // part of the event; no model client resumes streams yet
    pub(crate) id: Option<String>,
}

/// The fields of the event being read.
#[derive(Default)]
struct Pending {
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

/// An incremental parser: [`push`](SseParser::push) bytes as they come, take events with
/// [`next_event`](SseParser::next_event), call [`finish`](SseParser::finish) at the end.
pub(crate) struct SseParser {
    /// Bytes of the current, unterminated line.
    buf: Vec<u8>,
    /// How much of `buf` was already searched for a line end.
    scanned: usize,
    /// The last line ended with `\r`: a `\n` right after it belongs to that line end.
    after_cr: bool,
    /// Whether the start of the stream was checked for a BOM.
    bom_checked: bool,
    max: usize,
    pending: Pending,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    /// A parser failing on lines or events longer than `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            scanned: 0,
            after_cr: false,
            bom_checked: false,
            max,
            pending: Pending::default(),
            ready: VecDeque::new(),
        }
    }

    /// Feeds the next bytes of the stream. Events completed by them are queued even when an
    /// error is returned (they come before the fault).
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), ModelError> {
        self.buf.extend_from_slice(chunk);
        if !self.bom_checked {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(());
            }
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            self.bom_checked = true;
        }
        let mut start = 0;
        let mut from = self.scanned;
        let mut result = Ok(());
        while let Some(offset) = self.buf[from..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = from + offset;
            let terminator = self.buf[end];
            let skip = self.after_cr && end == start && terminator == b'\n';
            self.after_cr = terminator == b'\r';
            if !skip {
                result = line(
                    &mut self.pending,
                    &mut self.ready,
                    &self.buf[start..end],
                    self.max,
                );
            }
            start = end + 1;
            from = start;
            if result.is_err() {
                break;
            }
        }
        // Only the unterminated tail is kept: each byte is copied at most once more.
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        result?;
        if self.buf.len() > self.max {
            return Err(too_long(self.max));
        }
        Ok(())
    }

    /// Ends the stream: an event whose lines all arrived is dispatched; an unterminated
    /// last line is dropped.
    pub(crate) fn finish(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        dispatch(&mut self.pending, &mut self.ready);
    }

    /// The next complete event, if any.
    pub(crate) fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }
}

fn too_long(max: usize) -> ModelError {
    ModelError::limit("bytes of one server-sent event or line", max)
}

/// Handles one line (without its terminator).
fn line(
    pending: &mut Pending,
    ready: &mut VecDeque<SseEvent>,
    bytes: &[u8],
    max: usize,
) -> Result<(), ModelError> {
    if bytes.len() > max {
        return Err(too_long(max));
    }
    let text = std::str::from_utf8(bytes).map_err(|error| {
        ModelError::malformed("event stream is not UTF-8", Some(Box::new(error)))
    })?;
    if text.is_empty() {
        dispatch(pending, ready);
        return Ok(());
    }
    if text.starts_with(':') {
        return Ok(());
    }
    let (field, value) = match text.split_once(':') {
        Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
        None => (text, ""),
    };
    match field {
        "data" => {
            if pending.data.len().saturating_add(value.len()) >= max {
                return Err(too_long(max));
            }
            pending.data.push_str(value);
            pending.data.push('\n');
            pending.has_data = true;
        }
        "event" => value.clone_into(&mut pending.event),
        "id" if !value.contains('\0') => pending.last_id = Some(value.to_owned()),
        _ => {}
    }
    Ok(())
}

/// Ends the current event: queues it when it had data, and resets its fields.
fn dispatch(pending: &mut Pending, ready: &mut VecDeque<SseEvent>) {
    let event = std::mem::take(&mut pending.event);
    if !std::mem::take(&mut pending.has_data) {
        return;
    }
    let mut data = std::mem::take(&mut pending.data);
    if data.ends_with('\n') {
        data.pop();
    }
    ready.push_back(SseEvent {
        event: if event.is_empty() {
            "message".to_owned()
        } else {
            event
        },
        data,
        id: pending.last_id.clone(),
    });
}

/// The events of a stream of body chunks; the first error (the body's or the parser's)
/// ends it.
pub(crate) fn events<'a, S>(
    body: S,
    max: usize,
) -> impl Stream<Item = Result<SseEvent, ModelError>> + Send + 'a
where
    S: Stream<Item = Result<Bytes, ModelError>> + Send + 'a,
{
    async_stream::stream! {
        let mut parser = SseParser::new(max);
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    yield Err(error);
                    return;
                }
            };
            let result = parser.push(&chunk);
            while let Some(event) = parser.next_event() {
                yield Ok(event);
            }
            if let Err(error) = result {
                yield Err(error);
                return;
            }
        }
        parser.finish();
        while let Some(event) = parser.next_event() {
            yield Ok(event);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{SseEvent, SseParser};

    fn parse_chunks(chunks: &[&[u8]], max: usize) -> Result<Vec<SseEvent>, String> {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let result = parser.push(chunk);
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
            result.map_err(|e| e.to_string())?;
        }
        parser.finish();
        while let Some(event) = parser.next_event() {
            out.push(event);
        }
        Ok(out)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_bom_comments_and_fields() {
        let stream = b"\xEF\xBB\xBFdata: a\n\ndata: b\r\n\r\ndata: c\r\rdata:d1\ndata:  d2\n\n: comment\nevent: ping\nid: 7\ndata: e\n\nretry: 5\nunknown\n\n";
        let events = parse_chunks(&[stream], 1024).unwrap();
        assert_eq!(data(&events), vec!["a", "b", "c", "d1\n d2", "e"]);
        assert_eq!(events[4].event, "ping");
        assert_eq!(events[4].id.as_deref(), Some("7"));
        assert_eq!(events[0].event, "message");
        // Byte by byte gives the same events, including a BOM and CRLF split apart.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes, 1024).unwrap(), events);
    }

    #[test]
    fn bom_only_at_the_start_and_split() {
        let events = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"], 64).unwrap();
        assert_eq!(data(&events), vec!["x"]);
        // A BOM later is a field name byte, not skipped: the line is an unknown field.
        let events = parse_chunks(&[b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"], 64).unwrap();
        assert_eq!(data(&events), vec!["x"]);
    }

    #[test]
    fn end_of_stream_dispatches_complete_lines_and_drops_a_partial_one() {
        assert_eq!(
            data(&parse_chunks(&[b"data: [DONE]\n"], 64).unwrap()),
            vec!["[DONE]"]
        );
        assert!(parse_chunks(&[b"data: {\"cut"], 64).unwrap().is_empty());
        assert!(parse_chunks(&[b"\xEF\xBB"], 64).unwrap().is_empty());
    }

    #[test]
    fn invalid_utf8_and_long_lines_are_errors() {
        let error = parse_chunks(&[b"data: \xFF\xFE\n\n"], 64).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
        let long = vec![b'a'; 100];
        let error = parse_chunks(&[b"data: ", &long], 64).unwrap_err();
        assert!(error.contains("limit"), "{error}");
        let error = parse_chunks(&[b"data: 0123456789\n".as_slice(); 10], 64).unwrap_err();
        assert!(error.contains("limit"), "{error}");
        // Events before the fault are still delivered.
        let mut parser = SseParser::new(64);
        assert!(parser.push(b"data: ok\n\ndata: \xFF\n").is_err());
        assert_eq!(parser.next_event().map(|e| e.data), Some("ok".into()));
    }

    #[test]
    fn a_large_event_in_small_chunks_is_linear() {
        let mut stream = b"data: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 8 * 1024 * 1024));
        stream.extend_from_slice(b"\n\n");
        // No timing assertion (shared machines): a quadratic parser makes this test take
        // minutes instead of well under a second, which is noticed.
        let chunks: Vec<&[u8]> = stream.chunks(1024).collect();
        let events = parse_chunks(&chunks, 16 * 1024 * 1024).unwrap();
        assert_eq!(events[0].data.len(), 8 * 1024 * 1024);
    }
}
