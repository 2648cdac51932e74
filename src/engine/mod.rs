//! The queue engine: queues, tasks, leases, retries, groups and dependencies.
//!
//! **Pure.** No I/O, no threads, no clock reads: every operation takes `now_ms`
//! from its caller, and the same calls on an engine with the same seed give the
//! same results. This is what lets the property test compare it with a reference
//! model, and what will let the write-ahead log replay it and a simulator drive it.
//!
//! **Never panics on input.** Every operation validates its arguments against
//! [`limits`] first and returns an [`EngineError`]; a batch is validated in full
//! before any of it is applied, so it is all or nothing. `assert!`s that remain
//! guard the engine's own invariants (an index out of step with the tasks), where
//! stopping beats serving a corrupted state.
//!
//! **Costs.** Lookups by id are O(1) (a hash map from id to slab slot). Enqueue,
//! dequeue, complete, fail, extend and cancel are O(log n) in the ready tasks and
//! pending timers; completing a task with dependents adds O(dependents). A tick
//! costs O(log n) per timer that is due: one ordered timer set holds at most one
//! timer per task (lease expiry, delay end, or retention end, by state).
//!
//! The clock is monotonic by construction: a `now_ms` lower than one seen before
//! is taken as the one seen before.
//!
//! **Snapshots.** With change tracking on, the engine records which queues and
//! tasks changed; `take_changes` hands them out as rows for a checkpoint and
//! `restore` rebuilds an engine from such rows that behaves identically from then
//! on (see `snapshot.rs` and docs/engine.md, "Snapshots and change tracking").

mod error;
mod id_index;
mod id_run;
mod jitter;
pub mod limits;
mod payload;
mod queue;
mod snapshot;
mod task_slab;
mod tiering;
mod types;

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

pub use error::{EngineError, ErrorKind};
pub use jitter::backoff_delay_ms;
#[cfg(feature = "server")] // the lease key file's checksum (server/lease_key.rs)
pub(crate) use jitter::siphash24;
pub use snapshot::{ChangeSink, Changes, PayloadRow, SnapshotError};
pub use types::{
    DepRef, Discipline, EngineConfig, Enqueued, LeaseKey, LeaseToken, LeasedTask, NewTask, QueueConfig,
    QueueConfigPatch, QueueInfo, StateCounts, TaskId, TaskPage, TaskState, TaskView, TickReport,
};

use id_index::{id_hash, IdIndex};
use jitter::{lease_token, tokens_equal};
use limits::*;
use payload::Payload;
use queue::{GroupIx, Queue, QueueIx, UNGROUPED};
use snapshot::{Tracker, TRACK_NEW};
use task_slab::TaskSlab;

/// `due_ms` of a task that has no timer armed.
const NO_TIMER: u64 = u64::MAX;

/// Hashes task ids for maps keyed by id (see [`id_index::id_hash`]).
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = id_hash(n);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<TaskId, V, BuildHasherDefault<IdHasher>>;

/// A task as the engine holds it. Rarely used fields live behind `extra` so that
/// the common task (no dependencies, no key, not yet finished) stays small.
struct Task {
    id: TaskId,
    payload: Payload,
    /// By state: `delayed` - when it becomes ready; `leased` - when the lease
    /// expires; finished - when it is purged (`NO_TIMER` if at once); `waiting` -
    /// the earliest it may become ready (no timer armed). Unused when `ready`.
    due_ms: u64,
    created_ms: u64,
    updated_ms: u64,
    queue: QueueIx,
    group: GroupIx,
    priority: i32,
    /// Leases granted so far (u16: `MAX_ATTEMPTS_MAX` fits, and the record stays small).
    attempts: u16,
    max_attempts: u16,
    /// Times an operator moved the task from `dead` back to `ready`
    /// (`Engine::retry`), which resets `attempts`: part of the lease number
    /// (`lease_number`), so that a lease of the first life never matches one
    /// of the second. Fits in the record's padding.
    retries: u16,
    state: TaskState,
    /// Change-tracking bits (`snapshot::TRACK_*`); read only while tracking is on.
    track: u8,
    /// The payload lives only in the checkpoint store (tiered storage):
    /// `payload` is empty and the driver reads it back (see `tiering.rs`).
    cold: bool,
    extra: Option<Box<TaskExtra>>,
}

#[derive(Default)]
struct TaskExtra {
    depends_on: Box<[TaskId]>,
    /// Dependencies not yet completed (while `waiting`).
    deps_pending: u32,
    /// Tasks that were waiting on this one when they were enqueued, in id order.
    dependents: Vec<TaskId>,
    key: Option<Box<str>>,
    result: Option<Bytes>,
    error: Option<Box<str>>,
}

impl Task {
    fn extra_mut(&mut self) -> &mut TaskExtra {
        self.extra.get_or_insert_with(Box::default)
    }
}

/// Whether a task in `state` has an entry in the timer set.
fn timer_armed(state: TaskState, due_ms: u64) -> bool {
    match state {
        TaskState::Delayed | TaskState::Leased => true,
        TaskState::Completed | TaskState::Dead | TaskState::Cancelled => due_ms != NO_TIMER,
        TaskState::Waiting | TaskState::Ready => false,
    }
}

/// Whether a task in `state` occupies one of its group's `group_concurrency`
/// slots. A task waiting out a retry backoff keeps its slot, so that with a
/// limit of 1 the next task of the group cannot overtake it.
fn holds_slot(state: TaskState, attempts: u16) -> bool {
    match state {
        TaskState::Leased => true,
        TaskState::Delayed => attempts > 0,
        _ => false,
    }
}

/// `now + duration_ms` for a timer, kept below `NO_TIMER`: times are not expected
/// anywhere near 2^64 ms, but a caller passing such a `now` must not turn a
/// retention into "purge at once".
fn deadline(now_ms: u64, duration_ms: u64) -> u64 {
    now_ms.saturating_add(duration_ms).min(NO_TIMER - 1)
}

/// Attempts are validated against `MAX_ATTEMPTS_MAX` before they get here.
fn max_attempts_u16(max_attempts: u32) -> u16 {
    const _: () = assert!(MAX_ATTEMPTS_MAX <= u16::MAX as u32);
    u16::try_from(max_attempts).unwrap_or(u16::MAX)
}

