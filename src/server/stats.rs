//! The server's side of metrics (`crate::metrics`, docs/metrics.md): what the
//! server shares for recording (each reactor's [`ReactorMetrics`], the task
//! events, the log writer's batches, checkpoints), the latency clock, and the
//! scrape: `GET /metrics`, `GET /v1/stats` and the binary `stats` request.
//!
//! A scrape is a `list_queues` command (the same scope, `admin` on every
//! queue; the same path through the executor, so the engine lock is taken
//! the way every request takes it, for the O(queues) copy of the counts):
//! when its reply comes back to the reactor, [`render_http`] or
//! [`render_binary`] add everything else, read from atomics without a lock,
//! and `/proc/self`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{DurabilityMode, Shared};
use crate::command::Reply;
use crate::engine::{QueueInfo, TaskState};
use crate::http::StatsFormat;
use crate::limits::METRICS_QUEUES_COUNT_MAX;
use crate::metrics::{
    self, CheckpointSnapshot, ConnSnapshot, ProcessSnapshot, QueueCounts, ReactorMetrics, RequestTotals, Snapshot,
    TaskEvent, TaskEvents, WalMetrics, WalSnapshot,
};
use tqx_wire::Opcode;

/// The `Content-Type` of `GET /metrics`: the text exposition format 0.0.4.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Microseconds since the server started, as a `u32` (wraps after 71
/// minutes; a latency is the wrapping difference of two readings, right for
/// anything shorter). One vDSO `clock_gettime`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LatencyClock {
    started: Instant,
}

impl LatencyClock {
    #[inline]
    pub(crate) fn now_us(&self) -> u32 {
        self.started.elapsed().as_micros() as u32
    }
}

/// Checkpoint rounds (`checkpoint.rs`): shared atomics, written once a round.
#[derive(Default)]
pub(crate) struct CheckpointMetrics {
    pub(crate) increments: AtomicU64,
    pub(crate) flushes: AtomicU64,
    /// Of the last round that wrote anything, in µs (`u64::MAX`: none yet).
    last_duration_us: AtomicU64,
    /// When the last round succeeded, in µs since start (`u64::MAX`: never).
    last_success_us: AtomicU64,
    sst_bytes: AtomicU64,
    memtable_bytes: AtomicU64,
    /// For the activity log (`activity_log.rs`): rounds that wrote anything,
    /// rows written by increments, the slowest round since the activity log
    /// last looked (µs), and the applied LSNs of the last increment and flush.
    rounds_written: AtomicU64,
    pub(crate) rows: AtomicU64,
    round_us_max: AtomicU64,
    pub(crate) written_lsn: AtomicU64,
    pub(crate) flushed_lsn: AtomicU64,
}

impl CheckpointMetrics {
    /// Rounds that wrote and rows written so far, and the slowest round
    /// since the last call (µs). The count is read first: a round publishes
    /// its duration before it counts (`ServerMetrics::checkpoint_round`).
    pub(crate) fn activity(&self) -> (u64, u64, u64) {
        let rounds = self.rounds_written.load(Ordering::Acquire);
        (rounds, self.rows.load(Ordering::Relaxed), self.round_us_max.swap(0, Ordering::AcqRel))
    }

    /// The applied LSN of the last increment written and of the last flush.
    pub(crate) fn lsns(&self) -> (u64, u64) {
        (self.written_lsn.load(Ordering::Relaxed), self.flushed_lsn.load(Ordering::Relaxed))
    }
}

/// Everything the server records for metrics.
pub(crate) struct ServerMetrics {
    /// `false` with `--no-metrics`: requests are neither counted nor timed,
    /// nor their task events counted (the rest, a few events per connection,
    /// batch or checkpoint, still is).
    pub(crate) enabled: bool,
    pub(crate) clock: LatencyClock,
    /// One per reactor thread; locked only to register a reactor and by a scrape.
    reactors: Mutex<Vec<Arc<ReactorMetrics>>>,
    pub(crate) task_events: Arc<TaskEvents>,
    pub(crate) wal: Arc<WalMetrics>,
    pub(crate) checkpoint: CheckpointMetrics,
    durability: DurabilityMode,
}

impl ServerMetrics {
    pub(crate) fn new(enabled: bool, durability: DurabilityMode) -> ServerMetrics {
        let checkpoint = CheckpointMetrics::default();
        checkpoint.last_duration_us.store(u64::MAX, Ordering::Relaxed);
        checkpoint.last_success_us.store(u64::MAX, Ordering::Relaxed);
        ServerMetrics {
            enabled,
            clock: LatencyClock { started: Instant::now() },
            reactors: Mutex::new(Vec::new()),
            task_events: Arc::default(),
            wal: Arc::default(),
            checkpoint,
            durability,
        }
    }

    /// The calling reactor thread's counters (it alone writes them).
    pub(crate) fn register_reactor(&self) -> Arc<ReactorMetrics> {
        let metrics = Arc::new(ReactorMetrics::new(self.enabled));
        crate::sync::lock(&self.reactors).push(metrics.clone());
        metrics
    }

