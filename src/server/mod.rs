//! The network server: io_uring reactors, a bounded request queue, pinned workers.
//!
//! ```text
//!  reactor threads (tokio-uring, one ring each,        worker threads (pinned)
//!  SO_REUSEPORT listeners each: HTTP, binary; pinned)
//!  accept -> read -> http::take_requests   --Job--> [ArrayQueue] --pop--> execute(engine)
//!                    binary::take_frames
//!          <- write <- render_reply <----oneshot reply (wakes the reactor)----'
//! ```
//!
//! - Both protocols map requests to the same `Command`s and render the same
//!   `Reply`s (`crate::command`); only the bytes differ. HTTP answers a
//!   connection's requests in order (`reactor.rs`); the binary protocol
//!   answers each as soon as it is ready, tagged with its request id
//!   (`binary_conn.rs`).
//!
//! - Reactors parse and answer; they never touch the engine. When the queue is
//!   full they answer `503 overloaded` at once: overload degrades, it does not
//!   queue without bound.
//! - Workers own engine state (see `worker.rs`); a reply wakes the reactor task
//!   that waits for it, so neither side polls.
//! - Stop: SIGINT/SIGTERM -> listeners and idle connections are shut down for
//!   reading (pending io_uring reads and accepts complete, none is dropped in
//!   flight), connections finish the requests they hold, reactors exit, then the
//!   workers drain the queue and exit.
//! - Reload: SIGHUP -> the TLS certificate and key (`tls.rs`) and the token
//!   file (`--tokens`, `tokens.rs`) are re-read; connections are untouched.

mod activity_log;
mod binary_conn;
mod buffers;
pub use buffers::READ_BYTES_MAX_DEFAULT;
mod checkpoint;
mod conn_timers;
mod datadir;
mod durability;
mod http_conn;
mod lease_key;
mod liveness;
mod os;
mod outbox;
mod reactor;
mod ring;
pub use ring::BinaryIo;
mod stats;
mod tiering;
mod tls;
pub use tls::TlsFiles;
mod tokens;
mod worker;

pub use checkpoint::CHECKPOINT_INTERVAL_MS_DEFAULT;
pub use durability::{DurabilityMode, INTERVAL_MS_MAX, WAL_SEGMENT_BYTES};
pub use liveness::STALL_TIMEOUT_MS_DEFAULT;
pub use os::parse_cpu_list;
pub use tiering::{parse_bytes, MEMORY_LIMIT_BYTES_DEFAULT};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::engine::{Engine, EngineConfig};
use crate::wal::log::WalError;
use crate::{binary, http};
use durability::Journal;
use worker::{EngineState, Job};

