//! Model-based property test of the queue engine.
//!
//! Random sequences of operations (and of time advancing) run against both the
//! real [`Engine`] and a deliberately naive reference model written from
//! `docs/engine.md`: every live task in one `BTreeMap`, the final state of every
//! purged task in another, queues in a `BTreeMap` by name, and linear scans for
//! everything (the next task to serve, the next timer due, a group's slot
//! holders, a task's dependents). The model shares no code with the engine apart
//! from `backoff_delay_ms`, the documented definition of retry jitter.
//!
//! After every step the two must agree on the step's result (errors by `code`),
//! on every task ever issued (`task(id)`, all fields, `None` once purged), on every
//! queue (`queues()`, `queue(name)`), and `check_invariants()` must hold.
//!
//! Lease tokens: the model issues its own (a counter). The harness remembers, per
//! task, each lease's (engine token, model token) pair, and operations name a
//! token abstractly (current, previous, bogus), translated per side.
//!
//! Cases: 1000 by default; `PROPTEST_CASES=n` overrides.
//! Run: `cargo test --release --test engine_model`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use taskqueuex::engine::*;

// ---------------------------------------------------------------------------
// Limits and defaults, as documented in docs/engine.md (not read from the engine).

const MIB: usize = 1 << 20;
const PAYLOAD_MAX: usize = MIB;
const RESULT_MAX: usize = MIB;
const ERROR_MAX: usize = 4 << 10;
const QUEUE_NAME_MAX: usize = 128;
const GROUP_MAX: usize = 128;
const KEY_MAX: usize = 256;
const DEPS_MAX: usize = 1024;
const BATCH_MAX: usize = 10_000;
const DEQUEUE_TASKS_MAX: usize = 1_000;
const DEQUEUE_QUEUES_MAX: usize = 64;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const LEASE_MAX: u64 = DAY_MS;
const DELAY_MAX: u64 = 366 * DAY_MS;
const ATTEMPTS_MAX: u32 = 1_000;
const BACKOFF_MAX: u64 = DAY_MS;
const RETENTION_MAX: u64 = 30 * DAY_MS;
const GROUP_CONCURRENCY_MAX: u32 = 1_000_000;
const LIST_TASKS_MAX: usize = 1_000;
/// Ids a listing of a state other than `dead` examines per page.
const LIST_SCAN_IDS: u64 = 32_768;
/// Payload, result and error bytes after which a listing page ends.
const LIST_PAGE_BYTES: usize = 4 * MIB;

fn default_queue_config() -> QueueConfig {
    QueueConfig {
        discipline: Discipline::Fifo,
        lease_ms: 30_000,
        max_attempts: 3,
        backoff_ms: 1_000,
        backoff_max_ms: 60_000,
        retention_ms: 3_600_000,
        dead_retention_ms: 7 * DAY_MS,
        group_concurrency: None,
    }
}

type Code = &'static str;
const INVALID: Code = "invalid_argument";
const TOO_LARGE: Code = "payload_too_large";
const TASK_NOT_FOUND: Code = "task_not_found";
const QUEUE_NOT_FOUND: Code = "queue_not_found";
const LEASE_MISMATCH: Code = "lease_mismatch";
const LEASE_EXPIRED: Code = "lease_expired";
const NOT_LEASED: Code = "not_leased";
const TASK_FINISHED: Code = "task_finished";
const QUEUE_NOT_EMPTY: Code = "queue_not_empty";
const CAPACITY: Code = "capacity_exceeded";
const TASK_NOT_DEAD: Code = "task_not_dead";
const TASK_NOT_FINISHED: Code = "task_not_finished";

/// A name over its length limit is `payload_too_large`; empty or with another
/// character, `invalid_argument`.
fn check_queue_name(name: &str) -> Result<(), Code> {
    if name.len() > QUEUE_NAME_MAX {
        return Err(TOO_LARGE);
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) {
        return Err(INVALID);
    }
    Ok(())
}

/// Group names and keys: over the limit `payload_too_large`, empty `invalid_argument`.
fn check_text(text: &str, bytes_max: usize) -> Result<(), Code> {
    if text.len() > bytes_max {
        return Err(TOO_LARGE);
    }
    if text.is_empty() {
        return Err(INVALID);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Debug)]
struct MTask {
    id: u64,
    queue: String,
    state: TaskState,
    payload: Bytes,
    priority: i32,
    group: Option<String>,
    depends_on: Vec<u64>,
    key: Option<String>,
    attempts: u32,
    max_attempts: u32,
    result: Option<Bytes>,
    error: Option<String>,
    created: u64,
    updated: u64,
    delay_ms: u64,
    /// While `delayed`: when it becomes ready.
    delayed_until: u64,
    /// While `leased`.
    lease_expires: u64,
    /// The model's token of the current (last) lease; 0: never leased.
    token: u64,
    /// Once final: when it is purged (`None`: the queue had no retention).
    purge_at: Option<u64>,
}

#[derive(Clone, Debug)]
struct MQueue {
    config: QueueConfig,
    /// Leases handed out by this queue so far.
    serve_clock: u64,
    /// When each group (None: the tasks without a group) was last served.
    last_served: BTreeMap<Option<String>, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MLeased {
    id: u64,
    queue: String,
    payload: Bytes,
    priority: i32,
    group: Option<String>,
    attempt: u32,
    lease_expires_at_ms: u64,
}

struct Model {
    seed: u64,
    tasks_max: usize,
    queues_max: usize,
    now: u64,
    next_id: u64,
    next_token: u64,
    tasks: BTreeMap<u64, MTask>,
    purged: BTreeMap<u64, TaskState>,
    queues: BTreeMap<String, MQueue>,
}

impl Model {
    fn new(seed: u64, tasks_max: usize, queues_max: usize) -> Model {
        Model {
            seed,
            tasks_max,
            queues_max,
            now: 0,
            next_id: 1,
            next_token: 0,
            tasks: BTreeMap::new(),
            purged: BTreeMap::new(),
            queues: BTreeMap::new(),
        }
    }

    fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// State of a task, live or purged; `None` if never issued.
    fn state_of(&self, id: u64) -> Option<TaskState> {
        self.tasks.get(&id).map(|t| t.state).or_else(|| self.purged.get(&id).copied())
    }

    fn holds_slot(t: &MTask) -> bool {
        t.state == TaskState::Leased || (t.state == TaskState::Delayed && t.attempts > 0)
    }

    fn slot_holders(&self, queue: &str, group: &str) -> usize {
        self.tasks
            .values()
            .filter(|t| t.queue == queue && t.group.as_deref() == Some(group) && Self::holds_slot(t))
            .count()
    }

