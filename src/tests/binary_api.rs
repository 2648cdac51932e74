//! The binary protocol through the real server: each test starts `tqx serve`
//! (port 0 for both protocols) and talks to it over raw TCP with the
//! `tqx-wire` codec, no client library: every opcode, the handshake, errors
//! that keep the connection and framing errors that close it, payloads that
//! are not UTF-8, deep pipelining, replies out of order, batch completes and
//! their durability across `kill -9`.
//!
//! Out-of-order replies are shown deterministically by holding WAL syncs with
//! the server's test hook `--debug-wal-sync-gate FIFO` (each sync reads one
//! byte from it first): a `sync`-mode enqueue's reply cannot leave while its
//! sync is held, so anything answered meanwhile was answered before it.

mod support;

use support::SyncGate;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tqx_wire::{
    peek_frame, CompleteItem, Dep, Discipline, ErrorCode, Header, Opcode, QueuePatch, Request, Response, TaskSpec,
    TaskState, HEADER_BYTES,
};

/// How long a client waits for a reply before the test fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to print its `listening` lines, or to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply that must wait is watched for arriving too early. It cannot
/// make a test fail wrongly: while the gate is closed the reply cannot come.
const HELD_WATCH: Duration = Duration::from_millis(300);

// ---- the server ------------------------------------------------------------------

/// The support kit's server (src/tests/support), ready when a binary ping
/// says so, with both addresses at hand.
struct Server {
    inner: support::Server,
    http: SocketAddr,
    binary: SocketAddr,
}

impl Server {
    /// `tqx serve --http 127.0.0.1:0 --binary 127.0.0.1:0 --data <dir>/data
    /// --reactors 1 --workers 1 --no-pin <extra>`, once a ping says it is ready.
    fn start(extra_args: &[&str]) -> Server {
        let server = Server::launch(support::fresh_dir(), extra_args);
        server.wait_ready();
        server
    }

    /// Starts the server and waits for its two `listening` lines only: it may
    /// still be recovering.
    fn launch(dir: PathBuf, extra_args: &[&str]) -> Server {
        Server::over(support::Server::launch(dir, extra_args))
    }

    fn over(inner: support::Server) -> Server {
        let binary = inner.binary_addr.expect("every server has a binary address");
        Server { http: inner.addr, binary, inner }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut client = self.client();
            if client.call(&Request::Ping) == (Response::Pong { ready: true }) {
                return;
            }
            assert!(Instant::now() < deadline, "never ready; stderr:\n{}", self.stderr());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A connection that has said hello.
    fn client(&self) -> Client {
        let mut client = Client::connect(self.binary);
        assert!(matches!(client.call(&HELLO), Response::Hello { version: 1, .. }));
        client
    }

    fn http_client(&self) -> support::Client {
        support::Client::connect(self.http)
    }

    fn stderr(&self) -> String {
        self.inner.stderr()
    }

    /// SIGKILL (nothing flushed or closed cleanly), then a new server on the
    /// same data directory.
    fn crash_and_restart(self, extra_args: &[&str]) -> Server {
        let server = Server::over(self.inner.crash_and_restart(extra_args));
        server.wait_ready();
        server
    }

    fn signal(&self, signal: i32) {
        self.inner.signal(signal);
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.inner.wait_exit(timeout)
    }
}

// ---- the client ------------------------------------------------------------------

const HELLO: Request = Request::Hello { version_min: 1, version_max: 1 };

/// A raw binary-protocol connection: frames encoded and decoded with `tqx-wire`.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    next_id: u64,
}

