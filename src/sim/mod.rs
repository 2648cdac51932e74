//! A seeded, deterministic simulator of the server's request path
//! (docs/simulation.md). It drives the real core — the executor
//! (`core::executor`), the log buffer (`wal::committer::LogBuffer`), the log
//! writer's `Log` over a simulated disk (`wal::storage::SimStorage`), replay
//! (`core::replay`) and the reactors' outbox (`core::outbox`) — with
//! simulated clients, a simulated clock and injected faults, one step at a
//! time on one thread. The seed decides everything, so a seed is a bug
//! report: `tools/simulate --seed N` replays it exactly.
//!
//! After every step it checks the engine's invariants; after every crash
//! and restart it checks that everything a client was shown — an
//! acknowledged enqueue or complete, a lease, a read — survived. A
//! [`Plant`]ed bug shows the checks can fail.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::Hasher;
use std::rc::Rc;

use bytes::Bytes;

use crate::command::{Command, CompleteItem, Reply};
use crate::core::connections::{
    admits, keep_longest_idle, prune_count, verdict, write_late, Policy, Verdict, NO_REQUEST,
};
use crate::core::executor::{encode_entry, Effects, Executor, Received};
use crate::core::outbox::Outbox;
use crate::core::replay::replay;
use crate::engine::{DepRef, Engine, EngineConfig, LeaseToken, NewTask, TaskId, TaskState};
use crate::wal::committer::LogBuffer;
use crate::wal::log::Log;
use crate::wal::record::Entry;
use crate::wal::storage::SimStorage;

/// Segments of the simulated log: small, so that runs roll segments often.
const SEGMENT_BYTES: usize = 64 << 10;
/// Simulated clients, each with at most one connection at a time.
const CLIENTS_COUNT: usize = 7;
const QUEUES: [&str; 2] = ["a", "b"];

/// A bug planted on purpose, to show the simulator finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// The outbox releases replies one record before the watermark reaches them.
    ReleaseOneRecordEarly,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub steps: u64,
    pub plant: Option<Plant>,
}

/// What a run did (all of it a function of the options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// A hash of every event of the run: equal for equal options.
    pub trace_hash: u64,
    pub steps: u64,
    pub requests: u64,
    pub replies: u64,
    pub crashes: u64,
    pub sync_failures: u64,
    pub bit_flips: u64,
    /// The run ended at a restart that refused a damaged log (a bit flip
    /// the checksums caught): correct, and nothing more to simulate.
    pub refused_damaged_log: bool,
    pub records_max_lsn: u64,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub options: Options,
    pub step: u64,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation failed at step {} of seed {}{}: {}\nreplay it: tools/simulate --seed {} --steps {}{}",
            self.step,
            self.options.seed,
            self.options.plant.map_or(String::new(), |plant| format!(" (planted: {plant:?})")),
            self.message,
            self.options.seed,
            self.options.steps,
            self.options.plant.map_or("", |plant| match plant {
                Plant::ReleaseOneRecordEarly => " --plant release-one-record-early",
            }),
        )
    }
}

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// Who a reply goes to: a client's connection (its incarnation) and request.
#[derive(Clone, Debug)]
struct To {
    client: usize,
    request_id: u64,
    /// Set when the connection is gone (the executor drops its long polls).
    closed: Rc<Cell<bool>>,
}

/// The simulator's effects: records into the log buffer, replies into a list
/// the reactor step moves into the outbox.
struct SimEffects {
    buffer: LogBuffer,
    sent: Vec<(To, Reply, u64)>,
}

impl Effects for SimEffects {
    type To = To;
    fn logging(&self) -> bool {
        true
    }
    fn append(&mut self, record: Vec<u8>) -> u64 {
        self.buffer.append(record)
    }
    fn reply_lsn(&self) -> u64 {
        self.buffer.last_lsn()
    }
    fn send(&mut self, _engine: &Engine, to: To, reply: Reply, lsn: u64) {
        self.sent.push((to, reply, lsn));
    }
    fn is_closed(to: &To) -> bool {
        to.closed.get()
    }
}

