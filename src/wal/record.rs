//! The contents of a log record: a state-changing [`Command`] as a worker
//! executed it, with the time it passed the engine, or an engine tick, or the
//! engine's seed. Little-endian; the segment format's version (`format.rs`,
//! version 2) covers this layout too.
//!
//! ```text
//! record  = kind:u8  now_ms:u64  rest
//!   kind 1, a command: rest = opcode:u8  body
//!           the binary protocol's request body for that opcode, byte for byte
//!           what a client sends after the frame header (docs/wire.md)
//!   kind 2, a tick:    rest = work_max:u32
//!   kind 3, the seed:  rest = seed:u64
//! ```
//!
//! **One codec.** A command has one binary form, the wire request
//! (`tqx-wire`): [`encode_command`] maps it to its [`tqx_wire::Request`]
//! (`binary::command_to_request`) and writes that request's body with the
//! wire's own encoder; [`decode`] reads the body with the decoder the server
//! uses for binary frames and maps it with the same mapping
//! (`binary::request_command`). An HTTP command is logged in its binary form
//! too. There is no second encoder or decoder of a command to keep in step
//! with the protocol, or to forget a limit in.
//!
//! **Ticks and the seed are not commands.** No client sends them and the wire
//! has no opcode for them (an opcode for each would let a client ask for a
//! tick or reseed the engine), so they keep this small fixed layout of their
//! own.
//!
//! **Replay does not check limits.** [`decode`] maps with
//! `binary::request_command`, not `request_to_command`: a record was executed
//! when it was logged, and must replay the same way even if a later version
//! lowers a limit (`command::check_limits`). The engine still checks its own
//! rules when the command runs, as it did the first time.
//!
//! Decoding never panics and never allocates more than the record holds (the
//! wire decoder checks every count against the bytes present); records are
//! checksummed before they get here, but the decoder does not rely on that.

use bytes::Bytes;
use tqx_wire::{Opcode, Request};

use super::format::RECORD_PAYLOAD_BYTES_MAX;
use crate::binary;
use crate::command::Command;

/// One log record's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Command(Command),
    /// `Engine::tick(now_ms, work_max)`.
    Tick {
        work_max: u32,
    },
    /// The engine's seed: the first record of a log.
    Seed(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub now_ms: u64,
    pub entry: Entry,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable log record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

mod kind {
    pub const COMMAND: u8 = 1;
    pub const TICK: u8 = 2;
    pub const SEED: u8 = 3;
}

/// `kind:u8 now_ms:u64`.
const HEADER_BYTES: usize = 9;

/// Whether a command changes engine state and so belongs in the log. Reads do
/// not; a dequeue does (its leases), though its reply need not wait for a sync.
pub fn is_logged(command: &Command) -> bool {
    !matches!(
        command,
        Command::ListQueues | Command::GetQueue { .. } | Command::GetTask { .. } | Command::ListTasks { .. }
    )
}

/// The same for a request's opcode: what [`is_logged`] says of the command
/// it maps to (`logged_opcodes_are_the_logged_commands` checks that they
/// agree). Hello, ping and auth are not commands (so no token is ever logged).
fn is_logged_opcode(opcode: Opcode) -> bool {
    !matches!(
        opcode,
        Opcode::Hello
            | Opcode::Ping
            | Opcode::Auth
            | Opcode::ListQueues
            | Opcode::GetQueue
            | Opcode::GetTask
            | Opcode::ListTasks
    )
}

fn header(kind: u8, now_ms: u64, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&now_ms.to_le_bytes());
}

/// Appends `record` to `out`.
///
/// Panics on a command the log must not hold (a read): callers log only what
/// [`is_logged`] accepts.
pub fn encode(record: &LogRecord, out: &mut Vec<u8>) {
    match &record.entry {
        Entry::Command(command) => encode_command(record.now_ms, command, out),
        Entry::Tick { work_max } => {
            header(kind::TICK, record.now_ms, out);
            out.extend_from_slice(&work_max.to_le_bytes());
        }
        Entry::Seed(seed) => {
            header(kind::SEED, record.now_ms, out);
            out.extend_from_slice(&seed.to_le_bytes());
        }
    }
}