    /// The timer of a task, by state.
    fn due(t: &MTask) -> Option<u64> {
        match t.state {
            TaskState::Delayed => Some(t.delayed_until),
            TaskState::Leased => Some(t.lease_expires),
            TaskState::Completed | TaskState::Dead | TaskState::Cancelled => t.purge_at,
            TaskState::Waiting | TaskState::Ready => None,
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.tasks.values().filter_map(Self::due).min()
    }

    fn validate_task(&self, task: &NewTask, position: Option<usize>) -> Result<(), Code> {
        if task.payload.len() > PAYLOAD_MAX {
            return Err(TOO_LARGE);
        }
        if let Some(g) = &task.group {
            check_text(g, GROUP_MAX)?;
        }
        if let Some(k) = &task.key {
            check_text(k, KEY_MAX)?;
        }
        if let Some(m) = task.max_attempts {
            if !(1..=ATTEMPTS_MAX).contains(&m) {
                return Err(INVALID);
            }
        }
        if task.delay_ms > DELAY_MAX {
            return Err(INVALID);
        }
        if task.depends_on.len() > DEPS_MAX {
            return Err(INVALID);
        }
        for dep in &task.depends_on {
            match *dep {
                DepRef::Task(id) => {
                    if !self.tasks.contains_key(&id) {
                        return Err(INVALID);
                    }
                }
                DepRef::Batch(k) => match position {
                    Some(p) if k < p => {}
                    _ => return Err(INVALID),
                },
            }
        }
        Ok(())
    }

    fn live_with_key(&self, queue: &str, key: Option<&str>) -> Option<Enqueued> {
        let key = key?;
        self.tasks.values().find(|t| t.queue == queue && t.key.as_deref() == Some(key)).map(|t| Enqueued {
            id: t.id,
            state: t.state,
            created: false,
        })
    }

    fn create_queue(&mut self, name: &str, config: QueueConfig) -> Result<(), Code> {
        if self.queues.len() >= self.queues_max {
            return Err(CAPACITY);
        }
        self.queues.insert(name.to_owned(), MQueue { config, serve_clock: 0, last_served: BTreeMap::new() });
        Ok(())
    }

    fn enqueue(&mut self, queue: &str, task: NewTask, now: u64) -> Result<Enqueued, Code> {
        self.advance(now);
        check_queue_name(queue)?;
        self.validate_task(&task, None)?;
        if self.queues.contains_key(queue) {
            if let Some(found) = self.live_with_key(queue, task.key.as_deref()) {
                return Ok(found);
            }
        }
        if self.tasks.len() + 1 > self.tasks_max {
            return Err(CAPACITY);
        }
        if !self.queues.contains_key(queue) {
            self.create_queue(queue, default_queue_config())?;
        }
        let deps = task
            .depends_on
            .iter()
            .map(|d| match *d {
                DepRef::Task(id) => id,
                DepRef::Batch(_) => unreachable!(),
            })
            .collect();
        Ok(self.create(queue, task, deps))
    }

    fn enqueue_batch(&mut self, queue: &str, tasks: Vec<NewTask>, now: u64) -> Result<Vec<Enqueued>, Code> {
        self.advance(now);
        check_queue_name(queue)?;
        if tasks.is_empty() || tasks.len() > BATCH_MAX {
            return Err(INVALID);
        }
        for (k, t) in tasks.iter().enumerate() {
            self.validate_task(t, Some(k))?;
        }
        if self.tasks.len() + tasks.len() > self.tasks_max {
            return Err(CAPACITY);
        }
        if !self.queues.contains_key(queue) {
            self.create_queue(queue, default_queue_config())?;
        }
        let mut results: Vec<Enqueued> = Vec::new();
        for t in tasks {
            if let Some(found) = self.live_with_key(queue, t.key.as_deref()) {
                results.push(found);
                continue;
            }
            let deps = t
                .depends_on
                .iter()
                .map(|d| match *d {
                    DepRef::Task(id) => id,
                    DepRef::Batch(k) => results[k].id,
                })
                .collect();
            let r = self.create(queue, t, deps);
            results.push(r);
        }
        Ok(results)
    }

    /// Creates a validated task.
    fn create(&mut self, queue: &str, task: NewTask, mut deps: Vec<u64>) -> Enqueued {
        let now = self.now;
        let id = self.next_id;
        self.next_id += 1;
        deps.sort();
        deps.dedup();
        // A dependency no longer held (a batch entry purged at birth) counts as cancelled.
        let dep_state = |d: u64| self.tasks.get(&d).map(|t| t.state).unwrap_or(TaskState::Cancelled);
        let doomed = deps.iter().copied().find(|&d| matches!(dep_state(d), TaskState::Dead | TaskState::Cancelled));
        let pending = deps.iter().any(|&d| dep_state(d) != TaskState::Completed);
        let config = self.queues[queue].config.clone();
        let mut t = MTask {
            id,
            queue: queue.to_owned(),
            state: TaskState::Ready,
            payload: task.payload,
            priority: task.priority,
            group: task.group,
            depends_on: deps,
            key: task.key,
            attempts: 0,
            max_attempts: task.max_attempts.unwrap_or(config.max_attempts),
            result: None,
            error: None,
            created: now,
            updated: now,
            delay_ms: task.delay_ms,
            delayed_until: 0,
            lease_expires: 0,
            token: 0,
            purge_at: None,
        };
        if let Some(d) = doomed {
            t.state = TaskState::Cancelled;
            t.error = Some(format!("dependency {d} is {}", dep_state(d).as_str()));
            t.purge_at = (config.retention_ms > 0).then(|| now + config.retention_ms);
        } else if pending {
            t.state = TaskState::Waiting;
        } else if now + task.delay_ms > now {
            t.state = TaskState::Delayed;
            t.delayed_until = now + task.delay_ms;
        }
        let state = t.state;
        self.tasks.insert(id, t);
        if state == TaskState::Cancelled && config.retention_ms == 0 {
            self.purge(id);
        }
        Enqueued { id, state, created: true }
    }

    /// Forgets a finished task (and with it its key, and its group if it was the last).
    fn purge(&mut self, id: u64) {
        let t = self.tasks.remove(&id).expect("purge of a live task");
        assert!(t.state.is_final());
        self.purged.insert(id, t.state);
        let still_used = self.tasks.values().any(|o| o.queue == t.queue && o.group == t.group);
        if !still_used {
            if let Some(q) = self.queues.get_mut(&t.queue) {
                q.last_served.remove(&t.group);
            }
        }
    }

    fn set_final(&mut self, id: u64, state: TaskState, error: Option<String>) {
        let now = self.now;
        let t = self.tasks.get_mut(&id).unwrap();
        let config = &self.queues[&t.queue].config;
        let retention = if state == TaskState::Dead { config.dead_retention_ms } else { config.retention_ms };
        t.state = state;
        if error.is_some() {
            t.error = error;
        }
        t.updated = now;
        t.purge_at = (retention > 0).then(|| now + retention);
    }

    /// Finishes a task, settles its dependents (breadth first for dead/cancelled),
    /// then purges what finished in queues without retention.
    fn finish(&mut self, root: u64, state: TaskState, error: Option<String>) {
        self.set_final(root, state, error);
        let mut todo = VecDeque::from([root]);
        let mut visited = Vec::new();
        while let Some(x) = todo.pop_front() {
            visited.push(x);
            let x_state = self.tasks[&x].state;
            let dependents: Vec<u64> = self
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Waiting && t.depends_on.contains(&x))
                .map(|t| t.id)
                .collect();
            for d in dependents {
                if self.tasks[&d].state != TaskState::Waiting {
                    continue;
                }
                if x_state == TaskState::Completed {
                    let all_done =
                        self.tasks[&d].depends_on.iter().all(|&dep| self.state_of(dep) == Some(TaskState::Completed));
                    if all_done {
                        let now = self.now;
                        let t = self.tasks.get_mut(&d).unwrap();
                        let not_before = t.created + t.delay_ms;
                        t.updated = now;
                        if not_before > now {
                            t.state = TaskState::Delayed;
                            t.delayed_until = not_before;
                        } else {
                            t.state = TaskState::Ready;
                        }
                    }
                } else {
                    self.set_final(d, TaskState::Cancelled, Some(format!("dependency {x} is {}", x_state.as_str())));
                    todo.push_back(d);
                }
            }
        }
        for v in visited {
            if self.tasks[&v].purge_at.is_none() {
                self.purge(v);
            }
        }
    }

