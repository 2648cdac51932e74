//! The crash test: kills `tqx serve` with SIGKILL in the middle of traffic, in a
//! loop, and checks after every restart that no acknowledged write was lost, that
//! no task was invented and that no task exists twice (docs/crashtest.md).
//!
//! ```text
//! tools/crashtest [--cycles N] [--seed S] [--durability sync|interval:<ms>|memory] ...
//! ```
//!
//! One cycle: concurrent producers enqueue tasks with unique payloads (single and
//! batch enqueues, `--pipeline` requests in flight per connection) and consumers
//! lease and complete them, each on its own keep-alive connection; after a seeded random time the server is killed; it is
//! restarted on the same data directory and the test checks, through the HTTP API,
//! what it knows. What the test knows (the model) is a set of facts about task ids:
//! "this id holds this payload in this queue" and "this id is completed". A fact
//! comes from an acknowledged reply (a `201` to an enqueue, a `200` to a complete,
//! a task in a `200` to a dequeue: a lease shows the task exists) or from a task
//! seen after an earlier recovery: recovery only rebuilds what the
//! log on disk holds, and a SIGKILL loses nothing already written, so what one
//! recovery showed, every later one must show too. A request that got no reply is
//! unknown: its task may or may not exist, and any that does becomes a fact once
//! it is seen.
//!
//! Cost: each cycle checks every id from the first one not yet seen up to 1,000 past
//! the highest known id, every fact the cycle's replies made, and a random sample
//! of older ids; after the last cycle, every id. The seed fixes the kill times and
//! what each thread sends; the interleaving of the threads is the machine's.
//!
//! This is a test target of the server (`src/tests/`) with its own command
//! line (`harness = false`), run only by `tools/crashtest` (which builds it
//! with `cargo test --release --test crash --no-run` and runs the binary, so
//! its exit status stays its own); the server is started and killed by the
//! test kit (`src/tests/kit`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::Deserialize;
use serde_json::value::RawValue;
use tqx_testkit::{Launch, Tqx};

/// Lease asked for by consumers: longer than a whole run of 200 cycles would
/// normally take, so a task is leased at most once per server lifetime and a
/// second lease of it in one lifetime is reported as a double delivery.
const LEASE_MS: u64 = 600_000;
/// Retention set on every queue (the maximum, 30 days): completed tasks must
/// stay visible for the whole run, and the default (1 h) is too close to a long run.
const RETENTION_MS: u64 = 30 * 24 * 3_600_000;
/// Largest batch enqueue the producers send.
const BATCH_TASKS_MAX: u64 = 20;
/// Tasks a consumer leases per dequeue.
const DEQUEUE_TASKS_MAX: u32 = 10;
/// How long a dequeue waits when nothing is ready (keeps idle consumers from spinning).
const DEQUEUE_WAIT_MS: u64 = 100;
/// Ids checked past the highest id known to exist; tasks of enqueues that got no
/// reply sit above the acknowledged ones, and the scan goes on while it finds some.
const SCAN_MARGIN_IDS: u64 = 1_000;
/// Connections a scan spreads its GETs over (the machine has 2 cores; the server
/// answers GETs on its reactor without a sync, so a few connections saturate it).
const SCAN_CONNECTIONS: usize = 4;
/// GETs written on one connection before their replies are read.
const PIPELINE_DEPTH: usize = 128;
/// Ids fetched at once by a scan: bounds the replies held in memory (~300 B each).
const SCAN_BLOCK_IDS: u64 = 16_384;
/// Read and write timeout of every connection: a server that stops answering
/// fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for `listening` plus recovery (`GET /healthz` answering 200).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Slack on top of `interval:<ms>` for the age of an acknowledged write that may
/// be lost: the sync timer runs late on a loaded 2-core machine.
const INTERVAL_GRACE_MS: u64 = 200;
/// Largest reply body accepted by the client.
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Lines of the server's log printed when it fails.
const LOG_TAIL_LINES: usize = 40;

#[derive(Parser, Debug)]
#[command(about = "Kill tqx with SIGKILL mid-traffic, restart it, check every acknowledged write (docs/crashtest.md)")]
struct Args {
    /// Kill-restart-verify cycles.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    cycles: u32,
    /// Seed of the run (random when absent; printed first, pass it back to replay).
    #[arg(long)]
    seed: Option<u64>,
    /// The `tqx` binary to test (default: the one cargo built with this test).
    #[arg(long, value_name = "PATH", default_value = env!("CARGO_BIN_EXE_tqx"))]
    tqx: PathBuf,
    /// Data directory (must be absent or empty; default: a fresh one in the temp dir).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Producer threads (connections enqueuing).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=255))]
    producers: u32,
    /// Enqueue requests each producer writes before it reads their replies
    /// (1: one at a time). Deeper pipelines keep more enqueues unanswered at
    /// the kill, whose tasks consumers may already have leased.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: u32,
    /// Consumer threads (connections leasing and completing).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    consumers: u32,
    /// Tasks enqueued per second by all producers together (0: as fast as the
    /// server acknowledges). Bounds how fast the state, and so recovery time, grows.
    #[arg(long, default_value_t = 5_000)]
    enqueue_rate: u64,
    /// Queues the tasks are spread over.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    queues: u32,
    /// Longest traffic time before the kill, in ms (each cycle draws 50..=this).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    max_run_ms: u64,
    /// Durability mode passed to `tqx serve`: sync, interval:<ms> or memory.
    #[arg(long, value_name = "MODE", default_value = "sync")]
    durability: Mode,
    /// `tqx serve --checkpoint-interval-ms`: short, so that kills land before,
    /// during and after checkpoints into RocksDB and log truncations.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    checkpoint_interval_ms: u64,
    /// `tqx serve --memory-limit`: small, so that most payloads live only in
    /// RocksDB and are read back (tiered storage) when checked.
    #[arg(long, value_name = "BYTES", default_value = "4MiB")]
    memory_limit: String,
    /// Older ids re-checked at random after each restart (besides the new ones).
    #[arg(long, default_value_t = 256)]
    sample: u64,
    /// Do not make a fact of a leased task whose enqueue got no reply (the
    /// check that a lease never shows a task a kill can erase; issue 16). For
    /// bisecting a server from before that guarantee; every other check stays.
    #[arg(long)]
    no_lease_check: bool,
    /// Keep the data directory and the server log after a passing run.
    #[arg(long)]
    keep: bool,
}

