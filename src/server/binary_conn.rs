//! One binary-protocol connection on a reactor (docs/wire.md; the protocol
//! step is the pure `crate::binary::take_frames`).
//!
//! Three kinds of task share the socket and a [`Conn`]:
//!
//! - the **reader** always has exactly one read in flight (as on HTTP
//!   connections, and for the same reasons: the end of the peer's stream is
//!   seen even while requests wait, and no read is ever dropped half-way). It
//!   appends what it reads to the inbox, a `BytesMut` that frames are split off
//!   without a copy, and pauses while the inbox holds a maximal frame;
//! - the **processor** (the connection's own task) takes whole frames off the
//!   inbox, answers what needs no execution at once (hello, ping, errors,
//!   `overloaded`, `recovering`, `shutting_down`), and queues commands for execution (the reactor executes them after the pass:
//!   `worker::execute_soon`). Their replies come back through the reactor's mailbox
//!   ([`Replies`], `outbox.rs`), whose one task encodes each into its
//!   connection's output; only a long poll gets a task of its own, which
//!   awaits its reply and watches for the peer leaving. It takes no new frame
//!   while `--connection-requests-in-flight-max` requests are in flight, or
//!   `--connection-reply-bytes-max` reply bytes wait for the peer to read them,
//!   or all connections together hold `--reply-bytes-max` (back-pressure,
//!   docs/connections.md): a client that pipelines without reading cannot
//!   grow the server's memory. It takes at most
//!   [`CONNECTION_REQUESTS_PER_PASS_MAX`] frames before letting the reactor's
//!   other connections take theirs (fairness). Reads themselves pause only on
//!   a full inbox, not on the in-flight count: a reader paused while long
//!   polls wait would not see their client leave, and abandoned polls would
//!   lease tasks nobody receives;
//! - **answers** to requests in flight (from the mailbox or a long poll's
//!   task) are parked unencoded and encoded into the output only while the
//!   encoded output is under `--connection-reply-bytes-max` (at least one
//!   when it is empty). A parked reply shares a large payload with the engine
//!   rather than copying it, so a thousand answers to `get_task` of a 1 MiB
//!   task cost a thousand small structs, not a GiB of encoded frames;
//! - the **writer** writes whatever replies have accumulated in one write,
//!   so replies that finish together leave together, and encodes parked
//!   answers as each write drains the output.
//!
//! Replies leave in the order they are ready, not the order of the requests;
//! each carries its request's id. A long poll is abandoned when the peer's
//! stream ends (its dropped receiver tells the executor not to lease for it),
//! unless the server is stopping, when the executor answers it. At stop (and at
//! the end of the peer's stream) the frames already received are answered,
//! every request in flight is answered and written, then the connection closes.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::Shutdown;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use slab::Slab;
use tokio::sync::{oneshot, Notify};
use tqx_wire::{ErrorCode, Opcode, HEADER_BYTES};

use super::buffers::{next_read_bytes, read_buffer, READ_BYTES_MIN};
use super::conn_timers::ConnTimer;
use super::outbox::{self, reply_bytes_estimate, ConnKey, Delivery, Mailbox, MailboxReply, ReplyTo, Target};
use super::reactor::reply_budget_released;
use super::stats::{self, LatencyClock};
use super::tls::Stream;
use super::tokens::TokenView;
use super::worker::{self, Job};
use super::Shared;
use crate::auth::CertificateFingerprint;
use crate::binary::{self, BinaryNext, ConnState};
use crate::command::Reply;
use crate::core::executor::Received;
use crate::engine::EngineError;
use crate::limits::CONNECTION_REQUESTS_PER_PASS_MAX;
use crate::metrics::{self, Protocol, ReactorMetrics};
/// An output buffer that grew past this (a large reply) is released after
/// its write rather than kept for the life of the connection.
const OUTPUT_BYTES_KEPT_MAX: usize = 1 << 20;