    /// Which ready task of `queue` is served next, by scanning.
    fn pick(&self, queue: &str) -> Option<u64> {
        let q = &self.queues[queue];
        let eligible: Vec<&MTask> = self
            .tasks
            .values()
            .filter(|t| t.queue == queue && t.state == TaskState::Ready)
            .filter(|t| match (&t.group, q.config.group_concurrency) {
                (Some(g), Some(n)) => self.slot_holders(queue, g) < n as usize,
                _ => true,
            })
            .collect();
        match q.config.discipline {
            Discipline::Fifo => eligible.iter().map(|t| t.id).min(),
            Discipline::Lifo => eligible.iter().map(|t| t.id).max(),
            Discipline::Priority => eligible.iter().min_by_key(|t| (Reverse(t.priority), t.id)).map(|t| t.id),
            Discipline::RoundRobin => {
                // Each group with an eligible task: (last served, oldest ready id).
                let mut groups: BTreeMap<&Option<String>, u64> = BTreeMap::new();
                for t in &eligible {
                    let oldest = groups.entry(&t.group).or_insert(t.id);
                    *oldest = (*oldest).min(t.id);
                }
                groups
                    .iter()
                    .min_by_key(|(g, oldest)| (q.last_served.get(**g).copied().unwrap_or(0), **oldest))
                    .map(|(_, oldest)| *oldest)
            }
        }
    }

    fn dequeue(
        &mut self,
        queues: &[String],
        max: usize,
        lease_ms: Option<u64>,
        now: u64,
    ) -> Result<Vec<(MLeased, u64)>, Code> {
        self.advance(now);
        if queues.is_empty() || queues.len() > DEQUEUE_QUEUES_MAX {
            return Err(INVALID);
        }
        for q in queues {
            check_queue_name(q)?;
        }
        if !(1..=DEQUEUE_TASKS_MAX).contains(&max) {
            return Err(INVALID);
        }
        if let Some(l) = lease_ms {
            if !(1..=LEASE_MAX).contains(&l) {
                return Err(INVALID);
            }
        }
        if queues.iter().any(|name| !self.queues.contains_key(name)) {
            return Err(QUEUE_NOT_FOUND);
        }
        let mut out = Vec::new();
        for name in queues {
            let Some(q) = self.queues.get(name) else { unreachable!("checked above") };
            let lease = lease_ms.unwrap_or(q.config.lease_ms);
            while out.len() < max {
                let Some(id) = self.pick(name) else { break };
                self.next_token += 1;
                let token = self.next_token;
                let now = self.now;
                let t = self.tasks.get_mut(&id).unwrap();
                t.attempts += 1;
                t.state = TaskState::Leased;
                t.lease_expires = now + lease;
                t.updated = now;
                t.token = token;
                let leased = MLeased {
                    id,
                    queue: t.queue.clone(),
                    payload: t.payload.clone(),
                    priority: t.priority,
                    group: t.group.clone(),
                    attempt: t.attempts,
                    lease_expires_at_ms: t.lease_expires,
                };
                let group = t.group.clone();
                let q = self.queues.get_mut(name).unwrap();
                q.serve_clock += 1;
                q.last_served.insert(group, q.serve_clock);
                out.push((leased, token));
            }
        }
        Ok(out)
    }

    fn check_lease(&self, id: u64, token: u64) -> Result<(), Code> {
        let t = self.tasks.get(&id).ok_or(TASK_NOT_FOUND)?;
        if t.state != TaskState::Leased {
            return Err(NOT_LEASED);
        }
        if t.token != token {
            return Err(LEASE_MISMATCH);
        }
        if self.now >= t.lease_expires {
            return Err(LEASE_EXPIRED);
        }
        Ok(())
    }

    fn complete(&mut self, id: u64, token: u64, result: Option<Bytes>, now: u64) -> Result<(), Code> {
        self.advance(now);
        if result.as_ref().is_some_and(|r| r.len() > RESULT_MAX) {
            return Err(TOO_LARGE);
        }
        self.check_lease(id, token)?;
        if result.is_some() {
            self.tasks.get_mut(&id).unwrap().result = result;
        }
        self.finish(id, TaskState::Completed, None);
        Ok(())
    }

    /// A failed attempt: retry after the backoff if asked and attempts remain, else dead.
    fn end_attempt(&mut self, id: u64, error: String, retry: bool) -> TaskState {
        let t = &self.tasks[&id];
        if retry && t.attempts < t.max_attempts {
            let c = &self.queues[&t.queue].config;
            let delay = backoff_delay_ms(c.backoff_ms, c.backoff_max_ms, self.seed, id, t.attempts);
            let now = self.now;
            let t = self.tasks.get_mut(&id).unwrap();
            t.error = Some(error);
            t.updated = now;
            if delay == 0 {
                t.state = TaskState::Ready;
            } else {
                t.state = TaskState::Delayed;
                t.delayed_until = now + delay;
            }
            t.state
        } else {
            self.finish(id, TaskState::Dead, Some(error));
            TaskState::Dead
        }
    }

    fn fail(&mut self, id: u64, token: u64, error: &str, retry: bool, now: u64) -> Result<TaskState, Code> {
        self.advance(now);
        if error.len() > ERROR_MAX {
            return Err(TOO_LARGE);
        }
        self.check_lease(id, token)?;
        Ok(self.end_attempt(id, error.to_owned(), retry))
    }

    fn extend(&mut self, id: u64, token: u64, lease_ms: u64, now: u64) -> Result<u64, Code> {
        self.advance(now);
        if !(1..=LEASE_MAX).contains(&lease_ms) {
            return Err(INVALID);
        }
        self.check_lease(id, token)?;
        let now = self.now;
        let t = self.tasks.get_mut(&id).unwrap();
        t.lease_expires = now + lease_ms;
        // `updated_at_ms` is the last state change; an extension changes no state.
        Ok(t.lease_expires)
    }

    fn cancel(&mut self, id: u64, now: u64) -> Result<(), Code> {
        self.advance(now);
        let t = self.tasks.get(&id).ok_or(TASK_NOT_FOUND)?;
        if t.state.is_final() {
            return Err(TASK_FINISHED);
        }
        self.finish(id, TaskState::Cancelled, Some("cancelled by request".to_owned()));
        Ok(())
    }

    fn retry(&mut self, id: u64, now: u64) -> Result<(), Code> {
        self.advance(now);
        let now = self.now;
        let t = self.tasks.get_mut(&id).ok_or(TASK_NOT_FOUND)?;
        if t.state != TaskState::Dead {
            return Err(TASK_NOT_DEAD);
        }
        t.state = TaskState::Ready;
        t.attempts = 0;
        t.updated = now;
        t.purge_at = None;
        Ok(())
    }

    fn delete_task(&mut self, id: u64, now: u64) -> Result<(), Code> {
        self.advance(now);
        let t = self.tasks.get(&id).ok_or(TASK_NOT_FOUND)?;
        if !t.state.is_final() {
            return Err(TASK_NOT_FINISHED);
        }
        self.purge(id);
        Ok(())
    }