/// Everything `tqx serve` can be told. Defaults suit this machine kind (2 cores).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub http_addr: SocketAddr,
    /// Where the binary protocol listens (`--binary`; docs/wire.md).
    pub binary_addr: SocketAddr,
    /// Where durable state lives: the write-ahead log in `wal/`.
    pub data_dir: PathBuf,
    /// What an acknowledged reply means (`--durability`).
    pub durability: DurabilityMode,
    /// Test hook (`--debug-wal-sync-gate`): a FIFO each WAL sync reads a byte
    /// from first, so a test can hold syncs open (docs/durability.md).
    pub wal_sync_gate: Option<PathBuf>,
    /// Payload bytes kept in memory; past it, payloads live in RocksDB only
    /// and are read back when needed (`--memory-limit`).
    pub memory_limit_bytes: u64,
    /// Time between checkpoints into RocksDB while anything changes.
    pub checkpoint_interval_ms: u64,
    /// `--accept-data-loss`: start on a damaged log, keeping it up to the first
    /// damage and logging what was dropped (docs/durability.md).
    pub accept_data_loss: bool,
    /// Test hook (`--debug-fail-checkpoint-writes-after N`): the checkpoint
    /// store's write fails after N successful ones.
    pub fail_checkpoint_writes_after: Option<u64>,
    /// Threads running an io_uring reactor each (accept, parse, reply).
    pub reactor_threads: usize,
    /// Threads executing commands against the engine.
    pub worker_threads: usize,
    /// Pin reactor and worker threads to cores (`sched_setaffinity`).
    pub pin_threads: bool,
    /// `--cpus`: the CPUs threads are pinned to, in turn (reactors first,
    /// then workers). `None`: the CPUs the process may run on (its affinity
    /// mask, so `taskset` and cgroup cpusets are respected).
    pub cpus: Option<Vec<usize>>,
    /// With `pin_threads`, worker i shares reactor (i mod reactors)'s core
    /// instead of taking the next core (`--pin-workers-with-reactors`).
    pub pin_workers_with_reactors: bool,
    /// Commands waiting for a worker; when full, requests get `503 overloaded`.
    pub request_queue_capacity: usize,
    /// Largest request body accepted (`413` past it), and largest binary
    /// frame body (`payload_too_large` and close past it).
    pub max_body_bytes: usize,
    /// Registered receive buffers per reactor ring (0: none); see `reactor.rs`.
    pub fixed_buffers_count: usize,
    /// Client connections held at once (both protocols, all reactors); past
    /// it a new connection gets `503 overloaded` and is closed.
    pub max_connections: usize,
    /// The largest read a connection asks for; reads start at 512 bytes and
    /// grow toward it only while they come back full (`buffers.rs`).
    pub read_bytes_max: usize,
    /// Back-pressure (docs/connections.md): encoded reply bytes one connection
    /// may hold unread before it stops taking requests (`--connection-reply-bytes-max`).
    pub connection_reply_bytes_max: usize,
    /// Requests one connection may have taken and not yet answered
    /// (`--connection-requests-in-flight-max`).
    pub connection_requests_in_flight_max: usize,
    /// Reply bytes waiting on all connections together before none takes a
    /// new request (`--reply-bytes-max`).
    pub reply_bytes_max: usize,
    /// Long polls one connection may have waiting (`--connection-long-polls-max`).
    pub connection_long_polls_max: usize,
    /// Make a new lease key when `lease.key` is missing or damaged in a data
    /// directory that holds state (`--regenerate-lease-key`; `lease_key.rs`).
    pub regenerate_lease_key: bool,
    /// Test hook (`--debug-cold-read-gate`): a FIFO each cold payload read
    /// reads a byte from first, so a test can hold one open (`tiering.rs`).
    pub cold_read_gate: Option<PathBuf>,
    /// Test hook (`--debug-panic-on-queue`): a worker panics on an enqueue into
    /// this queue (`liveness.rs`), to show a bug ends the process.
    pub debug_panic_queue: Option<String>,
    /// How long a server thread with work may make no progress before
    /// `/healthz` and ping report not ready (`--stall-timeout-ms`; `liveness.rs`).
    pub stall_timeout_ms: u64,
    /// Once a request's first byte has arrived, the time its last must arrive
    /// within (0: no deadline); see `conn_timers.rs`.
    pub request_deadline_ms: u64,
    /// A connection with nothing started or in flight this long is closed (0: never).
    pub idle_timeout_ms: u64,
    /// Past this share of `max_connections`, an accept closes the longest-idle
    /// connections (100: never).
    pub prune_above_percent: u8,
    /// `--binary-io`: which reactor serves the binary protocol (experimental; `ring/`).
    pub binary_io: BinaryIo,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: TLS on both listeners (`tls.rs`).
    pub tls: Option<TlsFiles>,
    /// `--insecure`: listen on a non-loopback address without TLS and without
    /// tokens, on purpose.
    pub insecure: bool,
    /// `--tokens`: the token file (docs/security.md). `None`: no
    /// authentication, every request is allowed.
    pub tokens_file: Option<PathBuf>,
    /// Count and time requests for `/metrics` (`--no-metrics` turns it off,
    /// to measure what it costs; docs/metrics.md).
    pub metrics: bool,
    /// Test hook (`--debug-activity-log-interval-ms`): one interval for every
    /// kind of activity log line instead of `crate::limits`' (docs/logs.md).
    pub activity_log_interval_ms: Option<u64>,
}

impl ServeConfig {
    /// Whether requests must carry a token (`--tokens`): what the safe-by-default
    /// check of a non-loopback listener asks.
    pub fn tokens_configured(&self) -> bool {
        self.tokens_file.is_some()
    }
}