#[derive(Debug)]
enum ReadError {
    Closed,
    TimedOut,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buffer: Vec::new(), next_id: 1 }
    }

    /// Sends `request` with a fresh id; returns the id.
    fn send(&mut self, request: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        request.encode(id, &mut frame);
        self.send_raw(&frame);
        id
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Reads the next reply frame: its header and what it says.
    fn try_read(&mut self) -> Result<(Header, Response), ReadError> {
        loop {
            if let Some(header) = peek_frame(&self.buffer, usize::MAX).expect("the server's framing") {
                let end = HEADER_BYTES + header.body_len.get() as usize;
                let body = Bytes::copy_from_slice(&self.buffer[HEADER_BYTES..end]);
                self.buffer.drain(..end);
                assert!(header.is_reply(), "{header:?}");
                let response = Response::decode(&header, body).expect("the server's reply decodes");
                return Ok((header, response));
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ReadError::TimedOut)
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(ReadError::Closed),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[track_caller]
    fn read(&mut self) -> (Header, Response) {
        self.try_read().unwrap_or_else(|e| panic!("no reply: {e:?}"))
    }

    /// Sends one request and reads its reply, which must carry its id and opcode.
    #[track_caller]
    fn call(&mut self, request: &Request) -> Response {
        let id = self.send(request);
        let (header, response) = self.read();
        assert_eq!(header.request_id.get(), id, "{response:?}");
        assert_eq!(header.opcode, request.opcode() as u8, "{response:?}");
        let status = match &response {
            Response::Error { code, .. } => *code as u16,
            _ => 0,
        };
        assert_eq!(header.status.get(), status, "{response:?}");
        response
    }

    #[track_caller]
    fn enqueue(&mut self, queue: &str, payload: &[u8]) -> u64 {
        match self.call(&enqueue(queue, payload)) {
            Response::Enqueued(enqueued) => enqueued.id,
            other => panic!("enqueue: {other:?}"),
        }
    }

    /// Creates `queue` with the defaults (a dequeue of a queue that does not
    /// exist is refused, so a test that polls first creates it).
    #[track_caller]
    fn create_queue(&mut self, queue: &str) {
        match self.call(&Request::ConfigureQueue { queue: queue.into(), patch: QueuePatch::default() }) {
            Response::Queue(_) => {}
            other => panic!("create queue {queue}: {other:?}"),
        }
    }

    #[track_caller]
    fn dequeue(&mut self, queue: &str, max: u16) -> Vec<tqx_wire::LeasedTask> {
        let request = Request::Dequeue { queues: vec![queue.into()], max, lease_ms: None, wait_ms: 0 };
        match self.call(&request) {
            Response::Leased(tasks) => tasks,
            other => panic!("dequeue: {other:?}"),
        }
    }

    #[track_caller]
    fn task(&mut self, id: u64) -> tqx_wire::TaskView {
        match self.call(&Request::GetTask { id }) {
            Response::Task(view) => view,
            other => panic!("get task {id}: {other:?}"),
        }
    }

    /// Asserts the server closes the connection without sending anything more.
    #[track_caller]
    fn assert_closed(&mut self) {
        match self.try_read() {
            Err(ReadError::Closed) => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

fn enqueue(queue: &str, payload: &[u8]) -> Request {
    Request::Enqueue {
        queue: queue.into(),
        task: TaskSpec { payload: Bytes::copy_from_slice(payload), ..TaskSpec::default() },
    }
}

#[track_caller]
fn assert_error(response: &Response, expected: ErrorCode) {
    match response {
        Response::Error { code, message } => {
            assert_eq!(*code, expected, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected {expected}, got {other:?}"),
    }
}

// ---- tests -----------------------------------------------------------------------

#[test]
fn every_opcode_gets_its_reply() {
    let server = Server::start(&["--max-body-bytes", "65536"]);
    let mut client = Client::connect(server.binary);
    assert_eq!(client.call(&HELLO), Response::Hello { version: 1, frame_body_bytes_max: 65536 });
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true });

    let patch = QueuePatch {
        discipline: Some(Discipline::Priority),
        lease_ms: Some(600_000),
        max_attempts: Some(1),
        ..QueuePatch::default()
    };
    let info = match client.call(&Request::ConfigureQueue { queue: "jobs".into(), patch }) {
        Response::Queue(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (info.name.as_str(), info.discipline, info.lease_ms, info.max_attempts),
        ("jobs", Discipline::Priority, 600_000, 1)
    );
    assert!(matches!(client.call(&Request::GetQueue { queue: "jobs".into() }), Response::Queue(q) if q == info));
    assert!(matches!(client.call(&Request::ListQueues), Response::Queues(q) if q == vec![info.clone()]));

    let first = client.enqueue("jobs", b"first");
    let batch = Request::EnqueueBatch {
        queue: "jobs".into(),
        tasks: vec![
            TaskSpec { payload: Bytes::from_static(b"second"), priority: 5, ..TaskSpec::default() },
            TaskSpec {
                payload: Bytes::from_static(b"third"),
                depends_on: vec![Dep::Batch(0)],
                key: Some("k3".into()),
                ..TaskSpec::default()
            },
        ],
    };
    let entries = match client.call(&batch) {
        Response::EnqueuedBatch(entries) => entries,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        entries.iter().map(|e| (e.state, e.created)).collect::<Vec<_>>(),
        [(TaskState::Ready, true), (TaskState::Waiting, true)]
    );
    let (second, third) = (entries[0].id, entries[1].id);

    let leased = client.dequeue("jobs", 2);
    assert_eq!(
        leased.iter().map(|t| (t.id, &t.payload[..])).collect::<Vec<_>>(),
        [(second, &b"second"[..]), (first, b"first")]
    );
    let view = client.task(second);
    assert_eq!((view.state, view.priority, view.attempts), (TaskState::Leased, 5, 1));

    let extended = client.call(&Request::Extend { id: first, lease: leased[1].lease, lease_ms: 1_000_000 });
    assert!(
        matches!(extended, Response::Extended { id, lease_expires_at_ms } if id == first && lease_expires_at_ms > leased[1].lease_expires_at_ms)
    );
    let failed = client.call(&Request::Fail { id: first, lease: leased[1].lease, error: "boom".into(), retry: true });
    assert_eq!(failed, Response::TaskState { id: first, state: TaskState::Dead }, "max_attempts 1: no retry left");
    let completed =
        client.call(&Request::Complete { id: second, lease: leased[0].lease, result: Some(Bytes::from_static(b"ok")) });
    assert_eq!(completed, Response::TaskState { id: second, state: TaskState::Completed });
    assert_eq!(client.task(second).result.as_deref(), Some(&b"ok"[..]));
    assert_eq!(client.task(third).state, TaskState::Ready, "released by its dependency");

    let leased = client.dequeue("jobs", 1);
    let items = vec![CompleteItem { id: third, lease: leased[0].lease, result: None }];
    assert_eq!(
        client.call(&Request::CompleteBatch { items }),
        Response::CompletedBatch(vec![(third, Ok(TaskState::Completed))])
    );

    let fourth = client.enqueue("jobs", b"fourth");
    assert_eq!(
        client.call(&Request::Cancel { id: fourth }),
        Response::TaskState { id: fourth, state: TaskState::Cancelled }
    );
    assert_eq!(client.call(&Request::DeleteQueue { queue: "jobs".into(), force: false }), Response::QueueDeleted);
    assert_error(&client.call(&Request::GetQueue { queue: "jobs".into() }), ErrorCode::QueueNotFound);
}

#[test]
fn requests_before_hello_get_handshake_required_and_the_connection_stays() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.binary);
    assert_error(&client.call(&enqueue("q", b"x")), ErrorCode::HandshakeRequired);
    assert_error(&client.call(&Request::Ping), ErrorCode::HandshakeRequired);
    assert!(matches!(client.call(&HELLO), Response::Hello { .. }));
    client.enqueue("q", b"x");
    // Nothing was enqueued before the hello.
    assert_eq!(client.dequeue("q", 10).len(), 1);
}

#[test]
fn an_unsupported_version_is_refused_and_the_connection_stays() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.binary);
    assert_error(&client.call(&Request::Hello { version_min: 2, version_max: 9 }), ErrorCode::UnsupportedVersion);
    assert_error(&client.call(&Request::ListQueues), ErrorCode::HandshakeRequired);
    assert!(matches!(
        client.call(&Request::Hello { version_min: 0, version_max: 3 }),
        Response::Hello { version: 1, .. }
    ));
    // A frame whose header says another version is skipped by its length.
    let mut frame = Vec::new();
    enqueue("q", b"v2").encode(77, &mut frame);
    frame[2] = 2;
    client.send_raw(&frame);
    let (header, response) = client.read();
    assert_eq!((header.request_id.get(), header.opcode), (77, Opcode::Enqueue as u8));
    assert_error(&response, ErrorCode::UnsupportedVersion);
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true });
}