    /// A page: the tasks of `queue` in `state` above `after` in id order, at
    /// most `limit` or until their bytes reach the page bound; dead tasks by
    /// their own index, other states within a window of ids.
    fn list_tasks(&self, queue: &str, state: TaskState, after: u64, limit: usize) -> Result<TaskPage, Code> {
        check_queue_name(queue)?;
        if !(1..=LIST_TASKS_MAX).contains(&limit) {
            return Err(INVALID);
        }
        if !self.queues.contains_key(queue) {
            return Err(QUEUE_NOT_FOUND);
        }
        let end = if state == TaskState::Dead { u64::MAX } else { after.saturating_add(1 + LIST_SCAN_IDS) };
        let matching: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| t.id > after && t.id < end && t.queue == queue && t.state == state)
            .map(|t| t.id)
            .collect();
        let (mut tasks, mut bytes) = (Vec::new(), 0);
        for &id in &matching {
            let view = self.view(id).unwrap();
            bytes += view.payload.len()
                + view.result.as_ref().map_or(0, Bytes::len)
                + view.error.as_ref().map_or(0, String::len);
            tasks.push(view);
            if tasks.len() == limit || bytes >= LIST_PAGE_BYTES {
                break;
            }
        }
        let full = tasks.len() == limit || bytes >= LIST_PAGE_BYTES;
        let next_cursor = if state == TaskState::Dead {
            tasks.last().map(|t| t.id).filter(|_| matching.len() > tasks.len())
        } else if full {
            let last = tasks.last().unwrap().id;
            (last + 1 < self.next_id).then_some(last)
        } else {
            (end < self.next_id).then_some(end - 1)
        };
        Ok(TaskPage { tasks, next_cursor })
    }

    fn tick(&mut self, now: u64, work_max: usize) -> TickReport {
        self.advance(now);
        let mut r = TickReport::default();
        loop {
            let next = self
                .tasks
                .values()
                .filter_map(|t| Self::due(t).map(|d| (d, t.id)))
                .filter(|&(d, _)| d <= self.now)
                .min();
            let Some((_, id)) = next else { break };
            if r.fired == work_max {
                r.more_due = true;
                break;
            }
            r.fired += 1;
            match self.tasks[&id].state {
                TaskState::Delayed => {
                    let now = self.now;
                    let t = self.tasks.get_mut(&id).unwrap();
                    t.state = TaskState::Ready;
                    t.updated = now;
                    r.promoted += 1;
                }
                TaskState::Leased => {
                    r.expired += 1;
                    if self.end_attempt(id, "lease expired".to_owned(), true) == TaskState::Dead {
                        r.dead += 1;
                    }
                }
                TaskState::Completed | TaskState::Dead | TaskState::Cancelled => {
                    self.purge(id);
                    r.purged += 1;
                }
                s => panic!("model: timer for a task in state {s:?}"),
            }
        }
        r
    }

    fn configure(&mut self, name: &str, patch: &QueueConfigPatch, now: u64) -> Result<QueueConfig, Code> {
        self.advance(now);
        check_queue_name(name)?;
        let mut c = self.queues.get(name).map(|q| q.config.clone()).unwrap_or_else(default_queue_config);
        if let Some(d) = patch.discipline {
            c.discipline = d;
        }
        if let Some(v) = patch.lease_ms {
            if !(1..=LEASE_MAX).contains(&v) {
                return Err(INVALID);
            }
            c.lease_ms = v;
        }
        if let Some(v) = patch.max_attempts {
            if !(1..=ATTEMPTS_MAX).contains(&v) {
                return Err(INVALID);
            }
            c.max_attempts = v;
        }
        if let Some(v) = patch.backoff_ms {
            if v > BACKOFF_MAX {
                return Err(INVALID);
            }
            c.backoff_ms = v;
        }
        if let Some(v) = patch.backoff_max_ms {
            if v > BACKOFF_MAX {
                return Err(INVALID);
            }
            c.backoff_max_ms = v;
        }
        if let Some(v) = patch.retention_ms {
            if v > RETENTION_MAX {
                return Err(INVALID);
            }
            c.retention_ms = v;
        }
        if let Some(v) = patch.dead_retention_ms {
            if v > RETENTION_MAX {
                return Err(INVALID);
            }
            c.dead_retention_ms = v;
        }
        if let Some(v) = patch.group_concurrency {
            if let Some(n) = v {
                if !(1..=GROUP_CONCURRENCY_MAX).contains(&n) {
                    return Err(INVALID);
                }
            }
            c.group_concurrency = v;
        }
        if c.backoff_max_ms < c.backoff_ms {
            return Err(INVALID);
        }
        match self.queues.get_mut(name) {
            Some(q) => q.config = c.clone(),
            None => self.create_queue(name, c.clone())?,
        }
        Ok(c)
    }

    fn delete_queue(&mut self, name: &str, force: bool, now: u64) -> Result<(), Code> {
        self.advance(now);
        check_queue_name(name)?;
        if !self.queues.contains_key(name) {
            return Err(QUEUE_NOT_FOUND);
        }
        let members: Vec<u64> = self.tasks.values().filter(|t| t.queue == name).map(|t| t.id).collect();
        let unfinished = members.iter().filter(|id| !self.tasks[id].state.is_final()).count();
        if unfinished > 0 && !force {
            return Err(QUEUE_NOT_EMPTY);
        }
        for id in &members {
            if self.tasks.get(id).is_some_and(|t| !t.state.is_final()) {
                self.finish(*id, TaskState::Cancelled, Some("queue deleted".to_owned()));
            }
        }
        for id in &members {
            if self.tasks.contains_key(id) {
                self.purge(*id);
            }
        }
        self.queues.remove(name);
        Ok(())
    }

    // ---- views ----

    fn view(&self, id: u64) -> Option<TaskView> {
        let t = self.tasks.get(&id)?;
        Some(TaskView {
            id,
            queue: Arc::from(t.queue.as_str()),
            state: t.state,
            payload: t.payload.clone(),
            priority: t.priority,
            group: t.group.as_deref().map(Arc::from),
            depends_on: t.depends_on.clone(),
            key: t.key.clone(),
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            result: t.result.clone(),
            error: t.error.clone(),
            created_at_ms: t.created,
            updated_at_ms: t.updated,
            not_before_ms: match t.state {
                TaskState::Waiting => Some(t.created + t.delay_ms),
                TaskState::Delayed => Some(t.delayed_until),
                _ => None,
            },
            lease_expires_at_ms: (t.state == TaskState::Leased).then_some(t.lease_expires),
            purge_at_ms: if t.state.is_final() { t.purge_at } else { None },
        })
    }

    fn queue_info(&self, name: &str) -> Option<QueueInfo> {
        let q = self.queues.get(name)?;
        let mut counts = [0u64; 7];
        for t in self.tasks.values().filter(|t| t.queue == name) {
            counts[t.state as usize] += 1;
        }
        Some(QueueInfo { name: Arc::from(name), config: q.config.clone(), counts: StateCounts(counts) })
    }

    fn queue_infos(&self) -> Vec<QueueInfo> {
        self.queues.keys().map(|n| self.queue_info(n).unwrap()).collect()
    }
}

// ---------------------------------------------------------------------------
// Operations, as generated: tasks and tokens are named abstractly and resolved
// against the run's state when executed (so shrinking keeps them meaningful).

#[derive(Clone, Debug)]
enum Blob {
    Len(u8),
    Max,
    TooBig,
}

#[derive(Clone, Debug)]
enum Text {
    Msg(u8),
    Max,
    TooBig,
}

#[derive(Clone, Debug)]
enum DepSpec {
    /// One of the tasks held now (else any issued id).
    Live(Index),
    /// One of the finished tasks held now (else any held).
    Finished(Index),
    /// One of the ids issued so far.
    Issued(Index),
    /// 0, or an id not issued yet.
    Unissued(u8),
    /// `#k` (only valid in a batch, before the entry).
    Batch(usize),
}

