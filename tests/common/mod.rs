//! Test doubles shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use buddy::prelude::*;
use buddy::storage::MemoryStorage;
use buddy_core::testing::FaultyStorage;

/// A member that remembers what the workflow handed it.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub debug_mode: bool,
    pub path: Vec<String>,
    pub attached: usize,
}

impl Member for Recorder {
    fn attach(&mut self, context: &MemberContext) {
        self.session_id = Some(context.session_id.clone());
        self.user_id.clone_from(&context.user_id);
        self.debug_mode = context.debug_mode;
        self.path.clone_from(&context.path);
        self.attached += 1;
    }
}

/// A stand-in named like the real agent type, to check registration by type name.
#[derive(Clone, Debug, Default)]
pub struct Agent {
    pub session_id: Option<String>,
}

impl Member for Agent {
    fn attach(&mut self, context: &MemberContext) {
        self.session_id = Some(context.session_id.clone());
    }
}

/// Storage whose reads succeed and whose every commit fails (as if the database went away).
pub fn failing_storage() -> FaultyStorage {
    FaultyStorage::new(MemoryStorage::new()).fail_commits_from(1)
}

/// Polls `check` until it holds or a generous deadline passes (for background writes).
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}
