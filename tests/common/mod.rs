//! Test doubles shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use buddy::prelude::*;
use buddy::run::RunRecord;
use buddy::session::{Session, SessionKey, SessionQuery, SessionWrite};
use buddy::storage::{ReadOptions, StorageResult};
use buddy::{Storage, StorageError, storage::MemoryStorage};

/// A member that remembers what the workflow handed it.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub attached: usize,
}

impl Member for Recorder {
    fn attach(&mut self, context: &MemberContext<'_>) {
        self.session_id = Some(context.session_id.to_owned());
        self.user_id = context.user_id.map(str::to_owned);
        self.attached += 1;
    }
}

/// A stand-in named like the real agent type, to check registration by type name.
#[derive(Clone, Debug, Default)]
pub struct Agent {
    pub session_id: Option<String>,
}

impl Member for Agent {
    fn attach(&mut self, context: &MemberContext<'_>) {
        self.session_id = Some(context.session_id.to_owned());
    }
}

/// Storage whose reads succeed and whose writes fail after `ok_commits` successful ones.
#[derive(Debug, Default)]
pub struct FlakyStorage {
    pub inner: MemoryStorage,
    pub ok_commits: usize,
    pub commits: AtomicUsize,
}

impl FlakyStorage {
    pub fn failing() -> Arc<Self> {
        Arc::new(FlakyStorage::default())
    }
}

#[async_trait]
impl Storage for FlakyStorage {
    async fn read(
        &self,
        key: &SessionKey,
        options: &ReadOptions,
    ) -> StorageResult<Option<Session>> {
        self.inner.read(key, options).await
    }
    async fn commit(&self, write: SessionWrite) -> StorageResult<Session> {
        if self.commits.fetch_add(1, Ordering::SeqCst) >= self.ok_commits {
            return Err(StorageError::database(
                "commit",
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "database went away"),
            ));
        }
        self.inner.commit(write).await
    }
    async fn runs(&self, key: &SessionKey, limit: Option<usize>) -> StorageResult<Vec<RunRecord>> {
        self.inner.runs(key, limit).await
    }
    async fn list_sessions(&self, query: &SessionQuery) -> StorageResult<Vec<Session>> {
        self.inner.list_sessions(query).await
    }
    async fn delete_session(&self, key: &SessionKey) -> StorageResult<()> {
        self.inner.delete_session(key).await
    }
    async fn drop_tables(&self) -> StorageResult<()> {
        self.inner.drop_tables().await
    }
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
