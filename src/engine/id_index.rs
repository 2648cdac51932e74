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
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex { shards: (0..SHARDS).map(|_| HashTable::new()).collect(), len: 0 }
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
    pub(super) fn insert(&mut self, tasks: &TaskSlab, slot: usize) {
        let id = tasks[slot].id;
        debug_assert!(!self.contains(tasks, id));
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
