//! Snapshots of the engine as rows, taken incrementally, and restore from them.
//!
//! A checkpoint (written elsewhere, to RocksDB) keeps one row per key: the engine
//! row (`meta`), one row per queue (key: its name), one row per task (key: its id)
//! and one payload per task (key: its id). [`Engine::take_changes`] hands out the
//! rows that changed since the last call, and `None` for keys that are gone;
//! applying them in order to a key-value store (latest row per key, `None`
//! deletes) leaves exactly the rows of a full snapshot of the engine at the time
//! of the last call. [`Engine::restore`] turns such rows back into an engine that
//! gives the same reply to every later call as the original would have.
//!
//! **Why that holds.** A row holds the state that cannot be derived; everything
//! else is rebuilt by the same code that maintains it during normal operation:
//!
//! - engine row: format version, seed, next task id, clock. The engine has no
//!   stateful random generator: lease tokens and retry jitter are pure functions
//!   of (seed, task id, attempt) — tokens also of the secret lease key, which
//!   comes with the `EngineConfig` and is never written to a row — so the seed
//!   *is* the RNG state.
//! - queue row: settings, the queue's serve clock, and when each group that has a
//!   task and has been served was last served (round-robin order). Per-state
//!   counts, groups' task and slot counts, idempotency keys and the ready index
//!   are derived from the tasks.
//! - task row: every field of the task but its payload (queue by name, group by
//!   name, state, times, attempts, dependencies, key, result, error).
//!   Timers follow from state and due time, lease tokens from (key, seed, id, attempt).
//!   A dependency's `dependents` list and a waiting task's count of pending
//!   dependencies are derived: while a task is unfinished, its dependents are
//!   exactly the waiting tasks that name it (taken in id order, as they were
//!   created), and a waiting task's pending count is that of its dependencies
//!   still held and not completed.
//!
//! Slab slots (of tasks, queues and groups) and hash-map iteration order differ
//! after a restore, and nothing observable depends on them: serving order is by
//! keys that end in the task id, timers are ordered by (due, id), a dequeue's
//! group choice compares keys that are unique per task, and a forced queue delete
//! sorts its tasks by id.
//!
//! **Encoding.** Little-endian, fixed-width integers, a leading format-version
//! byte, strings as a length then UTF-8 bytes. Decoding checks every length against
//! the bytes that remain before reading, never allocates more than the row holds,
//! rejects trailing bytes, and checks every value against the engine's limits.
//!
//! **Tracking cost.** Off by default; then every mutation pays one predictable
//! branch. On, a task that changes is flagged and its id pushed once per
//! `take_changes` interval, a queue likewise (a lease changes its queue's serving
//! history, so a queue that serves is rewritten at each `take_changes`, O(its
//! served groups)). Rows are encoded only in `take_changes`, O(changed rows).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::limits::*;
use super::payload::Payload;
use super::queue::{Queue, UNGROUPED};
use super::types::{Discipline, EngineConfig, QueueConfig, TaskId, TaskState};
use super::{validate_queue_name, Engine, IdMap, Task, TaskExtra, NO_TIMER};

/// The version of every row this code writes. Version 2 added a queue's
/// `dead_retention_ms` and a task's operator `retries`; rows of version 1 are
/// still read (their queues get the default dead retention, their tasks 0
/// retries). A row of any other version is refused.
pub(super) const FORMAT_VERSION: u8 = 2;
/// The oldest row version this code reads.
const FORMAT_VERSION_MIN: u8 = 1;

/// `Task::track`: the id is in `Tracker::tasks` (changed since the last take).
pub(super) const TRACK_DIRTY: u8 = 1;
/// A row of the task may be in the store, so forgetting the task must delete it.
pub(super) const TRACK_STORED: u8 = 2;
/// The payload has not been handed out yet.
pub(super) const TRACK_PAYLOAD: u8 = 4;
/// A task just created.
pub(super) const TRACK_NEW: u8 = TRACK_PAYLOAD;

/// Purged ids left in `Tracker::tasks` before it is compacted (tasks created and
/// forgotten between two takes, e.g. every task of a queue without retention).
/// Compaction costs O(entries) and runs when at least half of them are stale,
/// so it is O(1) amortised and bounds the list to twice the live changed tasks
/// plus this.
const STALE_IDS_MAX: usize = 4096;

/// What changed since the last [`Engine::take_changes`] (or everything, the first
/// time after tracking is switched on). Entries are sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Engine-wide state needed to continue identically: format version, seed
    /// (the only random state), next task id, clock. Always present.
    pub meta: Vec<u8>,
    /// (queue name, Some(row)) for a created or changed queue, (name, None) for a deleted one.
    pub queues: Vec<(String, Option<Vec<u8>>)>,
    /// (task id, Some(row)) for a created or changed task, (id, None) for a purged one
    /// (forgotten after its retention, or removed with its queue). The row holds
    /// everything about the task except its payload (a completed task's result is in it).
    pub tasks: Vec<(TaskId, Option<Vec<u8>>)>,
    /// (task id, Some(payload)) when a task is created, (id, None) when it is purged.
    /// Payloads never change, so each is written once.
    pub payloads: Vec<(TaskId, Option<Bytes>)>,
    /// Every task with a lower id has had its payload in this or an earlier
    /// `Changes` (0 with tracking off): once those are durable in the store, the
    /// payloads may leave memory (`Engine::evict_payloads`).
    pub next_id: TaskId,
}

