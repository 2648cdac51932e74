//! One connection: the handshake, then two tasks around a table of requests
//! waiting for their replies.
//!
//! Protocol of a connection's life:
//!
//! 1. `open` connects (and, with `ClientOptions::tls`, does the TLS handshake
//!    through tokio-rustls), sends `Hello{1, 1}` and reads its reply (the server's
//!    frame limit), sends `Auth{token}` if the options hold a token (a refusal
//!    fails the attempt for good: `unauthenticated` is not retryable), then
//!    sends `Ping` and reads `Pong{ready}`: a server still recovering its
//!    state counts as not (yet) reachable, so a connection in hand is one
//!    that can serve.
//! 2. The socket is split. The **writer** task owns the write half and a
//!    bounded channel of frames: it takes every frame already queued (up to
//!    [`WRITE_BATCH_BYTES_MAX`]) and writes them with one `write_all`, so many
//!    callers pipelining cost one system call, not one each. The **reader** task
//!    owns the read half: it cuts frames with `take_frame`, decodes each reply
//!    and completes the oneshot registered under its `request_id` (replies may
//!    come in any order).
//! 3. A caller registers its request id *before* its frame enters the channel,
//!    so a reply can never arrive for an id nobody waits for, except one whose
//!    caller gave up (timed out): that reply is dropped.
//! 4. Whichever of the two tasks sees the connection end (end of stream, an
//!    I/O error, a framing error, a reply that does not decode, or the server's
//!    connection-level error frame)
//!    calls [`Shared::close`]: under the table's lock it marks the table closed
//!    and fails every waiting request with [`Outcome::Lost`], then signals the
//!    other task to stop. Registration checks the mark under the same lock, so
//!    after the close no request can be registered and left waiting forever:
//!    it is refused, and the caller knows its request was never sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tqx_wire::{take_frame, Header, Request, Response, HEADER_BYTES, VERSION};

use crate::error::ClientError;
use crate::options::ClientOptions;

/// Frames queued for the writer. When it is full, callers wait (back-pressure)
/// instead of the queue growing: at most this many encoded requests sit in
/// memory per connection beyond the one being written.
pub(crate) const WRITE_QUEUE_FRAMES_MAX: usize = 4096;
/// The writer stops adding frames to a batch past this size: larger writes
/// gain nothing once a syscall is amortized over a few hundred small frames,
/// and the batch buffer stays bounded (plus one frame).
pub(crate) const WRITE_BATCH_BYTES_MAX: usize = 256 << 10;
/// Free space the reader makes sure of before each read.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// The server's `request_id` for a frame that is about the connection, not a
/// request (its answer to a framing error, just before it closes). Clients
/// never use it.
pub(crate) const CONNECTION_REQUEST_ID: u64 = 0;

const _: () = assert!(WRITE_QUEUE_FRAMES_MAX >= 1);
const _: () = assert!(READ_CHUNK_BYTES >= HEADER_BYTES);

/// What a waiting request learns.
// Moved once, through a oneshot, into the caller, which keeps the `Response`:
// boxing it would add an allocation per reply and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply(Response),
    /// The reply's frame was whole but its body did not decode (the
    /// connection is then closed: the stream cannot be trusted).
    Undecodable(String),
    /// The connection ended first; the reason.
    Lost(String),
}

/// Why one connection attempt failed.
pub(crate) enum AttemptError {
    /// May succeed if tried again (refused, timed out, recovering, reset).
    Transient(String),
    /// Will not succeed by trying again (the server refuses our version).
    Fatal(ClientError),
}

struct Table {
    waiting: HashMap<u64, oneshot::Sender<Outcome>>,
    /// Set once, by [`Shared::close`]: why the connection ended.
    closed: Option<String>,
}

/// What the caller side, the reader and the writer of one connection share.
struct Shared {
    table: Mutex<Table>,
    /// Becomes true on close; each task stops when it sees it.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock can only come from a bug in this
        // module; the table is still consistent (every operation is one map
        // call), so go on with it rather than poison every later call.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the connection: every waiting request fails with `reason`, new
    /// ones are refused, both tasks stop. Only the first call has an effect.
    fn close(&self, reason: String) {
        let waiting = {
            let mut table = self.lock();
            if table.closed.is_some() {
                return;
            }
            table.closed = Some(reason.clone());
            std::mem::take(&mut table.waiting)
        };
        if !waiting.is_empty() {
            tracing::debug!(requests = waiting.len(), %reason, "connection lost with requests in flight");
        }
        for (_, sender) in waiting {
            let _ = sender.send(Outcome::Lost(reason.clone()));
        }
        let _ = self.stop.send(true);
    }
}

