//! Liveness: whether every server thread is alive and making progress, for
//! `/healthz` and the binary protocol's ping (issue 15, item 2).
//!
//! A server whose worker is stuck (or whose log writer hangs in `fdatasync`)
//! still accepts connections; without this it would answer `/healthz` with 200
//! while answering nothing else, and no supervisor or load balancer would notice.
//!
//! - Each reactor, worker and the checkpointer holds a [`Heartbeat`] (from
//!   [`Liveness::register`]) and beats it from its loop: a worker every pass
//!   (it wakes at least every 100 ms even when idle); a reactor from a timer task
//!   on its own runtime (a reactor thread that blocks never runs it); the
//!   checkpointer while it runs a round (it says it is idle between rounds).
//!   Dropping the heartbeat (the thread returned, or unwound in a test build)
//!   marks the thread exited.
//! - The log writer (WAL thread, `wal/committer.rs`, which knows nothing of
//!   the server) is observed from outside: it has work while records were
//!   submitted beyond its durable LSN, and progresses when that LSN moves.
//! - A watchdog thread samples all of them every quarter of the bound and
//!   publishes the verdict (one atomic, read by `/healthz` and ping) together
//!   with a deadline, so a watchdog that stops sampling also reads as not ready.
//!   It logs every change of verdict: an error naming the stuck thread, and an
//!   info line when all is well again.
//!
//! A thread is **stalled** when it had work and made no progress for longer than
//! the bound (`--stall-timeout-ms`, default [`STALL_TIMEOUT_MS_DEFAULT`]; the
//! checkpointer gets [`CHECKPOINT_STALL_FACTOR`] times it, since one round writes
//! and flushes up to a million rows into RocksDB). An exited thread counts as
//! stalled until the server stops. With `--durability interval:<ms>` the log
//! writer and the checkpointer also get those `ms`, which records may wait on
//! purpose before the log writes them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wal::committer::Committer;

/// `--stall-timeout-ms` default: how long a thread with work may go without
/// progress before the server reports itself not ready. Far above any
/// legitimate pause (an `fdatasync` takes ~0.1-0.5 ms here, a worker's batch
/// well under a millisecond), and short enough that a supervisor acts within
/// seconds.
pub const STALL_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// The checkpointer's bound is this many times the others': a round writes and
/// flushes up to a million rows (~0.5 GB), seconds on a slow disk.
const CHECKPOINT_STALL_FACTOR: u64 = 6;
/// The watchdog samples this many times per bound (and at most every second).
const SAMPLES_PER_BOUND: u64 = 4;

/// One thread's progress, as its heartbeat publishes it.
struct Slot {
    name: String,
    /// When the thread last made progress (ms since `Liveness::epoch`).
    beat_ms: AtomicU64,
    /// Whether it has work (is expected to beat).
    busy: AtomicBool,
    exited: AtomicBool,
    stall_ms: u64,
}

/// A thread's handle on its slot: beat from the loop; dropped, the thread
/// counts as exited.
pub(crate) struct Heartbeat {
    slot: Arc<Slot>,
    liveness: Arc<Liveness>,
}

impl Heartbeat {
    /// The thread made progress (and may have more work).
    pub(crate) fn beat(&self) {
        self.slot.beat_ms.store(self.liveness.now_ms(), Ordering::Relaxed);
        self.slot.busy.store(true, Ordering::Relaxed);
    }

