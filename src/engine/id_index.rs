//! Finds a task's slab slot from its id: a hash table of slots alone.
//!
//! A `HashMap<TaskId, u32>` stores each id twice (in the table and in the task)
//! and takes 12 bytes plus a control byte per bucket. This table stores only the
//! 4-byte slot; comparing and rehashing read the id from the task in the slab.
//! With hashbrown's load factor between 7/16 and 7/8 that is 6-11 bytes per
//! task instead of 15-30 (measured in docs/benchmarks/changelog.md).

use super::task_slab::TaskSlab;
use super::TaskId;
use hashbrown::HashTable;

/// The bits hashbrown uses as an entry's tag (the top 7 of a 64-bit hash).
const ID_HASH_TAG_BITS: u64 = 0x7f << 57;

/// Hashes engine-assigned task ids. Ids are not chosen by clients (lookups of
/// unknown ids insert nothing), so no keyed hash is needed here.
///
/// The hash keeps the id's low bits as they are: hashbrown picks a bucket from
/// the low bits, so consecutive ids (which is how the engine assigns them) land
/// in consecutive buckets, and walking a backlog in id order (leasing a FIFO
/// queue, a checkpoint's changed rows) reads the table sequentially instead of
/// missing the cache on every task: measured 2-3x faster per task with a
/// backlog of millions (docs/benchmarks/changelog.md). The top 7 bits, which
/// hashbrown keeps as a tag to skip non-matching entries, come from a
/// multiplicative mix so tags still differ between neighbours.
pub(super) fn id_hash(id: TaskId) -> u64 {
    (id & !ID_HASH_TAG_BITS) | (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) & ID_HASH_TAG_BITS)
}

/// Shards of the index, by the id's low bits. A hash table grows by rehashing
/// every entry at once, under the engine lock: with one table of 8 million
/// entries that is one request stalled for tens of milliseconds. Consecutive ids
/// fill the shards evenly, so each grows at a different enqueue, with 1/64 of the
/// work.
const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

pub(super) struct IdIndex {
    shards: Box<[HashTable<u32>]>,
    len: usize,
    /// The largest id ever inserted (0: none), for the check in `insert`.
    id_inserted_max: TaskId,
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex { shards: (0..SHARDS).map(|_| HashTable::new()).collect(), len: 0, id_inserted_max: 0 }
    }
}

/// The shard of `id`, and the hash within it (the shard's bits removed, so the
/// low bits of the hash still follow consecutive ids).
fn locate(id: TaskId) -> (usize, u64) {
    (id as usize & (SHARDS - 1), id_hash(id >> SHARD_BITS))
}

impl IdIndex {
    /// The slot of live task `id`.
    pub(super) fn get(&self, tasks: &TaskSlab, id: TaskId) -> Option<usize> {
        let (shard, hash) = locate(id);
        self.shards[shard].find(hash, |&slot| tasks[slot as usize].id == id).map(|&slot| slot as usize)
    }

    pub(super) fn contains(&self, tasks: &TaskSlab, id: TaskId) -> bool {
        self.get(tasks, id).is_some()
    }

    /// Adds the task just placed at `slot`; its id must not be in the index.
    ///
    /// Checked in release builds too: a second entry for one id would make
    /// lookups find either task, which is corrupt state. Both callers insert in
    /// increasing id order (`insert_task` issues `next_id`; `restore` sorts its
    /// rows and refuses duplicates), so "above every id inserted before" implies
    /// "not in the index" for one comparison, where probing the table for the id
    /// costs ~43 more instructions per enqueue (callgrind, `engine_cycles`).
    pub(super) fn insert(&mut self, tasks: &TaskSlab, slot: usize) {
        let id = tasks[slot].id;
        assert!(
            id > self.id_inserted_max,
            "task {id} inserted into the id index after task {}: ids are issued in order and never reused",
            self.id_inserted_max
        );
        self.id_inserted_max = id;
        let slot = u32::try_from(slot).expect("task slots fit in u32 (tasks_count_max)");
        let (shard, hash) = locate(id);
        self.shards[shard].insert_unique(hash, slot, |&s| locate(tasks[s as usize].id).1);
        self.len += 1;
    }

    /// Removes task `id`, which was at `slot` (the task may already be gone from
    /// the slab: entries are matched by slot).
    pub(super) fn remove(&mut self, id: TaskId, slot: usize) {
        let (shard, hash) = locate(id);
        let entry = self.shards[shard].find_entry(hash, |&s| s as usize == slot);
        assert!(entry.is_ok(), "task {id} at slot {slot} is not in the id index");
        if let Ok(entry) = entry {
            entry.remove();
            self.len -= 1;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::payload::Payload;
    use crate::engine::{Task, TaskState};

    fn task(id: TaskId) -> Task {
        Task {
            id,
            payload: Payload::empty(),
            due_ms: 0,
            created_ms: 0,
            updated_ms: 0,
            queue: 0,
            group: 0,
            priority: 0,
            attempts: 0,
            max_attempts: 1,
            retries: 0,
            state: TaskState::Ready,
            track: 0,
            cold: false,
            extra: None,
        }
    }

    #[test]
    fn ids_inserted_in_order_are_found_at_their_slots() {
        let (mut tasks, mut index) = (TaskSlab::default(), IdIndex::default());
        for id in [1, 2, 70, 1_000] {
            let slot = tasks.insert(task(id));
            index.insert(&tasks, slot);
            assert_eq!(index.get(&tasks, id), Some(slot));
        }
        assert_eq!(index.len(), 4);
    }

    /// The release-mode check: a second entry for one id (or an id issued
    /// out of order) stops the process instead of corrupting lookups.
    #[test]
    #[should_panic(expected = "inserted into the id index after task 7")]
    fn a_second_entry_for_one_id_panics_in_release_builds() {
        let (mut tasks, mut index) = (TaskSlab::default(), IdIndex::default());
        let first = tasks.insert(task(7));
        index.insert(&tasks, first);
        let second = tasks.insert(task(7));
        index.insert(&tasks, second);
    }
}
