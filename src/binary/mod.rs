//! The binary protocol (docs/wire.md, codec in `tqx-wire`) as pure functions
//! over a connection's bytes: no sockets, no threads, no clock. The reactor
//! (`server/binary_conn.rs`) and the fuzz targets drive the same code:
//!
//! - [`take_frames`] takes every whole frame off the front of a connection's
//!   receive buffer and says, for each, what to do: execute a [`Command`],
//!   answer a ping (the reactor knows whether recovery is done), send an
//!   already-encoded reply, or send a last error frame and close;
//! - [`request_to_command`] maps a decoded request to a [`Command`], checked by
//!   `command::check_limits` like the HTTP API's (same codes and messages);
//!   [`command_to_request`] is the reverse, so that a command from either
//!   protocol has one binary form: the write-ahead log stores that request's
//!   body (`wal/record.rs`) and replay maps it back with [`request_command`];
//! - [`render_reply`] encodes a worker's [`Reply`] as a reply frame.
//!
//! Connection rules (why the stream stays trustworthy):
//! - framing is by the 24-byte header's `body_len` alone, checked against
//!   [`Limits::frame_body_bytes_max`] as soon as the header is in, so a
//!   connection's buffer never needs more than one maximal frame (plus one read);
//! - a bad magic or an over-long body is a framing error: one error frame
//!   (opcode 0, request id 0) and the connection closes, since nothing after it
//!   can be trusted;
//! - everything else (a version other than 1, an unknown opcode, a body that
//!   does not decode, a request before the hello) is answered with an error
//!   reply carrying the request's id and opcode, and the connection stays.
//!
//! Replies carry their request's `request_id` and may leave out of order: each
//! one goes as soon as it is ready (a `sync`-mode enqueue waits for its
//! `fdatasync` while a later read answers at once).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tqx_wire::{
    peek_frame, DecodeError, Dep, ErrorCode, FrameError, Header, Opcode, Request, Response, HEADER_BYTES, VERSION,
};

use crate::auth::{self, Decision, Grant, Session, Tokens};
use crate::command::{check_limits, Command, CompleteItem, Reply};
use crate::engine::{self, DepRef, EngineError, NewTask, QueueConfigPatch};

/// The longest a dequeue may ask to be held (`wait_ms`): the HTTP API's bound.
pub use crate::limits::WAIT_MS_MAX;

/// Payloads and results shorter than this are copied out of the receive
/// buffer; longer ones stay zero-copy slices of it. A slice keeps its whole
/// receive buffer allocation (tens of KiB, see `server/binary_conn.rs`) alive
/// for as long as the task holds it, so a small payload would pin many times
/// its size; copying a few KiB costs about as much as the decode itself.
pub const PAYLOAD_SHARED_BYTES_MIN: usize = 4 << 10;

/// Bounds on what one connection may make the server buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted (`--max-body-bytes`); announced in the
    /// hello reply. A larger `body_len` is a framing error.
    pub frame_body_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { frame_body_bytes_max: crate::limits::FRAME_BODY_BYTES_MAX_DEFAULT }
    }
}

/// What a connection remembers between frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// A hello with a version this server speaks has been answered.
    handshake_done: bool,
    /// A framing error was answered, or authentication failed too often:
    /// nothing more is read.
    closed: bool,
    /// The token this connection authenticated with, when the server has
    /// tokens (`auth`; docs/wire.md#auth-0x03).
    session: Session,
}

impl ConnState {
    pub fn new() -> ConnState {
        ConnState::default()
    }

