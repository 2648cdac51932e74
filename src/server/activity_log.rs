//! Rate-limited activity logs (docs/logs.md): after the startup line, what
//! the server does that an operator should see — recovery progress,
//! checkpoints, slow log syncs, connections refused or closed by the server,
//! failed accepts and requests answered with a server error — each kind
//! aggregated into at most one line per interval, with a count and one
//! example, so that no client can flood the log.
//!
//! **Nothing here is on the request path.** The events are the counters the
//! server keeps anyway for `/metrics` (connections refused and closed by
//! reason, each reactor's requests by outcome, checkpoint rounds) plus a few
//! atomics bumped where rare events happen (a slow batch sync on the log
//! writer, a failed accept). One thread, `tqx-activity`, reads them every
//! tick, feeds each kind's [`Window`] and writes the lines that are due. The
//! only per-event work besides a counter is [`Example::offer`]: one relaxed
//! load that is false except for the first event of a window, which then
//! stores its description (a peer address) under a lock nobody else takes
//! in the meantime.
//!
//! [`Window`] is the one rate limiter: pure, time passed in
//! (`tests::*`). Its rule: the first event after a line opens a window; when
//! the window's interval has passed, one line reports everything the window
//! gathered (count, total, worst value, the first example) and the next event
//! opens the next window. So a burst is one line with its exact count, a
//! steady stream is one line per interval, and a single event is reported
//! one interval after it happened.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Shared;
use crate::limits::{
    ACTIVITY_LOG_INTERVAL_MS, ACTIVITY_LOG_TICK_MS_MAX, ACTIVITY_LOG_TICK_MS_MIN, CHECKPOINT_LOG_INTERVAL_MS,
    RECOVERY_PROGRESS_INTERVAL_MS, WAL_SYNC_SLOW_MS,
};
use crate::metrics::{self, CLOSE_REASONS_COUNT, CLOSE_REASON_NAMES, OPS_COUNT, PROTOCOL_NAMES};

// ---- the rate limiter ------------------------------------------------------------

/// One kind of event, aggregated into at most one line per interval (module
/// docs). Pure: no clock, no I/O; `now_ms` is any monotonic millisecond count.
#[derive(Debug)]
pub(crate) struct Window {
    interval_ms: u64,
    /// When the first event not yet reported was seen (`None`: none pending).
    opened_ms: Option<u64>,
    count: u64,
    /// A quantity summed over the events (rows written, ...).
    amount: u64,
    /// The largest value an event carried (a duration, ...).
    worst: u64,
    example: Option<String>,
    /// The cumulative counter's value at the last [`Window::observe`].
    seen_total: u64,
}

/// What one line reports: everything a window gathered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) amount: u64,
    pub(crate) worst: u64,
    pub(crate) example: Option<String>,
    /// From the window's first event to the line: at least the interval
    /// (at most a tick more), or less for a line written at stop.
    pub(crate) window_ms: u64,
}

impl Window {
    pub(crate) fn new(interval_ms: u64) -> Window {
        Window { interval_ms, opened_ms: None, count: 0, amount: 0, worst: 0, example: None, seen_total: 0 }
    }

    /// `count` events seen at `now_ms`, carrying `amount` in all and `worst`
    /// at most. An `amount` or `worst` without events is kept for the next
    /// ones: the recording thread publishes them before it counts the event,
    /// so a reader may see them one tick before the count.
    pub(crate) fn add(&mut self, now_ms: u64, count: u64, amount: u64, worst: u64) {
        self.amount = self.amount.saturating_add(amount);
        self.worst = self.worst.max(worst);
        if count > 0 {
            self.opened_ms.get_or_insert(now_ms);
            self.count = self.count.saturating_add(count);
        }
    }

    /// A cumulative counter read at `now_ms` is `total`: adds the events it
    /// gained since the last call (it starts at 0, as the server's counters
    /// do), with `worst` as in [`Window::add`]. Returns how many that was.
    pub(crate) fn observe(&mut self, now_ms: u64, total: u64, worst: u64) -> u64 {
        let gained = total.wrapping_sub(self.seen_total);
        self.seen_total = total;
        self.add(now_ms, gained, 0, worst);
        gained
    }

    /// Whether events are pending and none of them has given an example yet.
    pub(crate) fn wants_example(&self) -> bool {
        self.count > 0 && self.example.is_none()
    }

    /// The example the line will show, if it has none yet (the first wins).
    pub(crate) fn example(&mut self, example: String) {
        if self.wants_example() {
            self.example = Some(example);
        }
    }

