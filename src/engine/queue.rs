//! One queue: its settings, per-state counts, groups, idempotency keys, and the
//! ready index that decides which task a dequeue gets.
//!
//! The ready index has three shapes, chosen from the queue's settings:
//!
//! - **run**: `fifo` and `lifo` without `group_concurrency`, where groups cannot
//!   change the order: a sorted deque of ids that new tasks extend, with an
//!   ordered set for the few that arrive out of order (`id_run.rs`). About 8
//!   bytes per ready task; O(1) amortized per insert and dequeue, O(log n) to
//!   remove a task from the middle.
//! - **flat**: one ordered set of ready keys. Used by `priority` without
//!   `group_concurrency`. A dequeue is one `pop_first`.
//! - **grouped**: each group keeps its own ordered set of ready keys, and the queue
//!   keeps an ordered set of *eligible* groups (ready tasks, and a free slot under
//!   `group_concurrency`). A group's place in that set is its best ready key, or
//!   under `round_robin` (when it was last served, its oldest ready id), so the
//!   least recently served group goes next. A dequeue pops the best group, pops its
//!   best task, then puts the group back under its new key.
//!
//! Flat and grouped are O(log n) per insert, removal and dequeue. A ready key is a
//! u128 whose order is the serving order: the high 64 bits hold the priority rank
//! (0 unless `priority`), the low 64 bits the id (bit-inverted for `lifo`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use slab::Slab;

use super::id_run::IdRun;
use super::types::{Discipline, QueueConfig, TaskId};

pub(crate) type QueueIx = u32;
pub(crate) type GroupIx = u32;

/// Tasks without a group share the group with this (otherwise invalid) name.
pub(crate) const UNGROUPED: &str = "";

pub(crate) struct Group {
    /// `UNGROUPED` for tasks without a group.
    pub(crate) name: Arc<str>,
    /// Ready keys of this group (grouped shape only).
    ready: BTreeSet<u128>,
    /// Tasks of this group that are leased or waiting out a retry backoff.
    pub(crate) slot_holders: u32,
    /// Tasks (in any state) that name this group; at 0 the group is freed.
    task_refs: u32,
    /// Value of the queue's serve clock when this group was last served (0: never).
    last_served: u64,
    /// This group's key in the eligible set, if it is in it.
    eligible_key: Option<u128>,
}

pub(crate) struct Queue {
    pub(crate) name: Arc<str>,
    pub(crate) config: QueueConfig,
    pub(crate) counts: [u64; 7],
    pub(crate) groups: Slab<Group>,
    group_by_name: HashMap<Arc<str>, GroupIx>,
    /// The group of tasks without one. Its slot is never freed (a queue that
    /// empties and refills on every task would otherwise allocate, hash and free it
    /// each time: a quarter of an enqueue-dequeue-complete cycle, measured); it is
    /// only reset when its last task goes, as a freed group would be.
    ungrouped: GroupIx,
    /// Idempotency keys of live tasks.
    pub(crate) keys: HashMap<Box<str>, TaskId>,
    /// Ids of the queue's dead tasks, for listing them in id order without a
    /// scan (`Engine::list_tasks`). Tasks die rarely, so keeping it costs the
    /// hot path nothing; other states are listed by walking ids.
    pub(crate) dead: BTreeSet<TaskId>,
    /// Counts leases handed out; orders groups under `round_robin`.
    serve_clock: u64,
    /// Whether the queue's snapshot row changed since the last `take_changes`
    /// (change tracking only; see `snapshot`).
    pub(crate) dirty: bool,
    shape: Shape,
    run: IdRun,
    flat: BTreeSet<u128>,
    eligible: BTreeSet<(u128, GroupIx)>,
}

/// Which of the ready index's structures a queue uses (see the module comment).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Run,
    Flat,
    Grouped,
}

fn shape_of(config: &QueueConfig) -> Shape {
    if config.discipline == Discipline::RoundRobin || config.group_concurrency.is_some() {
        Shape::Grouped
    } else if config.discipline == Discipline::Priority {
        Shape::Flat
    } else {
        Shape::Run
    }
}