#[test]
fn an_unknown_opcode_is_echoed_and_the_connection_stays() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut frame = Vec::new();
    Request::ListQueues.encode(5, &mut frame);
    frame[3] = 0x7e;
    client.send_raw(&frame);
    let (header, response) = client.read();
    assert_eq!(
        (header.request_id.get(), header.opcode, header.status.get()),
        (5, 0x7e, ErrorCode::UnknownOpcode as u16)
    );
    assert_error(&response, ErrorCode::UnknownOpcode);
    // A body that does not decode: answered with its code, the connection stays.
    let mut frame = Vec::new();
    Request::GetTask { id: 1 }.encode(6, &mut frame);
    frame.truncate(frame.len() - 1);
    let body_len = (frame.len() - HEADER_BYTES) as u32;
    frame[8..12].copy_from_slice(&body_len.to_le_bytes());
    client.send_raw(&frame);
    let (header, response) = client.read();
    assert_eq!(header.request_id.get(), 6);
    assert_error(&response, ErrorCode::MalformedRequest);
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true });
}

#[test]
fn bad_magic_gets_one_error_frame_then_the_connection_closes() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (header, response) = client.read();
    assert_eq!((header.opcode, header.request_id.get()), (0, 0));
    assert_error(&response, ErrorCode::MalformedRequest);
    client.assert_closed();
    assert_eq!(server.client().call(&Request::Ping), Response::Pong { ready: true }, "the server still serves");
}

