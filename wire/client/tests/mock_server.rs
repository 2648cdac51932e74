//! The client against a scripted server speaking the wire protocol (tqx-wire's
//! codecs over a real loopback socket): out-of-order replies, drops with
//! requests in flight, what is resent and what fails as unknown, backoff,
//! readiness, timeouts, limits, and the blocking client. The real server is
//! exercised in `src/tests/binary_client.rs`; here each case is exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tqx_client::wire::{take_frame, Request, Response};
use tqx_client::{Client, ClientError, ClientOptions, Enqueued, ErrorCode, TaskSpec, TaskState};

/// What the scripted server does with one request.
enum Step {
    Reply(Response),
    ReplyThenClose(Response),
    /// Keep the reply; it goes out, with the others kept, at the next `Flush`.
    Defer(Response),
    /// Send this reply, then every deferred one, last deferred first.
    FlushReversed(Response),
    /// Say nothing.
    Ignore,
    /// A reply frame (right opcode and id) whose body does not decode.
    Garbage,
    /// Close the connection without a reply.
    Close,
    /// Send a connection-level error frame (request id 0), then close.
    CloseWithError(ErrorCode, &'static str),
}

/// `connection` counts from 0. `Hello` is answered with version 1 and a 1 MiB
/// limit unless the script returns a `Reply` for it.
type Script = dyn Fn(usize, &Request) -> Step + Send + Sync;

struct Mock {
    addr: String,
    /// Every request received: (connection number, request).
    log: Arc<Mutex<Vec<(usize, Request)>>>,
}

impl Mock {
    async fn start(script: impl Fn(usize, &Request) -> Step + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Mock::serve(listener, Arc::new(script))
    }

    fn serve(listener: TcpListener, script: Arc<Script>) -> Mock {
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task_log = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let number = connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(stream, number, script.clone(), task_log.clone()));
            }
        });
        Mock { addr, log }
    }

    fn requests(&self) -> Vec<(usize, Request)> {
        self.log.lock().unwrap().clone()
    }
}

