//! `tqx`: the TaskQueueX command line.
//!
//! `tqx serve` (the default when no subcommand is given) runs the server; the
//! client subcommands (`enqueue`, `dequeue`, `complete`, ...) talk to a running
//! server over its HTTP/JSON API (docs/http-api.md) and print its JSON replies;
//! `tqx demo` shows the engine at work on a simulated clock.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::value::RawValue;
use taskqueuex::client::{self, ClientError, ServerUrl};
use taskqueuex::engine::{DepRef, Discipline, Engine, EngineConfig, EngineError, NewTask, QueueConfigPatch, TaskState};
use taskqueuex::server::{self, DurabilityMode, ServeConfig};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before the first allocation (its `malloc_conf`;
/// `tikv-jemalloc-sys` prefixes the symbol). `_RJEM_MALLOC_CONF` in the
/// environment overrides them.
///
/// `background_thread:true`, as Redis does (`jemalloc-bg-thread yes`): without
/// it jemalloc returns freed pages to the OS only while the program allocates,
/// so a server that has just absorbed a burst (a growing task slab leaves its
/// old buffers behind, a checkpoint frees its copy) and then sits idle keeps
/// them resident indefinitely. Measured: 1M queued tasks, `memory` mode, 15 s
/// after the preload: 142 -> 109 bytes per task beyond the payload
/// (docs/benchmarks/changelog.md).
#[used]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 23] = b"background_thread:true\0";

const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";
/// How much longer than its `wait_ms` a dequeue waits for the reply.
const DEQUEUE_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "tqx",
    version,
    about = "TaskQueueX: a durable, low-latency task queue",
    long_about = "TaskQueueX: a durable, low-latency task queue.\n\n\
        Without a subcommand, runs the server (`tqx serve`) with the options below. \
        The client subcommands talk to a running server over HTTP (--server URL, or \
        the TQX_SERVER environment variable; default http://127.0.0.1:7700), or with \
        --binary over the binary protocol (--server HOST:PORT; default 127.0.0.1:7701), \
        print its JSON reply, and exit 0 on success, 1 when the server answers an error, \
        2 when it cannot be reached.",
    args_conflicts_with_subcommands = true,
    subcommand_precedence_over_arg = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default subcommand); Ctrl-C or SIGTERM stops it cleanly.
    Serve(ServeArgs),
    /// Add a task to a queue (created with defaults if it does not exist).
    Enqueue(EnqueueArgs),
    /// Lease tasks from one or more queues, taken in the order given.
    Dequeue(DequeueArgs),
    /// Complete a leased task.
    Complete(CompleteArgs),
    /// Fail a leased task: it is retried with backoff, or dead once out of attempts.
    Fail(FailArgs),
    /// Extend a task's lease.
    Extend(ExtendArgs),
    /// Cancel a task (and, transitively, the tasks that depend on it).
    Cancel(TaskArgs),
    /// Show a task.
    Task(TaskArgs),
    /// List the queues with their settings and counts.
    Queues(ServerOpt),
    /// Show one queue's settings and counts.
    Queue(QueueArgs),
    /// Run a scripted tour of the queue engine on a simulated clock and print each step.
    Demo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on for HTTP (IP:PORT; port 0 picks a free port, printed as `listening http=IP:PORT`).
    #[arg(long = "http", value_name = "ADDR", default_value = "127.0.0.1:7700")]
    http: SocketAddr,
    /// Address to listen on for the binary protocol (IP:PORT, printed as `listening binary=IP:PORT`)
    /// [default: 127.0.0.1:7701].
    #[arg(long = "binary", value_name = "ADDR")]
    binary: Option<SocketAddr>,
    /// Directory for durable state (created if missing).
    #[arg(long = "data", value_name = "DIR", default_value = "./tqx-data")]
    data: PathBuf,
    /// What an acknowledged reply means: `sync` (after fdatasync of its record),
    /// `interval:<ms>` (at once; synced at least every <ms>), `memory` (no log).
    #[arg(long, value_name = "MODE", default_value = "sync")]
    durability: DurabilityMode,
    /// Payload bytes kept in memory (e.g. 4GiB, 512MiB); past it, payloads of checkpointed tasks live
    /// only in RocksDB and are read back when leased or looked up. With `--durability memory` (no store)
    /// an enqueue past it is refused: 503 `capacity_exceeded`, retryable.
    #[arg(long, value_name = "BYTES", default_value = "4GiB", value_parser = server::parse_bytes)]
    memory_limit: u64,
    /// Time between checkpoints of the state into RocksDB (after which the log below them is deleted).
    #[arg(long, value_name = "MS", default_value_t = server::CHECKPOINT_INTERVAL_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    checkpoint_interval_ms: u64,
    /// Test hook: read one byte from this FIFO before each WAL sync (holds syncs open).
    #[arg(long, value_name = "FIFO", hide = true)]
    debug_wal_sync_gate: Option<PathBuf>,
    /// Start even if the write-ahead log is damaged in a way a crash cannot cause (cut short, a segment
    /// missing, damage before valid batches): keep the log up to the first damage, drop the rest, and log
    /// exactly what was dropped. Without it such a log refuses to start (docs/durability.md).
    #[arg(long)]
    accept_data_loss: bool,
    /// Test hook: the checkpoint store's write fails after N successful ones.
    #[arg(long, value_name = "N", hide = true)]
    debug_fail_checkpoint_writes_after: Option<u64>,
    /// Make a new lease key when DATA/lease.key is missing or damaged although the directory holds a log
    /// or checkpoint (the server refuses to start otherwise). Every outstanding lease is then refused;
    /// its task is delivered again once the lease expires.
    #[arg(long)]
    regenerate_lease_key: bool,
    /// Test hook: read one byte from this FIFO before each read of a cold payload (holds reads open).
    #[arg(long, value_name = "FIFO", hide = true)]
    debug_cold_read_gate: Option<PathBuf>,
    /// Test hook: a worker panics when it executes an enqueue into this queue.
    #[arg(long, value_name = "QUEUE", hide = true)]
    debug_panic_on_queue: Option<String>,
    /// A server thread (reactor, worker, log writer, checkpointer: 6 times this) that has work but makes
    /// no progress for this long, or has died, makes /healthz answer 503 {"status":"stalled"} and a binary
    /// ping `ready: false` until it progresses again.
    #[arg(long, value_name = "MS", default_value_t = server::STALL_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    stall_timeout_ms: u64,
    /// Reactor threads, each an io_uring loop that accepts, parses and replies (half the cores, at least 1).
    #[arg(long, value_name = "N", default_value_t = default_reactors(),
          value_parser = clap::value_parser!(u32).range(1..=256))]
    reactors: u32,
    /// Worker threads executing commands against the engine (1 to 64).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// Pin reactor and worker threads to cores (default: on when the machine has 2 or more cores).
    #[arg(long, overrides_with = "no_pin")]
    pin: bool,
    /// Do not pin threads to cores.
    #[arg(long, overrides_with = "pin")]
    no_pin: bool,
    /// When pinning, put each worker on a reactor's core instead of a core of its own: a request's two
    /// hand-offs then wake a thread on the same core. Less CPU per request where the other cores are busy
    /// (a client or other services on the same machine).
    #[arg(long)]
    pin_workers_with_reactors: bool,
    /// Requests waiting for a worker; past it the server answers 503 overloaded.
    #[arg(long, value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    queue_capacity: u32,
    /// Largest request body accepted, in bytes (413 past it); also the largest binary frame body. At most
    /// 3,905,488: larger bodies could decode to commands the write-ahead log cannot hold (docs/limits.md).
    #[arg(long, value_name = "N", default_value_t = 1 << 20, value_parser = max_body_bytes)]
    max_body_bytes: u64,
    /// Registered (fixed) receive buffers per reactor ring, 16 KiB each, for HTTP reads; 0 reads
    /// into ordinary buffers. Connections beyond the pool read into ordinary ones.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    fixed_buffers: u16,
    /// Client connections held at once, both protocols together; past it a new connection gets one
    /// `503 overloaded` refusal and is closed. The server raises its open-file limit to the hard
    /// limit at start, and lowers this (with a warning) if that limit cannot cover it.
    #[arg(long, value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Largest read a connection asks for, in bytes. Reads start at 512 bytes and double toward it
    /// only while they come back full, so an idle connection pins little memory.
    #[arg(long, value_name = "BYTES", default_value_t = server::READ_BYTES_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(512..=(16 << 20)))]
    read_bytes_max: u32,
    /// Back-pressure: encoded reply bytes one connection may hold waiting for its client to read them;
    /// at it the connection takes no new request (and stops reading) until they drain.
    #[arg(long, value_name = "BYTES", default_value_t = taskqueuex::limits::CONNECTION_REPLY_BYTES_MAX_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 32)))]
    connection_reply_bytes_max: u64,
    /// Back-pressure: requests one connection may have taken and not yet answered; at it the
    /// connection takes no new request (and stops reading) until replies go out.
    #[arg(long, value_name = "N", default_value_t = taskqueuex::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    connection_requests_in_flight_max: u32,
    /// Back-pressure: reply bytes waiting for their clients on all connections together; at it no
    /// connection takes a new request until they drain.
    #[arg(long, value_name = "BYTES", default_value_t = taskqueuex::limits::REPLY_BYTES_MAX_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 40)))]
    reply_bytes_max: u64,
    /// Long polls (dequeues with wait_ms) one connection may have waiting; past it a long poll is
    /// answered at once with 503 `capacity_exceeded` (retryable).
    #[arg(long, value_name = "N", default_value_t = taskqueuex::limits::CONNECTION_LONG_POLLS_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connection_long_polls_max: u32,
    /// Once the first byte of an HTTP request (head and body) or a binary frame has arrived, the time
    /// the whole of it must arrive within, in milliseconds (time spent answering earlier requests is not
    /// counted); past it the connection is closed. 0: no deadline.
    #[arg(long, value_name = "MS", default_value_t = taskqueuex::limits::REQUEST_DEADLINE_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=taskqueuex::limits::CONNECTION_TIMEOUT_MS_MAX))]
    request_deadline_ms: u64,
    /// A connection with no request started and nothing in flight (a long poll counts as in flight) for
    /// this many milliseconds is closed. 0: never.
    #[arg(long, value_name = "MS", default_value_t = taskqueuex::limits::IDLE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=taskqueuex::limits::CONNECTION_TIMEOUT_MS_MAX))]
    idle_timeout_ms: u64,
    /// When open connections pass this percentage of --max-connections, each accept first closes the
    /// longest-idle connections (never one with a request in flight or a long poll). 100: never.
    #[arg(long, value_name = "PERCENT", default_value_t = taskqueuex::limits::PRUNE_ABOVE_PERCENT_DEFAULT,
          value_parser = clap::value_parser!(u8).range(taskqueuex::limits::PRUNE_ABOVE_PERCENT_MIN as i64..=100))]
    prune_above_percent: u8,
    /// Log format on stderr: human-readable text, or JSON lines.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or directives such as
    /// `info,taskqueuex::server=debug`); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
}