    /// After a checkpoint round that succeeded: `wrote_us`, its duration if
    /// it wrote anything; RocksDB's sizes as it left them.
    pub(crate) fn checkpoint_round(&self, wrote_us: Option<u64>, sizes: (u64, u64)) {
        let checkpoint = &self.checkpoint;
        if let Some(us) = wrote_us {
            checkpoint.last_duration_us.store(us, Ordering::Relaxed);
            checkpoint.round_us_max.fetch_max(us, Ordering::AcqRel);
            checkpoint.rounds_written.fetch_add(1, Ordering::Release);
        }
        checkpoint.last_success_us.store(self.clock.started.elapsed().as_micros() as u64, Ordering::Relaxed);
        checkpoint.sst_bytes.store(sizes.0, Ordering::Relaxed);
        checkpoint.memtable_bytes.store(sizes.1, Ordering::Relaxed);
    }

    /// Every reactor's request counts of `outcomes` (slots), each given to
    /// `add` with the index of its outcome in `outcomes`, its protocol and
    /// its operation. For the activity log, once per tick: the reactor list's
    /// lock, as a scrape takes it; none with `--no-metrics`.
    pub(crate) fn add_request_counts(
        &self,
        outcomes: &[usize],
        mut add: impl FnMut(usize, metrics::Protocol, usize, u64),
    ) {
        for reactor in crate::sync::lock(&self.reactors).iter() {
            for protocol in [metrics::Protocol::Http, metrics::Protocol::Binary] {
                for op in 0..metrics::OPS_COUNT {
                    for (index, &outcome) in outcomes.iter().enumerate() {
                        let count = reactor.count(protocol, op, outcome);
                        if count > 0 {
                            add(index, protocol, op, count);
                        }
                    }
                }
            }
        }
    }
}

/// The outcome slot of a reply (`ok`, or its error's code).
#[inline]
pub(crate) fn reply_outcome(reply: &Reply) -> usize {
    match reply {
        Reply::Error(error) => metrics::outcome_of_code(crate::binary::error_code(error)),
        Reply::StorageFailed(_) => metrics::outcome_of_code(tqx_wire::ErrorCode::StorageFailed),
        _ => metrics::outcome_of_code(tqx_wire::ErrorCode::Ok),
    }
}

const COMPLETE: u8 = Opcode::Complete as u8;
const CANCEL: u8 = Opcode::Cancel as u8;
const RETRY_TASK: u8 = Opcode::RetryTask as u8;
const FAIL: u8 = Opcode::Fail as u8;

/// Counts the task events a reply shows (called under the engine lock by
/// the executing thread, for every reply: `durability.rs`). `opcode`: the
/// command being executed (`binary::command_opcode`), which says what a
/// `TaskState` reply means: complete, cancel, fail (`ready` or `delayed` to
/// retry, or `dead`) or retry. Long polls answered after a batch are leases
/// whatever it says.
#[inline]
pub(crate) fn count_task_events(events: &TaskEvents, opcode: u8, reply: &Reply) {
    match reply {
        Reply::Enqueued(enqueued) => events.add(TaskEvent::Enqueued, u64::from(enqueued.created)),
        Reply::EnqueuedBatch(entries) => {
            events.add(TaskEvent::Enqueued, entries.iter().filter(|entry| entry.created).count() as u64)
        }
        Reply::Leased(tasks) if !tasks.is_empty() => events.add(TaskEvent::Leased, tasks.len() as u64),
        Reply::TaskState { state, .. } => match opcode {
            COMPLETE => events.add(TaskEvent::Completed, 1),
            CANCEL => events.add(TaskEvent::Cancelled, 1),
            RETRY_TASK => events.add(TaskEvent::Retried, 1),
            FAIL => {
                events.add(TaskEvent::Failed, 1);
                if *state == TaskState::Dead {
                    events.add(TaskEvent::Dead, 1);
                }
            }
            _ => {}
        },
        Reply::CompletedBatch(items) => {
            events.add(TaskEvent::Completed, items.iter().filter(|(_, outcome)| outcome.is_ok()).count() as u64)
        }
        _ => {}
    }
}