#[derive(Clone, Debug)]
struct TaskSpec {
    payload: Blob,
    priority: i32,
    group: Option<String>,
    delay_ms: u64,
    max_attempts: Option<u32>,
    deps: Vec<DepSpec>,
    key: Option<String>,
}

#[derive(Clone, Debug)]
enum TaskSel {
    /// One of the tasks the model has leased now (else any issued).
    Leased(Index),
    /// One of the dead tasks the model holds now (else any issued).
    Dead(Index),
    /// Any id issued so far.
    Issued(Index),
    /// 0, or an id never issued.
    Unknown(u8),
}

#[derive(Clone, Copy, Debug)]
enum TokRef {
    Current,
    Previous,
    Bogus,
}

#[derive(Clone, Debug)]
enum Op {
    Enqueue { queue: String, task: TaskSpec },
    Batch { queue: String, tasks: Vec<TaskSpec> },
    Dequeue { queues: Vec<String>, max: usize, lease_ms: Option<u64> },
    Complete { task: TaskSel, token: TokRef, result: Option<Blob> },
    Fail { task: TaskSel, token: TokRef, error: Text, retry: bool },
    Extend { task: TaskSel, token: TokRef, lease_ms: u64 },
    Cancel { task: TaskSel },
    Retry { task: TaskSel },
    DeleteTask { task: TaskSel },
    List { queue: String, state: TaskState, after: Option<Index>, limit: usize },
    Tick { work_max: usize },
    Configure { queue: String, patch: QueueConfigPatch },
    Delete { queue: String, force: bool },
}

#[derive(Clone, Debug)]
struct Step {
    /// Time advance before the step.
    dt: u64,
    /// Pass a `now` 30 ms behind the latest (the engine must keep its clock).
    back: bool,
    op: Op,
}

#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    tasks_max: usize,
    queues_max: usize,
    steps: Vec<Step>,
}

fn big_bytes() -> &'static Bytes {
    static BIG: OnceLock<Bytes> = OnceLock::new();
    BIG.get_or_init(|| Bytes::from(vec![7u8; MIB + 1]))
}

fn blob(b: &Blob) -> Bytes {
    match *b {
        Blob::Len(n) => Bytes::from(vec![n; usize::from(n % 4)]),
        Blob::Max => big_bytes().slice(..MIB),
        Blob::TooBig => big_bytes().clone(),
    }
}

fn text(t: &Text) -> String {
    match *t {
        Text::Msg(n) => format!("boom {n}"),
        Text::Max => "e".repeat(ERROR_MAX),
        Text::TooBig => "e".repeat(ERROR_MAX + 1),
    }
}

fn short(s: &str) -> String {
    if s.len() > 24 {
        format!("<{} bytes>", s.len())
    } else {
        format!("{s:?}")
    }
}

fn show_task(t: &NewTask) -> String {
    let mut s = format!("NewTask {{ payload: <{} bytes>", t.payload.len());
    if t.priority != 0 {
        let _ = write!(s, ", priority: {}", t.priority);
    }
    if let Some(g) = &t.group {
        let _ = write!(s, ", group: {}", short(g));
    }
    if t.delay_ms != 0 {
        let _ = write!(s, ", delay_ms: {}", t.delay_ms);
    }
    if let Some(m) = t.max_attempts {
        let _ = write!(s, ", max_attempts: {m}");
    }
    if !t.depends_on.is_empty() {
        let _ = write!(s, ", depends_on: {:?}", t.depends_on);
    }
    if let Some(k) = &t.key {
        let _ = write!(s, ", key: {}", short(k));
    }
    s + " }"
}

/// Everything the harness keeps besides the engine and the model.
struct Run {
    engine: Engine,
    model: Model,
    /// Per task, the (engine, model) token of each lease, oldest first.
    tokens: BTreeMap<u64, Vec<(u64, u64)>>,
    /// The calls made so far, resolved, for failure messages.
    log: Vec<String>,
}

impl Run {
    fn issued(&self, ix: &Index) -> u64 {
        let n = self.model.next_id - 1;
        if n == 0 {
            1
        } else {
            1 + ix.index(n as usize) as u64
        }
    }

    fn live(&self, ix: &Index) -> u64 {
        match self.model.tasks.len() {
            0 => self.issued(ix),
            n => *self.model.tasks.keys().nth(ix.index(n)).unwrap(),
        }
    }

    fn finished(&self, ix: &Index) -> u64 {
        let done: Vec<u64> = self.model.tasks.values().filter(|t| t.state.is_final()).map(|t| t.id).collect();
        match done.len() {
            0 => self.live(ix),
            n => done[ix.index(n)],
        }
    }

    fn unissued(&self, n: u8) -> u64 {
        if n == 0 {
            0
        } else {
            self.model.next_id + u64::from(n) - 1
        }
    }

    fn select(&self, sel: &TaskSel) -> u64 {
        match sel {
            TaskSel::Leased(ix) => {
                let leased: Vec<u64> =
                    self.model.tasks.values().filter(|t| t.state == TaskState::Leased).map(|t| t.id).collect();
                if leased.is_empty() {
                    self.issued(ix)
                } else {
                    leased[ix.index(leased.len())]
                }
            }
            TaskSel::Dead(ix) => {
                let dead: Vec<u64> =
                    self.model.tasks.values().filter(|t| t.state == TaskState::Dead).map(|t| t.id).collect();
                if dead.is_empty() {
                    self.issued(ix)
                } else {
                    dead[ix.index(dead.len())]
                }
            }
            TaskSel::Issued(ix) => self.issued(ix),
            TaskSel::Unknown(n) => self.unissued(*n),
        }
    }

    fn token(&self, id: u64, r: TokRef) -> (u64, u64) {
        let history = self.tokens.get(&id);
        let pick = match r {
            TokRef::Current => history.and_then(|h| h.last().copied()),
            TokRef::Previous => history.and_then(|h| h.len().checked_sub(2).map(|i| h[i])),
            TokRef::Bogus => None,
        };
        pick.unwrap_or((u64::MAX, u64::MAX))
    }

    fn new_task(&self, spec: &TaskSpec) -> NewTask {
        NewTask {
            payload: blob(&spec.payload),
            priority: spec.priority,
            group: spec.group.clone(),
            delay_ms: spec.delay_ms,
            max_attempts: spec.max_attempts,
            depends_on: spec
                .deps
                .iter()
                .map(|d| match d {
                    DepSpec::Live(ix) => DepRef::Task(self.live(ix)),
                    DepSpec::Finished(ix) => DepRef::Task(self.finished(ix)),
                    DepSpec::Issued(ix) => DepRef::Task(self.issued(ix)),
                    DepSpec::Unissued(n) => DepRef::Task(self.unissued(*n)),
                    DepSpec::Batch(k) => DepRef::Batch(*k),
                })
                .collect(),
            key: spec.key.clone(),
        }
    }