#[derive(Args, Debug)]
struct ServerOpt {
    /// Server URL [env: TQX_SERVER] [default: http://127.0.0.1:7700]; with --binary, HOST:PORT
    /// [default: 127.0.0.1:7701].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Use the binary protocol (`tqx serve --binary`) instead of HTTP; the output is the same JSON.
    #[arg(long)]
    binary: bool,
}

#[derive(Args, Debug)]
struct EnqueueArgs {
    /// Queue name (A-Z a-z 0-9 _ - . :).
    queue: String,
    /// The task's payload as JSON, e.g. '{"to":"a@b.c"}'; text that is not JSON is sent as a JSON string.
    #[arg(allow_negative_numbers = true)]
    payload: String,
    /// Priority (higher first, in `priority` queues).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Group key (for round-robin queues and group concurrency limits).
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// Hold the task this long before it is ready.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// Attempts before the task is dead (default: the queue's).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Wait for this task to complete first (repeat, or separate ids with commas).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    depends_on: Vec<u64>,
    /// Idempotency key: enqueueing the same key again returns the original task.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
struct DequeueArgs {
    /// Queues to take from, in order (1 to 64).
    #[arg(required = true, value_name = "QUEUE")]
    queues: Vec<String>,
    /// Most tasks to lease (1 to 1000; server default 1).
    #[arg(long, value_name = "N")]
    max: Option<u32>,
    /// Lease length (default: each queue's).
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u64>,
    /// Wait up to this long for a task when none is ready (at most 60000).
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
struct CompleteArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// Result as JSON; text that is not JSON is sent as a JSON string.
    #[arg(long, value_name = "JSON", allow_negative_numbers = true)]
    result: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
struct FailArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// Error message, kept with the task.
    error: String,
    /// Do not retry: the task is dead at once.
    #[arg(long)]
    no_retry: bool,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
struct ExtendArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// New lease length, counted from now.
    lease_ms: u64,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
struct TaskArgs {
    /// Task id.
    id: u64,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
struct QueueArgs {
    /// Queue name.
    name: String,
    #[command(flatten)]
    server: ServerOpt,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn default_reactors() -> u32 {
    u32::try_from((cores() / 2).max(1)).unwrap_or(1)
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    if client_server_opt(&command).is_some_and(|server| server.binary) {
        return binary_call(command);
    }
    let call = match command {
        Command::Serve(args) => return serve(args),
        Command::Demo => {
            return match demo() {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("tqx demo: {error} ({})", error.code());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Enqueue(a) => enqueue_call(a),
        Command::Dequeue(a) => dequeue_call(a),
        Command::Complete(a) => {
            let body = CompleteBody { lease: a.lease.to_string(), result: a.result.as_deref().map(json_or_string) };
            task_call("complete", a.server, "POST", a.id, "/complete", to_body(&body))
        }
        Command::Fail(a) => {
            let body = FailBody { lease: a.lease.to_string(), error: a.error, retry: !a.no_retry };
            task_call("fail", a.server, "POST", a.id, "/fail", to_body(&body))
        }
        Command::Extend(a) => {
            let body = ExtendBody { lease: a.lease.to_string(), lease_ms: a.lease_ms };
            task_call("extend", a.server, "POST", a.id, "/extend", to_body(&body))
        }
        Command::Cancel(a) => task_call("cancel", a.server, "DELETE", a.id, "", None),
        Command::Task(a) => task_call("task", a.server, "GET", a.id, "", None),
        Command::Queues(s) => Call::get("queues", s, "/v1/queues".to_string()),
        Command::Queue(a) => {
            Call::get("queue", a.server, format!("/v1/queues/{}", client::encode_path_segment(&a.name)))
        }
    };
    call.run()
}

/// Makes a panic loud before the process ends. The release profile has
/// `panic = "abort"` (Cargo.toml): a bug on any thread ends the whole process,
/// so a supervisor restarts it and recovery replays the log, instead of a server
/// that accepts connections and answers nothing (issue 15, item 2). The hook runs
/// before the abort: it logs the panic through `tracing` (JSON logs included) with
/// the thread's name, then the default hook prints the message and location. It
/// also aborts itself, so the guarantee holds in a build without the profile.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(thread, panic = %info, "a bug: the process stops now; restart it and recovery replays the log");
        default_hook(info);
        std::process::abort();
    }));
}

/// `--binary`'s default port (next to HTTP's 7700).
const BINARY_PORT_DEFAULT: u16 = 7701;

/// `--max-body-bytes`: refused while the arguments are read, before anything
/// is created or bound, if the log could not hold every command a body that
/// large decodes to (the message names both limits; `serve` checks again).
fn max_body_bytes(text: &str) -> Result<u64, String> {
    let bytes: u64 = text.parse().map_err(|error| format!("{error}"))?;
    taskqueuex::limits::check_body_bytes_max(usize::try_from(bytes).unwrap_or(usize::MAX))?;
    Ok(bytes)
}

fn serve(args: ServeArgs) -> ExitCode {
    if let Err(message) = init_logging(args.log_format, &args.log_level) {
        eprintln!("tqx serve: {message}");
        return ExitCode::from(2);
    }
    if let Err(error) = std::fs::create_dir_all(&args.data) {
        eprintln!("tqx serve: cannot create the data directory {}: {error}", args.data.display());
        return ExitCode::FAILURE;
    }
    let log_json = args.log_format == LogFormat::Json;
    let pin_threads = if args.pin {
        true
    } else if args.no_pin {
        false
    } else {
        cores() >= 2
    };
    // Always 7701 unless given (the documented default, whatever `--http` says):
    // callers that start several servers pass `--binary 127.0.0.1:0` too.
    let binary_addr = args.binary.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], BINARY_PORT_DEFAULT)));
    let config = ServeConfig {
        http_addr: args.http,
        binary_addr,
        data_dir: args.data,
        durability: args.durability,
        wal_sync_gate: args.debug_wal_sync_gate,
        memory_limit_bytes: args.memory_limit,
        checkpoint_interval_ms: args.checkpoint_interval_ms,
        accept_data_loss: args.accept_data_loss,
        fail_checkpoint_writes_after: args.debug_fail_checkpoint_writes_after,
        reactor_threads: args.reactors as usize,
        worker_threads: args.workers as usize,
        max_connections: args.max_connections as usize,
        read_bytes_max: args.read_bytes_max as usize,
        connection_reply_bytes_max: usize::try_from(args.connection_reply_bytes_max).unwrap_or(usize::MAX),
        connection_requests_in_flight_max: args.connection_requests_in_flight_max as usize,
        reply_bytes_max: usize::try_from(args.reply_bytes_max).unwrap_or(usize::MAX),
        connection_long_polls_max: args.connection_long_polls_max as usize,
        request_deadline_ms: args.request_deadline_ms,
        idle_timeout_ms: args.idle_timeout_ms,
        prune_above_percent: args.prune_above_percent,
        pin_threads,
        pin_workers_with_reactors: args.pin_workers_with_reactors,
        request_queue_capacity: args.queue_capacity as usize,
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        fixed_buffers_count: args.fixed_buffers.into(),
        regenerate_lease_key: args.regenerate_lease_key,
        stall_timeout_ms: args.stall_timeout_ms,
        cold_read_gate: args.debug_cold_read_gate,
        debug_panic_queue: args.debug_panic_on_queue,
    };
    tracing::debug!(?config, "starting");
    match server::serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if log_json {
                // Also as a log line, for whoever collects the JSON logs.
                tracing::error!(%error, "server failed");
            }
            eprintln!("tqx serve: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries the `listening` line scripts wait for):
/// text by default (colored on a terminal), JSON lines with `--log-format json`.
fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| format!("invalid RUST_LOG {directives:?}: {e}"))?
        }
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// One HTTP call a client subcommand makes.
struct Call {
    name: &'static str,
    server: Option<String>,
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

#[derive(Serialize)]
struct EnqueueBody {
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Serialize)]
struct DequeueBody {
    queues: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
}