/// Everything a scrape shows, with `queues` from the engine.
pub(crate) fn snapshot(shared: &Shared, queues: &[QueueInfo]) -> Snapshot {
    let server = &shared.metrics;
    let mut requests = RequestTotals::default();
    for reactor in crate::sync::lock(&server.reactors).iter() {
        reactor.add_to(&mut requests);
    }
    let now_us = server.clock.started.elapsed().as_micros() as u64;
    let logged = server.durability != DurabilityMode::Memory;
    let checkpoint = &server.checkpoint;
    let known = |us: u64| (us != u64::MAX).then_some(us);
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        durability: server.durability.to_string(),
        uptime_seconds: now_us as f64 / 1e6,
        metrics_enabled: server.enabled,
        requests,
        task_events: std::array::from_fn(|i| server.task_events.counts[i].load(Ordering::Relaxed)),
        queues: queues.iter().map(|info| QueueCounts { name: info.name.to_string(), counts: info.counts.0 }).collect(),
        connections: ConnSnapshot::of(&shared.conns.metrics),
        wal: logged.then(|| WalSnapshot::of(&server.wal)),
        checkpoint: logged.then(|| CheckpointSnapshot {
            increments: checkpoint.increments.load(Ordering::Relaxed),
            flushes: checkpoint.flushes.load(Ordering::Relaxed),
            last_duration_seconds: known(checkpoint.last_duration_us.load(Ordering::Relaxed)).map(|us| us as f64 / 1e6),
            last_success_age_seconds: known(checkpoint.last_success_us.load(Ordering::Relaxed))
                .map(|us| now_us.saturating_sub(us) as f64 / 1e6),
            rocksdb_sst_bytes: checkpoint.sst_bytes.load(Ordering::Relaxed),
            rocksdb_memtable_bytes: checkpoint.memtable_bytes.load(Ordering::Relaxed),
        }),
        process: process_snapshot(),
    }
}

/// RSS and descriptors from `/proc/self` (`None` for what cannot be read).
fn process_snapshot() -> ProcessSnapshot {
    // statm's second field: resident pages. Pages are 4 KiB on the platforms
    // io_uring servers run on (x86-64, and arm64's default).
    let resident_bytes = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()))
        .map(|pages| pages * 4096);
    // Less one: the directory being read holds a descriptor of its own.
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|entries| (entries.count() as u64).saturating_sub(1));
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|line| line.starts_with("Max open files"))?;
        line["Max open files".len()..].split_whitespace().next()?.parse().ok()
    });
    ProcessSnapshot { resident_bytes, open_fds, max_fds }
}

/// Appends the HTTP response to `GET /metrics` or `GET /v1/stats`, from the
/// queue list the executor answered.
pub(crate) fn render_http(
    shared: &Shared,
    format: StatsFormat,
    queues: &[QueueInfo],
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    let snapshot = snapshot(shared, queues);
    match format {
        StatsFormat::Prometheus => {
            let text = metrics::render_prometheus(&snapshot, METRICS_QUEUES_COUNT_MAX);
            crate::http::render_document(PROMETHEUS_CONTENT_TYPE, text.as_bytes(), keep_alive, out);
        }
        StatsFormat::Json => {
            let mut document = metrics::render_json(&snapshot, METRICS_QUEUES_COUNT_MAX).to_string();
            document.push('\n');
            crate::http::render_document("application/json", document.as_bytes(), keep_alive, out);
        }
    }
}

/// Appends the binary `stats` reply frame (the JSON document of `GET /v1/stats`).
pub(crate) fn render_binary(shared: &Shared, queues: &[QueueInfo], request_id: u64, out: &mut Vec<u8>) {
    let snapshot = snapshot(shared, queues);
    let document = metrics::render_json(&snapshot, METRICS_QUEUES_COUNT_MAX).to_string();
    tqx_wire::Response::Stats(document.into()).encode(tqx_wire::Opcode::Stats as u8, request_id, out);
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::metrics::{op_of_opcode, Protocol, RequestTotals};
    use crate::server::Shared;

    /// The request path records without any lock: with the scrape's lock
    /// (the reactor list) and the engine lock both held by this thread,
    /// another thread still counts and times requests, and the counts are
    /// there once the scrape can look.
    #[test]
    fn recording_takes_neither_the_scrape_lock_nor_the_engine_lock() {
        let config = crate::cli::serve::test_config(&[]);
        let shared = Arc::new(Shared::new(&config, 100, HashSet::new()));
        let reactor = shared.metrics.register_reactor();
        let op = op_of_opcode(tqx_wire::Opcode::Enqueue as u8);
        let scrape_lock = crate::sync::lock(&shared.metrics.reactors);
        let engine_lock = shared.lock_engine();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let recorder = {
            let reactor = reactor.clone();
            std::thread::spawn(move || {
                for latency_us in 0..1_000 {
                    reactor.executed(Protocol::Binary, op, 0, latency_us);
                    reactor.answered(Protocol::Http, op, 11);
                }
                let _ = done_tx.send(());
            })
        };
        assert!(done_rx.recv_timeout(Duration::from_secs(60)).is_ok(), "recording waited for a lock");
        recorder.join().expect("recorder");
        drop((scrape_lock, engine_lock));
        let mut totals = RequestTotals::default();
        for reactor in crate::sync::lock(&shared.metrics.reactors).iter() {
            reactor.add_to(&mut totals);
        }
        assert_eq!(totals.count(Protocol::Binary, op, 0), 1_000);
        assert_eq!(totals.count(Protocol::Http, op, 11), 1_000);
        assert_eq!(totals.latency[Protocol::Binary as usize * crate::metrics::OPS_COUNT + op].count, 1_000);
    }
}
