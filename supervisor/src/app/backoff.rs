//! The delay between failed starts: doubling from `initial`, capped at `max`.
//!
//! Pure arithmetic; it must never panic or overflow, whatever the count.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

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
}
