//! The vocabulary of a benchmark run and the lines of its results file.
//!
//! A results file is JSON lines, one [`Line`] each, tagged by `kind`:
//!
//! ```text
//! {"kind":"meta", ...}                                   the machine, the command, the settings
//! {"kind":"fsync","run":1,"fdatasync_us":{...}}          `tqx-bench fsync` in run 1
//! {"kind":"result","run":1,"cell":{...},"bench":{...}}   one measurement: the cell asked for and
//!                                                        the line `tqx-bench run` printed
//! {"kind":"unsupported","run":1,"cell":{...}}            `tqx-bench` exited 3
//! {"kind":"failure","run":1,"cell":{...},"message":"…"}  a server or `tqx-bench` failed
//! {"kind":"done","elapsed_seconds":612.0}                 the run finished
//! ```
//!
//! The `bench` object is kept whole (fields this code does not know survive a
//! read and a rewrite), so the file is the raw record of what the load generator
//! saw; the report is computed from it alone.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::load::{Scenario, System};

/// The server process a [`System`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Tqx,
    Redis,
    Beanstalkd,
    RabbitMq,
    Nats,
}

/// What the report shows about each system under test (`tqx-binary` is
/// "ours" in every ratio; `tqx-http` is shown beside it).
impl System {
    /// What the load generator sends, for the report's legend.
    pub fn describe(self) -> &'static str {
        match self {
            System::TqxBinary => "TaskQueueX, binary protocol (docs/wire.md)",
            System::TqxHttp => "TaskQueueX, HTTP/1.1 + JSON (docs/http-api.md)",
            System::Redis => "Redis lists: LPUSH / RPOP (a popped task is gone: at-most-once)",
            System::RedisReliable => "Redis reliable queue: LPUSH / LMOVE to a processing list / LREM",
            System::Beanstalkd => "beanstalkd: put / reserve / delete",
            System::RabbitMq => {
                "RabbitMQ 3.10, AMQP 0-9-1: a quorum queue; basic.publish answered by its publisher confirm / \
                 a consumer with manual acks (basic.consume, prefetch = the depth) then basic.ack"
            }
            System::Nats => {
                "NATS JetStream 2.9: a file-storage work-queue stream; publish answered by its ack / \
                 a pull consumer (fetch 1, no wait) then a synchronous ack"
            }
        }
    }

    pub fn server(self) -> Server {
        match self {
            System::TqxBinary | System::TqxHttp => Server::Tqx,
            System::Redis | System::RedisReliable => Server::Redis,
            System::Beanstalkd => Server::Beanstalkd,
            System::RabbitMq => Server::RabbitMq,
            System::Nats => Server::Nats,
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A durability level, matched across the three servers (the issue's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Sync,
    Interval,
    Memory,
}

/// `interval:<ms>` and the peers' matching settings: Redis `everysec`,
/// beanstalkd `-f 1000`.
pub const INTERVAL_MS: u32 = 1_000;

impl Durability {
    pub const ALL: [Durability; 3] = [Durability::Sync, Durability::Interval, Durability::Memory];

    /// `tqx serve --durability` argument, also the name the report shows.
    pub fn tqx_mode(self) -> String {
        match self {
            Durability::Sync => "sync".to_string(),
            Durability::Interval => format!("interval:{INTERVAL_MS}"),
            Durability::Memory => "memory".to_string(),
        }
    }

    /// The Redis settings that match (appended to `redis-server`'s arguments).
    pub fn redis_args(self) -> Vec<String> {
        let args: &[&str] = match self {
            Durability::Sync => &["--appendonly", "yes", "--appendfsync", "always"],
            Durability::Interval => &["--appendonly", "yes", "--appendfsync", "everysec"],
            Durability::Memory => &["--appendonly", "no"],
        };
        args.iter().map(|a| a.to_string()).collect()
    }

    /// The beanstalkd settings that match; `dir` is its binlog directory.
    pub fn beanstalkd_args(self, dir: &str) -> Vec<String> {
        match self {
            Durability::Sync => vec!["-b".into(), dir.into(), "-f".into(), "0".into()],
            Durability::Interval => vec!["-b".into(), dir.into(), "-f".into(), INTERVAL_MS.to_string()],
            Durability::Memory => Vec::new(),
        }
    }

    pub fn redis_describe(self) -> &'static str {
        match self {
            Durability::Sync => "`appendonly yes`, `appendfsync always`",
            Durability::Interval => "`appendonly yes`, `appendfsync everysec`",
            Durability::Memory => "`appendonly no` (and `save ''`)",
        }
    }

    pub fn beanstalkd_describe(self) -> &'static str {
        match self {
            Durability::Sync => "`-b DIR -f 0`",
            Durability::Interval => "`-b DIR -f 1000`",
            Durability::Memory => "no binlog",
        }
    }

    /// RabbitMQ's setting in this level's rows. A quorum queue on one node
    /// confirms a publish once its Raft log entry is written and synced: ra
    /// 2.2 (RabbitMQ 3.10.8) writes each batch of entries to its WAL in one
    /// `write` and calls `fdatasync` (its default `wal_sync_method`) before it
    /// tells the queue the entries are written; the queue commits (a majority
    /// of one) and the channel confirms. So it matches `sync`, with group
    /// commit like ours. It has nothing matching the other two levels.
    pub fn rabbitmq_describe(self) -> &'static str {
        match self {
            Durability::Sync => {
                "quorum queue, publisher confirms: a confirm follows the Raft WAL's `write` + `fdatasync` \
                 (one per batch; a majority of 1 node)"
            }
            Durability::Interval | Durability::Memory => "not run (no matching mode)",
        }
    }

    /// NATS JetStream 2.9.10's only file-storage behaviour, shown in the
    /// `sync` rows because that is what the issue compares it with, but its
    /// own class: a stream's store flushes in place (stream.go sets
    /// `AsyncFlush = false`), so a publish is acknowledged once `write(2)`
    /// has put it in the page cache; the blocks are `fsync`ed every 2 minutes
    /// (stream.go's `SyncInterval`, not configurable before 2.10's
    /// `sync_interval`). A process crash loses nothing acknowledged; a power
    /// loss can lose up to 2 minutes.
    pub fn nats_describe(self) -> &'static str {
        match self {
            Durability::Sync => {
                "**its own class, not `sync`**: file storage; acknowledged once written to the file (the page \
                 cache), `fsync`ed every 2 minutes (2.9.10 cannot sync each message)"
            }
            Durability::Interval | Durability::Memory => "not run",
        }
    }

    pub fn parse(text: &str) -> Option<Durability> {
        Durability::ALL.into_iter().find(|d| d.tqx_mode() == text || d.key() == text)
    }

    /// Short name (`interval` rather than `interval:1000`) for file names.
    pub fn key(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Interval => "interval",
            Durability::Memory => "memory",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tqx_mode())
    }
}