    /// Runs one operation on both sides and compares the results.
    fn exec(&mut self, op: &Op, now: u64) -> Result<(), String> {
        fn code(e: EngineError) -> Code {
            e.code()
        }
        fn same<T: PartialEq + std::fmt::Debug>(what: &str, e: &T, m: &T) -> Result<(), String> {
            if e == m {
                Ok(())
            } else {
                Err(format!("{what} differs:\n  engine: {e:?}\n  model:  {m:?}"))
            }
        }
        match op {
            Op::Enqueue { queue, task } => {
                let nt = self.new_task(task);
                self.log.push(format!("enqueue({queue:?}, {}, {now})", show_task(&nt)));
                let e = self.engine.enqueue(queue, nt.clone(), now).map_err(code);
                let m = self.model.enqueue(queue, nt, now);
                self.log.push(format!("  -> {e:?}"));
                same("enqueue result", &e, &m)
            }
            Op::Batch { queue, tasks } => {
                let nts: Vec<NewTask> = tasks.iter().map(|t| self.new_task(t)).collect();
                let shown: Vec<String> = nts.iter().map(show_task).collect();
                self.log.push(format!("enqueue_batch({queue:?}, [{}], {now})", shown.join(", ")));
                let e = self.engine.enqueue_batch(queue, nts.clone(), now).map_err(code);
                let m = self.model.enqueue_batch(queue, nts, now);
                self.log.push(format!("  -> {e:?}"));
                same("enqueue_batch result", &e, &m)
            }
            Op::Dequeue { queues, max, lease_ms } => {
                self.log.push(format!("dequeue({queues:?}, {max}, {lease_ms:?}, {now})"));
                let mut out = Vec::new();
                let e = self.engine.dequeue(queues, *max, *lease_ms, now, &mut out).map_err(code);
                let m = self.model.dequeue(queues, *max, *lease_ms, now);
                let e_view = e.map(|n| {
                    let list: Vec<MLeased> = out
                        .iter()
                        .map(|l| MLeased {
                            id: l.id,
                            queue: l.queue.to_string(),
                            payload: l.payload.clone(),
                            priority: l.priority,
                            group: l.group.as_deref().map(str::to_owned),
                            attempt: l.attempt,
                            lease_expires_at_ms: l.lease_expires_at_ms,
                        })
                        .collect();
                    (n, list)
                });
                let m_view =
                    m.as_ref().map(|v| (v.len(), v.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>())).map_err(|c| *c);
                self.log.push(format!(
                    "  -> {:?}",
                    e_view
                        .as_ref()
                        .map(|(_, l)| l.iter().map(|t| (t.id, t.attempt, t.lease_expires_at_ms)).collect::<Vec<_>>())
                ));
                same("dequeue result", &e_view, &m_view)?;
                if let Ok(list) = m {
                    for (l, (_, mtok)) in out.iter().zip(list.iter()) {
                        self.tokens.entry(l.id).or_default().push((l.lease, *mtok));
                    }
                    // Under a group limit, no group that was just served holds more slots than allowed.
                    for l in &out {
                        let Some(group) = &l.group else { continue };
                        let Some(limit) = self.engine.queue(&l.queue).and_then(|q| q.config.group_concurrency) else {
                            continue;
                        };
                        let holders = (1..self.model.next_id)
                            .filter_map(|id| self.engine.task(id))
                            .filter(|t| {
                                t.queue == l.queue
                                    && t.group.as_deref() == Some(&**group)
                                    && (t.state == TaskState::Leased
                                        || (t.state == TaskState::Delayed && t.attempts > 0))
                            })
                            .count();
                        if holders > limit as usize {
                            return Err(format!(
                                "group {group:?} of {:?} has {holders} slot holders, limit {limit}",
                                l.queue
                            ));
                        }
                    }
                }
                Ok(())
            }
            Op::Complete { task, token, result } => {
                let id = self.select(task);
                let (et, mt) = self.token(id, *token);
                let result = result.as_ref().map(blob);
                self.log.push(format!(
                    "complete({id}, {token:?} token, {:?}, {now})",
                    result.as_ref().map(|r| format!("<{} bytes>", r.len()))
                ));
                let e = self.engine.complete(id, et, result.clone(), now).map_err(code);
                let m = self.model.complete(id, mt, result, now);
                self.log.push(format!("  -> {e:?}"));
                same("complete result", &e, &m)
            }
            Op::Fail { task, token, error, retry } => {
                let id = self.select(task);
                let (et, mt) = self.token(id, *token);
                let error = text(error);
                self.log.push(format!("fail({id}, {token:?} token, {}, retry={retry}, {now})", short(&error)));
                let e = self.engine.fail(id, et, &error, *retry, now).map_err(code);
                let m = self.model.fail(id, mt, &error, *retry, now);
                self.log.push(format!("  -> {e:?}"));
                same("fail result", &e, &m)
            }
            Op::Extend { task, token, lease_ms } => {
                let id = self.select(task);
                let (et, mt) = self.token(id, *token);
                self.log.push(format!("extend({id}, {token:?} token, {lease_ms}, {now})"));
                let e = self.engine.extend(id, et, *lease_ms, now).map_err(code);
                let m = self.model.extend(id, mt, *lease_ms, now);
                self.log.push(format!("  -> {e:?}"));
                same("extend result", &e, &m)
            }
            Op::Cancel { task } => {
                let id = self.select(task);
                self.log.push(format!("cancel({id}, {now})"));
                let e = self.engine.cancel(id, now).map_err(code);
                let m = self.model.cancel(id, now);
                self.log.push(format!("  -> {e:?}"));
                same("cancel result", &e, &m)
            }
            Op::Retry { task } => {
                let id = self.select(task);
                self.log.push(format!("retry({id}, {now})"));
                let e = self.engine.retry(id, now).map_err(code);
                let m = self.model.retry(id, now);
                self.log.push(format!("  -> {e:?}"));
                same("retry result", &e, &m)
            }
            Op::DeleteTask { task } => {
                let id = self.select(task);
                self.log.push(format!("delete_task({id}, {now})"));
                let e = self.engine.delete_task(id, now).map_err(code);
                let m = self.model.delete_task(id, now);
                self.log.push(format!("  -> {e:?}"));
                same("delete_task result", &e, &m)
            }
            Op::List { queue, state, after, limit } => {
                let after = after.as_ref().map_or(0, |ix| self.issued(ix));
                self.log.push(format!("list_tasks({queue:?}, {state:?}, {after}, {limit})"));
                let e = self.engine.list_tasks(queue, *state, after, *limit).map_err(code);
                let m = self.model.list_tasks(queue, *state, after, *limit);
                self.log.push(format!(
                    "  -> {:?}",
                    e.as_ref().map(|p| (p.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), p.next_cursor))
                ));
                same("list_tasks result", &e, &m)
            }
            Op::Tick { work_max } => {
                self.log.push(format!("tick({now}, {work_max})"));
                let e = self.engine.tick(now, *work_max);
                let m = self.model.tick(now, *work_max);
                self.log.push(format!("  -> {e:?}"));
                same("tick report", &e, &m)
            }
            Op::Configure { queue, patch } => {
                self.log.push(format!("configure_queue({queue:?}, {patch:?}, {now})"));
                let e = self.engine.configure_queue(queue, patch, now).map_err(code);
                let m = self.model.configure(queue, patch, now);
                self.log.push(format!("  -> {e:?}"));
                same("configure_queue result", &e, &m)
            }
            Op::Delete { queue, force } => {
                self.log.push(format!("delete_queue({queue:?}, force={force}, {now})"));
                let e = self.engine.delete_queue(queue, *force, now).map_err(code);
                let m = self.model.delete_queue(queue, *force, now);
                self.log.push(format!("  -> {e:?}"));
                same("delete_queue result", &e, &m)
            }
        }
    }

    /// Compares everything observable.
    fn check(&self) -> Result<(), String> {
        self.engine.check_invariants().map_err(|e| format!("check_invariants: {e}"))?;
        let (eq, mq) = (self.engine.queues(), self.model.queue_infos());
        if eq != mq {
            return Err(format!("queues() differ:\n  engine: {eq:?}\n  model:  {mq:?}"));
        }
        for name in ["q0", "q1", "q2", "nope"] {
            let (e, m) = (self.engine.queue(name), self.model.queue_info(name));
            if e != m {
                return Err(format!("queue({name:?}) differs:\n  engine: {e:?}\n  model:  {m:?}"));
            }
        }
        for id in 0..=self.model.next_id + 1 {
            let (e, m) = (self.engine.task(id), self.model.view(id));
            if e != m {
                return Err(format!("task({id}) differs:\n  engine: {}\n  model:  {}", show_view(&e), show_view(&m)));
            }
        }
        if self.engine.tasks_count() != self.model.tasks.len() {
            return Err(format!("tasks_count: engine {}, model {}", self.engine.tasks_count(), self.model.tasks.len()));
        }
        if self.engine.next_due_ms() != self.model.next_due() {
            return Err(format!(
                "next_due_ms: engine {:?}, model {:?}",
                self.engine.next_due_ms(),
                self.model.next_due()
            ));
        }
        Ok(())
    }
}