/// What the tasks of one connection share (all on the reactor's thread).
struct Conn {
    /// Received bytes not yet taken as frames.
    inbox: RefCell<BytesMut>,
    /// The peer's stream has ended (or the socket was shut down, or a read failed).
    ended: Cell<bool>,
    /// Requests queued or executing whose replies are not yet encoded (parked
    /// answers included).
    in_flight: Cell<usize>,
    /// Long polls among them (`--connection-long-polls-max`).
    long_polls: Cell<usize>,
    /// Answers not yet encoded, oldest first (see the module comment).
    parked: RefCell<VecDeque<Answer>>,
    /// Their estimated encoded size (`reply_bytes_estimate`).
    parked_bytes: Cell<usize>,
    /// What this connection counts now in `Shared::reply_bytes_pending`: its
    /// encoded output, not the parked answers (they share large payloads
    /// with the engine; counting their estimate server-wide would let one
    /// connection with a thousand parked answers stop every other).
    accounted_bytes: Cell<usize>,
    /// The connection is over: answers still arriving are dropped.
    finished: Cell<bool>,
    shared: Arc<Shared>,
    /// Encoded replies the writer has not taken yet.
    output: RefCell<Vec<u8>>,
    /// Bytes of the write in flight.
    writing_bytes: Cell<usize>,
    write_failed: Cell<bool>,
    /// The processor is done: the writer exits once every request in flight is
    /// answered and written, and the reader stops at its next pause.
    closing: Cell<bool>,
    wake_processor: Notify,
    wake_reader: Notify,
    wake_writer: Notify,
    /// Woken (`notify_waiters`) when the peer's stream ends, for long polls.
    peer_gone: Notify,
    /// Held while requests are in flight or a write is: the request deadline,
    /// the idle timeout and pruning leave a busy connection alone (conn_timers.rs).
    timer: Rc<ConnTimer>,
    /// The reactor's request counts and latencies (`crate::metrics`).
    metrics: Arc<ReactorMetrics>,
}

/// An answer to a request in flight, waiting to be encoded.
struct Answer {
    opcode: u8,
    request_id: u64,
    /// `None`: the request was dropped unexecuted (the server stopped).
    reply: Option<Reply>,
    bytes: usize,
}

impl Conn {
    fn output_pending_bytes(&self) -> usize {
        self.output.borrow().len() + self.writing_bytes.get()
    }

    /// Reply bytes waiting for the peer: encoded and unwritten, or parked.
    fn reply_bytes_pending(&self) -> usize {
        self.output_pending_bytes() + self.parked_bytes.get()
    }

    /// Brings the server-wide count of waiting reply bytes in step with this
    /// connection's.
    fn account(&self) {
        let now = if self.finished.get() { 0 } else { self.output_pending_bytes() };
        self.shared.account_reply_bytes(self.accounted_bytes.replace(now), now);
    }

    /// The answer to a request in flight: parked, then encoded as far as the
    /// connection's reply budget allows. Counted and timed: the connection
    /// took it at `taken_us`, and it is answered at `now_us`
    /// (`stats::LatencyClock`; 0 with metrics off).
    fn answer(&self, opcode: u8, request_id: u64, reply: Option<Reply>, taken_us: u32, now_us: u32) {
        if self.metrics.enabled {
            let outcome =
                reply.as_ref().map_or(metrics::outcome_of_code(ErrorCode::ShuttingDown), stats::reply_outcome);
            self.metrics.executed(
                Protocol::Binary,
                metrics::op_of_opcode(opcode),
                outcome,
                now_us.wrapping_sub(taken_us),
            );
        }
        if self.finished.get() {
            return; // nobody left to send it to
        }
        if let (true, Some(Reply::Queues(queues))) = (opcode == Opcode::Stats as u8, &reply) {
            // The `stats` reply: rendered now, from the queues the executor
            // listed and the server's counters (stats.rs); rare, and small.
            let mut frame = Vec::new();
            stats::render_binary(&self.shared, queues, request_id, &mut frame);
            self.in_flight.set(self.in_flight.get() - 1);
            self.timer.release();
            self.send(|out| out.extend_from_slice(&frame));
            self.wake_processor.notify_one();
            return;
        }
        let bytes = reply.as_ref().map_or(HEADER_BYTES, reply_bytes_estimate);
        self.parked.borrow_mut().push_back(Answer { opcode, request_id, reply, bytes });
        self.parked_bytes.set(self.parked_bytes.get() + bytes);
        self.encode_parked();
    }