#[derive(Debug)]
pub enum ServeError {
    /// io_uring cannot be set up here (old kernel, or blocked by seccomp or
    /// `kernel.io_uring_disabled`).
    IoUringUnavailable(std::io::Error),
    Bind(SocketAddr, std::io::Error),
    Io(std::io::Error),
    /// The log in this directory cannot be opened or is corrupt: the server
    /// refuses to start rather than serve a shorter history.
    Wal(String, WalError),
    /// A record that checksums correctly does not replay (a bug or a log
    /// written by an incompatible version).
    Replay {
        lsn: u64,
        reason: String,
    },
    /// A write or sync of the log failed while serving; the server stopped
    /// (fail-stop: it never retries a failed `fdatasync`).
    Storage(Arc<str>),
    /// The RocksDB checkpoint store in this directory cannot be opened or read.
    Store(String, String),
    /// The data directory is in use by another server, or cannot be used.
    DataDir(datadir::DataDirError),
    /// A checkpoint into RocksDB failed while serving; the server stopped
    /// (the log below the last good checkpoint is intact).
    Checkpoint(Arc<str>),
    /// The configuration breaks a relation between limits (`src/limits.rs`):
    /// the message names both.
    Limits(String),
    /// `--cpus` names a CPU this process may not run on.
    Cpus(String),
    /// The lease key cannot be read or made (`lease_key.rs`); the message says
    /// which file and what to do.
    LeaseKey(String),
    /// A TLS file cannot be read or used; the message names it.
    Tls(String),
    /// A listener on a non-loopback address without TLS and without tokens
    /// (safe by default); the message says how to enable them.
    Insecure(String),
    /// The token file (`--tokens`) cannot be read or is not valid; the
    /// message names the file and the line.
    Tokens(String),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::IoUringUnavailable(e) => write!(
                f,
                "io_uring is not available on this system ({e}). TaskQueueX needs Linux 5.11 or newer with io_uring \
                 enabled: check `sysctl kernel.io_uring_disabled` (must be 0), and in a container allow the \
                 io_uring_setup, io_uring_enter and io_uring_register system calls (for Docker: a seccomp profile \
                 that permits them, or --security-opt seccomp=unconfined)"
            ),
            ServeError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServeError::Io(e) => write!(f, "{e}"),
            ServeError::Wal(dir, e) => write!(f, "cannot recover the write-ahead log in {dir}: {e}"),
            ServeError::Store(dir, e) => write!(f, "cannot open the checkpoint store in {dir}: {e}"),
            ServeError::Limits(message) | ServeError::Cpus(message) => f.write_str(message),
            ServeError::LeaseKey(message)
            | ServeError::Tls(message)
            | ServeError::Insecure(message)
            | ServeError::Tokens(message) => f.write_str(message),
            ServeError::Replay { lsn, reason } => write!(f, "cannot replay write-ahead log record {lsn}: {reason}"),
            ServeError::DataDir(error) => write!(f, "{error}"),
            ServeError::Checkpoint(reason) => write!(
                f,
                "stopped because {reason}. The write-ahead log is intact; fix the disk and restart to recover"
            ),
            ServeError::Storage(reason) => write!(
                f,
                "stopped because the write-ahead log failed: {reason}. Nothing after the failure was acknowledged; \
                 fix the disk and restart to recover"
            ),
        }
    }
}

impl std::error::Error for ServeError {}

/// Parks idle workers and wakes one when a job arrives, without a lock on the
/// busy path: a bit per sleeping worker.
pub(crate) struct Sleepers {
    threads: Vec<OnceLock<Thread>>,
    sleeping: AtomicU64,
}

impl Sleepers {
    fn new(count: usize) -> Sleepers {
        assert!(count <= 64, "one bit per worker");
        Sleepers { threads: (0..count).map(|_| OnceLock::new()).collect(), sleeping: AtomicU64::new(0) }
    }

    /// Sleeps up to `timeout` unless `still_idle` turns false after announcing
    /// the sleep (so a job pushed in between is never missed: its pusher sees our
    /// bit and unparks us, and an unpark before the park makes the park return).
    pub(crate) fn sleep(&self, index: usize, timeout: Duration, still_idle: impl Fn() -> bool) {
        let _ = self.threads[index].set(thread::current());
        let bit = 1u64 << index;
        self.sleeping.fetch_or(bit, Ordering::SeqCst);
        if still_idle() {
            thread::park_timeout(timeout);
        }
        self.sleeping.fetch_and(!bit, Ordering::SeqCst);
    }

    /// Wakes one sleeping worker, if any.
    pub(crate) fn wake_one(&self) {
        let mut sleeping = self.sleeping.load(Ordering::SeqCst);
        while sleeping != 0 {
            let bit = sleeping & sleeping.wrapping_neg();
            let before = self.sleeping.fetch_and(!bit, Ordering::SeqCst);
            if before & bit != 0 {
                if let Some(thread) = self.threads[bit.trailing_zeros() as usize].get() {
                    thread.unpark();
                }
                return;
            }
            sleeping = self.sleeping.load(Ordering::SeqCst);
        }
    }

    fn wake_all(&self) {
        for thread in self.threads.iter().filter_map(OnceLock::get) {
            thread.unpark();
        }
    }
}