/// A payload as [`ChangeSink::payload`] gets it.
pub enum PayloadRow<'a> {
    /// A small payload, to be copied.
    Slice(&'a [u8]),
    /// A large one, which may be shared instead (`Bytes::clone`).
    Shared(&'a Bytes),
}

/// Where [`Engine::take_changes_into`] puts the rows that changed: `Some` for a
/// row created or changed, `None` for one deleted. It runs under whatever lock
/// guards the engine, so an implementation copies what it needs and returns.
pub trait ChangeSink {
    fn queue(&mut self, name: &str, row: Option<&[u8]>);
    fn task(&mut self, id: TaskId, row: Option<&[u8]>);
    fn payload(&mut self, id: TaskId, payload: Option<PayloadRow<'_>>);
}

impl ChangeSink for Changes {
    fn queue(&mut self, name: &str, row: Option<&[u8]>) {
        self.queues.push((name.to_string(), row.map(<[u8]>::to_vec)));
    }
    fn task(&mut self, id: TaskId, row: Option<&[u8]>) {
        self.tasks.push((id, row.map(<[u8]>::to_vec)));
    }
    fn payload(&mut self, id: TaskId, payload: Option<PayloadRow<'_>>) {
        let bytes = payload.map(|p| match p {
            PayloadRow::Slice(bytes) => Bytes::copy_from_slice(bytes),
            PayloadRow::Shared(bytes) => bytes.clone(),
        });
        self.payloads.push((id, bytes));
    }
}

impl Changes {
    /// No queue, task or payload entries (`meta` is always there).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.tasks.is_empty() && self.payloads.is_empty()
    }
}

/// A row that cannot be decoded, or rows that do not form a state the engine can
/// reach. The message names the row (queue name or task id) and says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snapshot: {}", self.0)
    }
}

impl std::error::Error for SnapshotError {}

/// The engine's record of what changed since the last take.
#[derive(Default)]
pub(super) struct Tracker {
    pub(super) on: bool,
    /// Ids of tasks flagged `TRACK_DIRTY`, in the order they changed; some may
    /// have been purged since (`stale` counts those).
    tasks: Vec<TaskId>,
    stale: usize,
    /// Ids of purged tasks whose rows may be in the store.
    purged: Vec<TaskId>,
    /// Names of changed or deleted queues. A set: a queue created and deleted
    /// over and over between two takes adds one entry, not one per creation.
    queues: BTreeSet<Arc<str>>,
}

// The recording functions are kept out of line: the callers' tracking-off path
// is then one test and branch, and stays small enough to be inlined as before.
// Measured with callgrind on `engine_cycles` (tracking off): +1.2 % instructions
// per cycle with them inlined, +0.8 % out of line.
impl Tracker {
    #[inline(never)]
    pub(super) fn task_changed(&mut self, task: &mut Task) {
        if task.track & TRACK_DIRTY == 0 {
            task.track |= TRACK_DIRTY;
            self.tasks.push(task.id);
        }
    }

    pub(super) fn task_purged(&mut self, id: TaskId, track: u8) {
        if track & TRACK_STORED != 0 {
            self.purged.push(id);
        }
        if track & TRACK_DIRTY != 0 {
            self.stale += 1;
        }
    }

    #[inline(never)]
    pub(super) fn queue_changed(&mut self, queue: &mut Queue) {
        if !queue.dirty {
            queue.dirty = true;
            self.queues.insert(queue.name.clone());
        }
    }

    pub(super) fn queue_deleted(&mut self, name: Arc<str>) {
        self.queues.insert(name);
    }

    /// Whether enough purged ids have piled up in `tasks` to drop them.
    #[inline]
    pub(super) fn needs_compaction(&self) -> bool {
        self.stale > STALE_IDS_MAX && self.stale * 2 > self.tasks.len()
    }

    pub(super) fn compact(&mut self, live: impl Fn(TaskId) -> bool) {
        self.tasks.retain(|&id| live(id));
        self.stale = 0;
    }
}

impl Engine {
    /// Switches change tracking on or off. Off by default: with it off the engine
    /// records nothing (one predictable branch per mutation).
    ///
    /// Switching it on (also when it is already on) marks every queue and task
    /// changed, so the next [`Engine::take_changes`] is a full snapshot with every
    /// payload. It cannot name rows that disappeared while tracking was off, so a
    /// store that receives it should start empty. Switching it off drops whatever
    /// was pending.
    pub fn set_change_tracking(&mut self, on: bool) {
        if !on {
            self.changes = Tracker::default();
            return;
        }
        let was_on = self.changes.on;
        self.changes.on = true;
        for (_, task) in self.tasks.iter_mut() {
            // Rows of these tasks may already be in the store: a purge must delete them.
            let track = if was_on { task.track } else { 0 };
            task.track = track | TRACK_STORED | TRACK_PAYLOAD;
            self.changes.task_changed(task);
        }
        for (_, queue) in self.queues.iter_mut() {
            if !was_on {
                queue.dirty = false;
            }
            self.changes.queue_changed(queue);
        }
    }

