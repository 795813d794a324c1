//! Named crash points, for the tests that kill a process between recording an intent and
//! acting on it (docs/runtime-semantics.md, "Record, then act").
//!
//! `HOTARU_CRASH_AT=<name>` makes the process abort, as a `kill -9` would (no destructor,
//! no flush), the first time it reaches the point of that name. Unset, a point costs one
//! read of a cached value. The names are listed in docs/runtime-semantics.md.

use std::sync::OnceLock;

/// Aborts the process here when `HOTARU_CRASH_AT` names this point.
pub fn crash_point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("HOTARU_CRASH_AT")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if at.as_deref() == Some(name) {
        eprintln!("HOTARU_CRASH_AT={name}: aborting the process here");
        std::process::abort();
    }
}