/// What reactors and workers share.
pub(crate) struct Shared {
    pub(crate) jobs: ArrayQueue<Box<Job>>,
    pub(crate) sleepers: Sleepers,
    pub(crate) engine: Mutex<EngineState>,
    pub(crate) limits: http::Limits,
    pub(crate) binary_limits: binary::Limits,
    /// Set once recovery has rebuilt the engine: until then `/healthz` answers
    /// 503 and commands get `503 recovering`.
    pub(crate) recovered: AtomicBool,
    /// Why the write-ahead log stopped, if it did (the server then stops).
    pub(crate) storage_failure: Mutex<Option<Arc<str>>>,
    /// Set by the stop signal: reactors stop accepting and close connections
    /// once their requests are answered.
    pub(crate) stopping: AtomicBool,
    /// Set once every reactor has exited: workers drain the queue and exit.
    /// (While only `stopping`, workers still execute jobs but hold no long poll.)
    pub(crate) workers_stop: AtomicBool,
    /// Listener and connection sockets, so the stop signal can shut them down.
    pub(crate) sockets: Mutex<HashSet<RawFd>>,
    /// Client connections open now, on every reactor and both protocols.
    pub(crate) connections_open: AtomicUsize,
    /// `--max-connections` (lowered at start if the open-file limit is lower).
    pub(crate) connections_max: usize,
    /// `--read-bytes-max`: the largest read a connection asks for (buffers.rs).
    pub(crate) read_bytes_max: usize,
    /// Back-pressure and overload limits (`ServeConfig`'s fields of the same names).
    pub(crate) connection_reply_bytes_max: usize,
    pub(crate) connection_requests_in_flight_max: usize,
    pub(crate) reply_bytes_max: usize,
    pub(crate) connection_long_polls_max: usize,
    /// Encoded reply bytes waiting for their peers on every connection now.
    pub(crate) reply_bytes_pending: AtomicUsize,
    /// Whether every thread is alive and progressing (`liveness.rs`).
    pub(crate) liveness: Arc<liveness::Liveness>,
    /// Every connection's idle time, for the request deadline, the idle
    /// timeout and pruning (`conn_timers.rs`).
    pub(crate) conns: conn_timers::Registry,
    /// The durable watermark the log writer advances and replies wait for
    /// (`outbox.rs`); never advanced in `memory` mode, where replies carry LSN 0.
    pub(crate) watermark: Arc<crate::wal::watermark::Watermark>,
    /// When the engine next needs the executor, in wall-clock ms (`u64::MAX`:
    /// never), as the latest batch found it (`Shared::timer_due`).
    pub(crate) timer_due_ms: AtomicU64,
    /// TLS on both listeners, if configured (`tls.rs`); reloaded on SIGHUP.
    pub(crate) tls: Option<tls::Tls>,
    /// The token table (`--tokens`), reloaded on SIGHUP; `None`: no
    /// authentication.
    pub(crate) tokens: Option<tokens::TokenStore>,
    /// What `/metrics`, `/v1/stats` and the binary `stats` show (`stats.rs`).
    pub(crate) metrics: stats::ServerMetrics,
    /// What the activity log reports besides those counters (`activity_log.rs`).
    pub(crate) activity: Arc<activity_log::ActivityCounters>,
}

/// The engine lock held by a thread that is not an executor; see [`Shared::lock_engine`].
pub(crate) struct EngineGuard<'a> {
    guard: Option<std::sync::MutexGuard<'a, EngineState>>,
    shared: &'a Shared,
}

impl std::ops::Deref for EngineGuard<'_> {
    type Target = EngineState;
    fn deref(&self) -> &EngineState {
        self.guard.as_deref().unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl std::ops::DerefMut for EngineGuard<'_> {
    fn deref_mut(&mut self) -> &mut EngineState {
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.shared.queue_left_behind() {
            worker::run_pending(self.shared);
        }
    }
}

/// What `/healthz` and the binary ping say.
pub(crate) enum Health {
    Ready,
    /// Replaying the log (or not yet checked): 503, retry shortly.
    Recovering,
    /// A thread is stuck or gone (`liveness.rs`): 503 until it progresses.
    Stalled,
}

impl Shared {
    /// Before recovery: an empty engine in `memory` mode, replaced by the
    /// recovered one before any request is executed (`recovered` stays false
    /// until then). `sockets`: the listeners, shut down at stop.
    pub(crate) fn new(config: &ServeConfig, connections_max: usize, sockets: HashSet<RawFd>) -> Shared {
        Shared {
            jobs: ArrayQueue::new(config.request_queue_capacity.max(1)),
            sleepers: Sleepers::new(config.worker_threads),
            // Replaced by the recovered engine before any worker starts.
            engine: Mutex::new(EngineState::new(Engine::new(EngineConfig::default()), Journal::memory(u64::MAX), 0)),
            limits: http::Limits { body_bytes_max: config.max_body_bytes, ..http::Limits::default() },
            binary_limits: binary::Limits { frame_body_bytes_max: config.max_body_bytes },
            recovered: AtomicBool::new(false),
            storage_failure: Mutex::new(None),
            stopping: AtomicBool::new(false),
            workers_stop: AtomicBool::new(false),
            sockets: Mutex::new(sockets),
            connections_open: AtomicUsize::new(0),
            connections_max,
            read_bytes_max: config.read_bytes_max,
            connection_reply_bytes_max: config.connection_reply_bytes_max.max(1),
            connection_requests_in_flight_max: config.connection_requests_in_flight_max.max(1),
            reply_bytes_max: config.reply_bytes_max.max(1),
            connection_long_polls_max: config.connection_long_polls_max,
            reply_bytes_pending: AtomicUsize::new(0),
            liveness: liveness::Liveness::new(
                config.stall_timeout_ms,
                match config.durability {
                    DurabilityMode::Interval { ms } => ms,
                    _ => 0,
                },
            ),
            conns: conn_timers::Registry::new(
                conn_timers::Policy {
                    request_deadline_ms: config.request_deadline_ms,
                    idle_timeout_ms: config.idle_timeout_ms,
                    prune_above_percent: config.prune_above_percent,
                    connections_max,
                },
                conn_timers::Clock::monotonic(),
            ),
            watermark: Arc::default(),
            timer_due_ms: AtomicU64::new(u64::MAX),
            tls: None,
            tokens: None,
            metrics: stats::ServerMetrics::new(config.metrics, config.durability),
            activity: Arc::default(),
        }
    }

