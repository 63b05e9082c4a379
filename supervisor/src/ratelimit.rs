//! Rate limits for the daemon's own log records that someone other than an
//! admin can cause at will: refused control requests, refused notify
//! datagrams, failed accepts. Past a burst per window the records are
//! counted instead of written, and one summary ("N more suppressed") says
//! how many, so a flood can neither fill the disk nor bury the audit trail.
//!
//! Pure: the time comes in as an argument, and the caller writes the records
//! and the summaries. It must never hold more than [`Windows::cap`] windows,
//! whoever floods.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most `burst` records per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u32,
    pub per: Duration,
}

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, after a summary of the `suppressed` records of the previous
    /// window if that is not zero (and not summarized yet).
    Log { suppressed: u64 },
    /// Count it. `first` is true for the first one of its window: a good
    /// moment to arrange for the summary.
    Suppress { first: bool },
}

/// One fixed window of a limit.
#[derive(Debug, Default, Clone)]
pub struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Window {
    pub fn check(&mut self, limit: Limit, now: Instant) -> Verdict {
        if self.ended(limit, now) {
            let suppressed = std::mem::take(&mut self.suppressed);
            self.start = Some(now);
            self.logged = 1;
            return Verdict::Log { suppressed };
        }
        if self.logged < limit.burst {
            self.logged += 1;
            return Verdict::Log { suppressed: 0 };
        }
        self.suppressed += 1;
        Verdict::Suppress {
            first: self.suppressed == 1,
        }
    }

    /// When the summary of this window's suppressed records is due: the end
    /// of the window, if any were suppressed.
    pub fn summary_due(&self, limit: Limit) -> Option<Instant> {
        (self.suppressed > 0).then_some(self.start? + limit.per)
    }

    /// The suppressed count once the window has ended (then zero until more
    /// are suppressed); zero before.
    pub fn take_summary(&mut self, limit: Limit, now: Instant) -> u64 {
        if self.ended(limit, now) {
            std::mem::take(&mut self.suppressed)
        } else {
            0
        }
    }

    fn ended(&self, limit: Limit, now: Instant) -> bool {
        self.start
            .is_none_or(|start| now.saturating_duration_since(start) >= limit.per)
    }

    /// Ended with nothing left to summarize: forgetting it loses nothing.
    fn idle(&self, limit: Limit, now: Instant) -> bool {
        self.ended(limit, now) && self.suppressed == 0
    }
}

/// One window per key (a uid, say), at most `cap` of them; keys beyond that
/// share one overflow window, so the map stays small whoever floods.
#[derive(Debug)]
pub struct Windows<K> {
    limit: Limit,
    cap: usize,
    by_key: HashMap<K, Window>,
    overflow: Window,
}

impl<K: Hash + Eq + Copy> Windows<K> {
    pub fn new(limit: Limit, cap: usize) -> Windows<K> {
        Windows {
            limit,
            cap,
            by_key: HashMap::new(),
            overflow: Window::default(),
        }
    }

    /// The most keys with a window of their own.
    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn check(&mut self, key: K, now: Instant) -> Verdict {
        let limit = self.limit;
        if !self.by_key.contains_key(&key) && self.by_key.len() >= self.cap {
            self.by_key.retain(|_, window| !window.idle(limit, now));
        }
        if self.by_key.contains_key(&key) || self.by_key.len() < self.cap {
            self.by_key.entry(key).or_default().check(limit, now)
        } else {
            self.overflow.check(limit, now)
        }
    }

    /// The earliest summary due, if any.
    pub fn summary_due(&self) -> Option<Instant> {
        self.by_key
            .values()
            .chain(std::iter::once(&self.overflow))
            .filter_map(|window| window.summary_due(self.limit))
            .min()
    }

    /// The summaries due by `now`: `(Some(key), n)`, or `(None, n)` for the
    /// overflow window.
    pub fn take_summaries(&mut self, now: Instant) -> Vec<(Option<K>, u64)> {
        let limit = self.limit;
        let mut due: Vec<(Option<K>, u64)> = self
            .by_key
            .iter_mut()
            .map(|(key, window)| (Some(*key), window.take_summary(limit, now)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let overflow = self.overflow.take_summary(limit, now);
        if overflow > 0 {
            due.push((None, overflow));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        burst: 3,
        per: Duration::from_secs(10),
    };

    #[test]
    fn a_window_logs_its_burst_then_counts() {
        let t0 = Instant::now();
        let mut window = Window::default();
        let verdicts: Vec<Verdict> = (0..6).map(|_| window.check(LIMIT, t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Log { suppressed: 0 },
                Verdict::Log { suppressed: 0 },
                Verdict::Log { suppressed: 0 },
                Verdict::Suppress { first: true },
                Verdict::Suppress { first: false },
                Verdict::Suppress { first: false },
            ]
        );
        assert_eq!(window.summary_due(LIMIT), Some(t0 + LIMIT.per));
        // Not before the window ends.
        assert_eq!(window.take_summary(LIMIT, t0 + Duration::from_secs(9)), 0);
        // The next window's first record carries the count if nobody took it.
        assert_eq!(
            window.check(LIMIT, t0 + LIMIT.per),
            Verdict::Log { suppressed: 3 }
        );
        assert_eq!(window.summary_due(LIMIT), None);
    }

    #[test]
    fn a_summary_is_taken_once() {
        let t0 = Instant::now();
        let mut window = Window::default();
        for _ in 0..10 {
            window.check(LIMIT, t0);
        }
        let later = t0 + LIMIT.per;
        assert_eq!(window.take_summary(LIMIT, later), 7);
        assert_eq!(window.take_summary(LIMIT, later), 0);
        assert_eq!(window.check(LIMIT, later), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn keys_have_their_own_windows_up_to_the_cap() {
        let t0 = Instant::now();
        let mut windows: Windows<u32> = Windows::new(LIMIT, 2);
        for _ in 0..5 {
            windows.check(1000, t0);
        }
        // Another user's records are not drowned by the flood of uid 1000.
        assert_eq!(windows.check(1001, t0), Verdict::Log { suppressed: 0 });
        // Past the cap, new keys share the overflow window.
        for _ in 0..3 {
            assert!(matches!(windows.check(7, t0), Verdict::Log { .. }));
        }
        assert!(matches!(windows.check(8, t0), Verdict::Suppress { .. }));
        assert_eq!(windows.by_key.len(), 2);
        assert_eq!(windows.summary_due(), Some(t0 + LIMIT.per));
        let mut summaries = windows.take_summaries(t0 + LIMIT.per);
        summaries.sort();
        assert_eq!(summaries, [(None, 1), (Some(1000), 2)]);
        // Idle windows make room for new keys.
        let later = t0 + 2 * LIMIT.per;
        assert_eq!(windows.check(9, later), Verdict::Log { suppressed: 0 });
        assert!(windows.by_key.contains_key(&9));
    }
}