#[derive(Serialize)]
struct CompleteBody {
    lease: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct FailBody {
    lease: String,
    error: String,
    retry: bool,
}

#[derive(Serialize)]
struct ExtendBody {
    lease: String,
    lease_ms: u64,
}

/// `text` as a JSON value, kept byte for byte when it is JSON, else as a JSON string.
fn json_or_string(text: &str) -> Box<RawValue> {
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(raw) => raw,
        Err(_) => {
            let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string());
            // A serialized string is valid JSON; the default (`null`) is unreachable.
            RawValue::from_string(quoted).unwrap_or_default()
        }
    }
}

fn to_body(value: &impl Serialize) -> Option<Vec<u8>> {
    // Serializing these plain structs cannot fail (string keys, no maps).
    Some(serde_json::to_vec(value).unwrap_or_default())
}

fn enqueue_call(a: EnqueueArgs) -> Call {
    let body = EnqueueBody {
        payload: json_or_string(&a.payload),
        priority: a.priority,
        group: a.group,
        delay_ms: a.delay_ms,
        max_attempts: a.max_attempts,
        depends_on: a.depends_on.iter().map(u64::to_string).collect(),
        key: a.key,
    };
    Call {
        name: "enqueue",
        server: a.server.server,
        method: "POST",
        path: format!("/v1/queues/{}/tasks", client::encode_path_segment(&a.queue)),
        body: to_body(&body),
        timeout: client::REQUEST_TIMEOUT,
    }
}

