//! The executor: the engine, the clock the engine sees, and held long polls,
//! driven one request at a time. The server's reactors (and its timer
//! threads) drive it under the engine lock (`server/worker.rs`), the simulator drives it in its
//! steps (`crate::sim`); neither adds logic of its own to a request's path.
//!
//! For each request it executes the command against the engine at `now_ms`,
//! appends the command's record to the log buffer in the same call (so log
//! order is execution order, and the LSN is the record's position), and
//! sends the reply tagged with the LSN it must wait for ([`Effects`]). It
//! never blocks, sleeps, reads a clock or touches a file.
//!
//! Long polls (`dequeue` with `wait_ms`) that find nothing are held here, in
//! arrival order, and retried after every batch that may have made tasks ready
//! and after every tick; they are answered with an empty list at their deadline.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::binary;
use crate::command::{execute, Command, Reply};
use crate::engine::{Engine, EngineError};
use crate::limits::LONG_POLLS_COUNT_MAX;
use crate::wal::record::{self, Entry, LogRecord};

/// Timers handled per tick, so that a burst of expiries cannot stall
/// requests for long; the rest are handled on the next batch.
pub const TICK_WORK_MAX: usize = 10_000;

/// Where an executed request's effects go: its record into the log buffer,
/// its reply to whoever asked. The server's implementation is its `Journal`
/// (the WAL thread's buffer, the reactors' mailboxes, cold payload reads);
/// the simulator's keeps them in memory.
pub trait Effects {
    /// Who a reply goes to.
    type To;
    /// Whether state changes are logged (not in `memory` mode).
    fn logging(&self) -> bool;
    /// Appends `record` to the log buffer; returns its LSN.
    fn append(&mut self, record: Vec<u8>) -> u64;
    /// The LSN a reply made now must wait for (0: none; see
    /// `server::durability::Journal::reply_lsn`).
    fn reply_lsn(&self) -> u64;
    /// Sends `reply` to `to`, to leave once the durable watermark reaches `lsn`.
    fn send(&mut self, engine: &Engine, to: Self::To, reply: Reply, lsn: u64);
    /// Whether nobody waits for a reply to `to` any more (a held long poll
    /// whose client left is dropped rather than leasing tasks for nobody).
    fn is_closed(to: &Self::To) -> bool;
    /// A refusal of `command` before it is executed (the `memory`-mode
    /// payload budget), if any.
    fn refuse(&self, _engine: &Engine, _command: &Command) -> Option<Reply> {
        None
    }
}

/// A request as a binary client sent it: its body, which decodes
/// (`tqx_wire::Request::decode_body`, then `binary::request_command`) to the
/// command executed with it, whose opcode (`binary::command_opcode`) is the
/// frame's. Logged as it is, so the binary path encodes nothing for the log;
/// HTTP requests have none and their command is encoded. The opcode is not
/// kept beside the body: the command says it, and the 8 bytes it took put
/// `server::worker::Job` over a size class (see the assertion there).
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Bytes,
}

struct LongPoll<T> {
    queues: Vec<String>,
    max: usize,
    lease_ms: Option<u64>,
    deadline_ms: u64,
    to: T,
}

pub struct Executor<T> {
    pub engine: Engine,
    /// The latest time passed to the engine. Never goes back, so that a tick
    /// that fired nothing (and is not logged) cannot make replay differ.
    clock_ms: u64,
    long_polls: VecDeque<LongPoll<T>>,
    /// Earliest deadline among `long_polls` (`u64::MAX` if none), so that
    /// they need not be walked after every batch: only when something may
    /// have become ready, or a deadline has passed.
    long_poll_deadline_min_ms: u64,
    /// What the last [`Executor::after_batch`]'s timer pass did (the
    /// server's metrics count its expired leases and dead tasks).
    pub last_tick: crate::engine::TickReport,
}

/// Encodes a record that is not a client's command as received (a tick, a
/// held long poll's lease).
pub fn encode_entry(now_ms: u64, entry: Entry) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32);
    record::encode(&LogRecord { now_ms, entry }, &mut bytes);
    bytes
}

impl<T> Executor<T> {
    /// `clock_ms`: the latest time the engine has seen (the log's, after recovery).
    pub fn new(engine: Engine, clock_ms: u64) -> Executor<T> {
        Executor {
            engine,
            clock_ms,
            long_polls: VecDeque::new(),
            long_poll_deadline_min_ms: u64::MAX,
            last_tick: crate::engine::TickReport::default(),
        }
    }

    /// Takes the wall clock's reading, made monotonic: the time to execute at.
    pub fn advance_clock(&mut self, wall_ms: u64) -> u64 {
        self.clock_ms = self.clock_ms.max(wall_ms);
        self.clock_ms
    }

    pub fn long_polls_count(&self) -> usize {
        self.long_polls.len()
    }

