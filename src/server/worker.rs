//! Worker threads: the only code that touches engine state.
//!
//! A worker pops jobs from the request queue in batches, executes each against
//! the engine under one lock acquisition, and sends each reply to the reactor task
//! that waits for it (a oneshot channel, whose send wakes that reactor's runtime).
//! With one worker (the default) the lock is never contended; with several it
//! serialises engine access, which is still correct.
//!
//! Long polls (`dequeue` with `wait_ms`) that find nothing are held here, in
//! arrival order, and retried after every batch that may have made tasks ready and
//! after every tick; they are answered with an empty list at their deadline.
//!
//! Time: the worker reads the wall clock (milliseconds since the Unix epoch) and
//! passes it to the engine. It sleeps until the next job, the engine's next timer,
//! or the next long-poll deadline, whichever comes first.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::durability::{encode_entry, Journal};
use super::reply::ReplyTo;
use super::Shared;
use crate::command::{Command, Reply};
use crate::engine::{Engine, EngineError};
use crate::limits::LONG_POLLS_COUNT_MAX;
use crate::wal::record::Entry;

/// A request handed from a reactor to a worker.
pub(crate) struct Job {
    pub(crate) command: Command,
    pub(crate) reply: ReplyTo,
}

/// Jobs a worker takes per lock acquisition: amortises the lock and the clock
/// read, while bounding how long other workers wait for the engine.
const JOBS_PER_BATCH_MAX: usize = 256;
/// Timers a worker handles per tick, so that a burst of expiries cannot stall
/// requests for long; the rest are handled on the next loop.
const TICK_WORK_MAX: usize = 10_000;
/// Longest sleep: a backstop so a worker notices shutdown and clock jumps.
const IDLE_SLEEP_MS_MAX: u64 = 100;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct LongPoll {
    queues: Vec<String>,
    max: usize,
    lease_ms: Option<u64>,
    deadline_ms: u64,
    reply: ReplyTo,
}

/// Engine state shared by the workers, behind one lock.
pub(crate) struct EngineState {
    pub(crate) engine: Engine,
    /// Where executed state changes are logged (nowhere in `memory` mode).
    pub(crate) journal: Journal,
    /// The latest time passed to the engine. Never goes back, so that a tick
    /// that fired nothing (and is not logged) cannot make replay differ.
    clock_ms: u64,
    long_polls: VecDeque<LongPoll>,
    /// Earliest deadline among `long_polls` (`u64::MAX` if none), so that a
    /// worker need not walk them after every batch: only when something may
    /// have become ready, or a deadline has passed.
    long_poll_deadline_min_ms: u64,
}

impl EngineState {
    pub(crate) fn new(engine: Engine, journal: Journal, clock_ms: u64) -> EngineState {
        EngineState { engine, journal, clock_ms, long_polls: VecDeque::new(), long_poll_deadline_min_ms: u64::MAX }
    }

    /// The wall clock, made monotonic.
    fn advance_clock(&mut self, wall_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(wall_ms);
        self.clock_ms
    }

    /// Logs a dequeue the worker made on its own (for a held long poll).
    fn log_lease(&self, now: u64, queues: &[String], max: usize, lease_ms: Option<u64>) {
        if self.journal.is_on() {
            let command = Command::Dequeue { queues: queues.to_vec(), max, lease_ms, wait_ms: 0 };
            self.journal.log(encode_entry(now, Entry::Command(command)));
        }
    }

