//! The experimental binary reactor on the `io-uring` crate (`tqx serve
//! --binary-io io-uring`, `src/server/ring/`) through the real server, at the
//! smallest scale that shows each rule: a task's whole cycle in `sync` mode,
//! deep pipelining answered by request id, an oversized frame refused before
//! its body, a client that pipelines without reading held to the reply
//! budget while others are served, long polls refused (not implemented
//! there), and a clean stop.
//!
//! The rest of the binary suites run against it too with
//! `TQX_TEST_BINARY_IO=io-uring cargo nextest run --release --test binary_api`
//! (docs/architecture.md, "io_uring: tokio-uring vs io-uring", lists the
//! tests that need what the prototype leaves out).

mod support;

use std::collections::HashSet;
use std::io::Write;

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::Server;
use tqx_wire::{ErrorCode, Request, Response, TaskSpec, TaskState, HEADER_BYTES};

/// How long a client waits for a reply before the test fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const IO_URING: [&str; 2] = ["--binary-io", "io-uring"];

fn start(extra_args: &[&str]) -> Server {
    let args = [&IO_URING[..], extra_args].concat();
    let server = Server::start_binary("127.0.0.1:0", &args);
    assert!(server.stderr().contains("io-uring binary reactor"), "the prototype serves: {}", server.stderr());
    server
}

/// A raw binary-protocol connection that has said hello.
type Binary = support::RawBinary;

fn connect(server: &Server) -> Binary {
    Binary::connect(server.binary_addr.expect("a binary address"), READ_TIMEOUT)
}

fn enqueue(queue: &str, payload: &[u8]) -> Request {
    Request::Enqueue {
        queue: queue.into(),
        task: TaskSpec { payload: Bytes::copy_from_slice(payload), ..TaskSpec::default() },
    }
}

fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/PID/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}

#[test]
fn a_task_is_enqueued_leased_and_completed_in_sync_mode() {
    let server = start(&[]);
    let mut client = connect(&server);
    let Response::Enqueued(enqueued) = client.call(&enqueue("q", b"work")) else { panic!("enqueue") };
    let dequeue = Request::Dequeue { queues: vec!["q".into()], max: 1, lease_ms: None, wait_ms: 0 };
    let Response::Leased(tasks) = client.call(&dequeue) else { panic!("dequeue") };
    assert_eq!((tasks.len(), tasks[0].id, &tasks[0].payload[..]), (1, enqueued.id, &b"work"[..]));
    let complete = Request::Complete { id: enqueued.id, lease: tasks[0].lease, result: None };
    assert_eq!(client.call(&complete), Response::TaskState { id: enqueued.id, state: TaskState::Completed });
    let Response::Task(view) = client.call(&Request::GetTask { id: enqueued.id }) else { panic!("get_task") };
    assert_eq!(view.state, TaskState::Completed);
}

#[test]
fn two_thousand_pipelined_enqueues_are_each_answered_by_request_id() {
    const REQUESTS: usize = 2000;
    let server = start(&["--durability", "memory"]);
    let mut client = connect(&server);
    let mut frames = Vec::new();
    let sent: HashSet<u64> =
        (0..REQUESTS).map(|i| client.encode(&enqueue("pipelined", format!("{i}").as_bytes()), &mut frames)).collect();
    client.stream.write_all(&frames).unwrap();
    let mut answered = HashSet::new();
    let mut task_ids = HashSet::new();
    for _ in 0..REQUESTS {
        let (header, response) = client.try_read().expect("every request is answered");
        let Response::Enqueued(enqueued) = response else { panic!("{response:?}") };
        assert!(answered.insert(header.request_id.get()), "answered twice: {}", header.request_id.get());
        task_ids.insert(enqueued.id);
    }
    assert_eq!(answered, sent);
    assert_eq!(task_ids.len(), REQUESTS, "distinct tasks");
}

#[test]
fn an_oversized_length_gets_one_error_frame_then_the_connection_closes_before_the_body() {
    let server = start(&["--max-body-bytes", "1024"]);
    let mut client = connect(&server);
    let mut frame = Vec::new();
    enqueue("q", &[0; 1025]).encode(9, &mut frame);
    // Only the header: the refusal must not wait for the body.
    client.stream.write_all(&frame[..HEADER_BYTES]).unwrap();
    let (header, response) = client.try_read().expect("an error frame");
    assert_eq!((header.opcode, header.request_id.get()), (0, 0));
    assert!(matches!(response, Response::Error { code: ErrorCode::PayloadTooLarge, .. }), "{response:?}");
    assert!(client.try_read().is_none(), "the connection closes");
    assert_eq!(connect(&server).call(&Request::Ping), Response::Pong { ready: true }, "others are served");
}

/// 1,000 pipelined `get_task` of a 1 MB task would be 1 GB of replies: the
/// connection's reply budget (4 MiB) stops it taking more, its answers wait
/// unencoded, and a client that reads is served meanwhile.
#[test]
fn a_client_that_pipelines_without_reading_is_held_to_its_reply_budget_and_others_are_served() {
    const PAYLOAD_BYTES: usize = 1_000_000;
    let server = start(&["--durability", "memory", "--max-body-bytes", "2097152"]);
    let mut client = connect(&server);
    let Response::Enqueued(big) = client.call(&enqueue("big", &vec![b'x'; PAYLOAD_BYTES])) else { panic!() };
    let before = rss_bytes(&server);
    let mut attacker = connect(&server);
    let mut frames = Vec::new();
    for _ in 0..1000 {
        attacker.encode(&Request::GetTask { id: big.id }, &mut frames);
    }
    attacker.stream.write_all(&frames).expect("the pipelined requests fit the socket buffers");
    let end = Instant::now() + Duration::from_secs(2);
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(rss_bytes(&server));
        thread::sleep(Duration::from_millis(20));
    }
    assert!(peak < before + (200 << 20), "server RSS grew from {before} to {peak} bytes");
    let Response::Task(view) = client.call(&Request::GetTask { id: big.id }) else { panic!("get_task") };
    assert_eq!(view.payload.len(), PAYLOAD_BYTES);
    // The attacker's replies were only waiting: reading, it gets all of them.
    for _ in 0..1000 {
        let (_, response) = attacker.try_read().expect("every reply, once read");
        assert!(matches!(response, Response::Task(_)), "{response:?}");
    }
}

#[test]
fn a_long_poll_is_refused_with_capacity_exceeded_and_the_connection_stays() {
    let server = start(&["--durability", "memory"]);
    let mut client = connect(&server);
    let poll = Request::Dequeue { queues: vec!["q".into()], max: 1, lease_ms: None, wait_ms: 1000 };
    let response = client.call(&poll);
    assert!(
        matches!(&response, Response::Error { code: ErrorCode::CapacityExceeded, message } if message.contains("io-uring")),
        "{response:?}"
    );
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true });
}

#[test]
fn sigterm_closes_idle_binary_connections_and_the_server_exits_cleanly() {
    let mut server = start(&["--durability", "memory"]);
    let mut idle = connect(&server);
    server.signal(libc::SIGTERM);
    assert!(idle.try_read().is_none(), "the connection closes");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "clean stop: {status:?}; stderr:\n{}", server.stderr());
}
