//! A reactor thread: one tokio-uring runtime (one io_uring ring) that accepts on
//! its own SO_REUSEPORT listeners, one per protocol, reads and parses requests,
//! hands commands to the workers, and writes replies: in request order on an
//! HTTP connection (below), as soon as each is ready on a binary one
//! (`binary_conn.rs`).
//!
//! Rules that keep io_uring safe here (measured pitfalls of tokio-uring 0.5):
//! - Each connection has exactly one read in flight at a time, and no read or
//!   accept future is ever dropped before it completes (a dropped read stays in
//!   the kernel and swallows the peer's next bytes; a dropped accept leaks a
//!   descriptor). Stopping is done by shutting sockets down for reading, which
//!   completes the pending operation with end-of-stream.
//! - Rings are built with COOP_TASKRUN and SINGLE_ISSUER (+20-40 % measured on
//!   this machine kind), never DEFER_TASKRUN (tokio-uring 0.5 never asks the
//!   kernel for deferred completions, and the loop hangs).
//!
//! A connection's receive buffer is bounded: `http::take_requests` refuses a head
//! longer than `head_bytes_max` and a body longer than `body_bytes_max`, so the
//! buffer never holds more than one maximal request plus one read.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tokio_uring::buf::fixed::FixedBufPool;
use tokio_uring::net::{TcpListener, TcpStream};

use super::buffers::{next_read_bytes, read_buffer, READ_BYTES_MIN};
use super::reply::ReplyTo;
use super::worker::Job;
use super::{binary_conn, os, Shared};
use crate::command::{Command, Reply};
use crate::http::{self, Action, Next};

/// Submission queue entries per ring (the completion queue gets twice as many).
const RING_ENTRIES_COUNT: u32 = 1024;
/// Size of each registered receive buffer (`--fixed-buffers`).
const FIXED_BUFFER_BYTES: usize = 16 << 10;
/// How long a stopping reactor waits for its connections to finish their requests.
const STOP_GRACE_MS: u64 = 10_000;
/// Pause after a failed accept (for example EMFILE) so the loop does not spin.
const ACCEPT_RETRY_PAUSE_MS: u64 = 10;

/// Builds the ring with the flags this design depends on, set explicitly.
fn runtime() -> io::Result<tokio_uring::Runtime> {
    let mut uring = tokio_uring::uring_builder();
    uring.setup_coop_taskrun().setup_single_issuer();
    let mut builder = tokio_uring::builder();
    builder.entries(RING_ENTRIES_COUNT).uring_builder(&uring);
    match tokio_uring::Runtime::new(&builder) {
        Ok(runtime) => Ok(runtime),
        Err(error) => {
            // Kernels before 6.0 reject SINGLE_ISSUER with EINVAL: try plain
            // flags before declaring io_uring unavailable.
            let mut plain = tokio_uring::builder();
            plain.entries(RING_ENTRIES_COUNT);
            tokio_uring::Runtime::new(&plain).map_err(|_| error)
        }
    }
}

