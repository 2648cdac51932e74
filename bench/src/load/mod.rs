//! The load generator behind `tqx-bench` (docs/bench-harness.md): one client
//! model for TaskQueueX (binary and HTTP), Redis and beanstalkd, so that the
//! figures compare servers, not clients.
//!
//! The model: one OS thread running a tokio current-thread runtime (the load
//! generator uses about one core, like `wrk -t1`); one task per connection; each
//! keeps `--pipeline` requests in flight (or, in the open loop, sends on a
//! schedule), writes every request that is due in one write, and parses replies
//! incrementally from one reusable buffer; latencies go into a per-connection
//! hdrhistogram, merged at the end; a warmup runs first and is not counted.
//!
//! Code map: `codec` (the protocol-neutral requests and replies, payloads),
//! `binary`, `http`, `resp`, `beanstalk`, `amqp` (RabbitMQ), `nats` (NATS
//! JetStream) — the six protocols — `driver` (one connection's loop),
//! `stream` (plain TCP, or TLS with `--tls-ca`, under it), `workload` (what
//! each scenario does on a connection), `stats` (window, histograms, the
//! report), `timer` (the open loop's
//! microsecond sleeps), `fsync` (the disk's own sync time), `hold` (many
//! connections held open, idle or slow: issue 7), `fdlimit` (RLIMIT_NOFILE).
//!
//! *Boundary*: only the protocol modules know bytes; the driver and the
//! workloads are the same for every system.

mod amqp;
mod beanstalk;
mod binary;
mod codec;
mod driver;
pub mod fdlimit;
pub mod fsync;
mod hold;
mod http;
mod nats;
mod resp;
mod stats;
mod stream;
mod timer;
mod workload;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Notify;

pub use codec::payload;
pub use hold::{hold, HoldConfig, HoldReport, HOLD_CONNECTIONS_MAX, HOLD_RATE_PER_CONN_MAX};
pub use stats::{Latency, Report};
pub use stream::TLS_SERVER_NAME;

use codec::{Codec, CodecParams, Reply, Req, Role};
use driver::{Mode, Session};
use stats::{ConnStats, Window};
use stream::{Connector, Stream};
use workload::{AnyWorkload, Consumer, DepsProducer, DepsShared, PreloadMode, Preloader, Producer, StatusReader};

/// Connections (or storm loops) per run: issue 7's largest scaling point.
/// They share one latency histogram (`stats::SharedHistogram`); each reserves
/// a 64 KiB receive buffer (~640 MiB of address space at 10,000), of which only
/// the pages replies are read into become resident.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Requests in flight per connection in the closed loop.
pub const PIPELINE_MAX: usize = 4_096;
/// Tasks per batch request (TaskQueueX's own limit per `enqueue_batch`).
pub const BATCH_MAX: usize = 10_000;
/// Payload bytes (TaskQueueX's own limit per payload).
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
/// Tasks the status scenario preloads and then looks up at random.
pub const STATUS_TASKS: usize = 10_000;
/// Children per DAG in the deps scenario (plus the parent and the join).
pub const DEPS_CHILDREN: usize = 10;
/// Tasks per request when preloading with batches, at most.
const PRELOAD_CHUNK: usize = 1_000;
/// Bytes of payload per preload request, at most: half of TaskQueueX's default
/// body limit (1 MiB), so that large payloads make smaller batches.
const PRELOAD_REQUEST_BYTES: usize = 512 << 10;
/// Requests in flight while preloading.
const PRELOAD_DEPTH: usize = 8;
/// How long the setup waits for a server that is still recovering.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the setup asks a recovering server whether it is ready.
const READY_POLL: Duration = Duration::from_millis(50);
/// TaskQueueX queue retention in the cycle scenario and every other one but
/// deps: a finished task is forgotten at once, as Redis and beanstalkd forget
/// a popped or deleted job.
const RETENTION_MS: u64 = 0;
/// TaskQueueX queue retention in the deps scenario: a join names its children,
/// which must still be held when it is enqueued, even if already completed.
const DEPS_RETENTION_MS: u64 = 60_000;
/// TaskQueueX dequeues in the deps scenario are long polls of this length:
/// most of a DAG's tasks wait on dependencies, so consumers that retried empty
/// dequeues at once would mostly measure their own retries; a held dequeue is
/// answered the moment a completion makes a task ready, which is the latency
/// the scenario is after. (The cycle scenario retries at once, as Redis and
/// beanstalkd consumers do there.)
const DEPS_DEQUEUE_WAIT_MS: u64 = 1_000;
/// A storm loop whose connect failed waits this long before the next attempt,
/// so that a refused port does not turn into a busy loop.
const STORM_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// The systems the load generator speaks to (the report's vocabulary too:
/// `report::model` adds what it shows about each). Serialized by [`System::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum System {
    #[serde(rename = "tqx-binary")]
    TqxBinary,
    #[serde(rename = "tqx-http")]
    TqxHttp,
    #[serde(rename = "redis")]
    Redis,
    #[serde(rename = "redis-reliable")]
    RedisReliable,
    #[serde(rename = "beanstalkd")]
    Beanstalkd,
    /// RabbitMQ: a quorum queue, publisher confirms, a consumer with manual acks.
    #[serde(rename = "rabbitmq")]
    RabbitMq,
    /// NATS JetStream: a file-storage work-queue stream, a pull consumer.
    #[serde(rename = "nats")]
    Nats,
}

