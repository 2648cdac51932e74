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
use super::conn_timers::{self, ConnTimer, ReactorConns};
use super::reply::{Mailbox, ReplyTo};
use super::worker::Job;
use super::{binary_conn, os, Shared};
use crate::command::{Command, Reply};
use crate::engine::EngineError;
use crate::http::{self, Action, Next};
use crate::limits::{CONNECTION_REQUESTS_PER_PASS_MAX, REPLY_BUDGET_RECHECK_MS};

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
        tokio_uring::spawn(super::liveness::reactor_heartbeat(shared.liveness.clone()));
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
        let replies = binary_conn::Replies::start(&shared.watermark);
        let mailbox = replies.mailbox.clone();
        // This reactor's connections, swept for missed request deadlines and
        // idle timeouts (conn_timers.rs).
        let conns = Rc::new(ReactorConns::default());
        tokio_uring::spawn(conn_timers::sweep_loop(conns.clone(), shared.clone()));
        let binary = tokio_uring::spawn(accept_loop(
            binary_listener,
            shared.clone(),
            Protocol::Binary(replies),
            live.clone(),
            conns.clone(),
        ));
        accept_loop(listener, shared, Protocol::Http(pool.flatten(), mailbox), live.clone(), conns).await;
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
    /// With the reactor's mailbox, through which replies that wait for the
    /// durable watermark come back (`reply.rs`).
    Http(Option<FixedBufPool<Vec<u8>>>, Arc<Mailbox>),
    /// Binary connections register with the reactor's mailbox of replies.
    Binary(Rc<binary_conn::Replies>),
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    protocol: Protocol,
    live: Rc<Cell<usize>>,
    conns: Rc<ReactorConns>,
) {
    let listener = TcpListener::from_std(listener);
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break; // dropping the stream closes it
                }
                // TCP_NODELAY is already on: accepted sockets inherit it from
                // the listener (`os::listen_reuseport`).
                // Past --prune-above-percent the longest-idle connections are
                // closed first (not this one: it is registered after); at
                // --max-connections it is refused unless some are closing.
                let open_before = shared.connections_open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if !shared.conns.admit(open_before) {
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
                let timer = conns.register(&shared.conns, fd);
                live.set(live.get() + 1);
                let (shared, live, protocol, conns) = (shared.clone(), live.clone(), protocol.clone(), conns.clone());
                let stream = Rc::new(stream);
                tokio_uring::spawn(async move {
                    match protocol {
                        Protocol::Http(pool, mailbox) => {
                            serve_connection(&stream, &shared, pool, &timer, &mailbox).await
                        }
                        Protocol::Binary(replies) => {
                            binary_conn::serve_connection(&stream, &shared, &replies, &timer).await
                        }
                    }
                    // Before the socket is closed (when `stream` drops), so no
                    // pruner shuts down a reused descriptor number.
                    conns.unregister(&shared.conns, &timer);
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
        Protocol::Http(..) => http::render_too_many_connections(limit, &mut refusal),
        Protocol::Binary(_) => crate::binary::render_too_many_connections(limit, &mut refusal),
    }
    let (result, _) = stream.write_all(refusal).await;
    if let Err(error) = result {
        tracing::debug!(%error, "could not send the too-many-connections refusal");
    }
    let _ = stream.shutdown(Shutdown::Both);
    tracing::debug!(limit, "refused a connection past --max-connections");
}

/// The connections of this reactor waiting for the server-wide reply budget
/// (`--reply-bytes-max`) to drain, and whether the one task that watches it
/// for them is running.
#[derive(Default)]
struct BudgetWaiters {
    count: Cell<usize>,
    released: Notify,
    wake_watcher: Notify,
    watcher_started: Cell<bool>,
}

thread_local! {
    /// One per reactor thread.
    static BUDGET_WAITERS: Rc<BudgetWaiters> = Rc::default();
}

/// Returns once the server-wide reply budget is no longer spent. The budget
/// drains on every reactor, and the others do not wake this one, so one task
/// per reactor looks every [`REPLY_BUDGET_RECHECK_MS`] while anyone waits,
/// whatever the number of connections waiting (a timer per connection would
/// be thousands of wake-ups per pause under exactly the load that spends the
/// budget). Dropping the future (in a `select!`) is fine.
pub(crate) async fn reply_budget_released(shared: &Arc<Shared>) {
    let waiters = BUDGET_WAITERS.with(Rc::clone);
    if !waiters.watcher_started.replace(true) {
        tokio_uring::spawn(watch_reply_budget(waiters.clone(), shared.clone()));
    }
    // Created before the count is raised: a `notify_waiters` reaches it from
    // its creation on, polled or not.
    let released = waiters.released.notified();
    struct Waiting<'a>(&'a BudgetWaiters);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.count.set(self.0.count.get() - 1);
        }
    }
    waiters.count.set(waiters.count.get() + 1);
    let _waiting = Waiting(&waiters);
    waiters.wake_watcher.notify_one();
    released.await;
}