    /// Queues a job for execution; gives it back if the queue is full. The
    /// caller then runs `worker::run_pending` (on a tokio-uring reactor,
    /// `worker::execute_soon`, once per pass), which executes it unless the
    /// lock's holder does.
    pub(crate) fn submit(&self, job: Box<Job>) -> Result<(), Box<Job>> {
        self.jobs.push(job)
    }

    /// Takes the engine lock, for threads other than executors (the
    /// checkpointer): on release, the jobs queued meanwhile are executed
    /// (their reactors' `run_pending` found the lock held and left them to
    /// the holder).
    pub(crate) fn lock_engine(&self) -> EngineGuard<'_> {
        EngineGuard { guard: Some(crate::sync::lock(&self.engine)), shared: self }
    }

    /// After letting go of the engine lock: whether jobs wait that a thread
    /// may have queued while it was held. The fence pairs with the one
    /// `worker::run_pending` issues between its push and its `try_lock`: of a
    /// pusher that found the lock held and the holder that let go, at least
    /// one sees the other's write, so no job is left with nobody to run it.
    pub(crate) fn queue_left_behind(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        !self.jobs.is_empty()
    }

    /// Records when the engine next needs the executor (`None`: never), as
    /// found by the latest batch; wakes a timer thread if that is earlier
    /// than the time it was last told (it may be asleep past it).
    pub(crate) fn timer_due(&self, wake_ms: Option<u64>) {
        let due_ms = wake_ms.unwrap_or(u64::MAX);
        if due_ms < self.timer_due_ms.swap(due_ms, Ordering::SeqCst) {
            self.sleepers.wake_one();
        }
    }

    /// Whether the server-wide reply budget (`--reply-bytes-max`) is spent:
    /// then no connection takes a new request until replies drain.
    pub(crate) fn reply_budget_spent(&self) -> bool {
        self.reply_bytes_pending.load(Ordering::Relaxed) >= self.reply_bytes_max
    }

    /// Adjusts the server-wide count of reply bytes waiting by `after - before`.
    pub(crate) fn account_reply_bytes(&self, before: usize, after: usize) {
        if after > before {
            self.reply_bytes_pending.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.reply_bytes_pending.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// A connection past `--max-connections` is refused (`protocol`:
    /// `metrics::Protocol` as an index): counted for `/metrics`, and its peer
    /// offered as the activity log's example.
    pub(crate) fn refused(&self, protocol: usize, peer: impl FnOnce() -> Option<SocketAddr>) {
        self.conns.refused_example.offer(|| activity_log::describe_peer(protocol, peer()));
        self.conns.metrics.refused[protocol].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn track_socket(&self, fd: RawFd) {
        crate::sync::lock(&self.sockets).insert(fd);
    }

    pub(crate) fn untrack_socket(&self, fd: RawFd) {
        crate::sync::lock(&self.sockets).remove(&fd);
    }

    pub(crate) fn health(&self) -> Health {
        if !self.recovered.load(Ordering::Acquire) || !self.liveness.sampled() {
            Health::Recovering
        } else if self.liveness.ready() {
            Health::Ready
        } else {
            Health::Stalled
        }
    }

    fn begin_stop(&self) {
        // Threads now exit on purpose: the watchdog stops judging them.
        self.liveness.stop();
        self.stopping.store(true, Ordering::SeqCst);
        // Workers answer the long polls they hold, so those connections can end.
        self.sleepers.wake_all();
        for &fd in crate::sync::lock(&self.sockets).iter() {
            os::shutdown_read(fd);
        }
    }
}

/// Descriptors kept for everything but client connections: listeners, the
/// write-ahead log, RocksDB's files (its `max_open_files` is bounded in
/// `store`), io_uring, eventfds, signal handling, and headroom. Under a low
/// limit (1,024 is common) half of it is kept instead.
const FD_RESERVE_COUNT: u64 = 1024;

/// Raises the open-file limit as far as allowed, and returns how many
/// connections the server will hold: `--max-connections`, or fewer (with a
/// warning) if the limit cannot cover them plus [`FD_RESERVE_COUNT`].
fn connections_max(asked: usize) -> usize {
    let open_files = match os::raise_open_files_limit() {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "could not read the open-file limit; keeping --max-connections as given");
            return asked;
        }
    };
    let reserve = FD_RESERVE_COUNT.min(open_files / 2);
    let allowed = usize::try_from(open_files.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1);
    if allowed < asked {
        tracing::warn!(
            open_files,
            max_connections = asked,
            lowered_to = allowed,
            "the open-file limit (ulimit -n, hard) is too low for --max-connections; connections past {allowed} are refused"
        );
        return allowed;
    }
    tracing::info!(open_files, max_connections = asked, "connection limit");
    asked
}