/// Higher priority gives a smaller rank; i32::MAX has rank 0.
fn priority_rank(priority: i32) -> u64 {
    (i64::from(i32::MAX) - i64::from(priority)) as u64
}

impl Queue {
    pub(crate) fn new(name: Arc<str>, config: QueueConfig) -> Queue {
        let mut groups = Slab::new();
        let ungrouped = groups.insert(Group {
            name: Arc::from(UNGROUPED),
            ready: BTreeSet::new(),
            slot_holders: 0,
            task_refs: 0,
            last_served: 0,
            eligible_key: None,
        }) as GroupIx;
        Queue {
            name,
            ungrouped,
            shape: shape_of(&config),
            config,
            counts: [0; 7],
            groups,
            group_by_name: HashMap::new(),
            keys: HashMap::new(),
            dead: BTreeSet::new(),
            serve_clock: 0,
            dirty: false,
            run: IdRun::default(),
            flat: BTreeSet::new(),
            eligible: BTreeSet::new(),
        }
    }

    pub(crate) fn ready_key(&self, priority: i32, id: TaskId) -> u128 {
        match self.config.discipline {
            Discipline::Fifo | Discipline::RoundRobin => u128::from(id),
            Discipline::Lifo => u128::from(!id),
            Discipline::Priority => (u128::from(priority_rank(priority)) << 64) | u128::from(id),
        }
    }

    pub(crate) fn id_of_key(&self, key: u128) -> TaskId {
        let low = key as u64;
        match self.config.discipline {
            Discipline::Lifo => !low,
            _ => low,
        }
    }

    /// Finds or creates the group named `name` and counts one more task in it.
    pub(crate) fn group_acquire(&mut self, name: &str) -> GroupIx {
        if name == UNGROUPED {
            self.groups[self.ungrouped as usize].task_refs += 1;
            return self.ungrouped;
        }
        if let Some(&g) = self.group_by_name.get(name) {
            self.groups[g as usize].task_refs += 1;
            return g;
        }
        let name: Arc<str> = Arc::from(name);
        let g = self.groups.insert(Group {
            name: name.clone(),
            ready: BTreeSet::new(),
            slot_holders: 0,
            task_refs: 1,
            last_served: 0,
            eligible_key: None,
        }) as GroupIx;
        self.group_by_name.insert(name, g);
        g
    }

    /// Counts one task fewer in group `g`, and frees the group when none is left,
    /// so that client-chosen group keys cannot accumulate.
    pub(crate) fn group_release(&mut self, g: GroupIx) {
        let group = &mut self.groups[g as usize];
        group.task_refs -= 1;
        if group.task_refs == 0 {
            assert!(group.ready.is_empty() && group.slot_holders == 0 && group.eligible_key.is_none());
            if g == self.ungrouped {
                group.last_served = 0;
                return;
            }
            let group = self.groups.remove(g as usize);
            self.group_by_name.remove(&group.name);
        }
    }

    /// Whether releasing one task of group `g` forgets serving history (the
    /// group's last task goes, and it had been served), which is part of the
    /// queue's snapshot row.
    pub(crate) fn release_forgets_history(&self, g: GroupIx) -> bool {
        let group = &self.groups[g as usize];
        group.task_refs == 1 && group.last_served != 0
    }

    /// The serving history that cannot be derived from the tasks: the serve clock,
    /// when the ungrouped tasks were last served, and `(name, last served)` of every
    /// named group that has been served, in name order (so that the encoded row
    /// does not depend on slab slots). O(groups log groups).
    pub(crate) fn history(&self) -> (u64, u64, Vec<(&str, u64)>) {
        let mut served: Vec<(&str, u64)> = self
            .groups
            .iter()
            .filter(|&(g, group)| g as GroupIx != self.ungrouped && group.last_served != 0)
            .map(|(_, group)| (&*group.name, group.last_served))
            .collect();
        served.sort_unstable();
        (self.serve_clock, self.groups[self.ungrouped as usize].last_served, served)
    }

    /// Sets the serve clock (restore, before any group exists).
    pub(crate) fn set_serve_clock(&mut self, serve_clock: u64) {
        self.serve_clock = serve_clock;
    }

