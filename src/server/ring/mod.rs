//! An experimental binary-protocol reactor on the `io-uring` crate directly
//! (`tqx serve --binary-io io-uring`; issue 17 item 3, the decision and its
//! measurements in docs/architecture.md, "io_uring: tokio-uring vs io-uring").
//!
//! One thread per reactor, pinned beside the tokio-uring reactor that keeps
//! serving HTTP, runs a hand-written completion loop over one ring:
//!
//! - **multishot accept** on its SO_REUSEPORT listener (registered as fixed
//!   file 0), re-armed only when the kernel ends it;
//! - **multishot receive into a provided-buffer ring** ([`RECV_BUFFER_COUNT`] ×
//!   [`RECV_BUFFER_BYTES`] per reactor, not per connection: an idle
//!   connection pins no receive buffer). Each completion's bytes are copied
//!   into the connection's inbox and the buffer goes straight back to the
//!   kernel; `crate::binary::take_frames` splits frames off the inbox as on
//!   the tokio-uring path (`binary_conn.rs`);
//! - **one send in flight per connection** of everything encoded since the
//!   last; zero-copy (`SEND_ZC`) only for sends of at least
//!   [`ZERO_COPY_SEND_BYTES_MIN`] (see there why);
//! - the ring is built with **SINGLE_ISSUER + DEFER_TASKRUN** (completions are
//!   posted only when this thread enters the kernel, never through task-work
//!   interrupts), falling back to SINGLE_ISSUER + COOP_TASKRUN, then to no
//!   flags, when the kernel refuses (`sys::Ring::new`; the choice is logged);
//! - other threads that answer its requests (a reactor holding the engine
//!   lock, a timer thread, the log writer's advance) wake the ring through the
//!   reactor's mailbox wake hook (`outbox.rs`): an **eventfd** the ring always has a read on,
//!   written only while the loop is about to sleep (`Wake`), so a reply
//!   pushed while the loop runs costs no system call.
//!
//! Requests are queued with `Shared::submit` and executed once per pass by
//! `worker::run_pending` (on this thread when the engine lock is free, else
//! by its holder: run to completion, as on the tokio-uring reactor); the
//! replies that pass produced are released and sent before the loop enters
//! the kernel again. Replies come back through the
//! reactor's own [`Mailbox`], released by the durable watermark
//! (`outbox::Releaser`), and are encoded under the same back-pressure as on
//! the tokio-uring path: no new frame is taken while
//! `--connection-requests-in-flight-max` requests are in flight,
//! `--connection-reply-bytes-max` reply bytes wait for the peer, or
//! `--reply-bytes-max` wait server-wide; answers wait unencoded past the
//! connection's budget; a connection's inbox holds one maximal frame, past
//! which its receive is cancelled until frames are taken (the kernel may
//! complete receives already under way, so it can pass that by at most the
//! reactor's provided buffers, [`RECV_BUFFER_COUNT`] × [`RECV_BUFFER_BYTES`]).
//!
//! **Not implemented in this prototype** (hostile-input rules of
//! `binary_conn.rs` it does not enforce yet): long polls (a dequeue with
//! `wait_ms` > 0 is answered `capacity_exceeded`); the request deadline, the
//! idle timeout, the late-write timeout (a client that stops reading is
//! bounded in memory by back-pressure but keeps its connection slot until it
//! leaves or the server stops) and pruning (`conn_timers.rs`: connections on
//! this reactor are neither swept nor pruned). Connections keep ordinary
//! descriptors rather than fixed ones because the stop signal, pruning and the
//! socket registry shut sockets down by descriptor.
//!
//! Stop: the stop signal shuts the listener and every connection down for
//! reading (as for the tokio-uring reactors); the accept and the receives
//! end, each connection answers what it took and closes, and the thread exits
//! when none is left or after `reactor::STOP_GRACE_MS`.
#![deny(unsafe_code)]

mod sys;

/// Which reactor serves the binary protocol (`--binary-io`; HTTP always
/// stays on tokio-uring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BinaryIo {
    /// `binary_conn.rs` on the tokio-uring reactor (the default).
    #[default]
    TokioUring,
    /// This module's reactor, a thread of its own beside each tokio-uring one.
    IoUring,
}

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use slab::Slab;
use tqx_wire::{ErrorCode, HEADER_BYTES};