pub(crate) fn run(
    listener: std::net::TcpListener,
    binary_listener: std::net::TcpListener,
    shared: Arc<Shared>,
    core: Option<usize>,
    fixed_buffers_count: usize,
    started: Sender<io::Result<()>>,
) {
    if let Some(core) = core {
        if let Err(error) = os::pin_current_thread(core) {
            tracing::warn!(%error, core, "could not pin reactor thread");
        }
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    let _ = started.send(Ok(()));
    runtime.block_on(async move {
        let pool = (fixed_buffers_count > 0).then(|| {
            // Created with `with_capacity`: a cloned Vec loses its capacity and the
            // kernel rejects it (measured). Registered before any I/O on the ring.
            let pool = FixedBufPool::new((0..fixed_buffers_count).map(|_| Vec::with_capacity(FIXED_BUFFER_BYTES)));
            match pool.register() {
                Ok(()) => Some(pool),
                Err(error) => {
                    tracing::warn!(%error, "could not register fixed buffers; reading into ordinary ones");
                    None
                }
            }
        });
        // Both protocols' connections count as live: the reactor exits once all
        // have finished (or the grace period is over).
        let live = Rc::new(Cell::new(0usize));
        let replies = binary_conn::Replies::start();
        let binary =
            tokio_uring::spawn(accept_loop(binary_listener, shared.clone(), Protocol::Binary(replies), live.clone()));
        accept_loop(listener, shared, Protocol::Http(pool.flatten()), live.clone()).await;
        let _ = binary.await;
        let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        while live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// What a listener's connections speak. Registered receive buffers
/// (`--fixed-buffers`) serve HTTP reads only: a binary connection reads into
/// its frame buffer (see `binary_conn.rs`).
#[derive(Clone)]
enum Protocol {
    Http(Option<FixedBufPool<Vec<u8>>>),
    /// Binary connections register with the reactor's mailbox of replies.
    Binary(Rc<binary_conn::Replies>),
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>, protocol: Protocol, live: Rc<Cell<usize>>) {
    let listener = TcpListener::from_std(listener);
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break; // dropping the stream closes it
                }
                // TCP_NODELAY is already on: accepted sockets inherit it from
                // the listener (`os::listen_reuseport`).
                if shared.connections_open.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= shared.connections_max {
                    shared.connections_open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    live.set(live.get() + 1);
                    let (shared, live, protocol) = (shared.clone(), live.clone(), protocol.clone());
                    tokio_uring::spawn(async move {
                        refuse(stream, &protocol, shared.connections_max).await;
                        live.set(live.get() - 1);
                    });
                    continue;
                }
                let fd = stream.as_raw_fd();
                shared.track_socket(fd);
                live.set(live.get() + 1);
                let (shared, live, protocol) = (shared.clone(), live.clone(), protocol.clone());
                let stream = Rc::new(stream);
                tokio_uring::spawn(async move {
                    match protocol {
                        Protocol::Http(pool) => serve_connection(&stream, &shared, pool).await,
                        Protocol::Binary(replies) => binary_conn::serve_connection(&stream, &shared, &replies).await,
                    }
                    shared.untrack_socket(fd);
                    shared.connections_open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    live.set(live.get() - 1);
                });
            }
            Err(error) => {
                if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
            }
        }
    }
    shared.untrack_socket(listener.as_raw_fd());
}

/// Answers a connection past `--max-connections` with one `overloaded`
/// refusal in its protocol, then closes it, as Redis does past `maxclients`.
/// Nothing is read: a client that already sent a request may see the close
/// (a reset) before the refusal.
async fn refuse(stream: TcpStream, protocol: &Protocol, limit: usize) {
    let mut refusal = Vec::new();
    match protocol {
        Protocol::Http(_) => http::render_too_many_connections(limit, &mut refusal),
        Protocol::Binary(_) => crate::binary::render_too_many_connections(limit, &mut refusal),
    }
    let (result, _) = stream.write_all(refusal).await;
    if let Err(error) = result {
        tracing::debug!(%error, "could not send the too-many-connections refusal");
    }
    let _ = stream.shutdown(Shutdown::Both);
    tracing::debug!(limit, "refused a connection past --max-connections");
}

/// What a parsed request is waiting for before its response can be written.
enum Pending {
    Rendered(Vec<u8>),
    Health { keep_alive: bool },
    Overloaded { keep_alive: bool },
    Recovering { keep_alive: bool },
    ShuttingDown,
    Worker { reply: oneshot::Receiver<Reply>, keep_alive: bool, long_poll: bool },
}

/// Bytes the reader has received and the processor has not yet consumed, and
/// whether the peer's side has ended.
#[derive(Default)]
struct Inbox {
    bytes: Vec<u8>,
    ended: bool,
}