async fn connection(mut stream: TcpStream, number: usize, script: Arc<Script>, log: Arc<Mutex<Vec<(usize, Request)>>>) {
    let mut buffer = BytesMut::new();
    let mut deferred: Vec<Vec<u8>> = Vec::new();
    loop {
        while let Some((header, body)) = take_frame(&mut buffer, 1 << 20).unwrap() {
            let request = Request::decode(&header, body).unwrap();
            log.lock().unwrap().push((number, request.clone()));
            let (opcode, id) = (header.opcode, header.request_id.get());
            let mut out = Vec::new();
            let step = match (&request, script(number, &request)) {
                // Only a `Reply` of the script overrides the usual hello reply.
                (_, Step::Reply(response)) => Step::Reply(response),
                (Request::Hello { .. }, _) => {
                    Step::Reply(Response::Hello { version: 1, frame_body_bytes_max: 1 << 20 })
                }
                (_, step) => step,
            };
            match step {
                Step::Reply(response) => response.encode(opcode, id, &mut out),
                Step::ReplyThenClose(response) => {
                    response.encode(opcode, id, &mut out);
                    let _ = stream.write_all(&out).await;
                    return;
                }
                Step::Defer(response) => {
                    let mut frame = Vec::new();
                    response.encode(opcode, id, &mut frame);
                    deferred.push(frame);
                }
                Step::FlushReversed(response) => {
                    response.encode(opcode, id, &mut out);
                    for frame in deferred.drain(..).rev() {
                        out.extend_from_slice(&frame);
                    }
                }
                Step::Ignore => {}
                Step::Garbage => {
                    // The header as docs/wire.md lays it out: magic, version,
                    // opcode, flags (reply), status 0, body_len 3, reserved, id.
                    out.extend_from_slice(b"TQ\x01");
                    out.push(opcode);
                    out.extend_from_slice(&1u16.to_le_bytes());
                    out.extend_from_slice(&0u16.to_le_bytes());
                    out.extend_from_slice(&3u32.to_le_bytes());
                    out.extend_from_slice(&0u32.to_le_bytes());
                    out.extend_from_slice(&id.to_le_bytes());
                    out.extend_from_slice(&[1, 2, 3]);
                }
                Step::Close => return,
                Step::CloseWithError(code, message) => {
                    Response::error(code, message).encode(0, 0, &mut out);
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return;
            }
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        connect_timeout_ms: 2_000,
        request_timeout_ms: 5_000,
        reconnect_backoff_base_ms: 5,
        reconnect_backoff_max_ms: 20,
        reconnect_attempts_max: 5,
        ..ClientOptions::default()
    }
}

fn keyed(key: &str) -> TaskSpec {
    TaskSpec { payload: Bytes::from_static(b"{}"), key: Some(key.to_string()), ..TaskSpec::default() }
}

fn ping_ready(_: usize, request: &Request) -> Option<Step> {
    matches!(request, Request::Ping).then(|| Step::Reply(Response::Pong { ready: true }))
}

fn enqueued(id: u64) -> Response {
    Response::Enqueued(Enqueued { id, state: TaskState::Ready, created: true })
}

#[tokio::test]
async fn out_of_order_replies_reach_their_callers() {
    const CALLS: u64 = 200;
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        let Request::Cancel { id } = request else { return Step::Close };
        // Cancelled task `id` answers with id in its reply; replies go out in reverse.
        let reply = Response::TaskState { id: *id, state: TaskState::Cancelled };
        if *id == CALLS - 1 {
            Step::FlushReversed(reply)
        } else {
            Step::Defer(reply)
        }
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let mut calls = Vec::new();
    for id in 0..CALLS {
        let client = client.clone();
        // Spawned in id order on a current-thread runtime: sent in id order.
        calls.push(tokio::spawn(async move { (id, client.cancel(id).await) }));
        tokio::task::yield_now().await;
    }
    for call in calls {
        let (id, result) = call.await.unwrap();
        assert_eq!(result, Ok(TaskState::Cancelled), "call {id}");
    }
    // The client checks the task id in each reply against its request's (a
    // mismatch is a protocol error), so every Ok above was matched right.
    let requests = mock.requests();
    assert!(requests.iter().all(|(connection, _)| *connection == 0), "one connection");
    assert_eq!(requests.iter().filter(|(_, r)| matches!(r, Request::Cancel { .. })).count(), CALLS as usize);
}

#[tokio::test]
async fn replies_are_matched_by_request_id_not_by_order() {
    // Each get_queue reply names the queue asked for; deferred and reversed, every
    // caller must still get its own queue.
    const CALLS: usize = 50;
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        let Request::GetQueue { queue } = request else { return Step::Close };
        let reply = Response::Queue(tqx_client::QueueInfo {
            name: queue.clone(),
            discipline: tqx_client::Discipline::Fifo,
            lease_ms: 1,
            max_attempts: 1,
            backoff_ms: 0,
            backoff_max_ms: 0,
            retention_ms: 0,
            dead_retention_ms: 0,
            group_concurrency: None,
            counts: [0; 7],
        });
        if queue == &format!("q{}", CALLS - 1) {
            Step::FlushReversed(reply)
        } else {
            Step::Defer(reply)
        }
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let client = client.clone();
        calls.push(tokio::spawn(async move { (i, client.get_queue(&format!("q{i}")).await) }));
        tokio::task::yield_now().await;
    }
    for call in calls {
        let (i, result) = call.await.unwrap();
        assert_eq!(result.unwrap().name, format!("q{i}"));
    }
}

#[tokio::test]
async fn a_drop_resends_keyed_enqueues_and_reads_and_fails_the_rest_as_unknown() {
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        match (connection, request) {
            // The first connection holds everything, then drops once the fourth
            // request (the get_task) is in: all four were in flight.
            (0, Request::GetTask { .. }) => Step::Close,
            (0, _) => Step::Ignore,
            (_, Request::Enqueue { task, .. }) => Step::Reply(enqueued(if task.key.is_some() { 1 } else { 2 })),
            (_, Request::Complete { id, .. }) => {
                Step::Reply(Response::TaskState { id: *id, state: TaskState::Completed })
            }
            (_, Request::GetTask { .. }) => Step::Reply(Response::error(ErrorCode::TaskNotFound, "no task 9")),
            _ => Step::Close,
        }
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let (a, b, c) = (client.clone(), client.clone(), client.clone());
    let keyed_call = tokio::spawn(async move { a.enqueue("q", keyed("k1")).await });
    tokio::task::yield_now().await;
    let unkeyed_call = tokio::spawn(async move {
        let task = TaskSpec { payload: Bytes::from_static(b"{}"), ..TaskSpec::default() };
        b.enqueue("q", task).await
    });
    tokio::task::yield_now().await;
    let complete_call = tokio::spawn(async move { c.complete(5, 6, None).await });
    tokio::task::yield_now().await;
    let get_result = client.get_task(9).await;

    // The keyed enqueue and the read were sent again on a new connection.
    assert_eq!(keyed_call.await.unwrap(), Ok(Enqueued { id: 1, state: TaskState::Ready, created: true }));
    assert_eq!(get_result.unwrap_err().code(), Some(ErrorCode::TaskNotFound));
    // The others may or may not have happened: the caller is told so.
    for result in [unkeyed_call.await.unwrap().map(|_| ()), complete_call.await.unwrap().map(|_| ())] {
        let error = result.unwrap_err();
        assert!(matches!(error, ClientError::ConnectionLost { resend_safe: false, .. }), "{error:?}");
        assert!(error.is_outcome_unknown() && !error.is_retryable(), "{error:?}");
    }
    let requests = mock.requests();
    let on = |connection: usize| -> Vec<&Request> {
        requests
            .iter()
            .filter(|(c, r)| *c == connection && !matches!(r, Request::Hello { .. } | Request::Ping))
            .map(|(_, r)| r)
            .collect()
    };
    assert_eq!(on(0).len(), 4, "all four were in flight on the first connection: {:?}", on(0));
    let resent = on(1);
    assert_eq!(resent.len(), 2, "only the keyed enqueue and the get_task are resent: {resent:?}");
    assert!(resent.iter().any(|r| matches!(r, Request::Enqueue { task, .. } if task.key.as_deref() == Some("k1"))));
    assert!(resent.iter().any(|r| matches!(r, Request::GetTask { id: 9 })));

    // And the next call simply works, on the new connection.
    assert_eq!(client.complete(5, 6, None).await, Ok(TaskState::Completed));
}

#[tokio::test]
async fn a_batch_is_resent_only_when_every_task_has_a_key() {
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        match (connection, request) {
            (0, _) => Step::Close,
            (_, Request::EnqueueBatch { tasks, .. }) => {
                Step::Reply(Response::EnqueuedBatch((0..tasks.len() as u64).map(enqueued_entry).collect()))
            }
            _ => Step::Close,
        }
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let mixed = vec![keyed("a"), TaskSpec { payload: Bytes::from_static(b"1"), ..TaskSpec::default() }];
    let error = client.enqueue_batch("q", mixed).await.unwrap_err();
    assert!(matches!(error, ClientError::ConnectionLost { resend_safe: false, .. }), "{error:?}");
    let all_keyed = vec![keyed("a"), keyed("b")];
    // Connection 1 answers; a fully keyed batch would also have been resent.
    assert_eq!(client.enqueue_batch("q", all_keyed).await.unwrap().len(), 2);
}

fn enqueued_entry(id: u64) -> Enqueued {
    Enqueued { id, state: TaskState::Ready, created: true }
}

#[tokio::test]
async fn connect_retries_with_backoff_until_the_server_listens() {
    // Find a free port, leave it closed, and open it after a while.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let opener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await.unwrap();
        Mock::serve(listener, Arc::new(|c, r| ping_ready(c, r).unwrap_or(Step::Close)))
    });
    let options = ClientOptions {
        reconnect_backoff_base_ms: 20,
        reconnect_backoff_max_ms: 100,
        reconnect_attempts_max: 60,
        ..fast_options()
    };
    let client = Client::connect(&addr, options).await.expect("connects once the server listens");
    let _mock = opener.await.unwrap();
    assert!(client.ping().await.unwrap());
}

