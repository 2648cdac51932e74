//! Where commands are executed: the executor (`crate::core::executor`), the
//! one place a request's command is executed, logged and answered, driven
//! under the engine lock by whichever thread takes it (run to completion).
//!
//! A reactor that has parsed requests pushes them on the request queue (the
//! lock-free MPMC `Shared::jobs`) and then runs [`run_pending`] itself, once
//! per pass over its ready connections ([`execute_soon`]): if the engine lock
//! is free it executes every queued job, its own and any other reactor's, in
//! queue order, appends their records in the same critical section and sends
//! the replies to their reactors' mailboxes (`outbox.rs`); if another thread
//! holds the lock, it does not wait: the holder drains the queue before it
//! lets go (combining), so one holder executes a batch for several threads
//! and no reactor ever blocks on the engine. A job never crosses to a thread
//! that exists only to execute it.
//!
//! Worker threads (`--workers`, 1 by default) remain as the timer thread: they
//! sleep until the engine's next timer (lease expiry, delayed task, retry
//! backoff) or held long poll's deadline, fire it, and are woken early when a
//! combiner finds an earlier one, when one stops at its bound with jobs left,
//! and at stop (they answer the held long polls). They drain the queue the
//! same way.
//!
//! Time: whoever executes reads the wall clock (milliseconds since the Unix
//! epoch) and passes it to the executor, which makes it monotonic.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::durability::Journal;
use super::outbox::ReplyTo;
use super::Shared;
use crate::auth::{self, Grant};
use crate::command::Command;
use crate::command::Reply;
use crate::core::executor::{Executor, Received};
use crate::engine::Engine;

/// A request handed from a reactor to a worker.
pub(crate) struct Job {
    pub(crate) command: Command,
    /// The binary request as received (logged as it is); `None` for HTTP.
    pub(crate) received: Option<Received>,
    pub(crate) reply: ReplyTo,
    /// A token limited to some queues, for a command naming tasks by id:
    /// each task's queue is checked against it here, under the engine lock,
    /// before anything executes (`auth::check_task_queues`). `None` for
    /// every other request.
    pub(crate) grant: Option<Arc<Grant>>,
}

// Every request a reactor executes is one `Box<Job>`, so its size class is
// part of the hot path: at 232 bytes (the opcode kept beside a received body,
// plus `grant`) a Job fell into jemalloc's 256-byte class, whose thread cache
// holds 32 objects (16 per 4 KiB slab, twice that cached) against 200 for the
// 224-byte class. With 800 requests in flight the cache overflowed and each
// ~8 requests cost a slab from the arena: +5 % instructions per memory-mode
// enqueue at ×16 under callgrind (docs/benchmarks/changelog.md, issue 18).
const _: () = assert!(std::mem::size_of::<Job>() <= 224, "Job must stay within jemalloc's 224-byte size class");

/// Jobs executed per clock reading and timer pass: amortises both, while
/// bounding how late a due timer fires under load.
const JOBS_PER_BATCH_MAX: usize = 256;
/// Jobs one [`run_pending`] call executes at most before it lets go of the
/// lock and, if jobs are left, wakes a worker to take them: bounds how long a
/// reactor executes other reactors' requests while its own sockets wait
/// (about 1 µs per job here: a few milliseconds at most).
const COMBINE_JOBS_MAX: usize = 4 * JOBS_PER_BATCH_MAX;
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

