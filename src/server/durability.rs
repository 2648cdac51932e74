//! Durability: the mode the server runs in, recovery of the engine from the
//! write-ahead log at start, and the [`Journal`] workers log commands to.
//!
//! The log is a command log (docs/durability.md): each record is a
//! state-changing command as a worker executed it, with the `now_ms` it passed
//! the engine, or a tick that fired timers, or (first) the engine's seed.
//! Replaying the records through the same `execute` rebuilds the same state,
//! including lease tokens, because the engine is deterministic.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::activity_log::{ActivityCounters, Phase};
use super::outbox::ReplyTo;

use super::tiering::Tiering;
use super::ServeError;
use crate::command::{Command, Reply};
use crate::core::executor::{encode_entry, Effects};
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::store::Store;
use crate::wal::committer::{Committer, CommitterOptions, FailureHook};
use crate::wal::log::{Log, OpenOptions};
use crate::wal::record::Entry;
use crate::wal::storage::DirStorage;
use crate::wal::watermark::Watermark;

/// Size of each preallocated, zero-filled WAL segment file. Rolling to a new
/// one writes this many zeros and syncs them on the WAL thread.
pub const WAL_SEGMENT_BYTES: usize = 32 << 20;
/// Longest accepted `interval:<ms>`.
pub const INTERVAL_MS_MAX: u64 = 60_000;

/// What an acknowledged reply means (docs/durability.md, "Guarantees").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityMode {
    /// Replies to state changes wait for the `fdatasync` covering their record.
    Sync,
    /// Replies go at once; the log is written and synced at least every `ms`.
    Interval { ms: u64 },
    /// No log: state lives in memory only and is lost when the process ends.
    Memory,
}

impl FromStr for DurabilityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(DurabilityMode::Sync),
            "memory" => Ok(DurabilityMode::Memory),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| (1..=INTERVAL_MS_MAX).contains(ms))
                    .ok_or_else(|| {
                        format!("expected sync, memory or interval:<1..={INTERVAL_MS_MAX} ms>, got {s:?}")
                    })?;
                Ok(DurabilityMode::Interval { ms })
            }
        }
    }
}

impl fmt::Display for DurabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurabilityMode::Sync => write!(f, "sync"),
            DurabilityMode::Interval { ms } => write!(f, "interval:{ms}"),
            DurabilityMode::Memory => write!(f, "memory"),
        }
    }
}

/// Where workers log what they execute. Owned by the engine state, so records
/// are submitted in execution order under the engine lock.
pub(crate) struct Journal {
    committer: Option<Arc<Committer>>,
    /// `sync` mode: replies to state changes wait for their record's sync.
    replies_wait: bool,
    /// Payloads past the memory budget live in the store (not in `memory` mode).
    pub(crate) tiering: Option<Tiering>,
    /// Wakes the checkpointer early (when payloads exceed the budget).
    pub(crate) nudge: Option<SyncSender<CheckpointSignal>>,
    /// `memory` mode: payload bytes the engine may hold (`--memory-limit`).
    /// With no store to move payloads to, an enqueue past it is refused
    /// (`capacity_exceeded`, retryable) instead of growing until the OS kills
    /// the server.
    payload_bytes_max: Option<u64>,
    /// Where the replies' task events are counted (`stats.rs`); `None` with
    /// `--no-metrics`. Written under the engine lock, like everything here.
    pub(crate) task_events: Option<Arc<crate::metrics::TaskEvents>>,
    /// The opcode of the command being executed (set by `worker.rs` with
    /// metrics on), which tells the task events what its reply means.
    pub(crate) executing_opcode: u8,
}

/// What the checkpointer is told besides its timer.
pub(crate) enum CheckpointSignal {
    /// Take a checkpoint now (payloads are over the memory budget).
    Nudge,
    /// Take a last checkpoint and exit.
    Stop,
}

/// Changed rows past which a checkpoint increment starts before its interval
/// is over (see `Journal::check_budget`): bounds what one increment copies
/// under the engine lock (~100 ns per task: ~13 ms) and holds until RocksDB
/// has it (~2 × 190 bytes per task with 100-byte payloads: ~50 MB), while
/// checkpoints keep up (src/server/checkpoint.rs).
pub(crate) const CHECKPOINT_ROWS_NUDGE: usize = 131_072;