async fn watch_reply_budget(waiters: Rc<BudgetWaiters>, shared: Arc<Shared>) {
    loop {
        while waiters.count.get() == 0 {
            waiters.wake_watcher.notified().await;
        }
        tokio::time::sleep(Duration::from_millis(REPLY_BUDGET_RECHECK_MS)).await;
        if !shared.reply_budget_spent() {
            waiters.released.notify_waiters();
        }
    }
}

/// What a parsed request is waiting for before its response can be written.
enum Pending {
    Rendered(Vec<u8>),
    Health {
        keep_alive: bool,
    },
    Overloaded {
        keep_alive: bool,
    },
    Recovering {
        keep_alive: bool,
    },
    ShuttingDown,
    Worker {
        reply: oneshot::Receiver<Reply>,
        keep_alive: bool,
        long_poll: bool,
    },
    /// A worker's reply that arrived while this request waited behind others.
    Answered {
        reply: Box<Reply>,
        keep_alive: bool,
        long_poll: bool,
    },
    /// Nobody will answer (the workers stopped).
    Gone,
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
async fn serve_connection(
    stream: &Rc<TcpStream>,
    shared: &Arc<Shared>,
    pool: Option<FixedBufPool<Vec<u8>>>,
    timer: &ConnTimer,
    mailbox: &Arc<Mailbox>,
) {
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
    process(stream, shared, &inbox, &wake_processor, &wake_reader, timer, mailbox).await;
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

/// The processor of one HTTP connection: parses, submits, and answers in
/// request order. It keeps taking requests while earlier ones wait (so a long
/// poll does not hold up reading the requests behind it), within the
/// connection's bounds (docs/connections.md): at most
/// `--connection-requests-in-flight-max` requests taken and not yet answered,
/// at most [`CONNECTION_REQUESTS_PER_PASS_MAX`] per pass before the reactor's
/// other connections have their turn, none while the server-wide reply budget
/// (`--reply-bytes-max`) is spent, and at most `--connection-reply-bytes-max`
/// bytes of responses rendered before they are written. Requests parsed and
/// not yet taken stay parsed; the inbox is parsed again only once they are
/// all taken, so meanwhile it fills and the reader pauses (back-pressure).
async fn process(
    stream: &TcpStream,
    shared: &Arc<Shared>,
    inbox: &RefCell<Inbox>,
    wake: &Notify,
    wake_reader: &Notify,
    timer: &ConnTimer,
    mailbox: &Arc<Mailbox>,
) {
    // Allocated per batch of responses and released after its write: an idle
    // connection holds no output buffer.
    let mut output: Vec<u8> = Vec::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut taken: Vec<Next> = Vec::new();
    let mut parsed: VecDeque<Next> = VecDeque::new();
    // Long polls among `pending` (`--connection-long-polls-max`).
    let mut long_polls = 0usize;
    // No more requests are taken: after `Connection: close`, a fatal error or
    // a `shutting_down` answer.
    let mut close = false;
    // The inbox's length after the last parse: what it holds past that came
    // in while earlier requests were still being taken, and is parsed next
    // (the reader's wake for it may have been spent already).
    let mut unparsed_from = 0usize;
    // Whether this connection holds its timer busy (conn_timers.rs): while
    // requests are taken and not yet answered and written, or parsed and
    // waiting for room (they wait for the server, not the client).
    let mut held = false;
    loop {
        // Whether bytes of an unfinished request remain after a parse pass
        // (None: no pass this time, whole requests are still waiting).
        let mut unfinished = None;
        let ended = {
            let mut inbox = inbox.borrow_mut();
            if parsed.is_empty() && !close {
                http::take_requests(&mut inbox.bytes, &shared.limits, &mut taken);
                parsed.extend(taken.drain(..));
                // An emptied inbox gives its memory back; the next read allocates.
                if inbox.bytes.is_empty() && inbox.bytes.capacity() > 0 {
                    inbox.bytes = Vec::new();
                }
                unparsed_from = inbox.bytes.len();
                // take_requests takes every whole request: what is left is
                // the start of one (its deadline runs, conn_timers.rs).
                unfinished = Some(!inbox.bytes.is_empty());
            }
            inbox.ended
        };
        wake_reader.notify_one();

        let budget_spent = shared.reply_budget_spent();
        let room = if budget_spent {
            0
        } else {
            shared.connection_requests_in_flight_max.saturating_sub(pending.len()).min(CONNECTION_REQUESTS_PER_PASS_MAX)
        };
        let mut took = 0;
        while took < room && !close {
            let Some(next) = parsed.pop_front() else { break };
            took += 1;
            match next {
                Next::Incomplete => {}
                Next::Fatal { response } => {
                    pending.push_back(Pending::Rendered(response));
                    close = true;
                }
                Next::Request { action, keep_alive, consumed: _ } => {
                    close = !keep_alive;
                    let long_polls_full = long_polls >= shared.connection_long_polls_max;
                    let waiting = dispatch(action, keep_alive, shared, mailbox, &mut close, long_polls_full);
                    if matches!(waiting, Pending::Worker { long_poll: true, .. }) {
                        long_polls += 1;
                    }
                    pending.push_back(waiting);
                }
            }
        }
        if close {
            // After a `shutting_down` answer nothing more is submitted.
            parsed.clear();
        }
        timer.hold_while(&mut held, !pending.is_empty() || !parsed.is_empty());
        timer.parsed(took > 0, unfinished.unwrap_or(false));

        // Answer in request order, whatever order the workers finish in, as
        // far as the answers are ready and the connection's budget allows.
        let mut gone = false;
        let mut budget_reached = false;
        while let Some(front) = pending.front_mut() {
            if output.len() >= shared.connection_reply_bytes_max {
                budget_reached = true;
                break;
            }
            let long_poll = match render_ready(front, shared, &mut output) {
                Rendered::NotReady => break,
                Rendered::Done { long_poll } => long_poll,
                Rendered::Gone => {
                    // Peer gone during a long poll, or workers gone while stopping.
                    close = true;
                    gone = true;
                    if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        http::render_shutting_down(&mut output);
                    }
                    break;
                }
            };
            long_polls -= usize::from(long_poll);
            pending.pop_front();
        }
        if !output.is_empty() {
            let batch = std::mem::take(&mut output);
            let bytes = batch.len();
            shared.account_reply_bytes(0, bytes);
            timer.write_begin(); // a peer that does not read is closed (conn_timers::write_late)
            let (result, _) = stream.write_all(batch).await;
            timer.write_end();
            shared.account_reply_bytes(bytes, 0);
            if let Err(error) = result {
                tracing::debug!(%error, "write failed");
                return;
            }
        }
        timer.hold_while(&mut held, !pending.is_empty() || !parsed.is_empty());
        if gone || (pending.is_empty() && parsed.is_empty() && (close || ended)) {
            return;
        }
        if budget_reached {
            continue; // more answers are ready: the write made room for them
        }
        if !parsed.is_empty() && !close && !budget_spent && pending.len() < shared.connection_requests_in_flight_max {
            // More requests wait and may be taken. After a full pass the
            // reactor's other connections take theirs first, so their
            // requests reach the workers between this one's.
            if took > 0 {
                tokio::task::yield_now().await;
            }
            continue;
        }
        if parsed.is_empty() && !close && inbox.borrow().bytes.len() != unparsed_from {
            continue; // input arrived while the parsed requests were taken
        }
        // Nothing to do until an answer arrives or more input does, or (with
        // requests waiting to be taken) the server-wide budget drains.
        let recheck = budget_spent && !parsed.is_empty();
        let recheck_pause = reply_budget_released(shared);
        let answered = match pending.front_mut() {
            Some(Pending::Worker { reply, long_poll, .. }) => {
                if *long_poll && ended && !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    // The peer left during a long poll: abandon it (the dropped
                    // receiver tells the worker not to lease tasks for it).
                    return;
                }
                tokio::select! {
                    result = reply => Some(result.ok()),
                    () = wake.notified() => None,
                    () = recheck_pause, if recheck => None,
                }
            }
            _ => {
                tokio::select! {
                    () = wake.notified() => None,
                    () = recheck_pause, if recheck => None,
                }
            }
        };
        if let Some(answer) = answered {
            if let Some(Pending::Worker { keep_alive, long_poll, .. }) = pending.front() {
                let (keep_alive, long_poll) = (*keep_alive, *long_poll);
                pending[0] = match answer {
                    Some(reply) => Pending::Answered { reply: Box::new(reply), keep_alive, long_poll },
                    None => Pending::Gone,
                };
            }
        }
    }
}