impl System {
    /// Every system, in the order runs alternate them and tables list them.
    pub const ALL: [System; 7] = [
        System::TqxBinary,
        System::TqxHttp,
        System::Redis,
        System::RedisReliable,
        System::Beanstalkd,
        System::RabbitMq,
        System::Nats,
    ];

    /// The name `tqx-bench --system` takes.
    pub fn name(self) -> &'static str {
        match self {
            System::TqxBinary => "tqx-binary",
            System::TqxHttp => "tqx-http",
            System::Redis => "redis",
            System::RedisReliable => "redis-reliable",
            System::Beanstalkd => "beanstalkd",
            System::RabbitMq => "rabbitmq",
            System::Nats => "nats",
        }
    }

    pub fn parse(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    fn is_tqx(self) -> bool {
        matches!(self, System::TqxBinary | System::TqxHttp)
    }
}

/// The seven scenarios, in the order they run and are reported
/// (docs/bench-harness.md says what each does on each system).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Enqueue,
    Cycle,
    Batch,
    Status,
    Deps,
    Storm,
    Latency,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Enqueue,
        Scenario::Cycle,
        Scenario::Batch,
        Scenario::Status,
        Scenario::Deps,
        Scenario::Storm,
        Scenario::Latency,
    ];

    /// The name `tqx-bench --scenario` and `bench/run --only` take.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Enqueue => "enqueue",
            Scenario::Cycle => "cycle",
            Scenario::Batch => "batch",
            Scenario::Status => "status",
            Scenario::Deps => "deps",
            Scenario::Storm => "storm",
            Scenario::Latency => "latency",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Why `system` cannot run `scenario`, or `None` when it can.
pub fn unsupported_reason(system: System, scenario: Scenario) -> Option<&'static str> {
    match (system, scenario) {
        (System::Beanstalkd, Scenario::Batch) => Some("beanstalkd has no batch put"),
        (System::Redis | System::RedisReliable | System::Beanstalkd, Scenario::Deps) => {
            Some("only TaskQueueX has task dependencies")
        }
        // The two brokers are measured where the issue compares them: the
        // durable enqueue and the full cycle (and the open loop).
        (System::RabbitMq | System::Nats, Scenario::Enqueue | Scenario::Cycle | Scenario::Latency) => None,
        (System::RabbitMq, _) => Some("rabbitmq is measured in enqueue, cycle and latency only"),
        (System::Nats, _) => Some("nats is measured in enqueue, cycle and latency only"),
        _ => None,
    }
}