    /// A connection whose authentication starts as `session` (a client
    /// certificate's, with mutual TLS: `auth::Session::with_certificate`).
    pub fn with_session(session: Session) -> ConnState {
        ConnState { session, ..ConnState::default() }
    }

    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    /// Whether a [`BinaryNext::Fatal`] was produced: the connection is to be
    /// closed once it is sent, and [`take_frames`] takes nothing more.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// What to do with one frame taken off a connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum BinaryNext {
    /// Hand `command` to a worker; encode its reply with [`render_reply`]
    /// (`opcode`, `request_id`). `long_poll`: a dequeue with `wait_ms` > 0,
    /// to be abandoned if the peer goes away while it waits. `body`: the
    /// frame's body as received, which decodes to `command`: the log stores
    /// it as it is (`wal::record::encode_request_body`), without encoding the
    /// command again. `grant`: for a command naming tasks by id under a token
    /// limited to some queues, the grant each task's queue is checked against
    /// before it executes (`auth::check_task_queues`).
    Execute { request_id: u64, opcode: u8, command: Command, long_poll: bool, body: Bytes, grant: Option<Arc<Grant>> },
    /// Answer `Pong { ready }`, `ready` being whether recovery is done (encode
    /// with [`render_pong`]).
    Ping { request_id: u64 },
    /// Send this reply frame (a hello reply, or an error) as it is.
    Respond(Vec<u8>),
    /// Send this error frame, then close the connection: the framing is broken.
    Fatal(Vec<u8>),
}

/// The reactor's step for one binary connection: takes up to `frames_max`
/// whole frames off the front of `inbox`, in order, and appends one
/// [`BinaryNext`] per frame to `out`.
///
/// Each frame is split off `inbox` (`split_to` + `freeze`), so payloads and
/// results of [`PAYLOAD_SHARED_BYTES_MIN`] bytes or more reach the engine as
/// slices of the receive buffer, without a copy. What is left in `inbox` is
/// the start of a frame not yet complete. Stops early at a framing error (one
/// [`BinaryNext::Fatal`], after which `state` is closed and later calls take
/// nothing). Never panics, whatever the bytes; never reserves more than the
/// bytes present.
pub fn take_frames(
    inbox: &mut BytesMut,
    state: &mut ConnState,
    limits: &Limits,
    frames_max: usize,
    out: &mut Vec<BinaryNext>,
) {
    take_frames_with_tokens(inbox, state, limits, None, frames_max, out);
}

/// [`take_frames`] on a server with tokens (`tqx serve --tokens`): `tokens`
/// is the token table in force (`None`: no authentication, as
/// [`take_frames`]). Then every request but hello, ping and auth needs a
/// successful `auth` on the connection first, or a client certificate the
/// table holds (mutual TLS: [`ConnState::with_session`]; an `auth` replaces
/// it for the rest of the connection) (else `unauthenticated`, and
/// nothing of it is decoded or executed) and a grant that allows it (else
/// `forbidden`, naming the scope and queue). The grant is re-checked against
/// the table if it was reloaded since (`auth::Session`). The
/// `limits::AUTH_FAILURES_PER_CONNECTION_MAX`th failure (a refused token, a
/// request without one) is answered and closes the connection
/// ([`BinaryNext::Fatal`]).
pub fn take_frames_with_tokens(
    inbox: &mut BytesMut,
    state: &mut ConnState,
    limits: &Limits,
    tokens: Option<&Tokens>,
    frames_max: usize,
    out: &mut Vec<BinaryNext>,
) {
    let mut taken = 0;
    while taken < frames_max && !state.closed {
        let header = match peek_frame(inbox, limits.frame_body_bytes_max) {
            Ok(None) => return,
            Ok(Some(header)) => header,
            Err(error) => {
                state.closed = true;
                out.push(BinaryNext::Fatal(fatal_frame(&error)));
                return;
            }
        };
        // peek_frame checked that the whole frame is present.
        let frame_bytes = HEADER_BYTES + header.body_len.get() as usize;
        let body = inbox.split_to(frame_bytes).freeze().slice(HEADER_BYTES..);
        taken += 1;
        out.push(frame_step(&header, body, state, limits, tokens));
        if let (Some(tokens), Some(next)) = (tokens, out.last_mut()) {
            authorize(next, state, tokens);
        }
    }
}