/// Appends the record of `command` executed at `now_ms` (the same bytes as
/// [`encode`] of `Entry::Command`), without moving the command into a
/// [`LogRecord`]: workers encode a command just before executing it.
///
/// `command` must have passed `command::check_limits` (both protocols check
/// every command they build): then it has a wire request, every length fits
/// its field, and the record fits [`RECORD_PAYLOAD_BYTES_MAX`]
/// (`limits::RECORD_BYTES_OVER_BODY_MAX`, checked at compile time and at
/// start against `--max-body-bytes`). A command that did not is a bug in an
/// edge and stops the process with a message that says so, before anything is
/// logged: a mangled record would replay as something else. Panics on a read
/// too, which the log must not hold (see [`is_logged`]).
pub fn encode_command(now_ms: u64, command: &Command, out: &mut Vec<u8>) {
    assert!(is_logged(command), "a read reached the log encoder: reads are not logged");
    let request = binary::command_to_request(command).unwrap_or_else(|reason| {
        panic!(
            "a command with no binary request reached the log encoder ({reason}): the protocol edge \
             (command::check_limits) must refuse it"
        )
    });
    let start = out.len();
    header(kind::COMMAND, now_ms, out);
    out.push(request.opcode() as u8);
    if let Err(error) = request.encode_body(out) {
        panic!(
            "a command the wire encoder refuses reached the log encoder ({error}): the protocol edge \
             (command::check_limits) must refuse it (src/limits.rs)"
        )
    }
    check_record_bytes(out.len() - start);
}

/// Appends the record of a command executed at `now_ms` whose binary request
/// body (`opcode` and `body`, without the frame header) is already at hand:
/// the binary path can log the body it received as it is, with no second
/// encoding. The body must be the one that decodes to the command executed
/// (checked with `command::check_limits`), and `opcode` a state-changing one;
/// the log takes it on trust, and replay decodes and executes it.
///
/// Panics on an opcode that is not a logged command, and on a record over
/// [`RECORD_PAYLOAD_BYTES_MAX`] (`--max-body-bytes` keeps every accepted body
/// under it).
pub fn encode_request_body(now_ms: u64, opcode: u8, body: &[u8], out: &mut Vec<u8>) {
    assert!(
        Opcode::from_u8(opcode).is_some_and(is_logged_opcode),
        "opcode {opcode:#04x} reached the log encoder: only state-changing requests are logged"
    );
    let start = out.len();
    header(kind::COMMAND, now_ms, out);
    out.push(opcode);
    out.extend_from_slice(body);
    check_record_bytes(out.len() - start);
}

fn check_record_bytes(record_bytes: usize) {
    assert!(
        record_bytes <= RECORD_PAYLOAD_BYTES_MAX,
        "a {record_bytes}-byte log record, over the {RECORD_PAYLOAD_BYTES_MAX}-byte limit: the protocol edge and \
         --max-body-bytes must make this impossible (src/limits.rs)"
    );
}

/// Reads one record; fails on anything malformed or left over, on a request
/// that is not a state-changing command, and on a body the wire decoder or the
/// binary mapping refuses (the same messages a client would get).
pub fn decode(bytes: &[u8]) -> Result<LogRecord, DecodeError> {
    let Some((head, rest)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(DecodeError(format!("{} bytes, shorter than a record header ({HEADER_BYTES})", bytes.len())));
    };
    let now_ms = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    let fixed = |what: &str, expected: usize| {
        if rest.len() == expected {
            Ok(rest)
        } else {
            Err(DecodeError(format!("a {what} record holds {expected} bytes after its header; found {}", rest.len())))
        }
    };
    let entry = match head[0] {
        kind::TICK => Entry::Tick { work_max: u32::from_le_bytes(fixed("tick", 4)?.try_into().expect("4 bytes")) },
        kind::SEED => Entry::Seed(u64::from_le_bytes(fixed("seed", 8)?.try_into().expect("8 bytes"))),
        kind::COMMAND => Entry::Command(decode_command(rest)?),
        other => return Err(DecodeError(format!("record kind {other}"))),
    };
    Ok(LogRecord { now_ms, entry })
}

