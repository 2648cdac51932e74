//! The cost of a large backlog in the engine: enqueues COUNT tasks (100-byte
//! payloads, each in its own allocation as the protocol decoders make them; one
//! `fifo` queue, change tracking on as in `sync` mode) and times
//! the enqueues, then one `take_changes` (what a checkpoint does under the
//! engine lock), then leasing them all back. Repeats five times on fresh engines
//! and prints the medians, in ns per task, and the engine's resident memory per
//! queued task beyond its payload (RSS growth over the first run's enqueues,
//! from `/proc/self/statm`). A sixth run times each enqueue on its own and
//! prints the longest (the stall of the enqueue that makes a structure grow).
//!
//! ```text
//! taskset -c 1 cargo run --release -p tqx-bench --bin engine_backlog [-- COUNT]
//! ```

use std::time::Instant;

use bytes::Bytes;
use taskqueuex::engine::{NewTask, QueueConfigPatch};
use tqx_bench::{engine_with_queue, QUEUE};

const RUNS: usize = 5;
const COUNT_DEFAULT: usize = 2_000_000;
const PAYLOAD_BYTES: usize = 100;

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
    let mut bytes_per_task = None;
    for _ in 0..RUNS {
        let mut engine = engine_with_queue(&QueueConfigPatch::default());
        engine.set_change_tracking(true);
        let now_ms = 1_000;
        let rss_before = rss_bytes();
        let start = Instant::now();
        for _ in 0..count {
            std::hint::black_box(engine.enqueue(QUEUE, task(), now_ms).expect("enqueue"));
        }
        enqueue_ns.push(start.elapsed().as_nanos() as f64 / count as f64);
        if bytes_per_task.is_none() {
            let payload = PAYLOAD_BYTES as f64;
            bytes_per_task = Some((rss_bytes() - rss_before) / count as f64 - payload);
        }
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
    // One more run timing each enqueue alone: the longest is what a growing
    // backlog costs the one request that triggers a reallocation.
    let enqueue_max_us = {
        let mut engine = engine_with_queue(&QueueConfigPatch::default());
        engine.set_change_tracking(true);
        let mut max = std::time::Duration::ZERO;
        for _ in 0..count {
            let task = task();
            let start = Instant::now();
            std::hint::black_box(engine.enqueue(QUEUE, task, 1_000).expect("enqueue"));
            max = max.max(start.elapsed());
        }
        max.as_secs_f64() * 1e6
    };
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[RUNS / 2]
    };
    println!(
        "count={count} enqueue_ns_per_task={:.1} take_changes_ns_per_task={:.1} dequeue_ns_per_task={:.1} \
         rss_bytes_per_task_beyond_payload={:.0} enqueue_max_us={enqueue_max_us:.0}",
        median(&mut enqueue_ns),
        median(&mut changes_ns),
        median(&mut lease_ns),
        bytes_per_task.unwrap_or(f64::NAN)
    );
}

/// A task as a decoder hands it over: the payload copied out of the receive
/// buffer into an allocation of its own.
fn task() -> NewTask {
    NewTask { payload: Bytes::copy_from_slice(&[b'x'; PAYLOAD_BYTES]), ..NewTask::default() }
}

/// Resident bytes of this process (`/proc/self/statm`, second field, in pages).
fn rss_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(f64::NAN);
    pages * 4096.0
}
