//! Tokens and scopes (issue 18, docs/security.md) against the real server over
//! real sockets, both protocols: no token, a wrong one, the right one, scope
//! and queue-prefix boundaries, repeated failures closing the connection,
//! nothing executed for an unauthenticated request, SIGHUP reloads while
//! connections are open, `tqx token create` and the CLI's `--token`.
//!
//! Tokens are made by `tqx token create` itself, into a file of the test's.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use support::{create_token, Response, Server};
use tqx_wire::{peek_frame, ErrorCode, Header, Request, Response as Reply, Secret, TaskSpec, HEADER_BYTES};

const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGHUP may take to be seen (the reload is asynchronous).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

fn tqx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tqx"))
}

/// A server with `--tokens`, and the tokens of its file.
struct Secured {
    server: Server,
    file: PathBuf,
    _dir: tqx_testkit::TempDir,
    /// `admin`, every queue.
    admin: String,
    /// `produce` on `orders.*`.
    producer: String,
    /// `consume` on `orders.*`.
    consumer: String,
}

impl Secured {
    fn start() -> Secured {
        let dir = tqx_testkit::TempDir::create(support::fresh_dir()).expect("temporary directory");
        let file = dir.path().join("tokens");
        let admin = create_token(&file, &["--scope", "admin", "--name", "ops"]);
        let producer = create_token(&file, &["--scope", "produce", "--queues", "orders.*"]);
        let consumer = create_token(&file, &["--scope", "consume", "--queues", "orders.*"]);
        let server = Server::start(&["--tokens", file.to_str().unwrap()]);
        Secured { server, file, _dir: dir, admin, producer, consumer }
    }

    fn http(&self) -> Http {
        Http(support::Client::connect(self.server.addr))
    }

    fn binary(&self) -> Binary {
        Binary::connect(self.server.binary_addr.expect("a binary address"))
    }
}

// ---- HTTP with a token -------------------------------------------------------

struct Http(support::Client);

impl Http {
    fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
        if let Some(token) = token {
            bytes.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
        }
        let body = body.map(|body| serde_json::to_vec(&body).unwrap());
        if let Some(body) = &body {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body.as_deref().unwrap_or_default());
        self.0.send_raw_and_read(bytes).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }
}

#[track_caller]
fn assert_unauthenticated(response: &Response) {
    response.assert_error(401, "unauthenticated");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{response:?}");
}

#[track_caller]
fn assert_forbidden(response: &Response, scope: &str, queue: &str) {
    response.assert_error(403, "forbidden");
    let expected = format!("this credential lacks the {scope} scope on queue \"{queue}\"");
    assert!(response.message().starts_with(&expected), "{expected}: {response:?}");
}

// ---- binary, raw frames ------------------------------------------------------

struct Binary {
    stream: TcpStream,
    buffer: Vec<u8>,
    next_id: u64,
}

impl Binary {
    /// Connected and past its hello.
    fn connect(addr: SocketAddr) -> Binary {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut binary = Binary { stream, buffer: Vec::new(), next_id: 1 };
        assert!(matches!(binary.call(&Request::Hello { version_min: 1, version_max: 1 }), Reply::Hello { .. }));
        binary
    }