    /// Rows that changed since the last [`Engine::take_changes`] (tasks changed
    /// or purged; an upper bound: a task changed then purged counts twice).
    pub fn changes_pending(&self) -> usize {
        self.changes.tasks.len() + self.changes.purged.len()
    }

    /// Everything that changed since the last call (or since tracking was switched
    /// on), as rows to write, and clears it. With tracking off: only `meta`.
    /// O(changed rows). Tasks and payloads come sorted by id.
    ///
    /// The rows are copies (a large payload is shared), so that nothing is tied
    /// to the engine while they are written. The checkpointer uses
    /// [`Engine::take_changes_into`] instead, which copies each row once, into
    /// the store's write batch.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = Changes::default();
        let (meta, next_id) = self.take_changes_into(&mut changes);
        changes.meta = meta;
        changes.next_id = next_id;
        changes.tasks.sort_unstable_by_key(|&(id, _)| id);
        changes.payloads.sort_unstable_by_key(|&(id, _)| id);
        changes
    }

    /// [`Engine::take_changes`], handing each row to `sink` as it is encoded
    /// (in no particular order), and returning the `meta` row and
    /// [`Changes::next_id`]. Row encodings reuse one buffer: no allocation per
    /// row here.
    pub fn take_changes_into(&mut self, sink: &mut impl ChangeSink) -> (Vec<u8>, TaskId) {
        let meta = encode_meta(self);
        if !self.changes.on {
            return (meta, 0);
        }
        for name in std::mem::take(&mut self.changes.queues) {
            let row = self.queue_by_name.get(&name).map(|&q| {
                let queue = &mut self.queues[q as usize];
                queue.dirty = false;
                encode_queue(queue)
            });
            sink.queue(&name, row.as_deref());
        }
        let mut dirty = std::mem::take(&mut self.changes.tasks);
        let mut row = Vec::new();
        for &id in &dirty {
            let Some(slot) = self.live_slot(id) else { continue };
            let task = &mut self.tasks[slot];
            let track = task.track;
            task.track = TRACK_STORED;
            let task = &self.tasks[slot];
            encode_task_into(task, &self.queues[task.queue as usize], &mut row);
            sink.task(id, Some(&row));
            // A cold payload is already in the store, and `payload` is empty.
            if track & TRACK_PAYLOAD != 0 && !task.cold {
                sink.payload(id, Some(task.payload.row()));
            }
        }
        // Reuse the list's memory for the next interval, unless it is far larger
        // than this one needed (after a full snapshot, say).
        if dirty.capacity() <= 2 * dirty.len().max(STALE_IDS_MAX) {
            dirty.clear();
            self.changes.tasks = dirty;
        }
        self.changes.stale = 0;
        for id in self.changes.purged.drain(..) {
            sink.task(id, None);
            sink.payload(id, None);
        }
        (meta, self.next_id)
    }

    /// Rebuilds an engine from rows as [`Engine::take_changes`] produces them,
    /// accumulated in a key-value store (latest row per key, deleted keys absent),
    /// in any order. `config` supplies the limits; the seed, next id and clock come
    /// from `meta` (`config.seed` is ignored; `config.lease_key` is used). Change tracking is on in the result,
    /// with nothing pending.
    ///
    /// Every row is validated: one that cannot be decoded, or rows that are not a
    /// state the engine can reach (an unknown queue, a dependency on a later task,
    /// a waiting task with nothing to wait for, a missing payload, ...) give a
    /// `SnapshotError` naming the row, never a panic. O(rows log rows).
    pub fn restore(
        config: EngineConfig,
        meta: &[u8],
        queues: Vec<(String, Vec<u8>)>,
        tasks: Vec<(TaskId, Vec<u8>)>,
        payloads: Vec<(TaskId, Bytes)>,
    ) -> Result<Engine, SnapshotError> {
        let err = |row: String, why: String| SnapshotError(format!("{row}: {why}"));
        let meta = decode_meta(meta).map_err(|why| err("engine row".into(), why))?;
        if queues.len() > config.queues_count_max {
            return Err(err(
                "queues".into(),
                format!(
                    "{} rows, more than queues_count_max {}; raise the limit",
                    queues.len(),
                    config.queues_count_max
                ),
            ));
        }
        if tasks.len() > config.tasks_count_max {
            return Err(err(
                "tasks".into(),
                format!("{} rows, more than tasks_count_max {}; raise the limit", tasks.len(), config.tasks_count_max),
            ));
        }
        let mut engine = Engine::new(EngineConfig { seed: meta.seed, ..config });
        engine.next_id = meta.next_id;
        engine.now_ms = meta.now_ms;

        let mut histories = Vec::with_capacity(queues.len());
        for (name, row) in &queues {
            let row_name = || format!("queue {name:?}");
            validate_queue_name(name, "queue").map_err(|e| err(row_name(), e.to_string()))?;
            if engine.queue_by_name.contains_key(name.as_str()) {
                return Err(err(row_name(), "two rows".into()));
            }
            let (config, history) = decode_queue(row).map_err(|why| err(row_name(), why))?;
            let q = engine.create_queue(name, config).map_err(|e| err(row_name(), e.to_string()))?;
            engine.queues[q as usize].set_serve_clock(history.serve_clock);
            histories.push((q, history));
        }

        let mut payload_by_id: IdMap<Bytes> = IdMap::default();
        payload_by_id.reserve(payloads.len());
        for (id, payload) in payloads {
            if payload.len() > PAYLOAD_BYTES_MAX {
                return Err(err(format!("payload of task {id}"), format!("{} bytes", payload.len())));
            }
            if payload_by_id.insert(id, payload).is_some() {
                return Err(err(format!("payload of task {id}"), "two rows".into()));
            }
        }

        let mut tasks = tasks;
        tasks.sort_unstable_by_key(|&(id, _)| id);
        let mut slots: Vec<(TaskId, usize)> = Vec::with_capacity(tasks.len());
        for (id, row) in tasks {
            let row_name = || format!("task {id}");
            if id == 0 || id >= engine.next_id {
                return Err(err(row_name(), format!("id not yet issued (next id {})", engine.next_id)));
            }
            if slots.last().is_some_and(|&(last, _)| last == id) {
                return Err(err(row_name(), "two rows".into()));
            }
            let row = Bytes::from(row);
            let decoded = decode_task(&row).map_err(|why| err(row_name(), why))?;
            decoded.check(id, engine.now_ms).map_err(|why| err(row_name(), why))?;
            let Some(&q) = engine.queue_by_name.get(decoded.queue) else {
                return Err(err(row_name(), format!("in queue {:?}, which has no row", decoded.queue)));
            };
            // No payload given: it stays in the store (tiered storage, a load
            // within a memory budget) and is read back when needed.
            let payload = payload_by_id.remove(&id);
            let cold = payload.is_none();
            let payload = payload.map_or_else(Payload::empty, Payload::new);
            let queue = &mut engine.queues[q as usize];
            let key = decoded.key.map(Box::<str>::from);
            if let Some(key) = &key {
                if let Some(other) = queue.keys.insert(key.clone(), id) {
                    return Err(err(row_name(), format!("key {key:?} is also held by task {other}")));
                }
            }
            let group = queue.group_acquire(decoded.group.unwrap_or(UNGROUPED));
            let result = decoded.result.map(|range| row.slice(range));
            let error = decoded.error.map(Box::<str>::from);
            let extra = if decoded.depends_on.is_empty() && key.is_none() && result.is_none() && error.is_none() {
                None
            } else {
                Some(Box::new(TaskExtra {
                    depends_on: decoded.depends_on.into_boxed_slice(),
                    deps_pending: 0,
                    dependents: Vec::new(),
                    key,
                    result,
                    error,
                }))
            };
            let slot = engine.tasks.insert(Task {
                id,
                payload,
                due_ms: decoded.due_ms,
                created_ms: decoded.created_ms,
                updated_ms: decoded.updated_ms,
                queue: q,
                group,
                priority: decoded.priority,
                attempts: decoded.attempts,
                max_attempts: decoded.max_attempts,
                retries: decoded.retries,
                state: decoded.state,
                track: TRACK_STORED,
                cold,
                extra,
            });
            engine.slot_by_id.insert(&engine.tasks, slot);
            engine.payload_resident(slot);
            slots.push((id, slot));
        }
        if let Some(id) = payload_by_id.keys().min() {
            return Err(err(format!("payload of task {id}"), "no task row".into()));
        }

        // Serving history, before any task enters a ready index (round-robin
        // places a group by when it was last served).
        for (q, history) in histories {
            let queue = &mut engine.queues[q as usize];
            let row_name = format!("queue {:?}", queue.name);
            if history.ungrouped_last_served != 0
                && queue.set_last_served(UNGROUPED, history.ungrouped_last_served).is_none()
            {
                return Err(err(row_name, "history for ungrouped tasks, but it holds none".into()));
            }
            for (name, last_served) in history.groups {
                if queue.set_last_served(&name, last_served).is_none() {
                    return Err(err(row_name, format!("history for group {name:?}, which no task names")));
                }
            }
        }

        // Dependencies: derive each unfinished task's dependents and each waiting
        // task's pending count, checking that the states agree.
        for &(id, slot) in &slots {
            let state = engine.tasks[slot].state;
            let mut pending = 0u32;
            let deps_count = engine.tasks[slot].extra.as_ref().map_or(0, |e| e.depends_on.len());
            for k in 0..deps_count {
                let dep = engine.tasks[slot].extra.as_ref().map_or(0, |e| e.depends_on[k]);
                let Some(d) = engine.live_slot(dep) else { continue }; // completed and purged
                let dep_state = engine.tasks[d].state;
                let consistent = match (state, dep_state) {
                    (_, TaskState::Completed) | (TaskState::Cancelled, _) => true,
                    (TaskState::Waiting, TaskState::Dead | TaskState::Cancelled) => false,
                    (TaskState::Waiting, _) => {
                        pending += 1;
                        engine.tasks[d].extra_mut().dependents.push(id);
                        true
                    }
                    _ => false,
                };
                if !consistent {
                    return Err(err(
                        format!("task {id}"),
                        format!("is {} but its dependency {dep} is {}", state.as_str(), dep_state.as_str()),
                    ));
                }
            }
            if state == TaskState::Waiting {
                if pending == 0 {
                    return Err(err(format!("task {id}"), "is waiting but every dependency has completed".into()));
                }
                engine.tasks[slot].extra_mut().deps_pending = pending;
            }
        }

        for &(_, slot) in &slots {
            engine.enter_state(slot);
        }
        engine.changes.on = true;
        engine.check_invariants().map_err(|why| SnapshotError(format!("inconsistent rows: {why}")))?;
        Ok(engine)
    }

    /// Every row of a full snapshot, in key order: what a store holds after
    /// applying every `take_changes` since tracking was switched on. For tests.
    #[cfg(test)]
    pub(super) fn snapshot_rows(&self) -> Rows {
        let mut rows = Rows { meta: encode_meta(self), ..Rows::default() };
        for (name, &q) in &self.queue_names {
            rows.queues.insert(name.to_string(), encode_queue(&self.queues[q as usize]));
        }
        for (_, task) in self.tasks.iter() {
            rows.tasks.insert(task.id, encode_task(task, &self.queues[task.queue as usize]));
            rows.payloads.insert(task.id, task.payload.to_bytes());
        }
        rows
    }
}