    /// The thread waits for new work: no progress is expected until it beats.
    pub(crate) fn idle(&self) {
        self.slot.busy.store(false, Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.slot.exited.store(true, Ordering::Release);
    }
}

/// What the WAL thread was last seen doing.
#[derive(Default)]
struct WalSeen {
    durable_lsn: u64,
    /// Since when it has had work without its durable LSN moving.
    stuck_since_ms: Option<u64>,
}

/// Every thread's slot, and the watchdog's verdict.
pub(crate) struct Liveness {
    epoch: Instant,
    stall_ms: u64,
    /// Added to the bound of the log writer and the checkpointer: how long
    /// `interval:<ms>` durability lets records wait before writing them.
    log_linger_ms: u64,
    slots: Mutex<Vec<Arc<Slot>>>,
    wal: OnceLock<Weak<Committer>>,
    /// The watchdog's verdict holds until this time (ms since `epoch`); 0: not ready.
    ready_until_ms: AtomicU64,
    /// Set by the watchdog's first sample: until then the server counts as recovering.
    sampled: AtomicBool,
    stop: AtomicBool,
    /// The watchdog, unparked by `stop` so a stopping server does not wait out
    /// its sleep.
    watchdog: OnceLock<std::thread::Thread>,
}

impl Liveness {
    pub(crate) fn new(stall_ms: u64, log_linger_ms: u64) -> Arc<Liveness> {
        Arc::new(Liveness {
            epoch: Instant::now(),
            stall_ms: stall_ms.max(1),
            log_linger_ms,
            slots: Mutex::new(Vec::new()),
            wal: OnceLock::new(),
            ready_until_ms: AtomicU64::new(0),
            sampled: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            watchdog: OnceLock::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn sample_period(&self) -> Duration {
        Duration::from_millis((self.stall_ms / SAMPLES_PER_BOUND).clamp(1, 1_000))
    }

    /// A slot for the calling thread, busy from now on.
    pub(crate) fn register(self: &Arc<Self>, name: impl Into<String>) -> Heartbeat {
        let name = name.into();
        let stall_ms = if name.contains("checkpoint") {
            // It waits for the log to be durable up to its rows.
            self.stall_ms.saturating_mul(CHECKPOINT_STALL_FACTOR).saturating_add(self.log_linger_ms)
        } else {
            self.stall_ms
        };
        let slot = Arc::new(Slot {
            name,
            beat_ms: AtomicU64::new(self.now_ms()),
            busy: AtomicBool::new(true),
            exited: AtomicBool::new(false),
            stall_ms,
        });
        crate::sync::lock(&self.slots).push(slot.clone());
        Heartbeat { slot, liveness: self.clone() }
    }

    /// How often a reactor's timer task should beat.
    pub(crate) fn beat_period(&self) -> Duration {
        self.sample_period()
    }

    /// Watch the WAL thread through its LSNs.
    /// Weak: the journal must stay the committer's only owner at stop.
    pub(crate) fn observe_wal(&self, committer: &Arc<Committer>) {
        let _ = self.wal.set(Arc::downgrade(committer));
    }

    /// Whether every thread is alive and progressing (as of the watchdog's
    /// last sample, which must be recent).
    pub(crate) fn ready(&self) -> bool {
        self.now_ms() < self.ready_until_ms.load(Ordering::Acquire)
    }

    /// Whether the watchdog has given a first verdict.
    pub(crate) fn sampled(&self) -> bool {
        self.sampled.load(Ordering::Acquire)
    }

    /// [`Liveness::register`] under the calling thread's name.
    pub(crate) fn register_current(self: &Arc<Self>) -> Heartbeat {
        self.register(std::thread::current().name().unwrap_or("unnamed"))
    }

    /// What is wrong now, if anything: the first stalled or exited thread.
    fn check(&self, wal_seen: &mut WalSeen) -> Option<String> {
        let now = self.now_ms();
        for slot in crate::sync::lock(&self.slots).iter() {
            if slot.exited.load(Ordering::Acquire) {
                return Some(format!("thread {} has exited", slot.name));
            }
            let since_ms = now.saturating_sub(slot.beat_ms.load(Ordering::Relaxed));
            if slot.busy.load(Ordering::Relaxed) && since_ms > slot.stall_ms {
                return Some(format!("thread {} has made no progress for {since_ms} ms", slot.name));
            }
        }
        if let Some(wal) = self.wal.get().and_then(Weak::upgrade) {
            // Durable first: a record submitted after this read cannot make an
            // idle log look busy for more than one sample.
            let durable_lsn = wal.durable_lsn();
            let has_work = wal.last_appended_lsn() > durable_lsn;
            if !has_work || durable_lsn != wal_seen.durable_lsn {
                wal_seen.stuck_since_ms = has_work.then_some(now);
            } else {
                wal_seen.stuck_since_ms.get_or_insert(now);
            }
            wal_seen.durable_lsn = durable_lsn;
            if let Some(since) = wal_seen.stuck_since_ms {
                let since_ms = now - since;
                if since_ms > self.stall_ms + self.log_linger_ms {
                    return Some(format!(
                        "the write-ahead log thread has not made record {} durable for {since_ms} ms",
                        durable_lsn + 1
                    ));
                }
            }
        }
        None
    }

    /// Starts the watchdog thread (see the module comment); it runs until
    /// [`Liveness::stop`].
    pub(crate) fn start_watchdog(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let liveness = self.clone();
        std::thread::Builder::new().name("tqx-watchdog".into()).spawn(move || {
            let _ = liveness.watchdog.set(std::thread::current());
            let period = liveness.sample_period();
            let mut wal_seen = WalSeen::default();
            let mut last_problem: Option<String> = None;
            while !liveness.stop.load(Ordering::Acquire) {
                let problem = liveness.check(&mut wal_seen);
                if liveness.stop.load(Ordering::Acquire) {
                    break; // threads exiting at stop are not a problem to report
                }
                // A verdict holds for one bound: a watchdog that stops sampling
                // reads as not ready within it, like any other stuck thread.
                let valid_ms = liveness.stall_ms.max(2 * period.as_millis() as u64);
                let until = if problem.is_none() { liveness.now_ms() + valid_ms } else { 0 };
                liveness.ready_until_ms.store(until, Ordering::Release);
                liveness.sampled.store(true, Ordering::Release);
                match (&problem, &last_problem) {
                    (Some(problem), None) => {
                        tracing::error!(%problem, "not ready: a server thread is stuck or gone (/healthz answers 503)")
                    }
                    (None, Some(_)) => tracing::info!("every server thread is making progress again; ready"),
                    _ => {}
                }
                last_problem = problem;
                std::thread::park_timeout(period);
            }
            liveness.ready_until_ms.store(0, Ordering::Release);
        })
    }

    /// Ends the watchdog (at stop, once threads start exiting on purpose).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(watchdog) = self.watchdog.get() {
            watchdog.unpark();
        }
    }
}

/// Test hook (`--debug-panic-on-queue NAME`, hidden): a worker panics when it
/// executes an enqueue into this queue, so a test can show that a bug on a
/// server thread ends the process loudly instead of leaving it hung.
static DEBUG_PANIC_QUEUE: OnceLock<String> = OnceLock::new();

pub(crate) fn set_debug_panic_queue(queue: String) {
    let _ = DEBUG_PANIC_QUEUE.set(queue);
}

/// Panics if `command` is the test hook's enqueue (one atomic load otherwise).
pub(crate) fn debug_panic_check(command: &crate::command::Command) {
    if let Some(target) = DEBUG_PANIC_QUEUE.get() {
        if matches!(command, crate::command::Command::Enqueue { queue, .. } if queue == target) {
            panic!("--debug-panic-on-queue {target}: a deliberate panic on the thread executing it");
        }
    }
}

/// A reactor's heartbeat: a timer task on its runtime, which runs only while
/// the reactor thread is not blocked. Ends (and the reactor counts as exited)
/// when the runtime drops its tasks.
pub(crate) async fn reactor_heartbeat(liveness: Arc<Liveness>) {
    let heartbeat = liveness.register_current();
    let period = liveness.beat_period();
    loop {
        heartbeat.beat();
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_without_beats_stalls_and_an_idle_one_does_not() {
        let liveness = Liveness::new(50, 0);
        let busy = liveness.register("tqx-worker-0");
        let idle = liveness.register("tqx-checkpoint");
        idle.idle();
        let mut wal = WalSeen::default();
        assert_eq!(liveness.check(&mut wal), None);
        std::thread::sleep(Duration::from_millis(120));
        let problem = liveness.check(&mut wal).expect("the worker stalled");
        assert!(problem.contains("tqx-worker-0"), "{problem}");
        busy.beat();
        assert_eq!(liveness.check(&mut wal), None);
        drop(busy);
        assert!(liveness.check(&mut wal).expect("exited").contains("exited"));
    }

    #[test]
    fn the_verdict_expires_without_a_watchdog() {
        let liveness = Liveness::new(40, 0);
        assert!(!liveness.ready(), "not ready before the first sample");
        let watchdog = liveness.start_watchdog().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !liveness.ready() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        liveness.stop();
        watchdog.join().unwrap();
        assert!(!liveness.ready());
    }
}
