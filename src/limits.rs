//! Every bound the server enforces, in one table, each named with its unit and
//! commented with what it costs (issue 15: "one table of limits for the whole
//! server"). The engine's own bounds live in `engine::limits` (the engine is pure
//! and is used without the server) and are re-exported here, so this module is
//! the one place to read them all. Relationships between limits are checked at
//! compile time below each section. docs/limits.md is this table for users.
//!
//! Sections: engine, protocols (HTTP and binary), write-ahead log, connections,
//! metrics, activity logs.
//!
//! **Where limits are checked.** Every bound on what one request may carry is
//! checked once, at the protocol edge, by [`crate::command::check_limits`]
//! (both protocols call it on the `Command` they built), before the command is
//! executed or logged. The engine checks its own bounds again when it executes
//! (it is used without the edges: by replay and by tests), but a command that
//! passed the edge never fails them for size, so no command the log cannot hold
//! ever reaches the log.

pub use crate::engine::limits::*;

// ---- protocols (HTTP and binary) -------------------------------------------

/// An HTTP request's line and headers together, in bytes (431 and close past
/// it). A connection buffers up to this much before its head is complete.
pub const HTTP_HEAD_BYTES_MAX_DEFAULT: usize = 16 << 10;
/// Headers per HTTP request (431 and close past it); the parser keeps an array
/// of this many slots on the stack (about 2 KiB).
pub const HTTP_HEADERS_COUNT_MAX: usize = 64;
/// Default of `--max-body-bytes`: the largest HTTP body, and the largest binary
/// frame body (announced in the hello reply). A connection may buffer one
/// whole body (plus a head or frame header and one read) before it is parsed.
/// The JSON wrapping or the 40-odd bytes of a binary enqueue make a single
/// task's payload of exactly [`PAYLOAD_BYTES_MAX`] need a little more than this.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// The binary protocol's default frame body limit is the same flag's default.
pub const FRAME_BODY_BYTES_MAX_DEFAULT: usize = tqx_wire::FRAME_BODY_BYTES_MAX_DEFAULT;
/// The longest a dequeue may ask to be held (`wait_ms`): a held long poll
/// keeps its connection and a slot in the executor's wait list.
pub const WAIT_MS_MAX: u64 = 60_000;
/// Items in one batch complete (binary only): the same bound as an enqueue
/// batch, for the same reason (the latency one request adds to everyone
/// behind it).
pub const COMPLETE_BATCH_ITEMS_COUNT_MAX: usize = BATCH_TASKS_COUNT_MAX;
/// Dependencies of all the tasks of one enqueue batch together. The engine
/// links each one while the batch holds the engine lock, and in the log each costs
/// 8 bytes while `1,` costs 2 in a JSON body: without this bound a 1 MiB body
/// could make a 4 MiB log record (see [`RECORD_BYTES_OVER_BODY_MAX`]). 16,384
/// covers a chain through a full batch of 10,000 tasks. Checked at the edge
/// only, so that logs written before it existed replay unchanged.
pub const BATCH_DEPENDS_ON_COUNT_MAX: usize = 16_384;

const _: () = assert!(BODY_BYTES_MAX_DEFAULT == FRAME_BODY_BYTES_MAX_DEFAULT);
const _: () = assert!(DEPENDS_ON_COUNT_MAX <= BATCH_DEPENDS_ON_COUNT_MAX);
const _: () = assert!(BATCH_TASKS_COUNT_MAX <= BATCH_DEPENDS_ON_COUNT_MAX);

// ---- authentication (src/auth.rs, docs/security.md) --------------------------

/// Bytes of a token a client presents (HTTP `Authorization: Bearer`, the
/// binary `auth` body). Tokens `tqx token create` makes are 68 (`tqx_` and 64
/// hex digits); a longer one is refused as unauthenticated without being
/// hashed. An HTTP request carries its token inline in the parsed request (no
/// allocation), so this is also what each parsed request may hold for it.
pub const TOKEN_BYTES_MAX: usize = 128;
/// Failed authentications one connection may make (a wrong or revoked token,
/// or a request without one): at this many the server answers the last and
/// closes the connection, so a client cannot try tokens at the rate of its
/// pipelining. A reconnect costs a TCP handshake (and a TLS one).
pub const AUTH_FAILURES_PER_CONNECTION_MAX: u32 = 3;
/// Lines in the token file: tokens and mutual-TLS client certificates
/// together (a certificate is looked up once per connection, by a plain
/// search). A first authentication compares the presented
/// token's hash with every entry in constant time (about 4 ns each: 40 µs at
/// the limit), once per connection and token; the table costs about 100 bytes
/// per token plus its queue patterns.
pub const TOKENS_COUNT_MAX: usize = 10_000;
/// Queue patterns of one token (`queues=`); each request a token limited to
/// queues makes tests its queue against each of them.
pub const TOKEN_QUEUE_PATTERNS_COUNT_MAX: usize = 64;
/// Size of the token file, read whole at start and on SIGHUP.
pub const TOKEN_FILE_BYTES_MAX: usize = 4 << 20;