/// The number a lease token is derived from (`jitter::lease_token`): the
/// attempt, and above it the operator retries, so every lease of a task has
/// its own number even though a retry restarts `attempts` at 0. Equal to the
/// attempt for a task never retried, so tokens are what they were before
/// retries existed.
fn lease_number(task: &Task) -> u32 {
    (u32::from(task.retries) << 16) | u32::from(task.attempts)
}

fn timer_key(due_ms: u64, id: TaskId) -> u128 {
    (u128::from(due_ms) << 64) | u128::from(id)
}

/// A listing page being filled (`Engine::list_tasks`).
struct Page {
    tasks: Vec<TaskView>,
    /// Payload, result and error bytes of `tasks`.
    bytes: usize,
    limit: usize,
}

impl Page {
    /// Adds `view`; false once the page is full (by count, or by bytes:
    /// `LIST_TASKS_PAGE_BYTES_MAX`), after which nothing more is added.
    fn push(&mut self, view: TaskView) -> bool {
        self.bytes += view.payload.len()
            + view.result.as_ref().map_or(0, Bytes::len)
            + view.error.as_ref().map_or(0, String::len);
        self.tasks.push(view);
        self.tasks.len() < self.limit && self.bytes < LIST_TASKS_PAGE_BYTES_MAX
    }
}

/// Checks that `name` can be a queue name (`field` names it in the error).
pub fn validate_queue_name(name: &str, field: &'static str) -> Result<(), EngineError> {
    if name.len() > QUEUE_NAME_BYTES_MAX {
        return Err(EngineError::too_large(field, name.len(), QUEUE_NAME_BYTES_MAX));
    }
    if name.is_empty() {
        return Err(EngineError::invalid(field, format!("queue names are 1 to {QUEUE_NAME_BYTES_MAX} bytes")));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) {
        return Err(EngineError::invalid(field, "queue names use only A-Z a-z 0-9 _ - . :"));
    }
    Ok(())
}

pub fn validate_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), EngineError> {
    if value < min || value > max {
        return Err(EngineError::invalid(field, format!("must be between {min} and {max}")));
    }
    Ok(())
}

/// Checks that `length` bytes of `field` are within `bytes_max` (a `TooLarge`
/// error past it, 413 over HTTP).
pub fn validate_length(field: &'static str, length: usize, bytes_max: usize) -> Result<(), EngineError> {
    if length > bytes_max {
        return Err(EngineError::too_large(field, length, bytes_max));
    }
    Ok(())
}

/// Group names and idempotency keys: 1 to `bytes_max` bytes.
pub fn validate_text(field: &'static str, text: &str, bytes_max: usize) -> Result<(), EngineError> {
    validate_length(field, text.len(), bytes_max)?;
    if text.is_empty() {
        return Err(EngineError::invalid(field, format!("must be 1 to {bytes_max} bytes")));
    }
    Ok(())
}