/// Checks an [`BinaryNext::Execute`] just taken against the connection's
/// grant (found by [`frame_step`], which refused the request if there was
/// none): replaces it with a `forbidden` refusal, or attaches the grant
/// when the executor must check the queues of the tasks it names. Done in
/// place, after the push, so that without tokens a command is moved no more
/// often than before authentication existed (callgrind counted three more
/// copies of `BinaryNext` per frame when this ran inside `frame_step`).
fn authorize(next: &mut BinaryNext, state: &mut ConnState, tokens: &Tokens) {
    let BinaryNext::Execute { request_id, opcode, command, grant, .. } = next else { return };
    let Some(allowed) = state.session.grant(tokens) else { return };
    match auth::authorize(allowed, command) {
        Ok(Decision::Allowed) => {}
        // No clone unless the executor needs it.
        Ok(Decision::CheckTaskQueues) => *grant = Some(allowed.clone()),
        Err(error) => {
            *next = BinaryNext::Respond(error_frame(*opcode, *request_id, error_code(&error), error.to_string()))
        }
    }
}

/// One whole frame whose framing is fine.
fn frame_step(
    header: &Header,
    body: Bytes,
    state: &mut ConnState,
    limits: &Limits,
    tokens: Option<&Tokens>,
) -> BinaryNext {
    let request_id = header.request_id.get();
    let opcode = header.opcode;
    let refuse = |code: ErrorCode, message: String| BinaryNext::Respond(error_frame(opcode, request_id, code, message));
    if header.version != VERSION {
        // The length is still trustworthy: skip the frame, keep the connection.
        return refuse(
            ErrorCode::UnsupportedVersion,
            format!("frame version {} is not supported; this server speaks version {VERSION}", header.version),
        );
    }
    if !state.handshake_done && opcode != Opcode::Hello as u8 {
        return refuse(ErrorCode::HandshakeRequired, "the first request on a connection must be hello".into());
    }
    let Some(known) = Opcode::from_u8(opcode) else {
        return refuse(ErrorCode::UnknownOpcode, format!("unknown opcode 0x{opcode:02x}"));
    };
    // Before the body is even decoded: an unauthenticated request costs
    // nothing more than its frame.
    if let Some(tokens) = tokens {
        if !matches!(known, Opcode::Hello | Opcode::Ping | Opcode::Auth) && state.session.grant(tokens).is_none() {
            return authentication_failed(state, opcode, request_id, auth::NO_TOKEN_BINARY);
        }
    }
    // A reference-counted handle on the same bytes, kept for the log.
    let received = body.clone();
    let request = match Request::decode(header, body) {
        Ok(request) => request,
        Err(DecodeError { code, message }) => return refuse(code, message),
    };
    match request {
        Request::Hello { version_min, version_max } => {
            if version_min <= VERSION && VERSION <= version_max {
                state.handshake_done = true;
                let frame_body_bytes_max = u32::try_from(limits.frame_body_bytes_max).unwrap_or(u32::MAX);
                let mut frame = Vec::with_capacity(HEADER_BYTES + 8);
                Response::Hello { version: VERSION, frame_body_bytes_max }.encode(opcode, request_id, &mut frame);
                BinaryNext::Respond(frame)
            } else {
                refuse(
                    ErrorCode::UnsupportedVersion,
                    format!("this server speaks version {VERSION}; the hello offered {version_min} to {version_max}"),
                )
            }
        }
        Request::Ping => BinaryNext::Ping { request_id },
        Request::Auth { token } => {
            let scopes = match tokens {
                // Without tokens every request is allowed: a client that
                // sends one anyway (set up before the server enforces them) is told so.
                None => tqx_wire::SCOPES_ALL,
                Some(tokens) => match state.session.authenticate(tokens, token.expose()) {
                    Some(grant) => grant.scopes().bits(),
                    None => return authentication_failed(state, opcode, request_id, auth::REFUSED),
                },
            };
            let mut frame = Vec::with_capacity(HEADER_BYTES + 8);
            Response::Authenticated { scopes }.encode(opcode, request_id, &mut frame);
            BinaryNext::Respond(frame)
        }
        request => match request_to_command(request) {
            Ok(command) => {
                // With tokens, `authorize` checks it against the grant next.
                let long_poll = matches!(command, Command::Dequeue { wait_ms, .. } if wait_ms > 0);
                BinaryNext::Execute { request_id, opcode, command, long_poll, body: received, grant: None }
            }
            Err((code, message)) => refuse(code, message),
        },
    }
}