    /// Encodes parked answers while the encoded output waiting is under
    /// `--connection-reply-bytes-max` (so it passes it by at most one reply,
    /// and a reply larger than the budget still goes out, alone).
    fn encode_parked(&self) {
        let mut encoded_any = false;
        while self.output_pending_bytes() < self.shared.connection_reply_bytes_max {
            let Some(answer) = self.parked.borrow_mut().pop_front() else { break };
            self.parked_bytes.set(self.parked_bytes.get() - answer.bytes);
            let mut out = self.output.borrow_mut();
            match answer.reply {
                Some(reply) => binary::render_reply(&reply, answer.opcode, answer.request_id, &mut out),
                None => binary::render_refusal(ErrorCode::ShuttingDown, answer.opcode, answer.request_id, &mut out),
            }
            self.in_flight.set(self.in_flight.get() - 1);
            self.timer.release();
            encoded_any = true;
        }
        self.account();
        if encoded_any {
            self.wake_writer.notify_one();
            self.wake_processor.notify_one();
        }
    }

    /// The connection is over: what it still holds is released and no longer
    /// counted against the server-wide budget.
    fn finish(&self) {
        self.finished.set(true);
        self.parked.borrow_mut().clear();
        self.parked_bytes.set(0);
        *self.output.borrow_mut() = Vec::new();
        self.account();
    }

    fn end_of_stream(&self) {
        self.ended.set(true);
        self.peer_gone.notify_waiters();
        self.wake_processor.notify_one();
    }

    /// Appends an answer given without executing anything (small: an error, a pong) to
    /// the output and wakes the writer.
    fn send(&self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.output.borrow_mut());
        self.account();
        self.wake_writer.notify_one();
    }
}

/// A reactor's binary connections, and the mailbox through which executing threads
/// send replies back to this reactor (both protocols'; `outbox.rs`).
pub(crate) struct Replies {
    pub(crate) mailbox: Arc<Mailbox>,
    conns: RefCell<Slab<Registered>>,
    generation: Cell<u32>,
    metrics: Arc<ReactorMetrics>,
    clock: LatencyClock,
    /// The clock as read once per release pass (read at the pass's first
    /// delivery, with metrics on): one reading for a batch of replies.
    pass_us: Cell<Option<u32>>,
}

struct Registered {
    generation: u32,
    conn: Rc<Conn>,
}

impl Replies {
    /// Creates the reactor's mailbox and spawns the task that delivers from it.
    pub(crate) fn start(
        watermark: &Arc<crate::wal::watermark::Watermark>,
        metrics: Arc<ReactorMetrics>,
        clock: LatencyClock,
    ) -> Rc<Replies> {
        let replies = Rc::new(Replies {
            mailbox: Mailbox::new(watermark),
            conns: RefCell::new(Slab::new()),
            generation: Cell::new(0),
            metrics,
            clock,
            pass_us: Cell::new(None),
        });
        let (mailbox, delivering) = (replies.mailbox.clone(), replies.clone());
        let forgetting = replies.clone();
        tokio_uring::spawn(outbox::release_loop(
            mailbox,
            move || forgetting.pass_us.set(None),
            move |delivery| delivering.deliver(delivery),
        ));
        replies
    }

    /// The time replies delivered in this pass are answered at (0 with metrics off).
    fn now_us(&self) -> u32 {
        if !self.metrics.enabled {
            return 0;
        }
        match self.pass_us.get() {
            Some(now_us) => now_us,
            None => {
                let now_us = self.clock.now_us();
                self.pass_us.set(Some(now_us));
                now_us
            }
        }
    }

    fn register(&self, conn: Rc<Conn>) -> ConnKey {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let slot = self.conns.borrow_mut().insert(Registered { generation, conn });
        // More than 4 billion open connections on one reactor cannot happen:
        // descriptors run out long before.
        ConnKey { slot: u32::try_from(slot).unwrap_or(u32::MAX), generation }
    }