impl Journal {
    /// `memory` mode: no log, and at most `payload_bytes_max` payload bytes.
    pub(crate) fn memory(payload_bytes_max: u64) -> Journal {
        Journal {
            committer: None,
            replies_wait: false,
            tiering: None,
            nudge: None,
            payload_bytes_max: Some(payload_bytes_max),
            task_events: None,
            executing_opcode: 0,
        }
    }

    /// Refuses an enqueue that would take the payloads held in memory past
    /// the `memory`-mode budget.
    fn over_payload_budget(&self, engine: &Engine, command: &Command) -> Option<Reply> {
        let max = self.payload_bytes_max?;
        let adding: u64 = match command {
            Command::Enqueue { task, .. } => task.payload.len() as u64,
            Command::EnqueueBatch { tasks, .. } => tasks.iter().map(|t| t.payload.len() as u64).sum(),
            _ => return None,
        };
        (engine.resident_payload_bytes().saturating_add(adding) > max).then(|| {
            Reply::Error(EngineError::CapacityExceeded {
                what: "payload bytes (--memory-limit)",
                limit: usize::try_from(max).unwrap_or(usize::MAX),
            })
        })
    }

    /// Sends `result` to `reply`, to leave once the watermark reaches `lsn`,
    /// its cold payloads (tiered storage) read off the engine lock first
    /// (`tiering.rs`).
    pub(crate) fn reply(&self, engine: &Engine, result: Reply, reply: ReplyTo, lsn: u64) {
        match &self.tiering {
            Some(tiering) => tiering.send(engine, result, reply, lsn),
            None => reply.send(result, lsn),
        }
    }

    /// The LSN a reply made now must wait for: in `sync` mode the last record
    /// appended (a reply shows state up to it, whatever it is: a write's own
    /// record, a lease, what a read saw, a state-dependent error), so no
    /// client sees state a crash can take back; otherwise 0 (replies go at
    /// once: `interval` and `memory` promise less, docs/durability.md).
    pub(crate) fn reply_lsn(&self) -> u64 {
        match &self.committer {
            Some(committer) if self.replies_wait => committer.last_appended_lsn(),
            _ => 0,
        }
    }

    /// After a batch: wake the checkpointer early if payloads exceed the memory
    /// budget (it moves some to the store once they are checkpointed), or if
    /// [`CHECKPOINT_ROWS_NUDGE`] rows changed since the last checkpoint: a
    /// checkpoint holds a copy of every changed row until RocksDB has it, so
    /// letting millions accumulate between two timed rounds would double the
    /// memory of a fast-growing backlog.
    pub(crate) fn check_budget(&self, engine: &Engine) {
        if let (Some(tiering), Some(nudge)) = (&self.tiering, &self.nudge) {
            if tiering.over_budget(engine) || engine.changes_pending() >= CHECKPOINT_ROWS_NUDGE {
                // Full means a nudge is already pending: nothing to add.
                let _ = nudge.try_send(CheckpointSignal::Nudge);
            }
        }
    }

    /// Writes what is queued and stops the WAL thread (once the checkpointer,
    /// which shares it, has stopped).
    pub(crate) fn stop(&mut self) {
        if let Some(committer) = self.committer.take() {
            match Arc::try_unwrap(committer) {
                Ok(committer) => committer.stop(),
                Err(_) => tracing::warn!("the WAL thread is still shared at stop; it stops when released"),
            }
        }
    }
}

/// The server's side of the executor (`crate::core::executor`): records go
/// to the WAL thread's buffer, replies to their reactors (through the cold
/// reader when they show cold payloads).
impl Effects for Journal {
    type To = ReplyTo;

    fn logging(&self) -> bool {
        self.committer.is_some()
    }

    fn append(&mut self, record: Vec<u8>) -> u64 {
        self.committer.as_ref().map_or(0, |committer| committer.append(record))
    }

    fn reply_lsn(&self) -> u64 {
        Journal::reply_lsn(self)
    }

    fn send(&mut self, engine: &Engine, to: ReplyTo, reply: Reply, lsn: u64) {
        if let Some(events) = &self.task_events {
            super::stats::count_task_events(events, self.executing_opcode, &reply);
        }
        self.reply(engine, reply, to, lsn);
    }

    fn is_closed(to: &ReplyTo) -> bool {
        to.is_closed()
    }