/// Answers a failed authentication with `unauthenticated`; the
/// `limits::AUTH_FAILURES_PER_CONNECTION_MAX`th also closes the connection.
fn authentication_failed(state: &mut ConnState, opcode: u8, request_id: u64, reason: &'static str) -> BinaryNext {
    let close = state.session.fail();
    let error = Session::failure_error(reason, close);
    let frame = error_frame(opcode, request_id, error_code(&error), error.to_string());
    if close {
        state.closed = true;
        BinaryNext::Fatal(frame)
    } else {
        BinaryNext::Respond(frame)
    }
}

/// The one error frame sent before closing on a framing error: opcode 0 and
/// request id 0, since neither can be trusted.
fn fatal_frame(error: &FrameError) -> Vec<u8> {
    let code = match error {
        FrameError::BadMagic(_) => ErrorCode::MalformedRequest,
        FrameError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
    };
    error_frame(0, 0, code, error.to_string())
}

/// An error reply frame.
pub fn error_frame(opcode: u8, request_id: u64, code: ErrorCode, message: String) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_BYTES + 8 + message.len());
    Response::Error { code, message }.encode(opcode, request_id, &mut frame);
    frame
}

/// Appends the reply to a ping: `ready` is false while the server recovers.
pub fn render_pong(ready: bool, request_id: u64, out: &mut Vec<u8>) {
    Response::Pong { ready }.encode(Opcode::Ping as u8, request_id, out);
}

/// Appends an error reply the reactor decides on its own (`overloaded`,
/// `recovering`, `shutting_down`), with a message that says what to do.
pub fn render_refusal(code: ErrorCode, opcode: u8, request_id: u64, out: &mut Vec<u8>) {
    let message = match code {
        ErrorCode::Overloaded => "the server's request queue is full; retry after a pause",
        ErrorCode::Recovering => "the server is recovering its state from disk; retry after a pause",
        ErrorCode::ShuttingDown => "the server is shutting down",
        _ => code.as_str(),
    };
    Response::Error { code, message: message.into() }.encode(opcode, request_id, out);
}

/// The one frame a connection past `--max-connections` gets before it is
/// closed: `overloaded`, with opcode 0 and request id 0 like a framing error
/// (no request has been read).
pub fn render_too_many_connections(limit: usize, out: &mut Vec<u8>) {
    let message =
        format!("too many connections: the server's limit is {limit} (--max-connections); retry after a pause");
    Response::Error { code: ErrorCode::Overloaded, message }.encode(0, 0, out);
}

/// Why a request was refused before reaching a worker, as the wire says it.
fn refused(error: EngineError) -> (ErrorCode, String) {
    (error_code(&error), error.to_string())
}

/// The wire code of an engine error: the same text as the HTTP API's
/// `error.code` (`EngineError::code`), hence the same case on both protocols.
pub fn error_code(error: &EngineError) -> ErrorCode {
    // Every engine code is a wire code (a unit test walks them); stay total anyway.
    ErrorCode::from_code(error.code()).unwrap_or(ErrorCode::InvalidArgument)
}

/// A payload or result as the engine will hold it (see [`PAYLOAD_SHARED_BYTES_MIN`]).
fn held(bytes: Bytes) -> Bytes {
    if bytes.len() < PAYLOAD_SHARED_BYTES_MIN {
        Bytes::copy_from_slice(&bytes)
    } else {
        bytes
    }
}

/// A task to enqueue; `in_batch`: whether batch references (`#k` over HTTP)
/// may appear (the engine checks that they point to earlier entries).
fn new_task(spec: tqx_wire::TaskSpec, in_batch: bool) -> Result<NewTask, (ErrorCode, String)> {
    let mut depends_on = Vec::with_capacity(spec.depends_on.len());
    for dep in spec.depends_on {
        depends_on.push(match dep {
            Dep::Task(id) => DepRef::Task(id),
            Dep::Batch(k) if in_batch => DepRef::Batch(k as usize),
            Dep::Batch(_) => {
                let reason = "batch references (#k) are only valid in a batch";
                return Err(refused(EngineError::invalid("depends_on", reason)));
            }
        });
    }
    Ok(NewTask {
        payload: held(spec.payload),
        priority: spec.priority,
        group: spec.group,
        delay_ms: spec.delay_ms,
        max_attempts: spec.max_attempts,
        depends_on,
        key: spec.key,
    })
}

