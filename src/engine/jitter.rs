//! Seeded, order-independent pseudo-randomness for retry jitter and lease tokens.
//!
//! Both are pure functions of (engine seed, task id, attempt) rather than draws
//! from a stateful generator, so a result never depends on the order in which the
//! engine happened to process unrelated tasks. That keeps replays (of a log, or of
//! a simulation seed) exact.

use super::types::{LeaseToken, TaskId};

/// The splitmix64 finaliser: a bijection on u64 with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
const JITTER_SALT: u64 = 0x6a09_e667_f3bc_c908;

/// The token of lease number `attempt` on task `id`. For one task, distinct
/// attempts give distinct inputs to a bijection, hence distinct tokens: a stale
/// holder can never present the current token.
pub(crate) fn lease_token(seed: u64, id: TaskId, attempt: u32) -> LeaseToken {
    mix64(seed ^ id.wrapping_mul(GOLDEN_GAMMA) ^ u64::from(attempt))
}

/// How long a task waits before attempt `failed_attempt + 1`, after attempt
/// `failed_attempt` (1-based) failed.
///
/// `full = min(backoff_max_ms, backoff_ms * 2^(failed_attempt - 1))`, and the wait is
/// drawn uniformly from `[full / 2, full]` ("equal jitter": retries of many tasks
/// that failed together spread out, yet each still waits at least half the
/// nominal backoff). A base of 0 means retry at once.
pub fn backoff_delay_ms(backoff_ms: u64, backoff_max_ms: u64, seed: u64, id: TaskId, failed_attempt: u32) -> u64 {
    if backoff_ms == 0 || backoff_max_ms == 0 {
        return 0;
    }
    let doublings = failed_attempt.saturating_sub(1).min(63);
    let full = backoff_ms.saturating_mul(1u64 << doublings).min(backoff_max_ms);
    let half = full / 2;
    let span = full - half;
    let draw = mix64(seed ^ JITTER_SALT ^ id.wrapping_mul(GOLDEN_GAMMA) ^ (u64::from(failed_attempt) << 40));
    half + draw % (span + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_half_to_full_of_the_capped_exponential() {
        for attempt in 1..=70u32 {
            for id in 0..50u64 {
                let d = backoff_delay_ms(100, 10_000, 7, id, attempt);
                let full = (100u64.saturating_mul(1u64 << (attempt - 1).min(63))).min(10_000);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} not in [{}, {full}]", full / 2);
            }
        }
    }

    #[test]
    fn backoff_is_zero_when_base_is_zero() {
        assert_eq!(backoff_delay_ms(0, 10_000, 1, 1, 5), 0);
    }

    #[test]
    fn backoff_depends_on_the_seed_and_is_repeatable() {
        let a: Vec<u64> = (0..32).map(|id| backoff_delay_ms(1000, 60_000, 1, id, 3)).collect();
        let b: Vec<u64> = (0..32).map(|id| backoff_delay_ms(1000, 60_000, 1, id, 3)).collect();
        let c: Vec<u64> = (0..32).map(|id| backoff_delay_ms(1000, 60_000, 2, id, 3)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Jitter actually spreads the retries out.
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 16);
    }

    #[test]
    fn lease_tokens_differ_between_attempts_of_one_task() {
        let tokens: std::collections::BTreeSet<_> = (0..1000).map(|a| lease_token(9, 42, a)).collect();
        assert_eq!(tokens.len(), 1000);
    }
}