fn dequeue_call(a: DequeueArgs) -> Call {
    // The server holds the request up to wait_ms; allow for that and then some.
    let timeout = Duration::from_millis(a.wait_ms.unwrap_or(0)).saturating_add(DEQUEUE_GRACE);
    let body = DequeueBody { queues: a.queues, max: a.max, lease_ms: a.lease_ms, wait_ms: a.wait_ms };
    Call {
        name: "dequeue",
        server: a.server.server,
        method: "POST",
        path: "/v1/dequeue".to_string(),
        body: to_body(&body),
        timeout,
    }
}

fn task_call(
    name: &'static str,
    server: ServerOpt,
    method: &'static str,
    id: u64,
    action: &str,
    body: Option<Vec<u8>>,
) -> Call {
    Call {
        name,
        server: server.server,
        method,
        path: format!("/v1/tasks/{id}{action}"),
        body,
        timeout: client::REQUEST_TIMEOUT,
    }
}

impl Call {
    fn get(name: &'static str, server: ServerOpt, path: String) -> Call {
        Call { name, server: server.server, method: "GET", path, body: None, timeout: client::REQUEST_TIMEOUT }
    }

    /// Sends the request and prints the reply: the JSON body on stdout and exit 0
    /// for 2xx; the body on stderr and exit 1 for an error reply; a message and
    /// exit 2 when the server cannot be reached or does not speak HTTP.
    fn run(self) -> ExitCode {
        let name = self.name;
        let server = self
            .server
            .or_else(|| std::env::var("TQX_SERVER").ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let url = match ServerUrl::parse(&server) {
            Ok(url) => url,
            Err(error) => {
                eprintln!("tqx {name}: {error}");
                return ExitCode::from(2);
            }
        };
        let response = match client::request_url(&url, self.method, &self.path, self.body.as_deref(), self.timeout) {
            Ok(response) => response,
            Err(error) => {
                let hint = if matches!(error, ClientError::BadResponse { .. }) {
                    " (is that a TaskQueueX server?)"
                } else {
                    ""
                };
                eprintln!("tqx {name}: {error}{hint}");
                return ExitCode::from(2);
            }
        };
        let body = client::pretty_json(&response.body)
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim_end().to_string());
        if response.is_success() {
            println!("{body}");
            ExitCode::SUCCESS
        } else {
            let retry = response.header("retry-after").map(|s| format!(", retry after {s} s")).unwrap_or_default();
            eprintln!("tqx {name}: the server answered {}{retry}:", response.status);
            eprintln!("{body}");
            ExitCode::FAILURE
        }
    }
}