#[tokio::test]
async fn connect_gives_up_after_its_attempts() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let options = ClientOptions { reconnect_attempts_max: 3, ..fast_options() };
    let started = Instant::now();
    let error = Client::connect(&addr, options).await.unwrap_err();
    assert!(matches!(&error, ClientError::Connect { attempts: 3, .. }), "{error:?}");
    assert!(error.is_retryable() && !error.is_outcome_unknown());
    // Two backoffs of at most 5 and 10 ms: no long wait.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_recovering_server_is_not_connected_to_until_ready() {
    let pings = Arc::new(AtomicUsize::new(0));
    let counted = pings.clone();
    let mock = Mock::start(move |_, request| match request {
        // Not ready for the first two connections' pings.
        Request::Ping => Step::Reply(Response::Pong { ready: counted.fetch_add(1, Ordering::SeqCst) >= 2 }),
        Request::ListQueues => Step::Reply(Response::Queues(Vec::new())),
        _ => Step::Close,
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    assert_eq!(pings.load(Ordering::SeqCst), 3);
    assert_eq!(client.list_queues().await.unwrap(), Vec::new());

    let never_ready = Mock::start(|_, request| match request {
        Request::Ping => Step::Reply(Response::Pong { ready: false }),
        _ => Step::Close,
    })
    .await;
    let options = ClientOptions { reconnect_attempts_max: 2, ..fast_options() };
    let error = Client::connect(&never_ready.addr, options).await.unwrap_err();
    assert!(error.to_string().contains("recovering"), "{error}");
}

#[tokio::test]
async fn a_refused_version_is_not_retried() {
    let mock = Mock::start(|_, request| match request {
        Request::Hello { .. } => Step::Reply(Response::error(ErrorCode::UnsupportedVersion, "speaks 2 only")),
        _ => Step::Close,
    })
    .await;
    let error = Client::connect(&mock.addr, fast_options()).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnsupportedVersion), "{error:?}");
    assert_eq!(mock.requests().len(), 1, "one attempt only");
}