/// The simulated server: what a crash destroys.
struct Server {
    executor: Executor<To>,
    effects: SimEffects,
    log: Log<SimStorage>,
    durable_lsn: u64,
    outbox: Outbox<(To, Reply)>,
    /// Requests received, not yet executed (the request queue), with the
    /// body as a binary client sent it (odd clients) or none (HTTP).
    queue: VecDeque<(Command, Option<Received>, To)>,
    /// The log failed (fail-stop): the server stops; the simulator restarts it.
    failed: bool,
}

struct Client {
    /// Holds a connection slot (admitted, not yet closed).
    connected: bool,
    /// Requests sent whose replies the server has not released yet: the
    /// connection is busy (`core::connections::verdict`'s holds).
    holds: u32,
    /// When the connection last went idle or had a request taken.
    idle_since_ms: u64,
    /// When an unfinished request's first byte came (`NO_REQUEST`: none).
    request_started_ms: u64,
    /// When the oldest reply it has not read arrived (`NO_REQUEST`: none).
    write_started_ms: u64,
    closed: Rc<Cell<bool>>,
    next_request_id: u64,
    /// Replies the server sent, not yet read (a slow reader lets them pile up).
    inbox: VecDeque<(u64, Reply)>,
    /// Requests sent and not answered: what each was.
    in_flight: BTreeMap<u64, Command>,
    /// Leases this client holds (id, token).
    leases: Vec<(TaskId, LeaseToken)>,
}

impl Client {
    /// A new connection (closed until admitted), keeping the request ids going.
    fn fresh(next_request_id: u64) -> Client {
        Client {
            connected: false,
            holds: 0,
            idle_since_ms: 0,
            request_started_ms: NO_REQUEST,
            write_started_ms: NO_REQUEST,
            closed: Rc::new(Cell::new(true)),
            next_request_id,
            inbox: VecDeque::new(),
            in_flight: BTreeMap::new(),
            leases: Vec::new(),
        }
    }
}

/// Connection slots: fewer than clients, so admission and pruning happen.
const CONNECTIONS_MAX: usize = 5;
const POLICY: Policy = Policy {
    request_deadline_ms: 10_000,
    idle_timeout_ms: 60_000,
    prune_above_percent: 90,
    connections_max: CONNECTIONS_MAX,
};

/// What clients were shown, checked after every restart.
#[derive(Default)]
struct Shown {
    /// Tasks a reply showed to exist (enqueued, leased, read), with the
    /// latest time the engine had seen when it was first shown: a task may
    /// be purged, legitimately, once it has been finished for its queue's
    /// retention, which cannot be sooner than [`RETENTION_MS`] after that.
    exists: BTreeMap<TaskId, u64>,
    /// Tasks a reply showed completed.
    completed: BTreeMap<TaskId, ()>,
    /// Tasks a client asked to delete (`DeleteTask`): they may be gone
    /// whether or not the reply was shown.
    deleted: BTreeMap<TaskId, ()>,
}

/// The queues' retention (the default: the simulator never configures it).
const RETENTION_MS: u64 = 3_600_000;

struct Sim {
    options: Options,
    rng: Rng,
    storage: SimStorage,
    config: EngineConfig,
    wall_ms: u64,
    /// The latest `wall_ms` so far (the engine's clock never goes back).
    time_max_ms: u64,
    server: Option<Server>,
    clients: Vec<Client>,
    shown: Shown,
    known_ids: Vec<TaskId>,
    trace: std::collections::hash_map::DefaultHasher,
    report: Report,
    step: u64,
    /// The log's final batch: `(segment, offset)` where it starts. A bit flip
    /// there is indistinguishable from a write torn by a crash, and recovery
    /// drops it as one (docs/durability.md, "What recovery does with
    /// damage"): a documented limit, so the simulator flips bits only
    /// before it.
    final_batch_at: Option<(u64, usize)>,
}

