//! The deterministic simulator (docs/simulation.md) in CI: many seeds of the
//! real core under crashes, torn writes, sync failures, bit flips, clock
//! jumps, pipelining, slow readers and disconnects; a seed replays exactly;
//! and a planted bug is found. `SIMULATION_SEEDS` (default 200) sets how
//! many seeds run; a failing seed prints the command that replays it.

use taskqueuex::sim::{run, Options, Plant};

const STEPS: u64 = 2_000;

fn seeds_count() -> u64 {
    std::env::var("SIMULATION_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

#[test]
fn every_seed_keeps_what_clients_were_shown_across_crashes() {
    let mut failures = Vec::new();
    let mut crashes = 0;
    let mut replies = 0;
    for seed in 0..seeds_count() {
        match run(Options { seed, steps: STEPS, plant: None }) {
            Ok(report) => {
                crashes += report.crashes;
                replies += report.replies;
            }
            Err(failure) => failures.push(failure.to_string()),
        }
    }
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
    // The runs did what they are for: replies were released, and servers crashed.
    assert!(crashes > seeds_count() && replies > 100 * seeds_count(), "crashes {crashes}, replies {replies}");
}

#[test]
fn a_seed_replays_the_same_trace() {
    for seed in [0, 7, 12_345] {
        let first = run(Options { seed, steps: STEPS, plant: None }).unwrap();
        let second = run(Options { seed, steps: STEPS, plant: None }).unwrap();
        assert_eq!(first, second, "seed {seed} gave two different runs");
    }
    let a = run(Options { seed: 1, steps: STEPS, plant: None }).unwrap();
    let b = run(Options { seed: 2, steps: STEPS, plant: None }).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash, "the trace hash does not depend on the run");
}

#[test]
fn a_reply_released_one_record_early_is_caught_within_the_ci_seeds() {
    let plant = Some(Plant::ReleaseOneRecordEarly);
    let caught = (0..seeds_count()).find_map(|seed| run(Options { seed, steps: STEPS, plant }).err());
    let failure = caught.expect("the planted bug went unnoticed in every seed");
    let message = failure.to_string();
    assert!(message.contains("gone after a restart") || message.contains("after a restart"), "{message}");
    assert!(message.contains("--plant release-one-record-early"), "the replay command plants it too: {message}");
}
