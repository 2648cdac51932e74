//! What the server counts, and how it shows it (docs/metrics.md): the
//! recording side, which the request path calls, and the rendering side, a
//! pure function of a [`Snapshot`] to the Prometheus text exposition format
//! (`GET /metrics`) or to the JSON document of `GET /v1/stats` and the binary
//! `stats` request. No I/O, no threads, no clock here: the server gathers
//! the snapshot (`server/stats.rs`) and passes the times in.
//!
//! **No lock on the request path.** Each reactor thread owns one
//! [`ReactorMetrics`]: counters and latency histograms that only that thread
//! writes, as relaxed atomic loads and stores (plain `mov`s on x86-64, no
//! `lock` prefix), indexed by small integers (an opcode slot, a protocol, an
//! outcome): no allocation, no hashing, O(1) per request. A scrape reads
//! every reactor's atomics and sums them; it may see one reactor's counter a
//! request behind another's, never a torn value. Rarer events (connections
//! accepted and closed, WAL batches, checkpoints) are shared atomics with
//! `fetch_add`. The task-event counters ([`TaskEvents`]) are written by
//! whichever thread holds the engine lock, which orders those writes.
//!
//! **Latency histograms.** The request path increments one bucket of a
//! log-linear layout in microseconds (HdrHistogram's: 32 exact values, then
//! 16 buckets per power of two, so a value is known within 1/16 of itself;
//! up to 2^32 µs, 71 minutes). A scrape merges every reactor's buckets into
//! an `hdrhistogram::Histogram`, from which come the quantiles (p50, p99,
//! p999) and the counts of the fixed Prometheus buckets.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tqx_wire::{ErrorCode, Opcode};

// ---- vocabulary ---------------------------------------------------------------

/// Which listener a request or connection came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http = 0,
    Binary = 1,
}

pub const PROTOCOLS_COUNT: usize = 2;
pub const PROTOCOL_NAMES: [&str; PROTOCOLS_COUNT] = ["http", "binary"];

/// Operation slots: one per wire opcode (in `Opcode::ALL` order, so an opcode
/// added to the wire gets its slot and its name without a change here), then
/// the HTTP-only ones.
pub const OP_HEALTHZ: usize = Opcode::ALL.len();
/// `GET /metrics`.
pub const OP_METRICS: usize = Opcode::ALL.len() + 1;
/// A request the protocol step refused before it named an operation: an
/// unknown path or opcode, a malformed request, a body that does not parse.
pub const OP_OTHER: usize = Opcode::ALL.len() + 2;
/// `GET /ui` and the dashboard's other files (`http/ui.rs`).
pub const OP_UI: usize = Opcode::ALL.len() + 3;
pub const OPS_COUNT: usize = Opcode::ALL.len() + 4;

const _: () = assert!(OPS_COUNT <= u8::MAX as usize);