/// `opcode:u8 body`, decoded and mapped the way the server does a binary
/// client's frame, without `check_limits` (see the module docs).
fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    let Some((&opcode_byte, body)) = bytes.split_first() else {
        return Err(DecodeError("a command record without an opcode".into()));
    };
    let opcode = Opcode::from_u8(opcode_byte)
        .filter(|&opcode| is_logged_opcode(opcode))
        .ok_or_else(|| DecodeError(format!("opcode {opcode_byte:#04x} is not a logged command")))?;
    // One copy of the body: payloads of `binary::PAYLOAD_SHARED_BYTES_MIN`
    // bytes or more stay slices of it, as they do of a receive buffer.
    let request = Request::decode_body(opcode, Bytes::copy_from_slice(body))
        .map_err(|error| DecodeError(format!("{} body: {}", opcode.name(), error.message)))?;
    binary::request_command(request).map_err(|(_, message)| DecodeError(format!("{}: {message}", opcode.name())))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tqx_wire::Opcode;

    use super::*;
    use crate::binary::tests::{command as any_command, every_command};

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            any::<u32>().prop_map(|work_max| Entry::Tick { work_max }),
            any::<u64>().prop_map(Entry::Seed),
            any_command().prop_filter("logged", is_logged).prop_map(Entry::Command),
        ]
    }

    proptest! {
        #[test]
        fn every_record_decodes_to_what_was_encoded(now_ms in any::<u64>(), entry in entry()) {
            let record = LogRecord { now_ms, entry };
            let mut bytes = Vec::new();
            encode(&record, &mut bytes);
            prop_assert_eq!(decode(&bytes), Ok(record));
            // Every strict prefix is refused, never misread; so is a byte more.
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
            bytes.push(0);
            prop_assert!(decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }
    }

    /// The record of a command is its wire body behind a 10-byte header: what
    /// a binary client sends, so the binary path may log a body as received.
    #[test]
    fn a_command_record_is_the_wire_request_body_behind_kind_time_and_opcode() {
        for command in every_command().into_iter().filter(is_logged) {
            let request = binary::command_to_request(&command).unwrap();
            let mut frame = Vec::new();
            request.encode(1, &mut frame);
            let body = &frame[tqx_wire::HEADER_BYTES..];
            let mut record = Vec::new();
            encode_command(0x0102_0304_0506_0708, &command, &mut record);
            let mut expected = vec![kind::COMMAND, 8, 7, 6, 5, 4, 3, 2, 1, request.opcode() as u8];
            expected.extend_from_slice(body);
            assert_eq!(record, expected, "{command:?}");
            let mut as_received = Vec::new();
            encode_request_body(0x0102_0304_0506_0708, request.opcode() as u8, body, &mut as_received);
            assert_eq!(as_received, expected);
        }
    }

    #[test]
    fn ticks_and_the_seed_have_their_fixed_layout() {
        let mut bytes = Vec::new();
        encode(&LogRecord { now_ms: 1, entry: Entry::Tick { work_max: 0x0a0b_0c0d } }, &mut bytes);
        assert_eq!(bytes, [kind::TICK, 1, 0, 0, 0, 0, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a]);
        bytes.clear();
        encode(&LogRecord { now_ms: 2, entry: Entry::Seed(u64::MAX) }, &mut bytes);
        assert_eq!(bytes, [kind::SEED, 2, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]);
    }

    #[test]
    fn logged_opcodes_are_the_logged_commands() {
        for command in every_command() {
            let opcode = binary::command_to_request(&command).unwrap().opcode();
            assert_eq!(is_logged_opcode(opcode), is_logged(&command), "{command:?}");
        }
        assert!(!is_logged_opcode(Opcode::Hello) && !is_logged_opcode(Opcode::Ping) && !is_logged_opcode(Opcode::Auth));
    }

    #[test]
    fn a_record_holding_a_read_hello_or_unknown_opcode_is_refused() {
        for (opcode, body) in [
            (Opcode::GetTask as u8, &1u64.to_le_bytes()[..]),
            (Opcode::Ping as u8, &[][..]),
            (Opcode::Hello as u8, &[1, 1, 0, 0, 0, 0, 0, 0][..]),
            (Opcode::Auth as u8, &[1, 0, 0, 0, 0, 0, 0, 0, b't'][..]),
            (0xee, &[][..]),
        ] {
            let mut bytes = vec![kind::COMMAND];
            bytes.extend_from_slice(&0u64.to_le_bytes());
            bytes.push(opcode);
            bytes.extend_from_slice(body);
            let error = decode(&bytes).unwrap_err();
            assert!(error.0.contains("is not a logged command"), "{opcode:#x}: {error}");
        }
    }

    /// The wire decoder's own checks answer for a record: a count larger than
    /// the record can hold is refused before anything is reserved.
    #[test]
    fn a_huge_count_in_a_small_record_is_refused_without_allocating() {
        let mut bytes = vec![kind::COMMAND];
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.push(Opcode::CompleteBatch as u8);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let error = decode(&bytes).unwrap_err();
        assert!(error.0.starts_with("complete_batch body: "), "{error}");
    }

    /// Replay maps without `check_limits`: a record executed under larger
    /// limits (here a dequeue of more tasks than today's maximum) replays as
    /// it ran, and the engine decides what it does as it did then.
    #[test]
    fn replay_does_not_apply_the_edge_limits_again() {
        let over = crate::limits::DEQUEUE_TASKS_COUNT_MAX + 1;
        let command = Command::Dequeue { queues: vec!["q".into()], max: over, lease_ms: None, wait_ms: 0 };
        assert!(crate::command::check_limits(&command).is_err());
        let request = binary::command_to_request(&command).unwrap();
        let mut body = Vec::new();
        request.encode_body(&mut body).unwrap();
        let mut bytes = Vec::new();
        encode_request_body(5, Opcode::Dequeue as u8, &body, &mut bytes);
        assert_eq!(decode(&bytes), Ok(LogRecord { now_ms: 5, entry: Entry::Command(command) }));
    }

    /// Unreachable from a client (`command::check_limits` refuses such a
    /// command at the edge); if an edge forgets a field, the process stops
    /// with a message that names the cause instead of logging a bad record.
    #[test]
    #[should_panic(expected = "the protocol edge (command::check_limits) must refuse it")]
    fn a_string_the_edge_should_have_refused_stops_with_the_reason() {
        let command = Command::Fail { id: 1, lease: 1, error: "x".repeat(70_000), retry: true };
        encode_command(0, &command, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "no binary request reached the log encoder (max: 70000 does not fit 16 bits)")]
    fn a_dequeue_max_the_wire_cannot_carry_stops_with_the_reason() {
        let command = Command::Dequeue { queues: vec!["q".into()], max: 70_000, lease_ms: None, wait_ms: 0 };
        encode_command(0, &command, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "only state-changing requests are logged")]
    fn a_read_body_is_not_logged() {
        encode_request_body(0, Opcode::GetTask as u8, &1u64.to_le_bytes(), &mut Vec::new());
    }

    #[test]
    fn reads_are_not_logged() {
        assert!(!is_logged(&Command::ListQueues));
        assert!(!is_logged(&Command::GetTask { id: 1 }));
        assert!(is_logged(&Command::Cancel { id: 1 }));
        assert!(is_logged(&Command::CompleteBatch { items: Vec::new() }));
    }
}