/// The CPUs threads are pinned to: `asked` (`--cpus`), each of which must be
/// one this process may run on, or else every CPU it may run on. (Pinning to
/// cores 0, 1, ... regardless would put two servers on one machine on the
/// same cores, and a server under `taskset` outside its set.)
fn placement(asked: Option<&[usize]>) -> Result<Vec<usize>, ServeError> {
    let allowed = os::allowed_cpus().unwrap_or_else(|error| {
        let count = thread::available_parallelism().map_or(1, |n| n.get());
        tracing::warn!(%error, "could not read this process's CPU affinity; assuming CPUs 0 to {}", count - 1);
        (0..count).collect()
    });
    let Some(asked) = asked else { return Ok(allowed) };
    let outside: Vec<usize> = asked.iter().copied().filter(|cpu| !allowed.contains(cpu)).collect();
    if !outside.is_empty() || asked.is_empty() {
        return Err(ServeError::Cpus(format!(
            "--cpus names CPUs {outside:?} this process may not run on; its affinity (taskset, cgroup cpuset) \
             allows {allowed:?}"
        )));
    }
    Ok(asked.to_vec())
}

/// Safe by default (docs/security.md): a listener bound to an address other
/// than loopback needs TLS or tokens, or `--insecure`. Loopback stays open so
/// that the two-command start works.
fn check_exposure(config: &ServeConfig) -> Result<(), String> {
    if config.tls.is_some() || config.tokens_configured() || config.insecure {
        return Ok(());
    }
    let exposed: Vec<String> = [("--http", config.http_addr), ("--binary", config.binary_addr)]
        .iter()
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .map(|(flag, addr)| format!("{flag} {addr}"))
        .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {} without TLS or tokens: anyone who can reach it could read, take and delete \
         every task. Enable TLS with --tls-cert PEM --tls-key PEM (and --tls-client-ca PEM for client \
         certificates), or tokens with --tokens FILE, or listen on 127.0.0.1; pass --insecure to listen \
         there without either on purpose (docs/security.md)",
        exposed.join(" and ")
    ))
}

