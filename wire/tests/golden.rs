//! Golden vectors: each file in `wire/golden/` is a frame written by hand from
//! `docs/wire.md` (the same bytes as its worked examples). Each test parses one
//! file as literal bytes, checks that it decodes to the value written out below
//! by hand, and that encoding that value gives exactly those bytes. The encoder
//! never produces the expected bytes, so a change of layout fails here even if
//! encoder and decoder change together.
//!
//! Run: `cargo test --release -p tqx-wire --test golden`.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use tqx_wire::{
    Dep, Discipline, Enqueued, ErrorCode, LeasedTask, Opcode, QueuePatch, Request, Response, Secret, TaskSpec,
    TaskState, TaskView, SCOPE_CONSUME, SCOPE_PRODUCE,
};

use common::split_frame;

fn golden_dir() -> PathBuf {
    common::manifest_dir().join("golden")
}

/// Lowercase hex digits, grouped freely with whitespace; `#` comments to the end
/// of the line.
fn parse_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert!(digits.len() % 2 == 0, "an odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ASCII");
            assert!(pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "not lowercase hex: {pair:?}");
            u8::from_str_radix(pair, 16).expect("hex")
        })
        .collect()
}

fn golden(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_hex(&text)
}

fn check_request(name: &str, request_id: u64, expected: Request) {
    let bytes = golden(name);
    let (header, body) = split_frame(&bytes);
    assert_eq!(header.request_id.get(), request_id, "{name}: request_id");
    assert_eq!(Request::decode(&header, body), Ok(expected.clone()), "{name}: decode");
    let mut encoded = Vec::new();
    expected.encode(request_id, &mut encoded);
    assert_eq!(encoded, bytes, "{name}: encode");
}

fn check_response(name: &str, opcode: u8, request_id: u64, expected: Response) {
    let bytes = golden(name);
    let (header, body) = split_frame(&bytes);
    assert_eq!(header.request_id.get(), request_id, "{name}: request_id");
    assert_eq!(Response::decode(&header, body), Ok(expected.clone()), "{name}: decode");
    let mut encoded = Vec::new();
    expected.encode(opcode, request_id, &mut encoded);
    assert_eq!(encoded, bytes, "{name}: encode");
}

const LEASE: u64 = 1_234_567_890_123_456_789;