/// A live (or just closed) connection, as callers see it.
pub(crate) struct Connection {
    frames: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    /// The largest request body the server accepts (its hello reply).
    pub(crate) frame_body_bytes_max: usize,
}

impl Connection {
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Makes `request_id` wait for its reply; `Err` (with the reason) once the
    /// connection has ended, in which case nothing must be sent on it.
    pub(crate) fn register(&self, request_id: u64) -> Result<oneshot::Receiver<Outcome>, String> {
        let (sender, receiver) = oneshot::channel();
        let mut table = self.shared.lock();
        if let Some(reason) = &table.closed {
            return Err(reason.clone());
        }
        let previous = table.waiting.insert(request_id, sender);
        // Ids come from a 64-bit counter that never wraps in practice.
        assert!(previous.is_none(), "request id {request_id} registered twice");
        Ok(receiver)
    }

    /// Stops waiting for `request_id` (its caller gave up).
    pub(crate) fn forget(&self, request_id: u64) {
        self.shared.lock().waiting.remove(&request_id);
    }

    /// Queues a frame for the writer (waiting while the queue is full). `Err`
    /// if the writer has stopped: the frame was not sent.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), ()> {
        self.frames.send(frame).await.map_err(|_| ())
    }
}

impl Drop for Connection {
    /// The last caller-side handle is gone (the client was dropped, or replaced
    /// this connection after it closed): stop both tasks, which closes the socket.
    fn drop(&mut self) {
        self.shared.close("the client closed the connection".to_string());
    }
}

/// One attempt: connect, hello, ping. `next_request_id` hands out ids (never
/// [`CONNECTION_REQUEST_ID`]).
pub(crate) async fn open(
    addr: &str,
    options: &ClientOptions,
    next_request_id: &(dyn Fn() -> u64 + Sync),
) -> Result<Connection, AttemptError> {
    let limit = Duration::from_millis(options.connect_timeout_ms);
    match tokio::time::timeout(limit, handshake(addr, options, next_request_id)).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Transient(format!(
            "no connection, hello and ready ping within {} ms",
            options.connect_timeout_ms
        ))),
    }
}

async fn handshake(
    addr: &str,
    options: &ClientOptions,
    next_request_id: &(dyn Fn() -> u64 + Sync),
) -> Result<Connection, AttemptError> {
    let transient = AttemptError::Transient;
    let stream = connect_tcp(addr).await.map_err(transient)?;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let Some(tls) = &options.tls else {
        let mut stream = stream;
        let frame_body_bytes_max = hello_and_ping(&mut stream, &mut buffer, options, next_request_id).await?;
        // Owned halves: no lock between the reader and the writer.
        let (read_half, write_half) = stream.into_split();
        return Ok(start(read_half, write_half, buffer, options, frame_body_bytes_max));
    };
    let name = match &tls.server_name {
        Some(name) => crate::tls::server_name(name),
        None => crate::tls::server_name(addr),
    };
    let name = name.map_err(|reason| AttemptError::Fatal(ClientError::Tls { reason }))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let mut stream = connector.connect(name, stream).await.map_err(|e| io_failure("the TLS handshake", &e))?;
    let frame_body_bytes_max = hello_and_ping(&mut stream, &mut buffer, options, next_request_id).await?;
    let (read_half, write_half) = tokio::io::split(stream);
    Ok(start(read_half, write_half, buffer, options, frame_body_bytes_max))
}

/// A failed read or write during the handshake: fatal if TLS refused (a
/// certificate, ours or the server's: trying again fails the same way),
/// else transient.
fn io_failure(doing: &str, error: &std::io::Error) -> AttemptError {
    match crate::tls::describe_failure(error) {
        Some(reason) => AttemptError::Fatal(ClientError::Tls { reason }),
        None => AttemptError::Transient(format!("{doing}: {error}")),
    }
}

