//! The engine's public vocabulary: ids, states, queue configuration, the shape of
//! a new task, and the read-only views that lookups return.

use std::sync::Arc;

use bytes::Bytes;

/// Assigned by the engine, strictly increasing, never reused.
pub type TaskId = u64;
/// Proof of holding a lease; a fresh one is issued for every lease.
pub type LeaseToken = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TaskState {
    /// Some dependency has not completed yet.
    Waiting = 0,
    /// Not to be served before a time (initial delay, or retry backoff).
    Delayed = 1,
    Ready = 2,
    Leased = 3,
    Completed = 4,
    /// Attempts exhausted, or failed without retry.
    Dead = 5,
    Cancelled = 6,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Waiting,
        TaskState::Delayed,
        TaskState::Ready,
        TaskState::Leased,
        TaskState::Completed,
        TaskState::Dead,
        TaskState::Cancelled,
    ];

    /// Completed, dead and cancelled tasks never change state again.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Dead | TaskState::Cancelled)
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL.iter().copied().find(|state| state.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Delayed => "delayed",
            TaskState::Ready => "ready",
            TaskState::Leased => "leased",
            TaskState::Completed => "completed",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// Which ready task a dequeue gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Discipline {
    /// Oldest (lowest id) first.
    Fifo,
    /// Newest (highest id) first.
    Lifo,
    /// Highest priority first, oldest first among equals.
    Priority,
    /// Groups take turns, least recently served first; oldest first within a group.
    RoundRobin,
}

impl Discipline {
    pub fn as_str(self) -> &'static str {
        match self {
            Discipline::Fifo => "fifo",
            Discipline::Lifo => "lifo",
            Discipline::Priority => "priority",
            Discipline::RoundRobin => "round_robin",
        }
    }

    pub fn parse(text: &str) -> Option<Discipline> {
        match text {
            "fifo" => Some(Discipline::Fifo),
            "lifo" => Some(Discipline::Lifo),
            "priority" => Some(Discipline::Priority),
            "round_robin" => Some(Discipline::RoundRobin),
            _ => None,
        }
    }
}

/// A queue's settings. Defaults are what an auto-created queue gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub discipline: Discipline,
    /// Lease granted by a dequeue that does not ask for its own.
    pub lease_ms: u64,
    /// Attempts for tasks that do not set their own (read at enqueue).
    pub max_attempts: u32,
    /// Retry backoff: attempt n waits about `backoff_ms * 2^(n-1)`, capped at
    /// `backoff_max_ms`, with jitter (see [`crate::engine::backoff_delay_ms`]).
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// How long completed and cancelled tasks stay visible (read when a task
    /// finishes). 0 forgets them the moment they finish.
    pub retention_ms: u64,
    /// How long dead tasks stay visible, for an operator to read, retry or
    /// delete (read when a task dies). 0 forgets them the moment they die.
    pub dead_retention_ms: u64,
    /// Most tasks of one group that may be leased, or waiting out a retry backoff,
    /// at once. `None` is unlimited. Tasks without a group are never limited.
    pub group_concurrency: Option<u32>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            discipline: Discipline::Fifo,
            lease_ms: 30_000,
            max_attempts: 3,
            backoff_ms: 1_000,
            backoff_max_ms: 60_000,
            retention_ms: 3_600_000,
            dead_retention_ms: super::limits::DEAD_RETENTION_MS_DEFAULT,
            group_concurrency: None,
        }
    }
}

/// A partial update of a queue's settings: `None` leaves a field as it is.
/// `group_concurrency: Some(None)` removes the limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueConfigPatch {
    pub discipline: Option<Discipline>,
    pub lease_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub retention_ms: Option<u64>,
    pub dead_retention_ms: Option<u64>,
    pub group_concurrency: Option<Option<u32>>,
}

/// A dependency of a new task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepRef {
    /// An existing task.
    Task(TaskId),
    /// The k-th task (from 0) of the same batch; it must come earlier in the batch.
    Batch(usize),
}