pub struct Engine {
    config: EngineConfig,
    tasks: TaskSlab,
    slot_by_id: IdIndex,
    queues: Slab<Queue>,
    queue_by_name: HashMap<Arc<str>, QueueIx>,
    /// The same queues, in name order, for listing.
    queue_names: BTreeMap<Arc<str>, QueueIx>,
    /// `(due_ms, id)` of every armed timer.
    timers: BTreeSet<u128>,
    next_id: TaskId,
    now_ms: u64,
    /// Scratch space for dependency cascades, kept to avoid allocating per call.
    cascade: VecDeque<usize>,
    finished: Vec<usize>,
    /// What changed since the last `take_changes`, while change tracking is on.
    changes: Tracker,
    /// Payload bytes held in memory (cold payloads excluded).
    payload_bytes_resident: u64,
    /// Ids of tasks whose payload is in memory, while tiered storage is on.
    resident_ids: Option<id_run::IdRun>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            config,
            tasks: TaskSlab::default(),
            slot_by_id: IdIndex::default(),
            queues: Slab::new(),
            queue_by_name: HashMap::new(),
            queue_names: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            now_ms: 0,
            cascade: VecDeque::new(),
            finished: Vec::new(),
            changes: Tracker::default(),
            payload_bytes_resident: 0,
            resident_ids: None,
        }
    }

    /// Records that the task at `slot` changed. With tracking off this is one
    /// predictable branch; with it on, O(1) (a flag, and a push the first time).
    #[inline]
    fn touch_task(&mut self, slot: usize) {
        if self.changes.on {
            self.changes.task_changed(&mut self.tasks[slot]);
        }
    }

    /// Records that queue `q`'s row (settings or serving history) changed.
    #[inline]
    fn touch_queue(&mut self, q: QueueIx) {
        if self.changes.on {
            self.changes.queue_changed(&mut self.queues[q as usize]);
        }
    }

    fn advance_clock(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// Tasks held, in any state.
    pub fn tasks_count(&self) -> usize {
        self.tasks.len()
    }

    /// When the earliest timer is due, for the driver to schedule its next tick.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.timers.first().map(|&k| (k >> 64) as u64)
    }

    // ---- queues -------------------------------------------------------------

    /// Creates queue `name` with the defaults overridden by `patch`, or changes
    /// the settings of an existing one. Changing the discipline or the group
    /// limit re-sorts the queue's ready tasks (O(ready tasks)). Defaults for
    /// attempts and retention apply to tasks enqueued (finished) from now on.
    pub fn configure_queue(
        &mut self,
        name: &str,
        patch: &QueueConfigPatch,
        now_ms: u64,
    ) -> Result<QueueConfig, EngineError> {
        self.advance_clock(now_ms);
        validate_queue_name(name, "queue")?;
        let existing = self.queue_by_name.get(name).copied();
        let mut config = match existing {
            Some(q) => self.queues[q as usize].config.clone(),
            None => QueueConfig::default(),
        };
        if let Some(discipline) = patch.discipline {
            config.discipline = discipline;
        }
        if let Some(lease_ms) = patch.lease_ms {
            validate_range("lease_ms", lease_ms, LEASE_MS_MIN, LEASE_MS_MAX)?;
            config.lease_ms = lease_ms;
        }
        if let Some(max_attempts) = patch.max_attempts {
            validate_range("max_attempts", u64::from(max_attempts), 1, u64::from(MAX_ATTEMPTS_MAX))?;
            config.max_attempts = max_attempts;
        }
        if let Some(backoff_ms) = patch.backoff_ms {
            validate_range("backoff_ms", backoff_ms, 0, BACKOFF_MS_MAX)?;
            config.backoff_ms = backoff_ms;
        }
        if let Some(backoff_max_ms) = patch.backoff_max_ms {
            validate_range("backoff_max_ms", backoff_max_ms, 0, BACKOFF_MS_MAX)?;
            config.backoff_max_ms = backoff_max_ms;
        }
        if let Some(retention_ms) = patch.retention_ms {
            validate_range("retention_ms", retention_ms, 0, RETENTION_MS_MAX)?;
            config.retention_ms = retention_ms;
        }
        if let Some(dead_retention_ms) = patch.dead_retention_ms {
            validate_range("dead_retention_ms", dead_retention_ms, 0, RETENTION_MS_MAX)?;
            config.dead_retention_ms = dead_retention_ms;
        }
        if let Some(limit) = patch.group_concurrency {
            if let Some(limit) = limit {
                validate_range("group_concurrency", u64::from(limit), 1, u64::from(GROUP_CONCURRENCY_MAX))?;
            }
            config.group_concurrency = limit;
        }
        if config.backoff_max_ms < config.backoff_ms {
            return Err(EngineError::invalid("backoff_max_ms", "must be at least backoff_ms"));
        }
        match existing {
            None => {
                self.create_queue(name, config.clone())?;
            }
            Some(q) => {
                let queue = &mut self.queues[q as usize];
                let reorder = queue.config.discipline != config.discipline
                    || queue.config.group_concurrency != config.group_concurrency;
                if reorder {
                    let ready = queue.ready_ids();
                    queue.reset_ready(config.clone());
                    for id in ready {
                        let task = &self.tasks[self.slot_by_id.get(&self.tasks, id).expect("a listed task is live")];
                        let key = queue.ready_key(task.priority, id);
                        queue.ready_insert(task.group, key);
                    }
                } else {
                    queue.config = config.clone();
                }
                self.touch_queue(q);
            }
        }
        Ok(config)
    }

    fn create_queue(&mut self, name: &str, config: QueueConfig) -> Result<QueueIx, EngineError> {
        if self.queues.len() >= self.config.queues_count_max {
            return Err(EngineError::CapacityExceeded { what: "queues", limit: self.config.queues_count_max });
        }
        let name: Arc<str> = Arc::from(name);
        let q = self.queues.insert(Queue::new(name.clone(), config)) as QueueIx;
        self.queue_by_name.insert(name.clone(), q);
        self.queue_names.insert(name, q);
        self.touch_queue(q);
        Ok(q)
    }

    /// Deletes a queue. A queue that holds unfinished tasks is refused unless
    /// `force`, which cancels them (and, transitively, their dependents in any
    /// queue) and then forgets every task of the queue. O(all tasks).
    pub fn delete_queue(&mut self, name: &str, force: bool, now_ms: u64) -> Result<(), EngineError> {
        self.advance_clock(now_ms);
        validate_queue_name(name, "queue")?;
        let Some(&q) = self.queue_by_name.get(name) else {
            return Err(EngineError::QueueNotFound(name.to_owned()));
        };
        let queue = &self.queues[q as usize];
        let unfinished_count = StateCounts(queue.counts).unfinished();
        if unfinished_count > 0 && !force {
            return Err(EngineError::QueueNotEmpty { queue: name.to_owned(), unfinished_count });
        }
        let mut members: Vec<(TaskId, usize)> =
            self.tasks.iter().filter(|(_, t)| t.queue == q).map(|(slot, t)| (t.id, slot)).collect();
        members.sort_unstable();
        for &(id, slot) in &members {
            if self.live_slot(id) == Some(slot) && !self.tasks[slot].state.is_final() {
                self.finish(slot, TaskState::Cancelled, Some("queue deleted".into()));
            }
        }
        for &(id, slot) in &members {
            if self.live_slot(id) == Some(slot) {
                self.purge(slot);
            }
        }
        let queue = self.queues.remove(q as usize);
        assert!(queue.counts.iter().all(|&c| c == 0) && queue.groups_released() && queue.keys.is_empty());
        self.queue_by_name.remove(name);
        self.queue_names.remove(name);
        if self.changes.on {
            self.changes.queue_deleted(queue.name);
        }
        Ok(())
    }

    fn queue_info(&self, q: QueueIx) -> QueueInfo {
        let queue = &self.queues[q as usize];
        QueueInfo { name: queue.name.clone(), config: queue.config.clone(), counts: StateCounts(queue.counts) }
    }

    pub fn queue(&self, name: &str) -> Option<QueueInfo> {
        self.queue_by_name.get(name).map(|&q| self.queue_info(q))
    }

    /// Every queue with its settings and counts, in name order. O(queues).
    pub fn queues(&self) -> Vec<QueueInfo> {
        self.queue_names.values().map(|&q| self.queue_info(q)).collect()
    }

    // ---- enqueue ------------------------------------------------------------

    fn validate_task(&self, task: &NewTask, position: Option<usize>) -> Result<(), EngineError> {
        validate_length("payload", task.payload.len(), PAYLOAD_BYTES_MAX)?;
        if let Some(group) = &task.group {
            validate_text("group", group, GROUP_NAME_BYTES_MAX)?;
        }
        if let Some(key) = &task.key {
            validate_text("key", key, IDEMPOTENCY_KEY_BYTES_MAX)?;
        }
        if let Some(max_attempts) = task.max_attempts {
            validate_range("max_attempts", u64::from(max_attempts), 1, u64::from(MAX_ATTEMPTS_MAX))?;
        }
        validate_range("delay_ms", task.delay_ms, 0, DELAY_MS_MAX)?;
        if task.depends_on.len() > DEPENDS_ON_COUNT_MAX {
            return Err(EngineError::invalid("depends_on", format!("at most {DEPENDS_ON_COUNT_MAX} dependencies")));
        }
        for dep in &task.depends_on {
            match *dep {
                DepRef::Task(id) => {
                    if !self.slot_by_id.contains(&self.tasks, id) {
                        return Err(EngineError::invalid(
                            "depends_on",
                            format!("task {id} does not exist (never created, or already purged)"),
                        ));
                    }
                }
                DepRef::Batch(k) => match position {
                    Some(position) if k < position => {}
                    Some(_) => {
                        return Err(EngineError::invalid(
                            "depends_on",
                            format!("#{k} must name an earlier task of the same batch"),
                        ))
                    }
                    None => return Err(EngineError::invalid("depends_on", "#k references are only valid in a batch")),
                },
            }
        }
        Ok(())
    }

    fn check_task_capacity(&self, count: usize) -> Result<(), EngineError> {
        if self.tasks.len().saturating_add(count) > self.config.tasks_count_max {
            return Err(EngineError::CapacityExceeded { what: "tasks", limit: self.config.tasks_count_max });
        }
        Ok(())
    }

    fn existing_for_key(&self, q: Option<QueueIx>, key: Option<&str>) -> Option<Enqueued> {
        let id = *self.queues[q? as usize].keys.get(key?)?;
        let state = self.tasks[self.live_slot(id).expect("a listed task is live")].state;
        Some(Enqueued { id, state, created: false })
    }

    /// Enqueues one task into `queue`, creating the queue (as `fifo` with defaults)
    /// if it does not exist. A `key` already held by a task of this queue returns
    /// that task instead (`created: false`).
    pub fn enqueue(&mut self, queue: &str, task: NewTask, now_ms: u64) -> Result<Enqueued, EngineError> {
        let now = self.advance_clock(now_ms);
        validate_queue_name(queue, "queue")?;
        self.validate_task(&task, None)?;
        let q = self.queue_by_name.get(queue).copied();
        if let Some(existing) = self.existing_for_key(q, task.key.as_deref()) {
            return Ok(existing);
        }
        self.check_task_capacity(1)?;
        let q = match q {
            Some(q) => q,
            None => self.create_queue(queue, QueueConfig::default())?,
        };
        let deps: Vec<TaskId> = task
            .depends_on
            .iter()
            .map(|d| match *d {
                DepRef::Task(id) => id,
                DepRef::Batch(_) => unreachable!("validated: no batch references outside a batch"),
            })
            .collect();
        Ok(self.insert_task(q, task, deps, now))
    }

    /// Enqueues `tasks` into `queue` atomically: every task is validated (and the
    /// capacity checked for all of them) before the first is applied. Entries
    /// whose key is already held return the original task; `#k` dependencies name
    /// the k-th entry's task, whichever it is.
    pub fn enqueue_batch(
        &mut self,
        queue: &str,
        tasks: Vec<NewTask>,
        now_ms: u64,
    ) -> Result<Vec<Enqueued>, EngineError> {
        let now = self.advance_clock(now_ms);
        validate_queue_name(queue, "queue")?;
        if tasks.is_empty() || tasks.len() > BATCH_TASKS_COUNT_MAX {
            return Err(EngineError::invalid("tasks", format!("a batch holds 1 to {BATCH_TASKS_COUNT_MAX} tasks")));
        }
        for (k, task) in tasks.iter().enumerate() {
            self.validate_task(task, Some(k)).map_err(|e| e.in_batch(k))?;
        }
        // Entries that turn out to be repeats still count here: a batch near the
        // limit may be refused a little early, never admitted past it.
        self.check_task_capacity(tasks.len())?;
        let q = match self.queue_by_name.get(queue).copied() {
            Some(q) => q,
            None => self.create_queue(queue, QueueConfig::default())?,
        };
        let mut results: Vec<Enqueued> = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Some(existing) = self.existing_for_key(Some(q), task.key.as_deref()) {
                results.push(existing);
                continue;
            }
            let deps: Vec<TaskId> = task
                .depends_on
                .iter()
                .map(|d| match *d {
                    DepRef::Task(id) => id,
                    DepRef::Batch(k) => results[k].id,
                })
                .collect();
            results.push(self.insert_task(q, task, deps, now));
        }
        Ok(results)
    }

    /// Creates a validated task. Cannot fail.
    fn insert_task(&mut self, q: QueueIx, task: NewTask, mut deps: Vec<TaskId>, now: u64) -> Enqueued {
        let id = self.next_id;
        self.next_id += 1;
        deps.sort_unstable();
        deps.dedup();

        let mut deps_pending = 0u32;
        let mut doomed_by: Option<(TaskId, TaskState)> = None;
        for &dep in &deps {
            // A batch entry that was cancelled at birth in a queue without
            // retention is already gone; treat it as the cancelled task it was.
            let dep_state = match self.live_slot(dep) {
                Some(slot) => self.tasks[slot].state,
                None => TaskState::Cancelled,
            };
            match dep_state {
                TaskState::Completed => {}
                TaskState::Dead | TaskState::Cancelled => {
                    doomed_by.get_or_insert((dep, dep_state));
                }
                _ => {
                    deps_pending += 1;
                    let slot = self.live_slot(dep).expect("a pending dependency is live");
                    self.tasks[slot].extra_mut().dependents.push(id);
                }
            }
        }

        let queue = &mut self.queues[q as usize];
        let group = queue.group_acquire(task.group.as_deref().unwrap_or(UNGROUPED));
        let not_before = deadline(now, task.delay_ms);
        let retention_ms = queue.config.retention_ms;
        let (state, due_ms, error) = if let Some((dep, dep_state)) = doomed_by {
            let due = if retention_ms == 0 { NO_TIMER } else { deadline(now, retention_ms) };
            (TaskState::Cancelled, due, Some(format!("dependency {dep} is {}", dep_state.as_str()).into_boxed_str()))
        } else if deps_pending > 0 {
            (TaskState::Waiting, not_before, None)
        } else if not_before > now {
            (TaskState::Delayed, not_before, None)
        } else {
            (TaskState::Ready, NO_TIMER, None)
        };
        let key = task.key.map(String::into_boxed_str);
        if let Some(key) = &key {
            queue.keys.insert(key.clone(), id);
        }
        let extra = if deps.is_empty() && key.is_none() && error.is_none() {
            None
        } else {
            Some(Box::new(TaskExtra {
                depends_on: deps.into_boxed_slice(),
                deps_pending,
                dependents: Vec::new(),
                key,
                result: None,
                error,
            }))
        };
        let slot = self.tasks.insert(Task {
            id,
            payload: Payload::new(task.payload),
            due_ms,
            created_ms: now,
            updated_ms: now,
            queue: q,
            group,
            priority: task.priority,
            attempts: 0,
            max_attempts: max_attempts_u16(task.max_attempts.unwrap_or(queue.config.max_attempts)),
            retries: 0,
            state,
            track: TRACK_NEW,
            cold: false,
            extra,
        });
        self.slot_by_id.insert(&self.tasks, slot);
        self.payload_resident(slot);
        self.touch_task(slot);
        self.enter_state(slot);
        if state == TaskState::Cancelled && due_ms == NO_TIMER {
            self.purge(slot);
        }
        Enqueued { id, state, created: true }
    }

    // ---- state bookkeeping --------------------------------------------------

    /// Registers the task at `slot` in the indexes of its current state.
    fn enter_state(&mut self, slot: usize) {
        let task = &self.tasks[slot];
        let queue = &mut self.queues[task.queue as usize];
        queue.counts[task.state as usize] += 1;
        if task.state == TaskState::Ready {
            let key = queue.ready_key(task.priority, task.id);
            queue.ready_insert(task.group, key);
        } else if task.state == TaskState::Dead {
            let inserted = queue.dead.insert(task.id);
            assert!(inserted);
        }
        if holds_slot(task.state, task.attempts) {
            queue.slot_acquire(task.group);
        }
        if timer_armed(task.state, task.due_ms) {
            let inserted = self.timers.insert(timer_key(task.due_ms, task.id));
            assert!(inserted);
        }
    }

    /// Removes the task at `slot` from the indexes of its current state.
    fn leave_state(&mut self, slot: usize) {
        let task = &self.tasks[slot];
        let queue = &mut self.queues[task.queue as usize];
        queue.counts[task.state as usize] -= 1;
        if task.state == TaskState::Ready {
            let key = queue.ready_key(task.priority, task.id);
            queue.ready_remove(task.group, key);
        } else if task.state == TaskState::Dead {
            let removed = queue.dead.remove(&task.id);
            assert!(removed);
        }
        if holds_slot(task.state, task.attempts) {
            queue.slot_release(task.group);
        }
        if timer_armed(task.state, task.due_ms) {
            let removed = self.timers.remove(&timer_key(task.due_ms, task.id));
            assert!(removed);
        }
    }

    fn set_state(&mut self, slot: usize, state: TaskState, due_ms: u64) {
        self.leave_state(slot);
        let task = &mut self.tasks[slot];
        task.state = state;
        task.due_ms = due_ms;
        task.updated_ms = self.now_ms;
        self.enter_state(slot);
        self.touch_task(slot);
    }

    fn live_slot(&self, id: TaskId) -> Option<usize> {
        self.slot_by_id.get(&self.tasks, id)
    }

    fn slot_of(&self, id: TaskId) -> Result<usize, EngineError> {
        self.live_slot(id).ok_or(EngineError::TaskNotFound(id))
    }

    /// Moves the task at `slot` to the final `state`, then settles its
    /// dependents: on completion, those waiting only for it become ready (or
    /// delayed); otherwise they are cancelled, transitively, breadth first in id
    /// order. Tasks of queues without retention are forgotten at the end.
    fn finish(&mut self, slot: usize, state: TaskState, error: Option<Box<str>>) {
        // Cheap, so on in release: a task "finished" into a live state would keep
        // its slot, timer and index entries while its dependents are cancelled.
        assert!(state.is_final(), "finish called with the live state {}", state.as_str());
        let mut cascade = std::mem::take(&mut self.cascade);
        let mut finished = std::mem::take(&mut self.finished);
        self.finish_one(slot, state, error);
        cascade.push_back(slot);
        while let Some(slot) = cascade.pop_front() {
            finished.push(slot);
            let (id, state) = (self.tasks[slot].id, self.tasks[slot].state);
            let dependents = match self.tasks[slot].extra.as_mut() {
                Some(extra) => std::mem::take(&mut extra.dependents),
                None => Vec::new(),
            };
            for dependent in dependents {
                let Some(d) = self.live_slot(dependent) else { continue };
                if self.tasks[d].state != TaskState::Waiting {
                    continue; // cancelled directly, or by another dependency
                }
                if state == TaskState::Completed {
                    let task = &mut self.tasks[d];
                    let not_before = task.due_ms;
                    let extra = task.extra_mut();
                    extra.deps_pending -= 1;
                    if extra.deps_pending == 0 {
                        if not_before > self.now_ms {
                            self.set_state(d, TaskState::Delayed, not_before);
                        } else {
                            self.set_state(d, TaskState::Ready, NO_TIMER);
                        }
                    }
                } else {
                    let reason = format!("dependency {id} is {}", state.as_str()).into_boxed_str();
                    self.finish_one(d, TaskState::Cancelled, Some(reason));
                    cascade.push_back(d);
                }
            }
        }
        for &slot in &finished {
            if self.tasks[slot].due_ms == NO_TIMER {
                self.purge(slot);
            }
        }
        finished.clear();
        self.cascade = cascade;
        self.finished = finished;
    }

    fn finish_one(&mut self, slot: usize, state: TaskState, error: Option<Box<str>>) {
        if let Some(error) = error {
            self.tasks[slot].extra_mut().error = Some(error);
        }
        let config = &self.queues[self.tasks[slot].queue as usize].config;
        // Dead tasks wait for an operator, so they have their own retention.
        let retention_ms = if state == TaskState::Dead { config.dead_retention_ms } else { config.retention_ms };
        let due = if retention_ms == 0 { NO_TIMER } else { deadline(self.now_ms, retention_ms) };
        self.set_state(slot, state, due);
    }

    /// Forgets a finished task.
    fn purge(&mut self, slot: usize) {
        assert!(self.tasks[slot].state.is_final());
        self.leave_state(slot);
        let task = self.tasks.remove(slot);
        self.slot_by_id.remove(task.id, slot);
        self.payload_forgotten(&task);
        if self.changes.on {
            self.track_purge(&task);
        }
        let queue = &mut self.queues[task.queue as usize];
        if let Some(key) = task.extra.and_then(|e| e.key) {
            let removed = queue.keys.remove(&key);
            assert_eq!(removed, Some(task.id));
        }
        queue.group_release(task.group);
    }

    /// Records that `task` is being purged (before its group is released). Out of
    /// line: with tracking off, `purge` stays as small as it was.
    #[inline(never)]
    fn track_purge(&mut self, task: &Task) {
        self.changes.task_purged(task.id, task.track);
        let queue = &mut self.queues[task.queue as usize];
        if queue.release_forgets_history(task.group) {
            self.changes.queue_changed(queue);
        }
        if self.changes.needs_compaction() {
            let (slot_by_id, tasks) = (&self.slot_by_id, &self.tasks);
            self.changes.compact(|id| slot_by_id.contains(tasks, id));
        }
    }

    /// A leased task's attempt failed (or its lease expired): retry it after the
    /// backoff if `retry` and attempts remain, else bury it.
    fn end_attempt(&mut self, slot: usize, error: Box<str>, retry: bool) -> TaskState {
        let task = &self.tasks[slot];
        if retry && task.attempts < task.max_attempts {
            let config = &self.queues[task.queue as usize].config;
            let delay_ms = backoff_delay_ms(
                config.backoff_ms,
                config.backoff_max_ms,
                self.config.seed,
                task.id,
                task.attempts.into(),
            );
            self.tasks[slot].extra_mut().error = Some(error);
            if delay_ms == 0 {
                self.set_state(slot, TaskState::Ready, NO_TIMER);
                TaskState::Ready
            } else {
                self.set_state(slot, TaskState::Delayed, deadline(self.now_ms, delay_ms));
                TaskState::Delayed
            }
        } else {
            self.finish(slot, TaskState::Dead, Some(error));
            TaskState::Dead
        }
    }

    // ---- dequeue and leases -------------------------------------------------

    /// Leases up to `max` ready tasks, taking from each queue of `queues` in turn
    /// until `max` is reached, and appends them to `out`. A queue that does not
    /// exist is refused (`QueueNotFound`, naming the first), and nothing is leased.
    /// Each task gets a lease of `lease_ms` (or its queue's default) and a fresh
    /// token. Returns how many were leased.
    pub fn dequeue<S: AsRef<str>>(
        &mut self,
        queues: &[S],
        max: usize,
        lease_ms: Option<u64>,
        now_ms: u64,
        out: &mut Vec<LeasedTask>,
    ) -> Result<usize, EngineError> {
        let now = self.advance_clock(now_ms);
        if queues.is_empty() || queues.len() > DEQUEUE_QUEUES_COUNT_MAX {
            return Err(EngineError::invalid("queues", format!("name 1 to {DEQUEUE_QUEUES_COUNT_MAX} queues")));
        }
        for name in queues {
            validate_queue_name(name.as_ref(), "queues")?;
        }
        validate_range("max", max as u64, 1, DEQUEUE_TASKS_COUNT_MAX as u64)?;
        if let Some(lease_ms) = lease_ms {
            validate_range("lease_ms", lease_ms, LEASE_MS_MIN, LEASE_MS_MAX)?;
        }
        // A queue that does not exist is an error, not an empty answer: a
        // misspelt name would otherwise poll nothing forever (issue 19). Checked
        // before any lease, so a refused dequeue changes nothing.
        if let Some(missing) = queues.iter().find(|name| !self.queue_by_name.contains_key(name.as_ref())) {
            return Err(EngineError::QueueNotFound(missing.as_ref().to_owned()));
        }
        let mut leased = 0;
        for name in queues {
            let q = self.queue_by_name[name.as_ref()];
            let lease_ms = lease_ms.unwrap_or(self.queues[q as usize].config.lease_ms);
            while leased < max {
                match self.lease_next(q, lease_ms, now) {
                    Some(task) => out.push(task),
                    None => break,
                }
                leased += 1;
            }
        }
        Ok(leased)
    }

    fn lease_next(&mut self, q: QueueIx, lease_ms: u64, now: u64) -> Option<LeasedTask> {
        let queue = &mut self.queues[q as usize];
        let key = queue.ready_pop()?;
        let id = queue.id_of_key(key);
        let slot = self.slot_by_id.get(&self.tasks, id).expect("a ready task is live");
        let task = &mut self.tasks[slot];
        assert_eq!(task.state, TaskState::Ready);
        task.attempts += 1;
        task.state = TaskState::Leased;
        task.due_ms = deadline(now, lease_ms);
        task.updated_ms = now;
        queue.counts[TaskState::Ready as usize] -= 1;
        queue.counts[TaskState::Leased as usize] += 1;
        queue.on_leased(task.group);
        let inserted = self.timers.insert(timer_key(task.due_ms, id));
        assert!(inserted);
        if self.changes.on {
            // The task changed, and so did the queue's serving history.
            self.changes.task_changed(task);
            self.changes.queue_changed(queue);
        }
        Some(LeasedTask {
            id,
            queue: queue.name.clone(),
            payload: task.payload.to_bytes(),
            priority: task.priority,
            group: queue.group_name(task.group),
            attempt: task.attempts.into(),
            lease: lease_token(&self.config.lease_key, self.config.seed, id, lease_number(task)),
            lease_expires_at_ms: task.due_ms,
        })
    }

    /// The slot of task `id` if `lease` is its current, unexpired lease.
    fn leased_slot(&self, id: TaskId, lease: LeaseToken, now: u64) -> Result<usize, EngineError> {
        let slot = self.slot_of(id)?;
        let task = &self.tasks[slot];
        if task.state != TaskState::Leased {
            return Err(EngineError::NotLeased { id, state: task.state });
        }
        // Constant time: how far a guess matched must not show in the timing.
        if !tokens_equal(lease_token(&self.config.lease_key, self.config.seed, id, lease_number(task)), lease) {
            return Err(EngineError::LeaseMismatch(id));
        }
        if now >= task.due_ms {
            return Err(EngineError::LeaseExpired(id));
        }
        Ok(slot)
    }

    /// Completes a leased task with an optional result.
    pub fn complete(
        &mut self,
        id: TaskId,
        lease: LeaseToken,
        result: Option<Bytes>,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let now = self.advance_clock(now_ms);
        if let Some(result) = &result {
            validate_length("result", result.len(), RESULT_BYTES_MAX)?;
        }
        let slot = self.leased_slot(id, lease, now)?;
        if result.is_some() {
            self.tasks[slot].extra_mut().result = result;
        }
        self.finish(slot, TaskState::Completed, None);
        Ok(())
    }

    /// Fails a leased task's attempt. With `retry` and attempts left it is retried
    /// after the backoff; otherwise it is dead. Returns the new state.
    pub fn fail(
        &mut self,
        id: TaskId,
        lease: LeaseToken,
        error: &str,
        retry: bool,
        now_ms: u64,
    ) -> Result<TaskState, EngineError> {
        let now = self.advance_clock(now_ms);
        validate_length("error", error.len(), ERROR_MESSAGE_BYTES_MAX)?;
        let slot = self.leased_slot(id, lease, now)?;
        Ok(self.end_attempt(slot, error.into(), retry))
    }

    /// Extends a lease to `now + lease_ms`. Returns the new expiry.
    pub fn extend(&mut self, id: TaskId, lease: LeaseToken, lease_ms: u64, now_ms: u64) -> Result<u64, EngineError> {
        let now = self.advance_clock(now_ms);
        validate_range("lease_ms", lease_ms, LEASE_MS_MIN, LEASE_MS_MAX)?;
        let slot = self.leased_slot(id, lease, now)?;
        let expires_at_ms = deadline(now, lease_ms);
        // Same state, new timer; `updated_at_ms` keeps the time of the last state change.
        let updated_ms = self.tasks[slot].updated_ms;
        self.set_state(slot, TaskState::Leased, expires_at_ms);
        self.tasks[slot].updated_ms = updated_ms;
        Ok(expires_at_ms)
    }

    /// Cancels a task that has not finished (its lease, if any, becomes stale).
    /// Its dependents are cancelled too, transitively.
    pub fn cancel(&mut self, id: TaskId, now_ms: u64) -> Result<(), EngineError> {
        self.advance_clock(now_ms);
        let slot = self.slot_of(id)?;
        let state = self.tasks[slot].state;
        if state.is_final() {
            return Err(EngineError::TaskFinished { id, state });
        }
        self.finish(slot, TaskState::Cancelled, Some("cancelled by request".into()));
        Ok(())
    }

    /// Moves a dead task back to `ready` with fresh attempts (0 of its own
    /// `max_attempts`), as if just enqueued; its last error stays readable until
    /// the next failure replaces it. Dependents it had were cancelled when it
    /// died and stay cancelled. `TaskNotDead` for any other state (a task
    /// waiting out a retry backoff is `delayed`, not failed: there is nothing
    /// to revive).
    pub fn retry(&mut self, id: TaskId, now_ms: u64) -> Result<(), EngineError> {
        self.advance_clock(now_ms);
        let slot = self.slot_of(id)?;
        let task = &self.tasks[slot];
        if task.state != TaskState::Dead {
            return Err(EngineError::TaskNotDead { id, state: task.state });
        }
        if task.retries == u16::MAX {
            // 65,535 retries of one task: its lease numbers would repeat.
            return Err(EngineError::invalid("id", format!("task {id} has been retried {} times", u16::MAX)));
        }
        // Leave the dead index and the retention timer with the old counters,
        // then enter `ready` with the new ones.
        self.leave_state(slot);
        let task = &mut self.tasks[slot];
        task.retries += 1;
        task.attempts = 0;
        task.state = TaskState::Ready;
        task.due_ms = NO_TIMER;
        task.updated_ms = self.now_ms;
        self.enter_state(slot);
        self.touch_task(slot);
        Ok(())
    }

    /// Forgets a finished task now instead of at the end of its retention
    /// (its idempotency key is freed with it). `TaskNotFinished` for a task
    /// that has not finished: cancel it first.
    pub fn delete_task(&mut self, id: TaskId, now_ms: u64) -> Result<(), EngineError> {
        self.advance_clock(now_ms);
        let slot = self.slot_of(id)?;
        let state = self.tasks[slot].state;
        if !state.is_final() {
            return Err(EngineError::TaskNotFinished { id, state });
        }
        self.purge(slot);
        Ok(())
    }

    // ---- time -----------------------------------------------------------------

    /// Handles up to `work_max` timers that are due at `now_ms`, earliest first
    /// (ties by id): delayed tasks become ready, expired leases count as failed
    /// attempts (retried or buried), finished tasks past retention are forgotten.
    pub fn tick(&mut self, now_ms: u64, work_max: usize) -> TickReport {
        let now = self.advance_clock(now_ms);
        let mut report = TickReport::default();
        while let Some(&first) = self.timers.first() {
            let (due_ms, id) = ((first >> 64) as u64, first as u64);
            if due_ms > now {
                break;
            }
            if report.fired == work_max {
                report.more_due = true;
                break;
            }
            report.fired += 1;
            let slot = self.live_slot(id).expect("an indexed task is live");
            match self.tasks[slot].state {
                TaskState::Delayed => {
                    self.set_state(slot, TaskState::Ready, NO_TIMER);
                    report.promoted += 1;
                }
                TaskState::Leased => {
                    report.expired += 1;
                    if self.end_attempt(slot, "lease expired".into(), true) == TaskState::Dead {
                        report.dead += 1;
                    }
                }
                TaskState::Completed | TaskState::Dead | TaskState::Cancelled => {
                    self.purge(slot);
                    report.purged += 1;
                }
                state @ (TaskState::Waiting | TaskState::Ready) => {
                    panic!("timer armed for task {id} in state {}", state.as_str())
                }
            }
        }
        report
    }

    // ---- lookups --------------------------------------------------------------

    /// Everything about task `id`, or `None` if it does not exist (any more).
    /// The name of the queue task `id` is in, if the task exists: what a
    /// token limited to some queues is checked against for the operations
    /// that name a task by id (`auth::check_task_queues`). No copy.
    pub fn task_queue(&self, id: TaskId) -> Option<&str> {
        let task = &self.tasks[self.live_slot(id)?];
        Some(&self.queues[task.queue as usize].name)
    }

    pub fn task(&self, id: TaskId) -> Option<TaskView> {
        Some(self.view(self.live_slot(id)?))
    }

    /// Tasks of queue `queue` in `state` whose ids are above `after`, in id
    /// order, at most `limit` (1 to `LIST_TASKS_COUNT_MAX`). Dead tasks come
    /// from the queue's dead index (O(log n + limit)); other states are found
    /// by walking ids upward from `after`, at most `LIST_TASKS_SCAN_IDS_MAX`
    /// of them per call, so a page may hold fewer than `limit` tasks (even
    /// none) and still have a `next_cursor`. The cursor is an id, so it stays
    /// valid whatever comes and goes: tasks created after the walk passed
    /// their place are not listed, and a task that changes state may show on
    /// two pages or none, as in any listing of a live set.
    pub fn list_tasks(
        &self,
        queue: &str,
        state: TaskState,
        after: TaskId,
        limit: usize,
    ) -> Result<TaskPage, EngineError> {
        validate_queue_name(queue, "queue")?;
        validate_range("limit", limit as u64, 1, LIST_TASKS_COUNT_MAX as u64)?;
        let Some(&q) = self.queue_by_name.get(queue) else {
            return Err(EngineError::QueueNotFound(queue.to_owned()));
        };
        let mut page = Page { tasks: Vec::new(), bytes: 0, limit };
        if state == TaskState::Dead {
            let mut ids = self.queues[q as usize].dead.range(after.saturating_add(1)..);
            for &id in ids.by_ref() {
                if !page.push(self.view(self.live_slot(id).expect("a dead task is live"))) {
                    break;
                }
            }
            let more = ids.next().is_some();
            let next_cursor = if more { page.tasks.last().map(|t| t.id) } else { None };
            return Ok(TaskPage { tasks: page.tasks, next_cursor });
        }
        let start = after.saturating_add(1);
        let end = self.next_id.min(start.saturating_add(LIST_TASKS_SCAN_IDS_MAX));
        for id in start..end {
            let Some(slot) = self.live_slot(id) else { continue };
            let task = &self.tasks[slot];
            if task.queue == q && task.state == state && !page.push(self.view(slot)) {
                // Full: more may follow unless this was the last id issued.
                let next_cursor = (id + 1 < self.next_id).then_some(id);
                return Ok(TaskPage { tasks: page.tasks, next_cursor });
            }
        }
        let next_cursor = (end < self.next_id).then_some(end - 1);
        Ok(TaskPage { tasks: page.tasks, next_cursor })
    }

    fn view(&self, slot: usize) -> TaskView {
        let task = &self.tasks[slot];
        let id = task.id;
        let queue = &self.queues[task.queue as usize];
        let extra = task.extra.as_deref();
        let due = |state: TaskState| (task.state == state).then_some(task.due_ms);
        TaskView {
            id,
            queue: queue.name.clone(),
            state: task.state,
            payload: task.payload.to_bytes(),
            priority: task.priority,
            group: queue.group_name(task.group),
            depends_on: extra.map(|e| e.depends_on.to_vec()).unwrap_or_default(),
            key: extra.and_then(|e| e.key.as_deref()).map(str::to_owned),
            attempts: task.attempts.into(),
            max_attempts: task.max_attempts.into(),
            result: extra.and_then(|e| e.result.clone()),
            error: extra.and_then(|e| e.error.as_deref()).map(str::to_owned),
            created_at_ms: task.created_ms,
            updated_at_ms: task.updated_ms,
            not_before_ms: due(TaskState::Delayed).or(due(TaskState::Waiting)),
            lease_expires_at_ms: due(TaskState::Leased),
            purge_at_ms: if task.state.is_final() && task.due_ms != NO_TIMER { Some(task.due_ms) } else { None },
        }
    }

    /// Checks every index against the tasks. O(tasks); for tests and debugging.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_payload_accounting()?;
        let mut counts: HashMap<QueueIx, [u64; 7]> = HashMap::new();
        let mut ready: HashMap<QueueIx, Vec<(GroupIx, u128)>> = HashMap::new();
        let mut group_refs: HashMap<(QueueIx, GroupIx), (u32, u32)> = HashMap::new();
        let mut armed = 0usize;
        for (slot, task) in self.tasks.iter() {
            if self.slot_by_id.get(&self.tasks, task.id) != Some(slot) {
                return Err(format!("task {} not found by its id", task.id));
            }
            if task.id >= self.next_id {
                return Err(format!("task {} has an id not yet issued", task.id));
            }
            let queue = self.queues.get(task.queue as usize).ok_or(format!("task {} in a missing queue", task.id))?;
            counts.entry(task.queue).or_default()[task.state as usize] += 1;
            let refs = group_refs.entry((task.queue, task.group)).or_default();
            refs.0 += 1;
            if holds_slot(task.state, task.attempts) {
                refs.1 += 1;
            }
            if task.state == TaskState::Ready {
                ready.entry(task.queue).or_default().push((task.group, queue.ready_key(task.priority, task.id)));
            }
            if timer_armed(task.state, task.due_ms) {
                armed += 1;
                if !self.timers.contains(&timer_key(task.due_ms, task.id)) {
                    return Err(format!("task {} ({}) has no timer", task.id, task.state.as_str()));
                }
            }
            if task.state == TaskState::Waiting {
                let pending = task.extra.as_ref().map_or(0, |e| {
                    e.depends_on
                        .iter()
                        .filter(|d| self.live_slot(**d).is_some_and(|s| self.tasks[s].state != TaskState::Completed))
                        .count()
                });
                let counted = task.extra.as_ref().map_or(0, |e| e.deps_pending);
                if pending as u32 != counted || pending == 0 {
                    return Err(format!("task {} waits on {} deps, counted {}", task.id, pending, counted));
                }
            }
            if task.attempts > task.max_attempts {
                return Err(format!("task {} has {} attempts of {}", task.id, task.attempts, task.max_attempts));
            }
        }
        if armed != self.timers.len() {
            return Err(format!("{} timers armed, {} in the set", armed, self.timers.len()));
        }
        if self.slot_by_id.len() != self.tasks.len() {
            return Err("id map and slab differ in size".into());
        }
        for (q, queue) in self.queues.iter() {
            let q = q as QueueIx;
            if counts.get(&q).copied().unwrap_or_default() != queue.counts {
                return Err(format!("queue {} counts differ", queue.name));
            }
            queue.check_ready_index(ready.remove(&q).unwrap_or_default())?;
            if queue.dead.len() as u64 != queue.counts[TaskState::Dead as usize]
                || !queue.dead.iter().all(|&id| {
                    self.live_slot(id)
                        .is_some_and(|s| self.tasks[s].queue == q && self.tasks[s].state == TaskState::Dead)
                })
            {
                return Err(format!("queue {} dead index differs from its dead tasks", queue.name));
            }
            for (g, group) in queue.groups.iter() {
                let want = group_refs.get(&(q, g as GroupIx)).copied().unwrap_or_default();
                let unused = want.0 == 0 && !group.name.is_empty();
                if queue.group_counters(g as GroupIx) != want || unused {
                    return Err(format!(
                        "queue {} group {:?}: counters {:?}, tasks say {:?}",
                        queue.name,
                        group.name,
                        queue.group_counters(g as GroupIx),
                        want
                    ));
                }
                if queue.group_by_name(&group.name) != Some(g as GroupIx) {
                    return Err(format!("queue {} group {:?} not found by name", queue.name, group.name));
                }
            }
            for (key, id) in &queue.keys {
                let ok = self.live_slot(*id).is_some_and(|s| {
                    let t = &self.tasks[s];
                    t.queue == q && t.extra.as_ref().and_then(|e| e.key.as_deref()) == Some(&**key)
                });
                if !ok {
                    return Err(format!("key {key:?} maps to task {id}, which does not hold it"));
                }
            }
        }
        Ok(())
    }
}