fn show_view(v: &Option<TaskView>) -> String {
    match v {
        None => "None".into(),
        Some(v) => {
            let mut v = v.clone();
            let len = v.payload.len();
            v.payload = Bytes::new();
            let result = v.result.take().map(|r| r.len());
            format!("{v:?} (payload {len} bytes, result {result:?} bytes)")
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".into()
    }
}

fn run_case(case: &Case) -> Result<(), String> {
    let config = EngineConfig {
        seed: case.seed,
        tasks_count_max: case.tasks_max,
        queues_count_max: case.queues_max,
        ..EngineConfig::default()
    };
    let mut run = Run {
        engine: Engine::new(config),
        model: Model::new(case.seed, case.tasks_max, case.queues_max),
        tokens: BTreeMap::new(),
        log: Vec::new(),
    };
    let mut t = 0u64;
    for (i, step) in case.steps.iter().enumerate() {
        t += step.dt;
        let now = if step.back { t.saturating_sub(30) } else { t };
        run.log.push(format!("#{i}"));
        let outcome = catch_unwind(AssertUnwindSafe(|| run.exec(&step.op, now).and_then(|()| run.check())));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(msg)) => Some(msg),
            Err(p) => Some(format!("panic: {}", panic_message(p))),
        };
        if let Some(msg) = failure {
            return Err(format!(
                "step {i} (now {now}) failed: {:?}\n{msg}\n\nEngine{{seed: {}, tasks_count_max: {}, queues_count_max: {}}}; calls so far:\n{}",
                step.op,
                case.seed,
                case.tasks_max,
                case.queues_max,
                run.log.join("\n")
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generators.

const QUEUES: [&str; 3] = ["q0", "q1", "q2"];

fn queue_name() -> impl Strategy<Value = String> {
    prop_oneof![
        200 => prop::sample::select(&QUEUES[..]).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("bad name".to_owned()),
        1 => Just("q".repeat(QUEUE_NAME_MAX + 1)),
    ]
}

fn group() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        80 => Just(None),
        80 => prop::sample::select(&["g0", "g1", "g2"][..]).prop_map(|g| Some(g.to_owned())),
        1 => Just(Some(String::new())),
        1 => Just(Some("g".repeat(GROUP_MAX + 1))),
    ]
}

fn key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        120 => Just(None),
        60 => prop::sample::select(&["k0", "k1", "k2", "k3"][..]).prop_map(|k| Some(k.to_owned())),
        1 => Just(Some(String::new())),
        1 => Just(Some("k".repeat(KEY_MAX + 1))),
    ]
}

fn payload() -> impl Strategy<Value = Blob> {
    prop_oneof![300 => any::<u8>().prop_map(Blob::Len), 1 => Just(Blob::Max), 1 => Just(Blob::TooBig)]
}

fn dep(batch: bool) -> impl Strategy<Value = DepSpec> {
    // Outside a batch `#k` is always invalid; inside, `batch_refs` fixes k up.
    let (batch_weight, issued_weight) = if batch { (40, 3) } else { (1, 10) };
    prop_oneof![
        40 => any::<Index>().prop_map(DepSpec::Live),
        10 => any::<Index>().prop_map(DepSpec::Finished),
        issued_weight => any::<Index>().prop_map(DepSpec::Issued),
        1 => (0u8..3).prop_map(DepSpec::Unissued),
        batch_weight => (0usize..32).prop_map(DepSpec::Batch),
    ]
}

fn task_spec(batch: bool) -> impl Strategy<Value = TaskSpec> {
    (
        payload(),
        prop_oneof![40 => -2i32..=2, 1 => Just(i32::MIN), 1 => Just(i32::MAX)],
        group(),
        prop_oneof![80 => Just(0u64), 30 => Just(5), 30 => Just(20), 1 => Just(DELAY_MAX), 1 => Just(DELAY_MAX + 1)],
        prop_oneof![80 => Just(None), 60 => (1u32..=3).prop_map(Some), 1 => Just(Some(0)), 1 => Just(Some(ATTEMPTS_MAX + 1))],
        prop_oneof![20 => Just(vec![]), if batch { 20 } else { 6 } => prop::collection::vec(dep(batch), 1..=3)],
        key(),
    )
        .prop_map(|(payload, priority, group, delay_ms, max_attempts, deps, key)| TaskSpec {
            payload,
            priority,
            group,
            delay_ms,
            max_attempts,
            deps,
            key,
        })
}

/// Makes most `#k` of entry i valid (k < i); a raw 31 stays invalid (k = i).
fn batch_refs(mut tasks: Vec<TaskSpec>) -> Vec<TaskSpec> {
    for (i, t) in tasks.iter_mut().enumerate() {
        t.deps = t
            .deps
            .drain(..)
            .filter_map(|d| match d {
                DepSpec::Batch(31) => Some(DepSpec::Batch(i)),
                DepSpec::Batch(_) if i == 0 => None,
                DepSpec::Batch(raw) => Some(DepSpec::Batch(raw % i)),
                other => Some(other),
            })
            .collect();
    }
    tasks
}

fn task_sel() -> impl Strategy<Value = TaskSel> {
    prop_oneof![
        40 => any::<Index>().prop_map(TaskSel::Leased),
        8 => any::<Index>().prop_map(TaskSel::Issued),
        1 => (0u8..3).prop_map(TaskSel::Unknown),
    ]
}

/// Mostly a dead task (for retry and delete), sometimes any or none.
fn dead_sel() -> impl Strategy<Value = TaskSel> {
    prop_oneof![
        20 => any::<Index>().prop_map(TaskSel::Dead),
        8 => any::<Index>().prop_map(TaskSel::Issued),
        1 => (0u8..3).prop_map(TaskSel::Unknown),
    ]
}

fn tok_ref() -> impl Strategy<Value = TokRef> {
    prop_oneof![16 => Just(TokRef::Current), 2 => Just(TokRef::Previous), 1 => Just(TokRef::Bogus)]
}

fn lease_ms() -> impl Strategy<Value = u64> {
    prop_oneof![30 => 5u64..=60, 30 => 61u64..=300, 1 => Just(0), 1 => Just(LEASE_MAX + 1), 1 => Just(LEASE_MAX)]
}

