//! Fault points: named places in a durable run where a test can stop the process to kill it
//! (the test kit's crash harness, `buddy::testing::crash`).
//!
//! A process started with `BUDDY_FAULT_POINT=<point>[:<key>][@<n>]` stops at the `n`-th
//! (default first) time it reaches `point` (for an entry whose key contains `key`, when
//! given): it prints `BUDDY_FAULT_POINT_REACHED <point> <key>` on stderr and sleeps until it
//! is killed. Without the variable a fault point is one load of a static.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable that names the point to stop at.
pub const FAULT_POINT_VAR: &str = "BUDDY_FAULT_POINT";

/// What a stopped process prints on stderr before it sleeps.
pub const FAULT_POINT_MARKER: &str = "BUDDY_FAULT_POINT_REACHED";

struct Target {
    point: String,
    key: Option<String>,
    nth: usize,
    seen: AtomicUsize,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var(FAULT_POINT_VAR).ok()?;
            let (rest, nth) = match spec.rsplit_once('@') {
                Some((rest, nth)) => (rest.to_owned(), nth.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            let (point, key) = match rest.split_once(':') {
                Some((point, key)) => (point.to_owned(), Some(key.to_owned())),
                None => (rest, None),
            };
            Some(Target {
                point,
                key,
                nth,
                seen: AtomicUsize::new(0),
            })
        })
        .as_ref()
}

/// Stops the process here when the fault point variable names this point.
pub(crate) fn point(point: &str, key: &str) {
    let Some(target) = target() else { return };
    if target.point != point || target.key.as_ref().is_some_and(|part| !key.contains(part)) {
        return;
    }
    if target.seen.fetch_add(1, Ordering::SeqCst) + 1 != target.nth {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{FAULT_POINT_MARKER} {point} {key}");
    let _ = stderr.flush();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
