//! A set of task ids that grows at the top, in about 8 bytes per id: the ready
//! index of a plain `fifo` or `lifo` queue, and the tiered store's index of tasks
//! whose payload is in memory.
//!
//! The engine assigns ids in increasing order, so a new task is always the
//! newest: nearly every id enters such a set above all the others. Those ids go
//! into a sorted deque (8 bytes each, no tree nodes); the few that arrive out of
//! order (a retry after its backoff, a delayed task coming due, a task whose
//! dependencies finished) go into a small ordered set beside it. Taking the
//! oldest or newest compares the two parts' ends.
//!
//! An id that leaves from the middle (a task cancelled while ready, purged, or its
//! payload evicted) is found
//! by binary search and marked with [`REMOVED`], not shifted out; marks at either
//! end are dropped at once, and the deque is rebuilt without them once they
//! outnumber the live ids, so each mark costs O(1) amortized and the deque never
//! holds more than twice the live ids (plus [`COMPACT_MARKS_MIN`]).
//!
//! Compared with a `BTreeSet<u128>` of ready keys (about 24-35 bytes per task at
//! the fill sequential inserts leave), this saves 16-27 bytes per queued task
//! (docs/benchmarks/changelog.md).

use std::collections::{BTreeSet, VecDeque};

use super::types::TaskId;

/// Marks an id in the deque as removed. Ids stay far below 2^63 (one per
/// enqueue), and the order of the marked values is the order of the ids.
const REMOVED: u64 = 1 << 63;
/// Task ids stay below this (checked where an id counter comes from disk).
pub(crate) const TASK_ID_END: TaskId = REMOVED;

/// Below this many marks the deque is not rebuilt (rebuilding a small deque often
/// would cost more than the marks).
const COMPACT_MARKS_MIN: usize = 1024;

/// The deque gives memory back once it is this many times larger than it needs.
const SHRINK_FACTOR: usize = 4;
/// ...and not below this capacity, in ids.
const SHRINK_CAPACITY_MIN: usize = 4096;

#[derive(Default, Debug)]
pub(crate) struct IdRun {
    /// Strictly increasing ids (ignoring [`REMOVED`]); neither end is marked.
    ids: VecDeque<u64>,
    /// Unmarked entries of `ids`.
    live: usize,
    /// Ready ids that did not extend the deque.
    others: BTreeSet<TaskId>,
}

fn id_of(entry: u64) -> TaskId {
    entry & !REMOVED
}

impl IdRun {
    pub(crate) fn len(&self) -> usize {
        self.live + self.others.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&mut self, id: TaskId) {
        assert!(id & REMOVED == 0, "task id {id} out of range");
        if self.ids.back().is_none_or(|&last| id > id_of(last)) {
            self.ids.push_back(id);
            self.live += 1;
        } else {
            let inserted = self.others.insert(id);
            assert!(inserted, "task {id} is already in the set");
        }
    }

    /// Removes `id`, which must be in the set.
    pub(crate) fn remove(&mut self, id: TaskId) {
        if self.others.remove(&id) {
            return;
        }
        let found = self.ids.binary_search_by_key(&id, |&entry| id_of(entry));
        let Ok(at) = found else { panic!("task {id} is not in the set") };
        assert!(self.ids[at] & REMOVED == 0, "task {id} was already removed from the set");
        self.ids[at] |= REMOVED;
        self.live -= 1;
        self.tidy();
    }

