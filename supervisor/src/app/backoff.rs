//! Failed starts: which exits count as one, and the delay before the next
//! try (doubling from `initial`, capped at `max`, with jitter).
//!
//! Pure arithmetic; it must never panic or overflow, whatever the count.

use std::time::Duration;

use super::ExitStatus;
use crate::config::RestartSpec;

/// An instance that crashes sooner than this after becoming ready (or
/// `start_secs` after, if that is longer) failed to start: the release
/// served a moment and died, and a respawn at once would only repeat that.
/// systemd's default `StartLimitIntervalSec` is the same 10 s.
pub const STABLE_AFTER_READY: Duration = Duration::from_secs(10);

/// Why an exit of the main process counts as a failed start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStart {
    /// It was not ready yet.
    NotReady,
    /// It lived less than `restart.start_secs`.
    TooShort,
    /// It crashed (a status other than 0, or a signal) within `window` of
    /// becoming ready.
    CrashedSoonAfterReady { window: Duration },
}

/// Whether an exit with `status`, `uptime` after the spawn, is a failed
/// start; `ready_for` is how long the instance had been ready (`None`:
/// never). A clean exit (status 0) after `start_secs` is the app's own
/// decision, not a crash, and never counts for having been ready only
/// briefly.
pub fn counts_as_failed_start(
    restart: &RestartSpec,
    status: ExitStatus,
    uptime: Duration,
    ready_for: Option<Duration>,
) -> Option<FailedStart> {
    let Some(ready_for) = ready_for else {
        return Some(FailedStart::NotReady);
    };
    if uptime < restart.start_secs {
        return Some(FailedStart::TooShort);
    }
    let window = restart.start_secs.max(STABLE_AFTER_READY);
    let crashed = status != ExitStatus::Code(0);
    (crashed && ready_for < window).then_some(FailedStart::CrashedSoonAfterReady { window })
}

