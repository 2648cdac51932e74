//! One HTTP/1.1 connection on a reactor: a reader task and a processor task
//! sharing the socket (docs/http-api.md, docs/connections.md).
//!
//! A connection's receive buffer is bounded: `http::take_requests` refuses a head
//! longer than `head_bytes_max` and a body longer than `body_bytes_max`, so the
//! buffer never holds more than one maximal request plus one read.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{oneshot, Notify};
use tokio_uring::buf::fixed::FixedBufPool;

use super::buffers::{next_read_bytes, read_buffer, READ_BYTES_MIN};
use super::conn_timers::ConnTimer;
use super::outbox::{Mailbox, ReplyTo};
use super::reactor::{reply_budget_released, FIXED_BUFFER_BYTES};
use super::stats;
use super::tls::Stream;
use super::tokens::TokenView;
use super::worker::{self, Job};
use super::Shared;
use crate::auth::Grant;
use crate::command::{Command, Reply};
use crate::engine::EngineError;
use crate::http::{self, Action, Next, StatsFormat};
use crate::limits::CONNECTION_REQUESTS_PER_PASS_MAX;
use crate::metrics::{self, Protocol, ReactorMetrics, OP_HEALTHZ, OP_METRICS, OP_OTHER, OP_UI};
use tqx_wire::{ErrorCode, Opcode};