/// What the server promises about an acknowledged write after a SIGKILL.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Every acknowledged write survives.
    Sync,
    /// Writes acknowledged more than `ms` (+ grace) before the kill survive.
    Interval { ms: u64 },
    /// Nothing survives: the restarted server must be empty.
    Memory,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "sync" => Ok(Mode::Sync),
            "memory" => Ok(Mode::Memory),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map(|ms| Mode::Interval { ms })
                .ok_or_else(|| format!("expected sync, memory or interval:<ms>, got {s:?}")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Sync => write!(f, "sync"),
            Mode::Interval { ms } => write!(f, "interval:{ms}"),
            Mode::Memory => write!(f, "memory"),
        }
    }
}

/// Why the run stops: a broken guarantee of the server, or a failure of the test
/// itself or of its environment (exit status 1 and 2).
enum Failure {
    Violation(String),
    Error(String),
}

impl Failure {
    /// The same failure, its message prefixed with where it happened.
    fn within(self, context: &str) -> Failure {
        match self {
            Failure::Violation(message) => Failure::Violation(format!("{context}: {message}")),
            Failure::Error(message) => Failure::Error(format!("{context}: {message}")),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Error(e.to_string())
    }
}

fn violation<T>(message: String) -> Result<T, Failure> {
    Err(Failure::Violation(message))
}

fn error<T>(message: String) -> Result<T, Failure> {
    Err(Failure::Error(message))
}

/// SplitMix64: small, fast and good enough to drive choices; one per thread,
/// each seeded from the run's generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high` (the modulo bias is irrelevant at these ranges).
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------------
// Payloads. Each task's payload names the enqueue that sent it, so a payload
// found on the server maps back to exactly one send, and its padding (0 to 255
// bytes, derived from the tag) varies the record sizes in the log.

/// `cycle << 40 | producer << 32 | sequence number`: unique per enqueued task.
type Tag = u64;

fn tag_of(cycle: u32, producer: u32, sequence: u32) -> Tag {
    (u64::from(cycle) << 40) | (u64::from(producer) << 32) | u64::from(sequence)
}

fn tag_name(tag: Tag) -> String {
    format!("{}-{}-{}", tag >> 40, (tag >> 32) & 0xFF, tag & 0xFFFF_FFFF)
}

fn parse_tag_name(name: &str) -> Option<Tag> {
    let mut parts = name.split('-');
    let cycle: u32 = parts.next()?.parse().ok().filter(|c| *c < 1 << 24)?;
    let producer: u32 = parts.next()?.parse().ok().filter(|p| *p < 1 << 8)?;
    let sequence: u32 = parts.next()?.parse().ok()?;
    parts.next().is_none().then(|| tag_of(cycle, producer, sequence))
}

fn payload_text(tag: Tag) -> String {
    let pad_bytes = (Rng(tag).next_u64() % 256) as usize;
    format!(r#"{{"p":"{}","pad":"{}"}}"#, tag_name(tag), "x".repeat(pad_bytes))
}

#[derive(Deserialize)]
struct PayloadTag<'a> {
    p: &'a str,
}

/// The tag of a payload if it has the shape this test sends.
fn parse_payload(payload: &RawValue) -> Option<Tag> {
    serde_json::from_str::<PayloadTag>(payload.get()).ok().and_then(|p| parse_tag_name(p.p))
}

fn queue_name(index: u8) -> String {
    format!("crash-{index}")
}

fn parse_queue_name(name: &str) -> Option<u8> {
    name.strip_prefix("crash-")?.parse().ok()
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one keep-alive connection, bodies framed by
// Content-Length (the server never sends chunked replies), pipelining by writing
// several requests before reading their replies.

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        // Requests are small and each waits for its reply: Nagle would add 40 ms.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection { reader: BufReader::with_capacity(64 << 10, stream.try_clone()?), writer: stream })
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
        let mut out = Vec::with_capacity(128 + body.map_or(0, str::len));
        push_request(&mut out, method, path, body);
        self.writer.write_all(&out)?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let (status, body) = tqx_testkit::read_response(&mut self.reader, RESPONSE_BYTES_MAX)?;
        Ok(Response { status, body })
    }
}