/// The hello (the server's frame limit, returned) and the readiness ping.
async fn hello_and_ping<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    options: &ClientOptions,
    next_request_id: &(dyn Fn() -> u64 + Sync),
) -> Result<usize, AttemptError> {
    let hello = Request::Hello { version_min: VERSION, version_max: VERSION };
    let frame_body_bytes_max = match exchange(stream, buffer, &hello, next_request_id(), options).await? {
        Response::Hello { version, frame_body_bytes_max } if version == VERSION => frame_body_bytes_max as usize,
        Response::Hello { version, .. } => {
            let reason = format!("the server chose protocol version {version}; this client speaks {VERSION}");
            return Err(AttemptError::Fatal(ClientError::Protocol { reason }));
        }
        other => return Err(unexpected_during_handshake("hello", other)),
    };
    if let Some(token) = &options.token {
        let auth = Request::Auth { token: tqx_wire::Secret::new(token.as_str().as_bytes().to_vec()) };
        match exchange(stream, buffer, &auth, next_request_id(), options).await? {
            Response::Authenticated { .. } => {}
            other => return Err(unexpected_during_handshake("auth", other)),
        }
    }
    match exchange(stream, buffer, &Request::Ping, next_request_id(), options).await? {
        Response::Pong { ready: true } => {}
        Response::Pong { ready: false } => {
            return Err(AttemptError::Transient("the server is still recovering its state".to_string()))
        }
        other => return Err(unexpected_during_handshake("ping", other)),
    }
    Ok(frame_body_bytes_max)
}

/// Starts the connection's reader and writer tasks on its two halves.
fn start<R, W>(
    read_half: R,
    write_half: W,
    buffer: BytesMut,
    options: &ClientOptions,
    frame_body_bytes_max: usize,
) -> Connection
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (stop, stop_seen) = watch::channel(false);
    let shared = Arc::new(Shared { table: Mutex::new(Table { waiting: HashMap::new(), closed: None }), stop });
    let (frames, frames_queued) = mpsc::channel(WRITE_QUEUE_FRAMES_MAX);
    tokio::spawn(write_loop(write_half, frames_queued, shared.clone(), stop_seen.clone()));
    tokio::spawn(read_loop(read_half, buffer, shared.clone(), stop_seen, options.reply_body_bytes_max));
    Connection { frames, shared, frame_body_bytes_max }
}

async fn connect_tcp(addr: &str) -> Result<TcpStream, String> {
    let addrs = tokio::net::lookup_host(addr).await.map_err(|e| format!("cannot resolve {addr:?}: {e}"))?;
    let mut last_error = format!("{addr} resolves to no address");
    for socket_addr in addrs {
        match TcpStream::connect(socket_addr).await {
            Ok(stream) => {
                // Explicit, not left to a default: requests are small frames the
                // writer already batches, so Nagle's delay would only add latency.
                stream.set_nodelay(true).map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
                return Ok(stream);
            }
            Err(error) => last_error = format!("{socket_addr}: {error}"),
        }
    }
    Err(last_error)
}

/// Sends one request and reads its reply, before the connection's tasks exist
/// (the handshake is strictly one request at a time). A server error is
/// transient if its code is retryable, else fatal.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    request: &Request,
    request_id: u64,
    options: &ClientOptions,
) -> Result<Response, AttemptError> {
    let transient = AttemptError::Transient;
    let mut frame = Vec::with_capacity(64);
    // Hello and ping always encode.
    request.encode(request_id, &mut frame);
    // The flush sends what TLS buffered (a no-op on plain TCP).
    let sent = async {
        stream.write_all(&frame).await?;
        stream.flush().await
    };
    sent.await.map_err(|e| io_failure(&format!("sending the {:?}", request.opcode()), &e))?;
    let (header, body) = loop {
        match take_frame(buffer, options.reply_body_bytes_max) {
            Ok(Some(frame)) => break frame,
            Ok(None) => {}
            Err(error) => {
                let reason = format!("the server's reply to the {:?} is not a frame: {error}", request.opcode());
                return Err(AttemptError::Fatal(ClientError::Protocol { reason }));
            }
        }
        buffer.reserve(READ_CHUNK_BYTES);
        match stream.read_buf(buffer).await {
            Ok(0) => return Err(transient("the server closed the connection during the handshake".to_string())),
            Ok(_) => {}
            Err(error) => return Err(io_failure("reading the handshake reply", &error)),
        }
    };
    let id = header.request_id.get();
    if id != request_id && id != CONNECTION_REQUEST_ID {
        let reason = format!("a reply to request {id} during the handshake (expected {request_id})");
        return Err(AttemptError::Fatal(ClientError::Protocol { reason }));
    }
    match Response::decode(&header, body) {
        Ok(Response::Error { code, message }) if code.retryable() => Err(transient(format!("{code}: {message}"))),
        Ok(Response::Error { code, message }) => Err(AttemptError::Fatal(ClientError::Server { code, message })),
        Ok(response) => Ok(response),
        Err(error) => {
            let reason = format!("cannot decode the reply to the {:?}: {error}", request.opcode());
            Err(AttemptError::Fatal(ClientError::Protocol { reason }))
        }
    }
}

