//! Every bound the server enforces, in one table, each named with its unit and
//! commented with what it costs (issue 15: "one table of limits for the whole
//! server"). The engine's own bounds live in `engine::limits` (the engine is pure
//! and is used without the server) and are re-exported here, so this module is
//! the one place to read them all. Relationships between limits are checked at
//! compile time below each section.
//!
//! Sections: engine, protocols (HTTP and binary), write-ahead log, connections.

pub use crate::engine::limits::*;

// ---- protocols (HTTP and binary) -------------------------------------------

// ---- write-ahead log ---------------------------------------------------------

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
/// have taken and not yet answered (handed to workers, or answered and waiting
/// to be encoded). Each holds a slot in the request queue and, answered, a
/// reply (a few hundred bytes; a large payload is shared with the engine).
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// `--reply-bytes-max` default: reply bytes waiting for their peers on all
/// connections together, past which no connection takes a new request until
/// they drain. Costs up to this much memory (plus, per connection, what was
/// already in flight when the bound was reached).
pub const REPLY_BYTES_MAX_DEFAULT: usize = 256 << 20;
/// `--connection-long-polls-max` default: long polls (dequeues with `wait_ms`)
/// one connection may have waiting at once; past it a long poll is answered at
/// once with `capacity_exceeded` (503 over HTTP; retryable). Keeps one client
/// from taking all of the server's [`LONG_POLLS_COUNT_MAX`] slots.
pub const CONNECTION_LONG_POLLS_MAX_DEFAULT: usize = 64;
/// Long polls the workers hold at once, all connections together; past it a
/// long poll gets `capacity_exceeded` (503; retryable). Each costs its
/// queue names and a reply slot (about 100 bytes).
pub const LONG_POLLS_COUNT_MAX: usize = 10_000;
/// Requests a reactor takes from one connection's input before it lets the
/// other connections with input take theirs (fairness: a deep pipeline gets
/// its requests to the workers in turns of this many, interleaved with other
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