/// Executes queued jobs at the engine lock, held: up to `jobs_max` of them,
/// in batches of [`JOBS_PER_BATCH_MAX`], each batch followed by the timer
/// pass and the long-poll retries. Returns how many ran, the time of the last
/// batch and when the engine next needs the executor.
fn drain(shared: &Shared, state: &mut EngineState, jobs_max: usize) -> (usize, u64, Option<u64>) {
    // Boxes, as queued: each Job is moved once, out of its box into
    // `execute`'s arguments (a `Vec<Job>` copied each one twice more:
    // callgrind, issue 18).
    let mut batch: Vec<Box<Job>> = Vec::with_capacity(JOBS_PER_BATCH_MAX.min(jobs_max.max(1)));
    let mut executed = 0;
    loop {
        while batch.len() < JOBS_PER_BATCH_MAX && executed + batch.len() < jobs_max {
            match shared.jobs.pop() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        // Stopping begins when the signal arrives (reactors then finish what they
        // hold, which includes answering long polls at once).
        let stopping = shared.stopping.load(Ordering::Acquire);
        let EngineState { executor, journal } = state;
        let now = executor.advance_clock(now_ms());
        let mut may_ready = false;
        executed += batch.len();
        for job in batch.drain(..) {
            let Job { command, received, reply, grant } = *job;
            if let Some(grant) = grant {
                let engine = &executor.engine;
                if let Err(error) = auth::check_task_queues(&grant, &command, |id| engine.task_queue(id)) {
                    executor.refuse(journal, reply, Reply::Error(error));
                    continue;
                }
            }
            super::liveness::debug_panic_check(&command);
            if journal.task_events.is_some() {
                journal.executing_opcode = crate::binary::command_opcode(&command) as u8;
            }
            may_ready |= executor.execute(journal, command, received, reply, now, !stopping);
        }
        let wake_ms = executor.after_batch(journal, now, stopping, may_ready);
        if let Some(events) = &journal.task_events {
            let tick = &executor.last_tick;
            events.add(crate::metrics::TaskEvent::LeaseExpired, tick.expired as u64);
            events.add(crate::metrics::TaskEvent::Dead, tick.dead as u64);
        }
        journal.check_budget(&executor.engine);
        if executed >= jobs_max || shared.jobs.is_empty() {
            // Under the lock, so the last writer is the latest batch: a timer
            // thread planning to sleep past it is woken (`Shared::timer_due`).
            shared.timer_due(wake_ms);
            return (executed, now, wake_ms);
        }
    }
}

/// Runs the queued jobs if the engine lock is free; otherwise leaves them to
/// its holder, which drains the queue before letting go. Never blocks.
pub(crate) fn run_pending(shared: &Shared) {
    let mut executed = 0;
    loop {
        // Pairs with the fence in `Shared::queue_left_behind` (the caller
        // pushed before this).
        std::sync::atomic::fence(Ordering::SeqCst);
        let guard = match shared.engine.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return,
            Err(std::sync::TryLockError::Poisoned(_)) => crate::sync::poisoned(),
        };
        // Replies to binary connections wake their reactors once, after the batch.
        super::outbox::batch_wakes(|| {
            let mut state = guard;
            executed += drain(shared, &mut state, COMBINE_JOBS_MAX - executed).0;
        });
        if !shared.queue_left_behind() {
            return;
        }
        if executed >= COMBINE_JOBS_MAX {
            // Enough of other threads' work: a worker takes the rest.
            shared.sleepers.wake_one();
            return;
        }
    }
}