    /// Executes one request at `now`. A long poll that finds nothing is held,
    /// unless the server is stopping (`hold` false), when it is answered
    /// empty at once. Returns whether it may have made tasks ready (then
    /// held long polls are retried after the batch).
    pub fn execute<E: Effects<To = T>>(
        &mut self,
        effects: &mut E,
        command: Command,
        received: Option<Received>,
        to: T,
        now: u64,
        hold: bool,
    ) -> bool {
        let may_ready = command.may_ready_tasks();
        match command {
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
                        self.long_polls.push_back(LongPoll { queues, max, lease_ms, deadline_ms, to });
                        return may_ready;
                    }
                    Ok(_) => {
                        log_lease(effects, now, &queues, max, lease_ms);
                        Reply::Leased(out)
                    }
                };
                answer(effects, &self.engine, to, reply);
            }
            command => self.execute_now(effects, command, received, to, now),
        }
        may_ready
    }

    /// Executes `command`, appends its record if it changes state, and sends
    /// the reply.
    fn execute_now<E: Effects<To = T>>(
        &mut self,
        effects: &mut E,
        command: Command,
        received: Option<Received>,
        to: T,
        now: u64,
    ) {
        if let Some(refusal) = effects.refuse(&self.engine, &command) {
            answer(effects, &self.engine, to, refusal);
            return;
        }
        let result = if effects.logging() && record::is_logged(&command) {
            let mut bytes = Vec::with_capacity(64);
            match &received {
                Some(Received { body }) => {
                    record::encode_request_body(now, binary::command_opcode(&command) as u8, body, &mut bytes)
                }
                None => record::encode_command(now, &command, &mut bytes),
            }
            let result = execute(&mut self.engine, command, now);
            // An empty dequeue changed nothing: no record.
            if !matches!(&result, Reply::Leased(tasks) if tasks.is_empty()) {
                effects.append(bytes);
            }
            result
        } else {
            execute(&mut self.engine, command, now)
        };
        answer(effects, &self.engine, to, result);
    }

    /// Answers `to` with `reply` without executing anything: a refusal
    /// decided under the engine lock from engine state (a token limited to
    /// some queues and a task outside them: `auth::check_task_queues`). It
    /// is tagged like any reply made now, since what it says (which queue a
    /// task is in) may come from a record not yet durable.
    pub fn refuse<E: Effects<To = T>>(&self, effects: &mut E, to: T, reply: Reply) {
        answer(effects, &self.engine, to, reply);
    }

    /// After a batch of requests: fires the engine's due timers (logging the
    /// tick if it fires any), then answers the long polls that can be
    /// answered (all of them, empty, if `stopping`). Returns when the engine
    /// next needs the executor (a timer or a long poll's deadline), if ever.
    pub fn after_batch<E: Effects<To = T>>(
        &mut self,
        effects: &mut E,
        now: u64,
        stopping: bool,
        may_ready: bool,
    ) -> Option<u64> {
        if effects.logging() && self.engine.next_due_ms().is_some_and(|due_ms| due_ms <= now) {
            // Only ticks that fire timers change state, so only those are logged.
            effects.append(encode_entry(now, Entry::Tick { work_max: TICK_WORK_MAX as u32 }));
        }
        let tick = self.engine.tick(now, TICK_WORK_MAX);
        self.last_tick = tick;
        let may_ready = may_ready || tick.promoted > 0 || tick.expired > 0;
        if stopping {
            self.release_long_polls(effects);
        } else {
            self.settle_long_polls(effects, now, may_ready);
        }
        if tick.more_due {
            Some(now)
        } else {
            self.next_wake_ms()
        }
    }

    /// Answers the long polls that can be answered: with tasks if some are ready
    /// now (oldest poll first), empty at their deadline. Drops those whose client
    /// is gone, so they cannot take tasks nobody will receive.
    fn settle_long_polls<E: Effects<To = T>>(&mut self, effects: &mut E, now: u64, try_dequeue: bool) {
        if !try_dequeue && now < self.long_poll_deadline_min_ms {
            return;
        }
        let mut deadline_min_ms = u64::MAX;
        let mut kept = VecDeque::with_capacity(self.long_polls.len());
        while let Some(poll) = self.long_polls.pop_front() {
            if E::is_closed(&poll.to) {
                continue;
            }
            if try_dequeue {
                let mut out = Vec::new();
                match self.engine.dequeue(&poll.queues, poll.max, poll.lease_ms, now, &mut out) {
                    Ok(0) => {}
                    Ok(_) => {
                        log_lease(effects, now, &poll.queues, poll.max, poll.lease_ms);
                        // If the client left between the check and the send, the
                        // leases run out and the tasks are delivered again.
                        answer(effects, &self.engine, poll.to, Reply::Leased(out));
                        continue;
                    }
                    // A queue it waits on was deleted: say so now rather than
                    // answer an empty list at the deadline.
                    Err(error) => {
                        answer(effects, &self.engine, poll.to, Reply::Error(error));
                        continue;
                    }
                }
            }
            if now >= poll.deadline_ms {
                answer(effects, &self.engine, poll.to, Reply::Leased(Vec::new()));
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
    pub fn release_long_polls<E: Effects<To = T>>(&mut self, effects: &mut E) {
        let lsn = effects.reply_lsn();
        for poll in self.long_polls.drain(..) {
            effects.send(&self.engine, poll.to, Reply::Leased(Vec::new()), lsn);
        }
        self.long_poll_deadline_min_ms = u64::MAX;
    }
}

/// Sends `reply` tagged with the LSN it must wait for: the one way the
/// executor answers, so no reply can leave without its LSN.
fn answer<E: Effects>(effects: &mut E, engine: &Engine, to: E::To, reply: Reply) {
    let lsn = effects.reply_lsn();
    effects.send(engine, to, reply, lsn);
}

/// Logs a dequeue the executor made on a held long poll's behalf: replay
/// runs it as a dequeue that does not wait.
fn log_lease<E: Effects>(effects: &mut E, now: u64, queues: &[String], max: usize, lease_ms: Option<u64>) {
    if effects.logging() {
        let command = Command::Dequeue { queues: queues.to_vec(), max, lease_ms, wait_ms: 0 };
        effects.append(encode_entry(now, Entry::Command(command)));
    }
}