    /// Reads the next frame, or `None` once the server closed the connection.
    fn read(&mut self) -> Option<(Header, Reply)> {
        loop {
            if let Some(header) = peek_frame(&self.buffer, usize::MAX).expect("the server's framing") {
                let end = HEADER_BYTES + header.body_len.get() as usize;
                let body = Bytes::copy_from_slice(&self.buffer[HEADER_BYTES..end]);
                self.buffer.drain(..end);
                return Some((header, Reply::decode(&header, body).expect("the server's reply decodes")));
            }
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[track_caller]
    fn call(&mut self, request: &Request) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = Vec::new();
        request.encode(id, &mut frame);
        self.stream.write_all(&frame).expect("write");
        let (header, reply) = self.read().expect("a reply before the close");
        assert_eq!(header.request_id.get(), id, "{reply:?}");
        reply
    }

    #[track_caller]
    fn auth(&mut self, token: &str) -> Reply {
        self.call(&Request::Auth { token: Secret::new(token.as_bytes().to_vec()) })
    }

    #[track_caller]
    fn assert_closed(&mut self) {
        assert!(self.read().is_none(), "the server should have closed the connection");
    }
}

fn enqueue(queue: &str) -> Request {
    Request::Enqueue {
        queue: queue.into(),
        task: TaskSpec { payload: Bytes::from_static(b"1"), ..TaskSpec::default() },
    }
}

fn dequeue(queue: &str) -> Request {
    Request::Dequeue { queues: vec![queue.into()], max: 1, lease_ms: None, wait_ms: 0 }
}

#[track_caller]
fn assert_code(reply: &Reply, expected: ErrorCode) -> String {
    match reply {
        Reply::Error { code, message } if *code == expected => message.clone(),
        other => panic!("expected {expected}, got {other:?}"),
    }
}

// ---- tests -------------------------------------------------------------------

#[test]
fn token_create_prints_a_new_token_once_and_appends_its_hash_to_a_private_file() {
    let dir = tqx_testkit::TempDir::create(support::fresh_dir()).unwrap();
    let file = dir.path().join("tokens");
    let first = create_token(&file, &["--scope", "consume", "--scope", "produce", "--queues", "orders.*,billing"]);
    let second = create_token(&file, &["--scope", "admin", "--name", "ops"]);
    for token in [&first, &second] {
        assert!(token.starts_with("tqx_") && token.len() == 68, "{token}");
        assert!(token[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    }
    assert_ne!(first, second);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&first[4..]) && !text.contains(&second[4..]), "the file holds no token: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with(" scopes=produce,consume queues=orders.*,billing"), "{text}");
    assert!(lines[1].ends_with(" scopes=admin name=ops"), "{text}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A file that is not valid is not appended to.
    std::fs::write(&file, "sha256=nope scopes=admin\n").unwrap();
    let output = tqx_testkit::output_within(
        tqx().args(["token", "create", "--scope", "admin", "--file"]).arg(&file),
        READ_TIMEOUT,
    )
    .unwrap();
    assert!(!output.status.unwrap().success() && output.stdout.is_empty(), "{}", output.stderr);
    assert!(output.stderr.contains("line 1"), "{}", output.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "sha256=nope scopes=admin\n");
}

#[test]
fn serve_refuses_to_start_on_a_token_file_that_does_not_parse_naming_the_line() {
    let dir = tqx_testkit::TempDir::create(support::fresh_dir()).unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# ok\nsha256=00 scopes=admin\n").unwrap();
    let (status, _, stderr) = support::serve_until_exit(
        &["--http", "127.0.0.1:0", "--binary", "127.0.0.1:0", "--tokens", file.to_str().unwrap()],
        &dir.path().join("data"),
    );
    assert!(status.is_some_and(|s| !s.success()), "{status:?}: {stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("sha256"), "{stderr}");
}

#[test]
fn http_a_request_without_a_valid_token_executes_nothing() {
    let secured = Secured::start();
    let mut http = secured.http();
    let body = json!({"payload": {"n": 1}});
    assert_unauthenticated(&http.call("POST", "/v1/queues/orders.eu/tasks", None, Some(body.clone())));
    let mut other = secured.http();
    assert_unauthenticated(&other.call("POST", "/v1/queues/orders.eu/tasks", Some("tqx_wrong"), Some(body.clone())));
    let mut basic = secured.http();
    assert_unauthenticated(&basic.call("PUT", "/v1/queues/orders.eu", None, None));
    // The health check needs no token.
    assert_eq!(http.call("GET", "/healthz", None, None).status, 200);
    // Nothing was executed: the queue was never created.
    let mut admin = secured.http();
    admin.call("GET", "/v1/queues/orders.eu", Some(&secured.admin), None).assert_error(404, "queue_not_found");
    let queues = admin.call("GET", "/v1/queues", Some(&secured.admin), None);
    assert_eq!((queues.status, &queues.body), (200, &json!({"queues": []})));
    // And nothing about them was logged: no token, no payload.
    let log = secured.server.stderr();
    assert!(!log.contains("tqx_wrong") && !log.contains("orders.eu"), "{log}");
}

#[test]
fn http_the_third_failed_authentication_closes_the_connection() {
    let secured = Secured::start();
    let mut http = secured.http();
    for (i, token) in [None, Some("tqx_wrong"), Some(secured.admin.as_str())].into_iter().enumerate() {
        // A good token in between does not reset the count.
        let response = http.call("GET", "/v1/queues", token, None);
        if token == Some(secured.admin.as_str()) {
            assert_eq!(response.status, 200, "{response:?}");
        } else {
            assert_unauthenticated(&response);
            assert!(!response.closes(), "failure {i} keeps the connection: {response:?}");
        }
    }
    let third = http.call("GET", "/v1/queues", Some("tqx_still_wrong"), None);
    assert_unauthenticated(&third);
    assert!(third.closes() && third.message().contains("closed after 3 failed"), "{third:?}");
    http.0.assert_closed(READ_TIMEOUT);
    // A new connection starts afresh.
    assert_eq!(secured.http().call("GET", "/v1/queues", Some(&secured.admin), None).status, 200);
}

#[test]
fn http_every_scope_boundary_and_queue_prefix_is_enforced() {
    let secured = Secured::start();
    let (admin, producer, consumer) = (secured.admin.as_str(), secured.producer.as_str(), secured.consumer.as_str());
    let mut http = secured.http();
    let task = json!({"payload": 1});
    // produce on orders.*: enqueue there, nowhere else, and nothing else.
    let created = http.call("POST", "/v1/queues/orders.eu/tasks", Some(producer), Some(task.clone()));
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_forbidden(
        &http.call("POST", "/v1/queues/billing/tasks", Some(producer), Some(task.clone())),
        "produce",
        "billing",
    );
    let batch = json!({"tasks": [{"payload": 1}]});
    assert_forbidden(
        &http.call("POST", "/v1/queues/billing/tasks/batch", Some(producer), Some(batch)),
        "produce",
        "billing",
    );
    let lease = json!({"queues": ["orders.eu"]});
    assert_forbidden(&http.call("POST", "/v1/dequeue", Some(producer), Some(lease.clone())), "consume", "orders.eu");
    assert_forbidden(&http.call("PUT", "/v1/queues/orders.eu", Some(producer), None), "admin", "orders.eu");
    assert_forbidden(&http.call("GET", "/v1/queues/orders.eu", Some(producer), None), "admin", "orders.eu");
    assert_forbidden(&http.call("DELETE", "/v1/queues/orders.eu", Some(producer), None), "admin", "orders.eu");
    http.call("GET", "/v1/queues", Some(producer), None).assert_error(403, "forbidden");
    assert_eq!(http.call("GET", &format!("/v1/tasks/{id}"), Some(producer), None).status, 200);

    // consume on orders.*: lease and settle there.
    assert_forbidden(
        &http.call("POST", "/v1/queues/orders.eu/tasks", Some(consumer), Some(task.clone())),
        "produce",
        "orders.eu",
    );
    let leased = http.call("POST", "/v1/dequeue", Some(consumer), Some(lease));
    assert_eq!(leased.status, 200, "{leased:?}");
    let lease_token = leased.body["tasks"][0]["lease"].clone();
    assert_forbidden(
        &http.call("POST", "/v1/dequeue", Some(consumer), Some(json!({"queues": ["orders.eu", "billing"]}))),
        "consume",
        "billing",
    );
    http.call("GET", "/v1/queues", Some(consumer), None).assert_error(403, "forbidden");
    let extended = http.call(
        "POST",
        &format!("/v1/tasks/{id}/extend"),
        Some(consumer),
        Some(json!({"lease": lease_token, "lease_ms": 60000})),
    );
    assert_eq!(extended.status, 200, "{extended:?}");
    let done =
        http.call("POST", &format!("/v1/tasks/{id}/complete"), Some(consumer), Some(json!({"lease": lease_token})));
    assert_eq!(done.status, 200, "{done:?}");

    // A task outside the prefix, named by id: refused where the task is
    // known, and nothing happens to it even with its real lease.
    let billing = http.call("POST", "/v1/queues/billing/tasks", Some(admin), Some(task.clone()));
    let billing_id = billing.body["id"].as_str().unwrap().to_string();
    let leased = http.call("POST", "/v1/dequeue", Some(admin), Some(json!({"queues": ["billing"]})));
    let billing_lease = leased.body["tasks"][0]["lease"].clone();
    for (method, action, body) in [
        ("POST", "/complete", Some(json!({"lease": billing_lease}))),
        ("POST", "/fail", Some(json!({"lease": billing_lease, "error": "x"}))),
        ("POST", "/extend", Some(json!({"lease": billing_lease, "lease_ms": 1000}))),
        ("GET", "", None),
    ] {
        let response = http.call(method, &format!("/v1/tasks/{billing_id}{action}"), Some(consumer), body);
        assert_forbidden(&response, if method == "GET" { "produce or consume" } else { "consume" }, "billing");
    }
    assert_forbidden(
        &http.call("DELETE", &format!("/v1/tasks/{billing_id}"), Some(producer), None),
        "produce",
        "billing",
    );
    let view = http.call("GET", &format!("/v1/tasks/{billing_id}"), Some(admin), None);
    assert_eq!(view.body["state"], "leased", "untouched: {view:?}");
    // A task that does not exist is not_found, whatever the prefix.
    http.call("GET", "/v1/tasks/999999", Some(consumer), None).assert_error(404, "task_not_found");
    // admin: everything.
    assert_eq!(http.call("GET", "/v1/queues", Some(admin), None).status, 200);
    assert_eq!(http.call("DELETE", "/v1/queues/billing?force=true", Some(admin), None).status, 200);
}

#[test]
fn binary_requests_before_auth_are_refused_and_execute_nothing() {
    let secured = Secured::start();
    let mut binary = secured.binary();
    assert_eq!(binary.call(&Request::Ping), Reply::Pong { ready: true }, "ping needs no token");
    let message = assert_code(&binary.call(&enqueue("orders.eu")), ErrorCode::Unauthenticated);
    assert!(message.contains("send auth"), "{message}");
    let message = assert_code(&binary.auth("tqx_wrong"), ErrorCode::Unauthenticated);
    assert!(message.contains("the token was refused"), "{message}");
    // Nothing was executed: the queue was never created.
    let mut admin = secured.binary();
    assert!(matches!(admin.auth(&secured.admin), Reply::Authenticated { scopes: 4 }));
    assert_code(&admin.call(&Request::GetQueue { queue: "orders.eu".into() }), ErrorCode::QueueNotFound);
    assert_eq!(admin.call(&Request::ListQueues), Reply::Queues(Vec::new()));
    let log = secured.server.stderr();
    assert!(!log.contains("tqx_wrong") && !log.contains("orders.eu"), "{log}");
}

#[test]
fn binary_the_third_failed_authentication_closes_the_connection() {
    let secured = Secured::start();
    let mut binary = secured.binary();
    assert_code(&binary.auth("tqx_wrong"), ErrorCode::Unauthenticated);
    assert_code(&binary.call(&Request::ListQueues), ErrorCode::Unauthenticated);
    let message = assert_code(&binary.auth("tqx_wrong_again"), ErrorCode::Unauthenticated);
    assert!(message.contains("closed after 3 failed"), "{message}");
    binary.assert_closed();
    let mut fresh = secured.binary();
    assert!(matches!(fresh.auth(&secured.admin), Reply::Authenticated { .. }));
}

#[test]
fn binary_every_scope_boundary_and_queue_prefix_is_enforced() {
    let secured = Secured::start();
    let mut producer = secured.binary();
    assert_eq!(producer.auth(&secured.producer), Reply::Authenticated { scopes: tqx_wire::SCOPE_PRODUCE });
    let id = match producer.call(&enqueue("orders.eu")) {
        Reply::Enqueued(enqueued) => enqueued.id,
        other => panic!("{other:?}"),
    };
    let message = assert_code(&producer.call(&enqueue("billing")), ErrorCode::Forbidden);
    assert_eq!(message, "this credential lacks the produce scope on queue \"billing\"");
    assert_code(&producer.call(&dequeue("orders.eu")), ErrorCode::Forbidden);
    assert_code(&producer.call(&Request::ListQueues), ErrorCode::Forbidden);
    assert_code(&producer.call(&Request::GetQueue { queue: "orders.eu".into() }), ErrorCode::Forbidden);
    assert!(matches!(producer.call(&Request::GetTask { id }), Reply::Task(_)));

    let mut consumer = secured.binary();
    assert_eq!(consumer.auth(&secured.consumer), Reply::Authenticated { scopes: tqx_wire::SCOPE_CONSUME });
    assert_code(&consumer.call(&enqueue("orders.eu")), ErrorCode::Forbidden);
    let leased = match consumer.call(&dequeue("orders.eu")) {
        Reply::Leased(tasks) => tasks,
        other => panic!("{other:?}"),
    };
    assert_eq!(leased.len(), 1);
    let complete = Request::Complete { id, lease: leased[0].lease, result: None };
    assert!(matches!(consumer.call(&complete), Reply::TaskState { .. }));

    let mut admin = secured.binary();
    admin.auth(&secured.admin);
    let billing = match admin.call(&enqueue("billing")) {
        Reply::Enqueued(enqueued) => enqueued.id,
        other => panic!("{other:?}"),
    };
    let lease = match admin.call(&dequeue("billing")) {
        Reply::Leased(tasks) => tasks[0].lease,
        other => panic!("{other:?}"),
    };
    let items = vec![tqx_wire::CompleteItem { id: billing, lease, result: None }];
    let message = assert_code(&consumer.call(&Request::CompleteBatch { items }), ErrorCode::Forbidden);
    assert!(message.contains("\"billing\""), "{message}");
    match admin.call(&Request::GetTask { id: billing }) {
        Reply::Task(view) => assert_eq!(view.state, tqx_wire::TaskState::Leased, "untouched"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_rust_client_sends_its_token_and_says_when_it_is_refused_binary() {
    let secured = Secured::start();
    let addr = secured.server.binary_addr.unwrap().to_string();
    let options = |token: &str| tqx_client::ClientOptions {
        token: Some(tqx_client::Token::new(token)),
        reconnect_attempts_max: 1,
        ..tqx_client::ClientOptions::default()
    };
    let client = tqx_client::blocking::Client::connect(&addr, options(&secured.producer)).expect("connects");
    assert!(client.enqueue("orders.eu", TaskSpec { payload: Bytes::from_static(b"1"), ..TaskSpec::default() }).is_ok());
    let refused = client.dequeue(&["orders.eu".to_string()], 1, None, 0).unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    let Err(error) = tqx_client::blocking::Client::connect(&addr, options("tqx_wrong")) else {
        panic!("a wrong token connected")
    };
    assert_eq!(error.code(), Some(ErrorCode::Unauthenticated), "{error}");
    assert!(error.to_string().contains("the token was refused"), "{error}");
    assert!(!error.is_retryable());
}

/// `tqx queues --token` over both protocols, `TQX_TOKEN`, and the message of a
/// refused token.
#[test]
fn the_cli_sends_its_token_over_http_and_binary_and_says_when_it_is_refused() {
    let secured = Secured::start();
    let http = format!("http://{}", secured.server.addr);
    let binary = secured.server.binary_addr.unwrap().to_string();
    let run = |server: &str, binary: bool, token: Option<&str>, env: Option<&str>| -> tqx_testkit::Output {
        let mut command = tqx();
        command.args(["queues", "--server", server]).env_remove("TQX_TOKEN");
        if binary {
            command.arg("--binary");
        }
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        if let Some(env) = env {
            command.env("TQX_TOKEN", env);
        }
        tqx_testkit::output_within(&mut command, Duration::from_secs(30)).unwrap()
    };
    for (server, binary) in [(http.as_str(), false), (binary.as_str(), true)] {
        let ok = run(server, binary, Some(secured.admin.as_str()), None);
        assert!(ok.status.unwrap().success(), "{}", ok.stderr);
        assert!(run(server, binary, None, Some(secured.admin.as_str())).status.unwrap().success(), "TQX_TOKEN");
        let refused = run(server, binary, Some("tqx_wrong"), None);
        // Exit 6: auth (docs/cli.md#exit-codes).
        assert_eq!(refused.status.unwrap().code(), Some(6), "{}", refused.stderr);
        assert!(refused.stderr.contains("refused the token"), "{}", refused.stderr);
        let missing = run(server, binary, None, None);
        assert!(missing.stderr.contains("requires a token"), "{}", missing.stderr);
        let forbidden = run(server, binary, Some(secured.consumer.as_str()), None);
        assert!(forbidden.stderr.contains("lacks the admin scope"), "{}", forbidden.stderr);
    }
}

/// Polls until `check` passes (a reload is asynchronous), or fails the test.
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within {RELOAD_TIMEOUT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGHUP adds and revokes tokens while connections are open, on both
/// protocols: established connections are re-checked at their next request
/// (the revoked token is refused, its connection stays usable with another
/// token over HTTP), and a file that does not parse keeps the tokens in force.
#[test]
fn sighup_reloads_the_token_file_and_open_http_and_binary_connections_are_rechecked() {
    let secured = Secured::start();
    let mut http = secured.http();
    assert_eq!(http.call("GET", "/v1/queues", Some(&secured.admin), None).status, 200);
    let mut binary = secured.binary();
    assert!(matches!(binary.auth(&secured.admin), Reply::Authenticated { .. }));
    assert!(matches!(binary.call(&Request::ListQueues), Reply::Queues(_)));

    // Replace the file: the admin token is revoked, a new one is added.
    let old = std::fs::read_to_string(&secured.file).unwrap();
    let without_admin: String =
        old.lines().filter(|line| !line.contains("name=ops")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&secured.file, &without_admin).unwrap();
    let added = create_token(&secured.file, &["--scope", "admin", "--name", "ops2"]);
    secured.server.signal(libc::SIGHUP);
    eventually("the new token working", || secured.http().call("GET", "/v1/queues", Some(&added), None).status == 200);
    // The open connections: the revoked token is refused at the next request.
    assert_unauthenticated(&http.call("GET", "/v1/queues", Some(&secured.admin), None));
    assert_eq!(http.call("GET", "/v1/queues", Some(&added), None).status, 200, "the same connection, a valid token");
    let message = assert_code(&binary.call(&Request::ListQueues), ErrorCode::Unauthenticated);
    assert!(message.contains("send auth"), "{message}");
    assert!(matches!(binary.auth(&added), Reply::Authenticated { .. }));
    assert!(matches!(binary.call(&Request::ListQueues), Reply::Queues(_)));

    // A file that does not parse: logged, and the tokens in force stay.
    std::fs::write(&secured.file, "garbage\n").unwrap();
    secured.server.signal(libc::SIGHUP);
    eventually("the failed reload logged", || secured.server.stderr().contains("kept the tokens in force"));
    assert!(secured.server.stderr().contains("line 1"), "{}", secured.server.stderr());
    assert_eq!(http.call("GET", "/v1/queues", Some(&added), None).status, 200);
    assert!(matches!(binary.call(&Request::ListQueues), Reply::Queues(_)));
    assert_eq!(secured.http().call("GET", "/v1/queues", Some(&added), None).status, 200);
}
