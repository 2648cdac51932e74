//! Tiered payload storage: a memory budget for payload bytes (`--memory-limit`).
//!
//! Past the budget, the checkpointer drops from memory the payloads of tasks
//! whose payload rows are already flushed to RocksDB (newest first: in the
//! usual FIFO order they are delivered last). Those payloads are "cold": the
//! engine keeps the task, and a worker reads the payload back from the store
//! when the task is leased or looked up. Nothing else changes: a cold task is
//! scheduled, retried and checkpointed like any other.

use std::sync::Arc;

use crate::command::Reply;
use crate::engine::{Engine, TaskId};
use crate::store::Store;

/// `--memory-limit` default: payload bytes kept in memory (this machine kind
/// has 24 GiB; the rest is left for indexes, connections and the page cache).
pub const MEMORY_LIMIT_BYTES_DEFAULT: u64 = 4 << 30;
/// Eviction frees down to this share of the budget, so that it does not run
/// again after every few enqueues.
const EVICT_TO_PERCENT: u64 = 90;

/// Parses `4GiB`, `512MiB`, `64KiB` or a plain number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        "TiB" | "T" => 40,
        other => return Err(format!("unknown unit {other:?} (use B, KiB, MiB, GiB or TiB)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("expected a number of bytes like 4GiB, got {s:?}"))?;
    n.checked_mul(1 << shift).filter(|&b| b > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// The budget and where cold payloads live.
pub(crate) struct Tiering {
    pub(crate) store: Arc<Store>,
    pub(crate) budget_bytes: u64,
}

impl Tiering {
    /// Whether the payloads held in memory exceed the budget.
    pub(crate) fn over_budget(&self, engine: &Engine) -> bool {
        engine.resident_payload_bytes() > self.budget_bytes
    }

    /// Drops payloads of tasks below `checkpointed_below` (their rows are
    /// flushed) until the resident bytes are back under the budget's target.
    pub(crate) fn evict(&self, engine: &mut Engine, checkpointed_below: TaskId) {
        let resident = engine.resident_payload_bytes();
        let target = self.budget_bytes / 100 * EVICT_TO_PERCENT;
        if resident <= self.budget_bytes {
            return;
        }
        let (count, bytes) = engine.evict_payloads(checkpointed_below, resident - target);
        tracing::info!(count, bytes, resident_bytes = resident - bytes, "payloads moved to the store (memory limit)");
    }

    /// Fills in the cold payloads of `reply` from the store. A payload missing
    /// from the store (which the checkpoint order rules out) or a read error
    /// turns the reply into `storage_failed`; the task itself is unaffected.
    pub(crate) fn warm(&self, engine: &Engine, reply: &mut Reply) {
        let result = match reply {
            Reply::Leased(tasks) => tasks.iter_mut().try_for_each(|task| self.fill(engine, task.id, &mut task.payload)),
            Reply::Task(view) => self.fill(engine, view.id, &mut view.payload),
            _ => Ok(()),
        };
        if let Err(reason) = result {
            tracing::error!(%reason, "cannot read a cold payload");
            *reply = Reply::StorageFailed(Arc::from(reason));
        }
    }

    fn fill(&self, engine: &Engine, id: TaskId, payload: &mut bytes::Bytes) -> Result<(), String> {
        if !engine.payload_is_cold(id) {
            return Ok(());
        }
        match self.store.payload(id) {
            Ok(Some(bytes)) => {
                *payload = bytes;
                Ok(())
            }
            Ok(None) => Err(format!("the payload of task {id} is neither in memory nor in the store")),
            Err(error) => Err(format!("reading the payload of task {id} from the store failed: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn memory_limits_parse_with_binary_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        for bad in ["", "0", "GiB", "4 GB", "-1", "99999999999TiB", "1.5GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }
}
