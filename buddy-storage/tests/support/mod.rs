//! What the backend tests share besides the conformance suite: writers in other processes.

#![allow(clippy::unwrap_used, dead_code)] // Test code: a failed unwrap is a failed test.

pub mod corrupt;

use std::sync::Arc;

use buddy_core::storage::Storage;
use buddy_storage::conformance::{key, run_write};

/// Environment variable that puts a re-executed test binary in writer-child mode.
pub const CHILD_ENV: &str = "BUDDY_STORAGE_TEST_CHILD";

/// The runs a child process writes: `offset..offset + count`.
pub const CHILD_RUNS: usize = 100;

/// Runs the test `child_test` of this test binary in two other processes at once, each with
/// `CHILD_ENV` set to `target` and `BUDDY_STORAGE_TEST_OFFSET` to 0 and `CHILD_RUNS`; returns
/// once both exited successfully.
pub fn run_two_writer_processes(child_test: &str, target: &str) {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = [0, CHILD_RUNS]
        .into_iter()
        .map(|offset| {
            std::process::Command::new(&exe)
                .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, target)
                .env("BUDDY_STORAGE_TEST_OFFSET", offset.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "writer process failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The child must really have run the writer, not skipped it.
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("child wrote"),
            "child did not write: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// In a child process: writes `CHILD_RUNS` runs (from 4 tasks) to session `shared`, starting
/// at the offset the parent chose.
pub async fn child_writes(storage: Arc<dyn Storage>) {
    let offset: usize = std::env::var("BUDDY_STORAGE_TEST_OFFSET")
        .unwrap()
        .parse()
        .unwrap();
    let mut handles = Vec::new();
    for task in 0..4 {
        let storage = storage.clone();
        handles.push(tokio::spawn(async move {
            for n in (offset + task..offset + CHILD_RUNS).step_by(4) {
                storage
                    .commit(run_write("shared", n, &format!("key_{n}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    println!("child wrote {CHILD_RUNS} runs from offset {offset}");
}

/// The key of the shared session the writer processes write.
pub fn shared() -> buddy_core::session::SessionKey {
    key("shared")
}