#[test]
fn an_oversized_length_gets_one_error_frame_then_the_connection_closes_before_the_body() {
    let server = Server::start(&["--max-body-bytes", "1024"]);
    let mut client = server.client();
    // Only the header: the refusal must not wait for 1025 body bytes.
    let mut frame = Vec::new();
    enqueue("q", &[0; 1025]).encode(9, &mut frame);
    client.send_raw(&frame[..HEADER_BYTES]);
    let (header, response) = client.read();
    assert_eq!((header.opcode, header.request_id.get()), (0, 0));
    assert_error(&response, ErrorCode::PayloadTooLarge);
    client.assert_closed();
    // A body of exactly the limit is fine.
    let mut client = server.client();
    let mut empty = Vec::new();
    enqueue("q", b"").encode(1, &mut empty);
    let payload_fits = 1024 - (empty.len() - HEADER_BYTES);
    let id = client.enqueue("q", &vec![1; payload_fits]);
    assert_eq!(client.task(id).payload.len(), payload_fits);
}

#[test]
fn payload_bytes_that_are_not_utf8_round_trip_and_http_shows_them_in_base64() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let payload: Vec<u8> = (0..=255u8).rev().chain([0xff, 0xfe, 0x00, 0xc3]).collect();
    let id = client.enqueue("raw", &payload);
    assert_eq!(&client.task(id).payload[..], &payload[..]);
    let leased = client.dequeue("raw", 1);
    assert_eq!((leased[0].id, &leased[0].payload[..]), (id, &payload[..]));
    let result = [0x80u8, 0x81, 0x82];
    let done =
        client.call(&Request::Complete { id, lease: leased[0].lease, result: Some(Bytes::copy_from_slice(&result)) });
    assert_eq!(done, Response::TaskState { id, state: TaskState::Completed });
    assert_eq!(client.task(id).result.as_deref(), Some(&result[..]));

    let mut http = server.http_client();
    let task = http.task(&id.to_string());
    assert_eq!(task["payload"], json!(null), "{task}");
    assert_eq!(task["payload_base64"], json!(base64(&payload)));
    assert_eq!((task["result"].clone(), task["result_base64"].clone()), (json!(null), json!("gIGC")));
    // A JSON payload enqueued over the binary protocol reads back verbatim over HTTP.
    let json_id = client.enqueue("raw", br#"{"to": "a@b.c"}"#);
    let response = http.get(&format!("/v1/tasks/{json_id}"));
    assert!(support::find(&response.raw_body, br#""payload":{"to": "a@b.c"},"#).is_some(), "{response:?}");
    assert!(response.body.get("payload_base64").is_none());
}

/// Standard base64, written out independently of the server's encoder.
fn base64(bytes: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize;
        for i in 0..4 {
            out.push(if i <= chunk.len() { alphabet[(n >> (18 - 6 * i)) & 63] as char } else { '=' });
        }
    }
    out
}

#[test]
fn ten_thousand_pipelined_sync_enqueues_are_each_answered_by_request_id() {
    let server = Server::start(&[]); // --durability sync (the default)
    let mut client = server.client();
    const COUNT: u64 = 10_000;
    let mut frames = Vec::new();
    let first_id = client.next_id;
    for i in 0..COUNT {
        enqueue("deep", format!("task-{i}").as_bytes()).encode(first_id + i, &mut frames);
    }
    client.next_id += COUNT;
    // The writes from another thread: the server may answer before all are sent.
    let mut writer = client.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&frames).unwrap());
    let mut ids_by_request = HashMap::new();
    for _ in 0..COUNT {
        let (header, response) = client.read();
        assert_eq!(header.opcode, Opcode::Enqueue as u8);
        let Response::Enqueued(enqueued) = response else { panic!("{response:?}") };
        assert!(ids_by_request.insert(header.request_id.get(), enqueued.id).is_none(), "one reply per request");
    }
    sender.join().unwrap();
    assert_eq!(ids_by_request.len() as u64, COUNT);
    // Each request id got the task that request enqueued.
    for i in (0..COUNT).step_by(997) {
        let id = ids_by_request[&(first_id + i)];
        assert_eq!(&client.task(id).payload[..], format!("task-{i}").as_bytes());
    }
}