/// A key-value store of rows, as a checkpoint holds them (tests).
#[cfg(test)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Rows {
    pub(super) meta: Vec<u8>,
    pub(super) queues: std::collections::BTreeMap<String, Vec<u8>>,
    pub(super) tasks: std::collections::BTreeMap<TaskId, Vec<u8>>,
    pub(super) payloads: std::collections::BTreeMap<TaskId, Bytes>,
}

#[cfg(test)]
impl Rows {
    /// Applies `changes` as a store would: latest row per key, `None` deletes.
    pub(super) fn apply(&mut self, changes: Changes) {
        self.meta = changes.meta;
        for (name, row) in changes.queues {
            match row {
                Some(row) => self.queues.insert(name, row),
                None => self.queues.remove(&name),
            };
        }
        for (id, row) in changes.tasks {
            match row {
                Some(row) => self.tasks.insert(id, row),
                None => self.tasks.remove(&id),
            };
        }
        for (id, payload) in changes.payloads {
            match payload {
                Some(payload) => self.payloads.insert(id, payload),
                None => self.payloads.remove(&id),
            };
        }
    }

    pub(super) fn restore(&self, config: EngineConfig) -> Result<Engine, SnapshotError> {
        Engine::restore(
            config,
            &self.meta,
            self.queues.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            self.tasks.iter().map(|(k, v)| (*k, v.clone())).collect(),
            self.payloads.iter().map(|(k, v)| (*k, v.clone())).collect(),
        )
    }
}

