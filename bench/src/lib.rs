//! TaskQueueX benchmarks.
//!
//! `benches/engine.rs` holds the engine micro-benchmarks (criterion), run with
//! `cargo bench -p tqx-bench --bench engine`; `src/bin/engine_cycles.rs` is a plain
//! binary that measures the enqueue → dequeue → complete cycle rate on one thread
//! (`cargo run --release -p tqx-bench --bin engine_cycles [-- COUNT]`). The network
//! load generator that compares TaskQueueX with Redis and beanstalkd arrives with
//! the benchmark issue.
//!
//! This library holds the rigs both of them drive, so that the criterion figures
//! and the binary's figure measure exactly the same calls.

pub mod footprint;
pub mod load;
pub mod report;
pub mod shared;

use bytes::Bytes;
use taskqueuex::engine::{DepRef, Discipline, Engine, EngineConfig, LeasedTask, NewTask, QueueConfigPatch, TaskId};

/// The queue every rig uses.
pub const QUEUE: &str = "bench";

/// A 16-byte payload without allocation or copy.
pub fn payload() -> Bytes {
    Bytes::from_static(b"0123456789abcdef")
}

/// A fresh engine with queue [`QUEUE`] configured by `patch`.
pub fn engine_with_queue(patch: &QueueConfigPatch) -> Engine {
    let mut engine = Engine::new(EngineConfig::default());
    engine.configure_queue(QUEUE, patch, 0).expect("configure the bench queue");
    engine
}

/// A task with the bench payload and nothing else set.
pub fn plain_task() -> NewTask {
    NewTask { payload: payload(), ..NewTask::default() }
}

/// xorshift64*: a cheap, deterministic "random-ish" sequence for priorities.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Which shape of queue a [`CycleRig`] drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CycleKind {
    /// `fifo`, no priorities, no groups.
    Fifo,
    /// `priority`, each task with a pseudo-random priority in 0..64.
    Priority,
    /// `round_robin` with `groups` groups (tasks assigned in turn) and
    /// `group_concurrency` = `concurrency`.
    RoundRobinGroups { groups: u32, concurrency: u32 },
}

/// Drives enqueue → dequeue (max 1) → complete, one task per cycle, on a queue
/// with `retention_ms = 0`, so a completed task is forgotten at once and the
/// engine's size stays at `backlog` (ready tasks enqueued up front that the cycles
/// serve from; 0 means the queue is empty between cycles).
pub struct CycleRig {
    pub engine: Engine,
    kind: CycleKind,
    out: Vec<LeasedTask>,
    now_ms: u64,
    rng: Rng,
    group_names: Vec<String>,
    next_group: usize,
}

impl CycleRig {
    pub fn new(kind: CycleKind, backlog: usize) -> CycleRig {
        let mut patch = QueueConfigPatch { retention_ms: Some(0), ..QueueConfigPatch::default() };
        let mut group_names = Vec::new();
        match kind {
            CycleKind::Fifo => patch.discipline = Some(Discipline::Fifo),
            CycleKind::Priority => patch.discipline = Some(Discipline::Priority),
            CycleKind::RoundRobinGroups { groups, concurrency } => {
                patch.discipline = Some(Discipline::RoundRobin);
                patch.group_concurrency = Some(Some(concurrency));
                group_names = (0..groups).map(|g| format!("group-{g:02}")).collect();
            }
        }
        let mut rig = CycleRig {
            engine: engine_with_queue(&patch),
            kind,
            out: Vec::with_capacity(1),
            now_ms: 1_000,
            rng: Rng::new(0x5eed_1234_abcd_ef01),
            group_names,
            next_group: 0,
        };
        for _ in 0..backlog {
            let task = rig.next_task();
            rig.engine.enqueue(QUEUE, task, rig.now_ms).expect("enqueue backlog");
        }
        rig
    }