#[test]
fn a_read_and_a_lease_wait_for_the_sync_of_the_write_they_show_and_a_ping_does_not() {
    let dir = support::fresh_dir();
    let mut gate = SyncGate::new(&dir);
    gate.release(1); // the new log's first record (the engine seed)
    let server = Server::launch(dir, &["--debug-wal-sync-gate", &gate.arg()]);
    server.wait_ready();
    let mut client = server.client();

    let enqueue_id = client.send(&enqueue("q", b"held"));
    let get_id = client.send(&Request::GetTask { id: 1 });
    let ping_id = client.send(&Request::Ping);
    // The ping is answered by the reactor at once; the read saw the executed
    // enqueue, whose record is not durable yet, so it waits with it (sync
    // mode: no reply shows state a crash can take back).
    let (header, response) = client.read();
    assert_eq!((header.request_id.get(), response), (ping_id, Response::Pong { ready: true }));
    client.set_read_timeout(HELD_WATCH);
    assert!(
        matches!(client.try_read(), Err(ReadError::TimedOut)),
        "the enqueue, or the read that shows it, was answered before its sync"
    );

    gate.release(1);
    client.set_read_timeout(READ_TIMEOUT);
    let mut answered = HashMap::new();
    for _ in 0..2 {
        let (header, response) = client.read();
        answered.insert(header.request_id.get(), response);
    }
    let response = answered.remove(&enqueue_id).expect("the enqueue's reply");
    assert!(matches!(response, Response::Enqueued(ref e) if e.id == 1 && e.created), "{response:?}");
    let response = answered.remove(&get_id).expect("the read's reply");
    assert!(matches!(response, Response::Task(ref task) if &task.payload[..] == b"held"), "{response:?}");

    // A lease is state too: its reply waits for its own record's sync.
    let dequeue_id = client.send(&Request::Dequeue { queues: vec!["q".into()], max: 1, lease_ms: None, wait_ms: 0 });
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true }, "answered while the lease is held");
    client.set_read_timeout(HELD_WATCH);
    assert!(matches!(client.try_read(), Err(ReadError::TimedOut)), "the lease was answered before its sync");
    gate.release(1);
    client.set_read_timeout(READ_TIMEOUT);
    let (header, response) = client.read();
    assert_eq!(header.request_id.get(), dequeue_id);
    let Response::Leased(leased) = response else { panic!("{response:?}") };
    assert_eq!(leased.len(), 1);

    // ...but a batch complete is a write like a single complete: held until synced.
    let items = vec![CompleteItem { id: 1, lease: leased[0].lease, result: None }];
    let batch_id = client.send(&Request::CompleteBatch { items });
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true }, "answered while the batch is held");
    client.set_read_timeout(HELD_WATCH);
    assert!(
        matches!(client.try_read(), Err(ReadError::TimedOut)),
        "the batch complete was acknowledged before its sync"
    );
    gate.release(64);
    client.set_read_timeout(READ_TIMEOUT);
    let (header, response) = client.read();
    assert_eq!(
        (header.request_id.get(), response),
        (batch_id, Response::CompletedBatch(vec![(1, Ok(TaskState::Completed))]))
    );
}