/// `tqx-bench run`'s parameters.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub system: System,
    pub addr: String,
    pub scenario: Scenario,
    pub connections: usize,
    pub pipeline: usize,
    pub seconds: f64,
    pub warmup_seconds: f64,
    /// Offered load of the latency scenario, requests/s over all connections.
    pub rate: Option<f64>,
    pub batch: usize,
    pub payload_bytes: usize,
    pub queue: String,
    /// The server's process, when known (on the same machine): its CPU time
    /// over the window is reported as `server_cpu`.
    pub server_pid: Option<u32>,
    /// TLS, and a token, for every connection.
    pub security: Security,
}

/// `--tls-ca` and `--token`: how the load generator reaches a server that
/// has TLS or tokens (docs/security.md).
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Every connection is TLS, trusting the CA certificates in this PEM file;
    /// the server's certificate must be valid for `localhost` (the SNI sent).
    /// ALPN `tqx/1` on the binary protocol, `http/1.1` on HTTP, none for the
    /// others.
    pub tls_ca: Option<std::path::PathBuf>,
    /// TaskQueueX's API token: the binary protocol sends `auth` after `hello`,
    /// HTTP an `Authorization: Bearer` header on every request.
    pub token: Option<String>,
}

impl Security {
    /// The connector for `system`'s connections: the CA file is read here,
    /// and every connection opened with the result shares it.
    fn connector(&self, system: System) -> Result<Connector, RunError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(Connector::plain());
        };
        let alpn: Option<&[u8]> = match system {
            System::TqxBinary => Some(tqx_client::tls::ALPN_BINARY),
            System::TqxHttp => Some(tqx_client::tls::ALPN_HTTP),
            _ => None,
        };
        Connector::tls(ca, alpn).map_err(RunError::Usage)
    }

    fn check(&self, system: System) -> Result<(), RunError> {
        if self.token.is_some() && !system.is_tqx() {
            return Err(RunError::Usage("--token is for tqx-binary and tqx-http only".into()));
        }
        if let Some(token) = &self.token {
            // It goes into a header line and a u16-length field as it is.
            if token.is_empty() || token.len() > 1024 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(RunError::Usage("--token must be 1 to 1,024 printable ASCII characters".into()));
            }
        }
        Ok(())
    }
}

impl RunConfig {
    /// The contract's defaults for everything but system, address and scenario.
    pub fn new(system: System, addr: &str, scenario: Scenario) -> RunConfig {
        RunConfig {
            system,
            addr: addr.to_string(),
            scenario,
            connections: 50,
            pipeline: 1,
            seconds: 5.0,
            warmup_seconds: 1.0,
            rate: None,
            batch: 100,
            payload_bytes: 100,
            queue: "bench".to_string(),
            server_pid: None,
            security: Security::default(),
        }
    }

    fn validate(&self) -> Result<(), RunError> {
        let usage = |m: String| Err(RunError::Usage(m));
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return usage(format!("--connections must be 1 to {CONNECTIONS_MAX}"));
        }
        if matches!(self.scenario, Scenario::Cycle | Scenario::Deps) && self.connections < 2 {
            return usage(format!("{} needs --connections 2 or more (producers and consumers)", self.scenario.name()));
        }
        if !(1..=PIPELINE_MAX).contains(&self.pipeline) {
            return usage(format!("--pipeline must be 1 to {PIPELINE_MAX}"));
        }
        if !(self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= 86_400.0) {
            return usage("--seconds must be above 0 (and at most a day)".into());
        }
        if !(self.warmup_seconds.is_finite() && self.warmup_seconds >= 0.0 && self.warmup_seconds <= 86_400.0) {
            return usage("--warmup-seconds must be 0 or more (and at most a day)".into());
        }
        if !(1..=BATCH_MAX).contains(&self.batch) {
            return usage(format!("--batch must be 1 to {BATCH_MAX}"));
        }
        if !(1..=PAYLOAD_BYTES_MAX).contains(&self.payload_bytes) {
            return usage(format!("--payload-bytes must be 1 to {PAYLOAD_BYTES_MAX}"));
        }
        check_queue(&self.queue)?;
        self.security.check(self.system)?;
        match (self.scenario, self.rate) {
            (Scenario::Latency, None) => usage("the latency scenario needs --rate".into()),
            (_, Some(rate)) if !(rate.is_finite() && rate > 0.0) => usage("--rate must be above 0".into()),
            // The open loop also runs the enqueue, the full cycle, the batch
            // and the lookups at a fixed offered rate (bench/run: 50 % of each
            // row's own peak); `rate` counts requests (a batch is one).
            (Scenario::Latency | Scenario::Enqueue | Scenario::Cycle | Scenario::Batch | Scenario::Status, Some(_)) => {
                Ok(())
            }
            (_, Some(_)) => usage("--rate is for the latency, enqueue, cycle, batch and status scenarios only".into()),
            (_, None) => Ok(()),
        }
    }
}