/// Runs one simulation.
pub fn run(options: Options) -> Result<Report, Failure> {
    let mut sim = Sim {
        rng: Rng(options.seed),
        storage: SimStorage::default(),
        config: EngineConfig::default(),
        // Far from 0, so that clock jumps backwards stay positive.
        wall_ms: 1_000_000_000,
        time_max_ms: 1_000_000_000,
        server: None,
        clients: (0..CLIENTS_COUNT).map(|_| Client::fresh(0)).collect(),
        shown: Shown::default(),
        known_ids: Vec::new(),
        trace: Default::default(),
        report: Report::default(),
        step: 0,
        final_batch_at: None,
        options,
    };
    let result = sim.run();
    match result {
        Ok(()) => {
            sim.report.trace_hash = sim.trace.finish();
            sim.report.steps = sim.step;
            Ok(sim.report)
        }
        Err(message) => Err(Failure { options: sim.options.clone(), step: sim.step, message }),
    }
}

impl Sim {
    fn run(&mut self) -> Result<(), String> {
        if !self.start()? {
            return Ok(());
        }
        while self.step < self.options.steps {
            self.step += 1;
            self.trace.write_u64(self.step);
            let roll = self.rng.below(1000);
            if std::env::var_os("SIM_DEBUG").is_some() {
                let durable = self.server.as_ref().map(|s| (s.durable_lsn, s.effects.buffer.last_lsn()));
                eprintln!("step {} roll {roll} durable/appended {durable:?}", self.step);
            }
            match roll {
                0..=329 => self.client_sends(),
                330..=529 => self.worker_runs()?,
                530..=669 => self.log_writer_runs()?,
                670..=769 => self.reactor_releases(),
                770..=859 => self.client_reads(),
                860..=909 => self.clock_moves(),
                910..=949 => self.client_connects()?,
                950..=954 => self.client_leaves(),
                955..=964 => self.client_trickles(),
                965..=979 => self.sweep()?,
                980..=984 => self.disk_fails_next_sync(),
                985..=986 => self.bit_flips(),
                _ => {
                    if !self.crash_and_restart()? {
                        return Ok(());
                    }
                }
            }
            if self.server.as_ref().is_some_and(|server| server.failed) && !self.crash_and_restart()? {
                return Ok(());
            }
            if let Some(server) = &self.server {
                server.executor.engine.check_invariants().map_err(|e| format!("engine invariant: {e}"))?;
            }
        }
        Ok(())
    }

    /// Starts the server on the simulated disk, as `server::durability::recover`
    /// does without a checkpoint. `false`: it refused a damaged log.
    fn start(&mut self) -> Result<bool, String> {
        let mut salts = Rng(self.rng.next());
        let opened = Log::open(self.storage.clone(), SEGMENT_BYTES, Box::new(move || salts.next()));
        let (mut log, recovered) = match opened {
            Ok(opened) => opened,
            Err(error) if self.report.bit_flips > 0 => {
                // A flipped bit in a durable record: refusing to start is the
                // right answer (nothing is served from a damaged history).
                self.trace.write(error.to_string().as_bytes());
                self.report.refused_damaged_log = true;
                return Ok(false);
            }
            Err(error) => return Err(format!("the log failed to open after a crash alone: {error}")),
        };
        let (engine, clock_ms) =
            replay(&self.config, None, recovered.records, |_| {}).map_err(|e| format!("replay: {e:?}"))?;
        let engine = match engine {
            Some(engine) => engine,
            None => {
                let seed = self.rng.next();
                log.append(&[encode_entry(0, Entry::Seed(seed))]).map_err(|e| format!("seed record: {e}"))?;
                Engine::new(EngineConfig { seed, ..self.config.clone() })
            }
        };
        engine.check_invariants().map_err(|e| format!("engine invariant after recovery: {e}"))?;
        self.check_shown(&engine)?;
        let next_lsn = log.next_lsn();
        self.report.records_max_lsn = self.report.records_max_lsn.max(next_lsn - 1);
        self.trace.write_u64(next_lsn);
        self.server = Some(Server {
            executor: Executor::new(engine, clock_ms),
            effects: SimEffects { buffer: LogBuffer::new(next_lsn), sent: Vec::new() },
            log,
            durable_lsn: next_lsn - 1,
            outbox: Outbox::default(),
            queue: VecDeque::new(),
            failed: false,
        });
        Ok(true)
    }