    fn unregister(&self, key: ConnKey) {
        let mut conns = self.conns.borrow_mut();
        if conns.get(key.slot as usize).is_some_and(|registered| registered.generation == key.generation) {
            conns.remove(key.slot as usize);
        }
    }

    /// Hands one released reply to whoever waits for it: encodes it into its
    /// binary connection's output, or sends it to its task. A reply whose
    /// connection has gone (its write failed, so it stopped waiting) has
    /// nobody to go to.
    fn deliver(&self, delivery: Delivery) {
        let (target, reply) = outbox::released(delivery, self.mailbox.watermark());
        match target {
            Target::Task(sender) => {
                // `None` (dropped unanswered) only comes through a mailbox reply.
                if let Some(reply) = reply {
                    let _ = sender.send(reply);
                }
            }
            Target::Conn { conn, request_id, opcode, taken_us } => {
                let conns = self.conns.borrow();
                let Some(registered) = conns.get(conn.slot as usize) else { return };
                if registered.generation != conn.generation {
                    return;
                }
                // `None`: the request was dropped unexecuted (the server stopped).
                registered.conn.answer(opcode, request_id, reply, taken_us, self.now_us());
            }
        }
    }
}

pub(crate) async fn serve_connection(
    stream: &Rc<Stream>,
    shared: &Arc<Shared>,
    replies: &Rc<Replies>,
    timer: &Rc<ConnTimer>,
) {
    // TLS: the handshake first, so a client certificate is known before the first request (tls.rs).
    if stream.handshake().await.is_err() {
        return;
    }
    let conn = Rc::new(Conn {
        // Allocated by the first read; released whenever it is emptied.
        inbox: RefCell::new(BytesMut::new()),
        ended: Cell::new(false),
        in_flight: Cell::new(0),
        long_polls: Cell::new(0),
        parked: RefCell::new(VecDeque::new()),
        parked_bytes: Cell::new(0),
        accounted_bytes: Cell::new(0),
        finished: Cell::new(false),
        shared: shared.clone(),
        output: RefCell::new(Vec::new()),
        writing_bytes: Cell::new(0),
        write_failed: Cell::new(false),
        closing: Cell::new(false),
        wake_processor: Notify::new(),
        wake_reader: Notify::new(),
        wake_writer: Notify::new(),
        peer_gone: Notify::new(),
        timer: timer.clone(),
        metrics: replies.metrics.clone(),
    });
    // One maximal frame, so a frame can always complete; reads pause past it.
    let buffered_bytes_max = HEADER_BYTES + shared.binary_limits.frame_body_bytes_max;
    let key = replies.register(conn.clone());
    let reader = tokio_uring::spawn(read_loop(stream.clone(), conn.clone(), buffered_bytes_max, shared.read_bytes_max));
    let writer = tokio_uring::spawn(write_loop(stream.clone(), conn.clone()));
    process(shared, &conn, replies, key, stream.client_certificate()).await;
    // Every request in flight is answered and written (or the peer stopped
    // reading and the write failed) before the writer exits.
    conn.closing.set(true);
    conn.wake_writer.notify_one();
    let _ = writer.await;
    // Ends the reader: a pending read completes with end-of-stream once the
    // socket is shut down, and a paused reader sees `closing`. Then waits for it,
    // so the socket is never dropped with a read in flight. A reader that saw
    // the peer's end of stream has already returned (it sets `ended` as it
    // does): nothing is in flight, and the close that follows sends our FIN,
    // so the `shutdown` system call is skipped (the usual way a connection ends).
    if !conn.ended.get() {
        let _ = stream.shutdown(Shutdown::Both);
        conn.wake_reader.notify_one();
    }
    let _ = reader.await;
    // Replies still in flight after a failed write have nobody to go to: let
    // their long polls go, and drop the others when they arrive.
    conn.end_of_stream();
    replies.unregister(key);
    conn.finish();
}