fn discipline(discipline: tqx_wire::Discipline) -> engine::Discipline {
    match discipline {
        tqx_wire::Discipline::Fifo => engine::Discipline::Fifo,
        tqx_wire::Discipline::Lifo => engine::Discipline::Lifo,
        tqx_wire::Discipline::Priority => engine::Discipline::Priority,
        tqx_wire::Discipline::RoundRobin => engine::Discipline::RoundRobin,
    }
}

fn wire_discipline(discipline: engine::Discipline) -> tqx_wire::Discipline {
    match discipline {
        engine::Discipline::Fifo => tqx_wire::Discipline::Fifo,
        engine::Discipline::Lifo => tqx_wire::Discipline::Lifo,
        engine::Discipline::Priority => tqx_wire::Discipline::Priority,
        engine::Discipline::RoundRobin => tqx_wire::Discipline::RoundRobin,
    }
}

/// The wire form of a queue's settings patch (the `configure_queue` request;
/// also what `tqx queue create|configure --binary` sends).
pub fn wire_patch(patch: &QueueConfigPatch) -> tqx_wire::QueuePatch {
    tqx_wire::QueuePatch {
        discipline: patch.discipline.map(wire_discipline),
        lease_ms: patch.lease_ms,
        max_attempts: patch.max_attempts,
        backoff_ms: patch.backoff_ms,
        backoff_max_ms: patch.backoff_max_ms,
        retention_ms: patch.retention_ms,
        dead_retention_ms: patch.dead_retention_ms,
        group_concurrency: patch.group_concurrency,
    }
}

/// Maps a decoded request to the [`Command`] a worker executes, checked by
/// `command::check_limits` like the HTTP API's (same codes and messages: every
/// length, count, `wait_ms` and dequeue `max`; a field over its length limit
/// is `payload_too_large` and the connection stays), plus batch references
/// only inside a batch, and `max_attempts` in its range (the engine's message).
/// Ranges the engine checks (lease, delay) are left to it, so each has one
/// message.
///
/// `Hello` and `Ping` are connection-level requests, not commands: they are
/// refused here with `invalid_argument` ([`take_frames`] answers them itself).
pub fn request_to_command(request: Request) -> Result<Command, (ErrorCode, String)> {
    let command = request_command(request)?;
    check_limits(&command).map_err(refused)?;
    Ok(command)
}

