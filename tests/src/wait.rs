//! Retry-until assertions with a deadline, in the manner of linkerd's
//! test helpers: poll a condition, and fail with what was awaited.
//!
//! Never waits without a deadline.

use std::thread;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` every [`POLL`] until it holds (true) or `deadline` has
/// passed (false). `cond` runs at least once, and once more at the end.
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Like [`poll_until`], and panics with "timed out after Ns waiting for
/// {what}" when the deadline passes.
pub fn wait_until(deadline: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !poll_until(deadline, cond) {
        panic!("timed out after {deadline:?} waiting for {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        let start = Instant::now();
        assert!(poll_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!poll_until(Duration::from_millis(200), || false));
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    #[should_panic(expected = "timed out after 100ms waiting for the moon")]
    fn names_what_it_waited_for() {
        wait_until(Duration::from_millis(100), "the moon", || false);
    }
}