    /// Everything a client was shown must have survived.
    fn check_shown(&self, engine: &Engine) -> Result<(), String> {
        for (&id, &shown_at_ms) in &self.shown.exists {
            let Some(task) = engine.task(id) else {
                if self.shown.deleted.contains_key(&id) {
                    continue;
                }
                if self.time_max_ms.saturating_sub(shown_at_ms) >= RETENTION_MS {
                    continue; // may have been finished and purged since
                }
                return Err(format!("task {id} was shown to a client, and is gone after a restart"));
            };
            if self.shown.completed.contains_key(&id) && task.state != TaskState::Completed {
                return Err(format!("task {id} was acknowledged completed, and is {:?} after a restart", task.state));
            }
        }
        Ok(())
    }

    fn crash_and_restart(&mut self) -> Result<bool, String> {
        self.report.crashes += 1;
        self.server = None;
        // Unsynced pages survive or not, page by page (a torn write).
        let mut coin = Rng(self.rng.next());
        {
            let mut disk = self.storage.disk();
            disk.crash(|_, _| coin.chance(50));
            disk.syncs_until_failure = None;
        }
        // Every connection breaks.
        for client in &mut self.clients {
            client.closed.set(true);
            *client = Client::fresh(client.next_request_id);
        }
        self.trace.write_u64(0xC4A5);
        self.start()
    }

    fn client_sends(&mut self) {
        let Some(server) = &mut self.server else { return };
        let client_index = self.rng.below(CLIENTS_COUNT as u64) as usize;
        if !self.clients[client_index].connected {
            return;
        }
        // Pipelining: a few requests at once; an unfinished one is finished.
        let count = 1 + self.rng.below(3);
        let now_ms = self.time_max_ms;
        let client = &mut self.clients[client_index];
        client.request_started_ms = NO_REQUEST;
        if client.holds == 0 {
            client.idle_since_ms = now_ms;
        }
        client.holds += count as u32;
        for _ in 0..count {
            let client = &mut self.clients[client_index];
            let command = next_command(&mut self.rng, client, &self.known_ids);
            if let Command::DeleteTask { id } = command {
                self.shown.deleted.insert(id, ());
            }
            let client = &mut self.clients[client_index];
            client.next_request_id += 1;
            let request_id = client.next_request_id;
            client.in_flight.insert(request_id, command.clone());
            let to = To { client: client_index, request_id, closed: client.closed.clone() };
            self.trace.write_u64(request_id);
            self.trace.write(format!("{command:?}").as_bytes());
            // Odd clients speak the binary protocol: their requests are
            // logged as received, the others' commands encoded for the log.
            let received = (client_index % 2 == 1).then(|| received(&command)).flatten();
            server.queue.push_back((command, received, to));
            self.report.requests += 1;
        }
    }

    fn worker_runs(&mut self) -> Result<(), String> {
        let Some(server) = &mut self.server else { return Ok(()) };
        let now = server.executor.advance_clock(self.wall_ms);
        let mut may_ready = false;
        let batch = 1 + self.rng.below(8);
        for _ in 0..batch {
            let Some((command, received, to)) = server.queue.pop_front() else { break };
            may_ready |= server.executor.execute(&mut server.effects, command, received, to, now, true);
        }
        server.executor.after_batch(&mut server.effects, now, false, may_ready);
        for (to, reply, lsn) in server.effects.sent.drain(..) {
            server.outbox.hold(lsn, (to, reply));
        }
        Ok(())
    }

    fn log_writer_runs(&mut self) -> Result<(), String> {
        let Some(server) = &mut self.server else { return Ok(()) };
        if server.effects.buffer.is_empty() || server.failed {
            return Ok(());
        }
        let mut batch = Vec::new();
        let lsns = server.effects.buffer.take_batch(&mut batch);
        let end_before = newest_segment_end(&self.storage);
        let result = server.log.append(&batch);
        let end_after = newest_segment_end(&self.storage);
        self.final_batch_at = match (end_before, end_after) {
            (Some((before, offset)), Some((after, _))) if before == after => Some((after, offset)),
            (_, Some((after, _))) => Some((after, crate::wal::format::SEGMENT_HEADER_BYTES)),
            _ => None,
        };
        match result {
            Ok(written) => {
                if written != lsns {
                    return Err(format!("the log numbered a batch {written:?}, the buffer {lsns:?}"));
                }
                server.durable_lsn = written.end - 1;
                self.trace.write_u64(server.durable_lsn);
            }
            Err(error) => {
                // Fail-stop: nothing more is acknowledged; the server stops.
                self.trace.write(error.to_string().as_bytes());
                self.report.sync_failures += 1;
                server.failed = true;
            }
        }
        Ok(())
    }