// ---- encoding -----------------------------------------------------------------
//
// engine row:  u8 version | u64 seed | u64 next_id | u64 now_ms
// queue row:   u8 version | u8 discipline | u64 lease_ms | u32 max_attempts
//              | u64 backoff_ms | u64 backoff_max_ms | u64 retention_ms
//              | u64 dead_retention_ms (version 2 on)
//              | u32 group_concurrency (0: none) | u64 serve_clock
//              | u64 ungrouped last served | u32 n | n × (u8 len, name, u64 last served)
// task row:    u8 version | u8 state | u8 flags | u8 len, queue name | i32 priority
//              | u16 attempts | u16 max_attempts | u64 created_ms | u64 updated_ms
//              | u64 due_ms | [retries: u16, 1 or more] | [group: u8 len, name]
//              | [deps: u16 n, n × u64 ascending]
//              | [key: u16 len, bytes] | [error: u16 len, bytes] | [result: u32 len, bytes]
//
// `due_ms` is the engine's one timer field: by state, the end of the delay
// (delayed), the earliest start (waiting), the lease expiry (leased) or the purge
// time (finished); u64::MAX while ready.

const FLAG_GROUP: u8 = 1;
const FLAG_DEPS: u8 = 2;
const FLAG_KEY: u8 = 4;
const FLAG_ERROR: u8 = 8;
const FLAG_RESULT: u8 = 16;
/// Version 2 on: the task was retried by an operator (`Engine::retry`).
const FLAG_RETRIES: u8 = 32;
const FLAGS_ALL: u8 = FLAG_GROUP | FLAG_DEPS | FLAG_KEY | FLAG_ERROR | FLAG_RESULT | FLAG_RETRIES;

const META_ROW_BYTES: usize = 1 + 8 + 8 + 8;
/// A served group's entry in a queue row: length byte, at least one name byte, u64.
const GROUP_ENTRY_BYTES_MIN: usize = 1 + 1 + 8;

// Every length fits its field.
const _: () = assert!(QUEUE_NAME_BYTES_MAX <= u8::MAX as usize && GROUP_NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(DEPENDS_ON_COUNT_MAX <= u16::MAX as usize);
const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX <= u16::MAX as usize && RESULT_BYTES_MAX <= u32::MAX as usize);