    /// Sets when group `name` (`UNGROUPED` for tasks without one) was last served,
    /// for a restore: after the tasks have acquired their groups, before any of
    /// them enters the ready index. `None` if no task names the group.
    pub(crate) fn set_last_served(&mut self, name: &str, last_served: u64) -> Option<()> {
        let g = self.group_by_name(name)?;
        let group = &mut self.groups[g as usize];
        if group.task_refs == 0 {
            return None;
        }
        group.last_served = last_served;
        Some(())
    }

    pub(crate) fn group_name(&self, g: GroupIx) -> Option<Arc<str>> {
        let name = &self.groups[g as usize].name;
        if name.is_empty() {
            None
        } else {
            Some(name.clone())
        }
    }

    pub(crate) fn ready_insert(&mut self, g: GroupIx, key: u128) {
        match self.shape {
            Shape::Run => self.run.insert(self.id_of_key(key)),
            Shape::Flat => {
                let inserted = self.flat.insert(key);
                assert!(inserted);
            }
            Shape::Grouped => {
                let inserted = self.groups[g as usize].ready.insert(key);
                assert!(inserted);
                self.refresh(g);
            }
        }
    }

    pub(crate) fn ready_remove(&mut self, g: GroupIx, key: u128) {
        match self.shape {
            Shape::Run => self.run.remove(self.id_of_key(key)),
            Shape::Flat => {
                let removed = self.flat.remove(&key);
                assert!(removed);
            }
            Shape::Grouped => {
                let removed = self.groups[g as usize].ready.remove(&key);
                assert!(removed);
                self.refresh(g);
            }
        }
    }

    /// Removes and returns the key of the task to serve next. The caller must then
    /// call [`Queue::on_leased`] for the task's group.
    pub(crate) fn ready_pop(&mut self) -> Option<u128> {
        match self.shape {
            Shape::Run => {
                let id = if self.config.discipline == Discipline::Lifo {
                    self.run.pop_newest()
                } else {
                    self.run.pop_oldest()
                };
                id.map(|id| self.ready_key(0, id))
            }
            Shape::Flat => self.flat.pop_first(),
            Shape::Grouped => {
                let (_, g) = self.eligible.pop_first()?;
                let group = &mut self.groups[g as usize];
                group.eligible_key = None;
                let key = group.ready.pop_first();
                assert!(key.is_some(), "an eligible group has a ready task");
                key
            }
        }
    }

    /// A task of group `g` was leased: it takes a slot, and the group was served.
    pub(crate) fn on_leased(&mut self, g: GroupIx) {
        self.serve_clock += 1;
        let group = &mut self.groups[g as usize];
        group.slot_holders += 1;
        group.last_served = self.serve_clock;
        self.refresh(g);
    }

    pub(crate) fn slot_acquire(&mut self, g: GroupIx) {
        self.groups[g as usize].slot_holders += 1;
        self.refresh(g);
    }

    pub(crate) fn slot_release(&mut self, g: GroupIx) {
        let group = &mut self.groups[g as usize];
        assert!(group.slot_holders > 0);
        group.slot_holders -= 1;
        self.refresh(g);
    }

    /// Where group `g` belongs in the eligible set now, or `None` if it has no
    /// ready task or no free slot under `group_concurrency`.
    fn eligible_key_now(&self, g: GroupIx) -> Option<u128> {
        let group = &self.groups[g as usize];
        let head = *group.ready.first()?;
        if let Some(limit) = self.config.group_concurrency {
            if !group.name.is_empty() && group.slot_holders >= limit {
                return None;
            }
        }
        Some(match self.config.discipline {
            Discipline::RoundRobin => (u128::from(group.last_served) << 64) | head,
            _ => head,
        })
    }

    /// Recomputes group `g`'s place in the eligible set (grouped shape only).
    fn refresh(&mut self, g: GroupIx) {
        if self.shape != Shape::Grouped {
            return;
        }
        let key = self.eligible_key_now(g);
        let stored = self.groups[g as usize].eligible_key;
        if key == stored {
            return;
        }
        if let Some(old) = stored {
            self.eligible.remove(&(old, g));
        }
        if let Some(new) = key {
            self.eligible.insert((new, g));
        }
        self.groups[g as usize].eligible_key = key;
    }