/// Queue names go into URLs, RESP and beanstalkd lines: TaskQueueX's own rule
/// (1 to 128 of `A-Z a-z 0-9 _ - . :`), which fits all three.
fn check_queue(queue: &str) -> Result<(), RunError> {
    let ok = (1..=128).contains(&queue.len())
        && queue.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(RunError::Usage("--queue must be 1 to 128 of A-Z a-z 0-9 _ - . :".into()))
    }
}

/// How a run failed; each maps to an exit status of `tqx-bench`.
#[derive(Debug)]
pub enum RunError {
    /// Bad arguments (exit 64).
    Usage(String),
    /// The system has no such operation (exit 3).
    Unsupported(&'static str),
    /// The server cannot be reached (exit 2).
    Connect(String),
    /// The server answered the setup with an error, or broke the protocol (exit 1).
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(m) => write!(f, "usage: {m}"),
            RunError::Unsupported(m) => write!(f, "unsupported: {m}"),
            RunError::Connect(m) => write!(f, "cannot connect: {m}"),
            RunError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Runs one scenario against one system; the report is what `tqx-bench run`
/// prints.
pub fn run(config: &RunConfig) -> Result<Report, RunError> {
    config.validate()?;
    if let Some(reason) = unsupported_reason(config.system, config.scenario) {
        return Err(RunError::Unsupported(reason));
    }
    let addr = resolve(&config.addr)?;
    on_one_thread(async {
        match config.system {
            System::TqxBinary => run_with::<binary::BinaryCodec>(config, addr).await,
            System::TqxHttp => run_with::<http::HttpCodec>(config, addr).await,
            System::Redis | System::RedisReliable => run_with::<resp::RespCodec>(config, addr).await,
            System::Beanstalkd => run_with::<beanstalk::BeanstalkCodec>(config, addr).await,
            System::RabbitMq => run_with::<amqp::AmqpCodec>(config, addr).await,
            System::Nats => run_with::<nats::NatsCodec>(config, addr).await,
        }
    })
}

/// `tqx-bench preload`'s parameters.
#[derive(Clone, Debug)]
pub struct PreloadConfig {
    pub system: System,
    pub addr: String,
    pub tasks: usize,
    pub payload_bytes: usize,
    pub queue: String,
    pub security: Security,
}

/// What `tqx-bench preload` prints.
#[derive(Clone, Debug, Serialize)]
pub struct PreloadReport {
    pub system: &'static str,
    pub preloaded: usize,
    pub seconds: f64,
}

/// Enqueues `tasks` tasks (batches of 1,000 where the system has batches).
pub fn preload(config: &PreloadConfig) -> Result<PreloadReport, RunError> {
    if !(1..=PAYLOAD_BYTES_MAX).contains(&config.payload_bytes) {
        return Err(RunError::Usage(format!("--payload-bytes must be 1 to {PAYLOAD_BYTES_MAX}")));
    }
    check_queue(&config.queue)?;
    let addr = resolve(&config.addr)?;
    let mut run_config = RunConfig::new(config.system, &config.addr, Scenario::Enqueue);
    run_config.payload_bytes = config.payload_bytes;
    run_config.queue = config.queue.clone();
    run_config.security = config.security.clone();
    run_config.security.check(config.system)?;
    let mode = match config.system {
        System::Beanstalkd | System::RabbitMq | System::Nats => PreloadMode::Single,
        _ => PreloadMode::Batch { chunk: preload_chunk(config.payload_bytes) },
    };
    let started = Instant::now();
    let preloaded = on_one_thread(async {
        match config.system {
            System::TqxBinary => preload_with::<binary::BinaryCodec>(&run_config, addr, config.tasks, mode).await,
            System::TqxHttp => preload_with::<http::HttpCodec>(&run_config, addr, config.tasks, mode).await,
            System::Redis | System::RedisReliable => {
                preload_with::<resp::RespCodec>(&run_config, addr, config.tasks, mode).await
            }
            System::Beanstalkd => {
                preload_with::<beanstalk::BeanstalkCodec>(&run_config, addr, config.tasks, mode).await
            }
            System::RabbitMq => preload_with::<amqp::AmqpCodec>(&run_config, addr, config.tasks, mode).await,
            System::Nats => preload_with::<nats::NatsCodec>(&run_config, addr, config.tasks, mode).await,
        }
    })?;
    Ok(PreloadReport {
        system: config.system.name(),
        preloaded: preloaded.tasks,
        seconds: stats::rounded(started.elapsed().as_secs_f64(), 3),
    })
}

/// Tasks per preload batch for payloads of `payload_bytes`.
fn preload_chunk(payload_bytes: usize) -> usize {
    (PRELOAD_REQUEST_BYTES / payload_bytes.max(1)).clamp(1, PRELOAD_CHUNK)
}

/// Runs `future` on this thread, on a current-thread runtime: the whole load
/// generator is this one thread.
fn on_one_thread<T>(future: impl std::future::Future<Output = Result<T, RunError>>) -> Result<T, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Failed(format!("cannot start the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, future)
}

fn resolve(addr: &str) -> Result<SocketAddr, RunError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| RunError::Connect(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| RunError::Connect(format!("{addr}: no address")))
}

fn codec_params(config: &RunConfig) -> Result<CodecParams, RunError> {
    Ok(CodecParams {
        addr: config.addr.clone(),
        queue: config.queue.clone(),
        payload: Bytes::from(payload(config.payload_bytes)),
        payload_bytes: config.payload_bytes,
        batch: config.batch,
        reliable: config.system == System::RedisReliable,
        dequeue_wait_ms: if config.scenario == Scenario::Deps { DEPS_DEQUEUE_WAIT_MS } else { 0 },
        prefetch: config.pipeline,
        token: config.security.token.clone(),
        connector: config.security.connector(config.system)?,
    })
}

/// Loopback source addresses a storm's loops spread their connections over
/// (127.0.0.2 onwards, one per loop in turn). Every connection a storm closes
/// leaves a TIME_WAIT socket on the client, and from one source address the
/// ~28,000 ephemeral ports fill with them within two seconds: `connect` then
/// spends most of the client's core searching for a free port (72 % of it,
/// in `__inet_check_established` and `__inet_hash_connect`, at 14k
/// connections/s), whatever the server. Each source address has ports of its
/// own, so the search stays short and the figure is the server's again.
const STORM_SOURCE_ADDRESSES: usize = 16;

/// The source address of storm loop `index`, when the server is on IPv4
/// loopback (where all of 127.0.0.0/8 is ours to use); `None` elsewhere.
fn storm_source(addr: SocketAddr, index: usize) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let host = 2 + (index % STORM_SOURCE_ADDRESSES) as u8;
            Some(Ipv4Addr::new(127, 0, 0, host))
        }
        _ => None,
    }
}