fn discipline_code(discipline: Discipline) -> u8 {
    match discipline {
        Discipline::Fifo => 0,
        Discipline::Lifo => 1,
        Discipline::Priority => 2,
        Discipline::RoundRobin => 3,
    }
}

fn discipline_of(code: u8) -> Option<Discipline> {
    Some(match code {
        0 => Discipline::Fifo,
        1 => Discipline::Lifo,
        2 => Discipline::Priority,
        3 => Discipline::RoundRobin,
        _ => return None,
    })
}

fn state_of(code: u8) -> Option<TaskState> {
    TaskState::ALL.get(usize::from(code)).copied()
}

fn encode_meta(engine: &Engine) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_ROW_BYTES);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&engine.config.seed.to_le_bytes());
    out.extend_from_slice(&engine.next_id.to_le_bytes());
    out.extend_from_slice(&engine.now_ms.to_le_bytes());
    out
}

fn encode_queue(queue: &Queue) -> Vec<u8> {
    let (serve_clock, ungrouped_last_served, groups) = queue.history();
    let c = &queue.config;
    let mut out = Vec::with_capacity(1 + 1 + 8 + 4 + 8 * 4 + 4 + 8 + 8 + 4 + groups.len() * 24);
    out.push(FORMAT_VERSION);
    out.push(discipline_code(c.discipline));
    out.extend_from_slice(&c.lease_ms.to_le_bytes());
    out.extend_from_slice(&c.max_attempts.to_le_bytes());
    out.extend_from_slice(&c.backoff_ms.to_le_bytes());
    out.extend_from_slice(&c.backoff_max_ms.to_le_bytes());
    out.extend_from_slice(&c.retention_ms.to_le_bytes());
    out.extend_from_slice(&c.dead_retention_ms.to_le_bytes());
    out.extend_from_slice(&c.group_concurrency.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&serve_clock.to_le_bytes());
    out.extend_from_slice(&ungrouped_last_served.to_le_bytes());
    out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
    for (name, last_served) in groups {
        put_str8(&mut out, name);
        out.extend_from_slice(&last_served.to_le_bytes());
    }
    out
}

#[cfg(test)]
fn encode_task(task: &Task, queue: &Queue) -> Vec<u8> {
    let mut out = Vec::new();
    encode_task_into(task, queue, &mut out);
    out
}

/// Encodes `task`'s row into `out`, replacing what it held.
fn encode_task_into(task: &Task, queue: &Queue, out: &mut Vec<u8>) {
    let group = &*queue.groups[task.group as usize].name;
    let extra = task.extra.as_deref();
    let deps: &[TaskId] = extra.map_or(&[], |e| &e.depends_on);
    let key = extra.and_then(|e| e.key.as_deref());
    let error = extra.and_then(|e| e.error.as_deref());
    let result = extra.and_then(|e| e.result.as_ref());
    let mut flags = 0;
    for (present, flag) in [
        (!group.is_empty(), FLAG_GROUP),
        (!deps.is_empty(), FLAG_DEPS),
        (key.is_some(), FLAG_KEY),
        (error.is_some(), FLAG_ERROR),
        (result.is_some(), FLAG_RESULT),
        (task.retries > 0, FLAG_RETRIES),
    ] {
        if present {
            flags |= flag;
        }
    }
    out.clear();
    out.reserve(
        40 + queue.name.len()
            + group.len()
            + 8 * deps.len()
            + key.map_or(0, str::len)
            + error.map_or(0, str::len)
            + result.map_or(0, Bytes::len),
    );
    out.push(FORMAT_VERSION);
    out.push(task.state as u8);
    out.push(flags);
    put_str8(out, &queue.name);
    out.extend_from_slice(&task.priority.to_le_bytes());
    out.extend_from_slice(&task.attempts.to_le_bytes());
    out.extend_from_slice(&task.max_attempts.to_le_bytes());
    out.extend_from_slice(&task.created_ms.to_le_bytes());
    out.extend_from_slice(&task.updated_ms.to_le_bytes());
    out.extend_from_slice(&task.due_ms.to_le_bytes());
    if task.retries > 0 {
        out.extend_from_slice(&task.retries.to_le_bytes());
    }
    if !group.is_empty() {
        put_str8(out, group);
    }
    if !deps.is_empty() {
        out.extend_from_slice(&(deps.len() as u16).to_le_bytes());
        for dep in deps {
            out.extend_from_slice(&dep.to_le_bytes());
        }
    }
    if let Some(key) = key {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    if let Some(error) = error {
        out.extend_from_slice(&(error.len() as u16).to_le_bytes());
        out.extend_from_slice(error.as_bytes());
    }
    if let Some(result) = result {
        out.extend_from_slice(&(result.len() as u32).to_le_bytes());
        out.extend_from_slice(result);
    }
}

/// A string of at most 255 bytes (queue and group names, bounded by limits).
fn put_str8(out: &mut Vec<u8>, text: &str) {
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

// ---- decoding -----------------------------------------------------------------

/// Reads a row front to back; every read checks the bytes that remain.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The row's format version (`FORMAT_VERSION_MIN..=FORMAT_VERSION`).
    version: u8,
}

impl<'a> Reader<'a> {
    /// Starts a row, checking its version byte.
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, String> {
        let mut reader = Reader { bytes, at: 0, version: 0 };
        let version = reader.u8("format version")?;
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err(format!("format version {version}; this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"));
        }
        reader.version = version;
        Ok(reader)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!("truncated: {what} needs {n} bytes, {} left", self.remaining()));
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    /// `len` bytes of UTF-8, where `len` is 1 to `bytes_max` (0 too if `empty_ok`).
    fn text(&mut self, len: usize, bytes_max: usize, empty_ok: bool, what: &str) -> Result<&'a str, String> {
        let min = usize::from(!empty_ok);
        if len < min || len > bytes_max {
            return Err(format!("{what} is {len} bytes; the limit is {min} to {bytes_max}"));
        }
        std::str::from_utf8(self.take(len, what)?).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn end(&self) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the end of the row")),
        }
    }
}