/// What [`render_ready`] did with the oldest request waiting.
enum Rendered {
    /// Its response is in the output.
    Done { long_poll: bool },
    /// Its reply has not arrived yet.
    NotReady,
    /// Nobody will answer it (the workers stopped): close the connection.
    Gone,
}

/// Renders the oldest waiting request's response if it is ready.
fn render_ready(waiting: &mut Pending, shared: &Shared, output: &mut Vec<u8>) -> Rendered {
    match waiting {
        Pending::Rendered(response) => output.extend_from_slice(response),
        Pending::Health { keep_alive } => match shared.health() {
            super::Health::Ready => http::render_health(*keep_alive, output),
            super::Health::Recovering => http::render_health_recovering(*keep_alive, output),
            super::Health::Stalled => http::render_health_stalled(*keep_alive, output),
        },
        Pending::Recovering { keep_alive } => http::render_recovering(*keep_alive, output),
        Pending::Overloaded { keep_alive } => http::render_overloaded(*keep_alive, output),
        Pending::ShuttingDown => http::render_shutting_down(output),
        Pending::Answered { reply, keep_alive, long_poll } => {
            http::render_reply(reply, *keep_alive, output);
            return Rendered::Done { long_poll: *long_poll };
        }
        Pending::Gone => return Rendered::Gone,
        Pending::Worker { reply, keep_alive, long_poll } => {
            return match reply.try_recv() {
                Ok(reply) => {
                    http::render_reply(&reply, *keep_alive, output);
                    Rendered::Done { long_poll: *long_poll }
                }
                Err(oneshot::error::TryRecvError::Empty) => Rendered::NotReady,
                Err(oneshot::error::TryRecvError::Closed) => Rendered::Gone,
            };
        }
    }
    Rendered::Done { long_poll: false }
}

/// Hands an executable request to the workers, or answers it at once.
/// `long_polls_full`: the connection holds `--connection-long-polls-max` long
/// polls, so another is refused at once.
fn dispatch(
    action: Action,
    keep_alive: bool,
    shared: &Shared,
    mailbox: &Arc<Mailbox>,
    close: &mut bool,
    long_polls_full: bool,
) -> Pending {
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
            if long_poll && long_polls_full {
                // One client must not hold all of the workers' long-poll slots.
                let limit = shared.connection_long_polls_max;
                let error = EngineError::CapacityExceeded { what: "long polls on this connection", limit };
                let mut response = Vec::new();
                http::render_reply(&Reply::Error(error), keep_alive, &mut response);
                return Pending::Rendered(response);
            }
            let (sender, receiver) = oneshot::channel();
            let reply = ReplyTo::Task { sender, mailbox: mailbox.clone() };
            match shared.submit(Box::new(Job { command, reply })) {
                Ok(()) => Pending::Worker { reply: receiver, keep_alive, long_poll },
                Err(_) => Pending::Overloaded { keep_alive },
            }
        }
    }
}
