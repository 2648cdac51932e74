//! Shared helpers for the HTTP integration tests: start the real `tqx serve` on a
//! port-0 loopback address, and talk to it with a small raw HTTP/1.1 client over
//! `std::net::TcpStream` (keep-alive, pipelining, raw bytes).
//!
//! Every test starts its own server (`Server::start`), which is killed when the
//! value is dropped.

#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How long a client waits for a response before the test fails (instead of
/// hanging): far above any legitimate latency.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to print its `listening` lines, to become
/// ready, or to stop.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    tqx: tqx_testkit::Tqx,
    pub addr: SocketAddr,
    /// Where the binary protocol listens (always known: every server gets a
    /// `--binary` address, port 0 unless a `*_binary` helper names one).
    pub binary_addr: Option<SocketAddr>,
    dir: PathBuf,
}

/// `tqx token create ARGS --file FILE`: the token it printed (tests of
/// `--tokens` servers make their tokens with the real command).
#[track_caller]
pub fn create_token(file: &std::path::Path, args: &[&str]) -> String {
    let output = tqx_testkit::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_tqx"))
            .args(["token", "create"])
            .args(args)
            .arg("--file")
            .arg(file),
        Duration::from_secs(30),
    )
    .expect("run tqx token create");
    assert!(output.status.is_some_and(|s| s.success()), "tqx token create {args:?}: {}", output.stderr);
    let token = output.stdout.trim().to_string();
    assert_eq!(output.stdout, format!("{token}\n"), "exactly the token, on one line");
    token
}

/// A new, empty directory for one server's data and logs.
pub fn fresh_dir() -> PathBuf {
    tqx_testkit::fresh_path("tqx-http-test")
}

impl Server {
    /// `tqx serve --http 127.0.0.1:0 --data <fresh dir> --reactors 1 --workers 1 --no-pin <extra_args>`,
    /// once `/healthz` answers 200.
    pub fn start(extra_args: &[&str]) -> Server {
        let server = Server::launch(fresh_dir(), extra_args);
        server.wait_healthy();
        server
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed or closed
    /// cleanly) and starts a new one on the same data directory.
    pub fn crash_and_restart(mut self, extra_args: &[&str]) -> Server {
        let _ = self.tqx.kill();
        let server = Server::launch(std::mem::take(&mut self.dir), extra_args);
        server.wait_healthy();
        server
    }

    /// Stops the server with SIGTERM, waits for it to exit, and starts a new one
    /// on the same data directory.
    pub fn stop_and_restart(mut self, extra_args: &[&str]) -> Server {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(START_TIMEOUT);
        assert!(status.is_some_and(|s| s.success()), "clean stop: {status:?}; stderr:\n{}", self.stderr());
        let server = Server::launch(std::mem::take(&mut self.dir), extra_args);
        server.wait_healthy();
        server
    }

    /// The server's process id (to read its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.tqx.pid()
    }

    /// The server's data directory (`--data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `start`, with `--binary <binary_addr>` (`127.0.0.1:0`: any free port);
    /// `binary_addr` holds the address bound.
    pub fn start_binary(binary_addr: &str, extra_args: &[&str]) -> Server {
        let server = Server::launch_binary(fresh_dir(), binary_addr, extra_args);
        server.wait_healthy();
        server
    }

    /// `launch`, with `--binary <binary_addr>`; `binary_addr` holds the address bound.
    pub fn launch_binary(dir: PathBuf, binary_addr: &str, extra_args: &[&str]) -> Server {
        Server::launch_with(dir, Some(binary_addr), extra_args, None)
    }

    /// `crash_and_restart` (SIGKILL), the new server listening for the binary
    /// protocol on the same address as this one (same port: clients reconnect).
    pub fn crash_and_restart_binary(mut self, extra_args: &[&str]) -> Server {
        let binary_addr = self.binary_addr.expect("a server started with --binary").to_string();
        let _ = self.tqx.kill();
        let server = Server::relaunch_binary(std::mem::take(&mut self.dir), &binary_addr, extra_args);
        server.wait_healthy();
        server
    }

    /// `stop_and_restart` (SIGTERM), the new server listening for the binary
    /// protocol on the same address as this one.
    pub fn stop_and_restart_binary(mut self, extra_args: &[&str]) -> Server {
        let binary_addr = self.binary_addr.expect("a server started with --binary").to_string();
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(START_TIMEOUT);
        assert!(status.is_some_and(|s| s.success()), "clean stop: {status:?}; stderr:\n{}", self.stderr());
        let server = Server::relaunch_binary(std::mem::take(&mut self.dir), &binary_addr, extra_args);
        server.wait_healthy();
        server
    }