    /// The line that is due at `now_ms`, if the window's interval has passed;
    /// the window is then empty until the next event.
    pub(crate) fn take_due(&mut self, now_ms: u64) -> Option<Summary> {
        let opened_ms = self.opened_ms?;
        if now_ms < opened_ms.saturating_add(self.interval_ms) {
            return None;
        }
        self.take_pending(now_ms)
    }

    /// Whatever is pending, due or not (at stop, so no count is lost).
    pub(crate) fn take_pending(&mut self, now_ms: u64) -> Option<Summary> {
        let opened_ms = self.opened_ms.take()?;
        let summary = Summary {
            count: self.count,
            amount: self.amount,
            worst: self.worst,
            example: self.example.take(),
            window_ms: now_ms.saturating_sub(opened_ms),
        };
        (self.count, self.amount, self.worst) = (0, 0, 0);
        Some(summary)
    }
}

// ---- what the rest of the server records -------------------------------------------

/// The description of the first event of a window, offered where the event
/// happens (module docs): wanted again only once the line that showed the
/// last one has been written.
pub(crate) struct Example {
    wanted: AtomicBool,
    text: Mutex<Option<String>>,
}

impl Default for Example {
    fn default() -> Example {
        Example { wanted: AtomicBool::new(true), text: Mutex::new(None) }
    }
}

impl Example {
    /// Stores `describe()` if an example is wanted; otherwise costs one
    /// relaxed load. `describe` runs at most once per line.
    #[inline]
    pub(crate) fn offer(&self, describe: impl FnOnce() -> String) {
        if self.wanted.load(Ordering::Relaxed) && self.wanted.swap(false, Ordering::AcqRel) {
            *crate::sync::lock(&self.text) = Some(describe());
        }
    }

    fn take(&self) -> Option<String> {
        crate::sync::lock(&self.text).take()
    }

    /// After a line: the next event's description is wanted.
    fn rearm(&self) {
        crate::sync::lock(&self.text).take();
        self.wanted.store(true, Ordering::Release);
    }
}

/// Where recovery is (`durability::recover` moves it on), for the progress
/// lines an operator sees while a big log replays.
#[derive(Default)]
pub(crate) struct RecoveryProgress {
    /// A [`Phase`] as its index (0: not recovering).
    phase: AtomicU8,
    /// When recovery began, in the activity log's milliseconds (`u64::MAX`: not yet).
    started_ms: AtomicU64,
    records_replayed: AtomicU64,
    records_total: AtomicU64,
}

/// Recovery's steps, in order (docs/logs.md names them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not recovering: before it begins and once it is over.
    Idle = 0,
    /// Opening RocksDB and reading the last checkpoint's rows.
    LoadingCheckpoint = 1,
    /// Reading and checking every segment of the write-ahead log.
    ReadingLog = 2,
    /// Replaying the log's records after the checkpoint.
    Replaying = 3,
    /// A new log's first record, and the engine's invariants over every task.
    Finishing = 4,
}

const PHASE_NAMES: [&str; 5] = ["idle", "loading_checkpoint", "reading_log", "replaying", "finishing"];

