use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

/// A canned HTTP response of a [`TestServer`].
#[derive(Clone, Debug)]
pub struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: CannedBody,
    delay: Option<Duration>,
}

#[derive(Clone, Debug)]
enum CannedBody {
    Bytes(Vec<u8>),
    /// Raw chunks, written as they are (byte-level framing tests).
    Chunks {
        chunks: Vec<Vec<u8>>,
        cut: bool,
        interval: Option<Duration>,
    },
    /// The same chunk forever.
    Endless(Vec<u8>),
    /// A first chunk, then nothing, never ending.
    Stall(Vec<u8>),
    Sse {
        events: Vec<String>,
        done: bool,
        cut: bool,
        interval: Option<Duration>,
    },
}

impl Canned {
    /// A 200 response with `body` as JSON.
    pub fn json(body: Value) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: CannedBody::Bytes(body.to_string().into_bytes()),
            delay: None,
        }
    }

    /// A 200 response with `body` as is (for malformed JSON).
    pub fn raw(body: impl Into<String>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: CannedBody::Bytes(body.into().into_bytes()),
            delay: None,
        }
    }

    /// A 200 response with `body` as raw bytes (invalid UTF-8, byte-order marks, ...).
    pub fn bytes(body: impl Into<Vec<u8>>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: CannedBody::Bytes(body.into()),
            delay: None,
        }
    }

    /// A 200 `text/event-stream` response written as these raw chunks, each flushed on
    /// its own (SSE framing split anywhere, invalid UTF-8, byte-order marks).
    pub fn chunks(chunks: Vec<Vec<u8>>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: CannedBody::Chunks {
                chunks,
                cut: false,
                interval: None,
            },
            delay: None,
        }
    }

    /// A 200 response whose body repeats `chunk` forever (a client must stop reading).
    pub fn endless(chunk: impl Into<Vec<u8>>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: CannedBody::Endless(chunk.into()),
            delay: None,
        }
    }

    /// A 200 response that sends `first` and then nothing more, never ending the body.
    pub fn stall(first: impl Into<Vec<u8>>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: CannedBody::Stall(first.into()),
            delay: None,
        }
    }

    /// A redirect: `status` (301, 302, 307, 308) with a `Location` header.
    pub fn redirect(status: u16, location: &str) -> Self {
        Canned::raw("").status(status).header("location", location)
    }

    /// An error response in OpenAI's shape: `{"error": {"message": ..., "type": ...}}`.
    pub fn error(status: u16, message: &str) -> Self {
        Canned::json(serde_json::json!({
            "error": {"message": message, "type": "invalid_request_error", "code": null}
        }))
        .status(status)
    }

    /// A server-sent-events stream of `chunks` (each sent as one `data:` line), ended with
    /// `data: [DONE]`.
    pub fn sse(chunks: Vec<Value>) -> Self {
        Canned {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: CannedBody::Sse {
                events: chunks.iter().map(Value::to_string).collect(),
                done: true,
                cut: false,
                interval: None,
            },
            delay: None,
        }
    }

    /// An SSE stream of raw `data:` payloads, ended with `[DONE]`.
    pub fn sse_raw(events: Vec<String>) -> Self {
        let mut canned = Canned::sse(Vec::new());
        if let CannedBody::Sse { events: slot, .. } = &mut canned.body {
            *slot = events;
        }
        canned
    }

    /// Sets the status code.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// For SSE and raw chunks: waits `interval` between events (chunks).
    pub fn interval(mut self, interval: Duration) -> Self {
        if let CannedBody::Sse { interval: slot, .. } | CannedBody::Chunks { interval: slot, .. } =
            &mut self.body
        {
            *slot = Some(interval);
        }
        self
    }

    /// For SSE: ends the stream cleanly without `[DONE]`.
    pub fn without_done(mut self) -> Self {
        if let CannedBody::Sse { done, .. } = &mut self.body {
            *done = false;
        }
        self
    }

    /// For SSE and raw chunks: breaks the connection after the events (no `[DONE]`, an
    /// aborted body).
    pub fn cut(mut self) -> Self {
        match &mut self.body {
            CannedBody::Sse { done, cut, .. } => {
                *done = false;
                *cut = true;
            }
            CannedBody::Chunks { cut, .. } => *cut = true,
            _ => {}
        }
        self
    }

    /// Replaces the `content-type` header.
    pub fn content_type(mut self, content_type: &str) -> Self {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.header("content-type", content_type)
    }
}

/// A request the [`TestServer`] received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The path (`/v1/chat/completions`).
    pub path: String,
    /// Headers, names lowercase.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The body as text.
    pub raw_body: String,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

type Responder = dyn Fn(&RecordedRequest) -> Option<Canned> + Send + Sync;