#[test]
fn a_batch_complete_settles_each_item_on_its_own() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let a = client.enqueue("q", b"a");
    let b = client.enqueue("q", b"b");
    let leased = client.dequeue("q", 2);
    let stale = leased[1].lease.wrapping_add(1);
    let items = vec![
        CompleteItem { id: a, lease: leased[0].lease, result: Some(Bytes::from_static(b"\x00done")) },
        CompleteItem { id: b, lease: stale, result: None },
    ];
    assert_eq!(
        client.call(&Request::CompleteBatch { items }),
        Response::CompletedBatch(vec![(a, Ok(TaskState::Completed)), (b, Err(ErrorCode::LeaseMismatch))])
    );
    assert_eq!(client.task(a).state, TaskState::Completed);
    assert_eq!(client.task(a).result.as_deref(), Some(&b"\x00done"[..]));
    assert_eq!(client.task(b).state, TaskState::Leased, "the stale item changed nothing");
    assert_error(&client.call(&Request::CompleteBatch { items: vec![] }), ErrorCode::InvalidArgument);
}

#[test]
fn a_batch_complete_survives_kill_9() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let ids: Vec<u64> = (0..6).map(|i| client.enqueue("q", format!("p{i}").as_bytes())).collect();
    let leased = client.dequeue("q", 4);
    let mut items: Vec<CompleteItem> = leased
        .iter()
        .enumerate()
        .map(|(i, t)| CompleteItem { id: t.id, lease: t.lease, result: Some(Bytes::from(vec![0xf0, i as u8])) })
        .collect();
    items[2].lease ^= 1; // stale: stays leased
    let Response::CompletedBatch(outcomes) = client.call(&Request::CompleteBatch { items }) else { panic!() };
    assert_eq!(outcomes.iter().filter(|(_, o)| o.is_ok()).count(), 3);
    let before: Vec<_> = ids.iter().map(|&id| client.task(id)).collect();

    let server = server.crash_and_restart(&[]);
    let mut client = server.client();
    let after: Vec<_> = ids.iter().map(|&id| client.task(id)).collect();
    assert_eq!(after, before);
    assert_eq!(after[2].state, TaskState::Leased);
    assert_eq!(after[0].result.as_deref(), Some(&[0xf0, 0][..]));
    // The replayed leases are the same tokens: the stale item's holder can still finish.
    let retry = vec![CompleteItem { id: leased[2].id, lease: leased[2].lease, result: None }];
    assert_eq!(
        client.call(&Request::CompleteBatch { items: retry }),
        Response::CompletedBatch(vec![(leased[2].id, Ok(TaskState::Completed))])
    );
}

#[test]
fn a_long_poll_is_abandoned_when_its_client_leaves() {
    let server = Server::start(&[]);
    server.client().create_queue("lp");
    let mut leaving = server.client();
    leaving.send(&Request::Dequeue { queues: vec!["lp".into()], max: 1, lease_ms: None, wait_ms: 30_000 });
    // The poll is held (nothing to lease); then the client goes away.
    leaving.set_read_timeout(HELD_WATCH);
    assert!(matches!(leaving.try_read(), Err(ReadError::TimedOut)));
    leaving.stream.shutdown(Shutdown::Both).unwrap();
    drop(leaving);
    thread::sleep(Duration::from_millis(200));

    let mut client = server.client();
    let id = client.enqueue("lp", b"for whoever is here");
    let leased = client.dequeue("lp", 1);
    assert_eq!(leased.iter().map(|t| t.id).collect::<Vec<_>>(), [id], "the abandoned poll took nothing");
}

#[test]
fn a_dequeue_of_a_queue_that_does_not_exist_is_queue_not_found() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.enqueue("here", b"x");
    for wait_ms in [0, 10_000] {
        let dequeue =
            Request::Dequeue { queues: vec!["here".into(), "nowhere".into()], max: 5, lease_ms: None, wait_ms };
        assert_error(&client.call(&dequeue), ErrorCode::QueueNotFound);
    }
    assert_eq!(client.dequeue("here", 5).len(), 1, "the refused dequeues leased nothing");
}