/// The command a request asks for, before `check_limits`: [`request_to_command`]
/// for a client's frame, and replay for a logged body (`wal/record.rs`), which
/// does not check limits again: a command that was executed must replay as it
/// ran, even after a later version lowers a limit.
pub fn request_command(request: Request) -> Result<Command, (ErrorCode, String)> {
    Ok(match request {
        Request::Hello { .. } | Request::Ping | Request::Auth { .. } => {
            return Err((ErrorCode::InvalidArgument, "hello, ping and auth are answered by the connection".into()))
        }
        Request::ConfigureQueue { queue, patch } => {
            let patch = QueueConfigPatch {
                discipline: patch.discipline.map(discipline),
                lease_ms: patch.lease_ms,
                max_attempts: patch.max_attempts,
                backoff_ms: patch.backoff_ms,
                backoff_max_ms: patch.backoff_max_ms,
                retention_ms: patch.retention_ms,
                dead_retention_ms: patch.dead_retention_ms,
                group_concurrency: patch.group_concurrency,
            };
            Command::ConfigureQueue { queue, patch }
        }
        // The engine's part of the statistics is the queue list (with the
        // same scope: admin on every queue); the reactor renders the `stats`
        // reply from it and its own counters (`server/stats.rs`).
        Request::ListQueues | Request::Stats => Command::ListQueues,
        Request::GetQueue { queue } => Command::GetQueue { queue },
        Request::DeleteQueue { queue, force } => Command::DeleteQueue { queue, force },
        Request::Enqueue { queue, task } => Command::Enqueue { queue, task: new_task(task, false)? },
        Request::EnqueueBatch { queue, tasks } => {
            let tasks = tasks.into_iter().map(|spec| new_task(spec, true)).collect::<Result<_, _>>()?;
            Command::EnqueueBatch { queue, tasks }
        }
        Request::Dequeue { queues, max, lease_ms, wait_ms } => {
            Command::Dequeue { queues, max: usize::from(max), lease_ms, wait_ms }
        }
        Request::GetTask { id } => Command::GetTask { id },
        Request::Complete { id, lease, result } => Command::Complete { id, lease, result: result.map(held) },
        Request::Fail { id, lease, error, retry } => Command::Fail { id, lease, error, retry },
        Request::Extend { id, lease, lease_ms } => Command::Extend { id, lease, lease_ms },
        Request::Cancel { id } => Command::Cancel { id },
        Request::ListTasks { queue, state, after, limit } => {
            Command::ListTasks { queue, state: engine_task_state(state), after, limit: usize::from(limit) }
        }
        Request::RetryTask { id } => Command::RetryTask { id },
        Request::DeleteTask { id } => Command::DeleteTask { id },
        Request::CompleteBatch { items } => {
            let items = items
                .into_iter()
                .map(|item| CompleteItem { id: item.id, lease: item.lease, result: item.result.map(held) })
                .collect();
            Command::CompleteBatch { items }
        }
    })
}

/// The opcode of the request `command` comes from (or encodes to): one per
/// command, so a body received for a command needs no opcode beside it
/// (`core::executor::Received`; the log stores the pair). One exception: a
/// `stats` request executes as `ListQueues` (a read, never logged), which the
/// connection renders as statistics.
pub fn command_opcode(command: &Command) -> Opcode {
    match command {
        Command::ConfigureQueue { .. } => Opcode::ConfigureQueue,
        Command::ListQueues => Opcode::ListQueues,
        Command::GetQueue { .. } => Opcode::GetQueue,
        Command::DeleteQueue { .. } => Opcode::DeleteQueue,
        Command::Enqueue { .. } => Opcode::Enqueue,
        Command::EnqueueBatch { .. } => Opcode::EnqueueBatch,
        Command::Dequeue { .. } => Opcode::Dequeue,
        Command::GetTask { .. } => Opcode::GetTask,
        Command::Complete { .. } => Opcode::Complete,
        Command::Fail { .. } => Opcode::Fail,
        Command::Extend { .. } => Opcode::Extend,
        Command::Cancel { .. } => Opcode::Cancel,
        Command::CompleteBatch { .. } => Opcode::CompleteBatch,
        Command::ListTasks { .. } => Opcode::ListTasks,
        Command::RetryTask { .. } => Opcode::RetryTask,
        Command::DeleteTask { .. } => Opcode::DeleteTask,
    }
}