/// Runs the server until SIGINT or SIGTERM, then stops accepting, finishes the
/// requests in flight and returns. SIGHUP reloads the TLS certificate and key.
pub fn serve(config: ServeConfig) -> Result<(), ServeError> {
    assert!(config.reactor_threads >= 1 && config.worker_threads >= 1 && config.worker_threads <= 64);
    // Before anything is opened or bound: a body limit the log cannot hold is refused.
    crate::limits::check_body_bytes_max(config.max_body_bytes).map_err(ServeError::Limits)?;
    // Safe by default: nothing is bound where others can reach it without TLS
    // or tokens, unless asked on purpose.
    check_exposure(&config).map_err(ServeError::Insecure)?;
    let tls = match &config.tls {
        Some(files) => {
            if config.binary_io == BinaryIo::IoUring {
                return Err(ServeError::Tls(
                    "TLS is not supported by the experimental --binary-io io-uring reactor; use --binary-io tokio-uring"
                        .to_string(),
                ));
            }
            Some(tls::Tls::load(files.clone()).map_err(ServeError::Tls)?)
        }
        None => None,
    };
    // Then: one server per data directory, owner-only files (datadir.rs).
    let _data_dir_lock = datadir::claim(&config.data_dir).map_err(ServeError::DataDir)?;
    // Before anything listens: a token file that does not parse refuses the start.
    let client_certificates = config.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
    let tokens = config
        .tokens_file
        .as_deref()
        .map(|path| tokens::TokenStore::load(path, client_certificates))
        .transpose()
        .map_err(ServeError::Tokens)?;
    let connections_max = connections_max(config.max_connections);
    if let Some(queue) = config.debug_panic_queue.clone() {
        liveness::set_debug_panic_queue(queue);
    }
    // Before any thread exists, so every thread inherits the mask and only the
    // signal thread below receives SIGINT and SIGTERM.
    os::block_stop_signals().map_err(ServeError::Io)?;

    // SO_REUSEPORT would let this server silently join the port of another
    // running server (splitting clients between two engines). A plain bind first
    // fails with "address in use" if anything listens there, and resolves port 0.
    let bound = os::probe_exclusive(config.http_addr).map_err(|e| ServeError::Bind(config.http_addr, e))?;
    let mut listeners = Vec::with_capacity(config.reactor_threads);
    for _ in 0..config.reactor_threads {
        listeners.push(os::listen_reuseport(bound).map_err(|e| ServeError::Bind(bound, e))?);
    }
    // The binary protocol the same way: one SO_REUSEPORT listener per reactor,
    // so each reactor accepts its share of binary connections on its own ring.
    let binary_bound = os::probe_exclusive(config.binary_addr).map_err(|e| ServeError::Bind(config.binary_addr, e))?;
    let mut binary_listeners = Vec::with_capacity(config.reactor_threads);
    for _ in 0..config.reactor_threads {
        binary_listeners.push(os::listen_reuseport(binary_bound).map_err(|e| ServeError::Bind(binary_bound, e))?);
    }

    let sockets = listeners.iter().chain(&binary_listeners).map(|l| l.as_raw_fd()).collect();
    let mut shared = Shared::new(&config, connections_max, sockets);
    shared.tls = tls;
    shared.tokens = tokens;
    let shared = Arc::new(shared);
    // From here on, rate-limited lines about what the server does (recovery
    // progress first); stopped, it writes what is pending (docs/logs.md).
    let activity_log =
        activity_log::ActivityLog::start(shared.clone(), activity_log::Intervals::new(config.activity_log_interval_ms))
            .map_err(ServeError::Io)?;

    let cpus = placement(config.cpus.as_deref())?;
    let core_of = |i: usize| config.pin_threads.then(|| cpus[i % cpus.len()]);

    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut reactors = Vec::new();
    for (i, (listener, binary_listener)) in listeners.into_iter().zip(binary_listeners).enumerate() {
        let shared = shared.clone();
        let started = started_tx.clone();
        let core = core_of(i);
        let config_fixed_buffers = config.fixed_buffers_count;
        let binary_io = (config.binary_io, i);
        let handle = thread::Builder::new()
            .name(format!("tqx-reactor-{i}"))
            .spawn(move || {
                reactor::run(listener, binary_listener, shared, core, config_fixed_buffers, binary_io, started)
            })
            .map_err(ServeError::Io)?;
        reactors.push(handle);
    }
    drop(started_tx);
    for _ in 0..reactors.len() {
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                shared.begin_stop();
                return Err(ServeError::IoUringUnavailable(error));
            }
            Err(_) => return Err(ServeError::Io(std::io::Error::other("a reactor thread died while starting"))),
        }
    }

    // The one startup line an operator reads first (issue 19): what runs,
    // where its data is (absolute, whatever the flag said), what a reply
    // promises, where it listens and on which cores.
    let data_dir = std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        data = %data_dir.display(),
        durability = %config.durability,
        http = %bound,
        binary = %binary_bound,
        tls = config.tls.is_some(),
        tokens = config.tokens_configured(),
        reactors = config.reactor_threads,
        workers = config.worker_threads,
        cpus = ?config.pin_threads.then_some(&cpus),
        "listening"
    );
    // The contract with scripts and tests: one line per protocol on stdout,
    // flushed. They come before recovery: `/healthz` answers 503 (and a binary
    // ping `ready: false`) until recovery is done.
    println!("listening http={bound}");
    println!("listening binary={binary_bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let failure_shared = shared.clone();
    let on_failure = Box::new(move |error: &crate::wal::committer::CommitError| {
        *crate::sync::lock(&failure_shared.storage_failure) = Some(error.0.clone());
        os::signal_stop();
    });
    // The key is read (or made) before the log and the store exist, so no lease
    // is ever signed with a key a crash could lose.
    let lease_key = match config.durability {
        DurabilityMode::Memory => lease_key::random_key().map_err(|e| e.to_string()),
        _ => lease_key::load_or_create(&config.data_dir, config.regenerate_lease_key),
    };
    let recovered = match lease_key.map_err(ServeError::LeaseKey).and_then(|lease_key| {
        durability::recover(
            EngineConfig { lease_key, ..EngineConfig::default() },
            &config.data_dir,
            config.durability,
            config.wal_sync_gate.as_deref(),
            config.memory_limit_bytes,
            config.accept_data_loss,
            durability::LogWriterHooks {
                on_failure,
                watermark: shared.watermark.clone(),
                wal_metrics: shared.metrics.wal.clone(),
                activity: shared.activity.clone(),
            },
        )
    }) {
        Ok(recovered) => recovered,
        Err(error) => {
            shared.begin_stop();
            for handle in reactors {
                let _ = handle.join();
            }
            return Err(error);
        }
    };
    let mut journal = recovered.journal;
    journal.task_events = shared.metrics.enabled.then(|| shared.metrics.task_events.clone());
    if let Some(tiering) = journal.tiering.as_mut() {
        tiering.start_reader(config.cold_read_gate.as_deref(), shared.liveness.clone()).map_err(ServeError::Io)?;
    }
    let checkpoint_signals = recovered.checkpointing.as_ref().map(|_| {
        // One pending nudge is enough; more would say nothing new.
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        journal.nudge = Some(sender.clone());
        (sender, receiver)
    });
    *crate::sync::lock(&shared.engine) = EngineState::new(recovered.engine, journal, recovered.clock_ms);
    shared.recovered.store(true, Ordering::Release);
    let checkpointer = match (recovered.checkpointing, checkpoint_signals) {
        (Some((store, committer)), Some((stop, stop_rx))) => {
            if let Some(writes) = config.fail_checkpoint_writes_after {
                store.fail_writes_after(writes);
            }
            shared.liveness.observe_wal(&committer);
            let shared = shared.clone();
            let interval = Duration::from_millis(config.checkpoint_interval_ms);
            let handle = thread::Builder::new()
                .name("tqx-checkpoint".into())
                .spawn(move || checkpoint::run(shared, store, committer, stop_rx, interval))
                .map_err(ServeError::Io)?;
            Some((stop, handle))
        }
        _ => None,
    };

    let mut workers = Vec::new();
    for i in 0..config.worker_threads {
        let shared = shared.clone();
        // A worker on a reactor's core is woken by that reactor (and wakes
        // it back) without an inter-processor interrupt or an idle core's
        // exit from sleep, the larger part of a lone request's cost on this
        // virtual machine (docs/benchmarks/changelog.md); on its own core it
        // runs in parallel with the reactors, which pays when nothing else
        // needs that core.
        let core = if config.pin_workers_with_reactors {
            core_of(i % config.reactor_threads)
        } else {
            core_of(config.reactor_threads + i)
        };
        let handle = thread::Builder::new()
            .name(format!("tqx-worker-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    if let Err(error) = os::pin_current_thread(core) {
                        tracing::warn!(%error, core, "could not pin worker thread");
                    }
                }
                worker::run(shared, i)
            })
            .map_err(ServeError::Io)?;
        workers.push(handle);
    }

    let watchdog = shared.liveness.start_watchdog().map_err(ServeError::Io)?;
    tracing::info!(durability = %config.durability, "ready");

    // SIGHUP reloads what can be reloaded without dropping connections (one
    // hook each; a file that does not load is logged and the old state kept);
    // SIGINT and SIGTERM stop.
    let mut reload_hooks: Vec<Box<dyn Fn()>> = Vec::new();
    if shared.tls.is_some() {
        let shared = shared.clone();
        reload_hooks.push(Box::new(move || {
            if let Some(tls) = &shared.tls {
                tls.reload();
            }
        }));
    }
    if shared.tokens.is_some() {
        let shared = shared.clone();
        reload_hooks.push(Box::new(move || {
            if let Some(tokens) = &shared.tokens {
                tokens.reload();
            }
        }));
    }
    let signal = loop {
        match os::wait_for_signal() {
            libc::SIGHUP => {
                tracing::info!("SIGHUP: reloading");
                reload_hooks.iter().for_each(|reload| reload());
            }
            signal => break signal,
        }
    };
    tracing::info!(signal, "stopping: no new connections; finishing requests in flight");
    shared.begin_stop();
    let _ = watchdog.join();
    for handle in reactors {
        let _ = handle.join();
    }
    shared.workers_stop.store(true, Ordering::SeqCst);
    shared.sleepers.wake_all();
    for handle in workers {
        let _ = handle.join();
    }
    // A last checkpoint, so the next start replays little; then the log stops.
    let mut checkpoint_failure = None;
    if let Some((stop, handle)) = checkpointer {
        let _ = stop.send(durability::CheckpointSignal::Stop);
        checkpoint_failure = handle.join().ok().and_then(Result::err);
    }
    crate::sync::lock(&shared.engine).journal.stop();
    if let Some(reason) = checkpoint_failure {
        return Err(ServeError::Checkpoint(reason));
    }
    // The lines still pending (the last checkpoint's among them), before the last one.
    drop(activity_log);
    if let Some(reason) = crate::sync::lock(&shared.storage_failure).take() {
        return Err(ServeError::Storage(reason));
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_exposure;
    use crate::cli::serve::test_config;

    #[test]
    fn only_loopback_listeners_start_without_tls_tokens_or_insecure() {
        assert!(check_exposure(&test_config(&[])).is_ok(), "the defaults are loopback");
        assert!(check_exposure(&test_config(&["--http", "[::1]:7700", "--binary", "127.0.0.2:7701"])).is_ok());
        for exposed in [["--http", "0.0.0.0:7700"], ["--binary", "[::]:7701"], ["--http", "10.0.0.5:7700"]] {
            let message = check_exposure(&test_config(&exposed)).expect_err(exposed[1]);
            assert!(message.contains(&format!("{} {}", exposed[0], exposed[1])), "{message}");
            assert!(message.contains("--insecure") && message.contains("--tls-cert"), "{message}");
            let insecure = test_config(&[exposed[0], exposed[1], "--insecure"]);
            assert!(check_exposure(&insecure).is_ok());
            let tokens = test_config(&[exposed[0], exposed[1], "--tokens", "tokens.txt"]);
            assert!(check_exposure(&tokens).is_ok());
            let tls = test_config(&[exposed[0], exposed[1], "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
            assert!(check_exposure(&tls).is_ok());
        }
    }
}