    /// Starts `tqx serve` in `dir` (data in `dir/data`, stderr in `dir/stderr.log`)
    /// and waits for its `listening` lines only: it may still be recovering.
    pub fn launch(dir: PathBuf, extra_args: &[&str]) -> Server {
        Server::launch_with(dir, None, extra_args, None)
    }

    /// `launch_binary` on an address a server that was just killed listened
    /// on, retrying while the address is still taken: the dead server's
    /// listening socket is held by its io_uring instance, which the kernel tears
    /// down asynchronously after the process is reaped.
    fn relaunch_binary(dir: PathBuf, binary_addr: &str, extra_args: &[&str]) -> Server {
        Server::launch_with(dir, Some(binary_addr), extra_args, Some(Instant::now() + START_TIMEOUT))
    }

    /// The one start of every helper above; with `retry_until`, retries while
    /// the binary address is still in use.
    fn launch_with(
        dir: PathBuf,
        binary_addr: Option<&str>,
        extra_args: &[&str],
        retry_until: Option<Instant>,
    ) -> Server {
        std::fs::create_dir_all(&dir).expect("create test directory");
        let launch = tqx_testkit::Launch::new(env!("CARGO_BIN_EXE_tqx"), dir.join("data"), dir.join("stderr.log"))
            // Always a binary address: its default, 7701, would collide between tests.
            .binary(binary_addr.unwrap_or("127.0.0.1:0"))
            .args(["--reactors", "1", "--workers", "1", "--no-pin"])
            // TQX_TEST_BINARY_IO=io-uring runs a suite against the experimental
            // binary reactor (docs/architecture.md, "io_uring: tokio-uring vs io-uring").
            .args(std::env::var("TQX_TEST_BINARY_IO").map(|io| vec!["--binary-io".to_owned(), io]).unwrap_or_default())
            .args(extra_args.iter().copied());
        let started = match retry_until {
            Some(deadline) => launch.start_retrying_address_in_use(START_TIMEOUT, deadline),
            None => launch.start(START_TIMEOUT),
        };
        match started {
            Ok(tqx) => {
                let (addr, binary_addr) = (tqx.http, Some(tqx.binary));
                Server { tqx, addr, binary_addr, dir }
            }
            Err(failure) => {
                let log = failure.log_since_start();
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{failure}; stderr:\n{log}");
            }
        }
    }

    /// Waits until `GET /healthz` answers 200 (recovery done).
    pub fn wait_healthy(&self) {
        if let Err(e) = self.tqx.wait_ready(START_TIMEOUT) {
            panic!("tqx serve {e}; stderr:\n{}", self.stderr());
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// What the server wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        self.tqx.log_text()
    }

    /// The server still answers correctly on a fresh connection: health, and a
    /// real enqueue + dequeue + complete on a queue of its own.
    pub fn assert_healthy(&self) {
        let mut client = self.client();
        let health = client.get("/healthz");
        assert_eq!(health.status, 200, "healthz after the case: {health:?}");
        assert_eq!(health.body, json!({"status": "ok"}));
        let queue = format!("health-{}", HEALTH_QUEUES.fetch_add(1, Ordering::SeqCst));
        let id = client.enqueue(&queue, json!({"payload": {"check": true}}));
        let tasks = client.dequeue(&[&queue], 10);
        assert_eq!(tasks.len(), 1, "the health-check task comes back: {tasks:?}");
        assert_eq!(tasks[0]["id"], json!(id));
        assert_eq!(tasks[0]["payload"], json!({"check": true}));
        let lease = tasks[0]["lease"].as_str().unwrap().to_string();
        let done = client.post(&format!("/v1/tasks/{id}/complete"), json!({"lease": lease}));
        assert_eq!(done.status, 200, "{done:?}");
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid();
        if let Err(e) = self.tqx.signal(signal) {
            panic!("kill({pid}, {signal}): {e}");
        }
    }

    /// Waits up to `timeout` for the server to exit; its exit status, or None.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.tqx.wait_exit(timeout)
    }

    /// Whether the child process is still running.
    pub fn is_running(&mut self) -> bool {
        self.tqx.is_running()
    }
}

static HEALTH_QUEUES: AtomicU64 = AtomicU64::new(0);