/// The request a binary client sends for `command`: the reverse of
/// [`request_command`], which maps it back to an equal command
/// (`every_command_round_trips_through_its_request_body` in `tests.rs`).
///
/// Fails, naming the field, where the command has no request: a dequeue
/// `max` over the wire's 16 bits, a batch reference (`DepRef::Batch`) outside
/// a batch or over the wire's 32 bits. The wire encoder refuses the rest
/// (`EncodeError`: a string over its 16-bit length, an empty group or key,
/// `max_attempts: Some(0)`, a task id with bit 63 set). `command::check_limits`
/// refuses all of them at the edge, so a command that passed it always has a
/// request and a body (the record encoder asserts it).
pub fn command_to_request(command: &Command) -> Result<Request, String> {
    let spec = |task: &NewTask, in_batch: bool| -> Result<tqx_wire::TaskSpec, String> {
        let mut depends_on = Vec::with_capacity(task.depends_on.len());
        for dep in &task.depends_on {
            depends_on.push(match *dep {
                DepRef::Task(id) => Dep::Task(id),
                DepRef::Batch(k) if in_batch => {
                    Dep::Batch(u32::try_from(k).map_err(|_| format!("depends_on: #{k} does not fit 32 bits"))?)
                }
                DepRef::Batch(k) => return Err(format!("depends_on: #{k} outside a batch")),
            });
        }
        Ok(tqx_wire::TaskSpec {
            payload: task.payload.clone(),
            priority: task.priority,
            group: task.group.clone(),
            delay_ms: task.delay_ms,
            max_attempts: task.max_attempts,
            depends_on,
            key: task.key.clone(),
        })
    };
    let item =
        |item: &CompleteItem| tqx_wire::CompleteItem { id: item.id, lease: item.lease, result: item.result.clone() };
    Ok(match command {
        Command::ConfigureQueue { queue, patch } => {
            Request::ConfigureQueue { queue: queue.clone(), patch: wire_patch(patch) }
        }
        Command::ListQueues => Request::ListQueues,
        Command::GetQueue { queue } => Request::GetQueue { queue: queue.clone() },
        Command::DeleteQueue { queue, force } => Request::DeleteQueue { queue: queue.clone(), force: *force },
        Command::Enqueue { queue, task } => Request::Enqueue { queue: queue.clone(), task: spec(task, false)? },
        Command::EnqueueBatch { queue, tasks } => Request::EnqueueBatch {
            queue: queue.clone(),
            tasks: tasks.iter().map(|task| spec(task, true)).collect::<Result<_, _>>()?,
        },
        Command::Dequeue { queues, max, lease_ms, wait_ms } => Request::Dequeue {
            queues: queues.clone(),
            max: u16::try_from(*max).map_err(|_| format!("max: {max} does not fit 16 bits"))?,
            lease_ms: *lease_ms,
            wait_ms: *wait_ms,
        },
        Command::GetTask { id } => Request::GetTask { id: *id },
        Command::Complete { id, lease, result } => Request::Complete { id: *id, lease: *lease, result: result.clone() },
        Command::Fail { id, lease, error, retry } => {
            Request::Fail { id: *id, lease: *lease, error: error.clone(), retry: *retry }
        }
        Command::Extend { id, lease, lease_ms } => Request::Extend { id: *id, lease: *lease, lease_ms: *lease_ms },
        Command::Cancel { id } => Request::Cancel { id: *id },
        Command::CompleteBatch { items } => Request::CompleteBatch { items: items.iter().map(item).collect() },
        Command::ListTasks { queue, state, after, limit } => Request::ListTasks {
            queue: queue.clone(),
            state: task_state(*state),
            after: *after,
            limit: u16::try_from(*limit).map_err(|_| format!("limit: {limit} does not fit 16 bits"))?,
        },
        Command::RetryTask { id } => Request::RetryTask { id: *id },
        Command::DeleteTask { id } => Request::DeleteTask { id: *id },
    })
}

fn engine_task_state(state: tqx_wire::TaskState) -> engine::TaskState {
    match state {
        tqx_wire::TaskState::Waiting => engine::TaskState::Waiting,
        tqx_wire::TaskState::Delayed => engine::TaskState::Delayed,
        tqx_wire::TaskState::Ready => engine::TaskState::Ready,
        tqx_wire::TaskState::Leased => engine::TaskState::Leased,
        tqx_wire::TaskState::Completed => engine::TaskState::Completed,
        tqx_wire::TaskState::Dead => engine::TaskState::Dead,
        tqx_wire::TaskState::Cancelled => engine::TaskState::Cancelled,
    }
}

fn task_state(state: engine::TaskState) -> tqx_wire::TaskState {
    match state {
        engine::TaskState::Waiting => tqx_wire::TaskState::Waiting,
        engine::TaskState::Delayed => tqx_wire::TaskState::Delayed,
        engine::TaskState::Ready => tqx_wire::TaskState::Ready,
        engine::TaskState::Leased => tqx_wire::TaskState::Leased,
        engine::TaskState::Completed => tqx_wire::TaskState::Completed,
        engine::TaskState::Dead => tqx_wire::TaskState::Dead,
        engine::TaskState::Cancelled => tqx_wire::TaskState::Cancelled,
    }
}