#[test]
fn a_long_poll_is_answered_when_a_task_arrives() {
    let server = Server::start(&[]);
    let mut waiting = server.client();
    waiting.create_queue("lp");
    let poll = waiting.send(&Request::Dequeue { queues: vec!["lp".into()], max: 5, lease_ms: None, wait_ms: 10_000 });
    // Other requests on the same connection are answered meanwhile.
    assert_eq!(waiting.call(&Request::Ping), Response::Pong { ready: true });
    let id = server.client().enqueue("lp", b"wake up");
    let (header, response) = waiting.read();
    assert_eq!(header.request_id.get(), poll);
    assert!(matches!(response, Response::Leased(ref tasks) if tasks.len() == 1 && tasks[0].id == id), "{response:?}");
}

#[test]
fn while_recovering_ping_says_not_ready_and_requests_get_recovering() {
    let dir = support::fresh_dir();
    let mut gate = SyncGate::new(&dir);
    // Recovery of a new log syncs its first record; the gate holds it there.
    let server = Server::launch(dir, &["--debug-wal-sync-gate", &gate.arg()]);
    let mut client = server.client();
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: false });
    assert_error(&client.call(&enqueue("q", b"early")), ErrorCode::Recovering);
    gate.release(1);
    server.wait_ready();
    gate.release(64);
    client.enqueue("q", b"on time");
}

#[test]
fn sigterm_answers_a_held_long_poll_and_closes_binary_connections() {
    let mut server = Server::start(&[]);
    let mut client = server.client();
    client.create_queue("none");
    let poll = client.send(&Request::Dequeue { queues: vec!["none".into()], max: 1, lease_ms: None, wait_ms: 30_000 });
    client.set_read_timeout(HELD_WATCH);
    assert!(matches!(client.try_read(), Err(ReadError::TimedOut)));
    client.set_read_timeout(READ_TIMEOUT);
    let idle = server.client();
    server.signal(libc::SIGTERM);
    let (header, response) = client.read();
    assert_eq!((header.request_id.get(), response), (poll, Response::Leased(vec![])));
    client.assert_closed();
    let mut idle = idle;
    idle.assert_closed();
    let status = server.wait_exit(START_TIMEOUT);
    assert!(status.is_some_and(|s| s.success()), "clean stop: {status:?}; stderr:\n{}", server.stderr());
}

#[test]
fn serve_refuses_a_binary_address_another_process_listens_on() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = support::fresh_dir();
    let (status, _, stderr) =
        support::serve_until_exit(&["--no-pin", "--http", "127.0.0.1:0", "--binary", &address], &data);
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(&format!("cannot listen on {address}")) && stderr.contains("in use"), "stderr: {stderr}");
}

/// Connects and says hello until a connection is served (a connection past
/// the limit gets the refusal frame, or a reset, and is retried): the slots of
/// connections the client closed free up once the server has seen the close.
fn served_connection(server: &Server) -> Client {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut client = Client::connect(server.binary);
        client.send(&HELLO);
        match client.try_read() {
            Ok((_, Response::Hello { .. })) => return client,
            Ok((header, response)) => {
                assert_eq!((header.opcode, header.request_id.get()), (0, 0), "{response:?}");
                assert_error(&response, ErrorCode::Overloaded);
            }
            Err(ReadError::Closed) => {}
            Err(ReadError::TimedOut) => panic!("no reply to a ping"),
        }
        assert!(Instant::now() < deadline, "no connection slot freed up; stderr:\n{}", server.stderr());
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_connection_past_max_connections_gets_one_overloaded_frame_and_a_freed_slot_serves_again() {
    // Not `start`: its readiness probes would race the limit of 2 (a probe's
    // slot frees only once the server has seen it close). `served_connection`
    // retries instead, and a pong, ready or not, means served. Pruning is
    // off: at its default (90 %) the second connection would close the first,
    // idle one to keep a slot free (tested in slow_clients.rs).
    let server = Server::launch(support::fresh_dir(), &["--max-connections", "2", "--prune-above-percent", "100"]);
    let mut held = vec![served_connection(&server), served_connection(&server)];

    // Binary: one frame with opcode 0 and request id 0 (no request was read),
    // status `overloaded`, a message naming the limit; then the close.
    let mut refused = Client::connect(server.binary);
    let (header, response) = refused.read();
    assert_eq!((header.opcode, header.request_id.get()), (0, 0));
    assert_error(&response, ErrorCode::Overloaded);
    let Response::Error { message, .. } = &response else { unreachable!("checked above") };
    assert!(message.contains("limit is 2 (--max-connections)"), "{message}");
    refused.assert_closed();

    // HTTP counts against the same limit: `503 overloaded`, and the close.
    let mut http = TcpStream::connect(server.http).expect("connect over HTTP");
    http.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut text = String::new();
    let _ = http.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("\"code\":\"overloaded\"") && text.contains("Retry-After: 1"), "{text}");

    // The connections held were never disturbed, and a freed slot serves again.
    assert!(matches!(held[0].call(&Request::Ping), Response::Pong { .. }));
    drop(held.pop());
    let mut again = served_connection(&server);
    assert!(matches!(again.call(&Request::Ping), Response::Pong { .. }));
}