/// How long a server that must refuse to start may run before it is killed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `tqx serve ARGS --data DATA` until it exits, or kills it after 20 s:
/// (exit status if it exited, stdout, stderr). For the tests of a server
/// that must refuse to start (no `--http`/`--binary` is added: pass them).
pub fn serve_until_exit(args: &[&str], data: &std::path::Path) -> (Option<std::process::ExitStatus>, String, String) {
    let mut all: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
    all.extend(["--data".into(), data.as_os_str().to_os_string()]);
    tqx_testkit::serve_until_exit(std::path::Path::new(env!("CARGO_BIN_EXE_tqx")), &all, REFUSAL_TIMEOUT)
}

/// A FIFO for the server's test hook `--debug-wal-sync-gate FIFO`: each WAL
/// sync reads one byte from it first, so each `release` lets one sync run.
pub struct SyncGate {
    path: PathBuf,
    writer: std::fs::File,
}

impl SyncGate {
    /// Creates the FIFO in `dir` (created if needed).
    pub fn new(dir: &std::path::Path) -> SyncGate {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("sync-gate");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
        // Read-write, so neither side's open blocks waiting for the other.
        let writer = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        SyncGate { path, writer }
    }

    /// The `--debug-wal-sync-gate` argument.
    pub fn arg(&self) -> String {
        self.path.to_str().unwrap().to_string()
    }

