//! Language models: messages and tool calls (the `Model` trait and clients build on these).

mod message;

pub use message::{Message, Role, ToolCall};
