//! A test kit for code that uses models, agents and storage (cargo feature `testing`).
//!
//! - [`ScriptedModel`]: a [`Model`](crate::model::Model) that answers from a queue of
//!   scripted replies and records every request;
//! - [`FunctionModel`]: a model that answers with a closure;
//! - [`TestServer`]: a loopback HTTP server speaking OpenAI's chat-completions wire format,
//!   scripted per test with canned JSON, SSE streams, status codes, delays and cut-off
//!   streams, raw byte bodies split into chosen reads, endless and stalled bodies and
//!   redirects, recording the requests it receives. Point
//!   [`OpenAIChat::base_url`](crate::model::OpenAIChat::base_url) at
//!   [`TestServer::base_url`];
//! - [`FaultyStorage`]: a [`Storage`](crate::storage::Storage) wrapper that counts
//!   operations and fails or delays them on demand, for tests of what happens when the
//!   database misbehaves;
//! - [`CrashTest`]: runs a program in a child process, stops it at a fault point of a
//!   durable run ([`FAULT_POINTS`]) and kills it with SIGKILL, for tests that a workflow
//!   resumes after a crash without repeating what it finished.

mod crash;
mod scripted;
mod server;
mod storage;

pub mod openai;

pub use crash::{CrashTest, FAULT_POINTS, Outcome};
pub use scripted::{FunctionModel, Reply, ScriptedModel};
pub use server::{Canned, RecordedRequest, TestServer};
pub use storage::{FaultyStorage, InjectedFault, Operation};
