//! Every bound the server enforces, in one table, each named with its unit and
//! commented with what it costs (issue 15: "one table of limits for the whole
//! server"). The engine's own bounds live in `engine::limits` (the engine is pure
//! and is used without the server) and are re-exported here, so this module is
//! the one place to read them all. Relationships between limits are checked at
//! compile time below each section. docs/limits.md is this table for users.
//!
//! Sections: engine, protocols (HTTP and binary), write-ahead log, connections.
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
/// keeps its connection and a slot in the worker's wait list.
pub const WAIT_MS_MAX: u64 = 60_000;
/// Items in one batch complete (binary only): the same bound as an enqueue
/// batch, for the same reason (the latency one request adds to everyone
/// behind it).
pub const COMPLETE_BATCH_ITEMS_COUNT_MAX: usize = BATCH_TASKS_COUNT_MAX;
/// Dependencies of all the tasks of one enqueue batch together. The engine
/// links each one while the batch holds the worker, and in the log each costs
/// 9 bytes while `1,` costs 2 in a JSON body: without this bound a 1 MiB body
/// could make a 4.5 MiB log record (see [`RECORD_BYTES_OVER_BODY_MAX`]). 16,384
/// covers a chain through a full batch of 10,000 tasks. Checked at the edge
/// only, so that logs written before it existed replay unchanged.
pub const BATCH_DEPENDS_ON_COUNT_MAX: usize = 16_384;

const _: () = assert!(BODY_BYTES_MAX_DEFAULT == FRAME_BODY_BYTES_MAX_DEFAULT);
const _: () = assert!(DEPENDS_ON_COUNT_MAX <= BATCH_DEPENDS_ON_COUNT_MAX);
const _: () = assert!(BATCH_TASKS_COUNT_MAX <= BATCH_DEPENDS_ON_COUNT_MAX);

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
/// [`crate::command::check_limits`]. Derived from `wal/record.rs` (a record
/// is `kind:u8 now_ms:u64`, strings `len:u16`, bytes `len:u32`, options a tag
/// byte; a task is at most 31 bytes plus its payload, group, key and 9 bytes a
/// dependency) against the shortest body that can say the same thing:
///
/// - HTTP: a task's payload is the exact JSON text sent and every decoded
///   string is at most its JSON text, so those cost no more in the record than
///   in the body. The shortest batch entry, `{"payload":0},`, is 14 bytes
///   against 24 in the record: at most 11 more per task. A dependency `1,` is
///   2 bytes against 9: at most 7 more per dependency. Optional members cost
///   more in the body than in the record (`,"group":""` is 11 bytes against 3).
///   The queue name comes from the path (at most 128 bytes, plus the record's
///   fixed 15 bytes), and no other command gains more than 200 bytes.
/// - Binary: a task spec is 32 bytes plus its strings, 8 bytes a dependency
///   and its payload: at most 1 more per dependency, and every other command
///   at most 16 more than its frame.
///
/// `record_bytes_never_exceed_the_body_by_more_than_the_bound` (in
/// `command.rs`) builds the worst cases of both protocols and checks this.
pub const RECORD_BYTES_OVER_BODY_MAX: usize =
    record_bytes_over_body_max(BATCH_TASKS_COUNT_MAX, BATCH_DEPENDS_ON_COUNT_MAX);

/// The same bound for a command of `tasks_count` tasks holding
/// `depends_on_count` dependencies in all: the fuzz targets check each
/// command against it, so the derivation above is tested at every size.
pub const fn record_bytes_over_body_max(tasks_count: usize, depends_on_count: usize) -> usize {
    512 + 11 * tasks_count + 7 * depends_on_count
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
// A record's strings have 16-bit lengths (`wal/record.rs`): every string a
// command may carry past the edge fits one.
const _: () = assert!(QUEUE_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(GROUP_NAME_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(IDEMPOTENCY_KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX <= u16::MAX as usize);
// Its byte strings and counts have 32-bit lengths.
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