fn json(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

#[test]
fn hello_request() {
    check_request("hello.request.hex", 1, Request::Hello { version_min: 1, version_max: 1 });
}

#[test]
fn hello_reply() {
    check_response(
        "hello.reply.hex",
        Opcode::Hello as u8,
        1,
        Response::Hello { version: 1, frame_body_bytes_max: 1_048_576 },
    );
}

#[test]
fn ping_request() {
    check_request("ping.request.hex", 2, Request::Ping);
}

#[test]
fn ping_reply() {
    check_response("ping.reply.hex", Opcode::Ping as u8, 2, Response::Pong { ready: true });
}

#[test]
fn stats_request() {
    check_request("stats.request.hex", 6, Request::Stats);
}

#[test]
fn stats_reply() {
    check_response("stats.reply.hex", Opcode::Stats as u8, 6, Response::Stats(json(r#"{"queues":[]}"#)));
}

#[test]
fn enqueue_request() {
    check_request(
        "enqueue.request.hex",
        3,
        Request::Enqueue {
            queue: "emails".into(),
            task: TaskSpec {
                payload: json(r#"{"n":1}"#),
                priority: 0,
                group: None,
                delay_ms: 0,
                max_attempts: None,
                depends_on: vec![],
                key: None,
            },
        },
    );
}

#[test]
fn enqueue_reply() {
    check_response(
        "enqueue.reply.hex",
        Opcode::Enqueue as u8,
        3,
        Response::Enqueued(Enqueued { id: 7, state: TaskState::Ready, created: true }),
    );
}

#[test]
fn dequeue_request() {
    check_request(
        "dequeue.request.hex",
        4,
        Request::Dequeue { queues: vec!["emails".into()], max: 1, lease_ms: Some(30_000), wait_ms: 0 },
    );
}

#[test]
fn dequeue_reply() {
    check_response(
        "dequeue.reply.hex",
        Opcode::Dequeue as u8,
        4,
        Response::Leased(vec![LeasedTask {
            id: 7,
            queue: "emails".into(),
            payload: json(r#"{"n":1}"#),
            priority: 0,
            group: None,
            attempt: 1,
            lease: LEASE,
            lease_expires_at_ms: 1_764_000_030_000,
        }]),
    );
}

#[test]
fn complete_request() {
    check_request(
        "complete.request.hex",
        5,
        Request::Complete { id: 7, lease: LEASE, result: Some(json(r#"{"sent":true}"#)) },
    );
}

#[test]
fn complete_reply() {
    check_response(
        "complete.reply.hex",
        Opcode::Complete as u8,
        5,
        Response::TaskState { id: 7, state: TaskState::Completed },
    );
}

#[test]
fn error_reply() {
    check_response(
        "error.reply.hex",
        Opcode::GetQueue as u8,
        6,
        Response::Error { code: ErrorCode::QueueNotFound, message: r#"queue "nope" not found"#.into() },
    );
}

#[test]
fn framing_error_reply() {
    check_response(
        "framing_error.reply.hex",
        0,
        0,
        Response::Error {
            code: ErrorCode::MalformedRequest,
            message: r#"bad magic 4854 (expected 5451, "TQ")"#.into(),
        },
    );
}

#[test]
fn enqueue_batch_request() {
    check_request(
        "enqueue_batch.request.hex",
        7,
        Request::EnqueueBatch {
            queue: "emails".into(),
            tasks: vec![
                TaskSpec { payload: json(r#""fetch""#), ..TaskSpec::default() },
                TaskSpec {
                    payload: json(r#""render""#),
                    depends_on: vec![Dep::Batch(0)],
                    key: Some("order-17".into()),
                    ..TaskSpec::default()
                },
            ],
        },
    );
}

#[test]
fn enqueue_batch_reply() {
    check_response(
        "enqueue_batch.reply.hex",
        Opcode::EnqueueBatch as u8,
        7,
        Response::EnqueuedBatch(vec![
            Enqueued { id: 8, state: TaskState::Ready, created: true },
            Enqueued { id: 9, state: TaskState::Waiting, created: true },
        ]),
    );
}

#[test]
fn configure_queue_request() {
    check_request(
        "configure_queue.request.hex",
        8,
        Request::ConfigureQueue {
            queue: "emails".into(),
            patch: QueuePatch {
                discipline: Some(Discipline::Priority),
                lease_ms: Some(10_000),
                group_concurrency: Some(None),
                ..QueuePatch::default()
            },
        },
    );
}

#[test]
fn get_task_reply() {
    check_response(
        "get_task.reply.hex",
        Opcode::GetTask as u8,
        9,
        Response::Task(TaskView {
            id: 9,
            queue: "emails".into(),
            state: TaskState::Completed,
            payload: json(r#""render""#),
            priority: 0,
            group: Some("tenant-1".into()),
            depends_on: vec![8],
            key: Some("order-17".into()),
            attempts: 1,
            max_attempts: 3,
            result: Some(json(r#"{"sent":true}"#)),
            error: None,
            created_at_ms: 1_764_000_000_000,
            updated_at_ms: 1_764_000_000_500,
            not_before_ms: None,
            lease_expires_at_ms: None,
            purge_at_ms: Some(1_764_003_600_500),
        }),
    );
}

const TOKEN: &str = "tqx_9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100";

#[test]
fn auth_request() {
    check_request("auth.request.hex", 10, Request::Auth { token: Secret::new(json(TOKEN)) });
}

#[test]
fn auth_reply() {
    let scopes = SCOPE_PRODUCE | SCOPE_CONSUME;
    assert_eq!(scopes, 3);
    check_response("auth.reply.hex", Opcode::Auth as u8, 10, Response::Authenticated { scopes });
}

#[test]
fn unauthenticated_reply() {
    check_response(
        "unauthenticated.reply.hex",
        Opcode::Enqueue as u8,
        11,
        Response::error(
            ErrorCode::Unauthenticated,
            "this server requires a token: send auth with a token after hello, before any other request",
        ),
    );
}

#[test]
fn list_tasks_request() {
    check_request(
        "list_tasks.request.hex",
        12,
        Request::ListTasks { queue: "emails".into(), state: TaskState::Dead, after: 0, limit: 100 },
    );
}

#[test]
fn list_tasks_reply() {
    check_response(
        "list_tasks.reply.hex",
        Opcode::ListTasks as u8,
        12,
        Response::TaskPage {
            tasks: vec![TaskView {
                id: 10,
                queue: "emails".into(),
                state: TaskState::Dead,
                payload: json(r#"{"n":2}"#),
                priority: 0,
                group: None,
                depends_on: vec![],
                key: None,
                attempts: 3,
                max_attempts: 3,
                result: None,
                error: Some("smtp timeout".into()),
                created_at_ms: 1_764_000_000_000,
                updated_at_ms: 1_764_000_090_000,
                not_before_ms: None,
                lease_expires_at_ms: None,
                purge_at_ms: Some(1_764_604_890_000),
            }],
            next_cursor: None,
        },
    );
}

#[test]
fn retry_task_request() {
    check_request("retry_task.request.hex", 13, Request::RetryTask { id: 10 });
}

#[test]
fn retry_task_reply() {
    check_response(
        "retry_task.reply.hex",
        Opcode::RetryTask as u8,
        13,
        Response::TaskState { id: 10, state: TaskState::Ready },
    );
}

#[test]
fn delete_task_request() {
    check_request("delete_task.request.hex", 14, Request::DeleteTask { id: 10 });
}

#[test]
fn delete_task_reply() {
    check_response("delete_task.reply.hex", Opcode::DeleteTask as u8, 14, Response::TaskDeleted);
}

#[test]
fn configure_queue_dead_retention_request() {
    check_request(
        "configure_queue_dead_retention.request.hex",
        15,
        Request::ConfigureQueue {
            queue: "emails".into(),
            patch: QueuePatch { dead_retention_ms: Some(86_400_000), ..QueuePatch::default() },
        },
    );
}

/// Every file in `wire/golden/` has a test above: a vector nobody checks would
/// be documentation that can rot.
#[test]
fn every_golden_file_is_checked() {
    let source = include_str!("golden.rs");
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("wire/golden")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".hex"))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "{names:?}");
    for name in names {
        assert!(source.contains(&format!("\"{name}\",")), "{name} has no test in wire/tests/golden.rs");
    }
}

/// `docs/wire.md` shows every golden file verbatim (its worked session and
/// examples), so the document cannot drift from the bytes tested here.
#[test]
fn the_specification_shows_every_golden_file() {
    let spec_path = common::manifest_dir().join("../docs/wire.md");
    let spec = std::fs::read_to_string(&spec_path).unwrap_or_else(|e| panic!("{}: {e}", spec_path.display()));
    for entry in std::fs::read_dir(golden_dir()).expect("wire/golden") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "hex") {
            let text = std::fs::read_to_string(&path).expect("golden file");
            assert!(spec.contains(text.trim_end()), "docs/wire.md does not show {} verbatim", path.display());
        }
    }
}