thread_local! {
    /// A task that runs [`run_pending`] is spawned on this reactor and has not run yet.
    static EXECUTE_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs [`run_pending`] once the reactor has run the tasks that are ready now
/// (the spawned task runs after them): requests parsed in one pass over the
/// ready connections execute together, under one lock acquisition. Call it
/// after [`Shared::submit`] on a tokio-uring reactor.
pub(crate) fn execute_soon(shared: &Arc<Shared>) {
    if EXECUTE_PENDING.with(|pending| pending.replace(true)) {
        return;
    }
    let shared = shared.clone();
    tokio_uring::spawn(async move {
        EXECUTE_PENDING.with(|pending| pending.set(false));
        run_pending(&shared);
    });
}

/// A worker (timer) thread. Returns when the server stops and the queue is empty.
pub(crate) fn run(shared: Arc<Shared>, index: usize) {
    let heartbeat = shared.liveness.register_current();
    loop {
        heartbeat.beat();
        let exiting = shared.workers_stop.load(Ordering::Acquire);
        let (now, wake_ms) = {
            let mut state = crate::sync::lock(&shared.engine);
            let (_, now, wake_ms) = super::outbox::batch_wakes(|| drain(&shared, &mut state, COMBINE_JOBS_MAX));
            (now, wake_ms)
        };
        if exiting && shared.jobs.is_empty() {
            return;
        }
        if !shared.jobs.is_empty() {
            continue;
        }
        let sleep_ms = wake_ms.map_or(IDLE_SLEEP_MS_MAX, |t| t.saturating_sub(now).min(IDLE_SLEEP_MS_MAX));
        if sleep_ms > 0 {
            heartbeat.idle(); // the sleep is bounded (IDLE_SLEEP_MS_MAX) and ends when woken
            let planned_ms = now + sleep_ms;
            shared.sleepers.sleep(index, Duration::from_millis(sleep_ms), || {
                shared.jobs.is_empty() && shared.timer_due_ms.load(Ordering::SeqCst) >= planned_ms
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::{run_pending, Job, COMBINE_JOBS_MAX};
    use crate::command::{Command, Reply};
    use crate::engine::NewTask;
    use crate::server::outbox::{Mailbox, ReplyTo};
    use crate::server::Shared;

    /// A server's shared state as it is before recovery: an empty engine in
    /// `memory` mode, which executes (nothing here starts a thread).
    fn shared() -> Arc<Shared> {
        let config = crate::cli::serve::test_config(&["--workers", "1"]);
        Arc::new(Shared::new(&config, 100, HashSet::new()))
    }

    fn submit_enqueue(shared: &Shared, queue: &str) -> oneshot::Receiver<Reply> {
        let (sender, receiver) = oneshot::channel();
        let reply = ReplyTo::Task { sender, mailbox: Mailbox::new(&shared.watermark) };
        let task = NewTask { payload: Bytes::from_static(b"1"), ..NewTask::default() };
        let command = Command::Enqueue { queue: queue.into(), task };
        assert!(shared.submit(Box::new(Job { command, received: None, reply, grant: None })).is_ok());
        receiver
    }

    fn enqueued_id(receiver: &mut oneshot::Receiver<Reply>) -> Option<u64> {
        match receiver.try_recv() {
            Ok(Reply::Enqueued(enqueued)) => Some(enqueued.id),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(_) => None,
        }
    }

    #[test]
    fn run_pending_executes_every_queued_job_on_the_calling_thread_in_queue_order() {
        let shared = shared();
        let mut replies: Vec<_> = (0..5).map(|_| submit_enqueue(&shared, "jobs")).collect();
        assert!(replies.iter_mut().all(|reply| enqueued_id(reply).is_none()), "queued, not executed yet");
        run_pending(&shared);
        let ids: Vec<u64> = replies.iter_mut().map(|reply| enqueued_id(reply).expect("executed")).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "executed in queue order: {ids:?}");
        assert!(shared.jobs.is_empty());
    }

    /// Combining: a thread that finds the engine lock held leaves its job and
    /// returns at once; the holder runs it when it lets go, so the job does
    /// not wait for the timer thread.
    #[test]
    fn a_job_queued_while_the_engine_is_held_runs_when_its_holder_lets_go() {
        let shared = shared();
        let held = shared.lock_engine();
        let mut reply = submit_enqueue(&shared, "jobs");
        run_pending(&shared); // finds the lock held: returns without waiting
        assert!(enqueued_id(&mut reply).is_none(), "not executed while the lock is held");
        drop(held);
        assert!(enqueued_id(&mut reply).is_some(), "the holder executed it on letting go");
        assert!(shared.jobs.is_empty());
    }

    /// No job is stranded: threads that queue and call `run_pending` while
    /// others hold the lock (executors and a non-executor) all see their
    /// jobs run by somebody, with no timer thread to pick up leftovers. Without
    /// the holder's look at the queue after letting go
    /// (`Shared::queue_left_behind`) jobs queued during its last batch wait
    /// for a timer thread that this test does not run.
    #[test]
    fn jobs_queued_by_racing_threads_are_all_run_without_a_timer_thread() {
        const THREADS: usize = 3;
        const JOBS_PER_THREAD: usize = 500;
        let shared = shared();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let holder = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                // Holds the lock most of the time, so pushers often find it held.
                while !stop.load(Ordering::Relaxed) {
                    let held = shared.lock_engine();
                    std::thread::sleep(Duration::from_micros(200));
                    drop(held);
                    std::thread::yield_now();
                }
            })
        };
        let pushers: Vec<_> = (0..THREADS)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    (0..JOBS_PER_THREAD)
                        .map(|_| {
                            let reply = submit_enqueue(&shared, "jobs");
                            run_pending(&shared);
                            // Spreads the pushes over the holder's turns.
                            std::thread::sleep(Duration::from_micros(50));
                            reply
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut replies: Vec<_> = pushers.into_iter().flat_map(|pusher| pusher.join().expect("pusher")).collect();
        stop.store(true, Ordering::Relaxed);
        holder.join().expect("holder");
        let unanswered = replies.iter_mut().map(enqueued_id).filter(Option::is_none).count();
        assert_eq!((unanswered, shared.jobs.len()), (0, 0), "jobs left with nobody to run them");
    }

    /// A reactor does not execute other threads' work without end: past
    /// `COMBINE_JOBS_MAX` jobs it lets go and leaves the rest to a worker.
    #[test]
    fn a_combiner_stops_at_its_bound_and_leaves_the_rest_queued() {
        let shared = shared();
        let replies: Vec<_> = (0..COMBINE_JOBS_MAX + 3).map(|_| submit_enqueue(&shared, "jobs")).collect();
        run_pending(&shared);
        assert_eq!(shared.jobs.len(), 3);
        drop(replies);
    }

    /// The timer thread sleeps until the engine's next timer; a batch on
    /// another thread that makes a timer due earlier (a delayed task, a
    /// lease) wakes it, else that timer would fire up to 100 ms late.
    #[test]
    fn a_batch_that_finds_an_earlier_timer_wakes_the_sleeping_timer_thread() {
        let shared = shared();
        shared.timer_due(Some(1_000_000));
        let (woken_tx, woken_rx) = std::sync::mpsc::channel();
        let sleeper = shared.clone();
        let thread = std::thread::spawn(move || {
            let planned_ms = 1_000_000;
            sleeper.sleepers.sleep(0, Duration::from_secs(600), || {
                sleeper.jobs.is_empty() && sleeper.timer_due_ms.load(Ordering::SeqCst) >= planned_ms
            });
            let _ = woken_tx.send(());
        });
        // Whether it is asleep yet or not: asleep, it is unparked; not yet,
        // it sees the earlier time and does not sleep.
        shared.timer_due(Some(10));
        assert!(woken_rx.recv_timeout(Duration::from_secs(60)).is_ok(), "the timer thread was not woken");
        let _ = thread.join();
    }
}
