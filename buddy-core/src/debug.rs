//! Debug logging: `debug_mode` on a workflow or agent, or `BUDDY_DEBUG=true`.

use std::sync::OnceLock;

/// Whether `BUDDY_DEBUG` is set to `true` (read once).
pub fn env_debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| {
        std::env::var("BUDDY_DEBUG").is_ok_and(|value| value.eq_ignore_ascii_case("true"))
    })
}

/// Turns on debug output for buddy: if the program has not installed a `tracing`
/// subscriber, installs one that prints buddy's debug events to stderr. A program that has
/// its own subscriber keeps it (and its filter) untouched.
pub fn enable() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "buddy=debug,buddy_core=debug,buddy_storage=debug,info",
        );
        let installed = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
            .is_ok();
        if installed {
            tracing::debug!("buddy debug logs enabled");
        }
    });
}
