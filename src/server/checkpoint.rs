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
//!
//! **Failure is fail-stop, after bounded retries.** A round that fails before
//! it took anything from the engine (the write batch could not be opened) is
//! retried in the next round, up to [`CHECKPOINT_RETRIES_MAX`] times in a row. A
//! round that fails in its write or flush is not retried at all: the engine's
//! change tracking was already consumed into the lost batch, so a later round
//! would write a checkpoint that lacks those rows yet claims their LSN, and the
//! store refuses further writes anyway (it is fail-stop). Either way the server
//! then stops (as on SIGTERM) and exits with status 1: the write-ahead log below
//! the last good checkpoint was never removed, so a restart recovers everything
//! from the last good checkpoint plus the log. Retrying forever instead let the
//! log grow without bound while the disk failed (issue 15, item 9).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::durability::CheckpointSignal;
use super::Shared;
use crate::store::Store;
use crate::wal::committer::Committer;

/// `--checkpoint-interval-ms` default: time between checkpoints while anything changes.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Rounds in a row that may fail before anything was taken from the engine
/// before the server stops (~3 intervals: a transient error gets that long).
pub const CHECKPOINT_RETRIES_MAX: u32 = 3;
/// Poll period while waiting for the log to become durable up to a checkpoint.
const DURABLE_POLL: Duration = Duration::from_millis(1);

/// Runs a round every `interval` or when nudged, until told to
/// stop (or the channel closes); then takes one last checkpoint. Returns why
/// it stopped the server, if a checkpoint failed (module docs).
pub(crate) fn run(
    shared: Arc<Shared>,
    store: Arc<Store>,
    committer: Arc<Committer>,
    signals: Receiver<CheckpointSignal>,
    interval: Duration,
) -> Result<(), Arc<str>> {
    let mut applied_lsn = store.applied_lsn().ok().flatten().unwrap_or(0);
    let mut failures_in_a_row = 0;
    let heartbeat = shared.liveness.register_current();
    loop {
        heartbeat.idle();
        let received = signals.recv_timeout(interval);
        heartbeat.beat();
        let last = match received {
            Ok(CheckpointSignal::Nudge) | Err(RecvTimeoutError::Timeout) => false,
            Ok(CheckpointSignal::Stop) | Err(RecvTimeoutError::Disconnected) => true,
        };
        if crate::sync::lock(&shared.storage_failure).is_some() {
            return Ok(()); // fail-stop: the log failed; write nothing more anywhere
        }
        match checkpoint(&shared, &store, &committer, applied_lsn) {
            Ok(Some(lsn)) => {
                applied_lsn = lsn;
                failures_in_a_row = 0;
            }
            Ok(None) => failures_in_a_row = 0,
            Err(Failed { error, rows_taken: false }) if failures_in_a_row < CHECKPOINT_RETRIES_MAX && !last => {
                failures_in_a_row += 1;
                tracing::warn!(%error, failures_in_a_row, "checkpoint failed before taking any rows; the next round retries");
            }
            Err(Failed { error, rows_taken }) => {
                let reason: Arc<str> = Arc::from(format!(
                    "a checkpoint into RocksDB failed ({error}){}",
                    if rows_taken {
                        "; its rows were taken from the engine, so no later checkpoint could be complete"
                    } else {
                        ""
                    }
                ));
                tracing::error!(%reason, "stopping the server; the write-ahead log is intact and a restart recovers");
                super::os::signal_stop();
                return Err(reason);
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// A failed round, and whether it got as far as taking the engine's changes.
struct Failed {
    error: crate::store::StoreError,
    rows_taken: bool,
}

/// One round; the new applied LSN, or `None` if nothing changed.
fn checkpoint(shared: &Shared, store: &Store, committer: &Committer, applied_lsn: u64) -> Result<Option<u64>, Failed> {
    let started = Instant::now();
    let taken = |error| Failed { error, rows_taken: true };
    // The rows go straight into RocksDB's write batch, one copy each, under the
    // engine lock (no intermediate copy per row: a checkpoint of millions of
    // rows otherwise held both at once).
    let mut rows = store.rows().map_err(|error| Failed { error, rows_taken: false })?;
    let (meta, next_id, upto, cold_reads) = {
        let mut state = shared.lock_engine();
        let upto = committer.last_appended_lsn();
        if upto == applied_lsn {
            return Ok(None);
        }
        let (meta, next_id) = state.executor.engine.take_changes_into(&mut rows);
        (meta, next_id, upto, state.journal.tiering.as_ref().map(|t| t.fence.advance()))
    };
    // Cold payloads being read off the lock keep their rows (tiering.rs).
    if let Some(drain) = cold_reads {
        drain.wait();
    }
    // Every task below this id has its payload row in `rows` or an earlier
    // checkpoint; once flushed, those payloads may leave memory.
    let checkpointed_below = next_id;
    while committer.durable_lsn() < upto {
        if crate::sync::lock(&shared.storage_failure).is_some() {
            return Ok(None);
        }
        std::thread::sleep(DURABLE_POLL);
    }
    // Consumes (frees) the batch before the flush, which takes a while, so that
    // a backlog growing meanwhile does not find this copy still held on top of
    // the next checkpoint's.
    let (tasks_count, queues_count) = (rows.task_rows(), rows.queue_rows());
    store.write_rows(rows, upto, &meta).map_err(taken)?;
    let durable = store.flush().map_err(taken)?;
    assert!(durable >= upto, "RocksDB flushed applied LSN {durable}, below the {upto} just written");
    committer.remove_through(durable);
    {
        let mut state = shared.lock_engine();
        let state = &mut *state;
        if let Some(tiering) = &state.journal.tiering {
            tiering.evict(&mut state.executor.engine, checkpointed_below);
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
