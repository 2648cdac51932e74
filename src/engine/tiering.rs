//! Tiered payload storage, the engine's part: how many payload bytes are held
//! in memory, which payloads may leave it, and which tasks have a cold payload
//! (one that lives only in the checkpoint store; the driver reads it back when
//! the task is leased or looked up, see `src/server/tiering.rs`).
//!
//! The engine never decides on its own to drop a payload: the driver calls
//! [`Engine::evict_payloads`] with a bound below which every payload is known to
//! be durable in the store (`Changes::next_id` of a flushed checkpoint).

use super::id_run::IdRun;
use super::payload::Payload;
use super::{Engine, Task, TaskId};

impl Engine {
    /// Switches tiered storage on (an index of the tasks whose payload is in
    /// memory, an [`IdRun`]: about 8 bytes per task, O(n log n) to build, O(1)
    /// amortized per task created, O(log n) per task purged) or off.
    pub fn set_payload_tiering(&mut self, on: bool) {
        self.resident_ids = on.then(|| {
            let mut ids: Vec<TaskId> = self.tasks.iter().filter(|(_, t)| !t.cold).map(|(_, t)| t.id).collect();
            ids.sort_unstable();
            let mut run = IdRun::default();
            ids.into_iter().for_each(|id| run.insert(id));
            run
        });
    }

    /// Payload bytes held in memory (cold payloads excluded).
    pub fn resident_payload_bytes(&self) -> u64 {
        self.payload_bytes_resident
    }

    /// Whether task `id` exists and its payload lives only in the store.
    pub fn payload_is_cold(&self, id: TaskId) -> bool {
        self.live_slot(id).is_some_and(|slot| self.tasks[slot].cold)
    }

    /// Drops from memory the payloads of tasks with an id below `below_id`,
    /// newest first (in FIFO order they are delivered last), until at least
    /// `bytes` are freed or none is left. Returns how many payloads and bytes.
    /// Does nothing unless tiered storage is on.
    pub fn evict_payloads(&mut self, below_id: TaskId, bytes: u64) -> (usize, u64) {
        let Some(resident) = self.resident_ids.as_mut() else { return (0, 0) };
        let (mut count, mut freed) = (0, 0u64);
        while freed < bytes {
            let Some(id) = resident.pop_newest_below(below_id) else { break };
            let slot = self.slot_by_id.get(&self.tasks, id).expect("a resident task is live");
            let task = &mut self.tasks[slot];
            assert!(!task.cold, "task {id} is in the resident index but cold");
            freed += task.payload.len() as u64;
            task.payload = Payload::empty();
            task.cold = true;
            count += 1;
        }
        self.payload_bytes_resident -= freed;
        (count, freed)
    }

    /// Accounts for the task just placed at `slot`.
    pub(super) fn payload_resident(&mut self, slot: usize) {
        let task = &self.tasks[slot];
        if task.cold {
            return;
        }
        self.payload_bytes_resident += task.payload.len() as u64;
        if let Some(resident) = self.resident_ids.as_mut() {
            resident.insert(task.id);
        }
    }

    /// Accounts for `task`, just removed.
    pub(super) fn payload_forgotten(&mut self, task: &Task) {
        if task.cold {
            return;
        }
        self.payload_bytes_resident -= task.payload.len() as u64;
        if let Some(resident) = self.resident_ids.as_mut() {
            resident.remove(task.id);
        }
    }

    /// The accounting agrees with the tasks (part of `check_invariants`).
    pub(super) fn check_payload_accounting(&self) -> Result<(), String> {
        let resident: u64 = self.tasks.iter().filter(|(_, t)| !t.cold).map(|(_, t)| t.payload.len() as u64).sum();
        if resident != self.payload_bytes_resident {
            return Err(format!("{resident} payload bytes in memory, {} accounted", self.payload_bytes_resident));
        }
        if let Some(run) = &self.resident_ids {
            run.check().map_err(|e| format!("resident payload index: {e}"))?;
            let mut expected: Vec<TaskId> = self.tasks.iter().filter(|(_, t)| !t.cold).map(|(_, t)| t.id).collect();
            expected.sort_unstable();
            let mut actual: Vec<TaskId> = run.ids().collect();
            actual.sort_unstable();
            if actual != expected {
                return Err("the resident payload index differs from the tasks".into());
            }
        }
        if let Some((_, task)) = self.tasks.iter().find(|(_, t)| t.cold && !t.payload.is_empty()) {
            return Err(format!("task {} is cold but holds a payload", task.id));
        }
        Ok(())
    }
}