    /// Executes one job. A long poll that finds nothing is held, unless the
    /// server is stopping (`hold` false), when it is answered empty at once.
    fn run(&mut self, job: Job, now: u64, hold: bool) -> bool {
        super::liveness::debug_panic_check(&job.command);
        let may_ready = job.command.may_ready_tasks();
        match job.command {
            Command::Dequeue { queues, max, lease_ms, wait_ms } if wait_ms > 0 && hold => {
                let mut out = Vec::new();
                let reply = match self.engine.dequeue(&queues, max, lease_ms, now, &mut out) {
                    Err(error) => Reply::Error(error),
                    Ok(0) if self.long_polls.len() >= LONG_POLLS_COUNT_MAX => {
                        Reply::Error(EngineError::CapacityExceeded { what: "long polls", limit: LONG_POLLS_COUNT_MAX })
                    }
                    Ok(0) => {
                        let deadline_ms = now.saturating_add(wait_ms);
                        self.long_poll_deadline_min_ms = self.long_poll_deadline_min_ms.min(deadline_ms);
                        self.long_polls.push_back(LongPoll { queues, max, lease_ms, deadline_ms, reply: job.reply });
                        return may_ready;
                    }
                    Ok(_) => {
                        self.log_lease(now, &queues, max, lease_ms);
                        Reply::Leased(out)
                    }
                };
                self.journal.reply(&self.engine, reply, job.reply, self.journal.reply_lsn());
            }
            command => self.journal.execute(&mut self.engine, command, now, job.reply),
        }
        may_ready
    }

    /// Answers the long polls that can be answered: with tasks if some are ready
    /// now (oldest poll first), empty at their deadline. Drops those whose client
    /// is gone, so they cannot take tasks nobody will receive.
    fn settle_long_polls(&mut self, now: u64, try_dequeue: bool) {
        if !try_dequeue && now < self.long_poll_deadline_min_ms {
            return;
        }
        let mut deadline_min_ms = u64::MAX;
        let mut kept = VecDeque::with_capacity(self.long_polls.len());
        while let Some(poll) = self.long_polls.pop_front() {
            if poll.reply.is_closed() {
                continue;
            }
            if try_dequeue {
                let mut out = Vec::new();
                if let Ok(count) = self.engine.dequeue(&poll.queues, poll.max, poll.lease_ms, now, &mut out) {
                    if count > 0 {
                        self.log_lease(now, &poll.queues, poll.max, poll.lease_ms);
                        // If the client left between the check and the send, the
                        // leases run out and the tasks are delivered again.
                        self.journal.reply(&self.engine, Reply::Leased(out), poll.reply, self.journal.reply_lsn());
                        continue;
                    }
                }
            }
            if now >= poll.deadline_ms {
                poll.reply.send(Reply::Leased(Vec::new()), self.journal.reply_lsn());
                continue;
            }
            deadline_min_ms = deadline_min_ms.min(poll.deadline_ms);
            kept.push_back(poll);
        }
        self.long_polls = kept;
        self.long_poll_deadline_min_ms = deadline_min_ms;
    }

    fn next_wake_ms(&self) -> Option<u64> {
        let poll_deadline = (self.long_poll_deadline_min_ms != u64::MAX).then_some(self.long_poll_deadline_min_ms);
        match (self.engine.next_due_ms(), poll_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// At shutdown: every held long poll is answered (empty) so its connection can end.
    fn release_long_polls(&mut self) {
        let lsn = self.journal.reply_lsn();
        for poll in self.long_polls.drain(..) {
            poll.reply.send(Reply::Leased(Vec::new()), lsn);
        }
        self.long_poll_deadline_min_ms = u64::MAX;
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
        let (now, wake_ms) = super::reply::batch_wakes(|| {
            let mut state = crate::sync::lock(&shared.engine);
            let now = state.advance_clock(wall_ms);
            let mut may_ready = false;
            for job in batch.drain(..) {
                may_ready |= state.run(job, now, !stopping);
            }
            if state.journal.is_on() && state.engine.next_due_ms().is_some_and(|due_ms| due_ms <= now) {
                // Only ticks that fire timers change state, so only those are logged.
                state.journal.log(encode_entry(now, Entry::Tick { work_max: TICK_WORK_MAX as u32 }));
            }
            let tick = state.engine.tick(now, TICK_WORK_MAX);
            state.journal.check_budget(&state.engine);
            may_ready |= tick.promoted > 0 || tick.expired > 0;
            if stopping {
                state.release_long_polls();
            } else {
                state.settle_long_polls(now, may_ready);
            }
            let wake_ms = if tick.more_due { Some(now) } else { state.next_wake_ms() };
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