const _: () = assert!(TOKEN_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(AUTH_FAILURES_PER_CONNECTION_MAX >= 1);

// ---- write-ahead log ---------------------------------------------------------

/// Largest log record payload (one command with its `now_ms`), in bytes. The
/// WAL thread and recovery hold one whole record in memory; recovery refuses a
/// record header that claims more (`wal/format.rs`).
pub const WAL_RECORD_BYTES_MAX: usize = 4 << 20;
/// Largest body of one group-commit batch, in bytes: one write and one
/// `fdatasync`; a group commit that would exceed it is split.
pub const WAL_BATCH_BODY_BYTES_MAX: usize = 16 << 20;

/// How many bytes a log record can be longer than the request body (HTTP) or
/// frame body (binary) it was decoded from, for a command that passed
/// [`crate::command::check_limits`]. Derived from `wal/record.rs`: a record is
/// a 10-byte header (`kind:u8 now_ms:u64 opcode:u8`) and the command's binary
/// request body (docs/wire.md: a task spec is 32 bytes plus its payload,
/// group and key, and 8 bytes a dependency), against the shortest body that
/// can say the same thing:
///
/// - Binary: the record is the frame body and its 10-byte header, exactly.
/// - HTTP: a task's payload is the exact JSON text sent and every decoded
///   string is at most its JSON text, so those cost no more in the record than
///   in the body. The shortest batch entry, `{"payload":0},`, is 14 bytes
///   against 33 in the record: at most 19 more per task. A dependency `1,` is
///   2 bytes against 8: at most 6 more per dependency. Optional members cost
///   more in the body than in the record (`,"group":"g"` is 12 bytes against
///   1; every number member is in the task spec's 32 bytes). The queue name
///   comes from the path (at most 128 bytes, plus the record's fixed 18 bytes
///   of a batch), and no other command gains more than 200 bytes (an empty
///   `PUT /v1/queues/{queue}` is a 48-byte patch and the name).
///
/// `record_bytes_never_exceed_the_body_by_more_than_the_bound` (in
/// `command.rs`) builds the worst cases of both protocols and checks this.
pub const RECORD_BYTES_OVER_BODY_MAX: usize =
    record_bytes_over_body_max(BATCH_TASKS_COUNT_MAX, BATCH_DEPENDS_ON_COUNT_MAX);

/// The same bound for a command of `tasks_count` tasks holding
/// `depends_on_count` dependencies in all: the fuzz targets check each
/// command against it, so the derivation above is tested at every size.
pub const fn record_bytes_over_body_max(tasks_count: usize, depends_on_count: usize) -> usize {
    512 + 19 * tasks_count + 6 * depends_on_count
}
/// The largest `--max-body-bytes` the server accepts: a body (or frame body)
/// of this many bytes decodes to at most [`WAL_RECORD_BYTES_MAX`] bytes of log
/// record, so no command the edges admit is one the log cannot hold. A larger
/// flag is refused at start ([`check_body_bytes_max`]).
pub const BODY_BYTES_MAX_MAX: usize = WAL_RECORD_BYTES_MAX - RECORD_BYTES_OVER_BODY_MAX;

/// The largest single-task enqueue (every field at its maximum) as a binary
/// frame body: 8 bytes before the queue name, a 32-byte task spec, 8 bytes a
/// dependency.
const ENQUEUE_WIRE_BYTES_MAX: usize = 8
    + QUEUE_NAME_BYTES_MAX
    + 32
    + GROUP_NAME_BYTES_MAX
    + IDEMPOTENCY_KEY_BYTES_MAX
    + 8 * DEPENDS_ON_COUNT_MAX
    + PAYLOAD_BYTES_MAX;

// The default body limit is one the log can hold.
const _: () = assert!(BODY_BYTES_MAX_DEFAULT <= BODY_BYTES_MAX_MAX);
// The largest valid single command (a task with every field at its maximum, or
// a complete with the largest result) fits a frame some flag value admits, and
// so one log record.
const _: () = assert!(ENQUEUE_WIRE_BYTES_MAX <= BODY_BYTES_MAX_MAX);
const _: () = assert!(ENQUEUE_WIRE_BYTES_MAX + RECORD_BYTES_OVER_BODY_MAX <= WAL_RECORD_BYTES_MAX);
const _: () = assert!(24 + RESULT_BYTES_MAX <= BODY_BYTES_MAX_MAX);
// A record holds a command as its binary request (`wal/record.rs`), so every
// command `check_limits` admits must fit the wire's fields (docs/wire.md),
// whichever protocol it came from. Strings have 16-bit lengths:
const _: () = assert!(QUEUE_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(GROUP_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX <= u16::MAX as usize);
// a dequeue's `max` and queue count, and a task's dependency count, are u16;
const _: () = assert!(DEQUEUE_TASKS_COUNT_MAX <= u16::MAX as usize);
const _: () = assert!(DEQUEUE_QUEUES_COUNT_MAX <= u16::MAX as usize);
const _: () = assert!(DEPENDS_ON_COUNT_MAX <= u16::MAX as usize);
// payload and result lengths, a batch's task count and a batch complete's item
// count are u32, and a batch reference (below the batch's task count) 32 bits.
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize && RESULT_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(BATCH_TASKS_COUNT_MAX <= u32::MAX as usize);
const _: () = assert!(COMPLETE_BATCH_ITEMS_COUNT_MAX <= u32::MAX as usize);
const _: () = assert!(WAL_RECORD_BYTES_MAX <= u32::MAX as usize);
// One maximal record (16-byte header, padding to 8) fits one batch.
const _: () = assert!(16 + WAL_RECORD_BYTES_MAX + 8 <= WAL_BATCH_BODY_BYTES_MAX);

/// Checks a `--max-body-bytes` value against the log: the message names both
/// limits. `main` refuses the flag with it while it reads the arguments, and
/// `server::serve` refuses a configuration with it before anything is opened.
pub fn check_body_bytes_max(body_bytes_max: usize) -> Result<(), String> {
    if body_bytes_max == 0 || body_bytes_max > BODY_BYTES_MAX_MAX {
        return Err(format!(
            "--max-body-bytes {body_bytes_max} is not between 1 and {BODY_BYTES_MAX_MAX}: a request body (or binary \
             frame body) of N bytes can decode to a write-ahead log record of up to N + {RECORD_BYTES_OVER_BODY_MAX} \
             bytes, and a log record holds at most {WAL_RECORD_BYTES_MAX} bytes (docs/limits.md)"
        ));
    }
    Ok(())
}

// ---- connections ---------------------------------------------------------------

// back-pressure and overload
//
// What a client can make the server hold in replies (docs/connections.md,
// "Back-pressure"). A connection takes a new request only while it has fewer
// than its in-flight maximum and fewer reply bytes waiting than its maximum,
// and while all connections together hold fewer reply bytes than the server's
// maximum; otherwise it stops reading (the inbox fills, the reader pauses, the
// kernel's window closes) until its replies drain. Replies of requests already
// in flight still arrive: they wait unencoded (sharing large payloads with the
// engine, not copies) and are encoded only while the connection's encoded
// output is under its maximum, so encoded bytes per connection stay under the
// maximum plus one reply.

/// `--connection-reply-bytes-max` default: encoded reply bytes one connection
/// may hold waiting for its peer to read them before it stops taking requests
/// (and stops encoding replies). Costs up to this much memory per connection
/// whose peer is slow to read, plus one reply.
pub const CONNECTION_REPLY_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// `--connection-requests-in-flight-max` default: requests one connection may
/// have taken and not yet answered (queued or executing, or answered and waiting
/// to be encoded). Each holds a slot in the request queue and, answered, a
/// reply (a few hundred bytes; a large payload is shared with the engine).
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// `--reply-bytes-max` default: reply bytes waiting for their peers on all
/// connections together, past which no connection takes a new request until
/// they drain. Costs up to this much memory (plus, per connection, what was
/// already in flight when the bound was reached).
pub const REPLY_BYTES_MAX_DEFAULT: usize = 256 << 20;
/// Payload bytes read back from RocksDB (payloads tiered storage moved out of
/// memory, `--memory-limit`) and held by replies not yet encoded, all
/// connections together. Each reply carries its own copy, and a reply can wait
/// for a client that does not read; past this the cold-reader thread waits
/// for room before it starts the next reply (src/server/tiering.rs). Costs up
/// to this much memory, plus one reply.
pub const COLD_READ_BYTES_MAX: usize = 64 << 20;
/// `--connection-long-polls-max` default: long polls (dequeues with `wait_ms`)
/// one connection may have waiting at once; past it a long poll is answered at
/// once with `capacity_exceeded` (503 over HTTP; retryable). Keeps one client
/// from taking all of the server's [`LONG_POLLS_COUNT_MAX`] slots.
pub const CONNECTION_LONG_POLLS_MAX_DEFAULT: usize = 64;
/// Long polls the executor holds at once, all connections together; past it a
/// long poll gets `capacity_exceeded` (503; retryable). Each costs its
/// queue names and a reply slot (about 100 bytes).
pub const LONG_POLLS_COUNT_MAX: usize = 10_000;
/// Requests a reactor takes from one connection's input before it lets the
/// other connections with input take theirs (fairness: a deep pipeline gets
/// its requests for execution in turns of this many, interleaved with other
/// connections', not its whole backlog first). Smaller costs more passes per
/// request (a yield each); larger lets one connection run further ahead.
pub const CONNECTION_REQUESTS_PER_PASS_MAX: usize = 64;
/// How often a reactor looks at the server-wide reply budget while any of
/// its connections is paused on it (the budget drains on other reactors,
/// which do not wake this one): a paused connection resumes up to this late.
/// One timer per reactor, only while someone waits.
pub const REPLY_BUDGET_RECHECK_MS: u64 = 5;

const _: () = assert!(CONNECTION_LONG_POLLS_MAX_DEFAULT <= CONNECTION_REQUESTS_IN_FLIGHT_MAX_DEFAULT);
const _: () = assert!(CONNECTION_LONG_POLLS_MAX_DEFAULT <= LONG_POLLS_COUNT_MAX);
const _: () = assert!(CONNECTION_REQUESTS_PER_PASS_MAX <= CONNECTION_REQUESTS_IN_FLIGHT_MAX_DEFAULT);
const _: () = assert!(CONNECTION_REPLY_BYTES_MAX_DEFAULT <= REPLY_BYTES_MAX_DEFAULT);
// deadlines, idle timeout, pruning (src/server/conn_timers.rs; docs/connections.md)

/// Default `--request-deadline-ms`: once the first byte of an HTTP request (head
/// and body) or a binary frame has arrived, the whole of it must arrive within
/// this, counted while the connection has nothing in flight; past it the
/// connection is closed. What it costs an honest client: a request slower than
/// 10 s to upload (1 MiB at under ~100 KB/s). What it saves: a slot held by a
/// client trickling a byte every few seconds.
pub const REQUEST_DEADLINE_MS_DEFAULT: u64 = 10_000;
/// Default `--idle-timeout-ms`: a connection with no request started and
/// nothing in flight for this long is closed (0 turns it off). An idle
/// connection costs a slot, a descriptor and ~2-4 KB of buffers.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// The largest value either flag takes (24 h).
pub const CONNECTION_TIMEOUT_MS_MAX: u64 = 86_400_000;
/// Default `--prune-above-percent`: open connections past this share of
/// `--max-connections` make an accept close the longest-idle connections
/// first, keeping 10 % of the slots free for new clients (100: never prune).
/// What it costs: idle clients past the threshold reconnect.
pub const PRUNE_ABOVE_PERCENT_DEFAULT: u8 = 90;
/// The smallest `--prune-above-percent` accepted: below it the server would
/// close idle connections while half its slots are free.
pub const PRUNE_ABOVE_PERCENT_MIN: u8 = 50;
/// How far below that threshold one pruning pass goes, in thousandths of
/// `--max-connections` (at least one connection): pruning 1 % at a time
/// amortizes the scan over all connections across many accepts.
pub const PRUNE_BATCH_PERMILLE: usize = 10;
/// After a pruning scan (O(open connections), under the registry lock) that
/// found too few idle connections, no other for this long: a server whose
/// connections are all busy is not rescanned on every accept. (A scan that
/// found enough needs no limit: it goes 1 % below the threshold, so the next
/// is due only that many accepts later.)
pub const PRUNE_SCAN_INTERVAL_MS: u64 = 10;
/// A connection accepted at `--max-connections` is still admitted while at
/// least as many pruned or timed-out connections are ending (their slots
/// are being freed: each closes as soon as its reactor runs it), up to this
/// many past the limit. Without it, a burst of connections faster than
/// pruning scans leaves the server full, and the first client after it is
/// refused although room is being made. Costs at most this many descriptors
/// past the limit (and at most a tenth of the limit), for moments: inside
/// the ones the server keeps in reserve (1,024, or half the open-file limit
/// under 2,048; `FD_RESERVE_COUNT` in `server/mod.rs`).
pub const CONNECTIONS_CLOSING_ADMITTED_MAX: usize = 64;
/// Each reactor sweeps its connections for missed deadlines and idle ones
/// every quarter of the shorter of the two timeouts, within these bounds: a
/// deadline is enforced at most this late (the default 10 s deadline: within
/// 11 s), and a sweep of 16,384 connections costs ~0.1 ms per second.
pub const CONNECTION_SWEEP_INTERVAL_MS_MAX: u64 = 1_000;
/// ... and at most this often, however short the timeouts (tests use ~1 s).
pub const CONNECTION_SWEEP_INTERVAL_MS_MIN: u64 = 10;

const _: () = assert!(PRUNE_ABOVE_PERCENT_MIN <= PRUNE_ABOVE_PERCENT_DEFAULT && PRUNE_ABOVE_PERCENT_DEFAULT <= 100);
const _: () = assert!(PRUNE_BATCH_PERMILLE * 100 < PRUNE_ABOVE_PERCENT_MIN as usize * 1000);
const _: () = assert!(CONNECTION_SWEEP_INTERVAL_MS_MIN <= CONNECTION_SWEEP_INTERVAL_MS_MAX);
const _: () = assert!(REQUEST_DEADLINE_MS_DEFAULT <= CONNECTION_TIMEOUT_MS_MAX);
const _: () = assert!(IDLE_TIMEOUT_MS_DEFAULT <= CONNECTION_TIMEOUT_MS_MAX);

// ---- metrics (src/metrics.rs; docs/metrics.md) -------------------------------

/// Queues shown by name in `GET /metrics` (`tqx_tasks{queue,state}`) and
/// `GET /v1/stats`: the first this many in name order; the rest are summed
/// into one `queue="_other"` row. Each queue shown costs 7 series in a
/// Prometheus server (one per state), so 100 queues cost 700 series per
/// scraped server, and a scrape renders ~60 KB for them; more queues than
/// this would make one TaskQueueX the largest target a Prometheus scrapes.
pub const METRICS_QUEUES_COUNT_MAX: usize = 100;

// ---- activity logs (src/server/activity_log.rs; docs/logs.md) ----------------

/// Connections refused past `--max-connections` or closed by the server (per
/// reason), failed accepts, requests answered with a server error (per code)
/// and slow log syncs are each reported in at most one line per this interval:
/// the first event opens a window, and one line with its count and an example
/// closes it. A client that provokes a million refusals costs one line per
/// kind per interval; what it costs an operator: an event is seen up to this
/// (plus a tick) late.
pub const ACTIVITY_LOG_INTERVAL_MS: u64 = 10_000;
/// Checkpoint rounds are reported in at most one line per this interval
/// (count, rows, slowest): a round every 5 s (the default
/// `--checkpoint-interval-ms`) would otherwise be 17,280 lines a day.
pub const CHECKPOINT_LOG_INTERVAL_MS: u64 = 60_000;
/// While recovery lasts longer than this, a progress line every this often
/// (replaying a 1 GiB log takes ~4 s here: docs/durability.md).
pub const RECOVERY_PROGRESS_INTERVAL_MS: u64 = 5_000;
/// A log batch whose write and `fdatasync` together take this long or longer
/// is a slow sync (a warning, aggregated as above): every `sync`-mode reply
/// of the batch waited that long. Measured here: 0.1-0.5 ms.
pub const WAL_SYNC_SLOW_MS: u64 = 100;
/// The activity log looks at its counters every quarter of its shortest
/// interval, within these bounds: a line is at most one tick late, and the
/// thread wakes at most 100 times a second (tests shorten the intervals with
/// the hidden `--debug-activity-log-interval-ms`).
pub const ACTIVITY_LOG_TICK_MS_MAX: u64 = 1_000;
pub const ACTIVITY_LOG_TICK_MS_MIN: u64 = 10;

const _: () = assert!(ACTIVITY_LOG_TICK_MS_MIN <= ACTIVITY_LOG_TICK_MS_MAX);
const _: () = assert!(ACTIVITY_LOG_TICK_MS_MAX <= ACTIVITY_LOG_INTERVAL_MS);
const _: () = assert!(ACTIVITY_LOG_INTERVAL_MS <= CHECKPOINT_LOG_INTERVAL_MS);