/// What a parsed request is waiting for before its response can be written.
enum Pending {
    Rendered(Vec<u8>),
    /// `head_only`: a `HEAD /healthz` (the status and headers, no body).
    Health {
        keep_alive: bool,
        head_only: bool,
    },
    Overloaded {
        keep_alive: bool,
    },
    Recovering {
        keep_alive: bool,
    },
    ShuttingDown,
    /// `op`: its operation slot (`crate::metrics`; `OP_METRICS` and the
    /// `stats` opcode's slot render the statistics); `taken_us`: when the
    /// connection took it (`stats::LatencyClock`, 0 with metrics off).
    Worker {
        reply: oneshot::Receiver<Reply>,
        keep_alive: bool,
        long_poll: bool,
        op: u8,
        taken_us: u32,
    },
    /// The executor's reply that arrived while this request waited behind others.
    Answered {
        reply: Box<Reply>,
        keep_alive: bool,
        long_poll: bool,
        op: u8,
        taken_us: u32,
    },
    /// Nobody will answer (the server stopped before executing it).
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
pub(crate) async fn serve_connection(
    stream: &Rc<Stream>,
    shared: &Arc<Shared>,
    pool: Option<FixedBufPool<Vec<u8>>>,
    timer: &ConnTimer,
    mailbox: &Arc<Mailbox>,
    metrics: &ReactorMetrics,
) {
    // TLS: the handshake first, so a client certificate is known before the first request (tls.rs).
    if stream.handshake().await.is_err() {
        return;
    }
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
    process(stream, shared, &inbox, &wake_processor, &wake_reader, timer, mailbox, metrics).await;
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
    stream: Rc<Stream>,
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
        // Registered buffers serve plain reads only (TLS reads ciphertext
        // into its own buffer).
        let fixed = match (stream.plain(), pool.as_ref()) {
            (Some(socket), Some(pool)) => pool.try_next(FIXED_BUFFER_BYTES).map(|buffer| (socket, buffer)),
            _ => None,
        };
        let result = match fixed {
            Some((socket, buffer)) => {
                // A registered buffer: the kernel skips mapping it per read. Its
                // bytes are copied to the inbox and it goes back to the pool.
                let (result, buffer) = socket.read_fixed(buffer).await;
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
#[allow(clippy::too_many_arguments)]
async fn process(
    stream: &Stream,
    shared: &Arc<Shared>,
    inbox: &RefCell<Inbox>,
    wake: &Notify,
    wake_reader: &Notify,
    timer: &ConnTimer,
    mailbox: &Arc<Mailbox>,
    metrics: &ReactorMetrics,
) {
    // Allocated per batch of responses and released after its write: an idle
    // connection holds no output buffer.
    let mut output: Vec<u8> = Vec::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut taken: Vec<Next> = Vec::new();
    let mut parsed: VecDeque<Next> = VecDeque::new();
    // Long polls among `pending` (`--connection-long-polls-max`).
    let mut long_polls = 0usize;
    // With `--tokens`: the table in force and this connection's token or client certificate (auth.rs).
    let mut tokens = TokenView::new(shared.tokens.as_ref());
    let mut session = tokens.session(stream.client_certificate());
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
        // One clock reading for the requests taken in this pass (their latency starts here).
        let taken_us =
            if room > 0 && !parsed.is_empty() && metrics.enabled { shared.metrics.clock.now_us() } else { 0 };
        while took < room && !close {
            let Some(next) = parsed.pop_front() else { break };
            took += 1;
            match next {
                Next::Incomplete => {}
                Next::Fatal { response } => {
                    metrics.answered(Protocol::Http, OP_OTHER, metrics::outcome_of_http_response(&response));
                    pending.push_back(Pending::Rendered(response));
                    close = true;
                }
                Next::Request { action, keep_alive, consumed: _, credential } => {
                    close = !keep_alive;
                    let long_polls_full = long_polls >= shared.connection_long_polls_max;
                    // Without tokens the action goes straight to `dispatch`:
                    // passed through a tuple, it was copied twice more per
                    // request (callgrind, issue 18).
                    let waiting = match tokens.tokens() {
                        None => {
                            let measure = (metrics, taken_us);
                            dispatch(action, keep_alive, shared, mailbox, &mut close, long_polls_full, None, measure)
                        }
                        Some(table) => {
                            let checked = http::authorize(action, &credential, keep_alive, table, &mut session);
                            close |= checked.close;
                            let grant = checked.grant;
                            let measure = (metrics, taken_us);
                            dispatch(
                                checked.action,
                                keep_alive,
                                shared,
                                mailbox,
                                &mut close,
                                long_polls_full,
                                grant,
                                measure,
                            )
                        }
                    };
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

        // Answer in request order, whatever order their replies are released in, as
        // far as the answers are ready and the connection's budget allows.
        let mut gone = false;
        let mut budget_reached = false;
        // Read once for the replies rendered in this pass, at the first.
        let mut now_us = None;
        while let Some(front) = pending.front_mut() {
            if output.len() >= shared.connection_reply_bytes_max {
                budget_reached = true;
                break;
            }
            let long_poll = match render_ready(front, shared, &mut output, metrics, &mut now_us) {
                Rendered::NotReady => break,
                Rendered::Done { long_poll } => long_poll,
                Rendered::Gone => {
                    // Peer gone during a long poll, or dropped unexecuted while stopping.
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
            // requests reach the executor between this one's.
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
                    // receiver tells the executor not to lease tasks for it).
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
            if let Some(&Pending::Worker { keep_alive, long_poll, op, taken_us, .. }) = pending.front() {
                pending[0] = match answer {
                    Some(reply) => Pending::Answered { reply: Box::new(reply), keep_alive, long_poll, op, taken_us },
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
    /// Nobody will answer it (the server stopped before executing it): close the connection.
    Gone,
}

/// Renders the oldest waiting request's response if it is ready, counting
/// and timing an executed one (`now_us`: the clock as read at the first
/// reply of this pass).
fn render_ready(
    waiting: &mut Pending,
    shared: &Shared,
    output: &mut Vec<u8>,
    metrics: &ReactorMetrics,
    now_us: &mut Option<u32>,
) -> Rendered {
    match waiting {
        Pending::Rendered(response) => output.extend_from_slice(response),
        Pending::Health { keep_alive, head_only } => {
            let start = output.len();
            match shared.health() {
                super::Health::Ready => http::render_health(*keep_alive, output),
                super::Health::Recovering => http::render_health_recovering(*keep_alive, output),
                super::Health::Stalled => http::render_health_stalled(*keep_alive, output),
            }
            if *head_only {
                http::strip_body(output, start);
            }
        }
        Pending::Recovering { keep_alive } => http::render_recovering(*keep_alive, output),
        Pending::Overloaded { keep_alive } => http::render_overloaded(*keep_alive, output),
        Pending::ShuttingDown => http::render_shutting_down(output),
        Pending::Answered { reply, keep_alive, long_poll, op, taken_us } => {
            render_executed(reply, *keep_alive, usize::from(*op), *taken_us, shared, output, metrics, now_us);
            return Rendered::Done { long_poll: *long_poll };
        }
        Pending::Gone => return Rendered::Gone,
        Pending::Worker { reply, keep_alive, long_poll, op, taken_us } => {
            return match reply.try_recv() {
                Ok(reply) => {
                    render_executed(&reply, *keep_alive, usize::from(*op), *taken_us, shared, output, metrics, now_us);
                    Rendered::Done { long_poll: *long_poll }
                }
                Err(oneshot::error::TryRecvError::Empty) => Rendered::NotReady,
                Err(oneshot::error::TryRecvError::Closed) => Rendered::Gone,
            };
        }
    }
    Rendered::Done { long_poll: false }
}

/// Renders an executed request's reply (the statistics for `GET /metrics`
/// and `GET /v1/stats`), counted and timed.
#[allow(clippy::too_many_arguments)]
fn render_executed(
    reply: &Reply,
    keep_alive: bool,
    op: usize,
    taken_us: u32,
    shared: &Shared,
    output: &mut Vec<u8>,
    metrics: &ReactorMetrics,
    now_us: &mut Option<u32>,
) {
    if metrics.enabled {
        let now_us = *now_us.get_or_insert_with(|| shared.metrics.clock.now_us());
        metrics.executed(Protocol::Http, op, stats::reply_outcome(reply), now_us.wrapping_sub(taken_us));
    }
    match (reply, stats_format(op)) {
        (Reply::Queues(queues), Some(format)) => stats::render_http(shared, format, queues, keep_alive, output),
        _ => http::render_reply(reply, keep_alive, output),
    }
}

/// The statistics format an operation slot renders, if it is one of them.
fn stats_format(op: usize) -> Option<StatsFormat> {
    if op == OP_METRICS {
        Some(StatsFormat::Prometheus)
    } else if op == metrics::op_of_opcode(Opcode::Stats as u8) {
        Some(StatsFormat::Json)
    } else {
        None
    }
}

/// Queues an executable request for execution on this reactor (after the
/// current pass: `worker::execute_soon`), or answers it at once.
/// `long_polls_full`: the connection holds `--connection-long-polls-max` long
/// polls, so another is refused at once. Requests answered here are
/// counted (`metrics`); executed ones carry `taken_us` to their reply.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    action: Action,
    keep_alive: bool,
    shared: &Arc<Shared>,
    mailbox: &Arc<Mailbox>,
    close: &mut bool,
    long_polls_full: bool,
    grant: Option<Arc<Grant>>,
    (metrics, taken_us): (&ReactorMetrics, u32),
) -> Pending {
    let (command, op) = match action {
        Action::Respond(response) => {
            metrics.answered(Protocol::Http, OP_OTHER, metrics::outcome_of_http_response(&response));
            return Pending::Rendered(response);
        }
        Action::Health { head_only } => {
            metrics.answered(Protocol::Http, OP_HEALTHZ, 0);
            return Pending::Health { keep_alive, head_only };
        }
        // The engine's part of the statistics: the queue list (stats.rs).
        Action::Stats(StatsFormat::Prometheus) => (Command::ListQueues, OP_METRICS),
        Action::Stats(StatsFormat::Json) => (Command::ListQueues, metrics::op_of_opcode(Opcode::Stats as u8)),
        Action::Execute(command) => {
            let op = metrics::op_of_opcode(crate::binary::command_opcode(&command) as u8);
            (command, op)
        }
        Action::Ui(response) => {
            metrics.answered(Protocol::Http, OP_UI, metrics::outcome_of_http_response(&response));
            return Pending::Rendered(response);
        }
    };
    let refused = |code: ErrorCode| metrics.answered(Protocol::Http, op, metrics::outcome_of_code(code));
    if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        *close = true;
        refused(ErrorCode::ShuttingDown);
        return Pending::ShuttingDown;
    }
    if !shared.recovered.load(std::sync::atomic::Ordering::Acquire) {
        refused(ErrorCode::Recovering);
        return Pending::Recovering { keep_alive };
    }
    let long_poll = matches!(command, Command::Dequeue { wait_ms, .. } if wait_ms > 0);
    if long_poll && long_polls_full {
        // One client must not hold all of the executor's long-poll slots.
        let limit = shared.connection_long_polls_max;
        let error = EngineError::CapacityExceeded { what: "long polls on this connection", limit };
        let mut response = Vec::new();
        http::render_reply(&Reply::Error(error), keep_alive, &mut response);
        refused(ErrorCode::CapacityExceeded);
        return Pending::Rendered(response);
    }
    let (sender, receiver) = oneshot::channel();
    let reply = ReplyTo::Task { sender, mailbox: mailbox.clone() };
    match shared.submit(Box::new(Job { command, received: None, reply, grant })) {
        Ok(()) => {
            worker::execute_soon(shared);
            Pending::Worker { reply: receiver, keep_alive, long_poll, op: op as u8, taken_us }
        }
        Err(_) => {
            refused(ErrorCode::Overloaded);
            Pending::Overloaded { keep_alive }
        }
    }
}