#[tokio::test]
async fn a_timeout_keeps_the_connection_and_drops_the_late_reply() {
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        match request {
            // The first dequeue is answered only when the second request comes.
            Request::Dequeue { max: 1, .. } => Step::Defer(Response::Leased(Vec::new())),
            Request::ListQueues => Step::FlushReversed(Response::Queues(Vec::new())),
            _ => Step::Close,
        }
    })
    .await;
    let options = ClientOptions { request_timeout_ms: 100, ..fast_options() };
    let client = Client::connect(&mock.addr, options).await.unwrap();
    let started = Instant::now();
    let error = client.dequeue(&["q"], 1, None, 50).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { timeout_ms: 150, resend_safe: false }), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(error.is_outcome_unknown());
    // The late dequeue reply arrives after this one and goes nowhere.
    assert_eq!(client.list_queues().await.unwrap(), Vec::new());
    assert_eq!(mock.requests().iter().filter(|(c, _)| *c > 0).count(), 0, "still the first connection");
}

#[tokio::test]
async fn too_large_and_unencodable_requests_are_not_sent() {
    let mock = Mock::start(|connection, request| match request {
        Request::Hello { .. } => Step::Reply(Response::Hello { version: 1, frame_body_bytes_max: 100 }),
        _ => ping_ready(connection, request).unwrap_or(Step::Close),
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let big = TaskSpec { payload: Bytes::from(vec![b'x'; 200]), ..TaskSpec::default() };
    let error = client.enqueue("q", big).await.unwrap_err();
    assert!(matches!(error, ClientError::RequestTooLarge { limit_bytes: 100, .. }), "{error:?}");
    let empty_key = TaskSpec { key: Some(String::new()), ..TaskSpec::default() };
    let error = client.enqueue("q", empty_key).await.unwrap_err();
    assert!(matches!(error, ClientError::InvalidRequest { .. }), "{error:?}");
    assert!(!error.is_retryable() && !error.is_outcome_unknown());
    assert!(mock.requests().iter().all(|(_, r)| matches!(r, Request::Hello { .. } | Request::Ping)));
}

#[tokio::test]
async fn a_connection_error_frame_fails_what_is_in_flight_with_its_message() {
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        match (connection, request) {
            (0, _) => Step::CloseWithError(ErrorCode::MalformedRequest, "bad magic"),
            (_, Request::Cancel { id }) => Step::Reply(Response::TaskState { id: *id, state: TaskState::Cancelled }),
            _ => Step::Close,
        }
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let error = client.cancel(3).await.unwrap_err();
    let ClientError::ConnectionLost { reason, .. } = &error else { panic!("{error:?}") };
    assert!(reason.contains("malformed_request: bad magic"), "{reason}");
    assert_eq!(client.cancel(3).await, Ok(TaskState::Cancelled));
}

#[test]
fn the_blocking_client_notices_a_drop_while_idle() {
    // The mock runs on a runtime thread of its own; the blocking client brings its own.
    let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mock = Mock::start(|connection, request| {
                if let Some(step) = ping_ready(connection, request) {
                    return step;
                }
                match (connection, request) {
                    // The first connection ends right after its first call.
                    (0, Request::ListQueues) => Step::ReplyThenClose(Response::Queues(Vec::new())),
                    (_, Request::Complete { id, .. }) => {
                        Step::Reply(Response::TaskState { id: *id, state: TaskState::Completed })
                    }
                    _ => Step::Close,
                }
            })
            .await;
            addr_sender.send(mock.addr.clone()).unwrap();
            let _ = stopped.await;
        })
    });
    let addr = addr_receiver.recv().unwrap();
    let client = tqx_client::blocking::Client::connect(&addr, fast_options()).unwrap();
    assert_eq!(client.list_queues().unwrap(), Vec::new());
    // The server has closed; the client's reader sees it while the caller idles.
    std::thread::sleep(Duration::from_millis(100));
    // A complete is not safe to resend: it must go out on a fresh connection, not
    // into the dead one (which would make it fail as lost).
    assert_eq!(client.complete(1, 2, None), Ok(TaskState::Completed));
    drop(client);
    stop.send(()).unwrap();
    thread.join().unwrap();
}

#[tokio::test]
async fn an_undecodable_reply_fails_its_call_and_ends_the_connection() {
    let mock = Mock::start(|connection, request| {
        if let Some(step) = ping_ready(connection, request) {
            return step;
        }
        match (connection, request) {
            (0, Request::Extend { .. }) => Step::Ignore,
            (0, Request::GetTask { .. }) => Step::Garbage,
            (_, Request::Cancel { id }) => Step::Reply(Response::TaskState { id: *id, state: TaskState::Cancelled }),
            _ => Step::Close,
        }
    })
    .await;
    let client = Client::connect(&mock.addr, fast_options()).await.unwrap();
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.extend(1, 2, 1_000).await })
    };
    tokio::task::yield_now().await;
    let error = client.get_task(4).await.unwrap_err();
    assert!(matches!(&error, ClientError::Protocol { reason } if reason.contains("request")), "{error:?}");
    let error = waiting.await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::ConnectionLost { resend_safe: false, .. }), "{error:?}");
    assert_eq!(client.cancel(8).await, Ok(TaskState::Cancelled), "a new connection");
}
