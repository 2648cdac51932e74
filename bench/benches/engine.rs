//! Engine micro-benchmarks.
//!
//! `cargo bench -p tqx-bench --bench engine` (always a release build). Criterion
//! options go after `--`, e.g. `-- --warm-up-time 1 --measurement-time 3` or a
//! filter such as `-- cycle`. Every benchmark sets a throughput, so criterion
//! reports elements/s next to the time:
//!
//! | benchmark | one element is | engine state while timed |
//! |---|---|---|
//! | `enqueue` | one enqueue into a `fifo` queue | 0 to 4,096 ready tasks (drained, untimed, every 4,096) |
//! | `cycle` | enqueue → dequeue (max 1) → complete, `fifo`, retention 0 | empty between cycles |
//! | `cycle_fifo_backlog_1024` | the same with 1,024 ready tasks standing | 1,024 ready |
//! | `cycle_priority` | the same, `priority`, priorities pseudo-random in 0..64 | 1,024 ready |
//! | `cycle_round_robin_groups` | the same, `round_robin`, 16 groups, `group_concurrency` 4 | 1,024 ready (64 per group) |
//! | `dependency_fanout_10k` | one of the 10,000 dependents released by completing their parent (timed: lease is done in setup; complete) | parent leased, 10,000 waiting |
//! | `dependency_fanout_10k_build` | the same, timing also the enqueue of parent and batch and the lease | fresh engine |
//! | `tick_expire` | one of 10,000 leases expired by a single tick (each goes to retry backoff) | 10,000 leased |
//!
//! The cycle rigs are shared with `src/bin/engine_cycles.rs` (see `src/lib.rs`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use taskqueuex::engine::{Engine, LeasedTask, QueueConfigPatch};
use tqx_bench::{
    engine_with_expiring_leases, engine_with_queue, fanout_build, fanout_dependents, fanout_ready_to_complete,
    plain_task, CycleKind, CycleRig, EXPIRING, FANOUT, FIRST_ID, QUEUE,
};

/// Enqueues timed between two untimed drains in `enqueue`.
const ENQUEUE_CHUNK: u64 = 4_096;
/// Ready tasks standing in the queue during the backlog cycle variants.
const BACKLOG: usize = 1_024;

/// Leases and completes every ready task of [`QUEUE`] (retention 0: all forgotten).
fn drain(engine: &mut Engine, out: &mut Vec<LeasedTask>, now: u64) {
    loop {
        out.clear();
        let leased = engine.dequeue(&[QUEUE], 1_000, None, now, out).expect("dequeue");
        if leased == 0 {
            break;
        }
        for task in out.iter() {
            engine.complete(task.id, task.lease, None, now).expect("complete");
        }
    }
    out.clear();
}

fn bench_enqueue(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.throughput(Throughput::Elements(1));
    group.bench_function("enqueue", |b| {
        let mut engine = engine_with_queue(&QueueConfigPatch { retention_ms: Some(0), ..QueueConfigPatch::default() });
        let mut out = Vec::with_capacity(1_000);
        let now = 1_000;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(ENQUEUE_CHUNK);
                let start = Instant::now();
                for _ in 0..n {
                    black_box(engine.enqueue(QUEUE, plain_task(), now).expect("enqueue"));
                }
                timed += start.elapsed();
                drain(&mut engine, &mut out, now);
                left -= n;
            }
            assert_eq!(engine.tasks_count(), 0);
            timed
        });
    });
}

fn bench_cycles(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.throughput(Throughput::Elements(1));
    let rigs = [
        ("cycle", CycleKind::Fifo, 0),
        ("cycle_fifo_backlog_1024", CycleKind::Fifo, BACKLOG),
        ("cycle_priority", CycleKind::Priority, BACKLOG),
        ("cycle_round_robin_groups", CycleKind::RoundRobinGroups { groups: 16, concurrency: 4 }, BACKLOG),
    ];
    for (name, kind, backlog) in rigs {
        let mut rig = CycleRig::new(kind, backlog);
        // The engine's size must not drift: every cycle forgets its task.
        rig.run(10_000);
        assert_eq!(rig.engine.tasks_count(), backlog, "{name}: engine grew");
        group.bench_function(name, |b| b.iter(|| black_box(rig.cycle())));
        assert_eq!(rig.engine.tasks_count(), backlog, "{name}: engine grew");
        rig.engine.check_invariants().expect("invariants after the cycles");
    }
}

fn bench_fanout(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.throughput(Throughput::Elements(FANOUT as u64));

    // Sanity check, once: completing the parent makes every dependent ready.
    {
        let (mut engine, parent, lease) = fanout_ready_to_complete(fanout_dependents(FIRST_ID));
        engine.complete(parent, lease, None, 2).expect("complete parent");
        let info = engine.queue(QUEUE).expect("queue");
        assert_eq!(info.counts.get(taskqueuex::engine::TaskState::Ready), FANOUT as u64);
        assert_eq!(info.counts.get(taskqueuex::engine::TaskState::Waiting), 0);
    }

    group.bench_function("dependency_fanout_10k", |b| {
        b.iter_batched(
            || fanout_ready_to_complete(fanout_dependents(FIRST_ID)),
            |(mut engine, parent, lease)| {
                engine.complete(parent, lease, None, 2).expect("complete parent");
                engine // dropped after the timer stops
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("dependency_fanout_10k_build", |b| {
        b.iter_batched(
            || {
                let engine = engine_with_queue(&QueueConfigPatch::default());
                (engine, fanout_dependents(FIRST_ID))
            },
            |(mut engine, dependents)| {
                let (parent, lease) = fanout_build(&mut engine, dependents);
                engine.complete(parent, lease, None, 2).expect("complete parent");
                engine
            },
            BatchSize::PerIteration,
        );
    });
}

fn bench_tick(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.throughput(Throughput::Elements(EXPIRING as u64));
    {
        let mut engine = engine_with_expiring_leases();
        let report = engine.tick(10, usize::MAX);
        assert_eq!(report.expired, EXPIRING);
        assert!(!report.more_due);
    }
    group.bench_function("tick_expire", |b| {
        b.iter_batched(
            engine_with_expiring_leases,
            |mut engine| {
                let report = engine.tick(10, usize::MAX);
                (engine, report)
            },
            BatchSize::PerIteration,
        );
    });
}

fn engine_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    bench_enqueue(&mut group);
    bench_cycles(&mut group);
    // Setups of milliseconds: fewer, flat samples keep the run short.
    group.sample_size(20).sampling_mode(SamplingMode::Flat);
    bench_fanout(&mut group);
    bench_tick(&mut group);
    group.finish();
}

criterion_group! {
    name = benches;
    // Short defaults for a shared 2-core machine; command-line options override.
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = engine_benches
}
criterion_main!(benches);