    fn reactor_releases(&mut self) {
        let Some(server) = &mut self.server else { return };
        if server.failed {
            return;
        }
        let watermark = match self.options.plant {
            Some(Plant::ReleaseOneRecordEarly) => server.durable_lsn + 1,
            None => server.durable_lsn,
        };
        let clients = &mut self.clients;
        let shown = &mut self.shown;
        let known = &mut self.known_ids;
        let trace = &mut self.trace;
        let report = &mut self.report;
        let now_ms = self.time_max_ms;
        server.outbox.release(watermark, |(to, reply)| {
            if to.closed.get() {
                return; // the connection is gone: nobody to send to
            }
            let client = &mut clients[to.client];
            client.holds -= 1;
            if client.holds == 0 {
                client.idle_since_ms = now_ms;
            }
            if client.inbox.is_empty() {
                client.write_started_ms = now_ms;
            }
            trace.write_u64(to.request_id);
            trace.write(format!("{reply:?}").as_bytes());
            report.replies += 1;
            note_shown(&reply, now_ms, shown, known);
            clients[to.client].inbox.push_back((to.request_id, reply));
        });
    }

    fn client_reads(&mut self) {
        let client = &mut self.clients[self.rng.below(CLIENTS_COUNT as u64) as usize];
        let count = self.rng.below(4);
        for _ in 0..count {
            let Some((request_id, reply)) = client.inbox.pop_front() else { break };
            if client.inbox.is_empty() {
                client.write_started_ms = NO_REQUEST;
            }
            let command = client.in_flight.remove(&request_id);
            match (command, reply) {
                (_, Reply::Leased(tasks)) => client.leases.extend(tasks.iter().map(|t| (t.id, t.lease))),
                (Some(Command::Complete { id, .. } | Command::Fail { id, .. }), _) => {
                    client.leases.retain(|&(held, _)| held != id)
                }
                _ => {}
            }
        }
    }

    fn clock_moves(&mut self) {
        self.wall_ms = match self.rng.below(20) {
            // A jump back (an NTP step): the executor's clock must not follow.
            0 => self.wall_ms.saturating_sub(self.rng.below(5_000)),
            // A jump forward: leases expire, delays end.
            1 => self.wall_ms + self.rng.below(120_000),
            _ => self.wall_ms + self.rng.below(50),
        };
        self.time_max_ms = self.time_max_ms.max(self.wall_ms);
        self.trace.write_u64(self.wall_ms);
    }

    /// Closes client `index`'s connection: replies still owed to it are
    /// dropped, and the executor drops its held long polls.
    fn close(&mut self, index: usize) {
        let client = &mut self.clients[index];
        client.closed.set(true);
        *client = Client::fresh(client.next_request_id);
        self.trace.write_u64(0xD15C + index as u64);
    }

    /// A client hangs up.
    fn client_leaves(&mut self) {
        let index = self.rng.below(CLIENTS_COUNT as u64) as usize;
        if self.clients[index].connected {
            self.close(index);
        }
    }