    /// Ids of all ready tasks, in no particular order.
    pub(crate) fn ready_ids(&self) -> Vec<TaskId> {
        match self.shape {
            Shape::Run => self.run.ids().collect(),
            Shape::Flat => self.flat.iter().map(|&k| self.id_of_key(k)).collect(),
            Shape::Grouped => {
                self.groups.iter().flat_map(|(_, g)| g.ready.iter()).map(|&k| self.id_of_key(k)).collect()
            }
        }
    }

    /// Empties the ready index and adopts `config`; the caller re-inserts every
    /// ready task under the new keys.
    pub(crate) fn reset_ready(&mut self, config: QueueConfig) {
        self.run.clear();
        self.flat.clear();
        self.eligible.clear();
        for (_, group) in self.groups.iter_mut() {
            group.ready.clear();
            group.eligible_key = None;
        }
        self.shape = shape_of(&config);
        self.config = config;
    }

    /// Checks the ready index against the tasks the engine says are ready
    /// (`(group, key)` pairs). For tests and debugging; O(n).
    pub(crate) fn check_ready_index(&self, mut expected: Vec<(GroupIx, u128)>) -> Result<(), String> {
        expected.sort_unstable();
        let unused = |shape: Shape| match shape {
            Shape::Run => self.run.is_empty(),
            Shape::Flat => self.flat.is_empty(),
            Shape::Grouped => self.eligible.is_empty() && self.groups.iter().all(|(_, g)| g.ready.is_empty()),
        };
        for other in [Shape::Run, Shape::Flat, Shape::Grouped] {
            if other != self.shape && !unused(other) {
                return Err(format!("queue {}: a ready structure of another shape is in use", self.name));
            }
        }
        let mut actual: Vec<(GroupIx, u128)> = match self.shape {
            Shape::Run => {
                self.run.check().map_err(|e| format!("queue {}: {e}", self.name))?;
                // Groups do not matter in this shape: compare keys alone.
                expected.iter_mut().for_each(|(g, _)| *g = 0);
                self.run.ids().map(|id| (0, self.ready_key(0, id))).collect()
            }
            Shape::Flat => {
                expected.iter_mut().for_each(|(g, _)| *g = 0);
                self.flat.iter().map(|&k| (0, k)).collect()
            }
            Shape::Grouped => {
                self.groups.iter().flat_map(|(g, group)| group.ready.iter().map(move |&k| (g as GroupIx, k))).collect()
            }
        };
        actual.sort_unstable();
        expected.sort_unstable();
        if actual != expected {
            return Err(format!("queue {}: ready index differs from the ready tasks", self.name));
        }
        if self.shape == Shape::Grouped {
            for (g, group) in self.groups.iter() {
                let g = g as GroupIx;
                let stored = group.eligible_key;
                let in_set = stored.is_some_and(|k| self.eligible.contains(&(k, g)));
                if stored.is_some() != in_set {
                    return Err(format!("queue {}: group {:?} eligible key not in the set", self.name, group.name));
                }
            }
            let eligible_groups = self.groups.iter().filter(|(_, g)| g.eligible_key.is_some()).count();
            if eligible_groups != self.eligible.len() {
                return Err(format!("queue {}: stray entries in the eligible set", self.name));
            }
            for (g, group) in self.groups.iter() {
                if self.eligible_key_now(g as GroupIx) != group.eligible_key {
                    return Err(format!("queue {}: group {} has a stale eligible key", self.name, g));
                }
            }
        }
        Ok(())
    }

    /// Tasks referring to group `g`, and tasks holding a slot, as the queue counts them.
    pub(crate) fn group_counters(&self, g: GroupIx) -> (u32, u32) {
        let group = &self.groups[g as usize];
        (group.task_refs, group.slot_holders)
    }

    pub(crate) fn group_by_name(&self, name: &str) -> Option<GroupIx> {
        if name == UNGROUPED {
            return Some(self.ungrouped);
        }
        self.group_by_name.get(name).copied()
    }

    /// Whether every group has been released (the ungrouped one stays allocated).
    pub(crate) fn groups_released(&self) -> bool {
        self.groups.iter().all(|(g, group)| g as GroupIx == self.ungrouped && group.task_refs == 0)
    }
}