/// [`connect`] from `source` (any port), or from wherever the kernel picks.
async fn connect_from(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return connect(addr).await;
    };
    let socket = tokio::net::TcpSocket::new_v4()?;
    // The port is chosen at `connect`, for the whole 4-tuple, rather than at
    // `bind`, where it would have to be free on its own.
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor owned by `socket`, and a pointer to an
    // `int` that outlives the call, with its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // Every request is written whole, in one write: Nagle's algorithm would
    // only hold it back (wrk and redis-benchmark disable it too).
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects (from `source` when given) and, with TLS, completes the handshake.
async fn connect_stream(addr: SocketAddr, source: Option<Ipv4Addr>, connector: &Connector) -> std::io::Result<Stream> {
    let socket = connect_from(addr, source).await?;
    connector.wrap(socket).await
}

/// The first error among `replies`.
fn first_error(replies: &[Reply]) -> Option<&str> {
    replies.iter().find_map(|r| match r {
        Reply::Error(m) => Some(m.as_str()),
        _ => None,
    })
}

/// Connects and sends `role`'s handshake.
async fn open<C: Codec>(addr: SocketAddr, params: &CodecParams, role: Role) -> Result<(Stream, Session<C>), RunError> {
    let mut stream =
        connect_stream(addr, None, &params.connector).await.map_err(|e| RunError::Connect(format!("{addr}: {e}")))?;
    let mut session = Session::new(C::new(params));
    // One round trip per handshake request: AMQP's steps depend on what the
    // server said in the step before (its frame size), and nothing here is timed.
    for req in session.codec.handshake(role) {
        let replies = session
            .call(&mut stream, vec![req])
            .await
            .map_err(|e| RunError::Failed(format!("handshake with {addr}: {e}")))?;
        if let Some(m) = first_error(&replies) {
            return Err(RunError::Failed(format!("handshake with {addr}: {m}")));
        }
    }
    Ok((stream, session))
}