/// The `--server` options of a client subcommand.
fn client_server_opt(command: &Command) -> Option<&ServerOpt> {
    match command {
        Command::Enqueue(a) => Some(&a.server),
        Command::Dequeue(a) => Some(&a.server),
        Command::Complete(a) => Some(&a.server),
        Command::Fail(a) => Some(&a.server),
        Command::Extend(a) => Some(&a.server),
        Command::Cancel(a) | Command::Task(a) => Some(&a.server),
        Command::Queues(server) => Some(server),
        Command::Queue(a) => Some(&a.server),
        Command::Serve(_) | Command::Demo => None,
    }
}

/// A client subcommand with `--binary`: the same call through tqx-client's
/// blocking API, and the same output and exit codes as over HTTP (the reply is
/// rendered as the HTTP API's JSON body; see `client::binary`). Payloads and
/// results are sent as the same bytes the HTTP path sends (`json_or_string`).
fn binary_call(command: Command) -> ExitCode {
    let Some(server) = client_server_opt(&command) else { return ExitCode::FAILURE };
    let name = match &command {
        Command::Enqueue(_) => "enqueue",
        Command::Dequeue(_) => "dequeue",
        Command::Complete(_) => "complete",
        Command::Fail(_) => "fail",
        Command::Extend(_) => "extend",
        Command::Cancel(_) => "cancel",
        Command::Task(_) => "task",
        Command::Queues(_) => "queues",
        Command::Queue(_) => "queue",
        Command::Serve(_) | Command::Demo => return ExitCode::FAILURE,
    };
    let addr = server
        .server
        .clone()
        .or_else(|| std::env::var("TQX_SERVER").ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| client::binary::DEFAULT_ADDR.to_string());
    let addr = match client::binary::parse_addr(&addr) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("tqx {name}: invalid server address: {message}");
            return ExitCode::from(2);
        }
    };
    // One attempt: a terminal user wants "unreachable" now, not after a backoff.
    let options = tqx_client::ClientOptions {
        connect_timeout_ms: client::CONNECT_TIMEOUT.as_millis() as u64,
        request_timeout_ms: client::REQUEST_TIMEOUT.as_millis() as u64,
        reconnect_attempts_max: 1,
        ..tqx_client::ClientOptions::default()
    };
    let connection = match tqx_client::blocking::Client::connect(&addr, options) {
        Ok(connection) => connection,
        Err(error) => return binary_failure(name, &error),
    };
    use client::binary as render;
    let reply = match command {
        Command::Enqueue(a) => {
            let task = tqx_client::TaskSpec {
                payload: Bytes::from(json_or_string(&a.payload).get().to_string()),
                priority: a.priority.unwrap_or(0),
                group: a.group,
                delay_ms: a.delay_ms.unwrap_or(0),
                max_attempts: a.max_attempts,
                depends_on: a.depends_on.into_iter().map(tqx_client::Dep::Task).collect(),
                key: a.key,
            };
            connection.enqueue(&a.queue, task).map(render::enqueued)
        }
        Command::Dequeue(a) => {
            // Past u16 the server refuses the count anyway (at most 1000).
            let max = a.max.map_or(1, |max| u16::try_from(max).unwrap_or(u16::MAX));
            connection.dequeue(&a.queues, max, a.lease_ms, a.wait_ms.unwrap_or(0)).map(render::leased)
        }
        Command::Complete(a) => {
            let result = a.result.as_deref().map(|text| Bytes::from(json_or_string(text).get().to_string()));
            connection.complete(a.id, a.lease, result).map(|state| render::task_state(a.id, state))
        }
        Command::Fail(a) => {
            connection.fail(a.id, a.lease, &a.error, !a.no_retry).map(|state| render::task_state(a.id, state))
        }
        Command::Extend(a) => {
            connection.extend(a.id, a.lease, a.lease_ms).map(|expires_at_ms| render::extended(a.id, expires_at_ms))
        }
        Command::Cancel(a) => connection.cancel(a.id).map(|state| render::task_state(a.id, state)),
        Command::Task(a) => connection.get_task(a.id).map(render::task),
        Command::Queues(_) => connection.list_queues().map(render::queues),
        Command::Queue(a) => connection.get_queue(&a.name).map(render::queue),
        Command::Serve(_) | Command::Demo => return ExitCode::FAILURE,
    };
    match reply {
        Ok(reply) => {
            let body = render::json_body(&reply);
            println!("{}", client::pretty_json(&body).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()));
            ExitCode::SUCCESS
        }
        Err(error) => binary_failure(name, &error),
    }
}

