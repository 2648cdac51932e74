//! Helpers shared by the integration tests: splitting a frame, the seed of
//! randomized tests, and proptest strategies for every request and reply.

#![allow(dead_code)] // Each test crate uses a different part of this module.

use std::sync::OnceLock;

use bytes::Bytes;
use tqx_wire::{peek_frame, Header, HEADER_BYTES};

pub mod strategies;

/// This crate's directory, as the test runner says it now (cargo and nextest
/// set `CARGO_MANIFEST_DIR` when they run a test). Not `env!`: builds from
/// clones at different paths share one target directory (tools/env.sh), and
/// cargo reuses a test binary built in another clone, whose compile-time path
/// may no longer exist.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// Splits one whole frame into its header and body, checking that `peek_frame`
/// sees exactly one frame of exactly `frame.len()` bytes and nothing before.
pub fn split_frame(frame: &[u8]) -> (Header, Bytes) {
    for end in 0..HEADER_BYTES.min(frame.len()) {
        assert_eq!(peek_frame(&frame[..end], usize::MAX), Ok(None), "a {end}-byte prefix is not a frame");
    }
    let header = peek_frame(frame, usize::MAX).expect("framing").expect("a whole frame");
    assert_eq!(frame.len(), HEADER_BYTES + header.body_len.get() as usize, "frame length");
    (header, Bytes::copy_from_slice(&frame[HEADER_BYTES..]))
}

/// Cases per property: 256 by default; `PROPTEST_CASES=n` overrides.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(256)
}

/// The seed of this run's random cases: `PROPTEST_RNG_SEED` if set (to replay a
/// failure), otherwise drawn from the clock, once per test process.
pub fn rng_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64
        })
    })
}

/// Every property's configuration. Prints the seed each time: the harness
/// captures each test's output and shows a failing test's, so every failure
/// says how to replay it.
pub fn config() -> proptest::test_runner::Config {
    eprintln!("tqx-wire: replay with PROPTEST_RNG_SEED={} PROPTEST_CASES={}", rng_seed(), cases());
    proptest::test_runner::Config {
        cases: cases(),
        rng_seed: proptest::test_runner::RngSeed::Fixed(rng_seed()),
        // The printed seed is the bug report; no regression files in the tree.
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