use super::outbox::{self, reply_bytes_estimate, ConnKey, Delivery, Mailbox, MailboxReply, Releaser, ReplyTo, Target};
use super::worker::{self, Job};
use super::{os, Shared};
use crate::binary::{self, BinaryNext, ConnState};
use crate::command::Reply;
use crate::core::executor::Received;
use crate::engine::EngineError;
use crate::limits::{CONNECTION_REQUESTS_PER_PASS_MAX, REPLY_BUDGET_RECHECK_MS};
use sys::{Completion, Op, SendProgress};

/// Submission queue entries (the completion queue gets four times as many:
/// multishot operations post many completions per submission).
const RING_ENTRIES_COUNT: u32 = 1024;
/// Provided receive buffers per reactor, and their size: 2 MiB per reactor,
/// whatever the number of connections. A completion uses one whole buffer
/// however little it carries, so the count (not the size) bounds how many
/// receives complete per pass; 512 covers 50 connections pipelining 16 deep
/// with room to spare. Running out is not an error: a receive ends with
/// ENOBUFS and is armed again once buffers come back.
const RECV_BUFFER_COUNT: u16 = 512;
const RECV_BUFFER_BYTES: usize = 4096;
/// Sends at least this large go zero-copy. Below it a copy into the socket
/// buffer costs less than what zero-copy adds: pinning the pages, a second
/// completion (the notification) per send, and holding the buffer until it
/// comes. The kernel's MSG_ZEROCOPY documentation puts the break-even around
/// 10 KiB; replies here are mostly under 1 KiB, so only large `get_task` or
/// batch replies reach it. Over loopback the kernel copies anyway (the
/// receiving socket cannot keep the sender's pages), so the benchmark never
/// exercises it.
const ZERO_COPY_SEND_BYTES_MIN: usize = 64 << 10;
/// An output buffer that grew past this (a large reply) is released after
/// its send rather than kept for the life of the connection (as in `binary_conn.rs`).
const OUTPUT_BYTES_KEPT_MAX: usize = 1 << 20;
/// Longest sleep with nothing to do: a backstop only (every event that
/// matters completes something on the ring).
const IDLE_WAIT_MS: u64 = 1000;
/// Pause after a failed accept (for example EMFILE) so the loop does not spin.
const ACCEPT_RETRY_PAUSE_MS: u64 = 10;

/// Starts the reactor thread for `listener` (pinned to `core` if given) and
/// waits until its ring is built: an error means the kernel refused io_uring.
pub(crate) fn spawn(
    listener: TcpListener,
    shared: Arc<Shared>,
    core: Option<usize>,
    index: usize,
) -> io::Result<JoinHandle<()>> {
    let (started, started_rx) = std::sync::mpsc::channel();
    let handle = thread::Builder::new().name(format!("tqx-ring-{index}")).spawn(move || {
        if let Some(core) = core {
            if let Err(error) = os::pin_current_thread(core) {
                tracing::warn!(%error, core, "could not pin the io-uring reactor thread");
            }
        }
        // Built on this thread: with SINGLE_ISSUER only it may submit.
        match Reactor::new(listener, shared) {
            Ok(reactor) => {
                let _ = started.send(Ok(()));
                reactor.run();
            }
            Err(error) => {
                let _ = started.send(Err(error));
            }
        }
    })?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(io::Error::other("the io-uring reactor thread died while starting")),
    }
}

/// Wakes the ring from other threads, but only when it is about to sleep
/// or sleeping: `sleeping` is set before the loop's last look at the
/// mailbox, and a signal after that look finds it set (both SeqCst: the
/// mailbox's lock orders the push against the look).
struct Wake {
    sleeping: AtomicBool,
    eventfd: File,
}

impl Wake {
    fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            sys::wake(&self.eventfd);
        }
    }
}

/// Where a connection's multishot receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    Armed,
    /// Cancelled (the inbox is full); its last completion is to come.
    Cancelling,
    /// Not in flight; armed again once the inbox has room.
    Paused,
    /// The peer's stream ended (or the receive failed): never armed again.
    Ended,
}

/// An answer to a request in flight, waiting to be encoded.
struct Answer {
    opcode: u8,
    request_id: u64,
    /// `None`: the workers dropped the request (they stopped).
    reply: Option<Reply>,
    bytes: usize,
}