impl RecoveryProgress {
    pub(crate) fn enter(&self, activity: &ActivityCounters, phase: Phase) {
        let _ = self.started_ms.compare_exchange(u64::MAX, activity.now_ms(), Ordering::AcqRel, Ordering::Acquire);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Replay begins: `total` records to go.
    pub(crate) fn replaying(&self, activity: &ActivityCounters, total: u64) {
        self.records_total.store(total, Ordering::Relaxed);
        self.records_replayed.store(0, Ordering::Relaxed);
        self.enter(activity, Phase::Replaying);
    }

    /// Called for every record replayed: one relaxed store.
    #[inline]
    pub(crate) fn replayed(&self, records: u64) {
        self.records_replayed.store(records, Ordering::Relaxed);
    }

    pub(crate) fn done(&self) {
        self.phase.store(Phase::Idle as u8, Ordering::Release);
    }
}

/// The atomics this module adds to what `/metrics` already counts, shared
/// through `Shared::activity`.
pub(crate) struct ActivityCounters {
    epoch: Instant,
    pub(crate) recovery: RecoveryProgress,
    /// Log batches whose write and `fdatasync` took [`WAL_SYNC_SLOW_MS`] or
    /// more, and the slowest since the activity log last looked (µs).
    slow_syncs: AtomicU64,
    slow_sync_us_max: AtomicU64,
    /// Accepts that failed (both reactors), and the first error of a window.
    accept_errors: AtomicU64,
    accept_error_example: Example,
    stop: AtomicBool,
}

impl Default for ActivityCounters {
    fn default() -> ActivityCounters {
        ActivityCounters {
            epoch: Instant::now(),
            recovery: RecoveryProgress { started_ms: AtomicU64::new(u64::MAX), ..RecoveryProgress::default() },
            slow_syncs: AtomicU64::new(0),
            slow_sync_us_max: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            accept_error_example: Example::default(),
            stop: AtomicBool::new(false),
        }
    }
}

impl ActivityCounters {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A log batch was written and synced in `sync_us` (on the log writer's
    /// thread, once per batch): counted if slow.
    #[inline]
    pub(crate) fn wal_batch_synced(&self, sync_us: u64) {
        if sync_us >= WAL_SYNC_SLOW_MS * 1_000 {
            // The maximum before the count: a reader that sees the count sees it.
            self.slow_sync_us_max.fetch_max(sync_us, Ordering::AcqRel);
            self.slow_syncs.fetch_add(1, Ordering::Release);
        }
    }

    /// An accept failed (the reactor pauses before the next).
    pub(crate) fn accept_failed(&self, error: &std::io::Error) {
        self.accept_error_example.offer(|| error.to_string());
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// "http 127.0.0.1:5000": a connection's protocol and peer, as examples show it.
pub(crate) fn describe_peer(protocol: usize, peer: Option<std::net::SocketAddr>) -> String {
    let protocol = PROTOCOL_NAMES.get(protocol).copied().unwrap_or("unknown");
    match peer {
        Some(peer) => format!("{protocol} {peer}"),
        None => format!("{protocol} (peer unknown)"),
    }
}

// ---- the thread ---------------------------------------------------------------------

/// How often each kind may log: [`crate::limits`]' defaults, or one value for
/// all (`--debug-activity-log-interval-ms`, for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Intervals {
    pub(crate) activity_ms: u64,
    pub(crate) checkpoint_ms: u64,
    pub(crate) recovery_ms: u64,
}

impl Intervals {
    pub(crate) fn new(all_ms: Option<u64>) -> Intervals {
        match all_ms {
            Some(ms) => Intervals { activity_ms: ms, checkpoint_ms: ms, recovery_ms: ms },
            None => Intervals {
                activity_ms: ACTIVITY_LOG_INTERVAL_MS,
                checkpoint_ms: CHECKPOINT_LOG_INTERVAL_MS,
                recovery_ms: RECOVERY_PROGRESS_INTERVAL_MS,
            },
        }
    }

    /// How often the thread looks: a quarter of the shortest interval,
    /// within bounds (a line is at most this late).
    pub(crate) fn tick_ms(&self) -> u64 {
        (self.activity_ms.min(self.checkpoint_ms).min(self.recovery_ms) / 4)
            .clamp(ACTIVITY_LOG_TICK_MS_MIN, ACTIVITY_LOG_TICK_MS_MAX)
    }
}

/// The outcomes that count as server errors: the server could not do what
/// was asked, through no fault of the request.
const SERVER_ERRORS: [tqx_wire::ErrorCode; 3] =
    [tqx_wire::ErrorCode::Overloaded, tqx_wire::ErrorCode::CapacityExceeded, tqx_wire::ErrorCode::StorageFailed];
/// Request counters per server error: one per protocol and operation.
const CELLS_COUNT: usize = metrics::PROTOCOLS_COUNT * OPS_COUNT;

/// Everything the thread keeps between ticks.
struct Activity {
    recovery: Window,
    checkpoints: Window,
    checkpoints_seen: u64,
    rows_seen: u64,
    slow_syncs: Window,
    accept_errors: Window,
    refused: Window,
    closed: [Window; CLOSE_REASONS_COUNT],
    server_errors: [Window; SERVER_ERRORS.len()],
    /// Each reactor's request counts of `SERVER_ERRORS`, summed, by cell, as
    /// last seen: the first cell that grew names the example.
    server_error_cells: Vec<[u64; CELLS_COUNT]>,
    /// The same counts as this tick reads them (kept: no allocation per tick).
    server_error_totals: Vec<[u64; CELLS_COUNT]>,
}

impl Activity {
    fn new(intervals: Intervals) -> Activity {
        let window = || Window::new(intervals.activity_ms);
        Activity {
            recovery: Window::new(intervals.recovery_ms),
            checkpoints: Window::new(intervals.checkpoint_ms),
            checkpoints_seen: 0,
            rows_seen: 0,
            slow_syncs: window(),
            accept_errors: window(),
            refused: window(),
            closed: std::array::from_fn(|_| window()),
            server_errors: std::array::from_fn(|_| window()),
            server_error_cells: vec![[0; CELLS_COUNT]; SERVER_ERRORS.len()],
            server_error_totals: vec![[0; CELLS_COUNT]; SERVER_ERRORS.len()],
        }
    }

    /// Reads every counter into its window, then writes the lines that are
    /// due (all pending ones with `stopping`).
    fn tick(&mut self, shared: &Shared, now_ms: u64, stopping: bool) {
        let activity = &shared.activity;
        let take = |window: &mut Window| if stopping { window.take_pending(now_ms) } else { window.take_due(now_ms) };

        // Recovery: a line per interval while it lasts; nothing once it is over.
        let recovery = &activity.recovery;
        let phase = usize::from(recovery.phase.load(Ordering::Acquire));
        if phase == Phase::Idle as usize {
            let _ = self.recovery.take_pending(now_ms);
        } else {
            self.recovery.add(now_ms, 1, 0, 0);
            if let Some(_due) = self.recovery.take_due(now_ms) {
                let started_ms = recovery.started_ms.load(Ordering::Acquire);
                tracing::info!(
                    phase = PHASE_NAMES.get(phase).copied().unwrap_or("unknown"),
                    records_replayed = recovery.records_replayed.load(Ordering::Relaxed),
                    records_total = recovery.records_total.load(Ordering::Relaxed),
                    elapsed_ms = now_ms.saturating_sub(started_ms),
                    "recovering"
                );
            }
        }

        // Checkpoints: rounds that wrote, rows, the slowest round (the rows
        // and duration of a round are published before it is counted).
        let checkpoint = &shared.metrics.checkpoint;
        let (rounds, rows, slowest_us) = checkpoint.activity();
        let (new_rounds, new_rows) = (rounds.wrapping_sub(self.checkpoints_seen), rows.wrapping_sub(self.rows_seen));
        (self.checkpoints_seen, self.rows_seen) = (rounds, rows);
        self.checkpoints.add(now_ms, new_rounds, new_rows, slowest_us);
        if let Some(line) = take(&mut self.checkpoints) {
            let (applied_lsn, flushed_lsn) = checkpoint.lsns();
            tracing::info!(
                count = line.count,
                rows = line.amount,
                slowest_ms = line.worst / 1_000,
                applied_lsn,
                flushed_lsn,
                window_ms = line.window_ms,
                "checkpoints"
            );
        }

        // Slow log syncs: the count first, then the maximum, which the log
        // writer publishes before the count (see `Window::add`).
        let slow = activity.slow_syncs.load(Ordering::Acquire);
        let slow_us = activity.slow_sync_us_max.swap(0, Ordering::AcqRel);
        self.slow_syncs.observe(now_ms, slow, slow_us);
        if let Some(line) = take(&mut self.slow_syncs) {
            tracing::warn!(
                count = line.count,
                slowest_ms = line.worst / 1_000,
                threshold_ms = WAL_SYNC_SLOW_MS,
                window_ms = line.window_ms,
                "slow WAL syncs"
            );
        }

        // Failed accepts.
        self.accept_errors.observe(now_ms, activity.accept_errors.load(Ordering::Relaxed), 0);
        if let Some(line) = take_with_example(&mut self.accept_errors, &activity.accept_error_example, stopping, now_ms)
        {
            tracing::warn!(
                count = line.count,
                example = line.example.as_deref().unwrap_or("unknown"),
                window_ms = line.window_ms,
                "accept failed"
            );
        }

        // Connections refused past --max-connections, and closed by the server.
        let conns = &shared.conns.metrics;
        let refused: u64 = conns.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        self.refused.observe(now_ms, refused, 0);
        if let Some(line) = take_with_example(&mut self.refused, &shared.conns.refused_example, stopping, now_ms) {
            tracing::warn!(
                count = line.count,
                max_connections = shared.connections_max,
                example = line.example.as_deref().unwrap_or("unknown"),
                window_ms = line.window_ms,
                "connections refused (--max-connections)"
            );
        }
        for (reason, window) in self.closed.iter_mut().enumerate() {
            let closed: u64 = (0..metrics::PROTOCOLS_COUNT)
                .map(|protocol| conns.closed[protocol * CLOSE_REASONS_COUNT + reason].load(Ordering::Relaxed))
                .sum();
            window.observe(now_ms, closed, 0);
            let Some(line) = take_with_example(window, &shared.conns.closed_examples[reason], stopping, now_ms) else {
                continue;
            };
            let (reason, example) = (CLOSE_REASON_NAMES[reason], line.example.as_deref().unwrap_or("unknown"));
            // Idle connections timing out is routine; the others say clients
            // are too slow, or the server too full.
            if reason == "idle_timeout" {
                tracing::debug!(reason, count = line.count, example, window_ms = line.window_ms, "connections closed");
            } else {
                tracing::info!(reason, count = line.count, example, window_ms = line.window_ms, "connections closed");
            }
        }

        // Requests answered with a server error, from the reactors' counters
        // (none with --no-metrics: nothing counts them then).
        let totals = &mut self.server_error_totals;
        totals.iter_mut().for_each(|cells| cells.fill(0));
        shared
            .metrics
            .add_request_counts(&SERVER_ERRORS.map(metrics::outcome_of_code), |error, protocol, op, count| {
                totals[error][protocol as usize * OPS_COUNT + op] += count
            });
        for (error, window) in self.server_errors.iter_mut().enumerate() {
            let seen = &mut self.server_error_cells[error];
            let grew = (0..CELLS_COUNT).find(|&cell| totals[error][cell] != seen[cell]);
            let gained: u64 = (0..CELLS_COUNT).map(|cell| totals[error][cell].wrapping_sub(seen[cell])).sum();
            *seen = totals[error];
            window.add(now_ms, gained, 0, 0);
            if let Some(cell) = grew.filter(|_| window.wants_example()) {
                window.example(format!("{} {}", PROTOCOL_NAMES[cell / OPS_COUNT], metrics::op_name(cell % OPS_COUNT)));
            }
            if let Some(line) = take(window) {
                tracing::warn!(
                    code = SERVER_ERRORS[error].as_str(),
                    count = line.count,
                    example = line.example.as_deref().unwrap_or("unknown"),
                    window_ms = line.window_ms,
                    "server errors"
                );
            }
        }
    }
}

/// The line due for `window` (all pending with `stopping`), taking the
/// example its event offered; the example is wanted again after a line.
fn take_with_example(window: &mut Window, example: &Example, stopping: bool, now_ms: u64) -> Option<Summary> {
    if window.wants_example() {
        if let Some(text) = example.take() {
            window.example(text);
        }
    }
    let line = if stopping { window.take_pending(now_ms) } else { window.take_due(now_ms) }?;
    example.rearm();
    Some(line)
}

/// The `tqx-activity` thread; stopping it (dropping this) writes every line
/// still pending first.
pub(crate) struct ActivityLog {
    handle: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl ActivityLog {
    pub(crate) fn start(shared: Arc<Shared>, intervals: Intervals) -> std::io::Result<ActivityLog> {
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new().name("tqx-activity".into()).spawn(move || {
            let shared = thread_shared;
            let tick = Duration::from_millis(intervals.tick_ms());
            let mut activity = Activity::new(intervals);
            loop {
                let stopping = shared.activity.stop.load(Ordering::Acquire);
                activity.tick(&shared, shared.activity.now_ms(), stopping);
                if stopping {
                    return;
                }
                std::thread::park_timeout(tick);
            }
        })?;
        Ok(ActivityLog { handle: Some(handle), shared })
    }
}

impl Drop for ActivityLog {
    fn drop(&mut self) {
        self.shared.activity.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst is one line, with its exact count, once the interval has
    /// passed since its first event; nothing is reported before.
    #[test]
    fn a_burst_is_one_line_with_its_exact_count_one_interval_after_its_first_event() {
        let mut window = Window::new(10_000);
        assert_eq!(window.take_due(0), None, "nothing happened");
        window.add(1_000, 3, 0, 0);
        window.add(1_200, 2, 0, 0);
        window.add(9_000, 1, 0, 0);
        assert_eq!(window.take_due(10_999), None, "the window opened at 1,000");
        let line = window.take_due(11_000).expect("due");
        assert_eq!((line.count, line.window_ms), (6, 10_000));
        assert_eq!(window.take_due(11_000), None, "one line per window");
        assert_eq!(window.take_due(1_000_000), None, "and nothing until the next event");
    }

    /// A steady stream gives one line per interval, and every event is in
    /// exactly one of them.
    #[test]
    fn a_steady_stream_is_one_line_per_interval_and_counts_every_event_once() {
        let mut window = Window::new(1_000);
        let (mut lines, mut reported) = (0, 0);
        // An event every 7 ms for 100 s, the limiter looking every 250 ms.
        for now_ms in (0..100_000u64).step_by(7) {
            window.add(now_ms, 1, 0, 0);
            if now_ms % 250 < 7 {
                if let Some(line) = window.take_due(now_ms) {
                    lines += 1;
                    reported += line.count;
                    assert!(line.window_ms >= 1_000 && line.window_ms < 1_250, "{line:?}");
                }
            }
        }
        reported += window.take_pending(100_000).map_or(0, |line| line.count);
        assert_eq!(reported, (0..100_000u64).step_by(7).count() as u64, "every event, once");
        assert!((79..=100).contains(&lines), "about one line per 1,250 ms: {lines}");
    }

    #[test]
    fn observe_counts_what_a_cumulative_counter_gained_and_keeps_the_worst_and_first_example() {
        let mut window = Window::new(100);
        assert_eq!(window.observe(0, 0, 0), 0);
        assert!(!window.wants_example(), "no event, no example wanted");
        assert_eq!(window.observe(10, 4, 0), 4);
        assert!(window.wants_example());
        window.example("first".into());
        window.example("second".into());
        window.add(20, 1, 7, 300);
        window.add(30, 1, 5, 200);
        assert_eq!(window.observe(40, 4, 0), 0, "unchanged");
        assert_eq!(window.observe(50, 9, 0), 5);
        let line = window.take_due(110).expect("due: opened at 10");
        assert_eq!(line, Summary { count: 11, amount: 12, worst: 300, example: Some("first".into()), window_ms: 100 });
        // The next window starts empty: no example, no worst carried over.
        window.add(200, 1, 0, 0);
        let line = window.take_pending(250).expect("pending at stop");
        assert_eq!(line, Summary { count: 1, amount: 0, worst: 0, example: None, window_ms: 50 });
        // An amount and a maximum published before their count wait for it.
        assert_eq!(window.observe(300, 9, 500), 0);
        window.add(300, 0, 4, 0);
        assert_eq!(window.take_pending(300), None, "no event yet");
        assert_eq!(window.observe(310, 10, 0), 1);
        assert_eq!(window.take_due(410).map(|line| (line.amount, line.worst)), Some((4, 500)));
    }

    /// The example slot stores only the first event's description per line,
    /// and calls no describer otherwise.
    #[test]
    fn an_example_is_taken_from_the_first_event_after_each_line() {
        let example = Example::default();
        let mut window = Window::new(100);
        example.offer(|| "first".into());
        example.offer(|| unreachable!("an example is already held"));
        window.add(0, 2, 0, 0);
        let line = take_with_example(&mut window, &example, false, 100).expect("due");
        assert_eq!(line.example.as_deref(), Some("first"));
        example.offer(|| "third".into());
        window.add(150, 1, 0, 0);
        assert!(take_with_example(&mut window, &example, false, 200).is_none(), "not due yet");
        example.offer(|| unreachable!("this window has its example"));
        let line = take_with_example(&mut window, &example, true, 210).expect("pending at stop");
        assert_eq!((line.count, line.example.as_deref()), (1, Some("third")));
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shortest_interval_within_bounds() {
        let defaults = Intervals::new(None);
        assert_eq!(defaults.tick_ms(), ACTIVITY_LOG_TICK_MS_MAX);
        assert_eq!(Intervals::new(Some(200)).tick_ms(), 50);
        assert_eq!(Intervals::new(Some(10)).tick_ms(), ACTIVITY_LOG_TICK_MS_MIN);
    }

    #[test]
    fn only_syncs_at_or_over_the_threshold_are_slow() {
        let counters = ActivityCounters::default();
        counters.wal_batch_synced(WAL_SYNC_SLOW_MS * 1_000 - 1);
        assert_eq!(counters.slow_syncs.load(Ordering::Relaxed), 0);
        counters.wal_batch_synced(WAL_SYNC_SLOW_MS * 1_000);
        counters.wal_batch_synced(WAL_SYNC_SLOW_MS * 3_000);
        assert_eq!(counters.slow_syncs.load(Ordering::Relaxed), 2);
        assert_eq!(counters.slow_sync_us_max.load(Ordering::Relaxed), WAL_SYNC_SLOW_MS * 3_000);
    }
}
