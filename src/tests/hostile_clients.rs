//! Clients that try to make the server hold too much or serve them before
//! others (issue 15, items 3 and 5), each against the real `tqx serve` over
//! loopback, at the smallest scale that shows the mechanism
//! (docs/connections.md, "Back-pressure" and "Overload and fairness").
//!
//! Memory is read from `/proc/PID/status` (`VmRSS`) of the server process.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use support::Server;
use tqx_wire::{peek_frame, ErrorCode, Request, Response, TaskSpec, HEADER_BYTES};

const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The issue's bound: the server's resident memory while a client pipelines
/// a thousand requests for a 1 MiB task and does not read the replies.
const RSS_BYTES_MAX: u64 = 300 << 20;
/// Just under the engine's 1 MiB payload limit.
const PAYLOAD_BYTES: usize = 1_000_000;
/// Room for a 1 MiB payload plus the request around it.
const BODY_ARGS: [&str; 2] = ["--max-body-bytes", "2097152"];

// ---- helpers ------------------------------------------------------------------------

/// The server's resident set size, in bytes.
fn rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/PID/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}

/// The largest RSS seen while sampling for `duration`.
fn rss_peak_over(server: &Server, duration: Duration) -> u64 {
    let end = Instant::now() + duration;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(rss_bytes(server));
        thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// A raw binary-protocol connection that has said hello.
type Binary = support::RawBinary;

fn connect(addr: SocketAddr) -> Binary {
    Binary::connect(addr, READ_TIMEOUT)
}

/// Enqueues on `client`; returns the task's id.
#[track_caller]
fn enqueue_on(client: &mut Binary, queue: &str, payload: Vec<u8>) -> u64 {
    match client.call(&enqueue(queue, payload)) {
        Response::Enqueued(enqueued) => enqueued.id,
        other => panic!("enqueue: {other:?}"),
    }
}

fn enqueue(queue: &str, payload: Vec<u8>) -> Request {
    Request::Enqueue { queue: queue.into(), task: TaskSpec { payload: Bytes::from(payload), ..TaskSpec::default() } }
}

fn long_poll(queue: &str, wait_ms: u64) -> Request {
    Request::Dequeue { queues: vec![queue.into()], max: 1, lease_ms: None, wait_ms }
}

#[track_caller]
fn assert_error(response: &Response, expected: ErrorCode) -> String {
    match response {
        Response::Error { code, message } => {
            assert_eq!(*code, expected, "{message}");
            message.clone()
        }
        other => panic!("expected {expected}, got {other:?}"),
    }
}

/// A connection that pipelines 1,000 `get_task` of task `id` and never reads
/// the replies (the attack of item 3).
fn pipeline_get_task_without_reading(binary: SocketAddr, id: u64) -> Binary {
    let mut attacker = connect(binary);
    let mut frames = Vec::new();
    // A large frame first, so the server's reads grow to their largest
    // (buffers.rs) and the thousand small frames behind it arrive together.
    attacker.encode(&enqueue("padding", vec![b'p'; 256 << 10]), &mut frames);
    for _ in 0..1000 {
        attacker.encode(&Request::GetTask { id }, &mut frames);
    }
    attacker.stream.write_all(&frames).expect("the pipelined requests fit the socket buffers");
    attacker
}

/// A fresh client is served normally: a binary `get_task` of the big task
/// returns it whole, and HTTP answers.
#[track_caller]
fn assert_fresh_clients_served(server: &Server, big_task: u64) {
    let binary = server.binary_addr.expect("a binary address");
    let mut fresh = connect(binary);
    match fresh.call(&Request::GetTask { id: big_task }) {
        // Over HTTP the payload was a JSON string: its quotes are stored too.
        Response::Task(view) => assert!(view.payload.len() >= PAYLOAD_BYTES, "{}", view.payload.len()),
        other => panic!("get_task on a fresh connection: {other:?}"),
    }
    let mut http = server.client();
    assert_eq!(http.get("/healthz").status, 200);
}

// ---- item 3: memory amplification -----------------------------------------------

/// Before the fix: a thousand `get_task` of a 1 MiB task, pipelined on one
/// connection that never reads, grew the server to 1.1 GiB (every reply was
/// encoded into the connection's output at once).
#[test]
fn pipelined_get_task_of_a_1mib_task_without_reading_does_not_grow_the_server_binary() {
    let server = Server::start_binary("127.0.0.1:0", &[&BODY_ARGS[..], &["--durability", "memory"]].concat());
    let binary = server.binary_addr.unwrap();
    let id = enqueue_on(&mut connect(binary), "big", vec![b'x'; PAYLOAD_BYTES]);
    let before = rss_bytes(&server);

    let attacker = pipeline_get_task_without_reading(binary, id);
    // The attacker never reads. Long enough for every request to be answered
    // and encoded (it took well under a second before the fix).
    let peak = rss_peak_over(&server, Duration::from_secs(2));
    assert!(peak < RSS_BYTES_MAX, "server RSS grew from {before} to {peak} bytes");
    assert_fresh_clients_served(&server, id);
    assert!(rss_bytes(&server) < RSS_BYTES_MAX);
    drop(attacker);
}

/// Before the fix: pipelined `GET /v1/tasks/ID` of a 1 MiB task behind a long
/// poll were all rendered into one output buffer once the poll ended, before
/// any of it was written, even for a client that reads (1 GiB here).
#[test]
fn pipelined_gets_of_a_1mib_task_behind_a_long_poll_do_not_grow_the_server_http() {
    let server = Server::start_binary("127.0.0.1:0", &[&BODY_ARGS[..], &["--durability", "memory"]].concat());
    let mut client = server.client();
    let payload = "x".repeat(PAYLOAD_BYTES);
    let id = client.enqueue("big", json!({ "payload": payload }));
    client.create_queue("empty", json!({}));
    let before = rss_bytes(&server);

    let mut attacker = TcpStream::connect(server.addr).unwrap();
    let mut requests = support::request_bytes("POST", "/v1/dequeue", Some(br#"{"queues":["empty"],"wait_ms":500}"#));
    for _ in 0..1000 {
        requests.extend_from_slice(&support::request_bytes("GET", &format!("/v1/tasks/{id}"), None));
    }
    attacker.write_all(&requests).unwrap();
    // The attacker reads everything, in order, as it comes.
    attacker.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let reading = thread::spawn(move || {
        let mut reader = support::Client::from_stream(attacker);
        let poll = reader.read_response().expect("the long poll's response");
        assert_eq!(poll.status, 200, "{poll:?}");
        for i in 0..1000 {
            let response = reader.read_response().unwrap_or_else(|e| panic!("response {i}: {e:?}"));
            assert_eq!(response.status, 200, "response {i}");
        }
    });
    // Past the long poll's end, long enough to answer every GET behind it.
    let peak = rss_peak_over(&server, Duration::from_millis(2500));
    assert!(peak < RSS_BYTES_MAX, "server RSS grew from {before} to {peak} bytes");
    assert_fresh_clients_served(&server, id.parse().unwrap());
    reading.join().unwrap();
}

// ---- item 5: overload answers, fairly ---------------------------------------------

/// One connection may hold `--connection-long-polls-max` (64) long polls; the
/// 65th is refused at once with `capacity_exceeded`, while another
/// connection can still long-poll. Before the fix only the server-wide 10,000
/// bounded them.
#[test]
fn the_65th_long_poll_on_one_connection_is_refused_and_another_connection_still_long_polls_binary() {
    let server = Server::start_binary("127.0.0.1:0", &["--durability", "memory"]);
    let binary = server.binary_addr.unwrap();
    // A dequeue of a queue that does not exist is refused: create it first.
    server.client().create_queue("jobs", json!({}));
    let mut greedy = connect(binary);
    let mut frames = Vec::new();
    for _ in 0..64 {
        greedy.encode(&long_poll("jobs", 30_000), &mut frames);
    }
    let refused_id = greedy.encode(&long_poll("jobs", 30_000), &mut frames);
    greedy.stream.write_all(&frames).unwrap();
    // The only reply that can come before 30 s is the refusal.
    let (header, response) = greedy.read();
    assert_eq!(header.request_id.get(), refused_id, "{response:?}");
    let message = assert_error(&response, ErrorCode::CapacityExceeded);
    assert!(message.contains("64 long polls on this connection"), "{message}");

    let mut other = connect(binary);
    let poll = other.send(&long_poll("jobs", 30_000));
    // The greedy connection's polls are older: a task goes to them first.
    let mut producer = connect(binary);
    for _ in 0..65 {
        enqueue_on(&mut producer, "jobs", b"t".to_vec());
    }
    let (header, response) = other.read();
    assert_eq!(header.request_id.get(), poll);
    assert!(matches!(&response, Response::Leased(tasks) if tasks.len() == 1), "{response:?}");
}

#[test]
fn the_65th_long_poll_on_one_connection_is_refused_and_another_connection_still_long_polls_http() {
    let server = Server::start_binary("127.0.0.1:0", &["--durability", "memory"]);
    for queue in ["jobs", "other"] {
        server.client().create_queue(queue, json!({}));
    }
    let mut greedy = TcpStream::connect(server.addr).unwrap();
    let body = br#"{"queues":["jobs"],"wait_ms":3000}"#;
    let mut requests = Vec::new();
    for _ in 0..65 {
        requests.extend_from_slice(&support::request_bytes("POST", "/v1/dequeue", Some(body)));
    }
    greedy.write_all(&requests).unwrap();
    greedy.set_read_timeout(Some(READ_TIMEOUT)).unwrap();

    // Another connection's long poll is accepted and gets a task.
    let mut other = server.client();
    let mut producer = server.client();
    let waiter = thread::spawn(move || other.post("/v1/dequeue", json!({"queues": ["other"], "wait_ms": 20_000})));
    thread::sleep(Duration::from_millis(200));
    producer.enqueue("other", json!({"payload": 1}));
    let leased = waiter.join().unwrap();
    assert_eq!(leased.status, 200, "{leased:?}");
    assert_eq!(leased.body["tasks"].as_array().map(Vec::len), Some(1), "{leased:?}");

    // In order: 64 polls that waited and found nothing, then the refusal.
    let mut reader = support::Client::from_stream(greedy);
    for i in 0..64 {
        let response = reader.read_response().unwrap_or_else(|e| panic!("poll {i}: {e:?}"));
        assert_eq!(response.status, 200, "poll {i}: {response:?}");
    }
    let refused = reader.read_response().expect("the 65th response");
    refused.assert_error(503, "capacity_exceeded");
    assert!(refused.message().contains("64 long polls on this connection"), "{refused:?}");
}

/// The runs of consecutive task ids (the order the workers executed the
/// enqueues in) that went to one connection while the other also had
/// enqueues waiting: how far each connection ran ahead of the other, turn by
/// turn.
fn runs_while_both_waited(first: &[u64], second: &[u64]) -> Vec<usize> {
    let both_from = first[0].max(second[0]);
    let both_until = first[first.len() - 1].min(second[second.len() - 1]);
    let mut ids: Vec<(u64, bool)> =
        first.iter().map(|&id| (id, true)).chain(second.iter().map(|&id| (id, false))).collect();
    ids.sort_unstable();
    let mut runs: Vec<usize> = Vec::new();
    let mut last = None;
    for (_, side) in ids.into_iter().filter(|&(id, _)| id >= both_from && id <= both_until) {
        match runs.last_mut() {
            Some(run) if last == Some(side) => *run += 1,
            _ => runs.push(1),
        }
        last = Some(side);
    }
    runs
}

/// Turns are a reactor pass or two of [`taskqueuex::limits::CONNECTION_REQUESTS_PER_PASS_MAX`]
/// (64) requests each. Before the fix a turn was whatever one read brought,
/// about 1,000 requests of 64 KiB. The median, not the longest: while reads
/// start small (buffers.rs) one connection may take a few long turns before
/// the other's input has caught up, which says nothing about the turns.
const TURN_REQUESTS_MEDIAN_MAX: usize = 4 * 64;

#[track_caller]
fn assert_served_in_turns(ids: &[Vec<u64>]) {
    let mut runs = runs_while_both_waited(&ids[0], &ids[1]);
    assert!(runs.len() >= 4, "the two connections' requests hardly interleaved: {runs:?}");
    let shown = format!("{:?}", &runs[..runs.len().min(40)]);
    runs.sort_unstable();
    let median = runs[runs.len() / 2];
    assert!(
        median <= TURN_REQUESTS_MEDIAN_MAX,
        "one connection's requests ran {median} in a row (median) while the other's waited; turns: {shown}"
    );
}

/// A send buffer that holds a whole backlog, so that it is all on its way to
/// the server at once, whenever the client's threads get to run (on a loaded
/// machine one client's writer could otherwise fall behind, and the other
/// connection run alone through no fault of the server's).
fn send_buffer_for_backlog(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on an open socket with a pointer to a c_int and its size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "SO_SNDBUF");
}

/// The two pipelines' backlogs are both in the server's socket buffers before
/// it reads either: the server is stopped (SIGSTOP) while the clients write
/// them (each fits the client's send buffer, `send_buffer_for_backlog`) and
/// continued after. Without this, on a loaded machine one client's thread may
/// not have written yet while the other's backlog is served, which measures
/// the scheduler, not the server's turns.
#[derive(Clone)]
struct Steps {
    connected: std::sync::Arc<std::sync::Barrier>,
    stopped: std::sync::Arc<std::sync::Barrier>,
    written: std::sync::Arc<std::sync::Barrier>,
}

impl Steps {
    fn new() -> Steps {
        let barrier = || std::sync::Arc::new(std::sync::Barrier::new(3));
        Steps { connected: barrier(), stopped: barrier(), written: barrier() }
    }

    /// The test thread's side: both clients connected, stop the server, let
    /// them write, continue it.
    fn with_backlogs_in_place(&self, server: &Server) {
        self.connected.wait();
        server.signal(libc::SIGSTOP);
        self.stopped.wait();
        self.written.wait();
        server.signal(libc::SIGCONT);
    }
}

/// Two connections pipeline a deep backlog each, at the same time: their
/// requests are executed in turns, not one connection's whole backlog (or
/// thousands of it) first. Task ids are handed out in execution order.
#[test]
fn two_deep_pipelines_are_served_in_turns_binary() {
    const BACKLOG: usize = 20_000;
    let server = Server::start_binary("127.0.0.1:0", &["--durability", "memory"]);
    let binary = server.binary_addr.unwrap();
    let steps = Steps::new();
    let pipelines: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|queue| {
            let steps = steps.clone();
            thread::spawn(move || {
                let mut client = connect(binary);
                send_buffer_for_backlog(&client.stream);
                let mut frames = Vec::new();
                for _ in 0..BACKLOG {
                    client.encode(&enqueue(queue, b"d".to_vec()), &mut frames);
                }
                steps.connected.wait();
                steps.stopped.wait();
                client.stream.write_all(&frames).unwrap();
                steps.written.wait();
                let mut ids = Vec::with_capacity(BACKLOG);
                for _ in 0..BACKLOG {
                    match client.read() {
                        (_, Response::Enqueued(enqueued)) => ids.push(enqueued.id),
                        (_, other) => panic!("{other:?}"),
                    }
                }
                ids.sort_unstable();
                ids
            })
        })
        .collect();
    steps.with_backlogs_in_place(&server);
    let ids: Vec<Vec<u64>> = pipelines.into_iter().map(|p| p.join().unwrap()).collect();
    assert_served_in_turns(&ids);
}

#[test]
fn two_deep_pipelines_are_served_in_turns_http() {
    const BACKLOG: usize = 10_000;
    // Large reads, so that a read brings thousands of requests at once.
    let server = Server::start_binary("127.0.0.1:0", &["--durability", "memory", "--read-bytes-max", "1048576"]);
    let addr = server.addr;
    let steps = Steps::new();
    let pipelines: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|queue| {
            let steps = steps.clone();
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                send_buffer_for_backlog(&stream);
                stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                let path = format!("/v1/queues/{queue}/tasks");
                let mut requests = Vec::new();
                for _ in 0..BACKLOG {
                    requests.extend_from_slice(&support::request_bytes("POST", &path, Some(br#"{"payload":1}"#)));
                }
                steps.connected.wait();
                steps.stopped.wait();
                stream.write_all(&requests).unwrap();
                steps.written.wait();
                let mut client = support::Client::from_stream(stream);
                let mut ids: Vec<u64> = (0..BACKLOG)
                    .map(|i| {
                        let response = client.read_response().unwrap_or_else(|e| panic!("response {i}: {e:?}"));
                        assert_eq!(response.status, 201, "{response:?}");
                        response.body["id"].as_str().unwrap().parse().unwrap()
                    })
                    .collect();
                ids.sort_unstable();
                ids
            })
        })
        .collect();
    steps.with_backlogs_in_place(&server);
    let ids: Vec<Vec<u64>> = pipelines.into_iter().map(|p| p.join().unwrap()).collect();
    assert_served_in_turns(&ids);
}

/// At `--max-connections` a new client gets its refusal at once, with a
/// retry hint, even while the connections held are busy, and even if it sent
/// its request before reading: `503` with `Retry-After` over HTTP,
/// `overloaded` (retryable) over the binary protocol.
#[test]
fn a_client_past_max_connections_gets_a_prompt_503_with_retry_after_and_the_binary_overloaded() {
    // Pruning off: at 90 % of 2, the second connection's accept would close
    // the first if it came before the first's long poll was read (idle then).
    let server = Server::launch_binary(
        support::fresh_dir(),
        "127.0.0.1:0",
        &["--max-connections", "2", "--prune-above-percent", "100"],
    );
    let binary = server.binary_addr.unwrap();
    // Two held connections, each with a long poll parked (busy, not idle).
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut held = Vec::new();
    while held.len() < 2 {
        assert!(Instant::now() < deadline, "could not take the two connection slots");
        let mut client = connect(binary);
        match client.call(&Request::Ping) {
            Response::Pong { ready: true } => {
                client.send(&long_poll("idle", 30_000));
                held.push(client);
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }

    for _ in 0..3 {
        let started = Instant::now();
        let mut http = TcpStream::connect(server.addr).unwrap();
        http.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let _ = http.write_all(&support::request_bytes("GET", "/v1/queues", None));
        let mut text = String::new();
        let _ = http.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
        assert!(text.contains("Retry-After: 1") && text.contains("\"code\":\"overloaded\""), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "the refusal took {:?}", started.elapsed());

        let started = Instant::now();
        let mut refused = TcpStream::connect(binary).unwrap();
        refused.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut hello = Vec::new();
        Request::Hello { version_min: 1, version_max: 1 }.encode(1, &mut hello);
        let _ = refused.write_all(&hello);
        let mut bytes = Vec::new();
        let _ = refused.read_to_end(&mut bytes);
        let header = peek_frame(&bytes, usize::MAX).ok().flatten().expect("one whole error frame");
        let body = Bytes::copy_from_slice(&bytes[HEADER_BYTES..HEADER_BYTES + header.body_len.get() as usize]);
        let response = Response::decode(&header, body).unwrap();
        let message = assert_error(&response, ErrorCode::Overloaded);
        assert!(message.contains("retry"), "{message}");
        assert!(ErrorCode::Overloaded.retryable());
        assert!(started.elapsed() < Duration::from_secs(5), "the refusal took {:?}", started.elapsed());
    }
    drop(held);
}

/// `--reply-bytes-max`: replies waiting on all connections together. Three
/// connections that pipeline `get_task` of a 1 MiB task and do not read hold
/// more than the server-wide budget (8 MiB here) between them; a new
/// connection's requests then wait, unread (not refused), until the budget
/// drains, here by the three leaving.
#[test]
fn at_the_server_wide_reply_budget_new_requests_wait_until_replies_drain_binary() {
    let args = [&BODY_ARGS[..], &["--durability", "memory", "--reply-bytes-max", "8388608"]].concat();
    let server = Server::start_binary("127.0.0.1:0", &args);
    let binary = server.binary_addr.unwrap();
    let id = enqueue_on(&mut connect(binary), "big", vec![b'x'; PAYLOAD_BYTES]);

    let attackers = spend_reply_budget(binary, id);
    // Until the three have spent the budget (each holds a write of about
    // 5 MiB the kernel's buffers cannot take whole), a new connection may
    // still be served.
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut waiting = loop {
        let stream = TcpStream::connect(binary).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut client = Binary::new(stream);
        client.send(&Request::Hello { version_min: 1, version_max: 1 });
        if client.try_read().is_none() {
            break client; // not answered: the budget is spent
        }
        assert!(Instant::now() < deadline, "the server-wide reply budget never stopped a new connection");
    };
    // Still waiting, not refused or closed.
    assert!(waiting.try_read().is_none());
    drop(attackers);
    waiting.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (_, hello) = waiting.read();
    assert!(matches!(hello, Response::Hello { .. }), "{hello:?}");
    assert!(matches!(waiting.call(&Request::Ping), Response::Pong { ready: true }));
}

/// Three connections, all connected (their hellos answered) before any
/// spends the budget, each asking for 20 copies of task `id` and reading none.
fn spend_reply_budget(binary: std::net::SocketAddr, id: u64) -> Vec<Binary> {
    let mut attackers: Vec<Binary> = (0..3).map(|_| connect(binary)).collect();
    for attacker in &mut attackers {
        let mut frames = Vec::new();
        for _ in 0..20 {
            attacker.encode(&Request::GetTask { id }, &mut frames);
        }
        attacker.stream.write_all(&frames).unwrap();
    }
    attackers
}

/// Clients that ask for large replies and never read them held their writes,
/// and so the server-wide reply budget, forever: a busy connection was never
/// timed out or pruned, and every other connection waited for them. A write
/// of replies now has `--request-deadline-ms` to finish; the three are closed
/// and the waiting connection is served while they are still connected.
#[test]
fn clients_that_never_read_are_closed_at_the_request_deadline_and_free_the_reply_budget_binary() {
    let args =
        [&BODY_ARGS[..], &["--durability", "memory", "--reply-bytes-max", "8388608", "--request-deadline-ms", "1000"]]
            .concat();
    let server = Server::start_binary("127.0.0.1:0", &args);
    let binary = server.binary_addr.unwrap();
    let id = enqueue_on(&mut connect(binary), "big", vec![b'x'; PAYLOAD_BYTES]);

    let attackers = spend_reply_budget(binary, id);
    // The attackers stay connected and never read; a new connection's hello
    // is answered once their writes miss the deadline and they are closed
    // (before: never, while they stayed).
    let stream = TcpStream::connect(binary).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut fresh = Binary::new(stream);
    fresh.send(&Request::Hello { version_min: 1, version_max: 1 });
    let (_, hello) = fresh.read();
    assert!(matches!(hello, Response::Hello { .. }), "{hello:?}");
    assert!(matches!(fresh.call(&Request::Ping), Response::Pong { ready: true }));
    assert!(matches!(fresh.call(&Request::GetTask { id }), Response::Task(_)));
    drop(attackers);
}

/// A payload that tiered storage moved to RocksDB was read back as a fresh
/// copy for every answer, and answers waiting for a client that does not read
/// were not counted server-wide: a thousand pipelined `get_task` of one cold
/// 1 MiB task held a thousand copies. Cold reads now wait for room under a
/// server-wide bound (`COLD_READ_BYTES_MAX`).
#[test]
fn pipelined_get_task_of_a_cold_1mib_task_without_reading_does_not_grow_the_server_binary() {
    // 64 KiB of payloads in memory, checkpoints every 100 ms: the task's
    // payload goes cold at once.
    // The request deadline (5 s) closes the attacker after the measurement.
    let args = [
        &BODY_ARGS[..],
        &["--memory-limit", "64KiB", "--checkpoint-interval-ms", "100", "--request-deadline-ms", "5000"],
    ]
    .concat();
    let server = Server::start_binary("127.0.0.1:0", &args);
    let binary = server.binary_addr.unwrap();
    let id = enqueue_on(&mut connect(binary), "big", vec![b'x'; PAYLOAD_BYTES]);
    let deadline = Instant::now() + READ_TIMEOUT;
    while !server.stderr().contains("payloads moved to the store") {
        assert!(Instant::now() < deadline, "the payload never went cold: {}", server.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let before = rss_bytes(&server);

    let attacker = pipeline_get_task_without_reading(binary, id);
    // Shorter than the request deadline, which closes the attacker.
    let peak = rss_peak_over(&server, Duration::from_secs(4));
    assert!(peak < RSS_BYTES_MAX, "server RSS grew from {before} to {peak} bytes");
    // A fresh client is served; its read of the cold payload may wait for the
    // request deadline to close the attacker, which holds the cold budget.
    assert_fresh_clients_served(&server, id);
    drop(attacker);
}