fn unexpected_during_handshake(step: &str, response: Response) -> AttemptError {
    let reason = format!("unexpected reply to the {step}: {response:?}");
    AttemptError::Fatal(ClientError::Protocol { reason })
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write_half: W,
    mut frames_queued: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    mut stop_seen: watch::Receiver<bool>,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    loop {
        let first = tokio::select! {
            frame = frames_queued.recv() => frame,
            _ = stop_seen.wait_for(|stop| *stop) => None,
        };
        let Some(first) = first else { break };
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match frames_queued.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            // The flush sends what TLS buffered (a no-op on plain TCP).
            written = async {
                write_half.write_all(&batch).await?;
                write_half.flush().await
            } => written,
            _ = stop_seen.wait_for(|stop| *stop) => break,
        };
        if let Err(error) = written {
            shared.close(format!("sending to the server failed: {error}"));
            break;
        }
        if batch.capacity() > 2 * WRITE_BATCH_BYTES_MAX {
            // One huge frame grew it; do not keep that memory for the small ones.
            batch = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
        }
    }
    // Whatever ended the loop, the connection is over: tell the server too.
    let _ = write_half.shutdown().await;
    shared.close("the client closed the connection".to_string());
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read_half: R,
    mut buffer: BytesMut,
    shared: Arc<Shared>,
    mut stop_seen: watch::Receiver<bool>,
    reply_body_bytes_max: usize,
) {
    let reason = 'connection: loop {
        loop {
            match take_frame(&mut buffer, reply_body_bytes_max) {
                Ok(Some((header, body))) => {
                    if let Err(reason) = dispatch(&shared, header, body) {
                        break 'connection reason;
                    }
                }
                Ok(None) => break,
                Err(error) => break 'connection format!("the server sent a bad frame: {error}"),
            }
        }
        buffer.reserve(READ_CHUNK_BYTES);
        tokio::select! {
            read = read_half.read_buf(&mut buffer) => match read {
                Ok(0) => break "the server closed the connection".to_string(),
                Ok(_) => {}
                Err(error) => break format!("receiving from the server failed: {error}"),
            },
            _ = stop_seen.wait_for(|stop| *stop) => return,
        }
    };
    shared.close(reason);
}

/// Hands one reply to its waiting request. `Err` ends the connection.
fn dispatch(shared: &Shared, header: Header, body: Bytes) -> Result<(), String> {
    if !header.is_reply() {
        return Err(format!("the server sent a frame without the reply flag (opcode {:#04x})", header.opcode));
    }
    let request_id = header.request_id.get();
    let decoded = Response::decode(&header, body);
    if request_id == CONNECTION_REQUEST_ID {
        // The server's last word before it closes: a framing error on our side.
        return Err(match decoded {
            Ok(Response::Error { code, message }) => format!("the server closed the connection: {code}: {message}"),
            Ok(other) => format!("the server sent a reply to request 0: {other:?}"),
            Err(error) => format!("the server sent an undecodable connection error: {error}"),
        });
    }
    let sender = shared.lock().waiting.remove(&request_id);
    match decoded {
        Ok(response) => {
            match sender {
                Some(sender) => {
                    let _ = sender.send(Outcome::Reply(response));
                }
                // Its caller timed out and forgot it.
                None => tracing::debug!(request_id, "dropping a reply nobody waits for"),
            }
            Ok(())
        }
        // A reply that does not decode means the stream cannot be trusted
        // (docs/wire.md, "Writing a client"): its request learns why, and the
        // connection ends, which fails (or resends) the others.
        Err(error) => {
            let reason = format!("cannot decode the reply to request {request_id}: {error}");
            if let Some(sender) = sender {
                let _ = sender.send(Outcome::Undecodable(reason.clone()));
            }
            Err(reason)
        }
    }
}