    fn refuse(&self, engine: &Engine, command: &Command) -> Option<Reply> {
        self.over_payload_budget(engine, command)
    }
}

/// What the log writer reports to: the durable watermark it advances, and
/// who it tells once if it fails (the server then stops).
pub(crate) struct LogWriterHooks {
    pub(crate) on_failure: FailureHook,
    pub(crate) watermark: Arc<Watermark>,
    /// Where each batch's records, bytes and sync time are counted (`/metrics`).
    pub(crate) wal_metrics: Arc<crate::metrics::WalMetrics>,
    /// Where slow syncs are counted and recovery says how far it is
    /// (`activity_log.rs`).
    pub(crate) activity: Arc<ActivityCounters>,
}

/// The engine as recovery left it, and the journal to continue with.
pub(crate) struct Recovered {
    pub(crate) engine: Engine,
    pub(crate) journal: Journal,
    /// The checkpoint store and the WAL thread, for the checkpointer (not in
    /// `memory` mode).
    pub(crate) checkpointing: Option<(Arc<Store>, Arc<Committer>)>,
    /// The latest `now_ms` in the log: the worker's clock never goes below it,
    /// so replay sees the same times the engine saw.
    pub(crate) clock_ms: u64,
}

/// Opens the log in `data_dir/wal`, replays it into a fresh engine and starts
/// the WAL thread. In `memory` mode there is no log; a fresh engine starts.
/// `config` carries the lease key (`lease_key.rs`); its seed is the log's.
pub(crate) fn recover(
    config: EngineConfig,
    data_dir: &Path,
    mode: DurabilityMode,
    sync_gate: Option<&Path>,
    memory_limit_bytes: u64,
    accept_data_loss: bool,
    log_writer: LogWriterHooks,
) -> Result<Recovered, ServeError> {
    let LogWriterHooks { on_failure, watermark, wal_metrics, activity } = log_writer;
    let wal_dir = data_dir.join("wal");
    if mode == DurabilityMode::Memory {
        if wal_dir.exists() {
            tracing::warn!(dir = %wal_dir.display(), "durability is memory: the write-ahead log there is ignored");
        }
        let engine = Engine::new(EngineConfig { seed: super::os::random_u64(), ..config });
        return Ok(Recovered {
            engine,
            journal: Journal::memory(memory_limit_bytes),
            checkpointing: None,
            clock_ms: 0,
        });
    }

    let started = Instant::now();
    let progress = &activity.recovery;
    progress.enter(&activity, Phase::LoadingCheckpoint);
    let store_dir = data_dir.join("store");
    let store =
        Store::open(&store_dir).map_err(|e| ServeError::Store(store_dir.display().to_string(), e.to_string()))?;
    // Payloads past the budget stay in the store (cold) from the start.
    let checkpoint = store
        .load_with_payload_budget(memory_limit_bytes)
        .map_err(|e| ServeError::Store(store_dir.display().to_string(), e.to_string()))?;
    let storage = match sync_gate {
        None => DirStorage::new(wal_dir.clone()),
        Some(gate) => DirStorage::with_sync_gate(wal_dir.clone(), gate),
    }
    .map_err(ServeError::Io)?;
    let wal_error = |error| ServeError::Wal(wal_dir.display().to_string(), error);
    let options = OpenOptions { accept_data_loss };
    progress.enter(&activity, Phase::ReadingLog);
    let (mut log, mut recovered) =
        Log::open_with(storage, WAL_SEGMENT_BYTES, Box::new(super::os::random_u64), options).map_err(wal_error)?;
    if let Some(torn) = &recovered.torn {
        // Only a crash during a batch's write leaves this, and that batch was
        // never acknowledged (its fdatasync had not returned). Damage confined
        // to the final batch alone looks the same, hence the wording.
        tracing::warn!(
            dropped = %torn,
            "the log ended in an incomplete final batch, as a crash during its write leaves it; it was dropped \
             (if a crash tore it, none of it was acknowledged: replies wait for the batch's fdatasync)"
        );
    }
    for note in &recovered.notes {
        tracing::info!("{note}");
    }
    for dropped in &recovered.dropped {
        tracing::error!(%dropped, "--accept-data-loss: damaged write-ahead log; dropped");
    }

    let (engine, applied_lsn) = match checkpoint {
        Some(checkpoint) => {
            let restored = Engine::restore(
                config.clone(),
                &checkpoint.meta,
                checkpoint.queues,
                checkpoint.tasks,
                checkpoint.payloads,
            )
            .map_err(|e| ServeError::Store(store_dir.display().to_string(), e.to_string()))?;
            // Tracked from here on (restore leaves tracking on), so the records
            // replayed below reach the next checkpoint.
            let mut restored = restored;
            restored.set_payload_tiering(true);
            (Some(restored), checkpoint.applied_lsn)
        }
        None => (None, 0),
    };
    // The log must hold every record after the checkpoint.
    if accept_data_loss && applied_lsn > 0 && (log.first_lsn() > applied_lsn + 1 || log.next_lsn() <= applied_lsn) {
        // The checkpoint holds more than the log can add to: keep it, and
        // restart the log right after it (what the log held past it is lost).
        tracing::error!(
            checkpoint_lsn = applied_lsn,
            log_first_lsn = log.first_lsn(),
            log_next_lsn = log.next_lsn(),
            "--accept-data-loss: the log cannot continue the checkpoint; every segment removed, the log restarts \
             after the checkpoint, and every record it held after the checkpoint is dropped"
        );
        log.restart_at(applied_lsn + 1).map_err(wal_error)?;
        recovered.records.clear();
    }
    if log.first_lsn() > applied_lsn + 1 || log.next_lsn() <= applied_lsn {
        return Err(ServeError::Replay {
            lsn: applied_lsn,
            reason: format!(
                "the log holds LSNs {}..{} but the checkpoint in {} needs every record after {applied_lsn}",
                log.first_lsn(),
                log.next_lsn(),
                store_dir.display()
            ),
        });
    }
    let records: Vec<_> = recovered.records.into_iter().filter(|(lsn, _)| *lsn > applied_lsn).collect();
    let records_count = records.len();
    let bytes_count: usize = records.iter().map(|(_, r)| r.len()).sum();
    progress.replaying(&activity, records_count as u64);
    let (engine, clock_ms) =
        crate::core::replay::replay(&config, engine, records, |replayed| progress.replayed(replayed as u64))
            .map_err(|e| ServeError::Replay { lsn: e.lsn, reason: e.reason })?;
    progress.enter(&activity, Phase::Finishing);
    let mut engine = match engine {
        Some(engine) => engine,
        None => {
            // A new log: its first record is the seed, synced before anything else.
            let seed = super::os::random_u64();
            log.append(&[encode_entry(0, Entry::Seed(seed))]).map_err(wal_error)?;
            Engine::new(EngineConfig { seed, ..config })
        }
    };
    if let Err(reason) = engine.check_invariants() {
        return Err(ServeError::Replay { lsn: log.next_lsn().saturating_sub(1), reason });
    }
    if applied_lsn == 0 {
        // Built from the log alone: switching tracking on marks everything, so
        // the first checkpoint is complete.
        engine.set_change_tracking(true);
        engine.set_payload_tiering(true);
    }
    progress.done();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        checkpoint_lsn = applied_lsn,
        records = records_count,
        bytes = bytes_count,
        tasks = engine.tasks_count(),
        elapsed_ms,
        %mode,
        "recovered"
    );

    let linger = match mode {
        DurabilityMode::Interval { ms } => Duration::from_millis(ms),
        _ => Duration::ZERO,
    };
    let committer = Arc::new(
        Committer::start_with(
            log,
            CommitterOptions {
                linger,
                on_failure: Some(on_failure),
                on_batch: Some(Box::new(move |batch: &crate::wal::committer::BatchReport| {
                    let sync_us = batch.sync_duration.as_micros() as u64;
                    wal_metrics.batch(batch.records, batch.bytes, sync_us);
                    activity.wal_batch_synced(sync_us);
                })),
            },
            watermark,
        )
        .map_err(ServeError::Io)?,
    );
    let store = Arc::new(store);
    let journal = Journal {
        committer: Some(committer.clone()),
        replies_wait: mode == DurabilityMode::Sync,
        tiering: Some(Tiering::new(store.clone(), memory_limit_bytes)),
        nudge: None,             // set when the checkpointer starts
        payload_bytes_max: None, // tiering moves payloads to the store instead
        task_events: None,       // set by `serve` with the server's metrics
        executing_opcode: 0,
    };
    Ok(Recovered { engine, journal, checkpointing: Some((store, committer)), clock_ms })
}