/// One connection = two tasks sharing the socket: a reader that always has
/// exactly one read in flight (so the end of the peer's stream is seen even while
/// a long poll waits, and no read is ever dropped half-way), and the processor
/// below, which parses, submits, awaits replies in order and writes.
async fn serve_connection(stream: &Rc<TcpStream>, shared: &Shared, pool: Option<FixedBufPool<Vec<u8>>>) {
    let inbox = Rc::new(RefCell::new(Inbox::default()));
    let wake_processor = Rc::new(Notify::new());
    let wake_reader = Rc::new(Notify::new());
    // The reader stops reading while this much is buffered, so a client that
    // pipelines without reading replies cannot grow the buffer without bound.
    let buffered_bytes_max = shared.limits.head_bytes_max + shared.limits.body_bytes_max;
    let reader = tokio_uring::spawn(read_loop(
        stream.clone(),
        pool,
        inbox.clone(),
        wake_processor.clone(),
        wake_reader.clone(),
        buffered_bytes_max,
        shared.read_bytes_max,
    ));
    process(stream, shared, &inbox, &wake_processor, &wake_reader).await;
    // Ends the reader: a pending read completes with end-of-stream once the socket
    // is shut down, and a reader paused on a full inbox sees `ended`. Then waits
    // for it, so the socket is never dropped with a read in flight. `ended`
    // already set means the reader saw the peer's end of stream and returned:
    // nothing is in flight, and the close that follows sends our FIN, so the
    // `shutdown` system call is skipped.
    let reader_done = std::mem::replace(&mut inbox.borrow_mut().ended, true);
    if !reader_done {
        let _ = stream.shutdown(Shutdown::Both);
        wake_reader.notify_one();
    }
    let _ = reader.await;
}

async fn read_loop(
    stream: Rc<TcpStream>,
    pool: Option<FixedBufPool<Vec<u8>>>,
    inbox: Rc<RefCell<Inbox>>,
    wake_processor: Rc<Notify>,
    wake_reader: Rc<Notify>,
    buffered_bytes_max: usize,
    read_bytes_max: usize,
) {
    // Sized by what arrives, so an idle connection pins little (buffers.rs).
    let mut read_bytes = READ_BYTES_MIN;
    let mut chunk: Vec<u8> = Vec::with_capacity(read_bytes);
    loop {
        while inbox.borrow().bytes.len() >= buffered_bytes_max {
            wake_reader.notified().await;
            if inbox.borrow().ended {
                return;
            }
        }
        let fixed = pool.as_ref().and_then(|pool| pool.try_next(FIXED_BUFFER_BYTES));
        let result = match fixed {
            Some(buffer) => {
                // A registered buffer: the kernel skips mapping it per read. Its
                // bytes are copied to the inbox and it goes back to the pool.
                let (result, buffer) = stream.read_fixed(buffer).await;
                chunk.clear();
                chunk.extend_from_slice(&buffer[..]);
                result
            }
            None => {
                let (result, buffer) = stream.read(read_buffer(chunk, read_bytes)).await;
                chunk = buffer;
                read_bytes = next_read_bytes(read_bytes, chunk.len(), read_bytes_max);
                result
            }
        };
        let ended = match result {
            Ok(0) => true, // end of stream: the peer closed, or the socket was shut down
            Ok(_) => false,
            Err(error) => {
                // A client resetting its connection is normal, not worth a warning.
                tracing::debug!(%error, "read failed");
                true
            }
        };
        {
            let mut inbox = inbox.borrow_mut();
            inbox.bytes.extend_from_slice(&chunk);
            inbox.ended |= ended;
        }
        wake_processor.notify_one();
        if ended {
            return;
        }
    }
}