async fn read_loop(stream: Rc<Stream>, conn: Rc<Conn>, buffered_bytes_max: usize, read_bytes_max: usize) {
    // Sized by what arrives, so an idle connection pins little (buffers.rs).
    let mut read_bytes = READ_BYTES_MIN;
    let mut chunk: Vec<u8> = Vec::with_capacity(read_bytes);
    loop {
        while conn.inbox.borrow().len() >= buffered_bytes_max {
            if conn.closing.get() {
                return;
            }
            conn.wake_reader.notified().await;
        }
        chunk = read_buffer(chunk, read_bytes);
        let (result, buffer) = stream.read(chunk).await;
        chunk = buffer;
        read_bytes = next_read_bytes(read_bytes, chunk.len(), read_bytes_max);
        let ended = match result {
            Ok(0) => true, // end of stream: the peer closed, or the socket was shut down
            Ok(_) => false,
            Err(error) => {
                // A client resetting its connection is normal, not worth a warning.
                tracing::debug!(%error, "read failed");
                true
            }
        };
        if !chunk.is_empty() {
            let mut inbox = conn.inbox.borrow_mut();
            reserve(&mut inbox, chunk.len(), buffered_bytes_max);
            inbox.extend_from_slice(&chunk);
        }
        if ended {
            conn.end_of_stream();
            return;
        }
        conn.wake_processor.notify_one();
    }
}

/// Makes room for `incoming` bytes, and at once for the rest of the frame
/// being received when its header is in (a large frame then grows the inbox
/// once, not read by read).
fn reserve(inbox: &mut BytesMut, incoming: usize, buffered_bytes_max: usize) {
    let mut wanted = incoming;
    if let Some(length) = inbox.get(8..12) {
        let body_len = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let frame_bytes = HEADER_BYTES.saturating_add(body_len);
        // A length over the limit is refused by the processor; reserve nothing for it.
        if frame_bytes <= buffered_bytes_max {
            wanted = wanted.max(frame_bytes.saturating_sub(inbox.len()));
        }
    }
    inbox.reserve(wanted);
}

async fn write_loop(stream: Rc<Stream>, conn: Rc<Conn>) {
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let batch = {
            let mut output = conn.output.borrow_mut();
            (!output.is_empty()).then(|| std::mem::replace(&mut *output, std::mem::take(&mut spare)))
        };
        let Some(batch) = batch else {
            if conn.closing.get() && conn.in_flight.get() == 0 {
                return;
            }
            conn.wake_writer.notified().await;
            continue;
        };
        conn.writing_bytes.set(batch.len());
        conn.timer.hold();
        conn.timer.write_begin(); // a peer that does not read is closed (conn_timers::write_late)
        let (result, mut buffer) = stream.write_all(batch).await;
        conn.timer.write_end();
        conn.timer.release();
        conn.writing_bytes.set(0);
        if buffer.capacity() > OUTPUT_BYTES_KEPT_MAX {
            buffer = Vec::new();
        }
        buffer.clear();
        spare = buffer;
        if let Err(error) = result {
            tracing::debug!(%error, "write failed");
            conn.write_failed.set(true);
            conn.account();
            conn.wake_processor.notify_one();
            return;
        }
        // The output shrank: encode what was parked; the processor may take
        // frames again.
        conn.encode_parked();
        conn.wake_processor.notify_one();
    }
}