    /// A client connects: an accept past the threshold first prunes the
    /// longest-idle connections (never a busy one), then admission decides
    /// (`core::connections`, as `server::conn_timers::Registry::admit`).
    fn client_connects(&mut self) -> Result<(), String> {
        let index = self.rng.below(CLIENTS_COUNT as u64) as usize;
        if self.clients[index].connected || self.server.is_none() {
            return Ok(());
        }
        let open = self.clients.iter().filter(|c| c.connected).count();
        let count = prune_count(&POLICY, open + 1, 0);
        let mut candidates: Vec<(u64, usize)> = (0..CLIENTS_COUNT)
            .filter(|&i| self.clients[i].connected && self.clients[i].holds == 0)
            .map(|i| (self.clients[i].idle_since_ms, i))
            .collect();
        keep_longest_idle(&mut candidates, count);
        candidates.sort_unstable();
        for (_, victim) in candidates {
            self.close(victim);
        }
        let open = self.clients.iter().filter(|c| c.connected).count();
        if !admits(&POLICY, open, 0) {
            self.trace.write_u64(0xF0_11);
            return Ok(());
        }
        let now_ms = self.time_max_ms;
        let client = &mut self.clients[index];
        client.connected = true;
        client.closed = Rc::new(Cell::new(false));
        client.idle_since_ms = now_ms;
        let open = self.clients.iter().filter(|c| c.connected).count();
        if open > CONNECTIONS_MAX {
            return Err(format!("{open} connections open past --max-connections {CONNECTIONS_MAX}"));
        }
        Ok(())
    }

    /// A client starts a request and does not finish it (a slow sender).
    fn client_trickles(&mut self) {
        let now_ms = self.time_max_ms;
        let client = &mut self.clients[self.rng.below(CLIENTS_COUNT as u64) as usize];
        if client.connected && client.request_started_ms == NO_REQUEST {
            client.request_started_ms = now_ms;
        }
    }

    /// The reactor's sweep: closes connections past the request deadline,
    /// the idle timeout or the write deadline. A busy one (a request at the
    /// worker, or a reply held for the watermark) is closed only for not
    /// reading its replies.
    fn sweep(&mut self) -> Result<(), String> {
        let now_ms = self.time_max_ms;
        for index in 0..CLIENTS_COUNT {
            let client = &self.clients[index];
            if !client.connected {
                continue;
            }
            let verdict = verdict(&POLICY, now_ms, client.holds, client.request_started_ms, client.idle_since_ms);
            if verdict != Verdict::Keep && client.holds > 0 {
                return Err(format!("the sweep closed a busy connection ({verdict:?})"));
            }
            if verdict != Verdict::Keep || write_late(&POLICY, now_ms, client.write_started_ms) {
                self.close(index);
            }
        }
        Ok(())
    }

    fn disk_fails_next_sync(&mut self) {
        if self.rng.chance(20) {
            self.storage.disk().syncs_until_failure = Some(self.rng.below(3) as usize);
        }
    }

    /// Latent corruption: a bit of a segment flips (the checksums must catch
    /// it at the next start, or it is in bytes no record uses).
    fn bit_flips(&mut self) {
        if !self.rng.chance(10) {
            return;
        }
        let mut disk = self.storage.disk();
        let ids = disk.segment_ids();
        let Some(id) = self.rng.pick(&ids) else { return };
        let length = disk.bytes(id).len();
        if length == 0 {
            return;
        }
        let offset = self.rng.below(length as u64) as usize;
        if self.final_batch_at.is_some_and(|(segment, start)| segment == id && offset >= start) {
            return;
        }
        disk.flip_bit(id, offset, (self.rng.below(8)) as u8);
        self.report.bit_flips += 1;
        self.trace.write_u64(0xB17F);
    }
}

/// The newest segment and where its last whole batch ends (where the next
/// batch goes), as recovery would scan it.
fn newest_segment_end(storage: &SimStorage) -> Option<(u64, usize)> {
    let disk = storage.disk();
    let id = *disk.segment_ids().last()?;
    let bytes = disk.bytes(id);
    let end = crate::wal::format::scan_segment_prefix(&bytes).map_or(0, |(scan, _)| scan.end_offset);
    Some((id, end))
}

/// `command` as a binary client would send it (its request body).
fn received(command: &Command) -> Option<Received> {
    let request = crate::binary::command_to_request(command).ok()?;
    let mut body = Vec::new();
    request.encode_body(&mut body).ok()?;
    Some(Received { body: Bytes::from(body) })
}

