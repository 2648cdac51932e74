//! Worker threads: they drive the executor (`crate::core::executor`), the one
//! place a request's command is executed, logged and answered.
//!
//! A worker pops jobs from the request queue in batches and hands each to the
//! executor under one lock acquisition; the executor appends each record to
//! the WAL thread's buffer and sends each reply to its reactor, tagged with
//! the LSN it waits for (`outbox.rs`). With one worker (the default) the lock
//! is never contended; with several it serialises engine access, which is
//! still correct. The checkpointer takes the same lock briefly to take the
//! engine's changed rows (`checkpoint.rs`).
//!
//! Time: the worker reads the wall clock (milliseconds since the Unix epoch)
//! and passes it to the executor, which makes it monotonic. It sleeps until
//! the next job, the engine's next timer, or the next long-poll deadline,
//! whichever comes first.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::durability::Journal;
use super::outbox::ReplyTo;
use super::Shared;
use crate::command::Command;
use crate::core::executor::{Executor, Received};
use crate::engine::Engine;

/// A request handed from a reactor to a worker.
pub(crate) struct Job {
    pub(crate) command: Command,
    /// The binary request as received (logged as it is); `None` for HTTP.
    pub(crate) received: Option<Received>,
    pub(crate) reply: ReplyTo,
}

/// Jobs a worker takes per lock acquisition: amortises the lock and the clock
/// read, while bounding how long other workers wait for the engine.
const JOBS_PER_BATCH_MAX: usize = 256;
/// Longest sleep: a backstop so a worker notices shutdown and clock jumps.
const IDLE_SLEEP_MS_MAX: u64 = 100;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the engine lock guards: the executor and where its effects go.
pub(crate) struct EngineState {
    pub(crate) executor: Executor<ReplyTo>,
    /// Where executed state changes are logged (nowhere in `memory` mode).
    pub(crate) journal: Journal,
}

impl EngineState {
    pub(crate) fn new(engine: Engine, journal: Journal, clock_ms: u64) -> EngineState {
        EngineState { executor: Executor::new(engine, clock_ms), journal }
    }
}

/// The worker loop. Returns when the server stops and the queue is empty.
pub(crate) fn run(shared: Arc<Shared>, index: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(JOBS_PER_BATCH_MAX);
    let heartbeat = shared.liveness.register_current();
    loop {
        heartbeat.beat();
        while batch.len() < JOBS_PER_BATCH_MAX {
            match shared.jobs.pop() {
                Some(job) => batch.push(*job),
                None => break,
            }
        }
        // Stopping begins when the signal arrives (reactors then finish what they
        // hold, which includes answering long polls at once); the workers exit
        // once every reactor has exited and the queue is drained.
        let stopping = shared.stopping.load(Ordering::Acquire);
        let exiting = shared.workers_stop.load(Ordering::Acquire);
        let wall_ms = now_ms();
        // Replies to binary connections wake their reactors once, after the batch.
        let (now, wake_ms) = super::outbox::batch_wakes(|| {
            let mut state = crate::sync::lock(&shared.engine);
            let EngineState { executor, journal } = &mut *state;
            let now = executor.advance_clock(wall_ms);
            let mut may_ready = false;
            for job in batch.drain(..) {
                super::liveness::debug_panic_check(&job.command);
                may_ready |= executor.execute(journal, job.command, job.received, job.reply, now, !stopping);
            }
            let wake_ms = executor.after_batch(journal, now, stopping, may_ready);
            journal.check_budget(&executor.engine);
            (now, wake_ms)
        });
        if exiting && shared.jobs.is_empty() {
            return;
        }
        if !shared.jobs.is_empty() {
            continue;
        }
        let sleep_ms = wake_ms.map_or(IDLE_SLEEP_MS_MAX, |t| t.saturating_sub(now).min(IDLE_SLEEP_MS_MAX));
        if sleep_ms > 0 {
            heartbeat.idle(); // the sleep is bounded (IDLE_SLEEP_MS_MAX) and ends when a job arrives
            shared.sleepers.sleep(index, Duration::from_millis(sleep_ms), || shared.jobs.is_empty());
        }
    }
}