fn push_request(out: &mut Vec<u8>, method: &str, path: &str, body: Option<&str>) {
    // Writes into a Vec cannot fail.
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    match body {
        Some(body) => {
            let _ = write!(out, "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

/// `GET /v1/tasks/{id}` for every id, pipelined over [`SCAN_CONNECTIONS`]
/// connections; the replies come back in the order of `ids`.
fn fetch_tasks(addr: SocketAddr, ids: &[u64]) -> Result<Vec<Response>, Failure> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let share = ids.len().div_ceil(SCAN_CONNECTIONS);
    let results: Vec<io::Result<Vec<Response>>> = thread::scope(|scope| {
        let workers: Vec<_> = ids
            .chunks(share)
            .map(|chunk| {
                scope.spawn(move || -> io::Result<Vec<Response>> {
                    let mut connection = Connection::open(addr)?;
                    let mut responses = Vec::with_capacity(chunk.len());
                    let mut out = Vec::new();
                    for window in chunk.chunks(PIPELINE_DEPTH) {
                        out.clear();
                        for id in window {
                            push_request(&mut out, "GET", &format!("/v1/tasks/{id}"), None);
                        }
                        connection.writer.write_all(&out)?;
                        for _ in window {
                            responses.push(connection.read_response()?);
                        }
                    }
                    Ok(responses)
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().expect("scan thread panicked")).collect()
    });
    let mut responses = Vec::with_capacity(ids.len());
    for result in results {
        match result {
            Ok(part) => responses.extend(part),
            Err(e) => return error(format!("GET /v1/tasks/... failed on a healthy server: {e}")),
        }
    }
    Ok(responses)
}

// ---------------------------------------------------------------------------
// The server process.

/// The server under test, started by the test kit (`src/tests/kit`);
/// dropping it kills it, whatever ended the run.
struct Server {
    tqx: Tqx,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl Server {
    /// Starts `tqx serve` and waits until `GET /healthz` answers 200; returns the
    /// server and the time from spawn to ready (which includes the log's replay).
    fn start(args: &Args, data: &Path, log_path: &Path, label: &str) -> Result<(Server, Duration), Failure> {
        let mut log = OpenOptions::new().create(true).append(true).open(log_path)?;
        writeln!(log, "=== crashtest: {label}")?;
        let launch = Launch::new(&args.tqx, data, log_path)
            .args(["--durability", &args.durability.to_string(), "--no-pin"])
            .args(["--checkpoint-interval-ms", &args.checkpoint_interval_ms.to_string()])
            .args(["--memory-limit", &args.memory_limit]);
        // The `listening` lines come before recovery: both within the timeout.
        let tqx = match launch.start(READY_TIMEOUT) {
            Ok(tqx) => tqx,
            Err(failure) => return violation(format!("{failure}\n{}", log_tail(log_path))),
        };
        let server = Server { addr: tqx.http, tqx, log_path: log_path.to_path_buf() };
        match server.tqx.wait_ready(READY_TIMEOUT.saturating_sub(server.tqx.started.elapsed())) {
            Ok(ready) => Ok((server, ready)),
            Err(what) => server.failed(&what),
        }
    }

    /// A failure of the server process, with the end of its log.
    fn failed<T>(&self, what: &str) -> Result<T, Failure> {
        violation(format!("tqx serve {what}\n{}", log_tail(&self.log_path)))
    }

    /// SIGKILL; returns the instant just before it was sent.
    fn kill(&mut self) -> Result<Instant, Failure> {
        match self.tqx.kill() {
            Ok(at) => Ok(at),
            Err(what) => self.failed(&what),
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let tail = tqx_testkit::tail_lines(&text, LOG_TAIL_LINES, "\n");
    format!("--- last lines of {} ---\n{tail}\n---", path.display())
}

// ---------------------------------------------------------------------------
// Traffic.

#[derive(Deserialize)]
struct EnqueueReply<'a> {
    id: &'a str,
}

#[derive(Deserialize)]
struct BatchReply<'a> {
    #[serde(borrow)]
    ids: Vec<&'a str>,
}

#[derive(Deserialize)]
struct DequeueReply<'a> {
    #[serde(borrow)]
    tasks: Vec<LeasedView<'a>>,
}

#[derive(Deserialize)]
struct LeasedView<'a> {
    id: &'a str,
    queue: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
    lease: &'a str,
}

#[derive(Default)]
struct ProducerOutcome {
    /// Every tag sent, acknowledged or not.
    sent: Vec<Tag>,
    /// (id, tag, queue, when the reply arrived) of every acknowledged task.
    acked: Vec<(u64, Tag, u8, Instant)>,
    /// Tasks whose enqueue got no reply, or a 5xx.
    unknown: u64,
}

/// One enqueue request a producer sent: its tags, queue, path and whether it
/// is a batch.
struct Sent {
    tags: Vec<Tag>,
    queue: u8,
    path: String,
    batch: bool,
}

/// Enqueues until its connection dies (the kill) or `stop` is set, writing
/// `--pipeline` requests before reading their replies in order.
fn produce(
    addr: SocketAddr,
    cycle: u32,
    producer: u32,
    args: &Args,
    seed: u64,
    stop: &AtomicBool,
) -> Result<ProducerOutcome, Failure> {
    let mut rng = Rng(seed);
    let queues = args.queues;
    let tasks_per_s = args.enqueue_rate as f64 / f64::from(args.producers);
    let started = Instant::now();
    let mut outcome = ProducerOutcome::default();
    let Ok(mut connection) = Connection::open(addr) else { return Ok(outcome) };
    let mut sequence: u32 = 0;
    let mut out = Vec::new();
    let mut in_flight: Vec<Sent> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        in_flight.clear();
        // Paced per window, so that a window's requests leave together.
        if tasks_per_s > 0.0 {
            let due = Duration::from_secs_f64(f64::from(sequence) / tasks_per_s);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                thread::sleep(early);
            }
        }
        for _ in 0..args.pipeline {
            let queue = rng.range(0, u64::from(queues) - 1) as u8;
            let batch = rng.next_u64() % 2 == 0;
            let count = if batch { rng.range(1, BATCH_TASKS_MAX) as u32 } else { 1 };
            let tags: Vec<Tag> = (sequence..sequence + count).map(|n| tag_of(cycle, producer, n)).collect();
            sequence += count;
            outcome.sent.extend(&tags);
            let (path, body) = if batch {
                let entries: Vec<String> =
                    tags.iter().map(|t| format!(r#"{{"payload":{}}}"#, payload_text(*t))).collect();
                (
                    format!("/v1/queues/{}/tasks/batch", queue_name(queue)),
                    format!(r#"{{"tasks":[{}]}}"#, entries.join(",")),
                )
            } else {
                (
                    format!("/v1/queues/{}/tasks", queue_name(queue)),
                    format!(r#"{{"payload":{}}}"#, payload_text(tags[0])),
                )
            };
            push_request(&mut out, "POST", &path, Some(&body));
            in_flight.push(Sent { tags, queue, path, batch });
        }
        if connection.writer.write_all(&out).is_err() {
            outcome.unknown += in_flight.iter().map(|sent| sent.tags.len() as u64).sum::<u64>();
            break;
        }
        for (index, sent) in in_flight.iter().enumerate() {
            let response = match connection.read_response() {
                Ok(response) => response,
                Err(_) => {
                    outcome.unknown += in_flight[index..].iter().map(|sent| sent.tags.len() as u64).sum::<u64>();
                    return Ok(outcome);
                }
            };
            let at = Instant::now();
            let Sent { tags, queue, path, batch } = sent;
            let ids: Vec<&str> = match response.status {
                200 | 201 if *batch => match serde_json::from_slice::<BatchReply>(&response.body) {
                    Ok(reply) => reply.ids,
                    Err(e) => return error(format!("POST {path}: unparsable reply ({e}): {}", response.text())),
                },
                201 => match serde_json::from_slice::<EnqueueReply>(&response.body) {
                    Ok(reply) => vec![reply.id],
                    Err(e) => return error(format!("POST {path}: unparsable reply ({e}): {}", response.text())),
                },
                500..=599 => {
                    outcome.unknown += tags.len() as u64;
                    continue;
                }
                status => return error(format!("POST {path} answered {status}: {}", response.text())),
            };
            if ids.len() != tags.len() {
                return violation(format!(
                    "POST {path} of {} tasks answered {} ids: {}",
                    tags.len(),
                    ids.len(),
                    response.text()
                ));
            }
            for (id, tag) in ids.iter().zip(tags) {
                let Ok(id) = id.parse::<u64>() else { return error(format!("POST {path}: bad id {id:?}")) };
                outcome.acked.push((id, *tag, *queue, at));
            }
        }
    }
    Ok(outcome)
}

#[derive(Default)]
struct ConsumerOutcome {
    /// (id, tag, queue, when the dequeue's 200 arrived) of every task leased,
    /// or the payload text when it is not one this test sends.
    leased: Vec<(u64, Result<Tag, String>, u8, Instant)>,
    /// (index into `leased`, when the 200 arrived) of every acknowledged completion.
    completed: Vec<(usize, Instant)>,
}

/// Leases and completes until its connection dies (the kill) or `stop` is set.
fn consume(addr: SocketAddr, queues: u32, stop: &AtomicBool) -> Result<ConsumerOutcome, Failure> {
    let mut outcome = ConsumerOutcome::default();
    let Ok(mut connection) = Connection::open(addr) else { return Ok(outcome) };
    let names: Vec<String> = (0..queues as u8).map(|q| format!("\"{}\"", queue_name(q))).collect();
    let dequeue = format!(
        r#"{{"queues":[{}],"max":{DEQUEUE_TASKS_MAX},"lease_ms":{LEASE_MS},"wait_ms":{DEQUEUE_WAIT_MS}}}"#,
        names.join(",")
    );
    while !stop.load(Ordering::Relaxed) {
        let Ok(response) = connection.request("POST", "/v1/dequeue", Some(&dequeue)) else { break };
        if response.status != 200 {
            if response.status >= 500 {
                continue;
            }
            return error(format!("POST /v1/dequeue answered {}: {}", response.status, response.text()));
        }
        let reply: DequeueReply = match serde_json::from_slice(&response.body) {
            Ok(reply) => reply,
            Err(e) => return error(format!("POST /v1/dequeue: unparsable reply ({e}): {}", response.text())),
        };
        // Every completion of the batch is written at once and the replies read
        // in order (pipelining): they share group commits, so consumers keep up
        // with producers instead of paying one sync per task in turn.
        let at = Instant::now();
        let first = outcome.leased.len();
        let mut out = Vec::new();
        for task in &reply.tasks {
            let (Ok(id), Some(queue)) = (task.id.parse::<u64>(), parse_queue_name(task.queue)) else {
                return violation(format!("dequeue returned a task with id {:?} in queue {:?}", task.id, task.queue));
            };
            let tag = parse_payload(task.payload).ok_or_else(|| task.payload.get().to_string());
            outcome.leased.push((id, tag, queue, at));
            let body = format!(r#"{{"lease":"{}"}}"#, task.lease);
            push_request(&mut out, "POST", &format!("/v1/tasks/{id}/complete"), Some(&body));
        }
        if connection.writer.write_all(&out).is_err() {
            break;
        }
        for index in first..outcome.leased.len() {
            let Ok(response) = connection.read_response() else { return Ok(outcome) };
            match response.status {
                200 => outcome.completed.push((index, Instant::now())),
                500..=599 => {}
                status => {
                    return violation(format!(
                        "completing task {} with the lease just granted answered {status}: {}",
                        outcome.leased[index].0,
                        response.text()
                    ))
                }
            }
        }
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------
// The model: what must hold on the server.

struct Fact {
    tag: Tag,
    queue: u8,
    /// Known to be completed (acknowledged, or seen after a recovery).
    completed: bool,
    /// Set while the enqueue's acknowledgement has not been checked after a
    /// restart: when it arrived (interval mode may lose it if recent).
    enqueue_pending: Option<Instant>,
    /// The same for the completion.
    completion_pending: Option<Instant>,
    /// The first reply or check that made it a fact.
    origin: Origin,
}

/// What first showed a task to exist.
#[derive(Clone, Copy)]
enum Origin {
    /// A `201` (or batch `200`/`201`) to its enqueue.
    AckedEnqueue,
    /// A `200` to a dequeue that leased it, its enqueue without a reply yet.
    Leased,
    /// Found by a check after a recovery, its enqueue without a reply.
    Seen,
}

impl Fact {
    fn describe(&self, id: u64) -> String {
        let origin = match self.origin {
            Origin::AckedEnqueue => "acknowledged enqueue",
            Origin::Leased => "enqueue without reply, leased by a dequeue reply",
            Origin::Seen => "enqueue without reply, seen after a recovery",
        };
        format!("task {id} (payload p={}, queue {}, {origin})", tag_name(self.tag), queue_name(self.queue))
    }
}

#[derive(Deserialize)]
struct TaskView<'a> {
    id: &'a str,
    queue: &'a str,
    state: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Default)]
struct Totals {
    acked_enqueues: u64,
    acked_completions: u64,
    /// Tasks in dequeue replies.
    leases: u64,
    /// Of those, tasks whose enqueue had no reply (yet): facts only the lease
    /// made, checked after the restart like an acknowledged enqueue.
    leases_of_unacked_enqueues: u64,
    unknown_enqueues: u64,
    /// Acknowledged writes lost within the loss window of interval or memory mode.
    lost_in_window: u64,
}

/// May a write acknowledged at `acked_at` (None: checked after an earlier
/// restart) be missing after a kill at `killed_at`?
fn loss_allowed(mode: Mode, acked_at: Option<Instant>, killed_at: Instant) -> bool {
    match mode {
        Mode::Sync => false,
        Mode::Memory => true,
        Mode::Interval { ms } => acked_at
            .is_some_and(|at| killed_at.saturating_duration_since(at) < Duration::from_millis(ms + INTERVAL_GRACE_MS)),
    }
}

struct Model {
    mode: Mode,
    /// Whether leases of tasks whose enqueue got no reply become facts.
    lease_check: bool,
    sent: HashSet<Tag>,
    facts: HashMap<u64, Fact>,
    id_of_tag: HashMap<Tag, u64>,
    /// Ids below this were scanned after some earlier restart.
    scanned_below: u64,
    /// Highest id ever acknowledged or seen (only grows).
    max_id_seen: u64,
    /// Lowest id whose task was lost within the loss window since the last
    /// verification: new tasks may reuse it, so the next scan starts there.
    lowest_lost: Option<u64>,
    totals: Totals,
}

impl Model {
    fn new(mode: Mode, lease_check: bool) -> Model {
        Model {
            mode,
            lease_check,
            sent: HashSet::new(),
            facts: HashMap::new(),
            id_of_tag: HashMap::new(),
            scanned_below: 1,
            max_id_seen: 0,
            lowest_lost: None,
            totals: Totals::default(),
        }
    }

    /// Adds what one cycle's threads saw, checking it against what was known.
    fn absorb(&mut self, producers: Vec<ProducerOutcome>, consumers: Vec<ConsumerOutcome>) -> Result<(), Failure> {
        for outcome in &producers {
            self.sent.extend(&outcome.sent);
            self.totals.unknown_enqueues += outcome.unknown;
        }
        for outcome in producers {
            for (id, tag, queue, at) in outcome.acked {
                if let Some(fact) = self.facts.get(&id) {
                    return violation(format!(
                        "id {id} acknowledged for the enqueue of p={} but already held by {}",
                        tag_name(tag),
                        fact.describe(id)
                    ));
                }
                if let Some(other) = self.id_of_tag.insert(tag, id) {
                    return violation(format!(
                        "payload p={} acknowledged as both task {other} and {id}",
                        tag_name(tag)
                    ));
                }
                self.facts.insert(
                    id,
                    Fact {
                        tag,
                        queue,
                        completed: false,
                        enqueue_pending: Some(at),
                        completion_pending: None,
                        origin: Origin::AckedEnqueue,
                    },
                );
                self.max_id_seen = self.max_id_seen.max(id);
                self.totals.acked_enqueues += 1;
            }
        }
        let mut leased_now = HashSet::new();
        for outcome in &consumers {
            for (id, tag, queue, leased_at) in &outcome.leased {
                let tag = match tag {
                    Ok(tag) if self.sent.contains(tag) => *tag,
                    Ok(tag) => {
                        return violation(format!("dequeue returned task {id} with p={}, never sent", tag_name(*tag)))
                    }
                    Err(text) => {
                        return violation(format!("dequeue returned task {id} with a payload never sent: {text}"))
                    }
                };
                if !leased_now.insert(*id) {
                    return violation(format!(
                        "task {id} (p={}) was leased twice by one server process",
                        tag_name(tag)
                    ));
                }
                if let Some(fact) = self.facts.get(id) {
                    if fact.tag != tag || fact.queue != *queue {
                        return violation(format!(
                            "dequeue returned task {id} as p={} in {}, but it is {}",
                            tag_name(tag),
                            queue_name(*queue),
                            fact.describe(*id)
                        ));
                    }
                    if fact.completed {
                        return violation(format!("{} was completed, yet leased again", fact.describe(*id)));
                    }
                } else if let Some(other) = self.id_of_tag.get(&tag) {
                    return violation(format!(
                        "dequeue returned p={} as task {id}, but it is task {other}",
                        tag_name(tag)
                    ));
                } else {
                    self.totals.leases_of_unacked_enqueues += 1;
                    if self.lease_check {
                        // A lease is a reply that shows the task exists: in `sync`
                        // mode a kill right after it must not erase the task, even
                        // if its enqueue's reply never came (issue 16).
                        self.facts.insert(
                            *id,
                            Fact {
                                tag,
                                queue: *queue,
                                completed: false,
                                enqueue_pending: Some(*leased_at),
                                completion_pending: None,
                                origin: Origin::Leased,
                            },
                        );
                        self.id_of_tag.insert(tag, *id);
                        self.max_id_seen = self.max_id_seen.max(*id);
                    }
                }
                self.totals.leases += 1;
            }
        }
        for outcome in consumers {
            for (index, at) in outcome.completed {
                let (id, tag, queue, _) = &outcome.leased[index];
                let tag = *tag.as_ref().expect("checked above");
                let fact = self.facts.entry(*id).or_insert_with(|| Fact {
                    tag,
                    queue: *queue,
                    completed: false,
                    enqueue_pending: Some(at),
                    completion_pending: None,
                    origin: Origin::Leased,
                });
                fact.completed = true;
                fact.completion_pending = Some(at);
                self.id_of_tag.insert(tag, *id);
                self.max_id_seen = self.max_id_seen.max(*id);
                self.totals.acked_completions += 1;
            }
        }
        Ok(())
    }

    /// Checks one `GET /v1/tasks/{id}` reply against the facts, then records what
    /// it showed as facts; returns whether the task exists.
    fn check(&mut self, id: u64, response: &Response, killed_at: Instant) -> Result<bool, Failure> {
        let get = format!("GET /v1/tasks/{id}");
        match response.status {
            200 => {}
            404 => {
                let Some(fact) = self.facts.get(&id) else { return Ok(false) };
                if !loss_allowed(self.mode, fact.enqueue_pending, killed_at) {
                    return violation(format!(
                        "lost: {} is missing after the restart: {get} answered 404",
                        fact.describe(id)
                    ));
                }
                let tag = fact.tag;
                self.id_of_tag.remove(&tag);
                self.facts.remove(&id);
                self.totals.lost_in_window += 1;
                self.lowest_lost = Some(self.lowest_lost.map_or(id, |lowest| lowest.min(id)));
                return Ok(false);
            }
            status => return error(format!("{get} answered {status}: {}", response.text())),
        }
        let task: TaskView = match serde_json::from_slice(&response.body) {
            Ok(task) => task,
            Err(e) => return violation(format!("{get}: unparsable task ({e}): {}", response.text())),
        };
        if task.id != id.to_string() {
            return violation(format!("{get} returned task {:?}", task.id));
        }
        let Some(tag) = parse_payload(task.payload).filter(|tag| self.sent.contains(tag)) else {
            return violation(format!("invented: task {id} holds a payload never sent: {}", task.payload.get()));
        };
        let expected = payload_text(tag);
        if task.payload.get() != expected {
            return violation(format!("task {id}: payload expected {expected}, found {}", task.payload.get()));
        }
        let Some(queue) = parse_queue_name(task.queue) else {
            return violation(format!("task {id} (p={}) is in an unknown queue {:?}", tag_name(tag), task.queue));
        };
        if let Some(other) = self.id_of_tag.get(&tag).filter(|other| **other != id) {
            return violation(format!("duplicate: payload p={} is task {other} and also task {id}", tag_name(tag)));
        }
        let completed_now = task.state == "completed";
        match self.facts.get_mut(&id) {
            Some(fact) => {
                if fact.tag != tag || fact.queue != queue {
                    return violation(format!(
                        "{} now holds p={} in {}",
                        fact.describe(id),
                        tag_name(tag),
                        queue_name(queue)
                    ));
                }
                if fact.completed && !completed_now {
                    if !loss_allowed(self.mode, fact.completion_pending, killed_at) {
                        return violation(format!(
                            "lost completion: {} was completed (acknowledged or seen), now {:?}",
                            fact.describe(id),
                            task.state
                        ));
                    }
                    fact.completed = false;
                    self.totals.lost_in_window += 1;
                }
                fact.completed |= completed_now;
                fact.enqueue_pending = None;
                fact.completion_pending = None;
            }
            None => {
                self.facts.insert(
                    id,
                    Fact {
                        tag,
                        queue,
                        completed: completed_now,
                        enqueue_pending: None,
                        completion_pending: None,
                        origin: Origin::Seen,
                    },
                );
                self.id_of_tag.insert(tag, id);
            }
        }
        self.max_id_seen = self.max_id_seen.max(id);
        Ok(true)
    }

    fn check_ids(&mut self, addr: SocketAddr, ids: &[u64], killed_at: Instant) -> Result<Option<u64>, Failure> {
        let mut max_found = None;
        for block in ids.chunks(SCAN_BLOCK_IDS as usize) {
            let responses = fetch_tasks(addr, block)?;
            for (id, response) in block.iter().zip(&responses) {
                if self.check(*id, response, killed_at)? {
                    max_found = Some(*id);
                }
            }
        }
        Ok(max_found)
    }

    /// Checks every id from `from` up to [`SCAN_MARGIN_IDS`] past the highest one
    /// known or found; returns the ids checked and the highest found.
    fn scan(&mut self, addr: SocketAddr, from: u64, killed_at: Instant) -> Result<(u64, Option<u64>), Failure> {
        let mut low = from;
        let mut high = self.max_id_seen.max(from) + SCAN_MARGIN_IDS;
        let mut max_found = None;
        loop {
            let ids: Vec<u64> = (low..=high).collect();
            if let Some(found) = self.check_ids(addr, &ids, killed_at)? {
                max_found = Some(found);
            }
            let top = max_found.unwrap_or(0).max(self.max_id_seen);
            if top + SCAN_MARGIN_IDS <= high {
                return Ok((high - from + 1, max_found));
            }
            low = high + 1;
            high = top + SCAN_MARGIN_IDS;
        }
    }

    /// After a restart: every id not scanned yet, every fact the last cycle
    /// acknowledged, and `sample` older ids at random. Returns the ids checked.
    fn verify_cycle(
        &mut self,
        addr: SocketAddr,
        killed_at: Instant,
        sample: u64,
        rng: &mut Rng,
    ) -> Result<u64, Failure> {
        if matches!(self.mode, Mode::Memory) {
            return self.verify_all(addr, killed_at);
        }
        let from = self.scanned_below;
        let mut targeted: Vec<u64> = self
            .facts
            .iter()
            .filter(|(id, fact)| **id < from && (fact.enqueue_pending.is_some() || fact.completion_pending.is_some()))
            .map(|(id, _)| *id)
            .collect();
        if from > 1 {
            targeted.extend((0..sample).map(|_| rng.range(1, from - 1)));
        }
        targeted.sort_unstable();
        targeted.dedup();
        self.check_ids(addr, &targeted, killed_at)?;
        let (scanned, max_found) = self.scan(addr, from, killed_at)?;
        // Ids of tasks lost within the window are reused by the next enqueues.
        self.scanned_below = max_found.map_or(from, |id| id + 1).min(self.lowest_lost.take().unwrap_or(u64::MAX));
        let mut unchecked =
            self.facts.iter().filter(|(_, f)| f.enqueue_pending.is_some() || f.completion_pending.is_some());
        if let Some((id, fact)) = unchecked.next() {
            return error(format!("internal: an acknowledged fact was not checked: {}", fact.describe(*id)));
        }
        Ok(targeted.len() as u64 + scanned)
    }

    /// Every id from 1 up to the margin past the highest known.
    fn verify_all(&mut self, addr: SocketAddr, killed_at: Instant) -> Result<u64, Failure> {
        let (scanned, max_found) = self.scan(addr, 1, killed_at)?;
        self.scanned_below = max_found.map_or(1, |id| id + 1).min(self.lowest_lost.take().unwrap_or(u64::MAX));
        Ok(scanned)
    }
}

// ---------------------------------------------------------------------------

fn random_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    Rng(nanos ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// Sets a long retention on every queue so completed tasks stay checkable.
fn configure_queues(addr: SocketAddr, queues: u32) -> Result<(), Failure> {
    let mut connection = Connection::open(addr)?;
    for q in 0..queues as u8 {
        let path = format!("/v1/queues/{}", queue_name(q));
        let response = connection.request("PUT", &path, Some(&format!(r#"{{"retention_ms":{RETENTION_MS}}}"#)))?;
        if response.status != 200 {
            return error(format!("PUT {path} answered {}: {}", response.status, response.text()));
        }
    }
    Ok(())
}

struct Run<'a> {
    args: &'a Args,
    seed: u64,
    data: &'a Path,
    log_path: &'a Path,
}

impl Run<'_> {
    /// Traffic, kill, restart, verification.
    fn cycle(&self, cycle: u32, server: &mut Server, model: &mut Model, rng: &mut Rng) -> Result<(), Failure> {
        let args = self.args;
        configure_queues(server.addr, args.queues)?;
        let run_ms = rng.range(50, args.max_run_ms);
        let seeds: Vec<u64> = (0..args.producers).map(|_| rng.next_u64()).collect();
        let stop = AtomicBool::new(false);
        let addr = server.addr;
        let (killed_at, producers, consumers) = thread::scope(|scope| {
            let producers: Vec<_> = (0..args.producers)
                .map(|p| {
                    let (stop, seed) = (&stop, seeds[p as usize]);
                    scope.spawn(move || produce(addr, cycle, p, args, seed, stop))
                })
                .collect();
            let consumers: Vec<_> =
                (0..args.consumers).map(|_| scope.spawn(|| consume(addr, args.queues, &stop))).collect();
            thread::sleep(Duration::from_millis(run_ms));
            let killed_at = server.kill();
            stop.store(true, Ordering::Relaxed);
            let producers: Vec<_> = producers.into_iter().map(|t| t.join().expect("producer panicked")).collect();
            let consumers: Vec<_> = consumers.into_iter().map(|t| t.join().expect("consumer panicked")).collect();
            (killed_at, producers, consumers)
        });
        let killed_at = killed_at?;
        let producers = producers.into_iter().collect::<Result<Vec<_>, _>>()?;
        let consumers = consumers.into_iter().collect::<Result<Vec<_>, _>>()?;
        let acked_enqueues: usize = producers.iter().map(|p| p.acked.len()).sum();
        let acked_completions: usize = consumers.iter().map(|c| c.completed.len()).sum();
        let unknown: u64 = producers.iter().map(|p| p.unknown).sum();
        let leased: usize = consumers.iter().map(|c| c.leased.len()).sum();
        model.absorb(producers, consumers)?;
        let (restarted, ready) =
            Server::start(args, self.data, self.log_path, &format!("restart after cycle {cycle}"))?;
        *server = restarted;
        let verify_started = Instant::now();
        let checked = model.verify_cycle(server.addr, killed_at, args.sample, rng)?;
        println!(
            "cycle {cycle}/{}: run_ms={run_ms} acked_enqueues={acked_enqueues} acked_completions={acked_completions} \
             unknown_enqueues={unknown} recovery_ms={} checked={checked} verify_ms={} known_tasks={} leased={leased}",
            args.cycles,
            ready.as_millis(),
            verify_started.elapsed().as_millis(),
            model.facts.len()
        );
        Ok(())
    }

    fn run(&self) -> Result<Model, Failure> {
        let args = self.args;
        let mut rng = Rng(self.seed);
        let mut model = Model::new(args.durability, !args.no_lease_check);
        let (mut server, _) = Server::start(args, self.data, self.log_path, "start")?;
        let run_started = Instant::now();
        for cycle in 1..=args.cycles {
            self.cycle(cycle, &mut server, &mut model, &mut rng).map_err(|f| f.within(&format!("cycle {cycle}")))?;
        }
        let final_started = Instant::now();
        let checked = model.verify_all(server.addr, Instant::now()).map_err(|f| f.within("final check"))?;
        println!(
            "crashtest: final check of every id: checked={checked} known_tasks={} in {} ms; total {} s",
            model.facts.len(),
            final_started.elapsed().as_millis(),
            run_started.elapsed().as_secs()
        );
        Ok(model)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(random_seed);
    println!("crashtest: seed={seed} cycles={}", args.cycles);
    let data = match &args.data {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("tqx-crashtest-{seed}-{}", std::process::id())),
    };
    if fs::read_dir(&data).is_ok_and(|mut entries| entries.next().is_some()) {
        eprintln!("crashtest: {} is not empty; the test needs a fresh data directory", data.display());
        return ExitCode::from(2);
    }
    if let Err(e) = fs::create_dir_all(&data) {
        eprintln!("crashtest: cannot create {}: {e}", data.display());
        return ExitCode::from(2);
    }
    let mut log_name = data.file_name().unwrap_or_default().to_os_string();
    log_name.push(".tqx-stderr.log");
    let log_path = data.with_file_name(log_name);
    let _ = File::create(&log_path);
    let run = Run { args: &args, seed, data: &data, log_path: &log_path };
    let replay = format!(
        "replay: tools/crashtest --seed {seed} --cycles {} --producers {} --pipeline {} --consumers {} --queues {} \
         --max-run-ms {} --enqueue-rate {} --sample {} --durability {} --checkpoint-interval-ms {} --memory-limit {}{}",
        args.cycles,
        args.producers,
        args.pipeline,
        args.consumers,
        args.queues,
        args.max_run_ms,
        args.enqueue_rate,
        args.sample,
        args.durability,
        args.checkpoint_interval_ms,
        args.memory_limit,
        if args.no_lease_check { " --no-lease-check" } else { "" }
    );
    match run.run() {
        Ok(model) => {
            let totals = &model.totals;
            let window = match args.durability {
                Mode::Sync => String::new(),
                _ => format!(", lost_in_window={}", totals.lost_in_window),
            };
            println!(
                "crashtest: passed {} cycles, seed={seed}, acknowledged enqueues={}, completions={}, leases={} \
                 (of enqueues without reply: {}), lost=0, invented=0, duplicates=0{window}",
                args.cycles,
                totals.acked_enqueues,
                totals.acked_completions,
                totals.leases,
                totals.leases_of_unacked_enqueues
            );
            if args.keep {
                println!("crashtest: kept {} and {}", data.display(), log_path.display());
            } else {
                let _ = fs::remove_dir_all(&data);
                let _ = fs::remove_file(&log_path);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let (kind, message, code) = match failure {
                Failure::Violation(message) => ("VIOLATION", message, 1),
                Failure::Error(message) => ("ERROR", message, 2),
            };
            println!("crashtest: {kind} (seed={seed}): {message}");
            println!("crashtest: data kept in {}, server log in {}", data.display(), log_path.display());
            println!("crashtest: {replay}");
            ExitCode::from(code)
        }
    }
}