async fn process(stream: &TcpStream, shared: &Shared, inbox: &RefCell<Inbox>, wake: &Notify, wake_reader: &Notify) {
    // Allocated per batch of responses and released after its write: an idle
    // connection holds no output buffer.
    let mut output: Vec<u8> = Vec::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut parsed: Vec<Next> = Vec::new();
    loop {
        let mut close = false;
        let ended = {
            let mut inbox = inbox.borrow_mut();
            http::take_requests(&mut inbox.bytes, &shared.limits, &mut parsed);
            // An emptied inbox gives its memory back; the next read allocates.
            if inbox.bytes.is_empty() && inbox.bytes.capacity() > 0 {
                inbox.bytes = Vec::new();
            }
            inbox.ended
        };
        for next in parsed.drain(..) {
            if close {
                // After a `shutting_down` answer nothing more is submitted.
                break;
            }
            match next {
                Next::Incomplete => {}
                Next::Fatal { response } => {
                    pending.push_back(Pending::Rendered(response));
                    close = true;
                }
                Next::Request { action, keep_alive, consumed: _ } => {
                    close = !keep_alive;
                    pending.push_back(dispatch(action, keep_alive, shared, &mut close));
                }
            }
        }
        wake_reader.notify_one();
        if pending.is_empty() {
            if ended || close {
                return;
            }
            wake.notified().await;
            continue;
        }

        // Answer in request order, whatever order the workers finish in.
        for waiting in pending.drain(..) {
            match waiting {
                Pending::Rendered(response) => output.extend_from_slice(&response),
                Pending::Health { keep_alive } if shared.recovered.load(std::sync::atomic::Ordering::Acquire) => {
                    http::render_health(keep_alive, &mut output)
                }
                Pending::Health { keep_alive } => http::render_health_recovering(keep_alive, &mut output),
                Pending::Recovering { keep_alive } => http::render_recovering(keep_alive, &mut output),
                Pending::Overloaded { keep_alive } => http::render_overloaded(keep_alive, &mut output),
                Pending::ShuttingDown => http::render_shutting_down(&mut output),
                Pending::Worker { reply, keep_alive, long_poll } => {
                    match await_reply(reply, long_poll, inbox, wake, shared).await {
                        Some(reply) => http::render_reply(&reply, keep_alive, &mut output),
                        None => {
                            // Peer gone during a long poll, or workers gone while stopping.
                            close = true;
                            if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                                http::render_shutting_down(&mut output);
                            }
                            break;
                        }
                    }
                }
            }
        }
        pending.clear();
        if !output.is_empty() {
            let (result, _) = stream.write_all(std::mem::take(&mut output)).await;
            if let Err(error) = result {
                tracing::debug!(%error, "write failed");
                return;
            }
        }
        if close {
            return;
        }
    }
}

/// Hands an executable request to the workers, or answers it at once.
fn dispatch(action: Action, keep_alive: bool, shared: &Shared, close: &mut bool) -> Pending {
    match action {
        Action::Respond(response) => Pending::Rendered(response),
        Action::Health => Pending::Health { keep_alive },
        Action::Execute(_) if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) => {
            *close = true;
            Pending::ShuttingDown
        }
        Action::Execute(_) if !shared.recovered.load(std::sync::atomic::Ordering::Acquire) => {
            Pending::Recovering { keep_alive }
        }
        Action::Execute(command) => {
            let long_poll = matches!(command, Command::Dequeue { wait_ms, .. } if wait_ms > 0);
            let (reply, receiver) = oneshot::channel();
            match shared.submit(Box::new(Job { command, reply: ReplyTo::Task(reply) })) {
                Ok(()) => Pending::Worker { reply: receiver, keep_alive, long_poll },
                Err(_) => Pending::Overloaded { keep_alive },
            }
        }
    }
}

/// Waits for a worker's reply. A long poll is abandoned (`None`, and the dropped
/// receiver tells the worker not to lease tasks for it) when the peer's stream
/// ends while it waits, unless the server is stopping (then the worker answers it).
async fn await_reply(
    mut reply: oneshot::Receiver<Reply>,
    long_poll: bool,
    inbox: &RefCell<Inbox>,
    wake: &Notify,
    shared: &Shared,
) -> Option<Reply> {
    if !long_poll {
        return reply.await.ok();
    }
    loop {
        let peer_gone = inbox.borrow().ended && !shared.stopping.load(std::sync::atomic::Ordering::SeqCst);
        if peer_gone {
            return None;
        }
        tokio::select! {
            result = &mut reply => return result.ok(),
            () = wake.notified() => {}
        }
    }
}