struct Meta {
    seed: u64,
    next_id: TaskId,
    now_ms: u64,
}

fn decode_meta(row: &[u8]) -> Result<Meta, String> {
    let mut r = Reader::new(row)?;
    let meta = Meta { seed: r.u64("seed")?, next_id: r.u64("next id")?, now_ms: r.u64("clock")? };
    r.end()?;
    if meta.next_id == 0 {
        return Err("next id 0 (ids start at 1)".into());
    }
    if meta.next_id > super::id_run::TASK_ID_END {
        return Err(format!("next id {} out of range (ids stay below 2^63)", meta.next_id));
    }
    Ok(meta)
}

/// A queue's serving history, as its row holds it.
struct History {
    serve_clock: u64,
    ungrouped_last_served: u64,
    groups: Vec<(String, u64)>,
}

fn range(what: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("{what} {value} is not between {min} and {max}"));
    }
    Ok(())
}

fn decode_queue(row: &[u8]) -> Result<(QueueConfig, History), String> {
    let mut r = Reader::new(row)?;
    let code = r.u8("discipline")?;
    let discipline = discipline_of(code).ok_or(format!("unknown discipline {code}"))?;
    let config = QueueConfig {
        discipline,
        lease_ms: r.u64("lease_ms")?,
        max_attempts: r.u32("max_attempts")?,
        backoff_ms: r.u64("backoff_ms")?,
        backoff_max_ms: r.u64("backoff_max_ms")?,
        retention_ms: r.u64("retention_ms")?,
        // Version 1 rows predate a dead retention of its own: such a queue
        // gets the default, as a queue created now does.
        dead_retention_ms: if r.version >= 2 { r.u64("dead_retention_ms")? } else { DEAD_RETENTION_MS_DEFAULT },
        group_concurrency: match r.u32("group_concurrency")? {
            0 => None,
            limit => Some(limit),
        },
    };
    range("lease_ms", config.lease_ms, LEASE_MS_MIN, LEASE_MS_MAX)?;
    range("max_attempts", config.max_attempts.into(), 1, MAX_ATTEMPTS_MAX.into())?;
    range("backoff_ms", config.backoff_ms, 0, BACKOFF_MS_MAX)?;
    range("backoff_max_ms", config.backoff_max_ms, config.backoff_ms, BACKOFF_MS_MAX)?;
    range("retention_ms", config.retention_ms, 0, RETENTION_MS_MAX)?;
    range("dead_retention_ms", config.dead_retention_ms, 0, RETENTION_MS_MAX)?;
    if let Some(limit) = config.group_concurrency {
        range("group_concurrency", limit.into(), 1, GROUP_CONCURRENCY_MAX.into())?;
    }
    let serve_clock = r.u64("serve clock")?;
    let ungrouped_last_served = r.u64("ungrouped last served")?;
    range("ungrouped last served", ungrouped_last_served, 0, serve_clock)?;
    let count = r.u32("served groups count")? as usize;
    if count > r.remaining() / GROUP_ENTRY_BYTES_MIN {
        return Err(format!("truncated: {count} served groups in {} bytes", r.remaining()));
    }
    let mut groups: Vec<(String, u64)> = Vec::with_capacity(count);
    // Each lease stamps one group with a new serve clock value, so the nonzero
    // values are distinct.
    let mut stamps: BTreeSet<u64> = BTreeSet::new();
    if ungrouped_last_served != 0 {
        stamps.insert(ungrouped_last_served);
    }
    for _ in 0..count {
        let len = r.u8("group name length")?;
        let name = r.text(len.into(), GROUP_NAME_BYTES_MAX, false, "group name")?;
        let last_served = r.u64("group last served")?;
        range("group last served", last_served, 1, serve_clock)?;
        if groups.last().is_some_and(|(last, _)| last.as_str() >= name) {
            return Err(format!("served group {name:?} out of order or repeated"));
        }
        if !stamps.insert(last_served) {
            return Err(format!("two groups last served at {last_served}"));
        }
        groups.push((name.to_owned(), last_served));
    }
    r.end()?;
    Ok((config, History { serve_clock, ungrouped_last_served, groups }))
}

