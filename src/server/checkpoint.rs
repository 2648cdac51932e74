//! The checkpointer: a background thread that moves the engine's state into
//! RocksDB, so that the write-ahead log can be truncated and recovery replays
//! only what came after the last checkpoint.
//!
//! A round runs every `--checkpoint-interval-ms`, and early when
//! [`CHECKPOINT_ROWS_NUDGE`](super::durability::CHECKPOINT_ROWS_NUDGE) rows
//! changed, when payloads exceed the memory budget, and once more at a clean
//! stop. A round writes an **increment**; some rounds also **flush**:
//! 1. under the engine lock: the rows that changed since the last increment,
//!    copied into plain memory (`Engine::take_changes_into` into
//!    [`Rows`](crate::store::Rows): one copy per row, no RocksDB call, no
//!    allocation per row; large payloads shared), and the LSN of the last
//!    record submitted — the rows are exactly the effect of the records up to
//!    that LSN, because records are submitted under the same lock in execution
//!    order. This is the only time a round holds the lock (but for eviction,
//!    below), and it is O(rows changed since the last increment): the early
//!    start keeps those few under write load;
//! 2. wait until the log is durable up to that LSN (a checkpoint must never be
//!    ahead of the log: after a crash the log would continue below it);
//! 3. that increment written to RocksDB as one write batch (rows +
//!    `applied_lsn`, RocksDB's WAL off), off the lock;
//! 4. a flush — at a stop, once `--checkpoint-interval-ms` has passed since
//!    the last one, after [`FLUSH_TASK_ROWS_MAX`] task rows, or when payloads
//!    are over the memory budget: an atomic flush of all column families,
//!    then the WAL thread removes the segments wholly at or below the flushed
//!    LSN, then payloads of checkpointed tasks may leave memory (tiering).
//!
//! An increment that is written but not flushed is only in RocksDB's memtables
//! (RocksDB may flush it by itself at any time, whole: atomic flush); the log
//! still holds everything after the last flushed LSN, so a crash loses nothing
//! either way. Flushing less often than increments are written keeps the
//! engine lock holds short (small increments) without an SST flush and a
//! MANIFEST sync per increment; the log between two flushes is bounded by the
//! interval and by [`FLUSH_TASK_ROWS_MAX`].
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
/// Task rows written in increments since the last flush past which a round
/// flushes even before its interval is over: bounds the log kept between
/// flushes (and so a restart's replay) under write load to about this many
/// tasks' records, as the checkpoint every 1,000,000 changed rows did before
/// increments (~130 MB of log with 100-byte payloads; recovery replays ~3.8 s
/// per GiB, docs/durability.md). RocksDB flushes full memtables (32 MiB of
/// task rows) by itself anyway, so flushing less often would save little.
pub const FLUSH_TASK_ROWS_MAX: usize = 1_000_000;