struct Conn {
    fd: OwnedFd,
    generation: u32,
    /// Received bytes not yet taken as frames.
    inbox: BytesMut,
    state: ConnState,
    recv: Recv,
    /// Requests handed to the executor whose replies are not yet encoded.
    in_flight: usize,
    parked: VecDeque<Answer>,
    parked_bytes: usize,
    /// What this connection counts in `Shared::reply_bytes_pending` (its
    /// encoded output, as in `binary_conn.rs`).
    accounted_bytes: usize,
    /// Encoded replies not yet handed to a send.
    output: Vec<u8>,
    /// Bytes of the send in flight (0: none).
    sending_bytes: usize,
    /// The last send's buffer, reused for the next output.
    spare: Vec<u8>,
    write_failed: bool,
    /// No more frames are taken (framing error, end of stream, failed send):
    /// the connection closes once what it took is answered and sent.
    done_taking: bool,
    /// The socket was shut down to end the receive before closing.
    shut_down: bool,
    /// In the reactor's ready list.
    queued: bool,
    /// In the reactor's list of connections waiting for the server-wide budget.
    budget_waiting: bool,
}

impl Conn {
    fn output_pending_bytes(&self) -> usize {
        self.output.len() + self.sending_bytes
    }

    fn reply_bytes_pending(&self) -> usize {
        self.output_pending_bytes() + self.parked_bytes
    }

    fn account(&mut self, shared: &Shared, finished: bool) {
        let now = if finished { 0 } else { self.output_pending_bytes() };
        shared.account_reply_bytes(std::mem::replace(&mut self.accounted_bytes, now), now);
    }

    fn answer(&mut self, shared: &Shared, opcode: u8, request_id: u64, reply: Option<Reply>) {
        let bytes = reply.as_ref().map_or(HEADER_BYTES, reply_bytes_estimate);
        self.parked.push_back(Answer { opcode, request_id, reply, bytes });
        self.parked_bytes += bytes;
        self.encode_parked(shared);
    }

    /// Encodes parked answers while the encoded output is under
    /// `--connection-reply-bytes-max` (the rule of `binary_conn.rs`).
    fn encode_parked(&mut self, shared: &Shared) {
        while self.output_pending_bytes() < shared.connection_reply_bytes_max {
            let Some(answer) = self.parked.pop_front() else { break };
            self.parked_bytes -= answer.bytes;
            match answer.reply {
                Some(reply) => binary::render_reply(&reply, answer.opcode, answer.request_id, &mut self.output),
                None => {
                    binary::render_refusal(ErrorCode::ShuttingDown, answer.opcode, answer.request_id, &mut self.output)
                }
            }
            self.in_flight -= 1;
        }
        self.account(shared, false);
    }

    fn send_now(&mut self, shared: &Shared, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.output);
        self.account(shared, false);
    }
}

struct Reactor {
    ring: sys::Ring,
    shared: Arc<Shared>,
    listener: TcpListener,
    accepting: bool,
    accept_retry_at: Option<Instant>,
    mailbox: Arc<Mailbox>,
    releaser: Releaser,
    wake: Arc<Wake>,
    conns: Slab<Conn>,
    generation: u32,
    /// Connections with something to do this pass.
    ready: VecDeque<u32>,
    /// Connections holding frames while the server-wide reply budget is spent.
    budget_waiting: Vec<u32>,
    /// A job was queued this pass: execute after it.
    submitted: bool,
    completions: Vec<Completion>,
    released: std::cell::RefCell<Vec<Delivery>>,
    /// Reused by every step.
    nexts: Vec<BinaryNext>,
    /// With `--tokens`: this reactor's snapshot of the table in force
    /// (`tokens.rs`), refreshed before each step.
    tokens: Option<Arc<crate::auth::Tokens>>,
}

impl Reactor {
    fn new(listener: TcpListener, shared: Arc<Shared>) -> io::Result<Reactor> {
        let mut ring = sys::Ring::new(RING_ENTRIES_COUNT, RECV_BUFFER_COUNT, RECV_BUFFER_BYTES)?;
        let fixed = ring.register_listener(listener.as_raw_fd());
        tracing::info!(setup = ring.setup, listener_fixed = fixed, "io-uring binary reactor");
        let wake = Arc::new(Wake { sleeping: AtomicBool::new(false), eventfd: sys::eventfd()? });
        let mailbox = Mailbox::new(&shared.watermark);
        let hook = wake.clone();
        mailbox.set_wake_hook(Box::new(move || hook.wake()));
        Ok(Reactor {
            ring,
            listener,
            accepting: false,
            accept_retry_at: Some(Instant::now()),
            mailbox,
            releaser: Releaser::default(),
            wake,
            conns: Slab::new(),
            generation: 0,
            ready: VecDeque::new(),
            budget_waiting: Vec::new(),
            submitted: false,
            completions: Vec::new(),
            released: std::cell::RefCell::new(Vec::new()),
            nexts: Vec::new(),
            tokens: shared.tokens.as_ref().map(|store| store.current()),
            shared,
        })
    }

