//! Where tasks live: slabs of a fixed size, so that growing never moves them.
//!
//! One `Slab` doubles its `Vec` as it grows: at 8 million tasks of 80 bytes that
//! is a 640 MB copy (and as many fresh pages to fault in) under the engine lock,
//! tens of milliseconds for the one request that triggers it (measured with
//! `engine_backlog`, docs/benchmarks/changelog.md). Here tasks live in slabs of
//! [`CHUNK_TASKS`] that are allocated whole and never grow, so adding a task
//! costs at most one chunk allocation; freed slots are reused as before (the
//! pooling the architecture asks for), and a slot number is a chunk index and a
//! position in it.

use slab::Slab;

use super::Task;

/// Tasks per chunk: 5 MiB of 80-byte records, small enough to allocate under
/// the lock without a noticeable stall, large enough that the chunk list stays
/// short (153 chunks at 10 million tasks).
const CHUNK_TASKS: usize = 1 << 16;
const CHUNK_BITS: u32 = CHUNK_TASKS.trailing_zeros();

#[derive(Default)]
pub(super) struct TaskSlab {
    chunks: Vec<Slab<Task>>,
    /// Chunks with a free slot, most recently freed last (a stack).
    with_room: Vec<u32>,
    len: usize,
}

impl TaskSlab {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Places `task` and returns its slot.
    pub(super) fn insert(&mut self, task: Task) -> usize {
        let c = match self.with_room.last() {
            Some(&c) => c as usize,
            None => {
                self.chunks.push(Slab::with_capacity(CHUNK_TASKS));
                self.with_room.push((self.chunks.len() - 1) as u32);
                self.chunks.len() - 1
            }
        };
        let chunk = &mut self.chunks[c];
        let at = chunk.insert(task);
        // On in release: a position past the chunk would spill into the chunk
        // bits of the slot number, and the slot would name another task.
        assert!(at < CHUNK_TASKS, "slab chunk {c} placed a task at {at}, past its {CHUNK_TASKS} slots");
        if chunk.len() == CHUNK_TASKS {
            self.with_room.pop();
        }
        self.len += 1;
        (c << CHUNK_BITS) | at
    }

    /// Removes and returns the task at `slot`, which must be occupied.
    pub(super) fn remove(&mut self, slot: usize) -> Task {
        let (c, at) = (slot >> CHUNK_BITS, slot & (CHUNK_TASKS - 1));
        let chunk = &mut self.chunks[c];
        let was_full = chunk.len() == CHUNK_TASKS;
        let task = chunk.remove(at);
        if was_full {
            self.with_room.push(c as u32);
        }
        self.len -= 1;
        task
    }

    /// Every task with its slot, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Task)> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(c, chunk)| chunk.iter().map(move |(at, task)| ((c << CHUNK_BITS) | at, task)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Task)> + '_ {
        self.chunks
            .iter_mut()
            .enumerate()
            .flat_map(|(c, chunk)| chunk.iter_mut().map(move |(at, task)| ((c << CHUNK_BITS) | at, task)))
    }
}

impl std::ops::Index<usize> for TaskSlab {
    type Output = Task;
    fn index(&self, slot: usize) -> &Task {
        &self.chunks[slot >> CHUNK_BITS][slot & (CHUNK_TASKS - 1)]
    }
}

impl std::ops::IndexMut<usize> for TaskSlab {
    fn index_mut(&mut self, slot: usize) -> &mut Task {
        &mut self.chunks[slot >> CHUNK_BITS][slot & (CHUNK_TASKS - 1)]
    }
}
