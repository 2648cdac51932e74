//! The connection step and the mappings, driven with frames built by the
//! `tqx-wire` codec (the client side of the same crate).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tqx_wire::{CompleteItem as WireItem, Dep, ErrorCode, Header, Opcode, Request, Response, TaskSpec, HEADER_BYTES};

use super::*;
use crate::command::{CompleteItem, Reply};
use crate::engine::{self, EngineError, QueueConfig, StateCounts};
use crate::limits::BATCH_TASKS_COUNT_MAX;

const HELLO: Request = Request::Hello { version_min: 1, version_max: 1 };

fn frame(request: &Request, request_id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    request.encode(request_id, &mut out);
    out
}

/// Decodes one reply frame: its header and what it says.
fn reply(bytes: &[u8]) -> (Header, Response) {
    let header = tqx_wire::peek_frame(bytes, usize::MAX).expect("framing").expect("a whole frame");
    assert_eq!(bytes.len(), HEADER_BYTES + header.body_len.get() as usize, "exactly one frame");
    assert!(header.is_reply());
    let response = Response::decode(&header, Bytes::copy_from_slice(&bytes[HEADER_BYTES..])).expect("decodes");
    (header, response)
}

#[track_caller]
fn respond(next: &BinaryNext) -> (Header, Response) {
    match next {
        BinaryNext::Respond(bytes) => reply(bytes),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[track_caller]
fn error_of(next: &BinaryNext) -> (u8, u64, ErrorCode) {
    match respond(next) {
        (header, Response::Error { code, message }) => {
            assert!(!message.is_empty());
            assert_eq!(header.status.get(), code as u16);
            (header.opcode, header.request_id.get(), code)
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Runs `bytes` through a fresh connection in one call.
fn run(bytes: &[u8]) -> (Vec<BinaryNext>, ConnState, BytesMut) {
    let mut inbox = BytesMut::from(bytes);
    let mut state = ConnState::new();
    let mut out = Vec::new();
    take_frames(&mut inbox, &mut state, &Limits::default(), usize::MAX, &mut out);
    (out, state, inbox)
}

fn enqueue(queue: &str, payload: &[u8]) -> Request {
    Request::Enqueue {
        queue: queue.into(),
        task: TaskSpec { payload: Bytes::copy_from_slice(payload), ..TaskSpec::default() },
    }
}

#[test]
fn hello_then_requests_become_commands_with_their_ids() {
    let mut bytes = frame(&HELLO, 1);
    bytes.extend(frame(&enqueue("q", b"\xff\x00"), 2));
    bytes.extend(frame(&Request::Ping, 3));
    bytes.extend(frame(&Request::Dequeue { queues: vec!["q".into()], max: 5, lease_ms: None, wait_ms: 100 }, 4));
    let (out, state, rest) = run(&bytes);
    assert!(rest.is_empty() && state.handshake_done() && !state.is_closed());
    assert_eq!(out.len(), 4);
    let (header, hello) = respond(&out[0]);
    assert_eq!((header.opcode, header.request_id.get()), (Opcode::Hello as u8, 1));
    assert_eq!(hello, Response::Hello { version: 1, frame_body_bytes_max: 1 << 20 });
    match &out[1] {
        BinaryNext::Execute {
            request_id: 2,
            opcode,
            command: Command::Enqueue { queue, task },
            long_poll: false,
            ..
        } => {
            assert_eq!((*opcode, queue.as_str(), &task.payload[..]), (Opcode::Enqueue as u8, "q", &b"\xff\x00"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out[2], BinaryNext::Ping { request_id: 3 });
    assert!(matches!(out[3], BinaryNext::Execute { request_id: 4, long_poll: true, .. }), "{:?}", out[3]);
}

#[test]
fn requests_before_a_successful_hello_get_handshake_required_and_the_connection_stays() {
    let mut bytes = frame(&Request::ListQueues, 7);
    bytes.extend(frame(&Request::Ping, 8));
    bytes.extend(frame(&Request::Hello { version_min: 2, version_max: 3 }, 9));
    bytes.extend(frame(&Request::ListQueues, 10));
    bytes.extend(frame(&Request::Hello { version_min: 0, version_max: 4 }, 11));
    bytes.extend(frame(&Request::ListQueues, 12));
    let (out, state, _) = run(&bytes);
    assert_eq!(error_of(&out[0]), (Opcode::ListQueues as u8, 7, ErrorCode::HandshakeRequired));
    assert_eq!(error_of(&out[1]), (Opcode::Ping as u8, 8, ErrorCode::HandshakeRequired));
    assert_eq!(error_of(&out[2]), (Opcode::Hello as u8, 9, ErrorCode::UnsupportedVersion));
    assert_eq!(error_of(&out[3]).2, ErrorCode::HandshakeRequired);
    assert!(matches!(respond(&out[4]).1, Response::Hello { version: 1, .. }));
    assert!(matches!(out[5], BinaryNext::Execute { request_id: 12, command: Command::ListQueues, .. }));
    assert!(state.handshake_done() && !state.is_closed());
}

#[test]
fn another_version_and_unknown_opcodes_are_answered_and_skipped() {
    let mut bytes = frame(&HELLO, 1);
    let mut other_version = frame(&Request::ListQueues, 2);
    other_version[2] = 2;
    bytes.extend(other_version);
    let mut unknown = frame(&Request::ListQueues, 3);
    unknown[3] = 0x7f;
    bytes.extend(unknown);
    bytes.extend(frame(&Request::ListQueues, 4));
    let (out, state, _) = run(&bytes);
    assert_eq!(error_of(&out[1]), (Opcode::ListQueues as u8, 2, ErrorCode::UnsupportedVersion));
    assert_eq!(error_of(&out[2]), (0x7f, 3, ErrorCode::UnknownOpcode));
    assert!(matches!(out[3], BinaryNext::Execute { request_id: 4, .. }));
    assert!(!state.is_closed());
}

#[test]
fn a_body_that_does_not_decode_is_answered_with_its_code_and_the_connection_stays() {
    let mut bytes = frame(&HELLO, 1);
    // A get-task body one byte short.
    let mut short = frame(&Request::GetTask { id: 5 }, 2);
    short.pop();
    let body_len = (short.len() - HEADER_BYTES) as u32;
    short[8..12].copy_from_slice(&body_len.to_le_bytes());
    bytes.extend(short);
    bytes.extend(frame(&Request::GetTask { id: 6 }, 3));
    let (out, _, _) = run(&bytes);
    assert_eq!(error_of(&out[1]), (Opcode::GetTask as u8, 2, ErrorCode::MalformedRequest));
    assert!(matches!(out[2], BinaryNext::Execute { command: Command::GetTask { id: 6 }, .. }));
}

#[test]
fn bad_magic_and_an_oversized_body_are_fatal_after_one_error_frame() {
    let mut oversized = frame(&Request::ListQueues, 2);
    oversized[8..12].copy_from_slice(&((1u32 << 20) + 1).to_le_bytes());
    for (bad, code) in
        [(b"GET / HTTP/1.1\r\n\r\n".to_vec(), ErrorCode::MalformedRequest), (oversized, ErrorCode::PayloadTooLarge)]
    {
        let mut stream = frame(&HELLO, 1);
        stream.extend_from_slice(&bad);
        stream.extend(frame(&Request::ListQueues, 9));
        let (out, mut state, mut rest) = run(&stream);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(state.is_closed());
        match &out[1] {
            BinaryNext::Fatal(frame) => {
                let (header, response) = reply(frame);
                assert_eq!((header.opcode, header.request_id.get()), (0, 0));
                assert!(matches!(response, Response::Error { code: c, .. } if c == code), "{response:?}");
            }
            other => panic!("{other:?}"),
        }
        // Nothing more is taken from a closed connection.
        let mut more = Vec::new();
        take_frames(&mut rest, &mut state, &Limits::default(), usize::MAX, &mut more);
        assert!(more.is_empty());
    }
    // The magic is checked as soon as two bytes are in; the length as soon as
    // the header is: neither waits for a body.
    let (out, _, _) = run(b"XY");
    assert!(matches!(out[..], [BinaryNext::Fatal(_)]));
    let limits = Limits { frame_body_bytes_max: 10 };
    let mut inbox = BytesMut::from(&frame(&enqueue("q", &[0; 11]), 1)[..HEADER_BYTES]);
    let mut out = Vec::new();
    take_frames(&mut inbox, &mut ConnState::new(), &limits, usize::MAX, &mut out);
    assert!(matches!(out[..], [BinaryNext::Fatal(_)]));
}

#[test]
fn frames_split_at_every_byte_give_the_same_steps_as_whole() {
    let mut bytes = frame(&HELLO, 1);
    bytes.extend(frame(&enqueue("q", &[7; 100]), 2));
    bytes.extend(frame(&Request::Ping, 3));
    bytes.extend(frame(&Request::Cancel { id: 4 }, 4));
    let (whole, _, _) = run(&bytes);
    let mut inbox = BytesMut::new();
    let mut state = ConnState::new();
    let mut pieces = Vec::new();
    for &byte in &bytes {
        inbox.extend_from_slice(&[byte]);
        take_frames(&mut inbox, &mut state, &Limits::default(), usize::MAX, &mut pieces);
    }
    assert_eq!(pieces, whole);
    assert!(inbox.is_empty());
}

#[test]
fn at_most_frames_max_frames_are_taken_per_call() {
    let mut bytes = frame(&HELLO, 1);
    for id in 0..5 {
        bytes.extend(frame(&Request::GetTask { id }, id + 2));
    }
    let mut inbox = BytesMut::from(&bytes[..]);
    let mut state = ConnState::new();
    let mut out = Vec::new();
    take_frames(&mut inbox, &mut state, &Limits::default(), 2, &mut out);
    assert_eq!(out.len(), 2);
    take_frames(&mut inbox, &mut state, &Limits::default(), 0, &mut out);
    assert_eq!(out.len(), 2);
    take_frames(&mut inbox, &mut state, &Limits::default(), 100, &mut out);
    assert_eq!(out.len(), 6);
    assert!(inbox.is_empty());
}

#[test]
fn large_payloads_are_slices_of_the_receive_buffer_and_small_ones_are_copied() {
    let mut bytes = frame(&HELLO, 1);
    bytes.extend(frame(&enqueue("q", &vec![1; PAYLOAD_SHARED_BYTES_MIN]), 2));
    bytes.extend(frame(&enqueue("q", &vec![2; PAYLOAD_SHARED_BYTES_MIN - 1]), 3));
    let mut inbox = BytesMut::from(&bytes[..]);
    let range = inbox.as_ptr() as usize..inbox.as_ptr() as usize + inbox.len();
    let mut out = Vec::new();
    take_frames(&mut inbox, &mut ConnState::new(), &Limits::default(), usize::MAX, &mut out);
    let payload = |next: &BinaryNext| match next {
        BinaryNext::Execute { command: Command::Enqueue { task, .. }, .. } => task.payload.clone(),
        other => panic!("{other:?}"),
    };
    let (large, small) = (payload(&out[1]), payload(&out[2]));
    assert_eq!((large.len(), small.len()), (PAYLOAD_SHARED_BYTES_MIN, PAYLOAD_SHARED_BYTES_MIN - 1));
    assert!(range.contains(&(large.as_ptr() as usize)), "the large payload is not a slice of the inbox");
    assert!(!range.contains(&(small.as_ptr() as usize)), "the small payload still pins the inbox");
}

// ---- request_to_command: the HTTP API's checks and codes ---------------------

#[track_caller]
fn refused_with(request: Request, code: ErrorCode, field: &str) {
    match request_to_command(request) {
        Err((c, message)) => {
            assert_eq!(c, code, "{message}");
            assert!(message.contains(field), "{message:?} should name {field}");
        }
        Ok(command) => panic!("accepted: {command:?}"),
    }
}

/// The HTTP API's answer to the same request, as `(code, message)`.
fn http_refusal(method: &str, path: &str, body: &str) -> (String, String) {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes();
    let mut out = Vec::new();
    crate::http::take_requests(&mut bytes, &crate::http::Limits::default(), &mut out);
    let response = match &out[..] {
        [crate::http::Next::Request { action: crate::http::Action::Respond(response), .. }] => response.clone(),
        other => panic!("{other:?}"),
    };
    let text = String::from_utf8(response).unwrap();
    let body: serde_json::Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    (body["error"]["code"].as_str().unwrap().into(), body["error"]["message"].as_str().unwrap().into())
}

#[track_caller]
fn same_as_http(request: Request, method: &str, path: &str, body: &str) {
    let (code, message) = request_to_command(request).expect_err("refused");
    assert_eq!((code.as_str().to_owned(), message), http_refusal(method, path, body));
}

#[test]
fn request_checks_match_the_http_api() {
    let dequeue = |queues: Vec<String>, wait_ms| Request::Dequeue { queues, max: 1, lease_ms: None, wait_ms };
    same_as_http(dequeue(vec![], 0), "POST", "/v1/dequeue", r#"{"queues":[]}"#);
    let many: Vec<String> = (0..65).map(|i| format!("q{i}")).collect();
    let body = serde_json::json!({ "queues": many }).to_string();
    same_as_http(dequeue(many, 0), "POST", "/v1/dequeue", &body);
    same_as_http(dequeue(vec!["q".into()], 60_001), "POST", "/v1/dequeue", r#"{"queues":["q"],"wait_ms":60001}"#);
    same_as_http(
        Request::EnqueueBatch { queue: "q".into(), tasks: vec![] },
        "POST",
        "/v1/queues/q/tasks/batch",
        r#"{"tasks":[]}"#,
    );
    // Queue names are checked at the edge for both protocols (command::check_limits).
    refused_with(dequeue(vec!["bad name".into()], 0), ErrorCode::InvalidArgument, "queues");
    refused_with(enqueue("", b"1"), ErrorCode::InvalidArgument, "queue");
    refused_with(Request::GetQueue { queue: "a/b".into() }, ErrorCode::InvalidArgument, "queue");
    same_as_http(Request::GetQueue { queue: "a/b".into() }, "GET", "/v1/queues/a%2Fb", "");
    let long = "x".repeat(129);
    refused_with(Request::DeleteQueue { queue: long.clone(), force: false }, ErrorCode::PayloadTooLarge, "queue");
    same_as_http(
        Request::DeleteQueue { queue: long.clone(), force: false },
        "DELETE",
        &format!("/v1/queues/{long}"),
        "",
    );
    let grouped = Request::Enqueue {
        queue: "q".into(),
        task: TaskSpec { payload: Bytes::from_static(b"1"), group: Some(long.clone()), ..TaskSpec::default() },
    };
    let body = format!(r#"{{"payload":1,"group":"{long}"}}"#);
    same_as_http(grouped, "POST", "/v1/queues/q/tasks", &body);
    let failed = Request::Fail { id: 1, lease: 1, error: "e".repeat(5000), retry: true };
    let body = format!(r#"{{"lease":1,"error":"{}"}}"#, "e".repeat(5000));
    same_as_http(failed, "POST", "/v1/tasks/1/fail", &body);
    let with_batch_ref = Request::Enqueue {
        queue: "q".into(),
        task: TaskSpec { payload: Bytes::from_static(b"1"), depends_on: vec![Dep::Batch(0)], ..TaskSpec::default() },
    };
    refused_with(with_batch_ref, ErrorCode::InvalidArgument, "depends_on");
    refused_with(Request::CompleteBatch { items: vec![] }, ErrorCode::InvalidArgument, "items");
    let too_many = vec![WireItem { id: 1, lease: 1, result: None }; BATCH_TASKS_COUNT_MAX + 1];
    refused_with(Request::CompleteBatch { items: too_many }, ErrorCode::InvalidArgument, "items");
    refused_with(HELLO, ErrorCode::InvalidArgument, "hello");
}

#[test]
fn requests_map_to_the_commands_http_would_build() {
    let spec = TaskSpec {
        payload: Bytes::from_static(b"p"),
        priority: -3,
        group: Some("g".into()),
        delay_ms: 5,
        max_attempts: Some(2),
        depends_on: vec![Dep::Task(9), Dep::Batch(0)],
        key: Some("k".into()),
    };
    let batch = request_to_command(Request::EnqueueBatch { queue: "q".into(), tasks: vec![spec] }).unwrap();
    let expected = NewTask {
        payload: Bytes::from_static(b"p"),
        priority: -3,
        group: Some("g".into()),
        delay_ms: 5,
        max_attempts: Some(2),
        depends_on: vec![DepRef::Task(9), DepRef::Batch(0)],
        key: Some("k".into()),
    };
    assert_eq!(batch, Command::EnqueueBatch { queue: "q".into(), tasks: vec![expected] });
    let patch = tqx_wire::QueuePatch {
        discipline: Some(tqx_wire::Discipline::RoundRobin),
        lease_ms: Some(1),
        group_concurrency: Some(None),
        ..tqx_wire::QueuePatch::default()
    };
    assert_eq!(
        request_to_command(Request::ConfigureQueue { queue: "q".into(), patch }).unwrap(),
        Command::ConfigureQueue {
            queue: "q".into(),
            patch: QueueConfigPatch {
                discipline: Some(engine::Discipline::RoundRobin),
                lease_ms: Some(1),
                group_concurrency: Some(None),
                ..QueueConfigPatch::default()
            }
        }
    );
    let items = vec![WireItem { id: 1, lease: 2, result: Some(Bytes::from_static(b"r")) }];
    assert_eq!(
        request_to_command(Request::CompleteBatch { items }).unwrap(),
        Command::CompleteBatch {
            items: vec![CompleteItem { id: 1, lease: 2, result: Some(Bytes::from_static(b"r")) }]
        }
    );
    assert_eq!(
        request_to_command(Request::Fail { id: 1, lease: 2, error: "e".into(), retry: false }).unwrap(),
        Command::Fail { id: 1, lease: 2, error: "e".into(), retry: false }
    );
}

// ---- render_reply --------------------------------------------------------------

fn rendered(worker_reply: &Reply, opcode: Opcode) -> (Header, Response) {
    let mut out = Vec::new();
    render_reply(worker_reply, opcode as u8, 0xfeed, &mut out);
    let (header, response) = reply(&out);
    assert_eq!((header.opcode, header.request_id.get()), (opcode as u8, 0xfeed));
    (header, response)
}

#[test]
fn every_reply_has_a_wire_form() {
    let info = engine::QueueInfo {
        name: Arc::from("emails"),
        config: QueueConfig { group_concurrency: Some(4), ..QueueConfig::default() },
        counts: StateCounts([1, 2, 3, 4, 5, 6, 7]),
    };
    let wire_info = tqx_wire::QueueInfo {
        name: "emails".into(),
        discipline: tqx_wire::Discipline::Fifo,
        lease_ms: 30_000,
        max_attempts: 3,
        backoff_ms: 1_000,
        backoff_max_ms: 60_000,
        retention_ms: 3_600_000,
        dead_retention_ms: 604_800_000,
        group_concurrency: Some(4),
        counts: [1, 2, 3, 4, 5, 6, 7],
    };
    assert_eq!(rendered(&Reply::Queue(info.clone()), Opcode::GetQueue).1, Response::Queue(wire_info.clone()));
    assert_eq!(rendered(&Reply::Queues(vec![info]), Opcode::ListQueues).1, Response::Queues(vec![wire_info]));
    assert_eq!(rendered(&Reply::QueueDeleted { queue: "q".into() }, Opcode::DeleteQueue).1, Response::QueueDeleted);
    let entry = engine::Enqueued { id: 3, state: engine::TaskState::Waiting, created: false };
    assert_eq!(
        rendered(&Reply::Enqueued(entry), Opcode::Enqueue).1,
        Response::Enqueued(tqx_wire::Enqueued { id: 3, state: tqx_wire::TaskState::Waiting, created: false })
    );
    assert!(matches!(
        rendered(&Reply::EnqueuedBatch(vec![entry, entry]), Opcode::EnqueueBatch).1,
        Response::EnqueuedBatch(entries) if entries.len() == 2
    ));
    let leased = engine::LeasedTask {
        id: 4,
        queue: Arc::from("q"),
        payload: Bytes::from_static(b"\x00\xff"),
        priority: 1,
        group: Some(Arc::from("g")),
        attempt: 2,
        lease: u64::MAX,
        lease_expires_at_ms: 99,
    };
    assert_eq!(
        rendered(&Reply::Leased(vec![leased]), Opcode::Dequeue).1,
        Response::Leased(vec![tqx_wire::LeasedTask {
            id: 4,
            queue: "q".into(),
            payload: Bytes::from_static(b"\x00\xff"),
            priority: 1,
            group: Some("g".into()),
            attempt: 2,
            lease: u64::MAX,
            lease_expires_at_ms: 99,
        }])
    );
    let view = engine::TaskView {
        id: 5,
        queue: Arc::from("q"),
        state: engine::TaskState::Completed,
        payload: Bytes::from_static(b"p"),
        priority: 0,
        group: None,
        depends_on: vec![1, 2],
        key: Some("k".into()),
        attempts: 1,
        max_attempts: 3,
        result: Some(Bytes::from_static(b"r")),
        error: None,
        created_at_ms: 10,
        updated_at_ms: 11,
        not_before_ms: None,
        lease_expires_at_ms: None,
        purge_at_ms: Some(12),
    };
    match rendered(&Reply::Task(view), Opcode::GetTask).1 {
        Response::Task(task) => {
            assert_eq!(
                (task.id, task.state, task.depends_on, task.purge_at_ms),
                (5, tqx_wire::TaskState::Completed, vec![1, 2], Some(12))
            );
            assert_eq!((task.result, task.key), (Some(Bytes::from_static(b"r")), Some("k".into())));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rendered(&Reply::TaskState { id: 6, state: engine::TaskState::Dead }, Opcode::Fail).1,
        Response::TaskState { id: 6, state: tqx_wire::TaskState::Dead }
    );
    assert_eq!(
        rendered(&Reply::Extended { id: 7, lease_expires_at_ms: 8 }, Opcode::Extend).1,
        Response::Extended { id: 7, lease_expires_at_ms: 8 }
    );
    let outcomes = vec![(1, Ok(engine::TaskState::Completed)), (2, Err(EngineError::LeaseMismatch(2)))];
    assert_eq!(
        rendered(&Reply::CompletedBatch(outcomes), Opcode::CompleteBatch).1,
        Response::CompletedBatch(vec![(1, Ok(tqx_wire::TaskState::Completed)), (2, Err(ErrorCode::LeaseMismatch))])
    );
    let (header, response) = rendered(&Reply::Error(EngineError::TaskNotFound(9)), Opcode::GetTask);
    assert_eq!(header.status.get(), ErrorCode::TaskNotFound as u16);
    assert_eq!(response, Response::Error { code: ErrorCode::TaskNotFound, message: "task 9 not found".into() });
    let (_, response) = rendered(&Reply::StorageFailed(Arc::from("disk gone")), Opcode::Enqueue);
    assert_eq!(response, Response::Error { code: ErrorCode::StorageFailed, message: "disk gone".into() });
}

#[test]
fn every_engine_error_code_is_a_wire_code() {
    let errors = [
        EngineError::Invalid { field: Cow::Borrowed("f"), reason: Cow::Borrowed("r") },
        EngineError::TaskNotFound(1),
        EngineError::QueueNotFound("q".into()),
        EngineError::LeaseMismatch(1),
        EngineError::LeaseExpired(1),
        EngineError::NotLeased { id: 1, state: engine::TaskState::Ready },
        EngineError::TaskFinished { id: 1, state: engine::TaskState::Dead },
        EngineError::TaskNotDead { id: 1, state: engine::TaskState::Ready },
        EngineError::TaskNotFinished { id: 1, state: engine::TaskState::Leased },
        EngineError::QueueNotEmpty { queue: "q".into(), unfinished_count: 1 },
        EngineError::CapacityExceeded { what: "tasks", limit: 1 },
        EngineError::Unauthenticated { reason: "no".into() },
        EngineError::Forbidden { scope: "admin", on: "".into() },
    ];
    for error in errors {
        assert_eq!(ErrorCode::from_code(error.code()).map(ErrorCode::as_str), Some(error.code()));
        assert_eq!(error_code(&error).as_str(), error.code());
    }
}

#[test]
fn pongs_and_refusals_carry_their_request() {
    let mut out = Vec::new();
    render_pong(false, 42, &mut out);
    let (header, response) = reply(&out);
    assert_eq!(
        (header.opcode, header.request_id.get(), response),
        (Opcode::Ping as u8, 42, Response::Pong { ready: false })
    );
    for code in [ErrorCode::Overloaded, ErrorCode::Recovering, ErrorCode::ShuttingDown] {
        let mut out = Vec::new();
        render_refusal(code, Opcode::Enqueue as u8, 43, &mut out);
        let (header, response) = reply(&out);
        assert_eq!(
            (header.opcode, header.request_id.get(), header.status.get()),
            (Opcode::Enqueue as u8, 43, code as u16)
        );
        assert!(matches!(response, Response::Error { code: c, .. } if c == code));
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(HELLO),
            Just(Request::Ping),
            Just(Request::ListQueues),
            (any::<u64>()).prop_map(|id| Request::GetTask { id }),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|payload| enqueue("q", &payload)),
            (any::<u64>(), any::<u64>())
                .prop_map(|(id, lease)| Request::CompleteBatch { items: vec![WireItem { id, lease, result: None }] }),
        ]
    }

    proptest! {
        /// Any stream (valid frames, with bytes flipped) fed in any chunks
        /// gives the same steps as fed whole, and never panics.
        #[test]
        fn chunked_input_gives_the_steps_of_whole_input(
            requests in prop::collection::vec(request(), 0..8),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut bytes = Vec::new();
            for (i, request) in requests.iter().enumerate() {
                request.encode(i as u64, &mut bytes);
            }
            if !bytes.is_empty() {
                for (at, value) in &flips {
                    let at = at.index(bytes.len());
                    bytes[at] = *value;
                }
            }
            let (whole, whole_state, _) = run(&bytes);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut inbox = BytesMut::new();
            let mut state = ConnState::new();
            let mut pieces = Vec::new();
            let mut from = 0;
            for to in cuts.into_iter().chain([bytes.len()]) {
                inbox.extend_from_slice(&bytes[from..to]);
                take_frames(&mut inbox, &mut state, &Limits::default(), usize::MAX, &mut pieces);
                from = to;
            }
            prop_assert_eq!(pieces, whole);
            prop_assert_eq!(state, whole_state);
        }
    }
}

// ---- command_to_request: one binary form for every command -----------------

use crate::engine::{DepRef, Discipline, NewTask, QueueConfigPatch};
use proptest::prelude::*;

/// A command's trip through its binary form, as the log makes it: to its
/// request, to the body's bytes, back through the frame decoder's body
/// decoder and the mapping replay uses.
fn through_a_body(command: &Command) -> Command {
    let request = command_to_request(command).unwrap_or_else(|reason| panic!("{command:?}: {reason}"));
    // The log pairs a received body with this opcode (core::executor::Received).
    assert_eq!(command_opcode(command), request.opcode(), "{command:?}");
    let mut body = Vec::new();
    request.encode_body(&mut body).unwrap_or_else(|error| panic!("{command:?}: {error}"));
    let decoded = Request::decode_body(request.opcode(), Bytes::from(body)).expect("the body decodes");
    assert_eq!(decoded, request);
    request_command(decoded).expect("the request maps back")
}

/// One command of each kind with every field set (and a read of each kind):
/// a batch with task and batch dependencies, a full patch, results present,
/// absent and empty, non-UTF-8 bytes.
pub(crate) fn every_command() -> Vec<Command> {
    let full = |payload: &[u8], depends_on: Vec<DepRef>| NewTask {
        payload: Bytes::copy_from_slice(payload),
        priority: -7,
        group: Some("g".into()),
        delay_ms: 1 << 40,
        max_attempts: Some(9),
        depends_on,
        key: Some("κ".into()),
    };
    let patch = QueueConfigPatch {
        discipline: Some(Discipline::RoundRobin),
        lease_ms: Some(1),
        max_attempts: Some(2),
        backoff_ms: Some(3),
        backoff_max_ms: Some(4),
        retention_ms: Some(5),
        dead_retention_ms: Some(7),
        group_concurrency: Some(Some(6)),
    };
    vec![
        Command::ConfigureQueue { queue: "q".into(), patch },
        Command::ConfigureQueue {
            queue: "q".into(),
            patch: QueueConfigPatch { group_concurrency: Some(None), ..QueueConfigPatch::default() },
        },
        Command::ListQueues,
        Command::GetQueue { queue: "q".into() },
        Command::DeleteQueue { queue: "q".into(), force: true },
        Command::Enqueue {
            queue: "q".into(),
            task: full(b"\xff\x00\xfe", vec![DepRef::Task(1), DepRef::Task(u64::MAX >> 1)]),
        },
        Command::Enqueue { queue: "".into(), task: NewTask::default() },
        Command::EnqueueBatch {
            queue: "q".into(),
            tasks: vec![
                full(b"a", Vec::new()),
                NewTask::default(),
                full(&[0x80; 5000], vec![DepRef::Batch(0), DepRef::Task(3), DepRef::Batch(1)]),
            ],
        },
        Command::Dequeue { queues: vec!["a".into(), "b".into()], max: 1000, lease_ms: Some(30_000), wait_ms: 100 },
        Command::Dequeue { queues: vec!["a".into()], max: 1, lease_ms: None, wait_ms: 0 },
        Command::GetTask { id: 4 },
        Command::Complete { id: 1, lease: u64::MAX, result: Some(Bytes::from_static(b"\xc3\x28")) },
        Command::Complete { id: 1, lease: 2, result: Some(Bytes::new()) },
        Command::Complete { id: 1, lease: 2, result: None },
        Command::Fail { id: 1, lease: 2, error: "é".into(), retry: true },
        Command::Fail { id: 1, lease: 2, error: String::new(), retry: false },
        Command::Extend { id: 1, lease: 2, lease_ms: 3 },
        Command::Cancel { id: u64::MAX },
        Command::CompleteBatch {
            items: vec![
                CompleteItem { id: 7, lease: 8, result: Some(Bytes::from(vec![0xfe; 4096])) },
                CompleteItem { id: 9, lease: 10, result: None },
            ],
        },
        Command::ListTasks { queue: "q".into(), state: engine::TaskState::Dead, after: 0, limit: 1000 },
        Command::ListTasks { queue: "q".into(), state: engine::TaskState::Waiting, after: u64::MAX, limit: 1 },
        Command::RetryTask { id: 5 },
        Command::DeleteTask { id: u64::MAX },
    ]
}

fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), min..max).prop_map(|c| c.into_iter().collect())
}

/// Payloads and results: any bytes (not UTF-8 in general), short, and around
/// `PAYLOAD_SHARED_BYTES_MIN` where the mapping stops copying.
fn payload() -> impl Strategy<Value = Bytes> {
    let around = PAYLOAD_SHARED_BYTES_MIN - 2..PAYLOAD_SHARED_BYTES_MIN + 2;
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (around, any::<u8>()).prop_map(|(n, byte)| vec![byte; n]),
    ]
    .prop_map(Bytes::from)
}

fn task(batch_refs: bool) -> impl Strategy<Value = NewTask> {
    let dep = if batch_refs {
        prop_oneof![(0..1u64 << 63).prop_map(DepRef::Task), (0usize..100).prop_map(DepRef::Batch)].boxed()
    } else {
        (0..1u64 << 63).prop_map(DepRef::Task).boxed()
    };
    (
        payload(),
        any::<i32>(),
        prop::option::of(text(1, 8)),
        any::<u64>(),
        prop::option::of(1..=u32::MAX),
        prop::collection::vec(dep, 0..4),
        prop::option::of(text(1, 8)),
    )
        .prop_map(|(payload, priority, group, delay_ms, max_attempts, depends_on, key)| NewTask {
            payload,
            priority,
            group,
            delay_ms,
            max_attempts,
            depends_on,
            key,
        })
}

/// Any command that has a binary form (every one `command::check_limits`
/// admits, and more: counts and lengths up to the wire's fields).
pub(crate) fn command() -> impl Strategy<Value = Command> {
    let o64 = || prop::option::of(any::<u64>());
    let discipline =
        prop::sample::select(vec![Discipline::Fifo, Discipline::Lifo, Discipline::Priority, Discipline::RoundRobin]);
    let patch = (
        prop::option::of(discipline),
        o64(),
        prop::option::of(any::<u32>()),
        o64(),
        o64(),
        o64(),
        o64(),
        prop::option::of(prop::option::of(any::<u32>())),
    )
        .prop_map(
            |(
                discipline,
                lease_ms,
                max_attempts,
                backoff_ms,
                backoff_max_ms,
                retention_ms,
                dead_retention_ms,
                group_concurrency,
            )| {
                QueueConfigPatch {
                    discipline,
                    lease_ms,
                    max_attempts,
                    backoff_ms,
                    backoff_max_ms,
                    retention_ms,
                    dead_retention_ms,
                    group_concurrency,
                }
            },
        );
    let state = prop::sample::select(crate::engine::TaskState::ALL.to_vec());
    let item = (any::<u64>(), any::<u64>(), prop::option::of(payload())).prop_map(|(id, lease, result)| CompleteItem {
        id,
        lease,
        result,
    });
    prop_oneof![
        (text(0, 8), patch).prop_map(|(queue, patch)| Command::ConfigureQueue { queue, patch }),
        Just(Command::ListQueues),
        text(0, 8).prop_map(|queue| Command::GetQueue { queue }),
        (text(0, 8), any::<bool>()).prop_map(|(queue, force)| Command::DeleteQueue { queue, force }),
        (text(0, 8), task(false)).prop_map(|(queue, task)| Command::Enqueue { queue, task }),
        (text(0, 8), prop::collection::vec(task(true), 0..4))
            .prop_map(|(queue, tasks)| Command::EnqueueBatch { queue, tasks }),
        (prop::collection::vec(text(0, 8), 0..4), 0..=usize::from(u16::MAX), o64(), any::<u64>())
            .prop_map(|(queues, max, lease_ms, wait_ms)| Command::Dequeue { queues, max, lease_ms, wait_ms }),
        any::<u64>().prop_map(|id| Command::GetTask { id }),
        (any::<u64>(), any::<u64>(), prop::option::of(payload())).prop_map(|(id, lease, result)| Command::Complete {
            id,
            lease,
            result
        }),
        (any::<u64>(), any::<u64>(), text(0, 16), any::<bool>()).prop_map(|(id, lease, error, retry)| Command::Fail {
            id,
            lease,
            error,
            retry
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(id, lease, lease_ms)| Command::Extend {
            id,
            lease,
            lease_ms
        }),
        any::<u64>().prop_map(|id| Command::Cancel { id }),
        prop::collection::vec(item, 0..5).prop_map(|items| Command::CompleteBatch { items }),
        (text(0, 8), state, any::<u64>(), 0..=usize::from(u16::MAX))
            .prop_map(|(queue, state, after, limit)| Command::ListTasks { queue, state, after, limit }),
        any::<u64>().prop_map(|id| Command::RetryTask { id }),
        any::<u64>().prop_map(|id| Command::DeleteTask { id }),
    ]
}

proptest! {
    #[test]
    fn every_command_round_trips_through_its_request_body(command in command()) {
        prop_assert_eq!(through_a_body(&command), command);
    }
}

#[test]
fn every_kind_of_command_with_every_field_round_trips() {
    for command in every_command() {
        assert_eq!(through_a_body(&command), command);
    }
}

/// Payloads and results of every size the edge admits, up to the largest.
#[test]
fn payloads_and_results_of_every_size_round_trip() {
    use crate::limits::{PAYLOAD_BYTES_MAX, RESULT_BYTES_MAX};
    let sizes = [0, 1, PAYLOAD_SHARED_BYTES_MIN - 1, PAYLOAD_SHARED_BYTES_MIN, 100_000, PAYLOAD_BYTES_MAX];
    for size in sizes {
        let bytes = Bytes::from((0..size).map(|i| (i * 7 + 0x80) as u8).collect::<Vec<_>>());
        let task = NewTask { payload: bytes.clone(), ..NewTask::default() };
        let enqueue = Command::Enqueue { queue: "q".into(), task };
        assert_eq!(through_a_body(&enqueue), enqueue, "payload of {size} bytes");
        let complete = Command::Complete { id: 1, lease: 2, result: Some(bytes.slice(..size.min(RESULT_BYTES_MAX))) };
        assert_eq!(through_a_body(&complete), complete, "result of {size} bytes");
    }
}

/// `command::check_limits` refuses, with the engine's message, every command
/// an HTTP body can express that has no binary form, so that every command it
/// admits can be logged (the record encoder asserts it).
#[test]
fn the_edge_refuses_what_has_no_binary_form() {
    let enqueue = |task: NewTask| Command::Enqueue { queue: "q".into(), task };
    let batch = |task: NewTask| Command::EnqueueBatch { queue: "q".into(), tasks: vec![NewTask::default(), task] };
    let cases = [
        (enqueue(NewTask { max_attempts: Some(0), ..NewTask::default() }), "max_attempts"),
        (enqueue(NewTask { depends_on: vec![DepRef::Task(1 << 63)], ..NewTask::default() }), "depends_on"),
        (enqueue(NewTask { depends_on: vec![DepRef::Batch(0)], ..NewTask::default() }), "depends_on"),
        (batch(NewTask { depends_on: vec![DepRef::Batch(1 << 40)], ..NewTask::default() }), "depends_on"),
        (batch(NewTask { max_attempts: Some(0), ..NewTask::default() }), "max_attempts"),
    ];
    for (command, field) in cases {
        let has_no_body =
            command_to_request(&command).map_or(true, |request| request.encode_body(&mut Vec::new()).is_err());
        assert!(has_no_body, "{command:?} has a binary form");
        let error = crate::command::check_limits(&command).expect_err(field);
        assert_eq!(error.code(), "invalid_argument");
        assert!(error.to_string().contains(field), "{error}");
    }
}

// ---- authentication ----------------------------------------------------------------

/// The tokens "c" (consume on `q*`) and "a" (admin).
fn auth_tokens() -> crate::auth::Tokens {
    let line = |token: &str, rest: &str| {
        let hash: String = crate::auth::hash_token(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hash} {rest}\n")
    };
    crate::auth::Tokens::parse(&(line("c", "scopes=consume queues=q*") + &line("a", "scopes=admin"))).unwrap()
}

fn auth(token: &str) -> Request {
    Request::Auth { token: tqx_wire::Secret::new(token.as_bytes().to_vec()) }
}

fn dequeue(queue: &str) -> Request {
    Request::Dequeue { queues: vec![queue.into()], max: 1, lease_ms: None, wait_ms: 0 }
}

/// Runs `requests` (ids from 1) through one connection of a server with `tokens`.
fn run_with_tokens(requests: &[Request], tokens: &crate::auth::Tokens) -> (Vec<BinaryNext>, ConnState) {
    let bytes: Vec<u8> = requests.iter().enumerate().flat_map(|(i, r)| frame(r, i as u64 + 1)).collect();
    let mut inbox = BytesMut::from(&bytes[..]);
    let mut state = ConnState::new();
    let mut out = Vec::new();
    take_frames_with_tokens(&mut inbox, &mut state, &Limits::default(), Some(tokens), usize::MAX, &mut out);
    (out, state)
}

#[test]
fn with_tokens_only_hello_ping_and_auth_pass_before_auth_and_the_grant_is_enforced_after() {
    let tokens = auth_tokens();
    let (out, state) = run_with_tokens(
        &[HELLO, Request::Ping, dequeue("q1"), auth("c"), dequeue("q1"), dequeue("other"), Request::GetTask { id: 5 }],
        &tokens,
    );
    assert!(matches!(respond(&out[0]).1, Response::Hello { .. }));
    assert!(matches!(out[1], BinaryNext::Ping { request_id: 2 }));
    assert_eq!(error_of(&out[2]), (Opcode::Dequeue as u8, 3, ErrorCode::Unauthenticated));
    assert_eq!(respond(&out[3]).1, Response::Authenticated { scopes: tqx_wire::SCOPE_CONSUME });
    assert!(matches!(out[4], BinaryNext::Execute { request_id: 5, grant: None, .. }), "{:?}", out[4]);
    assert_eq!(error_of(&out[5]), (Opcode::Dequeue as u8, 6, ErrorCode::Forbidden));
    // A task named by id under a token limited to some queues: checked where the task is known.
    assert!(matches!(out[6], BinaryNext::Execute { request_id: 7, grant: Some(_), .. }), "{:?}", out[6]);
    assert!(!state.is_closed());
}

#[test]
fn the_third_failed_authentication_is_answered_and_closes_the_connection() {
    let tokens = auth_tokens();
    let (out, state) = run_with_tokens(&[HELLO, auth("wrong"), Request::ListQueues, auth("c"), dequeue("q1")], &tokens);
    assert_eq!(error_of(&out[1]), (Opcode::Auth as u8, 2, ErrorCode::Unauthenticated));
    assert_eq!(error_of(&out[2]), (Opcode::ListQueues as u8, 3, ErrorCode::Unauthenticated));
    // Authenticating now does not undo the failures: the count is per connection.
    assert_eq!(respond(&out[3]).1, Response::Authenticated { scopes: tqx_wire::SCOPE_CONSUME });
    assert!(matches!(out[4], BinaryNext::Execute { .. }));
    let (out, state_after) = run_with_tokens(&[HELLO, auth("x"), auth("y"), auth("z"), Request::Ping], &tokens);
    let BinaryNext::Fatal(frame) = &out[3] else { panic!("{:?}", out[3]) };
    match reply(frame) {
        (header, Response::Error { code: ErrorCode::Unauthenticated, message }) => {
            assert_eq!((header.opcode, header.request_id.get()), (Opcode::Auth as u8, 4));
            assert!(message.contains("closed after 3 failed authentications"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.len(), 4, "nothing is read after the close");
    assert!(state_after.is_closed() && !state.is_closed());
}

#[test]
fn without_tokens_auth_is_answered_with_every_scope_and_nothing_is_required() {
    let bytes: Vec<u8> = [HELLO, auth("anything"), Request::ListQueues]
        .iter()
        .enumerate()
        .flat_map(|(i, r)| frame(r, i as u64 + 1))
        .collect();
    let (out, _, _) = run(&bytes);
    assert_eq!(respond(&out[1]).1, Response::Authenticated { scopes: tqx_wire::SCOPES_ALL });
    assert!(matches!(out[2], BinaryNext::Execute { command: Command::ListQueues, grant: None, .. }));
    // Before hello, auth is like any other request.
    let (out, _, _) = run(&frame(&auth("a"), 1));
    assert_eq!(error_of(&out[0]).2, ErrorCode::HandshakeRequired);
}