#[derive(Default)]
struct Script {
    queue: VecDeque<Canned>,
    fallback: Option<Canned>,
    responder: Option<Arc<Responder>>,
    requests: Vec<RecordedRequest>,
    record: bool,
}

type Shared = Arc<Mutex<Script>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Script> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A loopback HTTP server that answers from a script of [`Canned`] responses, in order,
/// and records the requests it receives. Stops when dropped.
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::testing::{Canned, TestServer, openai};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = TestServer::start().await;
/// server.push(Canned::json(openai::text_completion("hi")));
/// let url = server.base_url(); // http://127.0.0.1:PORT/v1
/// assert!(url.starts_with("http://127.0.0.1:"));
/// # }
/// ```
pub struct TestServer {
    addr: SocketAddr,
    script: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound (a broken test environment).
    #[allow(clippy::expect_used)] // a test helper: failing to bind loopback is fatal
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("loopback address");
        let script: Shared = Arc::new(Mutex::new(Script {
            record: true,
            ..Script::default()
        }));
        let app = Router::new().fallback(handle).with_state(script.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer { addr, script, task }
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL to give an OpenAI client.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a response for the next request.
    pub fn push(&self, canned: Canned) -> &Self {
        lock(&self.script).queue.push_back(canned);
        self
    }

    /// The response given when the queue is empty (otherwise a 500 error).
    pub fn fallback(&self, canned: Canned) -> &Self {
        lock(&self.script).fallback = Some(canned);
        self
    }

    /// Answers each request with `respond` first (the queue and the fallback answer when it
    /// returns `None`): for requests that arrive in no fixed order, such as those of
    /// concurrent agents, answered by what they ask.
    pub fn respond_with(
        &self,
        respond: impl Fn(&RecordedRequest) -> Option<Canned> + Send + Sync + 'static,
    ) -> &Self {
        lock(&self.script).responder = Some(Arc::new(respond));
        self
    }

    /// Stops (or resumes) recording requests (benchmarks).
    pub fn record_requests(&self, record: bool) -> &Self {
        lock(&self.script).record = record;
        self
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.script).requests.clone()
    }

    /// How many scripted responses are left.
    pub fn remaining(&self) -> usize {
        lock(&self.script).queue.len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(script): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let canned = {
        let mut script = lock(&script);
        let recorded = (script.record || script.responder.is_some()).then(|| {
            let raw_body = String::from_utf8_lossy(&body).into_owned();
            RecordedRequest {
                method: method.to_string(),
                path: uri.path().to_owned(),
                headers: headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: serde_json::from_str(&raw_body).unwrap_or(Value::Null),
                raw_body,
            }
        });
        let answered = match (&script.responder, &recorded) {
            (Some(respond), Some(request)) => respond(request),
            _ => None,
        };
        if script.record
            && let Some(request) = recorded
        {
            script.requests.push(request);
        }
        answered.or_else(|| script.queue.pop_front().or_else(|| script.fallback.clone()))
    };
    let canned =
        canned.unwrap_or_else(|| Canned::error(500, "test server has no scripted response"));
    if let Some(delay) = canned.delay {
        tokio::time::sleep(delay).await;
    }
    let body = match canned.body {
        CannedBody::Bytes(bytes) => Body::from(bytes),
        CannedBody::Chunks {
            chunks,
            cut,
            interval,
        } => Body::from_stream(async_stream::stream! {
            for chunk in chunks {
                if let Some(interval) = interval {
                    tokio::time::sleep(interval).await;
                }
                yield Ok::<_, std::io::Error>(Bytes::from(chunk));
            }
            if cut {
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(std::io::Error::other("connection cut by the test server"));
            }
        }),
        CannedBody::Endless(chunk) => {
            let chunk = Bytes::from(chunk);
            Body::from_stream(futures::stream::repeat_with(move || {
                Ok::<_, std::io::Error>(chunk.clone())
            }))
        }
        CannedBody::Stall(first) => Body::from_stream(async_stream::stream! {
            yield Ok::<_, std::io::Error>(Bytes::from(first));
            std::future::pending::<()>().await;
        }),
        CannedBody::Sse {
            events,
            done,
            cut,
            interval,
        } => Body::from_stream(async_stream::stream! {
            for event in events {
                if let Some(interval) = interval {
                    tokio::time::sleep(interval).await;
                }
                yield Ok::<_, std::io::Error>(Bytes::from(format!("data: {event}\n\n")));
            }
            if done {
                yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            if cut {
                // Let the server flush what was sent, so the client sees the events first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                yield Err(std::io::Error::other("connection cut by the test server"));
            }
        }),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap_or(StatusCode::OK);
    for (name, value) in canned.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