/// One request on the setup connection; an error reply fails the run.
async fn setup_call<C: Codec>(stream: &mut Stream, session: &mut Session<C>, req: Req) -> Result<Reply, RunError> {
    let what = format!("setup {req:?}");
    let mut replies = session.call(stream, vec![req]).await.map_err(|e| RunError::Failed(format!("{what}: {e}")))?;
    match replies.pop() {
        Some(Reply::Error(m)) => Err(RunError::Failed(format!("{what}: {m}"))),
        Some(reply) => Ok(reply),
        None => Err(RunError::Failed(format!("{what}: no reply"))),
    }
}

/// Opens the setup connection and waits until the server is ready (TaskQueueX
/// recovers its state after a start; Redis loads its dataset).
async fn setup<C: Codec>(config: &RunConfig, addr: SocketAddr) -> Result<(Stream, Session<C>), RunError> {
    let params = codec_params(config)?;
    let (mut stream, mut session) = open::<C>(addr, &params, Role::Both).await?;
    // Systems with a readiness answer (the brokers are ready once they accept
    // the handshake: `bench/run` waits for their listener).
    if matches!(config.system, System::TqxBinary | System::TqxHttp | System::Redis | System::RedisReliable) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while setup_call(&mut stream, &mut session, Req::Ping).await? == Reply::NotReady {
            if Instant::now() >= deadline {
                return Err(RunError::Failed(format!("{addr} still not ready after {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
    Ok((stream, session))
}

/// Enqueues `tasks` tasks on the setup connection.
async fn preload_with<C: Codec>(
    config: &RunConfig,
    addr: SocketAddr,
    tasks: usize,
    mode: PreloadMode,
) -> Result<Preloader, RunError> {
    let (mut stream, mut session) = setup::<C>(config, addr).await?;
    preload_on(&mut stream, &mut session, tasks, mode).await
}

async fn preload_on<C: Codec>(
    stream: &mut Stream,
    session: &mut Session<C>,
    tasks: usize,
    mode: PreloadMode,
) -> Result<Preloader, RunError> {
    let now = Instant::now();
    // No time limit: the preload ends when every task is in.
    let mut stats = ConnStats::new(Window { measure_start: now, end: now + Duration::from_secs(86_400 * 365) });
    let mut preloader = Preloader::new(tasks, mode);
    let quiet = Notify::new();
    session
        .run(stream, &mut preloader, Mode::Closed { depth: PRELOAD_DEPTH }, &mut stats, &quiet)
        .await
        .map_err(|e| RunError::Failed(format!("preload: {e}")))?;
    if stats.errors > 0 {
        return Err(RunError::Failed(format!("preload: {} requests failed (see the log above)", stats.errors)));
    }
    Ok(preloader)
}

/// What each connection of a run does.
fn plan(
    config: &RunConfig,
    index: usize,
    deps: &Option<Rc<DepsShared>>,
    status_ids: &Rc<Vec<u64>>,
) -> (Role, AnyWorkload) {
    let producers = config.connections / 2;
    let producer = || AnyWorkload::Producer(Producer { batch: None, counted: config.scenario != Scenario::Cycle });
    match config.scenario {
        Scenario::Enqueue | Scenario::Latency | Scenario::Storm => (Role::Producer, producer()),
        Scenario::Batch => {
            (Role::Producer, AnyWorkload::Producer(Producer { batch: Some(config.batch), counted: true }))
        }
        Scenario::Status => (
            Role::Both,
            AnyWorkload::Status(StatusReader { ids: status_ids.clone(), rng: crate::Rng::new(0x5eed ^ index as u64) }),
        ),
        Scenario::Cycle if index < producers => (Role::Producer, producer()),
        Scenario::Cycle => (Role::Consumer, AnyWorkload::Consumer(Consumer::new(None, config.rate.is_some()))),
        Scenario::Deps => {
            let deps = deps.clone().expect("deps state for the deps scenario");
            if index < producers {
                let slots = index * config.pipeline..(index + 1) * config.pipeline;
                (Role::Producer, AnyWorkload::Deps(DepsProducer::new(deps, slots)))
            } else {
                (Role::Consumer, AnyWorkload::Consumer(Consumer::new(Some(deps), false)))
            }
        }
    }
}

async fn run_with<C: Codec + 'static>(config: &RunConfig, addr: SocketAddr) -> Result<Report, RunError> {
    let params = codec_params(config)?;
    // Setup, on its own connection, before anything is timed.
    let (mut stream, mut session) = setup::<C>(config, addr).await?;
    if config.system.is_tqx() {
        let retention_ms = if config.scenario == Scenario::Deps { DEPS_RETENTION_MS } else { RETENTION_MS };
        setup_call(&mut stream, &mut session, Req::Configure { retention_ms }).await?;
    }
    let mut status_ids = Rc::new(Vec::new());
    if config.scenario == Scenario::Status {
        let mode = match config.system {
            System::TqxBinary | System::TqxHttp => PreloadMode::Batch { chunk: preload_chunk(config.payload_bytes) },
            System::Redis | System::RedisReliable => PreloadMode::RedisHash,
            System::Beanstalkd | System::RabbitMq | System::Nats => PreloadMode::Single,
        };
        let preloaded = preload_on(&mut stream, &mut session, STATUS_TASKS, mode).await?;
        if preloaded.ids.len() != STATUS_TASKS {
            return Err(RunError::Failed(format!("preload returned {} ids, not {STATUS_TASKS}", preloaded.ids.len())));
        }
        status_ids = Rc::new(preloaded.ids);
    }
    drop(stream);

    let deps = (config.scenario == Scenario::Deps).then(|| {
        let run = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
            as u32)
            | 1;
        Rc::new(DepsShared::new((config.connections / 2) * config.pipeline, run))
    });

    // Connect everything first, so that connecting is not timed (but storms).
    let mut opened = Vec::with_capacity(config.connections);
    if config.scenario != Scenario::Storm {
        let mut handles = Vec::with_capacity(config.connections);
        for index in 0..config.connections {
            let (role, _) = plan(config, index, &deps, &status_ids);
            let params = params.clone();
            handles.push(tokio::task::spawn_local(async move { open::<C>(addr, &params, role).await }));
        }
        for handle in handles {
            opened.push(handle.await.map_err(|e| RunError::Failed(format!("connect task: {e}")))??);
        }
    }

    let histogram = stats::shared_histogram();
    let t0 = Instant::now();
    let measure_start = t0 + Duration::from_secs_f64(config.warmup_seconds);
    let window = Window { measure_start, end: measure_start + Duration::from_secs_f64(config.seconds) };
    let mut handles = Vec::with_capacity(config.connections);
    if config.scenario == Scenario::Storm {
        for index in 0..config.connections {
            let params = params.clone();
            let histogram = histogram.clone();
            let source = storm_source(addr, index);
            handles.push(tokio::task::spawn_local(async move {
                storm_loop::<C>(addr, source, params, ConnStats::sharing(window, histogram)).await
            }));
        }
    } else {
        for (index, (mut stream, mut session)) in opened.into_iter().enumerate() {
            let (_, mut workload) = plan(config, index, &deps, &status_ids);
            let mode = match config.rate {
                Some(rate) => {
                    // The offered rate is spread evenly over the connections
                    // of one role: in the cycle, producers enqueue `rate`
                    // tasks/s and consumers start `rate` dequeues/s between
                    // them; elsewhere every connection produces.
                    let producers = config.connections / 2;
                    let (slot, count) = match config.scenario {
                        Scenario::Cycle if index < producers => (index, producers),
                        Scenario::Cycle => (index - producers, config.connections - producers),
                        _ => (index, config.connections),
                    };
                    Mode::Open {
                        first: t0 + Duration::from_secs_f64(slot as f64 / rate),
                        interval: Duration::from_secs_f64(count as f64 / rate),
                    }
                }
                None => Mode::Closed { depth: config.pipeline },
            };
            let deps = deps.clone();
            let histogram = histogram.clone();
            handles.push(tokio::task::spawn_local(async move {
                let mut stats = ConnStats::sharing(window, histogram);
                let own = Notify::new();
                let wake = match (&deps, &workload) {
                    (Some(deps), AnyWorkload::Deps(_)) => &deps.notify,
                    _ => &own,
                };
                if let Err(e) = session.run(&mut stream, &mut workload, mode, &mut stats, wake).await {
                    // A lost connection always counts, even in the warmup.
                    stats.errors += 1;
                    stats::log_error(&e.to_string());
                }
                stats
            }));
        }
    }

    tokio::time::sleep_until(measure_start.into()).await;
    let cpu_start = stats::thread_cpu_seconds();
    let server_cpu_start = config.server_pid.and_then(stats::process_cpu_seconds);
    let mut all = Vec::with_capacity(handles.len());
    for handle in handles {
        all.push(handle.await.map_err(|e| RunError::Failed(format!("connection task: {e}")))?);
    }
    let cpu_seconds = stats::thread_cpu_seconds() - cpu_start;
    let server_cpu_seconds = match (server_cpu_start, config.server_pid.and_then(stats::process_cpu_seconds)) {
        (Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    let seconds = config.seconds;
    let (histogram, ops, tasks, errors) = stats::merge(&all);
    Ok(Report {
        system: config.system.name(),
        scenario: config.scenario.name(),
        connections: config.connections,
        pipeline: config.pipeline,
        seconds: stats::rounded(seconds, 3),
        ops,
        ops_per_s: stats::rounded(ops as f64 / seconds, 1),
        tasks_per_s: stats::rounded(tasks as f64 / seconds, 1),
        errors,
        latency_us: stats::latency_us(&histogram),
        offered_rate: config.rate,
        client_cpu: stats::rounded(cpu_seconds / seconds, 3),
        server_cpu: server_cpu_seconds.map(|s| stats::rounded(s / seconds, 3)),
    })
}

/// The storm: connect, handshake and one enqueue in one write, wait for the
/// replies, close; again until the end. An op is one whole connection.
async fn storm_loop<C: Codec>(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    params: CodecParams,
    mut stats: ConnStats,
) -> ConnStats {
    let window = stats.window;
    let mut session = Session::new(C::new(&params));
    let mut reqs = session.codec.handshake(Role::Producer);
    reqs.push(Req::Enqueue);
    loop {
        let start = Instant::now();
        if start >= window.end {
            return stats;
        }
        session.reset();
        let result = match connect_stream(addr, source, &params.connector).await {
            Ok(mut stream) => session.call(&mut stream, reqs.clone()).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("connect: {e}")),
        };
        let now = Instant::now();
        match result {
            Ok(replies) => match first_error(&replies) {
                None => {
                    stats.op(start, now);
                    stats.tasks(now, 1);
                }
                Some(m) => stats.error(now, &format!("storm: {m}")),
            },
            Err(m) => {
                stats.error(now, &format!("storm: {m}"));
                tokio::time::sleep(STORM_RETRY_PAUSE).await;
            }
        }
    }
}