/// Prints a failed `--binary` call like the HTTP path prints one: an error reply
/// (the HTTP API's error body on stderr) exits 1; a server that cannot be
/// reached, or whose answer is lost or unreadable, exits 2.
fn binary_failure(name: &str, error: &tqx_client::ClientError) -> ExitCode {
    use tqx_client::ClientError;
    let (code, message) = match error {
        ClientError::Server { code, message } => (code.as_str(), message.clone()),
        // Refused before sending; the server would have answered these the same way.
        ClientError::RequestTooLarge { .. } => ("payload_too_large", error.to_string()),
        ClientError::InvalidRequest { reason } => ("invalid_argument", reason.clone()),
        ClientError::Connect { .. }
        | ClientError::ConnectionLost { .. }
        | ClientError::Timeout { .. }
        | ClientError::Protocol { .. } => {
            eprintln!("tqx {name}: {error}");
            return ExitCode::from(2);
        }
    };
    let retry = if error.is_retryable() { ", retry later" } else { "" };
    eprintln!("tqx {name}: the server answered {code}{retry}:");
    let body = client::binary::error_body(code, &message);
    eprintln!("{}", client::pretty_json(&body).unwrap_or_default());
    ExitCode::FAILURE
}

fn payload(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// Walks through priorities, leases, a retry, and a dependency, with time passed
/// in by hand: the engine never reads a clock.
fn demo() -> Result<(), EngineError> {
    let mut engine = Engine::new(EngineConfig::default());
    let mut now_ms = 0;
    let patch =
        QueueConfigPatch { discipline: Some(Discipline::Priority), backoff_ms: Some(100), ..Default::default() };
    engine.configure_queue("orders", &patch, now_ms)?;
    println!("t={now_ms}ms  queue orders: priority, backoff 100 ms");

    let routine = engine.enqueue("orders", NewTask { payload: payload("rebalance"), ..Default::default() }, now_ms)?;
    let urgent = engine.enqueue(
        "orders",
        NewTask { payload: payload("cancel-order 17"), priority: 10, ..Default::default() },
        now_ms,
    )?;
    let report =
        NewTask { payload: payload("send report"), depends_on: vec![DepRef::Task(routine.id)], ..Default::default() };
    let report = engine.enqueue("reports", report, now_ms)?;
    println!(
        "t={now_ms}ms  enqueued #{} (priority 0), #{} (priority 10), #{} in reports waiting on #{}",
        routine.id, urgent.id, report.id, routine.id
    );

    let mut leased = Vec::new();
    engine.dequeue(&["orders"], 2, Some(1_000), now_ms, &mut leased)?;
    for task in &leased {
        println!(
            "t={now_ms}ms  leased #{} {:?} attempt {} until {}ms",
            task.id,
            String::from_utf8_lossy(&task.payload),
            task.attempt,
            task.lease_expires_at_ms
        );
    }
    now_ms += 5;
    engine.complete(leased[0].id, leased[0].lease, Some(payload("ok")), now_ms)?;
    println!("t={now_ms}ms  completed #{}", leased[0].id);
    let state = engine.fail(leased[1].id, leased[1].lease, "exchange timeout", true, now_ms)?;
    let not_before_ms = engine.task(leased[1].id).and_then(|t| t.not_before_ms).unwrap_or(now_ms);
    println!("t={now_ms}ms  failed #{} -> {} until {not_before_ms}ms", leased[1].id, state.as_str());

    now_ms = not_before_ms;
    let tick = engine.tick(now_ms, 1_000);
    println!("t={now_ms}ms  tick: {} promoted", tick.promoted);
    leased.clear();
    engine.dequeue(&["orders"], 1, None, now_ms, &mut leased)?;
    let retry = &leased[0];
    println!("t={now_ms}ms  leased #{} again, attempt {}", retry.id, retry.attempt);
    engine.complete(retry.id, retry.lease, None, now_ms)?;
    println!("t={now_ms}ms  completed #{}; #{} is now {}", retry.id, report.id, state_of(&engine, report.id));

    for queue in engine.queues() {
        let counts: Vec<String> = TaskState::ALL
            .iter()
            .filter(|s| queue.counts.get(**s) > 0)
            .map(|s| format!("{} {}", queue.counts.get(*s), s.as_str()))
            .collect();
        println!("queue {:<8} {}", queue.name, counts.join(", "));
    }
    Ok(())
}

fn state_of(engine: &Engine, id: u64) -> &'static str {
    engine.task(id).map_or("gone", |t| t.state.as_str())
}