/// Records what a released reply showed a client.
fn note_shown(reply: &Reply, now_ms: u64, shown: &mut Shown, known: &mut Vec<TaskId>) {
    let mut ids = Vec::new();
    match reply {
        Reply::Enqueued(enqueued) => ids.push(enqueued.id),
        Reply::EnqueuedBatch(items) => ids.extend(items.iter().map(|e| e.id)),
        Reply::Leased(tasks) => ids.extend(tasks.iter().map(|t| t.id)),
        Reply::Task(view) => ids.push(view.id),
        Reply::TaskState { id, state } => {
            ids.push(*id);
            if *state == TaskState::Completed {
                shown.completed.insert(*id, ());
            }
        }
        Reply::CompletedBatch(items) => {
            for (id, result) in items {
                if result == &Ok(TaskState::Completed) {
                    ids.push(*id);
                    shown.completed.insert(*id, ());
                }
            }
        }
        _ => {}
    }
    for id in ids {
        if let std::collections::btree_map::Entry::Vacant(entry) = shown.exists.entry(id) {
            entry.insert(now_ms);
            known.push(id);
        }
    }
}

/// A client's next request: mostly the work a producer and a consumer do,
/// with reads, cancels and odd requests mixed in.
fn next_command(rng: &mut Rng, client: &mut Client, known: &[TaskId]) -> Command {
    let queue = |rng: &mut Rng| QUEUES[rng.below(QUEUES.len() as u64) as usize].to_string();
    let task = |rng: &mut Rng| NewTask {
        payload: Bytes::from(rng.next().to_le_bytes().to_vec()),
        priority: rng.below(3) as i32,
        group: rng.chance(20).then(|| format!("g{}", rng.below(3))),
        delay_ms: if rng.chance(10) { rng.below(2_000) } else { 0 },
        max_attempts: rng.chance(30).then(|| 1 + rng.below(3) as u32),
        depends_on: match rng.pick(known) {
            Some(id) if rng.chance(15) => vec![DepRef::Task(id)],
            _ => Vec::new(),
        },
        key: rng.chance(10).then(|| format!("k{}", rng.below(20))),
    };
    match rng.below(100) {
        0..=29 => Command::Enqueue { queue: queue(rng), task: task(rng) },
        30..=34 => {
            let tasks = (0..1 + rng.below(4)).map(|_| task(rng)).collect();
            Command::EnqueueBatch { queue: queue(rng), tasks }
        }
        35..=59 => Command::Dequeue {
            queues: vec![queue(rng)],
            max: 1 + rng.below(3) as usize,
            lease_ms: rng.chance(30).then(|| 1_000 + rng.below(60_000)),
            wait_ms: if rng.chance(20) { 1 + rng.below(5_000) } else { 0 },
        },
        60..=79 if !client.leases.is_empty() => {
            let (id, lease) = client.leases[rng.below(client.leases.len() as u64) as usize];
            match rng.below(10) {
                0..=5 => Command::Complete { id, lease, result: rng.chance(50).then(|| Bytes::from_static(b"ok")) },
                6..=7 => Command::Fail { id, lease, error: "sim".into(), retry: rng.chance(70) },
                8 => Command::Extend { id, lease, lease_ms: 1_000 + rng.below(30_000) },
                _ => Command::CompleteBatch { items: vec![CompleteItem { id, lease, result: None }] },
            }
        }
        80..=89 => match rng.pick(known) {
            Some(id) => Command::GetTask { id },
            None => Command::ListQueues,
        },
        90..=91 => match rng.pick(known) {
            Some(id) => Command::Cancel { id },
            None => Command::GetQueue { queue: queue(rng) },
        },
        // Dead-letter handling: retry or delete a task (mostly not dead:
        // conflicts are answers too), and list a queue's dead tasks.
        92 => match rng.pick(known) {
            Some(id) if rng.chance(70) => Command::RetryTask { id },
            Some(id) => Command::DeleteTask { id },
            None => Command::GetQueue { queue: queue(rng) },
        },
        93..=94 => Command::GetQueue { queue: queue(rng) },
        95 => Command::ListTasks {
            queue: queue(rng),
            state: if rng.chance(70) { TaskState::Dead } else { TaskState::Ready },
            after: rng.pick(known).filter(|_| rng.chance(50)).unwrap_or(0),
            limit: 1 + rng.below(10) as usize,
        },
        // A lease that was never handed out, or an id that does not exist.
        96..=97 => Command::Complete { id: 1 + rng.below(1_000), lease: rng.next(), result: None },
        _ => Command::ListQueues,
    }
}