/// What the checkpointer has written and flushed so far.
#[derive(Debug)]
struct Progress {
    /// `applied_lsn` of the last increment written (in RocksDB's memtables at least).
    written_lsn: u64,
    /// `applied_lsn` of the last flush (durable; the log is removed below it).
    flushed_lsn: u64,
    last_flush: Instant,
    /// Task rows written since the last flush.
    task_rows_unflushed: usize,
    /// Every task below this id has its payload in an increment written so far.
    checkpointed_below: u64,
}

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
    let applied_lsn = store.applied_lsn().ok().flatten().unwrap_or(0);
    shared.metrics.checkpoint.written_lsn.store(applied_lsn, std::sync::atomic::Ordering::Relaxed);
    shared.metrics.checkpoint.flushed_lsn.store(applied_lsn, std::sync::atomic::Ordering::Relaxed);
    let mut progress = Progress {
        written_lsn: applied_lsn,
        flushed_lsn: applied_lsn,
        last_flush: Instant::now(),
        task_rows_unflushed: 0,
        checkpointed_below: 0,
    };
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
        let started = Instant::now();
        let written_before = (progress.written_lsn, progress.flushed_lsn);
        match checkpoint(&shared, &store, &committer, &mut progress, interval, last) {
            Ok(()) => {
                failures_in_a_row = 0;
                let wrote = (progress.written_lsn, progress.flushed_lsn) != written_before;
                let wrote_us = wrote.then(|| started.elapsed().as_micros() as u64);
                shared.metrics.checkpoint_round(wrote_us, store.sizes());
            }
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

/// One round: an increment if anything changed, then a flush if one is due
/// (module docs).
fn checkpoint(
    shared: &Shared,
    store: &Store,
    committer: &Committer,
    progress: &mut Progress,
    interval: Duration,
    last: bool,
) -> Result<(), Failed> {
    let over_budget = increment(shared, store, committer, progress)?;
    let due = last
        || over_budget
        || progress.last_flush.elapsed() >= interval
        || progress.task_rows_unflushed >= FLUSH_TASK_ROWS_MAX;
    if due && progress.written_lsn > progress.flushed_lsn {
        flush(shared, store, committer, progress)?;
    }
    Ok(())
}

/// Takes the rows changed since the last increment and writes them, if any;
/// returns whether payloads are over the memory budget (a flush lets them go).
fn increment(shared: &Shared, store: &Store, committer: &Committer, progress: &mut Progress) -> Result<bool, Failed> {
    let started = Instant::now();
    let taken = |error| Failed { error, rows_taken: true };
    let mut rows = store.rows().map_err(|error| Failed { error, rows_taken: false })?;
    let (meta, next_id, upto, cold_reads, over_budget, lock_held) = {
        let mut state = shared.lock_engine();
        let locked = Instant::now();
        let state = &mut *state;
        let over_budget = state.journal.tiering.as_ref().is_some_and(|t| t.over_budget(&state.executor.engine));
        let upto = committer.last_appended_lsn();
        if upto == progress.written_lsn {
            drop(rows);
            // Idle: the chunks kept for the next round's rows are not needed.
            store.release_spare_rows();
            return Ok(over_budget);
        }
        assert!(
            upto > progress.written_lsn,
            "the log's last LSN {upto} is below the checkpoint's {}",
            progress.written_lsn
        );
        let (meta, next_id) = state.executor.engine.take_changes_into(&mut rows);
        let fence = state.journal.tiering.as_ref().map(|t| t.fence.advance());
        (meta, next_id, upto, fence, over_budget, locked.elapsed())
    };
    // Cold payloads being read off the lock keep their rows (tiering.rs).
    if let Some(drain) = cold_reads {
        drain.wait();
    }
    while committer.durable_lsn() < upto {
        if crate::sync::lock(&shared.storage_failure).is_some() {
            // Fail-stop elsewhere: the server is stopping; write nothing more.
            return Ok(false);
        }
        std::thread::sleep(DURABLE_POLL);
    }
    let (tasks_count, queues_count) = (rows.task_rows(), rows.queue_rows());
    store.write_rows(rows, upto, &meta).map_err(taken)?;
    let metrics = &shared.metrics.checkpoint;
    metrics.increments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics.rows.fetch_add((tasks_count + queues_count) as u64, std::sync::atomic::Ordering::Relaxed);
    metrics.written_lsn.store(upto, std::sync::atomic::Ordering::Relaxed);
    progress.written_lsn = upto;
    progress.task_rows_unflushed += tasks_count;
    // Every task below this id has its payload row in this or an earlier
    // increment; once flushed, those payloads may leave memory.
    progress.checkpointed_below = next_id;
    tracing::debug!(
        applied_lsn = upto,
        tasks = tasks_count,
        queues = queues_count,
        lock_held_us = lock_held.as_micros() as u64,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint increment"
    );
    Ok(over_budget)
}

/// Makes every increment written so far durable, then lets the log below it go.
fn flush(shared: &Shared, store: &Store, committer: &Committer, progress: &mut Progress) -> Result<(), Failed> {
    let started = Instant::now();
    let durable = store.flush().map_err(|error| Failed { error, rows_taken: true })?;
    assert!(
        durable >= progress.written_lsn,
        "RocksDB flushed applied LSN {durable}, below the {} written before",
        progress.written_lsn
    );
    committer.remove_through(durable);
    shared.metrics.checkpoint.flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.metrics.checkpoint.flushed_lsn.store(durable, std::sync::atomic::Ordering::Relaxed);
    progress.flushed_lsn = durable;
    progress.last_flush = Instant::now();
    progress.task_rows_unflushed = 0;
    {
        let mut state = shared.lock_engine();
        let state = &mut *state;
        if let Some(tiering) = &state.journal.tiering {
            tiering.evict(&mut state.executor.engine, progress.checkpointed_below);
        }
    }
    tracing::debug!(applied_lsn = durable, elapsed_ms = started.elapsed().as_millis() as u64, "checkpoint flush");
    Ok(())
}
