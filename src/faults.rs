//! Crash and pause hooks for tests, compiled only with the `fault-injection` cargo feature
//! (`./dev test` enables it; release builds have none of this, and the calls compile to nothing).
//!
//! - `TICKERLAKE_FAILPOINT=<name>` aborts the process at that point, exactly like a kill -9;
//! - `TICKERLAKE_PAUSEPOINT=<name>:<secs>` sleeps there once and says so on stderr, so a test can
//!   act mid-run (take the endpoint down, start a second writer);
//! - `TICKERLAKE_FAULTS=ignore-lock` makes `process` skip the writer lock, so tests can force two
//!   writers past it and check that the conditional commit alone keeps the lake correct;
//!   `lose-commit-answer` makes a commit that landed report a transient failure (its answer
//!   lost), and `fail-commit-recheck` makes reading the manifest back after a failed commit fail
//!   too, so tests can drive the commit protocol's ambiguous cases (see `lake::commit`).

/// Abort or pause here if the environment asks for it.
#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::time::Duration;
    if std::env::var("TICKERLAKE_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
    static PAUSED: std::sync::Once = std::sync::Once::new();
    let secs = std::env::var("TICKERLAKE_PAUSEPOINT").ok().and_then(|v| v.strip_prefix(&format!("{name}:")).and_then(|s| s.parse().ok()));
    if let Some(secs) = secs {
        PAUSED.call_once(|| {
            eprintln!("pausepoint {name}: sleeping {secs} s");
            // Pause this step only: a plain sleep would also freeze the tasks queued on this
            // worker (in-flight uploads among them) for the whole pause.
            crate::blocking::in_place(|| std::thread::sleep(Duration::from_secs(secs)));
        });
    }
}

/// Abort or pause here if the environment asks for it (no-op: built without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Whether the environment enables the named fault (`TICKERLAKE_FAULTS`, comma-separated).
#[cfg(feature = "fault-injection")]
pub fn enabled(fault: &str) -> bool {
    std::env::var("TICKERLAKE_FAULTS").is_ok_and(|v| v.split(',').any(|f| f.trim() == fault))
}

/// Whether the environment enables the named fault (never: built without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn enabled(_fault: &str) -> bool {
    false
}