/// What the report shows about each scenario.
impl Scenario {
    pub fn title(self) -> &'static str {
        match self {
            Scenario::Enqueue => "1. Enqueue only",
            Scenario::Cycle => "2. Full cycle: enqueue → dequeue → complete",
            Scenario::Batch => "3. Batch enqueue (100 tasks per request)",
            Scenario::Status => "4. Task status lookup by id",
            Scenario::Deps => "5. Dependency fan-in / fan-out",
            Scenario::Storm => "6. Connection storm",
            Scenario::Latency => "7. Latency under fixed offered load (open loop)",
        }
    }

    /// Whether throughput is counted in tasks (a batch carries many) rather than
    /// in `tqx-bench`'s ops.
    pub fn counts_tasks(self) -> bool {
        self == Scenario::Batch
    }

    /// What one unit of the compared throughput is (`tqx-bench`'s op, or a
    /// task for the batch).
    pub fn unit(self) -> &'static str {
        match self {
            Scenario::Enqueue | Scenario::Latency => "enqueues/s",
            Scenario::Cycle => "ops/s",
            Scenario::Batch => "tasks/s",
            Scenario::Status => "lookups/s",
            Scenario::Deps => "DAGs/s",
            Scenario::Storm => "connections/s",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The offered load of a latency cell: a fixed low rate on one connection (an
/// idle server), or a share of the enqueue peak measured earlier in the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Load {
    Idle,
    Percent(u32),
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Idle => f.write_str("idle"),
            Load::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl From<Load> for String {
    fn from(load: Load) -> String {
        load.to_string()
    }
}

impl TryFrom<String> for Load {
    type Error = String;

    fn try_from(text: String) -> Result<Load, String> {
        if text == "idle" {
            return Ok(Load::Idle);
        }
        match text.strip_suffix('%').and_then(|p| p.parse().ok()) {
            Some(p) => Ok(Load::Percent(p)),
            None => Err(format!("load {text:?} is neither `idle` nor `N%`")),
        }
    }
}

/// One measurement asked of `tqx-bench run` (a table row plus the system).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cell {
    pub scenario: Scenario,
    pub durability: Durability,
    pub connections: u32,
    pub pipeline: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// Idle connections held open (connected, handshake done, sending
    /// nothing) by a second `tqx-bench hold` during the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<u32>,
    /// Every connection over TLS (the server started with a certificate);
    /// absent in results written before TLS cells existed: plain text.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls: bool,
    /// TaskQueueX started with `--tokens` and every connection presenting
    /// one (`tqx-bench --token`); absent in older results: no tokens.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tokens: bool,
    pub system: System,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A [`Cell`] without its system: one row of a scenario's table, which the
/// systems are compared within.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Row {
    pub scenario: Scenario,
    pub durability: Durability,
    pub connections: u32,
    pub pipeline: u32,
    pub batch: Option<u32>,
    pub load: Option<Load>,
    pub idle: Option<u32>,
    pub tls: bool,
    pub tokens: bool,
}

impl Cell {
    pub fn row(&self) -> Row {
        Row {
            scenario: self.scenario,
            durability: self.durability,
            connections: self.connections,
            pipeline: self.pipeline,
            batch: self.batch,
            load: self.load,
            idle: self.idle,
            tls: self.tls,
            tokens: self.tokens,
        }
    }
}

impl Row {
    pub fn cell(&self, system: System) -> Cell {
        Cell {
            scenario: self.scenario,
            durability: self.durability,
            connections: self.connections,
            pipeline: self.pipeline,
            batch: self.batch,
            load: self.load,
            idle: self.idle,
            tls: self.tls,
            tokens: self.tokens,
            system,
        }
    }

    /// The row's parameters as the tables show them, e.g. `50 conn × 16 deep`.
    pub fn params(&self) -> String {
        let mut text = format!("{} conn", self.connections);
        if self.pipeline != 1 {
            text.push_str(&format!(" × {} deep", self.pipeline));
        }
        if let Some(batch) = self.batch {
            text.push_str(&format!(", {batch} per batch"));
        }
        if let Some(load) = self.load {
            match load {
                Load::Idle => text.push_str(", idle"),
                Load::Percent(p) => text.push_str(&format!(", {p} % of peak")),
            }
        }
        if let Some(idle) = self.idle {
            text.push_str(&format!(", {} idle conn open", crate::shared::thousands(u64::from(idle))));
        }
        if self.tls {
            text.push_str(", TLS");
        }
        if self.tokens {
            text.push_str(", tokens");
        }
        text
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ({})", self.scenario, self.durability, self.system, self.row().params())
    }
}

/// Latency percentiles as `tqx-bench` prints them, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyUs {
    #[serde(default)]
    pub p50: f64,
    #[serde(default)]
    pub p99: f64,
    #[serde(default)]
    pub p999: f64,
    #[serde(default)]
    pub max: f64,
    #[serde(default)]
    pub mean: f64,
}