fn discipline() -> impl Strategy<Value = Discipline> {
    prop_oneof![
        2 => Just(Discipline::Fifo),
        2 => Just(Discipline::Lifo),
        2 => Just(Discipline::Priority),
        3 => Just(Discipline::RoundRobin),
    ]
}

fn patch() -> impl Strategy<Value = QueueConfigPatch> {
    use proptest::option::weighted;
    (
        weighted(0.5, discipline()),
        weighted(0.2, lease_ms()),
        weighted(0.3, prop_oneof![10 => 1u32..=3, 1 => Just(0u32), 1 => Just(ATTEMPTS_MAX + 1)]),
        prop_oneof![
            16 => Just((None, None)),
            24 => (prop::sample::select(&[0u64, 1, 10][..]), prop::sample::select(&[0u64, 10, 40][..]))
                .prop_map(|(base, extra)| (Some(base), Some(base + extra))),
            4 => prop::sample::select(&[0u64, 1, 10][..]).prop_map(|base| (Some(base), None)),
            4 => prop::sample::select(&[0u64, 1, 10, 25, 1000][..]).prop_map(|cap| (None, Some(cap))),
            1 => Just((Some(BACKOFF_MAX + 1), None)),
            1 => Just((None, Some(BACKOFF_MAX + 1))),
        ],
        weighted(0.4, prop_oneof![8 => Just(0u64), 4 => Just(10), 4 => Just(1000), 1 => Just(RETENTION_MAX + 1)]),
        weighted(0.4, prop_oneof![4 => Just(None), 8 => (1u32..=2).prop_map(Some), 1 => Just(Some(0))]),
        weighted(0.3, prop_oneof![4 => Just(0u64), 4 => Just(30), 4 => Just(2000), 1 => Just(RETENTION_MAX + 1)]),
    )
        .prop_map(
            |(
                discipline,
                lease_ms,
                max_attempts,
                (backoff_ms, backoff_max_ms),
                retention_ms,
                group_concurrency,
                dead_retention_ms,
            )| {
                QueueConfigPatch {
                    discipline,
                    lease_ms,
                    max_attempts,
                    backoff_ms,
                    backoff_max_ms,
                    retention_ms,
                    dead_retention_ms,
                    group_concurrency,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        32 => (queue_name(), task_spec(false)).prop_map(|(queue, task)| Op::Enqueue { queue, task }),
        8 => (queue_name(), prop_oneof![1 => Just(0usize), 20 => 1usize..=5])
            .prop_flat_map(|(queue, n)| (Just(queue), prop::collection::vec(task_spec(true), n)))
            .prop_map(|(queue, tasks)| Op::Batch { queue, tasks: batch_refs(tasks) }),
        15 => (
            prop_oneof![
                30 => prop::collection::vec(queue_name(), 1..=3),
                1 => Just(vec![]),
            ],
            prop_oneof![20 => 1usize..=4, 1 => Just(0), 1 => Just(DEQUEUE_TASKS_MAX + 1), 1 => Just(DEQUEUE_TASKS_MAX)],
            prop_oneof![3 => Just(None), 10 => lease_ms().prop_map(Some)],
        )
            .prop_map(|(queues, max, lease_ms)| Op::Dequeue { queues, max, lease_ms }),
        10 => (
            task_sel(),
            tok_ref(),
            prop_oneof![20 => Just(None), 40 => any::<u8>().prop_map(|n| Some(Blob::Len(n))), 1 => Just(Some(Blob::Max)), 1 => Just(Some(Blob::TooBig))],
        )
            .prop_map(|(task, token, result)| Op::Complete { task, token, result }),
        9 => (
            task_sel(),
            tok_ref(),
            prop_oneof![30 => any::<u8>().prop_map(Text::Msg), 1 => Just(Text::Max), 1 => Just(Text::TooBig)],
            prop::bool::weighted(0.75),
        )
            .prop_map(|(task, token, error, retry)| Op::Fail { task, token, error, retry }),
        4 => (task_sel(), tok_ref(), lease_ms()).prop_map(|(task, token, lease_ms)| Op::Extend { task, token, lease_ms }),
        3 => task_sel().prop_map(|task| Op::Cancel { task }),
        3 => dead_sel().prop_map(|task| Op::Retry { task }),
        2 => dead_sel().prop_map(|task| Op::DeleteTask { task }),
        4 => (
            queue_name(),
            prop_oneof![6 => Just(TaskState::Dead), 1 => prop::sample::select(TaskState::ALL.to_vec())],
            prop::option::weighted(0.5, any::<Index>()),
            prop_oneof![20 => 1usize..=3, 4 => Just(LIST_TASKS_MAX), 1 => Just(0), 1 => Just(LIST_TASKS_MAX + 1)],
        )
            .prop_map(|(queue, state, after, limit)| Op::List { queue, state, after, limit }),
        10 => prop_oneof![5 => 0usize..=5, 2 => Just(1000usize)].prop_map(|work_max| Op::Tick { work_max }),
        7 => (queue_name(), patch()).prop_map(|(queue, patch)| Op::Configure { queue, patch }),
        2 => (queue_name(), any::<bool>()).prop_map(|(queue, force)| Op::Delete { queue, force }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (prop_oneof![30 => Just(0u64), 100 => 0u64..=40, 1 => 500u64..=3000], prop::bool::weighted(0.03), op())
        .prop_map(|(dt, back, op)| Step { dt, back, op })
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        prop_oneof![5 => Just(50_000_000usize), 1 => 3usize..=30],
        prop_oneof![5 => Just(10_000usize), 1 => 1usize..=3],
        // Most cases start by configuring some queues, so that settings other than
        // the defaults (short backoffs and retentions, group limits) get exercised.
        prop::collection::vec(
            (prop::sample::select(&QUEUES[..]), patch()).prop_map(|(queue, patch)| Step {
                dt: 0,
                back: false,
                op: Op::Configure { queue: queue.to_owned(), patch },
            }),
            0..=3,
        ),
        prop::collection::vec(step(), 1..=120),
    )
        .prop_map(|(seed, tasks_max, queues_max, mut steps, more)| {
            steps.extend(more);
            Case { seed, tasks_max, queues_max, steps }
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(1000)
}

/// The seed of this run's random cases: `PROPTEST_RNG_SEED` if set (to replay a
/// failure), otherwise drawn from the clock. Printed so that a failing run says
/// how to replay it (the harness shows a failing test's output).
fn rng_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64
        });
        eprintln!("engine_model: replay with PROPTEST_RNG_SEED={seed} PROPTEST_CASES={}", cases());
        seed
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: proptest::test_runner::RngSeed::Fixed(rng_seed()),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_the_model(case in case()) {
        if let Err(msg) = run_case(&case) {
            return Err(TestCaseError::fail(msg));
        }
    }
}

// A sanity check of the harness itself: the model alone on a fixed scenario.
#[test]
fn model_smoke() {
    let mut m = Model::new(1, 100, 100);
    let a = m.enqueue("q0", NewTask::default(), 0).unwrap();
    let b = m.enqueue("q0", NewTask { depends_on: vec![DepRef::Task(a.id)], ..NewTask::default() }, 0).unwrap();
    assert_eq!((a.id, a.state, b.id, b.state), (1, TaskState::Ready, 2, TaskState::Waiting));
    let leased = m.dequeue(&["q0".to_owned()], 5, Some(10), 1).unwrap();
    assert_eq!(leased.len(), 1);
    m.complete(1, leased[0].1, None, 2).unwrap();
    assert_eq!(m.view(2).unwrap().state, TaskState::Ready);
}