    fn run(mut self) {
        let heartbeat = self.shared.liveness.register_current();
        if let Err(error) = self.ring.read_wake(self.wake.eventfd.as_raw_fd()) {
            panic!("cannot queue the io-uring reactor's wake read: {error}");
        }
        let mut stop_deadline: Option<Instant> = None;
        loop {
            heartbeat.beat();
            let mut completions = std::mem::take(&mut self.completions);
            for completion in completions.drain(..) {
                self.complete(completion);
            }
            self.completions = completions;
            self.release();
            self.process_ready();
            if std::mem::take(&mut self.submitted) {
                // The pass's requests execute together, under one lock
                // acquisition; their replies (pushed to our own mailbox,
                // which then writes no eventfd: the loop is not sleeping)
                // leave in this same iteration.
                worker::run_pending(&self.shared);
                self.release();
                self.process_ready();
            }
            let stopping = self.shared.stopping.load(Ordering::SeqCst);
            if stopping {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + Duration::from_millis(STOP_GRACE_MS));
                if self.conns.is_empty() && !self.accepting {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(open = self.conns.len(), "io-uring reactor stopping with connections still open");
                    break;
                }
            } else if !self.accepting && self.accept_retry_at.is_some_and(|at| Instant::now() >= at) {
                match self.ring.accept_multi(self.listener.as_raw_fd()) {
                    Ok(()) => {
                        self.accepting = true;
                        self.accept_retry_at = None;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not queue an accept");
                        self.accept_retry_at = Some(Instant::now() + Duration::from_millis(ACCEPT_RETRY_PAUSE_MS));
                    }
                }
            }
            if !self.budget_waiting.is_empty() && !self.shared.reply_budget_spent() {
                for slot in std::mem::take(&mut self.budget_waiting) {
                    if let Some(conn) = self.conns.get_mut(slot as usize) {
                        conn.budget_waiting = false;
                    }
                    self.mark_ready(slot);
                }
            }
            // Requests the second pass above took are not executed yet: no sleep.
            let wait = if self.ready.is_empty() && !self.submitted {
                self.wake.sleeping.store(true, Ordering::SeqCst);
                // The last look: a reply pushed after it finds `sleeping` set and writes the eventfd.
                if self.release() > 0 {
                    None
                } else {
                    let ms = if stopping || self.accept_retry_at.is_some() {
                        ACCEPT_RETRY_PAUSE_MS
                    } else if !self.budget_waiting.is_empty() {
                        REPLY_BUDGET_RECHECK_MS
                    } else {
                        IDLE_WAIT_MS
                    };
                    heartbeat.idle();
                    Some(Duration::from_millis(ms))
                }
            } else {
                None
            };
            let mut completions = std::mem::take(&mut self.completions);
            let collected = self.ring.submit_and_collect(wait, &mut completions);
            self.completions = completions;
            self.wake.sleeping.store(false, Ordering::SeqCst);
            if let Err(error) = collected {
                // The ring itself failed: nothing this reactor holds can be
                // trusted to complete. Stop loudly rather than hang.
                panic!("io_uring_enter failed on the io-uring reactor: {error}");
            }
        }
        self.shared.untrack_socket(self.listener.as_raw_fd());
    }

    fn mark_ready(&mut self, slot: u32) {
        if let Some(conn) = self.conns.get_mut(slot as usize) {
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(slot);
            }
        }
    }

    /// Drains the mailbox and hands released replies to their connections;
    /// returns how many it delivered.
    fn release(&mut self) -> usize {
        let released = &self.released;
        self.releaser.release(&self.mailbox, |delivery| released.borrow_mut().push(delivery));
        let mut deliveries = std::mem::take(&mut *self.released.borrow_mut());
        let count = deliveries.len();
        for delivery in deliveries.drain(..) {
            let (target, reply) = outbox::released(delivery, self.mailbox.watermark());
            match target {
                Target::Task(sender) => {
                    if let Some(reply) = reply {
                        let _ = sender.send(reply);
                    }
                }
                Target::Conn { conn, request_id, opcode, .. } => {
                    let Some(found) = self.conns.get_mut(conn.slot as usize) else { continue };
                    if found.generation != conn.generation || found.write_failed {
                        continue; // the connection has gone, or nobody reads it
                    }
                    found.answer(&self.shared, opcode, request_id, reply);
                    self.mark_ready(conn.slot);
                }
            }
        }
        *self.released.borrow_mut() = deliveries;
        count
    }

    fn complete(&mut self, completion: Completion) {
        match completion.op {
            Op::Accept => self.accepted(completion),
            Op::Recv => self.received(completion),
            Op::Send => self.sent(completion),
            Op::Wake => {
                // The mailbox is drained on every pass anyway; only re-arm.
                if let Err(error) = self.ring.read_wake(self.wake.eventfd.as_raw_fd()) {
                    panic!("cannot queue the io-uring reactor's wake read: {error}");
                }
            }
            Op::Cancel => {} // the receive's own last completion says what happened
        }
    }

    fn accepted(&mut self, completion: Completion) {
        if !completion.more() {
            self.accepting = false;
            if !self.shared.stopping.load(Ordering::SeqCst) {
                self.accept_retry_at = Some(Instant::now());
            }
        }
        if completion.result < 0 {
            if !self.shared.stopping.load(Ordering::SeqCst) {
                let error = io::Error::from_raw_os_error(-completion.result);
                // Reported by the activity log (docs/logs.md), not once per failure.
                self.shared.activity.accept_failed(&error);
                self.accept_retry_at = Some(Instant::now() + Duration::from_millis(ACCEPT_RETRY_PAUSE_MS));
            }
            return;
        }
        let fd = sys::adopt(completion.result);
        let shared = &self.shared;
        if shared.stopping.load(Ordering::SeqCst) {
            return; // dropping the descriptor closes it
        }
        // TCP_NODELAY is inherited from the listener (`os::listen_reuseport`).
        let open_before = shared.connections_open.fetch_add(1, Ordering::AcqRel);
        if !shared.conns.admit(open_before) {
            shared.connections_open.fetch_sub(1, Ordering::AcqRel);
            shared.refused(crate::metrics::Protocol::Binary as usize, || os::peer_address(fd.as_raw_fd()));
            let mut refusal = Vec::new();
            binary::render_too_many_connections(shared.connections_max, &mut refusal);
            // A fresh socket's send buffer takes this small frame at once, so
            // the blocking write cannot wait on the peer.
            let _ = std::net::TcpStream::from(fd).write_all(&refusal);
            return;
        }
        let raw = fd.as_raw_fd();
        shared.track_socket(raw);
        self.generation = self.generation.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        // More than 4 billion connections on one reactor cannot happen:
        // descriptors run out long before.
        let slot = u32::try_from(entry.key()).unwrap_or(u32::MAX);
        entry.insert(Conn {
            fd,
            generation: self.generation,
            inbox: BytesMut::new(),
            state: ConnState::new(),
            recv: Recv::Paused,
            in_flight: 0,
            parked: VecDeque::new(),
            parked_bytes: 0,
            accounted_bytes: 0,
            output: Vec::new(),
            sending_bytes: 0,
            spare: Vec::new(),
            write_failed: false,
            done_taking: false,
            shut_down: false,
            queued: false,
            budget_waiting: false,
        });
        // Its first pass arms the receive.
        self.mark_ready(slot);
    }

    /// One maximal frame, so a frame can always complete; receiving pauses past it.
    fn inbox_bytes_max(&self) -> usize {
        HEADER_BYTES + self.shared.binary_limits.frame_body_bytes_max
    }

    fn received(&mut self, completion: Completion) {
        let inbox_bytes_max = self.inbox_bytes_max();
        let slot = completion.slot;
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            panic!("a receive completed for slot {slot}, which holds no connection");
        };
        if completion.result > 0 {
            let Some(bid) = completion.buffer_id() else {
                panic!("a receive completed without a provided buffer");
            };
            conn.inbox.extend_from_slice(self.ring.received(bid, completion.result as usize));
            self.ring.recycle(bid);
            if conn.inbox.len() >= inbox_bytes_max && conn.recv == Recv::Armed && completion.more() {
                if let Err(error) = self.ring.cancel_recv(slot) {
                    panic!("cannot queue a cancel on the io-uring reactor: {error}");
                }
                conn.recv = Recv::Cancelling;
            }
        }
        if !completion.more() {
            conn.recv = match completion.result {
                // Out of provided buffers, or cancelled: armed again once there is room.
                result if result > 0 || result == -libc::ENOBUFS || result == -libc::ECANCELED => Recv::Paused,
                0 => Recv::Ended,
                result => {
                    // A client resetting its connection is normal, not worth a warning.
                    tracing::debug!(error = %io::Error::from_raw_os_error(-result), "receive failed");
                    Recv::Ended
                }
            };
        }
        self.mark_ready(slot);
    }

    fn sent(&mut self, completion: Completion) {
        let slot = completion.slot;
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            panic!("a send completed for slot {slot}, which holds no connection");
        };
        match self.ring.send_completed(&completion, conn.fd.as_raw_fd()) {
            SendProgress::Continuing => return,
            SendProgress::Notified => {}
            SendProgress::Done => {
                conn.sending_bytes = 0;
                // The output shrank: encode what was parked.
                conn.encode_parked(&self.shared);
            }
            SendProgress::Failed(error) => {
                tracing::debug!(%error, "send failed");
                conn.sending_bytes = 0;
                conn.write_failed = true;
                conn.done_taking = true;
                conn.account(&self.shared, false);
            }
        }
        // Back once the kernel is done with it (after a zero-copy send's
        // notification, which may come after the send's own completion).
        if let Some(mut buffer) = self.ring.take_sent(slot) {
            if buffer.capacity() > OUTPUT_BYTES_KEPT_MAX {
                buffer = Vec::new();
            }
            buffer.clear();
            conn.spare = buffer;
        }
        self.mark_ready(slot);
    }

    fn process_ready(&mut self) {
        // Each connection at most once per pass; a full pass re-queues it
        // behind the others (fairness).
        for _ in 0..self.ready.len() {
            let Some(slot) = self.ready.pop_front() else { break };
            if let Some(conn) = self.conns.get_mut(slot as usize) {
                conn.queued = false;
                self.step(slot);
            }
        }
    }

    /// Takes what frames the budgets allow, starts a send, arms or ends the
    /// receive, and closes the connection once it is done.
    fn step(&mut self, slot: u32) {
        let inbox_bytes_max = self.inbox_bytes_max();
        let key_generation = self.conns[slot as usize].generation;
        let shared = self.shared.clone();
        let conn = &mut self.conns[slot as usize];
        let mut requeue = false;
        if !conn.done_taking {
            let budget_spent = shared.reply_budget_spent();
            let room = if budget_spent || conn.reply_bytes_pending() >= shared.connection_reply_bytes_max {
                0
            } else {
                shared
                    .connection_requests_in_flight_max
                    .saturating_sub(conn.in_flight)
                    .min(CONNECTION_REQUESTS_PER_PASS_MAX)
            };
            let mut nexts = std::mem::take(&mut self.nexts);
            if let (Some(store), Some(snapshot)) = (shared.tokens.as_ref(), self.tokens.as_mut()) {
                store.refresh(snapshot);
            }
            binary::take_frames_with_tokens(
                &mut conn.inbox,
                &mut conn.state,
                &shared.binary_limits,
                self.tokens.as_deref(),
                room,
                &mut nexts,
            );
            if conn.inbox.is_empty() && conn.inbox.capacity() > 0 {
                conn.inbox = BytesMut::new(); // an idle connection holds no inbox
            }
            let took = nexts.len();
            let key = ConnKey { slot, generation: key_generation };
            for next in nexts.drain(..) {
                dispatch(next, &shared, conn, &self.mailbox, key, &mut self.submitted);
            }
            self.nexts = nexts;
            if conn.state.is_closed() || (conn.recv == Recv::Ended && took == 0 && room > 0) {
                // A framing error (its error frame is in the output), or the
                // peer's stream ended and what is left is no whole frame.
                conn.done_taking = true;
            } else if took > 0 && took == room {
                requeue = true; // a full pass: more frames may wait
            } else if room == 0 && budget_spent && !conn.inbox.is_empty() && !conn.budget_waiting {
                conn.budget_waiting = true;
                self.budget_waiting.push(slot);
            }
        }
        if conn.recv == Recv::Paused && !conn.done_taking && conn.inbox.len() < inbox_bytes_max {
            if let Err(error) = self.ring.recv_multi(slot, conn.fd.as_raw_fd()) {
                panic!("cannot queue a receive on the io-uring reactor: {error}");
            }
            conn.recv = Recv::Armed;
        }
        // One send at a time, and not before a zero-copy send's buffer is back.
        if conn.sending_bytes == 0 && !conn.output.is_empty() && !conn.write_failed && self.ring.send_idle(slot) {
            let spare = std::mem::take(&mut conn.spare);
            let batch = std::mem::replace(&mut conn.output, spare);
            conn.sending_bytes = batch.len();
            let zero_copy = batch.len() >= ZERO_COPY_SEND_BYTES_MIN;
            if let Err(error) = self.ring.send(slot, conn.fd.as_raw_fd(), batch, zero_copy) {
                panic!("cannot queue a send on the io-uring reactor: {error}");
            }
        }
        if conn.done_taking
            && (conn.write_failed || (conn.in_flight == 0 && conn.output.is_empty() && conn.sending_bytes == 0))
        {
            self.close_when_idle(slot);
        } else if requeue {
            self.mark_ready(slot);
        }
    }

    /// Ends what the kernel still holds of a finished connection (its
    /// receive, by shutting the socket down), and closes it once nothing is
    /// in flight.
    fn close_when_idle(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let receiving = matches!(conn.recv, Recv::Armed | Recv::Cancelling);
        if (receiving || !self.ring.send_idle(slot)) && !conn.shut_down {
            // The pending receive completes with end of stream, and a send
            // to a peer that stopped reading fails: their completions bring
            // the connection back here.
            conn.shut_down = true;
            os::shutdown_both(conn.fd.as_raw_fd());
        }
        if receiving || !self.ring.send_idle(slot) {
            return;
        }
        let mut conn = self.conns.remove(slot as usize);
        let _ = self.ring.take_sent(slot);
        conn.account(&self.shared, true);
        // Before the descriptor is closed (when `conn` drops), so no stop
        // signal shuts down a reused descriptor number.
        self.shared.untrack_socket(conn.fd.as_raw_fd());
        self.shared.connections_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a stopping reactor waits for its connections (as `reactor.rs`).
const STOP_GRACE_MS: u64 = super::reactor::STOP_GRACE_MS;

/// Answers a frame at once, or hands its command to the executor (the rule
/// of `binary_conn::dispatch`, without long polls).
fn dispatch(
    next: BinaryNext,
    shared: &Arc<Shared>,
    conn: &mut Conn,
    mailbox: &Arc<Mailbox>,
    key: ConnKey,
    submitted: &mut bool,
) {
    let (request_id, opcode, command, long_poll, received, grant) = match next {
        BinaryNext::Respond(frame) | BinaryNext::Fatal(frame) => {
            conn.send_now(shared, |out| out.extend_from_slice(&frame));
            return;
        }
        BinaryNext::Ping { request_id } => {
            let ready = matches!(shared.health(), super::Health::Ready);
            conn.send_now(shared, |out| binary::render_pong(ready, request_id, out));
            return;
        }
        BinaryNext::Execute { request_id, opcode, command, long_poll, body, grant } => {
            (request_id, opcode, command, long_poll, Some(Received { body }), grant)
        }
    };
    if long_poll {
        let error = EngineError::CapacityExceeded {
            what: "long polls (the experimental --binary-io io-uring reactor holds none)",
            limit: 0,
        };
        conn.send_now(shared, |out| binary::render_reply(&Reply::Error(error), opcode, request_id, out));
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
        conn.send_now(shared, |out| binary::render_refusal(code, opcode, request_id, out));
        return;
    }
    let reply = ReplyTo::Mailbox(MailboxReply::new(mailbox.clone(), key, request_id, opcode, 0));
    if let Err(job) = shared.submit(Box::new(Job { command, received, reply, grant })) {
        // Unsent, it would be delivered as `shutting_down`: forget it quietly.
        let Job { reply, .. } = *job;
        if let ReplyTo::Mailbox(reply) = reply {
            reply.cancel();
        }
        conn.send_now(shared, |out| binary::render_refusal(ErrorCode::Overloaded, opcode, request_id, out));
        return;
    }
    *submitted = true;
    conn.in_flight += 1;
}