async fn process(
    shared: &Arc<Shared>,
    conn: &Rc<Conn>,
    replies: &Replies,
    key: ConnKey,
    certificate: Option<CertificateFingerprint>,
) {
    let mut nexts: Vec<BinaryNext> = Vec::new();
    // With `--tokens`: the table in force (the connection's token or client certificate is in `state`).
    let mut tokens = TokenView::new(shared.tokens.as_ref());
    let mut state = ConnState::with_session(tokens.session(certificate));
    // Whether the timer is held for frames waiting on back-pressure.
    let mut paused = false;
    loop {
        if conn.write_failed.get() {
            return;
        }
        // Back-pressure: no new request while this connection's replies, or
        // all connections', wait for their peers; fairness: at most a pass's
        // worth before the reactor's other connections have their turn.
        let budget_spent = shared.reply_budget_spent();
        let room = if budget_spent || conn.reply_bytes_pending() >= shared.connection_reply_bytes_max {
            0
        } else {
            shared
                .connection_requests_in_flight_max
                .saturating_sub(conn.in_flight.get())
                .min(CONNECTION_REQUESTS_PER_PASS_MAX)
        };
        let inbox_len_before = conn.inbox.borrow().len();
        binary::take_frames_with_tokens(
            &mut conn.inbox.borrow_mut(),
            &mut state,
            &shared.binary_limits,
            tokens.tokens(),
            room,
            &mut nexts,
        );
        let unfinished = {
            let mut inbox = conn.inbox.borrow_mut();
            if inbox.len() < inbox_len_before {
                conn.wake_reader.notify_one();
            }
            // An emptied inbox gives its memory back (the next read allocates
            // what it needs): an idle connection holds none.
            if inbox.is_empty() && inbox.capacity() > 0 {
                *inbox = BytesMut::new();
            }
            !inbox.is_empty()
        };
        let took = nexts.len();
        // One clock reading for the frames of this pass (their latency starts here).
        let taken_us = if took > 0 && conn.metrics.enabled { shared.metrics.clock.now_us() } else { 0 };
        for next in nexts.drain(..) {
            dispatch(next, shared, conn, replies, key, taken_us);
        }
        // With room, take_frames took every whole frame it could: what is left
        // is the start of one (its deadline runs, conn_timers.rs). Without
        // room, whole frames wait for us, not for the client: nothing to say.
        if room > 0 {
            conn.timer.parsed(took > 0, unfinished);
        }
        // Frames waiting while there is no room wait for the server (its
        // replies to drain), not for the client: busy meanwhile.
        conn.timer.hold_while(&mut paused, room == 0 && unfinished);
        if state.is_closed() {
            return; // a framing error: its error frame is in the output
        }
        if conn.ended.get() && took == 0 && room > 0 {
            return; // whatever is left is not a whole frame, and no more will come
        }
        if took > 0 && took == room {
            // A full pass: more frames may wait. The other connections of
            // this reactor take theirs first, so their requests reach the
            // executor between this one's, not after its whole backlog.
            tokio::task::yield_now().await;
            continue;
        }
        if room == 0 && budget_spent {
            // The server-wide budget drains on every reactor, and the others
            // do not wake this connection: the reactor's watcher does.
            tokio::select! {
                () = conn.wake_processor.notified() => {}
                () = reply_budget_released(shared) => {}
            }
            continue;
        }
        conn.wake_processor.notified().await;
    }
}