    fn next_task(&mut self) -> NewTask {
        let mut task = plain_task();
        match self.kind {
            CycleKind::Fifo => {}
            CycleKind::Priority => task.priority = (self.rng.next_u64() % 64) as i32,
            CycleKind::RoundRobinGroups { .. } => {
                // The API takes an owned String, so this clone (one small
                // allocation) is part of what a caller pays per grouped enqueue.
                task.group = Some(self.group_names[self.next_group].clone());
                self.next_group = (self.next_group + 1) % self.group_names.len();
            }
        }
        task
    }

    /// One enqueue → dequeue → complete. Returns the id of the completed task.
    #[inline]
    pub fn cycle(&mut self) -> TaskId {
        let task = self.next_task();
        let now = self.now_ms;
        self.engine.enqueue(QUEUE, task, now).expect("enqueue");
        let leased = self.engine.dequeue(&[QUEUE], 1, None, now, &mut self.out).expect("dequeue");
        debug_assert_eq!(leased, 1);
        let (id, lease) = match self.out.first() {
            Some(t) => (t.id, t.lease),
            None => panic!("dequeue leased nothing"),
        };
        self.out.clear();
        self.engine.complete(id, lease, None, now).expect("complete");
        id
    }

    /// Runs `count` cycles.
    pub fn run(&mut self, count: u64) -> TaskId {
        let mut last = 0;
        for _ in 0..count {
            last = self.cycle();
        }
        last
    }
}

/// Tasks in the dependency fan-out benchmarks.
pub const FANOUT: usize = 10_000;

/// An engine holding one parent task, leased, and [`FANOUT`] tasks (one batch)
/// waiting on it. Returns the engine and the parent's id and lease token.
pub fn fanout_ready_to_complete(dependents: Vec<NewTask>) -> (Engine, TaskId, u64) {
    let mut engine = engine_with_queue(&QueueConfigPatch::default());
    let (id, lease) = fanout_build(&mut engine, dependents);
    (engine, id, lease)
}

/// On an engine with queue [`QUEUE`] (empty): enqueues a parent, then `dependents`
/// (which should depend on [`DepRef::Task`] of the next id the engine assigns;
/// see [`fanout_dependents`]) as one batch, then leases the parent.
pub fn fanout_build(engine: &mut Engine, dependents: Vec<NewTask>) -> (TaskId, u64) {
    let parent = engine.enqueue(QUEUE, plain_task(), 1).expect("enqueue parent").id;
    assert!(
        dependents.iter().all(|t| t.depends_on == [DepRef::Task(parent)]),
        "dependents must depend on the parent, task {parent}"
    );
    engine.enqueue_batch(QUEUE, dependents, 1).expect("enqueue dependents");
    let mut out = Vec::with_capacity(1);
    engine.dequeue(&[QUEUE], 1, None, 1, &mut out).expect("lease parent");
    assert_eq!(out.len(), 1, "only the parent is ready");
    assert_eq!(out[0].id, parent);
    (parent, out[0].lease)
}

/// Id of the first task of a fresh engine: the parent in [`fanout_build`].
pub const FIRST_ID: TaskId = 1;

/// [`FANOUT`] tasks that each depend on task `parent`.
pub fn fanout_dependents(parent: TaskId) -> Vec<NewTask> {
    (0..FANOUT)
        .map(|_| NewTask { payload: payload(), depends_on: vec![DepRef::Task(parent)], ..NewTask::default() })
        .collect()
}

/// Tasks in the tick benchmark.
pub const EXPIRING: usize = 10_000;

/// An engine with [`EXPIRING`] tasks leased at `now = 0` for 1 ms each, so that a
/// tick at `now = 10` expires every lease.
pub fn engine_with_expiring_leases() -> Engine {
    let mut engine = engine_with_queue(&QueueConfigPatch { lease_ms: Some(1), ..QueueConfigPatch::default() });
    let tasks: Vec<NewTask> = (0..EXPIRING).map(|_| plain_task()).collect();
    engine.enqueue_batch(QUEUE, tasks, 0).expect("enqueue");
    let mut out = Vec::with_capacity(EXPIRING);
    while out.len() < EXPIRING {
        let leased = engine.dequeue(&[QUEUE], 1_000, Some(1), 0, &mut out).expect("dequeue");
        assert!(leased > 0);
    }
    engine
}