/// What a producer submits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTask {
    pub payload: Bytes,
    /// Higher is served first under the `priority` discipline.
    pub priority: i32,
    /// `None` (or the task has no group); an empty string is rejected.
    pub group: Option<String>,
    /// Not served before `now + delay_ms` (counted from enqueue, also when the
    /// task first waits for dependencies).
    pub delay_ms: u64,
    /// `None` takes the queue's default.
    pub max_attempts: Option<u32>,
    pub depends_on: Vec<DepRef>,
    /// Idempotency key, unique per queue for as long as its task is kept.
    pub key: Option<String>,
}

/// The answer to an enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: TaskId,
    /// The task's state now (for a repeated key: the original's current state).
    pub state: TaskState,
    /// False when the key had been seen and this is the original task.
    pub created: bool,
}

/// One task handed out by a dequeue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedTask {
    pub id: TaskId,
    pub queue: Arc<str>,
    pub payload: Bytes,
    pub priority: i32,
    pub group: Option<Arc<str>>,
    /// 1 for the first delivery, 2 for the first retry, ...
    pub attempt: u32,
    pub lease: LeaseToken,
    pub lease_expires_at_ms: u64,
}

/// Everything known about a task. The lease token is deliberately absent:
/// only the consumer that dequeued the task holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: TaskId,
    pub queue: Arc<str>,
    pub state: TaskState,
    pub payload: Bytes,
    pub priority: i32,
    pub group: Option<Arc<str>>,
    pub depends_on: Vec<TaskId>,
    pub key: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub result: Option<Bytes>,
    /// The last failure's message, or why the task was cancelled.
    pub error: Option<String>,
    pub created_at_ms: u64,
    /// When the state last changed.
    pub updated_at_ms: u64,
    /// Set while `delayed` (and while `waiting`, the earliest it may run).
    pub not_before_ms: Option<u64>,
    /// Set while `leased`.
    pub lease_expires_at_ms: Option<u64>,
    /// Set once finished: when the task will be forgotten.
    pub purge_at_ms: Option<u64>,
}

/// One page of [`crate::engine::Engine::list_tasks`]: tasks in id order, and
/// where the next page starts (`None`: the listing is complete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass back as `after` for the next page: the last id returned, or the
    /// last id examined when the scan budget ran out first.
    pub next_cursor: Option<TaskId>,
}

/// Number of tasks of a queue in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; 7]);

impl StateCounts {
    pub fn get(&self, state: TaskState) -> u64 {
        self.0[state as usize]
    }

    pub fn unfinished(&self) -> u64 {
        TaskState::ALL.iter().filter(|s| !s.is_final()).map(|s| self.get(*s)).sum()
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: Arc<str>,
    pub config: QueueConfig,
    pub counts: StateCounts,
}

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Timers handled (bounded by the tick's `work_max`).
    pub fired: usize,
    /// Delayed tasks that became ready.
    pub promoted: usize,
    /// Leases that ran out.
    pub expired: usize,
    /// Tasks that became dead (from expired leases).
    pub dead: usize,
    /// Finished tasks forgotten at the end of their retention (dead ones too).
    pub purged: usize,
    /// More timers are already due: tick again soon.
    pub more_due: bool,
}

/// The 128-bit secret lease tokens are keyed with (`jitter.rs`: SipHash-2-4 of
/// seed, task id and attempt). The server makes it from the OS random source at
/// first start and keeps it in the data directory (`lease.key`, mode 0600), never
/// in the log or the checkpoint store; `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LeaseKey(pub [u8; 16]);

impl std::fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseKey(..)")
    }
}

/// Engine-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Seeds retry jitter and lease tokens. Same seed and same calls, same results.
    /// Logged (the log's first record) and checkpointed: not a secret.
    pub seed: u64,
    /// Keys lease tokens: same key, seed and calls, same tokens. A secret: it
    /// comes from the driver and is never logged or checkpointed. The default is
    /// a fixed, public key, fit for tests and simulations only.
    pub lease_key: LeaseKey,
    pub tasks_count_max: usize,
    pub queues_count_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            seed: 0x7451_7845_6e67_696e,
            lease_key: LeaseKey(*b"tqx-public-key!!"),
            tasks_count_max: super::limits::TASKS_COUNT_MAX_DEFAULT,
            queues_count_max: super::limits::QUEUES_COUNT_MAX_DEFAULT,
        }
    }
}