fn queue_info(info: &engine::QueueInfo) -> tqx_wire::QueueInfo {
    let config = &info.config;
    tqx_wire::QueueInfo {
        name: info.name.to_string(),
        discipline: wire_discipline(config.discipline),
        lease_ms: config.lease_ms,
        max_attempts: config.max_attempts,
        backoff_ms: config.backoff_ms,
        backoff_max_ms: config.backoff_max_ms,
        retention_ms: config.retention_ms,
        dead_retention_ms: config.dead_retention_ms,
        group_concurrency: config.group_concurrency,
        counts: info.counts.0,
    }
}

fn enqueued(enqueued: &engine::Enqueued) -> tqx_wire::Enqueued {
    tqx_wire::Enqueued { id: enqueued.id, state: task_state(enqueued.state), created: enqueued.created }
}

/// Appends the reply frame for a worker's `reply` to the request `opcode` /
/// `request_id`. Every [`Reply`] has a wire form: engine errors become
/// `Error` with [`error_code`] and the same message as over HTTP, a storage
/// failure `storage_failed`.
pub fn render_reply(reply: &Reply, opcode: u8, request_id: u64, out: &mut Vec<u8>) {
    let response = match reply {
        Reply::Queue(info) => Response::Queue(queue_info(info)),
        Reply::Queues(queues) => Response::Queues(queues.iter().map(queue_info).collect()),
        Reply::QueueDeleted { .. } => Response::QueueDeleted,
        Reply::Enqueued(entry) => Response::Enqueued(enqueued(entry)),
        Reply::EnqueuedBatch(entries) => Response::EnqueuedBatch(entries.iter().map(enqueued).collect()),
        Reply::Leased(tasks) => Response::Leased(
            tasks
                .iter()
                .map(|task| tqx_wire::LeasedTask {
                    id: task.id,
                    queue: task.queue.to_string(),
                    payload: task.payload.clone(),
                    priority: task.priority,
                    group: task.group.as_deref().map(str::to_owned),
                    attempt: task.attempt,
                    lease: task.lease,
                    lease_expires_at_ms: task.lease_expires_at_ms,
                })
                .collect(),
        ),
        Reply::Task(view) => Response::Task(task_view(view)),
        Reply::TaskPage(page) => {
            Response::TaskPage { tasks: page.tasks.iter().map(task_view).collect(), next_cursor: page.next_cursor }
        }
        Reply::TaskDeleted { .. } => Response::TaskDeleted,
        Reply::TaskState { id, state } => Response::TaskState { id: *id, state: task_state(*state) },
        Reply::Extended { id, lease_expires_at_ms } => {
            Response::Extended { id: *id, lease_expires_at_ms: *lease_expires_at_ms }
        }
        Reply::CompletedBatch(outcomes) => Response::CompletedBatch(
            outcomes
                .iter()
                .map(|(id, outcome)| (*id, outcome.as_ref().map(|state| task_state(*state)).map_err(error_code)))
                .collect(),
        ),
        Reply::Error(error) => Response::Error { code: error_code(error), message: error.to_string() },
        Reply::StorageFailed(reason) => Response::Error { code: ErrorCode::StorageFailed, message: reason.to_string() },
    };
    response.encode(opcode, request_id, out);
}

fn task_view(view: &engine::TaskView) -> tqx_wire::TaskView {
    tqx_wire::TaskView {
        id: view.id,
        queue: view.queue.to_string(),
        state: task_state(view.state),
        payload: view.payload.clone(),
        priority: view.priority,
        group: view.group.as_deref().map(str::to_owned),
        depends_on: view.depends_on.clone(),
        key: view.key.clone(),
        attempts: view.attempts,
        max_attempts: view.max_attempts,
        result: view.result.clone(),
        error: view.error.clone(),
        created_at_ms: view.created_at_ms,
        updated_at_ms: view.updated_at_ms,
        not_before_ms: view.not_before_ms,
        lease_expires_at_ms: view.lease_expires_at_ms,
        purge_at_ms: view.purge_at_ms,
    }
}

#[cfg(test)]
pub(crate) mod tests;