/// The delay before the next try after `failures` failed starts in a row:
/// `initial * 2^(failures - 1)`, capped at `max`. `failures` 0 and 1 both
/// give `initial` (capped); a product too large to represent gives `max`.
pub fn backoff_delay(failures: u32, initial: Duration, max: Duration) -> Duration {
    if initial.is_zero() {
        return Duration::ZERO;
    }
    let doublings = failures.saturating_sub(1);
    2u32.checked_pow(doublings)
        .and_then(|factor| initial.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

/// `delay` shortened by up to a quarter, in whole milliseconds, by the
/// next value of the generator `rng` (xorshift64*, advanced in place), so
/// that apps failing together do not retry together, and `max` stays the
/// longest wait. An `rng` of 0 stays 0 and leaves `delay` as it is.
pub fn jittered(delay: Duration, rng: &mut u64) -> Duration {
    if *rng == 0 {
        return delay;
    }
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    let fraction = u128::from(x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32);
    let millis = delay.as_millis();
    let cut = ((millis * fraction) >> 32) / 4;
    let kept = u64::try_from(millis - cut).unwrap_or(u64::MAX);
    Duration::from_millis(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RestartPolicy, RestartStrategy};

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_from_initial_and_caps_at_max() {
        let got: Vec<u64> = (1..=9)
            .map(|failures| backoff_delay(failures, S(1), S(60)).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn edge_cases() {
        let cases = [
            // (failures, initial, max, expected)
            (0, S(1), S(60), S(1)),
            (1, S(5), S(3), S(3)),
            (
                1,
                Duration::from_millis(250),
                S(60),
                Duration::from_millis(250),
            ),
            (3, Duration::from_millis(250), S(60), S(1)),
            (1, Duration::ZERO, S(60), Duration::ZERO),
            (40, Duration::ZERO, S(60), Duration::ZERO),
            (32, S(1), S(60), S(60)),
            (33, S(1), S(60), S(60)),
            (u32::MAX, S(1), S(60), S(60)),
            (31, Duration::MAX, Duration::MAX, Duration::MAX),
            (20, S(1), Duration::MAX, S(1 << 19)),
        ];
        for (failures, initial, max, expected) in cases {
            assert_eq!(
                backoff_delay(failures, initial, max),
                expected,
                "backoff_delay({failures}, {initial:?}, {max:?})"
            );
        }
    }

    fn restart(start_secs: Duration) -> RestartSpec {
        RestartSpec {
            policy: RestartPolicy::Always,
            start_secs,
            max_retries: 0,
            backoff_initial: S(1),
            backoff_max: S(60),
            strategy: RestartStrategy::StopStart,
        }
    }

    #[test]
    fn which_exits_are_failed_starts() {
        use ExitStatus::{Code, MemoryLimit, Signal};
        use FailedStart::*;
        let soon = |secs| Some(CrashedSoonAfterReady { window: S(secs) });
        #[rustfmt::skip]
        let cases = [
            // (start_secs, status, uptime, ready for, counts as)
            (S(1), Code(1), MS(300), None, Some(NotReady)),
            (S(1), Code(1), S(90), None, Some(NotReady)),             // readiness timeout
            (S(1), Code(0), MS(300), None, Some(NotReady)),
            (S(5), Code(1), S(3), Some(S(2)), Some(TooShort)),        // ready before start_secs
            (S(5), Code(0), S(3), Some(S(2)), Some(TooShort)),
            (S(1), Code(1), S(3), Some(S(2)), soon(10)),              // the broken-release loop
            (S(1), Signal(11), S(12), Some(MS(9_999)), soon(10)),
            (S(1), MemoryLimit { limit: 1 << 29 }, S(5), Some(S(4)), soon(10)),
            (S(0), Signal(9), MS(10), Some(MS(10)), soon(10)),        // start_secs 0: the window still holds
            (S(30), Code(2), S(45), Some(S(20)), soon(30)),           // start_secs longer than 10s
            (S(30), Code(2), S(55), Some(S(30)), None),
            (S(1), Code(1), S(12), Some(S(10)), None),                // ready long enough: a crash
            (S(1), Signal(11), S(3_600), Some(S(3_590)), None),
            (S(1), Code(0), S(3), Some(S(2)), None),                  // a clean exit is the app's decision
            (S(0), Code(0), MS(10), Some(MS(10)), None),
        ];
        for (start_secs, status, uptime, ready_for, expected) in cases {
            assert_eq!(
                counts_as_failed_start(&restart(start_secs), status, uptime, ready_for),
                expected,
                "start_secs {start_secs:?}, {status:?} after {uptime:?}, ready for {ready_for:?}"
            );
        }
    }

    #[test]
    fn jitter_shortens_by_at_most_a_quarter_and_spreads_apps_apart() {
        let mut none = 0;
        assert_eq!(jittered(S(8), &mut none), S(8));
        assert_eq!(none, 0, "a zero generator stays zero");
        // 100 apps, each its own seed, all failing at once: their first
        // retries land in [0.75 s, 1 s], spread out, and so do the capped
        // ones in [45 s, 60 s].
        for delay in [S(1), S(60)] {
            let mut seeds: Vec<u64> = (1..=100u64)
                .map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
                .collect();
            let got: Vec<Duration> = seeds.iter_mut().map(|rng| jittered(delay, rng)).collect();
            assert!(
                got.iter().all(|d| *d <= delay && *d >= delay * 3 / 4),
                "{delay:?}: {got:?}"
            );
            // Lock-step would put all 100 in one slot of a hundredth of
            // the delay; spread evenly, a slot holds about 4.
            let slot = delay.as_millis() / 100;
            let mut slots = std::collections::HashMap::new();
            for d in &got {
                *slots.entry(d.as_millis() / slot).or_insert(0) += 1;
            }
            let crowded = slots.values().max().copied().unwrap_or(0);
            assert!(
                crowded <= 15,
                "{delay:?}: {crowded} apps retry together: {got:?}"
            );
            let spread = *got.iter().max().unwrap() - *got.iter().min().unwrap();
            assert!(spread >= delay / 5, "{delay:?}: spread {spread:?}");
        }
        // One app's successive delays differ too, and the generator moves.
        let mut rng = 0x5eed;
        let runs: Vec<Duration> = (0..5).map(|_| jittered(S(4), &mut rng)).collect();
        let distinct: std::collections::HashSet<_> = runs.iter().collect();
        assert!(distinct.len() >= 4, "{runs:?}");
        assert_ne!(rng, 0x5eed);
        // Never longer, never a panic, in whole milliseconds.
        for delay in [
            Duration::ZERO,
            MS(1),
            MS(3),
            Duration::from_nanos(1_500_000),
            Duration::MAX,
        ] {
            let mut rng = 42;
            let d = jittered(delay, &mut rng);
            assert!(d <= delay, "{delay:?} -> {d:?}");
            assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{delay:?} -> {d:?}");
        }
    }
}