    pub fn release(&mut self, syncs: usize) {
        self.writer.write_all(&vec![0u8; syncs]).unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The process first (the kit kills it when `tqx` drops), then its
        // directory, which it may be writing to until then. A directory
        // taken by a restart (`mem::take`) is empty: nothing to remove.
        let _ = self.tqx.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` for an empty body).
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// Why the body could not be read as JSON, if it could not.
    pub json_error: Option<String>,
}

impl std::fmt::Debug for Response {
    /// The body as text, cut short: a failing assertion should not print megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.raw_text();
        let shown: String = text.chars().take(600).collect();
        let more =
            if shown.len() < text.len() { format!("... ({} bytes)", self.raw_body.len()) } else { String::new() };
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &format_args!("{shown}{more}"))
            .field("json_error", &self.json_error)
            .finish()
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the server announced it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.raw_body).into_owned()
    }

    /// `error.code` of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// Asserts the error shape `{"error":{"code","message"}}` with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        assert_eq!(self.code(), code, "error code of {self:?}");
        let error = self.body["error"].as_object().unwrap_or_else(|| panic!("no error object: {self:?}"));
        assert!(error["message"].is_string() && !self.message().is_empty(), "error message: {self:?}");
        assert_eq!(error.len(), 2, "error has exactly code and message: {self:?}");
        assert_eq!(self.body.as_object().unwrap().len(), 1, "body is exactly {{\"error\": ...}}: {self:?}");
        assert_json_content_type(self);
    }

    /// Asserts `400 invalid_argument` whose message names `field`.
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) {
        self.assert_error(400, "invalid_argument");
        assert!(self.message().contains(field), "the message should name {field:?}: {self:?}");
    }
}

#[track_caller]
pub fn assert_json_content_type(response: &Response) {
    let content_type = response.header("content-type").unwrap_or("");
    assert!(content_type.starts_with("application/json"), "Content-Type of {response:?}");
}

/// Reading a response failed: the connection closed (cleanly or by reset)
/// before a complete response, or the read timed out.
#[derive(Debug)]
pub enum ReadError {
    /// End of stream, or a reset, with `partial` bytes of a response received.
    Closed {
        partial: usize,
        reset: bool,
    },
    TimedOut,
    Other(io::Error),
}

pub struct Client {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    pub addr: SocketAddr,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// A client over a connection opened elsewhere (already written to).
    pub fn from_stream(stream: TcpStream) -> Client {
        let addr = stream.peer_addr().expect("a connected stream");
        Client { stream, buffer: Vec::new(), addr }
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, buffer: Vec::new(), addr })
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Sends one request and reads its response; panics if the server does not answer.
    #[track_caller]
    pub fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        self.request_bytes(method, path, body.as_deref())
    }

    /// Like `request`, with the body as raw bytes (sent with a `Content-Length`).
    #[track_caller]
    pub fn request_bytes(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        self.send_raw(&request_bytes(method, path, body));
        match self.read_response() {
            Ok(response) => response,
            Err(error) => panic!("{method} {path}: no response: {error:?}"),
        }
    }

    #[track_caller]
    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    #[track_caller]
    pub fn post(&mut self, path: &str, body: Value) -> Response {
        self.request("POST", path, Some(&body))
    }

    #[track_caller]
    pub fn put(&mut self, path: &str, body: Value) -> Response {
        self.request("PUT", path, Some(&body))
    }

    #[track_caller]
    pub fn delete(&mut self, path: &str) -> Response {
        self.request("DELETE", path, None)
    }

    /// `PUT /v1/queues/{queue}`, asserting 200; returns the queue object.
    #[track_caller]
    pub fn create_queue(&mut self, queue: &str, config: Value) -> Value {
        let response = self.put(&format!("/v1/queues/{queue}"), config);
        assert_eq!(response.status, 200, "PUT queue {queue}: {response:?}");
        response.body
    }

    /// Enqueues, asserting 201; returns the new task's id.
    #[track_caller]
    pub fn enqueue(&mut self, queue: &str, body: Value) -> String {
        let response = self.post(&format!("/v1/queues/{queue}/tasks"), body);
        assert_eq!(response.status, 201, "enqueue into {queue}: {response:?}");
        response.body["id"].as_str().unwrap_or_else(|| panic!("id is a string: {response:?}")).to_string()
    }

    /// Dequeues (no wait), asserting 200; returns the leased tasks.
    #[track_caller]
    pub fn dequeue(&mut self, queues: &[&str], max: u64) -> Vec<Value> {
        let response = self.post("/v1/dequeue", json!({"queues": queues, "max": max}));
        assert_eq!(response.status, 200, "dequeue from {queues:?}: {response:?}");
        response.body["tasks"].as_array().unwrap_or_else(|| panic!("tasks is an array: {response:?}")).clone()
    }

    /// `GET /v1/tasks/{id}`, asserting 200; returns the task object.
    #[track_caller]
    pub fn task(&mut self, id: &str) -> Value {
        let response = self.get(&format!("/v1/tasks/{id}"));
        assert_eq!(response.status, 200, "GET task {id}: {response:?}");
        response.body
    }

    #[track_caller]
    pub fn queue_counts(&mut self, queue: &str) -> Value {
        let response = self.get(&format!("/v1/queues/{queue}"));
        assert_eq!(response.status, 200, "GET queue {queue}: {response:?}");
        response.body["counts"].clone()
    }

    /// Writes raw bytes (the whole slice, in one call).
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to the server: {e}"));
    }

    /// Writes raw bytes, ignoring errors (the server may have closed already).
    pub fn send_raw_lossy(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `bytes` from another thread while this one reads the response, so a
    /// server that answers early and closes (431, 413) cannot reset the connection
    /// before the response is read.
    pub fn send_raw_and_read(&mut self, bytes: Vec<u8>) -> Result<Response, ReadError> {
        let mut writer = self.stream.try_clone().unwrap();
        let handle = thread::spawn(move || {
            let _ = writer.write_all(&bytes);
        });
        let result = self.read_response();
        // Unblocks the writer if the server stopped reading with data still to send.
        if result.is_err() {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        let _ = handle.join();
        result
    }

    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    fn fill(&mut self) -> Result<usize, ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(ReadError::TimedOut),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                Err(ReadError::Closed { partial: self.buffer.len(), reset: true })
            }
            Err(e) => Err(ReadError::Other(e)),
        }
    }

    /// Reads exactly one response (by `Content-Length`; to the end of the stream
    /// if it has none), keeping any further bytes for the next call.
    pub fn read_response(&mut self) -> Result<Response, ReadError> {
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if self.fill()? == 0 {
                return Err(ReadError::Closed { partial: self.buffer.len(), reset: false });
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        assert!(version.starts_with("HTTP/1."), "bad status line {status_line:?}");
        let status: u16 =
            parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap_or_else(|_| panic!("bad Content-Length {v:?}")));
        let raw_body = match length {
            Some(length) => {
                while self.buffer.len() < head_end + length {
                    if self.fill()? == 0 {
                        return Err(ReadError::Closed { partial: self.buffer.len(), reset: false });
                    }
                }
                let body = self.buffer[head_end..head_end + length].to_vec();
                self.buffer.drain(..head_end + length);
                body
            }
            None => {
                while self.fill()? > 0 {}
                let body = self.buffer[head_end..].to_vec();
                self.buffer.clear();
                body
            }
        };
        // A body serde_json cannot read (every body should be JSON, but a payload
        // may be nested deeper than serde_json's recursion limit) is kept as raw
        // text, with `body` Null and the reason in `json_error`.
        let (body, json_error) = if raw_body.is_empty() {
            (Value::Null, None)
        } else {
            match serde_json::from_slice(&raw_body) {
                Ok(value) => (value, None),
                Err(error) => (Value::Null, Some(error.to_string())),
            }
        };
        Ok(Response { status, headers, body, raw_body, json_error })
    }

    /// Whether the server has closed the connection: the next read sees the end of
    /// the stream (or a reset) with no bytes, within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(ReadError::Closed { .. }) => true,
            Err(_) => false,
        }
    }

    /// Asserts the server closes this connection (within `within`) without sending
    /// anything more.
    #[track_caller]
    pub fn assert_closed(&mut self, within: Duration) {
        self.set_read_timeout(within);
        assert!(self.buffer.is_empty(), "unexpected bytes: {:?}", String::from_utf8_lossy(&self.buffer));
        match self.fill() {
            Ok(0) | Err(ReadError::Closed { .. }) => {}
            Ok(_) => panic!("expected the connection to close, got {:?}", String::from_utf8_lossy(&self.buffer)),
            Err(ReadError::TimedOut) => panic!("the server did not close the connection within {within:?}"),
            Err(ReadError::Other(e)) => panic!("reading: {e}"),
        }
        self.set_read_timeout(READ_TIMEOUT);
    }
}

/// The bytes of one HTTP/1.1 request (`Host` header; `Content-Length` when there is a body).
pub fn request_bytes(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    if let Some(body) = body {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The bytes of one request with a JSON body.
pub fn json_request(method: &str, path: &str, body: &Value) -> Vec<u8> {
    request_bytes(method, path, Some(&serde_json::to_vec(body).unwrap()))
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A task id or lease token written as a JSON string of a u64.
#[track_caller]
pub fn as_id(value: &Value) -> u64 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string id, got {value}"))
        .parse()
        .unwrap_or_else(|_| panic!("expected a u64 in a string, got {value}"))
}

/// A raw binary-protocol connection for tests that need frames the Rust
/// client would not send (pipelines left unread, hostile peers): requests
/// are encoded with fresh ids, replies read frame by frame.
pub struct RawBinary {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    next_id: u64,
}

impl RawBinary {
    /// `stream` as it is: no hello sent.
    pub fn new(stream: TcpStream) -> RawBinary {
        RawBinary { stream, buffer: Vec::new(), next_id: 1 }
    }

    /// Connected to `addr` (reads time out after `read_timeout`) and past its hello.
    pub fn connect(addr: SocketAddr, read_timeout: Duration) -> RawBinary {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = RawBinary::new(stream);
        let hello = client.call(&tqx_wire::Request::Hello { version_min: 1, version_max: 1 });
        assert!(matches!(hello, tqx_wire::Response::Hello { .. }), "{hello:?}");
        client
    }

    /// Encodes `request` with a fresh id into `out`; returns the id.
    pub fn encode(&mut self, request: &tqx_wire::Request, out: &mut Vec<u8>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        request.encode(id, out);
        id
    }

    pub fn send(&mut self, request: &tqx_wire::Request) -> u64 {
        let mut frame = Vec::new();
        let id = self.encode(request, &mut frame);
        self.stream.write_all(&frame).expect("write to the server");
        id
    }

    /// The next reply frame, or `None` if none came within the read timeout
    /// or the connection closed.
    pub fn try_read(&mut self) -> Option<(tqx_wire::Header, tqx_wire::Response)> {
        loop {
            if let Some(header) = tqx_wire::peek_frame(&self.buffer, usize::MAX).expect("the server's framing") {
                let end = tqx_wire::HEADER_BYTES + header.body_len.get() as usize;
                let body = bytes::Bytes::copy_from_slice(&self.buffer[tqx_wire::HEADER_BYTES..end]);
                self.buffer.drain(..end);
                let response = tqx_wire::Response::decode(&header, body).expect("the server's reply decodes");
                return Some((header, response));
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[track_caller]
    pub fn read(&mut self) -> (tqx_wire::Header, tqx_wire::Response) {
        self.try_read().expect("a reply")
    }

    /// Sends `request` and reads its reply (which must be the next frame).
    #[track_caller]
    pub fn call(&mut self, request: &tqx_wire::Request) -> tqx_wire::Response {
        let id = self.send(request);
        let (header, response) = self.read();
        assert_eq!(header.request_id.get(), id, "{response:?}");
        response
    }
}

/// Whether the server has closed `stream`, without waiting: whatever it sent
/// (a refusal, a TLS handshake flight) is read and dropped; the end of the
/// stream or a reset means closed.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true, // a reset
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}