/// The line `tqx-bench run` prints (the contract with the load generator).
/// Fields this code does not read are kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchOutput {
    #[serde(default)]
    pub system: String,
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub connections: Option<u64>,
    #[serde(default)]
    pub pipeline: Option<u64>,
    #[serde(default)]
    pub seconds: Option<f64>,
    #[serde(default)]
    pub ops: Option<u64>,
    pub ops_per_s: f64,
    #[serde(default)]
    pub tasks_per_s: Option<f64>,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub latency_us: LatencyUs,
    #[serde(default)]
    pub offered_rate: Option<f64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `tqx-bench fsync`'s line: the machine's `fdatasync` after a small write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FsyncUs {
    #[serde(default)]
    pub p50: f64,
    #[serde(default)]
    pub p99: f64,
    #[serde(default)]
    pub mean: f64,
}

/// What a run records about itself and the machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// The command that reproduces it.
    pub command: String,
    pub quick: bool,
    pub runs: u32,
    pub seconds: f64,
    pub warmup_seconds: f64,
    #[serde(default)]
    pub payload_bytes: u32,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages when the run started:
    /// other work on the machine lowers absolute figures.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub load_average: String,
    /// (what, value) pairs, in display order: cores, CPU, kernel, disk, …
    pub machine: Vec<(String, String)>,
}

/// One line of a results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Line {
    Meta(Meta),
    Fsync {
        run: u32,
        fdatasync_us: FsyncUs,
        /// Samples paced this far apart (`tqx-bench fsync --interval-us`); 0:
        /// back to back (and in files written before pacing existed).
        #[serde(default)]
        interval_us: u64,
    },
    #[serde(rename = "result")]
    Measured {
        run: u32,
        cell: Cell,
        bench: BenchOutput,
    },
    Unsupported {
        run: u32,
        cell: Cell,
    },
    Failure {
        run: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cell: Option<Cell>,
        message: String,
    },
    /// The last line of a run that finished: how long the measurement took.
    Done {
        elapsed_seconds: f64,
        /// `/proc/loadavg` when the run ended.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        load_average: String,
    },
}

impl Line {
    /// The line as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a results line always serializes")
    }
}
