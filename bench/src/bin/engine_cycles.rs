//! Enqueue → dequeue (max 1) → complete cycles per second on one thread, on a
//! `fifo` queue with `retention_ms = 0` (the `cycle` rig of the criterion bench).
//!
//! ```text
//! taskset -c 1 cargo run --release -p tqx-bench --bin engine_cycles [-- COUNT [BACKLOG]]
//! ```
//!
//! Runs COUNT cycles (default 5,000,000) five times after a warm-up and prints the
//! median: `cycles_per_s=<n>` and `ns_per_cycle=<x>`, then each run. BACKLOG
//! (default 0) ready tasks are enqueued first and stay in the queue throughout.

use std::time::Instant;

use tqx_bench::{CycleKind, CycleRig};

const RUNS: usize = 5;
const COUNT_DEFAULT: u64 = 5_000_000;

fn main() {
    let count = arg(1, COUNT_DEFAULT);
    if count == 0 {
        usage();
    }
    let backlog = arg(2, 0) as usize;

    let mut rig = CycleRig::new(CycleKind::Fifo, backlog);
    std::hint::black_box(rig.run((count / 10).clamp(1, 500_000)));

    let mut ns_per_cycle: Vec<f64> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        std::hint::black_box(rig.run(count));
        ns_per_cycle.push(start.elapsed().as_nanos() as f64 / count as f64);
    }
    assert_eq!(rig.engine.tasks_count(), backlog, "every cycle forgets its task");

    let runs = ns_per_cycle.clone();
    ns_per_cycle.sort_by(f64::total_cmp);
    let median = ns_per_cycle[RUNS / 2];
    println!("cycles_per_s={:.0}", 1e9 / median);
    println!("ns_per_cycle={median:.1}");
    let runs: Vec<String> = runs.iter().map(|ns| format!("{:.0}", 1e9 / ns)).collect();
    println!("count={count} runs={RUNS} cycles_per_s_each=[{}]", runs.join(", "));
}

fn usage() -> ! {
    eprintln!("usage: engine_cycles [COUNT [BACKLOG]]   (COUNT > 0, default {COUNT_DEFAULT}; BACKLOG default 0)");
    std::process::exit(2);
}

/// Positional argument `n` as a number (`_` separators allowed), or `default`.
fn arg(n: usize, default: u64) -> u64 {
    match std::env::args().nth(n) {
        None => default,
        Some(text) => text.replace('_', "").parse().unwrap_or_else(|_| usage()),
    }
}
