//! Seeded, order-independent pseudo-randomness for retry jitter, and keyed lease
//! tokens.
//!
//! Both are pure functions of their inputs rather than draws from a stateful
//! generator, so a result never depends on the order in which the engine happened
//! to process unrelated tasks. That keeps replays (of a log, or of a simulation
//! seed) exact.
//!
//! **Lease tokens are a keyed pseudo-random function** (SipHash-2-4) of the
//! engine's seed, the task id and the attempt, under a 128-bit secret
//! ([`LeaseKey`]) that the engine receives with its configuration. They used to be
//! an invertible mix of (seed, id, attempt): one legitimate token gave away the
//! seed, and with it every other client's tokens (issue 15, item 7). With a PRF,
//! tokens of other leases are unpredictable without the key, and the key never
//! leaves the server (not in the log, not in the checkpoint store, not in any
//! reply). The seed stays an input so that a data directory whose log was wiped
//! and restarted (a new seed, ids from 1 again) does not reissue old tokens.
//!
//! **Retry jitter keeps using the seed alone**: it is not a secret (backoffs are
//! observable anyway), and knowing it gives nothing towards a token.

use super::types::{LeaseKey, LeaseToken, TaskId};

/// The splitmix64 finaliser: a bijection on u64 with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
const JITTER_SALT: u64 = 0x6a09_e667_f3bc_c908;

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `message` under `key`: a keyed
/// pseudo-random function with a 64-bit output. Written out here (30 lines,
/// checked against the reference vectors below) rather than taken from std,
/// whose `SipHasher` is deprecated and whose `DefaultHasher` promises no
/// particular algorithm across Rust releases — a token must stay the same
/// across a restart with a newer binary.
pub(crate) fn siphash24(key: &[u8; 16], message: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]);
    let k1 = u64::from_le_bytes([key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15]]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut compress = |m: u64| {
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    };
    let mut blocks = message.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        compress(u64::from_le_bytes(word));
    }
    let mut last = [0u8; 8];
    let tail = blocks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    // The final block carries the message length mod 256 in its top byte.
    last[7] = message.len() as u8;
    compress(u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The token of lease number `attempt` on task `id`: SipHash-2-4 under `key` of
/// (seed, id, attempt), each little-endian. Distinct attempts of one task are
/// distinct inputs, so a stale holder presents the current token only with
/// probability 2^-64.
pub(crate) fn lease_token(key: &LeaseKey, seed: u64, id: TaskId, attempt: u32) -> LeaseToken {
    let mut message = [0u8; 20];
    message[..8].copy_from_slice(&seed.to_le_bytes());
    message[8..16].copy_from_slice(&id.to_le_bytes());
    message[16..].copy_from_slice(&attempt.to_le_bytes());
    siphash24(&key.0, &message)
}

/// Whether two tokens are equal, in time independent of where they differ: the
/// difference is folded to one bit without a data-dependent branch, and
/// `black_box` keeps the compiler from turning it back into an early exit. (A
/// 64-bit compare is one instruction on the machines we run on anyway; this
/// makes the intent explicit and survives a wider token.)
pub(crate) fn tokens_equal(a: LeaseToken, b: LeaseToken) -> bool {
    let diff = std::hint::black_box(a ^ b);
    // The top bit of `diff | -diff` is set iff `diff != 0`.
    ((diff | diff.wrapping_neg()) >> 63) == 0
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

    /// The 64 SipHash-2-4 vectors of the reference implementation (`vectors.h`
    /// in github.com/veorq/SipHash): key 00 01 .. 0f, message 00 01 .. (n-1).
    const SIPHASH24_VECTORS: [u64; 64] = [
        0x726fdb47dd0e0e31,
        0x74f839c593dc67fd,
        0x0d6c8009d9a94f5a,
        0x85676696d7fb7e2d,
        0xcf2794e0277187b7,
        0x18765564cd99a68d,
        0xcbc9466e58fee3ce,
        0xab0200f58b01d137,
        0x93f5f5799a932462,
        0x9e0082df0ba9e4b0,
        0x7a5dbbc594ddb9f3,
        0xf4b32f46226bada7,
        0x751e8fbc860ee5fb,
        0x14ea5627c0843d90,
        0xf723ca908e7af2ee,
        0xa129ca6149be45e5,
        0x3f2acc7f57c29bdb,
        0x699ae9f52cbe4794,
        0x4bc1b3f0968dd39c,
        0xbb6dc91da77961bd,
        0xbed65cf21aa2ee98,
        0xd0f2cbb02e3b67c7,
        0x93536795e3a33e88,
        0xa80c038ccd5ccec8,
        0xb8ad50c6f649af94,
        0xbce192de8a85b8ea,
        0x17d835b85bbb15f3,
        0x2f2e6163076bcfad,
        0xde4daaaca71dc9a5,
        0xa6a2506687956571,
        0xad87a3535c49ef28,
        0x32d892fad841c342,
        0x7127512f72f27cce,
        0xa7f32346f95978e3,
        0x12e0b01abb051238,
        0x15e034d40fa197ae,
        0x314dffbe0815a3b4,
        0x027990f029623981,
        0xcadcd4e59ef40c4d,
        0x9abfd8766a33735c,
        0x0e3ea96b5304a7d0,
        0xad0c42d6fc585992,
        0x187306c89bc215a9,
        0xd4a60abcf3792b95,
        0xf935451de4f21df2,
        0xa9538f0419755787,
        0xdb9acddff56ca510,
        0xd06c98cd5c0975eb,
        0xe612a3cb9ecba951,
        0xc766e62cfcadaf96,
        0xee64435a9752fe72,
        0xa192d576b245165a,
        0x0a8787bf8ecb74b2,
        0x81b3e73d20b49b6f,
        0x7fa8220ba3b2ecea,
        0x245731c13ca42499,
        0xb78dbfaf3a8d83bd,
        0xea1ad565322a1a0b,
        0x60e61c23a3795013,
        0x6606d7e446282b93,
        0x6ca4ecb15c5f91e1,
        0x9f626da15c9625f3,
        0xe51b38608ef25f57,
        0x958a324ceb064572,
    ];

    #[test]
    fn siphash24_matches_the_reference_vectors() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..64).collect();
        for (len, expected) in SIPHASH24_VECTORS.iter().enumerate() {
            assert_eq!(siphash24(&key, &message[..len]), *expected, "message of {len} bytes");
        }
    }

    #[test]
    fn lease_tokens_differ_between_attempts_of_one_task() {
        let key = LeaseKey([7; 16]);
        let tokens: std::collections::BTreeSet<_> = (0..1000).map(|a| lease_token(&key, 9, 42, a)).collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn lease_tokens_depend_on_every_input_and_are_repeatable() {
        let key = LeaseKey(std::array::from_fn(|i| i as u8));
        let token = lease_token(&key, 1, 2, 3);
        assert_eq!(token, lease_token(&key, 1, 2, 3));
        let mut other_key = key;
        other_key.0[15] ^= 1;
        for different in [
            lease_token(&other_key, 1, 2, 3),
            lease_token(&key, 0, 2, 3),
            lease_token(&key, 1, 3, 3),
            lease_token(&key, 1, 2, 4),
        ] {
            assert_ne!(token, different);
        }
    }

    /// The old scheme's weakness: `mix64` is a bijection, so from one token and
    /// its (id, attempt) anyone could compute the seed, then every other token.
    /// With the key unknown, a token of the same (seed, id, attempt) under the
    /// old formula is not the token.
    #[test]
    fn a_lease_token_is_not_the_old_invertible_mix() {
        let key = LeaseKey([0x5a; 16]);
        for id in 1..100u64 {
            let old = mix64(9 ^ id.wrapping_mul(GOLDEN_GAMMA) ^ 1);
            assert_ne!(lease_token(&key, 9, id, 1), old);
        }
    }

    #[test]
    fn token_comparison_is_exact_for_every_single_bit_difference() {
        for token in [0u64, 1, u64::MAX, 0x8000_0000_0000_0000, 0x0123_4567_89ab_cdef] {
            assert!(tokens_equal(token, token));
            for bit in 0..64 {
                assert!(!tokens_equal(token, token ^ (1 << bit)), "{token:#x} bit {bit}");
            }
            assert!(!tokens_equal(token, !token));
        }
    }
}
