//! The cost of a large backlog in the engine: enqueues COUNT tasks (100-byte
//! payloads, one `fifo` queue, change tracking on as in `sync` mode) and times
//! the enqueues, then one `take_changes` (what a checkpoint does under the
//! engine lock), then leasing them all back. Repeats five times on fresh engines
//! and prints the medians, in ns per task.
//!
//! ```text
//! taskset -c 1 cargo run --release -p tqx-bench --bin engine_backlog [-- COUNT]
//! ```

use std::time::Instant;

use taskqueuex::engine::QueueConfigPatch;
use tqx_bench::{engine_with_queue, plain_task, QUEUE};

const RUNS: usize = 5;
const COUNT_DEFAULT: usize = 2_000_000;

fn main() {
    let count = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => COUNT_DEFAULT,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: engine_backlog [COUNT]");
            std::process::exit(64);
        }
    };
    let (mut enqueue_ns, mut changes_ns, mut lease_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mut engine = engine_with_queue(&QueueConfigPatch::default());
        engine.set_change_tracking(true);
        let now_ms = 1_000;
        let start = Instant::now();
        for _ in 0..count {
            std::hint::black_box(engine.enqueue(QUEUE, plain_task(), now_ms).expect("enqueue"));
        }
        enqueue_ns.push(start.elapsed().as_nanos() as f64 / count as f64);
        let start = Instant::now();
        let changes = std::hint::black_box(engine.take_changes());
        changes_ns.push(start.elapsed().as_nanos() as f64 / count as f64);
        drop(changes);
        let mut out = Vec::with_capacity(100);
        let queues = [QUEUE.to_string()];
        let start = Instant::now();
        while engine.dequeue(&queues, 100, None, now_ms, &mut out).expect("dequeue") > 0 {
            out.clear();
        }
        lease_ns.push(start.elapsed().as_nanos() as f64 / count as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[RUNS / 2]
    };
    println!(
        "count={count} enqueue_ns_per_task={:.1} take_changes_ns_per_task={:.1} dequeue_ns_per_task={:.1}",
        median(&mut enqueue_ns),
        median(&mut changes_ns),
        median(&mut lease_ns)
    );
}