/// A task row, decoded; strings borrow from the row, the result is a range of it.
struct DecodedTask<'a> {
    state: TaskState,
    queue: &'a str,
    priority: i32,
    attempts: u16,
    max_attempts: u16,
    retries: u16,
    created_ms: u64,
    updated_ms: u64,
    due_ms: u64,
    group: Option<&'a str>,
    depends_on: Vec<TaskId>,
    key: Option<&'a str>,
    error: Option<&'a str>,
    result: Option<std::ops::Range<usize>>,
}

fn decode_task(row: &[u8]) -> Result<DecodedTask<'_>, String> {
    let mut r = Reader::new(row)?;
    let code = r.u8("state")?;
    let state = state_of(code).ok_or(format!("unknown state {code}"))?;
    let flags = r.u8("flags")?;
    let flags_known = if r.version >= 2 { FLAGS_ALL } else { FLAGS_ALL & !FLAG_RETRIES };
    if flags & !flags_known != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let len = r.u8("queue name length")?;
    let queue = r.text(len.into(), QUEUE_NAME_BYTES_MAX, false, "queue name")?;
    let priority = r.i32("priority")?;
    let attempts = r.u16("attempts")?;
    let max_attempts = r.u16("max_attempts")?;
    let created_ms = r.u64("created_ms")?;
    let updated_ms = r.u64("updated_ms")?;
    let due_ms = r.u64("due_ms")?;
    let retries = if flags & FLAG_RETRIES != 0 {
        match r.u16("retries")? {
            0 => return Err("retries flagged but 0".into()),
            retries => retries,
        }
    } else {
        0
    };
    let group = if flags & FLAG_GROUP != 0 {
        let len = r.u8("group length")?;
        Some(r.text(len.into(), GROUP_NAME_BYTES_MAX, false, "group")?)
    } else {
        None
    };
    let mut depends_on = Vec::new();
    if flags & FLAG_DEPS != 0 {
        let count = usize::from(r.u16("depends_on count")?);
        if count == 0 || count > DEPENDS_ON_COUNT_MAX {
            return Err(format!("{count} dependencies; the limit is 1 to {DEPENDS_ON_COUNT_MAX}"));
        }
        let bytes = r.take(count * 8, "depends_on")?;
        depends_on = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
    }
    let key = if flags & FLAG_KEY != 0 {
        let len = r.u16("key length")?;
        Some(r.text(len.into(), IDEMPOTENCY_KEY_BYTES_MAX, false, "key")?)
    } else {
        None
    };
    let error = if flags & FLAG_ERROR != 0 {
        let len = r.u16("error length")?;
        Some(r.text(len.into(), ERROR_MESSAGE_BYTES_MAX, true, "error")?)
    } else {
        None
    };
    let result = if flags & FLAG_RESULT != 0 {
        let len = r.u32("result length")? as usize;
        if len > RESULT_BYTES_MAX {
            return Err(format!("result is {len} bytes; the limit is {RESULT_BYTES_MAX}"));
        }
        let start = r.at;
        r.take(len, "result")?;
        Some(start..start + len)
    } else {
        None
    };
    r.end()?;
    Ok(DecodedTask {
        state,
        queue,
        priority,
        attempts,
        max_attempts,
        retries,
        created_ms,
        updated_ms,
        due_ms,
        group,
        depends_on,
        key,
        error,
        result,
    })
}

impl DecodedTask<'_> {
    /// Checks the fields of task `id` against each other and the engine's clock:
    /// only what the engine can produce passes.
    fn check(&self, id: TaskId, now_ms: u64) -> Result<(), String> {
        range("max_attempts", self.max_attempts.into(), 1, MAX_ATTEMPTS_MAX.into())?;
        let (attempts_min, attempts_max): (u16, u16) = match self.state {
            TaskState::Waiting => (0, 0),
            TaskState::Delayed | TaskState::Ready => (0, self.max_attempts - 1),
            TaskState::Leased | TaskState::Completed | TaskState::Dead => (1, self.max_attempts),
            TaskState::Cancelled => (0, self.max_attempts),
        };
        range(
            &format!("attempts of a {} task", self.state.as_str()),
            self.attempts.into(),
            attempts_min.into(),
            attempts_max.into(),
        )?;
        if self.created_ms > self.updated_ms || self.updated_ms > now_ms {
            return Err(format!(
                "created at {}, updated at {}, clock at {now_ms}: out of order",
                self.created_ms, self.updated_ms
            ));
        }
        if (self.state == TaskState::Ready) != (self.due_ms == NO_TIMER) {
            return Err(format!("{} with due time {}", self.state.as_str(), self.due_ms));
        }
        let mut previous = 0;
        for &dep in &self.depends_on {
            if dep <= previous || dep >= id {
                return Err(format!("dependency {dep}: not an earlier task, or out of order"));
            }
            previous = dep;
        }
        // (A waiting task's dependencies are checked against their states once
        // every row is read.)
        if self.state == TaskState::Waiting && self.depends_on.is_empty() {
            return Err("waiting without dependencies".into());
        }
        if self.result.is_some() && self.state != TaskState::Completed {
            return Err(format!("a result on a {} task", self.state.as_str()));
        }
        Ok(())
    }
}