// ---- limits (issue 15, item 1: one request stops the server) ----------------------

/// `response` is `payload_too_large` naming `field` and its `limit`.
#[track_caller]
fn assert_too_large(response: &Response, field: &str, limit: usize) {
    assert_error(response, ErrorCode::PayloadTooLarge);
    let Response::Error { message, .. } = response else { unreachable!() };
    assert!(message.contains(field) && message.contains(&limit.to_string()), "{field}, {limit}: {message}");
}

#[test]
fn a_group_key_queue_name_or_error_over_its_limit_gets_payload_too_large_and_the_connection_stays() {
    let server = Server::start(&[]);
    let mut client = server.client();
    // The longest string a frame can carry (16-bit lengths).
    let long = "x".repeat(u16::MAX as usize);
    let spec = |group: Option<String>, key: Option<String>| TaskSpec {
        payload: Bytes::from_static(b"1"),
        group,
        key,
        ..TaskSpec::default()
    };
    let cases = [
        (Request::Enqueue { queue: "q".into(), task: spec(Some(long.clone()), None) }, "group", 128),
        (Request::Enqueue { queue: "q".into(), task: spec(None, Some(long.clone())) }, "key", 256),
        (
            Request::EnqueueBatch { queue: "q".into(), tasks: vec![spec(None, None), spec(Some(long.clone()), None)] },
            "tasks[1].group",
            128,
        ),
        (Request::Enqueue { queue: long.clone(), task: spec(None, None) }, "queue", 128),
        (
            Request::Dequeue { queues: vec!["q".into(), long.clone()], max: 1, lease_ms: None, wait_ms: 0 },
            "queues",
            128,
        ),
        (Request::Fail { id: 1, lease: 1, error: long.clone(), retry: true }, "error", 4096),
    ];
    for (request, field, limit) in cases {
        assert_too_large(&client.call(&request), field, limit);
        assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true }, "{field}: the connection stays");
        let mut fresh = server.client();
        let id = fresh.enqueue("other", b"fresh");
        assert_eq!(fresh.dequeue("other", 1)[0].id, id, "{field}: a fresh connection is served");
    }
    assert_error(&client.call(&Request::GetQueue { queue: "q".into() }), ErrorCode::QueueNotFound);
}

#[test]
fn a_batch_dense_with_dependencies_at_the_largest_body_limit_is_refused_before_the_log() {
    // Each dependency is 8 bytes of frame and 9 of log record: at a body limit
    // near 4 MiB, 470 tasks of 1,024 dependencies made a record over the log's
    // 4 MiB limit, and the server stopped.
    let server = Server::start(&["--max-body-bytes", "3905488"]);
    let mut client = server.client();
    let task =
        TaskSpec { payload: Bytes::from_static(b"1"), depends_on: vec![Dep::Task(1); 1024], ..TaskSpec::default() };
    let request = Request::EnqueueBatch { queue: "q".into(), tasks: vec![task; 470] };
    match client.call(&request) {
        Response::Error { code: ErrorCode::InvalidArgument, message } => {
            assert!(message.contains("tasks") && message.contains("16384"), "{message}")
        }
        other => panic!("expected invalid_argument naming tasks: {other:?}"),
    }
    assert_eq!(client.call(&Request::Ping), Response::Pong { ready: true });
    let mut fresh = server.client();
    let id = fresh.enqueue("other", b"fresh");
    assert_eq!(fresh.task(id).payload, Bytes::from_static(b"fresh"));
}
