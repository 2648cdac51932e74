//! The checkpointer: a background thread that moves the engine's state into
//! RocksDB, so that the write-ahead log can be truncated and recovery replays
//! only what came after the last checkpoint.
//!
//! One round every `--checkpoint-interval-ms` (and when payloads exceed the
//! memory budget, and once more at a clean stop):
//! 1. under the engine lock: the rows that changed since the last round, copied
//!    straight into a RocksDB write batch (`Engine::take_changes_into`, one copy
//!    per row; large payloads shared), and the LSN of the last record submitted — the
//!    rows are exactly the effect of the records up to that LSN, because records
//!    are submitted under the same lock in execution order;
//! 2. wait until the log is durable up to that LSN (a checkpoint must never be
//!    ahead of the log: after a crash the log would continue below it);
//! 3. that one write batch written (rows + `applied_lsn`, RocksDB's WAL off) and
//!    freed, then an atomic flush of all column families;
//! 4. ask the WAL thread to remove the segments wholly at or below that LSN.
//!
//! RocksDB is only ever called from this thread and from recovery, never from a
//! reactor or a worker.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::durability::CheckpointSignal;
use super::Shared;
use crate::store::Store;
use crate::wal::committer::Committer;

/// `--checkpoint-interval-ms` default: time between checkpoints while anything changes.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Poll period while waiting for the log to become durable up to a checkpoint.
const DURABLE_POLL: Duration = Duration::from_millis(1);

/// Runs a round every `interval` or when nudged, until told to
/// stop (or the channel closes); then takes one last checkpoint.
pub(crate) fn run(
    shared: Arc<Shared>,
    store: Arc<Store>,
    committer: Arc<Committer>,
    signals: Receiver<CheckpointSignal>,
    interval: Duration,
) {
    let mut applied_lsn = store.applied_lsn().ok().flatten().unwrap_or(0);
    loop {
        let last = match signals.recv_timeout(interval) {
            Ok(CheckpointSignal::Nudge) | Err(RecvTimeoutError::Timeout) => false,
            Ok(CheckpointSignal::Stop) | Err(RecvTimeoutError::Disconnected) => true,
        };
        if shared.storage_failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return; // fail-stop: the log failed; write nothing more anywhere
        }
        match checkpoint(&shared, &store, &committer, applied_lsn) {
            Ok(Some(lsn)) => applied_lsn = lsn,
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "checkpoint failed; the log is kept and the next round retries"),
        }
        if last {
            return;
        }
    }
}

/// One round; the new applied LSN, or `None` if nothing changed.
fn checkpoint(
    shared: &Shared,
    store: &Store,
    committer: &Committer,
    applied_lsn: u64,
) -> Result<Option<u64>, crate::store::StoreError> {
    let started = Instant::now();
    // The rows go straight into RocksDB's write batch, one copy each, under the
    // engine lock (no intermediate copy per row: a checkpoint of millions of
    // rows otherwise held both at once).
    let mut rows = store.rows()?;
    let (meta, next_id, upto) = {
        let mut state = shared.engine.lock().unwrap_or_else(|e| e.into_inner());
        let upto = committer.last_submitted_lsn();
        if upto == applied_lsn {
            return Ok(None);
        }
        let (meta, next_id) = state.engine.take_changes_into(&mut rows);
        (meta, next_id, upto)
    };
    // Every task below this id has its payload row in `rows` or an earlier
    // checkpoint; once flushed, those payloads may leave memory.
    let checkpointed_below = next_id;
    while committer.durable_lsn() < upto {
        if shared.storage_failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Ok(None);
        }
        std::thread::sleep(DURABLE_POLL);
    }
    // Consumes (frees) the batch before the flush, which takes a while, so that
    // a backlog growing meanwhile does not find this copy still held on top of
    // the next checkpoint's.
    let (tasks_count, queues_count) = (rows.task_rows(), rows.queue_rows());
    store.write_rows(rows, upto, &meta)?;
    let durable = store.flush()?;
    assert!(durable >= upto, "RocksDB flushed applied LSN {durable}, below the {upto} just written");
    committer.remove_through(durable);
    {
        let mut state = shared.engine.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        if let Some(tiering) = &state.journal.tiering {
            tiering.evict(&mut state.engine, checkpointed_below);
        }
    }
    tracing::debug!(
        applied_lsn = durable,
        tasks = tasks_count,
        queues = queues_count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint"
    );
    Ok(Some(durable))
}