/// Answers a frame at once, or queues its command for execution: its reply
/// comes back through the mailbox, or (a long poll) to a task of its own.
fn dispatch(next: BinaryNext, shared: &Arc<Shared>, conn: &Rc<Conn>, replies: &Replies, key: ConnKey, taken_us: u32) {
    let (request_id, opcode, command, long_poll, received, grant) = match next {
        BinaryNext::Respond(frame) | BinaryNext::Fatal(frame) => {
            // A reply frame the protocol step made (hello, auth, an error):
            // its header says the opcode (byte 3) and the status (bytes 6-7).
            if conn.metrics.enabled && frame.len() >= HEADER_BYTES {
                let status = u16::from_le_bytes([frame[6], frame[7]]);
                let outcome = ErrorCode::from_u16(status).map_or(metrics::OUTCOME_OTHER, metrics::outcome_of_code);
                conn.metrics.answered(Protocol::Binary, metrics::op_of_opcode(frame[3]), outcome);
            }
            conn.send(|out| out.extend_from_slice(&frame));
            return;
        }
        BinaryNext::Ping { request_id } => {
            let ready = matches!(shared.health(), super::Health::Ready);
            conn.metrics.answered(Protocol::Binary, metrics::op_of_opcode(Opcode::Ping as u8), 0);
            conn.send(|out| binary::render_pong(ready, request_id, out));
            return;
        }
        BinaryNext::Execute { request_id, opcode, command, long_poll, body, grant } => {
            (request_id, opcode, command, long_poll, Some(Received { body }), grant)
        }
    };
    if long_poll && conn.long_polls.get() >= shared.connection_long_polls_max {
        // One client must not hold all of the executor's long-poll slots.
        let limit = shared.connection_long_polls_max;
        let error = EngineError::CapacityExceeded { what: "long polls on this connection", limit };
        let outcome = metrics::outcome_of_code(ErrorCode::CapacityExceeded);
        conn.metrics.answered(Protocol::Binary, metrics::op_of_opcode(opcode), outcome);
        conn.send(|out| binary::render_reply(&Reply::Error(error), opcode, request_id, out));
        return;
    }
    let refusal = if shared.stopping.load(Ordering::SeqCst) {
        Some(ErrorCode::ShuttingDown)
    } else if !shared.recovered.load(Ordering::Acquire) {
        Some(ErrorCode::Recovering)
    } else {
        None
    };
    if let Some(code) = refusal {
        conn.metrics.answered(Protocol::Binary, metrics::op_of_opcode(opcode), metrics::outcome_of_code(code));
        conn.send(|out| binary::render_refusal(code, opcode, request_id, out));
        return;
    }
    let overloaded = || {
        let outcome = metrics::outcome_of_code(ErrorCode::Overloaded);
        conn.metrics.answered(Protocol::Binary, metrics::op_of_opcode(opcode), outcome);
        conn.send(|out| binary::render_refusal(ErrorCode::Overloaded, opcode, request_id, out));
    };
    if !long_poll {
        let reply = ReplyTo::Mailbox(MailboxReply::new(replies.mailbox.clone(), key, request_id, opcode, taken_us));
        if let Err(job) = shared.submit(Box::new(Job { command, received, reply, grant })) {
            // Unsent, it would be delivered as `shutting_down`: forget it quietly.
            let Job { reply, .. } = *job;
            if let ReplyTo::Mailbox(reply) = reply {
                reply.cancel();
            }
            overloaded();
            return;
        }
        worker::execute_soon(shared);
        conn.in_flight.set(conn.in_flight.get() + 1);
        conn.timer.hold();
        return;
    }
    let (sender, receiver) = oneshot::channel();
    let reply = ReplyTo::Task { sender, mailbox: replies.mailbox.clone() };
    if shared.submit(Box::new(Job { command, received, reply, grant })).is_err() {
        overloaded();
        return;
    }
    worker::execute_soon(shared);
    conn.in_flight.set(conn.in_flight.get() + 1);
    conn.timer.hold();
    conn.long_polls.set(conn.long_polls.get() + 1);
    let (conn, shared) = (conn.clone(), shared.clone());
    tokio_uring::spawn(async move {
        let reply = await_reply(receiver, &conn, &shared).await;
        conn.long_polls.set(conn.long_polls.get() - 1);
        let now_us = if conn.metrics.enabled { shared.metrics.clock.now_us() } else { 0 };
        match reply {
            Some(reply) => conn.answer(opcode, request_id, Some(reply), taken_us, now_us),
            // The peer left during the long poll: nobody to answer.
            None if !shared.stopping.load(Ordering::SeqCst) => {
                conn.in_flight.set(conn.in_flight.get() - 1);
                conn.timer.release();
                conn.wake_processor.notify_one();
                conn.wake_writer.notify_one();
            }
            // The request was dropped unexecuted (the server stopped).
            None => conn.answer(opcode, request_id, None, taken_us, now_us),
        }
    });
}

/// Waits for a long poll's reply. It is abandoned (`None`, and the dropped
/// receiver tells the executor not to lease tasks for it) when the peer's stream
/// ends while it waits, unless the server is stopping (then the executor answers it).
async fn await_reply(mut reply: oneshot::Receiver<Reply>, conn: &Conn, shared: &Shared) -> Option<Reply> {
    loop {
        // Created before the check: a `notify_waiters` after it is not missed.
        let peer_gone = conn.peer_gone.notified();
        if conn.ended.get() && !shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        tokio::select! {
            result = &mut reply => return result.ok(),
            () = peer_gone => {}
        }
    }
}
