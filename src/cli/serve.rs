//! `tqx serve`: the server's flags, how they become a [`ServeConfig`], and the
//! logging the server writes to stderr. Running the server is
//! [`crate::server::serve`]; this module only reads the command line.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::server::{self, DurabilityMode, ServeConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--binary-io`: which reactor serves the binary protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BinaryIoArg {
    TokioUring,
    IoUring,
}

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
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
    /// Test hook: one interval for every kind of rate-limited activity log line (docs/logs.md), 10 to
    /// 3,600,000 ms. (4 bytes: `ServeArgs` is the largest variant of the command enum.)
    #[arg(long, value_name = "MS", hide = true, value_parser = activity_log_interval_ms)]
    debug_activity_log_interval_ms: Option<std::num::NonZeroU32>,
    /// A server thread (reactor, worker, log writer, checkpointer: 6 times this) that has work but makes
    /// no progress for this long, or has died, makes /healthz answer 503 {"status":"stalled"} and a binary
    /// ping `ready: false` until it progresses again.
    #[arg(long, value_name = "MS", default_value_t = server::STALL_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    stall_timeout_ms: u64,
    /// Reactor threads, each an io_uring loop that accepts, parses, executes and replies (default: one per CPU
    /// this process may run on).
    #[arg(long, value_name = "N", default_value_t = default_reactors(),
          value_parser = clap::value_parser!(u32).range(1..=256))]
    reactors: u32,
    /// Timer threads (1 to 64): they fire lease expiries, delays and long-poll deadlines, and run requests a
    /// reactor left queued. Requests are executed by the reactor that read them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// Pin reactor and timer threads to cores (default: on when the machine has 2 or more cores).
    #[arg(long, overrides_with = "no_pin")]
    pin: bool,
    /// Do not pin threads to cores.
    #[arg(long, overrides_with = "pin")]
    no_pin: bool,
    /// The CPUs to pin threads to, in turn (reactors first, then timer threads), as `taskset -c` writes them:
    /// `0-3,6`. Pins (whatever --no-pin says). Default: every CPU this process may run on (its affinity mask, so
    /// `taskset` and cgroup cpusets are respected).
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    cpus: Option<Cpus>,
    /// When pinning, put each timer thread on a reactor's core instead of a core of its own.
    #[arg(long)]
    pin_workers_with_reactors: bool,
    /// Requests queued for execution; past it the server answers 503 overloaded.
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
    /// Experimental: the reactor that serves the binary protocol. `io-uring` runs it on a ring of its
    /// own (multishot accept and receive, provided buffers, DEFER_TASKRUN), without long polls or
    /// connection timers yet; HTTP stays on tokio-uring (docs/architecture.md).
    #[arg(long, value_name = "IO", default_value = "tokio-uring")]
    binary_io: BinaryIoArg,
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
    #[arg(long, value_name = "BYTES", default_value_t = crate::limits::CONNECTION_REPLY_BYTES_MAX_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 32)))]
    connection_reply_bytes_max: u64,
    /// Back-pressure: requests one connection may have taken and not yet answered; at it the
    /// connection takes no new request (and stops reading) until replies go out.
    #[arg(long, value_name = "N", default_value_t = crate::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    connection_requests_in_flight_max: u32,
    /// Back-pressure: reply bytes waiting for their clients on all connections together; at it no
    /// connection takes a new request until they drain.
    #[arg(long, value_name = "BYTES", default_value_t = crate::limits::REPLY_BYTES_MAX_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 40)))]
    reply_bytes_max: u64,
    /// Long polls (dequeues with wait_ms) one connection may have waiting; past it a long poll is
    /// answered at once with 503 `capacity_exceeded` (retryable).
    #[arg(long, value_name = "N", default_value_t = crate::limits::CONNECTION_LONG_POLLS_MAX_DEFAULT as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connection_long_polls_max: u32,
    /// Once the first byte of an HTTP request (head and body) or a binary frame has arrived, the time
    /// the whole of it must arrive within, in milliseconds (time spent answering earlier requests is not
    /// counted); past it the connection is closed. 0: no deadline.
    #[arg(long, value_name = "MS", default_value_t = crate::limits::REQUEST_DEADLINE_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=crate::limits::CONNECTION_TIMEOUT_MS_MAX))]
    request_deadline_ms: u64,
    /// A connection with no request started and nothing in flight (a long poll counts as in flight) for
    /// this many milliseconds is closed. 0: never.
    #[arg(long, value_name = "MS", default_value_t = crate::limits::IDLE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=crate::limits::CONNECTION_TIMEOUT_MS_MAX))]
    idle_timeout_ms: u64,
    /// When open connections pass this percentage of --max-connections, each accept first closes the
    /// longest-idle connections (never one with a request in flight or a long poll). 100: never.
    #[arg(long, value_name = "PERCENT", default_value_t = crate::limits::PRUNE_ABOVE_PERCENT_DEFAULT,
          value_parser = clap::value_parser!(u8).range(crate::limits::PRUNE_ABOVE_PERCENT_MIN as i64..=100))]
    prune_above_percent: u8,
    /// TLS on both listeners: the server's certificate chain (PEM, leaf first). Needs --tls-key.
    /// Re-read on SIGHUP (docs/security.md).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate signed by a CA in this PEM file. Re-read on SIGHUP.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Listen on an address other than loopback without TLS and without tokens, on purpose: anyone who
    /// can reach the port can then read, take and delete every task.
    #[arg(long)]
    insecure: bool,
    /// Require a token on every request but /healthz, /openapi.json and the dashboard's files (/ui),
    /// checked against this file of token hashes and scopes (made with `tqx token create`;
    /// docs/security.md). Read at start and again on SIGHUP (a bad new file
    /// keeps the tokens in force). Without it, every request is allowed.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Do not count or time requests for /metrics and /v1/stats (their request counts and latency
    /// stay empty; everything else is still shown). For measuring what recording costs.
    #[arg(long)]
    no_metrics: bool,
    /// Log format on stderr: human-readable text, or JSON lines.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or directives such as
    /// `info,taskqueuex::server=debug`); RUST_LOG overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: String,
    /// A TOML file of settings: keys are these flags' names without their dashes (`max_connections =
    /// 1000`). Flags and TQX_* environment variables (every flag has one: TQX_MAX_CONNECTIONS) take
    /// precedence over it (docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML, each setting with where its value came from (flag,
    /// environment, file or default), and exit without starting.
    #[arg(long)]
    pub(super) print_config: bool,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One reactor per CPU the process may run on (`available_parallelism`
/// follows the affinity mask and cgroup quotas): every reactor executes the
/// requests it reads (run to completion), so no core is left for workers.
/// At most 256, the flag's own bound.
fn default_reactors() -> u32 {
    u32::try_from(cores().clamp(1, 256)).unwrap_or(1)
}

/// `--binary`'s default port (next to HTTP's 7700).
const BINARY_PORT_DEFAULT: u16 = 7701;

/// `--debug-activity-log-interval-ms`: 10 ms to an hour.
fn activity_log_interval_ms(text: &str) -> Result<std::num::NonZeroU32, String> {
    text.parse()
        .ok()
        .filter(|ms: &std::num::NonZeroU32| (10..=3_600_000).contains(&ms.get()))
        .ok_or_else(|| format!("{text:?} is not between 10 and 3600000"))
}

/// `--max-body-bytes`: refused while the arguments are read, before anything
/// is created or bound, if the log could not hold every command a body that
/// large decodes to (the message names both limits; `serve` checks again).
fn max_body_bytes(text: &str) -> Result<u64, String> {
    let bytes: u64 = text.parse().map_err(|error| format!("{error}"))?;
    crate::limits::check_body_bytes_max(usize::try_from(bytes).unwrap_or(usize::MAX))?;
    Ok(bytes)
}

pub(super) fn serve(args: ServeArgs) -> ExitCode {
    if let Err(message) = init_logging(args.log_format, &args.log_level) {
        eprintln!("tqx serve: {message}");
        return ExitCode::from(2);
    }
    if let Err(error) = std::fs::create_dir_all(&args.data) {
        eprintln!("tqx serve: cannot create the data directory {}: {error}", args.data.display());
        return ExitCode::FAILURE;
    }
    let log_json = args.log_format == LogFormat::Json;
    let config = config(args);
    // Target `tqx` (the binary's name, these lines' target before the CLI moved
    // into the library), so log filters and JSON logs that name it still match.
    tracing::debug!(target: "tqx", ?config, "starting");
    match server::serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if log_json {
                // Also as a log line, for whoever collects the JSON logs.
                tracing::error!(target: "tqx", %error, "server failed");
            }
            eprintln!("tqx serve: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What the flags ask of the server.
fn config(args: ServeArgs) -> ServeConfig {
    let pin_threads = if args.pin || args.cpus.is_some() {
        true
    } else if args.no_pin {
        false
    } else {
        cores() >= 2
    };
    // Always 7701 unless given (the documented default, whatever `--http` says):
    // callers that start several servers pass `--binary 127.0.0.1:0` too.
    let binary_addr = args.binary.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], BINARY_PORT_DEFAULT)));
    ServeConfig {
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
        cpus: args.cpus.map(|Cpus(cpus)| cpus),
        pin_workers_with_reactors: args.pin_workers_with_reactors,
        request_queue_capacity: args.queue_capacity as usize,
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        fixed_buffers_count: args.fixed_buffers.into(),
        regenerate_lease_key: args.regenerate_lease_key,
        stall_timeout_ms: args.stall_timeout_ms,
        cold_read_gate: args.debug_cold_read_gate,
        debug_panic_queue: args.debug_panic_on_queue,
        binary_io: match args.binary_io {
            BinaryIoArg::TokioUring => server::BinaryIo::TokioUring,
            BinaryIoArg::IoUring => server::BinaryIo::IoUring,
        },
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(server::TlsFiles { cert, key, client_ca: args.tls_client_ca }),
            // clap requires both or neither.
            _ => None,
        },
        insecure: args.insecure,
        tokens_file: args.tokens,
        metrics: !args.no_metrics,
        activity_log_interval_ms: args.debug_activity_log_interval_ms.map(|ms| u64::from(ms.get())),
    }
}

/// The configuration `tqx serve ARGS` would run with, for the server's unit tests.
#[cfg(test)]
pub(crate) fn test_config(args: &[&str]) -> ServeConfig {
    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        serve: ServeArgs,
    }
    use clap::Parser as _;
    config(Command::parse_from(std::iter::once("serve").chain(args.iter().copied())).serve)
}

/// `--cpus`: one value holding a list (a bare `Vec` would make clap take the
/// flag several times instead).
#[derive(Clone, Debug)]
struct Cpus(Vec<usize>);

fn parse_cpus(list: &str) -> Result<Cpus, String> {
    server::parse_cpu_list(list).map(Cpus)
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