/// Opcode byte → operation slot ([`OP_OTHER`] for an unknown opcode).
const OP_SLOT_BY_OPCODE: [u8; 256] = {
    let mut table = [OP_OTHER as u8; 256];
    let mut i = 0;
    while i < Opcode::ALL.len() {
        table[Opcode::ALL[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The operation slot of a wire opcode.
#[inline]
pub fn op_of_opcode(opcode: u8) -> usize {
    OP_SLOT_BY_OPCODE[usize::from(opcode)] as usize
}

/// The `op` label of a slot.
pub fn op_name(op: usize) -> &'static str {
    match op {
        OP_HEALTHZ => "healthz",
        OP_METRICS => "metrics",
        OP_UI => "ui",
        _ => Opcode::ALL.get(op).map_or("other", |opcode| opcode.name()),
    }
}

/// Outcomes: every wire error code (`ok` is 0), then the HTTP API's codes
/// that have no wire code.
pub const OUTCOME_NOT_FOUND: usize = ErrorCode::ALL.len();
pub const OUTCOME_METHOD_NOT_ALLOWED: usize = ErrorCode::ALL.len() + 1;
pub const OUTCOME_HEADERS_TOO_LARGE: usize = ErrorCode::ALL.len() + 2;
pub const OUTCOME_LENGTH_REQUIRED: usize = ErrorCode::ALL.len() + 3;
/// A response whose code is none of the above (not expected; kept total).
pub const OUTCOME_OTHER: usize = ErrorCode::ALL.len() + 4;
pub const OUTCOMES_COUNT: usize = ErrorCode::ALL.len() + 5;

/// The outcome slot of a wire error code (`ErrorCode::Ok` is success).
#[inline]
pub fn outcome_of_code(code: ErrorCode) -> usize {
    code as usize
}

/// The `outcome` label of a slot: `ok` or the error's `code`, as both
/// protocols say it.
pub fn outcome_name(outcome: usize) -> &'static str {
    match outcome {
        OUTCOME_NOT_FOUND => "not_found",
        OUTCOME_METHOD_NOT_ALLOWED => "method_not_allowed",
        OUTCOME_HEADERS_TOO_LARGE => "headers_too_large",
        OUTCOME_LENGTH_REQUIRED => "length_required",
        _ => ErrorCode::ALL.get(outcome).map_or("other", |code| code.as_str()),
    }
}

/// The outcome slot of an `error.code` string (HTTP responses the parse step
/// rendered itself carry only their bytes).
pub fn outcome_of_code_name(code: &str) -> usize {
    match code {
        "not_found" => OUTCOME_NOT_FOUND,
        "method_not_allowed" => OUTCOME_METHOD_NOT_ALLOWED,
        "headers_too_large" => OUTCOME_HEADERS_TOO_LARGE,
        "length_required" => OUTCOME_LENGTH_REQUIRED,
        _ => ErrorCode::from_code(code).map_or(OUTCOME_OTHER, outcome_of_code),
    }
}

/// The outcome of a rendered HTTP response: `ok` for a 2xx, else its
/// `"code":"..."` (the API's error body). Only responses the reactor did not
/// build from a reply go through this (refusals of the parse step): rare.
pub fn outcome_of_http_response(response: &[u8]) -> usize {
    if response.get(9) == Some(&b'2') {
        return outcome_of_code(ErrorCode::Ok);
    }
    const KEY: &[u8] = b"\"code\":\"";
    let Some(start) = response.windows(KEY.len()).position(|w| w == KEY).map(|at| at + KEY.len()) else {
        return OUTCOME_OTHER;
    };
    let rest = &response[start..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).map_or(OUTCOME_OTHER, outcome_of_code_name)
}

// ---- recording ----------------------------------------------------------------

/// Adds `n` to a counter only this thread writes (see the module comment):
/// a relaxed load and store, no read-modify-write instruction.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Exact values below this; then `HALF` buckets per power of two.
const SUB_BUCKETS: usize = 32;
const HALF: usize = SUB_BUCKETS / 2;
const SUB_BUCKET_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Buckets after the exact ones: one run of `HALF` per power of two from
/// 2^5 to 2^31.
const POWERS_COUNT: usize = 32 - SUB_BUCKET_BITS as usize;
/// Slots of one histogram (464: 3.7 KiB).
pub const HISTOGRAM_SLOTS: usize = SUB_BUCKETS + POWERS_COUNT * HALF;

/// The slot of a value (values above `u32::MAX` count as `u32::MAX`).
#[inline]
pub fn slot_of(value: u64) -> usize {
    let value = value.min(u64::from(u32::MAX));
    if value < SUB_BUCKETS as u64 {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros(); // >= SUB_BUCKET_BITS
    let shift = msb + 1 - SUB_BUCKET_BITS;
    let sub = (value >> shift) as usize; // HALF..SUB_BUCKETS
    SUB_BUCKETS + (shift as usize - 1) * HALF + (sub - HALF)
}

/// The smallest and largest value of a slot.
pub fn slot_range(slot: usize) -> (u64, u64) {
    if slot < SUB_BUCKETS {
        return (slot as u64, slot as u64);
    }
    let shift = (slot - SUB_BUCKETS) / HALF + 1;
    let sub = ((slot - SUB_BUCKETS) % HALF + HALF) as u64;
    let low = sub << shift;
    (low, low + (1u64 << shift) - 1)
}

/// A histogram one thread records into and any thread may read. Its count
/// is the sum of its slots, added up by the scrape rather than kept per record.
pub struct Histogram {
    slots: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { slots: (0..HISTOGRAM_SLOTS).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }
}

impl Histogram {
    /// Records `value` from the one thread that writes this histogram: O(1).
    #[inline]
    pub fn record(&self, value: u64) {
        bump(&self.slots[slot_of(value)], 1);
        bump(&self.sum, value);
    }

    /// Records `value` from any thread (rare events: WAL batches).
    pub fn record_shared(&self, value: u64) {
        self.slots[slot_of(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Adds this histogram's counts to `into`. The sum is read after the
    /// slots, so a record made meanwhile may show in the sum and not the
    /// count (one request's worth, for one scrape).
    pub fn add_to(&self, into: &mut Buckets) {
        for (total, slot) in into.slots.iter_mut().zip(self.slots.iter()) {
            let count = slot.load(Ordering::Relaxed);
            *total += count;
            into.count += count;
        }
        into.sum += self.sum.load(Ordering::Relaxed);
    }
}

/// A histogram's counts as read by a scrape (summed over reactors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub slots: Vec<u64>,
    pub count: u64,
    pub sum: u64,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets { slots: vec![0; HISTOGRAM_SLOTS], count: 0, sum: 0 }
    }
}

impl Buckets {
    /// The same counts in an `hdrhistogram::Histogram` (each slot's values
    /// at its midpoint), for quantiles and bucket counts.
    pub fn to_hdr(&self) -> hdrhistogram::Histogram<u64> {
        // 2 significant figures: finer than the slots it is fed.
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, u64::from(u32::MAX), 2)
            .expect("valid hdrhistogram bounds");
        for (slot, &count) in self.slots.iter().enumerate() {
            if count > 0 {
                let (low, high) = slot_range(slot);
                histogram.saturating_record_n(((low + high) / 2).max(1), count);
            }
        }
        histogram
    }
}

/// What one reactor counts: requests by protocol, operation and outcome, and
/// the latency of executed requests by protocol and operation. Written only
/// by its reactor's thread.
pub struct ReactorMetrics {
    /// `--no-metrics`: nothing is recorded (to measure what recording costs).
    pub enabled: bool,
    requests: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
}

impl ReactorMetrics {
    pub fn new(enabled: bool) -> ReactorMetrics {
        let requests_count = if enabled { PROTOCOLS_COUNT * OPS_COUNT * OUTCOMES_COUNT } else { 0 };
        let histograms_count = if enabled { PROTOCOLS_COUNT * OPS_COUNT } else { 0 };
        ReactorMetrics {
            enabled,
            requests: (0..requests_count).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..histograms_count).map(|_| Histogram::default()).collect(),
        }
    }

    /// A request answered without being executed (refused, malformed,
    /// answered by the connection itself): counted, not timed.
    #[inline]
    pub fn answered(&self, protocol: Protocol, op: usize, outcome: usize) {
        if self.enabled {
            bump(&self.requests[(protocol as usize * OPS_COUNT + op) * OUTCOMES_COUNT + outcome], 1);
        }
    }

    /// An executed request answered `latency_us` after its connection took it.
    #[inline]
    pub fn executed(&self, protocol: Protocol, op: usize, outcome: usize, latency_us: u32) {
        if self.enabled {
            let index = protocol as usize * OPS_COUNT + op;
            bump(&self.requests[index * OUTCOMES_COUNT + outcome], 1);
            self.latency[index].record(u64::from(latency_us));
        }
    }

    /// Requests of `op` over `protocol` answered with `outcome` so far (0
    /// when nothing is recorded).
    pub fn count(&self, protocol: Protocol, op: usize, outcome: usize) -> u64 {
        self.requests
            .get((protocol as usize * OPS_COUNT + op) * OUTCOMES_COUNT + outcome)
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    /// Adds this reactor's counts to `into`.
    pub fn add_to(&self, into: &mut RequestTotals) {
        for (total, counter) in into.counts.iter_mut().zip(self.requests.iter()) {
            *total += counter.load(Ordering::Relaxed);
        }
        for (total, histogram) in into.latency.iter_mut().zip(self.latency.iter()) {
            histogram.add_to(total);
        }
    }
}

/// Every reactor's request counts and latencies, summed by a scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTotals {
    /// By `(protocol * OPS_COUNT + op) * OUTCOMES_COUNT + outcome`.
    pub counts: Vec<u64>,
    /// By `protocol * OPS_COUNT + op`.
    pub latency: Vec<Buckets>,
}

impl Default for RequestTotals {
    fn default() -> RequestTotals {
        RequestTotals {
            counts: vec![0; PROTOCOLS_COUNT * OPS_COUNT * OUTCOMES_COUNT],
            latency: vec![Buckets::default(); PROTOCOLS_COUNT * OPS_COUNT],
        }
    }
}

impl RequestTotals {
    pub fn count(&self, protocol: Protocol, op: usize, outcome: usize) -> u64 {
        self.counts[(protocol as usize * OPS_COUNT + op) * OUTCOMES_COUNT + outcome]
    }
}

/// Task events, counted by the executing thread under the engine lock
/// (`server/durability.rs`, from the replies and the timer passes).
#[derive(Default)]
pub struct TaskEvents {
    pub counts: [AtomicU64; TASK_EVENTS_COUNT],
}

pub const TASK_EVENTS_COUNT: usize = 8;
pub const TASK_EVENT_NAMES: [&str; TASK_EVENTS_COUNT] =
    ["enqueued", "leased", "completed", "failed", "dead", "lease_expired", "cancelled", "retried"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// Tasks created by an enqueue (not an idempotent repeat).
    Enqueued = 0,
    /// Tasks handed out by a dequeue.
    Leased = 1,
    Completed = 2,
    /// Attempts reported failed by a client (`fail`), whatever followed.
    Failed = 3,
    /// Tasks that became dead: out of attempts (a fail or an expired lease)
    /// or failed with `retry: false`.
    Dead = 4,
    /// Leases that ran out (an attempt lost).
    LeaseExpired = 5,
    Cancelled = 6,
    /// Dead (or failed) tasks sent back to ready by a retry request.
    Retried = 7,
}

impl TaskEvents {
    /// Called under the engine lock, which orders every writer.
    #[inline]
    pub fn add(&self, event: TaskEvent, n: u64) {
        bump(&self.counts[event as usize], n);
    }

    pub fn get(&self, event: TaskEvent) -> u64 {
        self.counts[event as usize].load(Ordering::Relaxed)
    }
}

/// The log writer's batches (`wal/committer.rs` reports each one).
#[derive(Default)]
pub struct WalMetrics {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    /// Records per batch.
    pub batch_records: Histogram,
    /// One batch's write and `fdatasync` together, in µs.
    pub sync_us: Histogram,
}

impl WalMetrics {
    pub fn batch(&self, records: u64, bytes: u64, sync_us: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.batch_records.record_shared(records);
        self.sync_us.record_shared(sync_us);
    }
}

/// Reasons the server closes a connection on its own (besides refusing one
/// past `--max-connections`).
pub const CLOSE_REASONS_COUNT: usize = 4;
pub const CLOSE_PRUNED: usize = 0;
pub const CLOSE_REASON_NAMES: [&str; CLOSE_REASONS_COUNT] =
    ["pruned", "request_deadline", "write_deadline", "idle_timeout"];

/// Connections by protocol: rare events, shared atomics.
#[derive(Default)]
pub struct ConnMetrics {
    pub open: [AtomicU64; PROTOCOLS_COUNT],
    pub accepted: [AtomicU64; PROTOCOLS_COUNT],
    pub refused: [AtomicU64; PROTOCOLS_COUNT],
    /// By `protocol * CLOSE_REASONS_COUNT + reason`.
    pub closed: [AtomicU64; PROTOCOLS_COUNT * CLOSE_REASONS_COUNT],
}

impl ConnMetrics {
    pub fn closed_by_server(&self, protocol: usize, reason: usize) {
        self.closed[protocol * CLOSE_REASONS_COUNT + reason].fetch_add(1, Ordering::Relaxed);
    }
}

// ---- snapshot and rendering ---------------------------------------------------

/// One queue's task counts, in `TaskState` order (waiting, delayed, ready,
/// leased, completed, dead, cancelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueCounts {
    pub name: String,
    pub counts: [u64; 7],
}

pub const TASK_STATE_NAMES: [&str; 7] = ["waiting", "delayed", "ready", "leased", "completed", "dead", "cancelled"];

/// The `queue` label of the queues past [`crate::limits::METRICS_QUEUES_COUNT_MAX`].
pub const OTHER_QUEUES: &str = "_other";

/// Everything a scrape shows, gathered by the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub version: &'static str,
    pub durability: String,
    pub uptime_seconds: f64,
    pub metrics_enabled: bool,
    pub requests: RequestTotals,
    pub task_events: [u64; TASK_EVENTS_COUNT],
    /// Every queue, in name order (cut to the limit when shown).
    pub queues: Vec<QueueCounts>,
    pub connections: ConnSnapshot,
    /// `None` in `memory` mode (no log).
    pub wal: Option<WalSnapshot>,
    /// `None` in `memory` mode (no checkpoints).
    pub checkpoint: Option<CheckpointSnapshot>,
    pub process: ProcessSnapshot,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnSnapshot {
    pub open: [u64; PROTOCOLS_COUNT],
    pub accepted: [u64; PROTOCOLS_COUNT],
    pub refused: [u64; PROTOCOLS_COUNT],
    pub closed: [u64; PROTOCOLS_COUNT * CLOSE_REASONS_COUNT],
}

impl ConnSnapshot {
    pub fn of(metrics: &ConnMetrics) -> ConnSnapshot {
        let load = |counters: &[AtomicU64], into: &mut [u64]| {
            for (value, counter) in into.iter_mut().zip(counters) {
                *value = counter.load(Ordering::Relaxed);
            }
        };
        let mut snapshot = ConnSnapshot::default();
        load(&metrics.open, &mut snapshot.open);
        load(&metrics.accepted, &mut snapshot.accepted);
        load(&metrics.refused, &mut snapshot.refused);
        load(&metrics.closed, &mut snapshot.closed);
        snapshot
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalSnapshot {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    pub batch_records: Buckets,
    pub sync_us: Buckets,
}

impl WalSnapshot {
    pub fn of(metrics: &WalMetrics) -> WalSnapshot {
        let mut snapshot = WalSnapshot {
            batches: metrics.batches.load(Ordering::Relaxed),
            records: metrics.records.load(Ordering::Relaxed),
            bytes: metrics.bytes.load(Ordering::Relaxed),
            ..WalSnapshot::default()
        };
        metrics.batch_records.add_to(&mut snapshot.batch_records);
        metrics.sync_us.add_to(&mut snapshot.sync_us);
        snapshot
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointSnapshot {
    /// Rounds that wrote an increment.
    pub increments: u64,
    pub flushes: u64,
    /// The last round's duration (increment and flush), if any ran.
    pub last_duration_seconds: Option<f64>,
    /// Seconds since the last round that succeeded (`None`: none yet).
    pub last_success_age_seconds: Option<f64>,
    /// RocksDB's SST files over every column family, as of the last round.
    pub rocksdb_sst_bytes: u64,
    /// RocksDB's memtables, as of the last round.
    pub rocksdb_memtable_bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSnapshot {
    /// `None` where `/proc/self` cannot be read.
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Upper bounds of the request latency buckets, in seconds (`+Inf` follows).
pub const LATENCY_BUCKETS_SECONDS: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];
/// Upper bounds of the WAL's records-per-batch buckets.
pub const BATCH_RECORDS_BUCKETS: [f64; 13] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];
/// The quantiles the summaries and `/v1/stats` show.
pub const QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];

/// A label value escaped for the text format: `\`, `"` and newline.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The queues to show: the first `limit` in name order, and the rest summed
/// into one `_other` row (if there are more).
pub fn bounded_queues(queues: &[QueueCounts], limit: usize) -> Vec<QueueCounts> {
    let mut shown: Vec<QueueCounts> = queues.iter().take(limit).cloned().collect();
    if queues.len() > limit {
        let mut other = QueueCounts { name: OTHER_QUEUES.to_string(), counts: [0; 7] };
        for queue in &queues[limit..] {
            for (total, count) in other.counts.iter_mut().zip(queue.counts) {
                *total += count;
            }
        }
        shown.push(other);
    }
    shown
}

struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample: `labels` are (name, value) pairs, values escaped here.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, label_value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(label_value, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_number(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram's samples: cumulative `_bucket`s (`bounds` in the shown
    /// unit, `per_unit` recorded values each: 1e6 µs per second), `_sum`
    /// and `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], buckets: &Buckets, bounds: &[f64], per_unit: f64) {
        let hdr = buckets.to_hdr();
        let bucket_name = format!("{name}_bucket");
        let mut previous = 0;
        for bound in bounds {
            let le = format_number(*bound);
            // The hdr histogram counts the values at or below the bound
            // (within its resolution); never fewer than the bucket before.
            let limit = (bound * per_unit).round() as u64;
            let count = hdr.count_between(0, limit).max(previous).min(buckets.count);
            previous = count;
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket_name, &with_le, count as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket_name, &with_le, buckets.count as f64);
        self.sample(&format!("{name}_sum"), labels, buckets.sum as f64 / per_unit);
        self.sample(&format!("{name}_count"), labels, buckets.count as f64);
    }
}

/// Formats a sample value: integers without a fraction, others in Rust's
/// shortest round-trip form (both valid in the text format).
fn push_number(out: &mut String, value: f64) {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn format_number(value: f64) -> String {
    let mut out = String::new();
    push_number(&mut out, value);
    out
}

/// The latency quantiles of `buckets` in seconds (µs recorded).
pub fn quantiles_seconds(buckets: &Buckets) -> [f64; QUANTILES.len()] {
    let hdr = buckets.to_hdr();
    QUANTILES.map(|q| hdr.value_at_quantile(q) as f64 / 1e6)
}

/// Renders `snapshot` in the Prometheus text exposition format 0.0.4, with
/// at most `queues_max` queues by name (the rest as `queue="_other"`).
pub fn render_prometheus(snapshot: &Snapshot, queues_max: usize) -> String {
    let mut e = Exposition { out: String::with_capacity(16 << 10) };

    e.family("tqx_build_info", "gauge", "Always 1; the server's version and durability mode as labels.");
    e.sample("tqx_build_info", &[("version", snapshot.version), ("durability", snapshot.durability.as_str())], 1.0);
    e.family("tqx_uptime_seconds", "gauge", "Seconds since the server started.");
    e.sample("tqx_uptime_seconds", &[], snapshot.uptime_seconds);
    e.family(
        "tqx_metrics_enabled",
        "gauge",
        "0 when started with --no-metrics (request counts and latency are not recorded).",
    );
    e.sample("tqx_metrics_enabled", &[], f64::from(u8::from(snapshot.metrics_enabled)));

    e.family(
        "tqx_requests_total",
        "counter",
        "Requests answered, by protocol, operation and outcome (ok or the error code).",
    );
    for protocol in [Protocol::Http, Protocol::Binary] {
        for op in 0..OPS_COUNT {
            for outcome in 0..OUTCOMES_COUNT {
                let count = snapshot.requests.count(protocol, op, outcome);
                if count > 0 {
                    let labels = [
                        ("protocol", PROTOCOL_NAMES[protocol as usize]),
                        ("op", op_name(op)),
                        ("outcome", outcome_name(outcome)),
                    ];
                    e.sample("tqx_requests_total", &labels, count as f64);
                }
            }
        }
    }
    let latency_series = || {
        [Protocol::Http, Protocol::Binary].into_iter().flat_map(|protocol| {
            (0..OPS_COUNT).filter_map(move |op| {
                let buckets = &snapshot.requests.latency[protocol as usize * OPS_COUNT + op];
                (buckets.count > 0).then_some((PROTOCOL_NAMES[protocol as usize], op_name(op), buckets))
            })
        })
    };
    e.family(
        "tqx_request_duration_seconds",
        "histogram",
        "Executed requests: from the reactor pass that took the request to its reply being encoded for the socket.",
    );
    for (protocol, op, buckets) in latency_series() {
        let labels = [("protocol", protocol), ("op", op)];
        e.histogram("tqx_request_duration_seconds", &labels, buckets, &LATENCY_BUCKETS_SECONDS, 1e6);
    }
    e.family(
        "tqx_request_latency_seconds",
        "summary",
        "The same latency as quantiles over the server's lifetime (from hdrhistogram).",
    );
    for (protocol, op, buckets) in latency_series() {
        for (q, value) in QUANTILES.iter().zip(quantiles_seconds(buckets)) {
            let quantile = format_number(*q);
            let labels = [("protocol", protocol), ("op", op), ("quantile", quantile.as_str())];
            e.sample("tqx_request_latency_seconds", &labels, value);
        }
        let labels = [("protocol", protocol), ("op", op)];
        e.sample("tqx_request_latency_seconds_sum", &labels, buckets.sum as f64 / 1e6);
        e.sample("tqx_request_latency_seconds_count", &labels, buckets.count as f64);
    }

    e.family(
        "tqx_task_events_total",
        "counter",
        "Task events: enqueued, leased, completed, failed, dead, lease_expired, cancelled, retried.",
    );
    for (name, count) in TASK_EVENT_NAMES.iter().zip(snapshot.task_events) {
        e.sample("tqx_task_events_total", &[("event", name)], count as f64);
    }
    e.family("tqx_queues", "gauge", "Queues that exist.");
    e.sample("tqx_queues", &[], snapshot.queues.len() as f64);
    e.family(
        "tqx_tasks",
        "gauge",
        "Tasks by queue and state; queues past the first by name are summed into queue=\"_other\".",
    );
    for queue in bounded_queues(&snapshot.queues, queues_max) {
        for (state, count) in TASK_STATE_NAMES.iter().zip(queue.counts) {
            e.sample("tqx_tasks", &[("queue", queue.name.as_str()), ("state", state)], count as f64);
        }
    }

    let connections = &snapshot.connections;
    e.family("tqx_connections_open", "gauge", "Client connections open now.");
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        e.sample("tqx_connections_open", &[("protocol", protocol)], connections.open[p] as f64);
    }
    e.family("tqx_connections_accepted_total", "counter", "Client connections accepted (and kept).");
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        e.sample("tqx_connections_accepted_total", &[("protocol", protocol)], connections.accepted[p] as f64);
    }
    e.family("tqx_connections_refused_total", "counter", "Connections refused past --max-connections.");
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        e.sample("tqx_connections_refused_total", &[("protocol", protocol)], connections.refused[p] as f64);
    }
    e.family(
        "tqx_connections_closed_by_server_total",
        "counter",
        "Connections the server closed: pruned (longest idle, to admit new ones) or shed (request deadline, write deadline, idle timeout).",
    );
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        for (r, reason) in CLOSE_REASON_NAMES.iter().enumerate() {
            let count = connections.closed[p * CLOSE_REASONS_COUNT + r];
            e.sample(
                "tqx_connections_closed_by_server_total",
                &[("protocol", protocol), ("reason", reason)],
                count as f64,
            );
        }
    }

    if let Some(wal) = &snapshot.wal {
        e.family("tqx_wal_syncs_total", "counter", "Write-ahead log batches written and fdatasync'd.");
        e.sample("tqx_wal_syncs_total", &[], wal.batches as f64);
        e.family("tqx_wal_records_total", "counter", "Records written to the write-ahead log.");
        e.sample("tqx_wal_records_total", &[], wal.records as f64);
        e.family("tqx_wal_bytes_total", "counter", "Bytes of records written to the write-ahead log.");
        e.sample("tqx_wal_bytes_total", &[], wal.bytes as f64);
        e.family("tqx_wal_batch_records", "histogram", "Records per write-ahead log batch (one fdatasync each).");
        e.histogram("tqx_wal_batch_records", &[], &wal.batch_records, &BATCH_RECORDS_BUCKETS, 1.0);
        e.family("tqx_wal_sync_duration_seconds", "histogram", "One batch's write and fdatasync together.");
        e.histogram("tqx_wal_sync_duration_seconds", &[], &wal.sync_us, &LATENCY_BUCKETS_SECONDS, 1e6);
    }
    if let Some(checkpoint) = &snapshot.checkpoint {
        e.family("tqx_checkpoint_increments_total", "counter", "Checkpoint increments written into RocksDB.");
        e.sample("tqx_checkpoint_increments_total", &[], checkpoint.increments as f64);
        e.family(
            "tqx_checkpoint_flushes_total",
            "counter",
            "Checkpoint flushes (after which the log below is removed).",
        );
        e.sample("tqx_checkpoint_flushes_total", &[], checkpoint.flushes as f64);
        if let Some(seconds) = checkpoint.last_duration_seconds {
            e.family(
                "tqx_checkpoint_last_duration_seconds",
                "gauge",
                "Duration of the last checkpoint round that wrote anything.",
            );
            e.sample("tqx_checkpoint_last_duration_seconds", &[], seconds);
        }
        if let Some(seconds) = checkpoint.last_success_age_seconds {
            e.family(
                "tqx_checkpoint_last_success_age_seconds",
                "gauge",
                "Seconds since the last checkpoint round that succeeded.",
            );
            e.sample("tqx_checkpoint_last_success_age_seconds", &[], seconds);
        }
        e.family(
            "tqx_rocksdb_sst_bytes",
            "gauge",
            "RocksDB SST files over every column family, as of the last checkpoint round.",
        );
        e.sample("tqx_rocksdb_sst_bytes", &[], checkpoint.rocksdb_sst_bytes as f64);
        e.family("tqx_rocksdb_memtable_bytes", "gauge", "RocksDB memtables, as of the last checkpoint round.");
        e.sample("tqx_rocksdb_memtable_bytes", &[], checkpoint.rocksdb_memtable_bytes as f64);
    }
    let process = &snapshot.process;
    if let Some(bytes) = process.resident_bytes {
        e.family("process_resident_memory_bytes", "gauge", "Resident set size (/proc/self/statm).");
        e.sample("process_resident_memory_bytes", &[], bytes as f64);
    }
    if let Some(count) = process.open_fds {
        e.family("process_open_fds", "gauge", "Open file descriptors (/proc/self/fd).");
        e.sample("process_open_fds", &[], count as f64);
    }
    if let Some(count) = process.max_fds {
        e.family("process_max_fds", "gauge", "The open-file soft limit.");
        e.sample("process_max_fds", &[], count as f64);
    }
    e.out
}

/// The JSON document of `GET /v1/stats` and the binary `stats` reply
/// (shape in docs/http-api.md), with at most `queues_max` queues by name.
pub fn render_json(snapshot: &Snapshot, queues_max: usize) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut requests = Vec::new();
    for protocol in [Protocol::Http, Protocol::Binary] {
        for op in 0..OPS_COUNT {
            for outcome in 0..OUTCOMES_COUNT {
                let count = snapshot.requests.count(protocol, op, outcome);
                if count > 0 {
                    requests.push(json!({
                        "protocol": PROTOCOL_NAMES[protocol as usize],
                        "op": op_name(op),
                        "outcome": outcome_name(outcome),
                        "count": count,
                    }));
                }
            }
        }
    }
    let latency_json = |buckets: &Buckets| {
        let [p50, p99, p999] = quantiles_seconds(buckets);
        json!({
            "count": buckets.count,
            "sum_seconds": buckets.sum as f64 / 1e6,
            "p50_seconds": p50,
            "p99_seconds": p99,
            "p999_seconds": p999,
            "max_seconds": buckets.to_hdr().max() as f64 / 1e6,
        })
    };
    let mut latency = Vec::new();
    for protocol in [Protocol::Http, Protocol::Binary] {
        for op in 0..OPS_COUNT {
            let buckets = &snapshot.requests.latency[protocol as usize * OPS_COUNT + op];
            if buckets.count > 0 {
                let mut entry = latency_json(buckets);
                entry["protocol"] = json!(PROTOCOL_NAMES[protocol as usize]);
                entry["op"] = json!(op_name(op));
                latency.push(entry);
            }
        }
    }
    let task_events: Map<String, Value> = TASK_EVENT_NAMES
        .iter()
        .zip(snapshot.task_events)
        .map(|(name, count)| (name.to_string(), json!(count)))
        .collect();
    let queues: Vec<Value> = bounded_queues(&snapshot.queues, queues_max)
        .into_iter()
        .map(|queue| {
            let counts: Map<String, Value> =
                TASK_STATE_NAMES.iter().zip(queue.counts).map(|(state, n)| (state.to_string(), json!(n))).collect();
            json!({ "name": queue.name, "counts": counts })
        })
        .collect();
    let c = &snapshot.connections;
    let mut connections = Map::new();
    for (p, protocol) in PROTOCOL_NAMES.iter().enumerate() {
        let closed: Map<String, Value> = CLOSE_REASON_NAMES
            .iter()
            .enumerate()
            .map(|(r, reason)| (reason.to_string(), json!(c.closed[p * CLOSE_REASONS_COUNT + r])))
            .collect();
        connections.insert(
            protocol.to_string(),
            json!({
                "open": c.open[p],
                "accepted": c.accepted[p],
                "refused": c.refused[p],
                "closed_by_server": closed,
            }),
        );
    }
    let wal = snapshot.wal.as_ref().map(|wal| {
        let batch_records_mean = if wal.batches > 0 { wal.records as f64 / wal.batches as f64 } else { 0.0 };
        json!({
            "syncs": wal.batches,
            "records": wal.records,
            "bytes": wal.bytes,
            "batch_records_mean": batch_records_mean,
            "sync_latency": latency_json(&wal.sync_us),
        })
    });
    let checkpoint = snapshot.checkpoint.as_ref().map(|checkpoint| {
        json!({
            "increments": checkpoint.increments,
            "flushes": checkpoint.flushes,
            "last_duration_seconds": checkpoint.last_duration_seconds,
            "last_success_age_seconds": checkpoint.last_success_age_seconds,
            "rocksdb_sst_bytes": checkpoint.rocksdb_sst_bytes,
            "rocksdb_memtable_bytes": checkpoint.rocksdb_memtable_bytes,
        })
    });
    json!({
        "version": snapshot.version,
        "durability": snapshot.durability,
        "uptime_seconds": snapshot.uptime_seconds,
        "metrics_enabled": snapshot.metrics_enabled,
        "requests": requests,
        "latency": latency,
        "task_events": task_events,
        "queues_count": snapshot.queues.len(),
        "queues": queues,
        "connections": connections,
        "wal": wal,
        "checkpoint": checkpoint,
        "process": {
            "resident_bytes": snapshot.process.resident_bytes,
            "open_fds": snapshot.process.open_fds,
            "max_fds": snapshot.process.max_fds,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_slot_whose_range_holds_it_and_slots_are_ordered() {
        let mut previous_high = None;
        for slot in 0..HISTOGRAM_SLOTS {
            let (low, high) = slot_range(slot);
            assert!(low <= high);
            if let Some(previous_high) = previous_high {
                assert_eq!(low, previous_high + 1, "slot {slot} does not follow the one before");
            }
            previous_high = Some(high);
            assert_eq!(slot_of(low), slot);
            assert_eq!(slot_of(high), slot);
            // Within 1/16 of the value: the layout's resolution.
            assert!((high - low) * HALF as u64 <= low.max(1) * 2, "slot {slot}: {low}..={high} too wide");
        }
        assert_eq!(previous_high, Some(u64::from(u32::MAX)), "the last slot ends at u32::MAX");
        assert_eq!(slot_of(u64::MAX), HISTOGRAM_SLOTS - 1, "values past the range count in the last slot");
    }

    #[test]
    fn quantiles_come_within_the_layout_resolution_of_the_recorded_values() {
        let histogram = Histogram::default();
        for value in 1..=10_000u64 {
            histogram.record(value);
        }
        let mut buckets = Buckets::default();
        histogram.add_to(&mut buckets);
        assert_eq!((buckets.count, buckets.sum), (10_000, 10_000 * 10_001 / 2));
        let [p50, p99, p999] = quantiles_seconds(&buckets).map(|s| s * 1e6);
        for (got, want) in [(p50, 5_000.0), (p99, 9_900.0), (p999, 9_990.0)] {
            assert!((got - want).abs() / want < 0.07, "quantile {got} vs {want}");
        }
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut out = String::new();
        escape_label_value("a\\b\"c\nd", &mut out);
        assert_eq!(out, r#"a\\b\"c\nd"#);
        let snapshot = Snapshot {
            queues: vec![QueueCounts { name: "q\"x\ny".into(), counts: [0, 0, 1, 0, 0, 0, 0] }],
            ..Snapshot::default()
        };
        let text = render_prometheus(&snapshot, 10);
        assert!(text.contains(r#"tqx_tasks{queue="q\"x\ny",state="ready"} 1"#), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let metrics = ReactorMetrics::new(true);
        let op = op_of_opcode(Opcode::Enqueue as u8);
        for latency_us in [10u32, 80, 80, 300, 2_000, 70_000, 4_000_000_000] {
            metrics.executed(Protocol::Binary, op, 0, latency_us);
        }
        let mut totals = RequestTotals::default();
        metrics.add_to(&mut totals);
        assert_eq!(totals.count(Protocol::Binary, op, 0), 7);
        let text = render_prometheus(&Snapshot { requests: totals, ..Snapshot::default() }, 10);
        let buckets: Vec<(String, u64)> = text
            .lines()
            .filter(|line| line.starts_with("tqx_request_duration_seconds_bucket{protocol=\"binary\",op=\"enqueue\""))
            .map(|line| {
                let le = line.split("le=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("").to_string();
                let count = line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a count");
                (le, count)
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_SECONDS.len() + 1);
        assert!(buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1), "not cumulative: {buckets:?}");
        assert_eq!(buckets.last(), Some(&("+Inf".to_string(), 7)));
        let at = |le: &str| buckets.iter().find(|(bound, _)| bound == le).map(|(_, n)| *n);
        assert_eq!(at("0.00005"), Some(1), "10 µs");
        assert_eq!(at("0.0001"), Some(3), "and the two 80 µs");
        assert_eq!(at("0.0025"), Some(5), "and 300 µs and 2 ms");
        assert_eq!(at("60"), Some(6), "the 4,000 s one is only in +Inf");
        assert!(text.contains("tqx_requests_total{protocol=\"binary\",op=\"enqueue\",outcome=\"ok\"} 7"), "{text}");
    }

    #[test]
    fn queues_past_the_limit_are_summed_into_other() {
        let queues: Vec<QueueCounts> =
            (0..5).map(|i| QueueCounts { name: format!("q{i}"), counts: [0, 0, i, 0, 0, 0, 0] }).collect();
        let shown = bounded_queues(&queues, 3);
        let names: Vec<&str> = shown.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["q0", "q1", "q2", OTHER_QUEUES]);
        assert_eq!(shown[3].counts[2], 3 + 4);
        assert_eq!(bounded_queues(&queues, 5).len(), 5, "no _other row when all fit");
    }

    #[test]
    fn opcodes_and_codes_name_their_slots() {
        assert_eq!(op_name(op_of_opcode(Opcode::Enqueue as u8)), "enqueue");
        assert_eq!(op_name(op_of_opcode(Opcode::Stats as u8)), "stats");
        assert_eq!(op_name(op_of_opcode(0xff)), "other");
        for code in ErrorCode::ALL {
            assert_eq!(outcome_name(outcome_of_code(code)), code.as_str());
            assert_eq!(outcome_of_code_name(code.as_str()), outcome_of_code(code));
        }
        let response = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":{\"code\":\"not_found\",\"message\":\"x\"}}";
        assert_eq!(outcome_name(outcome_of_http_response(response)), "not_found");
        assert_eq!(outcome_of_http_response(b"HTTP/1.1 200 OK\r\n\r\n"), 0);
    }

    #[test]
    fn disabled_metrics_record_nothing_and_allocate_nothing() {
        let metrics = ReactorMetrics::new(false);
        metrics.executed(Protocol::Http, 0, 0, 5);
        metrics.answered(Protocol::Http, 0, 0);
        let mut totals = RequestTotals::default();
        metrics.add_to(&mut totals);
        assert!(totals.counts.iter().all(|&n| n == 0));
    }
}
