//! Running a parsed command and checking what the server would send back, on
//! both protocols: the HTTP rendering (a well-formed response with a JSON body,
//! a status the API documents) and the binary one (a reply frame that the
//! client's decoder reads).
//!
//! Commands run against a small engine (the fixture): queue `q` holds tasks 1,
//! 2 and 3 (payloads `1`, `2`, `3`; 3 depends on 2), and task 1 is leased. A
//! command that creates tasks is followed by a `GetTask` of each, so that the
//! payloads a client sent (JSON over HTTP, any bytes over the binary protocol)
//! are rendered back too.

use taskqueuex::binary;
use taskqueuex::command::{execute, Command, Reply};
use taskqueuex::engine::{DepRef, Engine, EngineConfig, LeaseToken, NewTask, QueueConfigPatch, TaskId};
use taskqueuex::wal::record;
use tqx_wire::{peek_frame, Header, Opcode, Response, HEADER_BYTES};

use crate::response;

/// The fixture's clock.
pub const NOW_MS: u64 = 1_764_000_000_000;

/// Statuses a reply may carry over HTTP (docs/http-api.md).
const HTTP_STATUSES: [u16; 8] = [200, 201, 400, 404, 409, 413, 500, 503];

/// A command an edge accepted from a body (or frame body) of `body_bytes`
/// bytes is one the log can hold and replay: its record (the command's binary
/// request body, `wal/record.rs`) encodes without stopping the process (the
/// encoder asserts the command has a binary form), decodes back to the same
/// command, and fits within the bound `src/limits.rs` derives for its tasks
/// and dependencies (`record_bytes_over_body_max`, at most
/// `RECORD_BYTES_OVER_BODY_MAX`).
pub fn check_record_fits(command: &Command, body_bytes: usize) {
    if !record::is_logged(command) {
        return;
    }
    let bound = taskqueuex::command::record_bytes_over_body_max(command);
    let mut bytes = Vec::new();
    record::encode_command(NOW_MS, command, &mut bytes);
    assert!(
        bytes.len() <= body_bytes + bound,
        "a {body_bytes}-byte body made a {}-byte log record, more than the {bound} bytes the bound allows",
        bytes.len()
    );
    let replayed = record::decode(&bytes).unwrap_or_else(|error| panic!("{command:?}: its record: {error}"));
    assert_eq!(replayed, record::LogRecord { now_ms: NOW_MS, entry: record::Entry::Command(command.clone()) });
}

/// The engine every command runs against, and the lease token of its task 1.
pub fn fixture() -> (Engine, LeaseToken) {
    let mut engine = Engine::new(EngineConfig::default());
    engine.configure_queue("q", &QueueConfigPatch::default(), NOW_MS).expect("queue q");
    for k in 1..=3u64 {
        let task = NewTask {
            payload: bytes::Bytes::from(k.to_string()),
            depends_on: if k == 3 { vec![DepRef::Task(2)] } else { Vec::new() },
            ..NewTask::default()
        };
        engine.enqueue("q", task, NOW_MS).expect("task");
    }
    let mut leased = Vec::new();
    engine.dequeue(&["q"], 1, None, NOW_MS, &mut leased).expect("lease task 1");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, 1);
    (engine, leased[0].lease)
}

/// The binary opcode that carries `command` (its request's, the one mapping).
pub fn opcode_of(command: &Command) -> Opcode {
    binary::command_to_request(command).unwrap_or_else(|reason| panic!("{command:?}: {reason}")).opcode()
}

/// A frame with `opcode` became `command`: one opcode per command, except
/// `stats`, a read that executes as `ListQueues` (never logged) and that the
/// connection renders as statistics (docs/wire.md; `binary::command_opcode`).
/// Both targets that decode frames found the exception (fuzz/regressions/).
pub fn assert_command_has_opcode(command: &Command, opcode: u8) {
    if opcode != Opcode::Stats as u8 {
        assert_eq!(opcode_of(command) as u8, opcode, "{command:?} from opcode {opcode}");
    }
}

/// Runs `command` on the fixture (and a `GetTask` of every task it created),
/// checks the engine's invariants after it and after a year of ticks, and
/// checks every reply's renderings on both protocols.
pub fn run_and_check(command: Command, request_id: u64) {
    let (mut engine, _) = fixture();
    let opcode = opcode_of(&command) as u8;
    let reply = execute(&mut engine, command, NOW_MS + 1);
    check_invariants(&engine, "after the command");
    let created: Vec<TaskId> = match &reply {
        Reply::Enqueued(enqueued) => vec![enqueued.id],
        Reply::EnqueuedBatch(enqueued) => enqueued.iter().map(|e| e.id).collect(),
        _ => Vec::new(),
    };
    check_reply(&reply, opcode, request_id);
    for id in created {
        let reply = execute(&mut engine, Command::GetTask { id }, NOW_MS + 2);
        assert!(matches!(reply, Reply::Task(_)), "task {id} was just created: {reply:?}");
        check_reply(&reply, Opcode::GetTask as u8, request_id);
    }
    // Time passes: delays end, leases expire, retries and purges run.
    engine.tick(NOW_MS + 365 * 86_400_000, usize::MAX);
    check_invariants(&engine, "after a year of ticks");
}

fn check_invariants(engine: &Engine, when: &str) {
    if let Err(broken) = engine.check_invariants() {
        panic!("the engine's invariants broke {when}: {broken}");
    }
}

/// `reply` renders as a well-formed HTTP response and as a reply frame that
/// decodes.
pub fn check_reply(reply: &Reply, opcode: u8, request_id: u64) {
    if let Reply::StorageFailed(_) = reply {
        panic!("the pure engine cannot fail storage");
    }
    let mut out = Vec::new();
    taskqueuex::http::render_reply(reply, true, &mut out);
    let status = response::check(&out, true, false);
    assert!(HTTP_STATUSES.contains(&status), "HTTP status {status} for {reply:?}");

    let mut frame = Vec::new();
    binary::render_reply(reply, opcode, request_id, &mut frame);
    let (header, _) = check_reply_frame(&frame);
    assert_eq!(header.opcode, opcode, "a reply carries its request's opcode");
    assert_eq!(header.request_id.get(), request_id, "a reply carries its request's id");
}

/// `frame` is one whole reply frame that decodes; returns its header and reply.
pub fn check_reply_frame(frame: &[u8]) -> (Header, Response) {
    let header = match peek_frame(frame, usize::MAX) {
        Ok(Some(header)) => header,
        other => panic!("the server would send something that is not a frame: {other:?}"),
    };
    assert_eq!(HEADER_BYTES + header.body_len.get() as usize, frame.len(), "one whole frame");
    assert!(header.is_reply(), "the server's frames are replies");
    match Response::decode(&header, bytes::Bytes::copy_from_slice(&frame[HEADER_BYTES..])) {
        Ok(response) => (header, response),
        Err(error) => panic!("a reply the server would send does not decode: {error:?}\n{header:?}"),
    }
}