    /// Removes and returns the oldest ready id (`fifo`).
    pub(crate) fn pop_oldest(&mut self) -> Option<TaskId> {
        let from_deque = match (self.ids.front(), self.others.first()) {
            (Some(&first), Some(&other)) => first < other,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_deque {
            let id = self.ids.pop_front()?;
            self.live -= 1;
            self.tidy();
            Some(id)
        } else {
            self.others.pop_first()
        }
    }

    /// Removes and returns the newest ready id (`lifo`).
    pub(crate) fn pop_newest(&mut self) -> Option<TaskId> {
        let from_deque = match (self.ids.back(), self.others.last()) {
            (Some(&last), Some(&other)) => last > other,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_deque {
            let id = self.ids.pop_back()?;
            self.live -= 1;
            self.tidy();
            Some(id)
        } else {
            self.others.pop_last()
        }
    }

    /// Removes and returns the newest id below `bound`.
    ///
    /// Walks down from `bound` over ids already removed; the walk is short when
    /// `bound` only grows between calls (evictions below the checkpointed id),
    /// because each call removes ids just below where the next one starts.
    pub(crate) fn pop_newest_below(&mut self, bound: TaskId) -> Option<TaskId> {
        let end = self.ids.partition_point(|&entry| id_of(entry) < bound);
        let in_deque = (0..end).rev().find(|&at| self.ids[at] & REMOVED == 0);
        let other = self.others.range(..bound).next_back().copied();
        let from_deque = match (in_deque, other) {
            (Some(at), Some(other)) => id_of(self.ids[at]) > other,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let (true, Some(at)) = (from_deque, in_deque) {
            let id = self.ids[at];
            self.ids[at] |= REMOVED;
            self.live -= 1;
            self.tidy();
            Some(id)
        } else {
            let other = other?;
            self.others.remove(&other);
            Some(other)
        }
    }

    /// Every id, in no particular order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.ids.iter().filter(|&&entry| entry & REMOVED == 0).copied().chain(self.others.iter().copied())
    }

    pub(crate) fn clear(&mut self) {
        *self = IdRun::default();
    }

    /// Keeps the deque's ends unmarked, drops marks once they outnumber the live
    /// ids, and gives back memory a drained backlog left behind.
    fn tidy(&mut self) {
        while self.ids.front().is_some_and(|&entry| entry & REMOVED != 0) {
            self.ids.pop_front();
        }
        while self.ids.back().is_some_and(|&entry| entry & REMOVED != 0) {
            self.ids.pop_back();
        }
        let marks = self.ids.len() - self.live;
        if marks > COMPACT_MARKS_MIN && marks > self.live {
            self.ids.retain(|&entry| entry & REMOVED == 0);
        }
        let capacity = self.ids.capacity();
        if capacity > SHRINK_CAPACITY_MIN && self.ids.len() * SHRINK_FACTOR < capacity {
            self.ids.shrink_to((self.ids.len() * 2).max(SHRINK_CAPACITY_MIN));
        }
    }

    /// Checks the structure's own invariants. For tests and debugging; O(n).
    pub(crate) fn check(&self) -> Result<(), String> {
        let live = self.ids.iter().filter(|&&entry| entry & REMOVED == 0).count();
        if live != self.live {
            return Err(format!("ready run counts {} live ids, holds {live}", self.live));
        }
        if self.ids.iter().zip(self.ids.iter().skip(1)).any(|(&a, &b)| id_of(a) >= id_of(b)) {
            return Err("ready run deque is not strictly increasing".into());
        }
        let marked_end = |entry: Option<&u64>| entry.is_some_and(|&e| e & REMOVED != 0);
        if marked_end(self.ids.front()) || marked_end(self.ids.back()) {
            return Err("ready run deque has a removed id at an end".into());
        }
        let live_in_deque =
            |id: &TaskId| self.ids.binary_search_by_key(id, |&e| id_of(e)).is_ok_and(|at| self.ids[at] & REMOVED == 0);
        if let Some(id) = self.others.iter().find(|id| live_in_deque(id)) {
            return Err(format!("task {id} is in both parts of the ready run"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// xorshift64, for a deterministic mix of operations.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Random inserts (mostly new ids, some old ones coming back), removals from
    /// anywhere, and pops from both ends agree with an ordered set at every step.
    #[test]
    fn agrees_with_an_ordered_set() {
        for seed in 1..=20u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let (mut run, mut model) = (IdRun::default(), BTreeSet::new());
            let mut next_id = 1u64;
            let mut out: Vec<u64> = Vec::new(); // ids not ready, which may come back
            for _ in 0..20_000 {
                match next(&mut rng) % 10 {
                    0..=3 => {
                        run.insert(next_id);
                        model.insert(next_id);
                        next_id += 1;
                    }
                    4 if !out.is_empty() => {
                        let id = out.swap_remove((next(&mut rng) % out.len() as u64) as usize);
                        run.insert(id);
                        model.insert(id);
                    }
                    5 | 6 if !model.is_empty() => {
                        let nth = (next(&mut rng) % model.len() as u64) as usize;
                        let id = *model.iter().nth(nth).expect("in range");
                        run.remove(id);
                        model.remove(&id);
                        out.push(id);
                    }
                    7 => {
                        let bound = next(&mut rng) % (next_id + 1);
                        let got = run.pop_newest_below(bound);
                        let want = model.range(..bound).next_back().copied();
                        if let Some(id) = want {
                            model.remove(&id);
                        }
                        assert_eq!(got, want, "newest below {bound}");
                        out.extend(got);
                    }
                    8 => {
                        let got = run.pop_oldest();
                        assert_eq!(got, model.pop_first());
                        out.extend(got);
                    }
                    _ => {
                        let got = run.pop_newest();
                        assert_eq!(got, model.pop_last());
                        out.extend(got);
                    }
                }
                assert_eq!(run.len(), model.len());
            }
            run.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let mut ids: Vec<u64> = run.ids().collect();
            ids.sort_unstable();
            assert!(ids.iter().copied().eq(model.iter().copied()), "seed {seed}");
        }
    }

    #[test]
    fn removing_most_of_a_long_run_compacts_it() {
        let mut run = IdRun::default();
        for id in 1..=100_000 {
            run.insert(id);
        }
        // Remove all but the two ends, from the middle outwards.
        for id in 2..100_000 {
            run.remove(id);
        }
        run.check().expect("consistent");
        assert_eq!(run.len(), 2);
        assert!(run.ids.len() <= 2 * COMPACT_MARKS_MIN + 2, "marks were dropped: {} entries", run.ids.len());
        assert_eq!(run.pop_oldest(), Some(1));
        assert_eq!(run.pop_oldest(), Some(100_000));
        assert_eq!(run.pop_oldest(), None);
    }

    #[test]
    fn a_drained_backlog_gives_its_memory_back() {
        let mut run = IdRun::default();
        for id in 1..=1_000_000 {
            run.insert(id);
        }
        while run.pop_oldest().is_some() {}
        assert!(run.ids.capacity() <= 2 * SHRINK_CAPACITY_MIN, "capacity {}", run.ids.capacity());
    }
}
