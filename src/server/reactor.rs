//! A reactor thread: one tokio-uring runtime (one io_uring ring) that accepts on
//! its own SO_REUSEPORT listener, reads and parses requests, hands commands to the
//! workers, and writes replies in request order.
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
//! A connection's receive buffer is bounded: `http::next_request` refuses a head
//! longer than `head_bytes_max` and a body longer than `body_bytes_max`, so the
//! buffer never holds more than one maximal request plus one read.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::worker::Job;
use super::{os, Shared};
use crate::command::Reply;
use crate::http::{self, Action, Next};

/// Submission queue entries per ring (the completion queue gets twice as many).
const RING_ENTRIES_COUNT: u32 = 1024;
/// A new connection's receive buffer; it grows (doubling) only for larger requests.
const READ_BUFFER_BYTES_INITIAL: usize = 4096;
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
    shared: Arc<Shared>,
    core: Option<usize>,
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
    runtime.block_on(accept_loop(listener, shared));
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = TcpListener::from_std(listener);
    let live = Rc::new(Cell::new(0usize));
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break; // dropping the stream closes it
                }
                // Replies are written whole; do not let Nagle hold the last segment.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "set_nodelay failed");
                }
                let fd = stream.as_raw_fd();
                shared.track_socket(fd);
                live.set(live.get() + 1);
                let (shared, live) = (shared.clone(), live.clone());
                tokio_uring::spawn(async move {
                    serve_connection(&stream, &shared).await;
                    shared.untrack_socket(fd);
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
    let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
    while live.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a parsed request is waiting for before its response can be written.
enum Pending {
    Rendered(Vec<u8>),
    Health { keep_alive: bool },
    Overloaded { keep_alive: bool },
    ShuttingDown,
    Worker { reply: oneshot::Receiver<Reply>, keep_alive: bool },
}

async fn serve_connection(stream: &TcpStream, shared: &Shared) {
    let mut input: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES_INITIAL);
    let mut output: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES_INITIAL);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        if input.len() == input.capacity() {
            input.reserve(input.capacity().max(READ_BUFFER_BYTES_INITIAL));
        }
        let start = input.len();
        let (result, slice) = stream.read(input.slice(start..)).await;
        input = slice.into_inner();
        match result {
            Ok(0) => break, // end of stream: the peer closed, or the server is stopping
            Ok(_) => {}
            Err(error) => {
                // A client resetting its connection is normal, not worth a warning.
                tracing::debug!(%error, "read failed");
                break;
            }
        }

        let mut close = false;
        let mut consumed_total = 0;
        while !close {
            match http::next_request(&input[consumed_total..], &shared.limits) {
                Next::Incomplete => break,
                Next::Fatal { response } => {
                    pending.push_back(Pending::Rendered(response));
                    close = true;
                }
                Next::Request { action, keep_alive, consumed } => {
                    consumed_total += consumed;
                    close = !keep_alive;
                    pending.push_back(match action {
                        Action::Respond(response) => Pending::Rendered(response),
                        Action::Health => Pending::Health { keep_alive },
                        Action::Execute(_) if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                            close = true;
                            Pending::ShuttingDown
                        }
                        Action::Execute(command) => {
                            let (reply, receiver) = oneshot::channel();
                            match shared.submit(Box::new(Job { command, reply })) {
                                Ok(()) => Pending::Worker { reply: receiver, keep_alive },
                                Err(_) => Pending::Overloaded { keep_alive },
                            }
                        }
                    });
                }
            }
        }
        input.drain(..consumed_total);

        // Answer in request order, whatever order the workers finish in.
        for waiting in pending.drain(..) {
            match waiting {
                Pending::Rendered(response) => output.extend_from_slice(&response),
                Pending::Health { keep_alive } => http::render_health(keep_alive, &mut output),
                Pending::Overloaded { keep_alive } => http::render_overloaded(keep_alive, &mut output),
                Pending::ShuttingDown => http::render_shutting_down(&mut output),
                Pending::Worker { reply, keep_alive } => match reply.await {
                    Ok(reply) => http::render_reply(&reply, keep_alive, &mut output),
                    Err(_) => {
                        // The worker side is gone: only happens while stopping.
                        http::render_shutting_down(&mut output);
                        close = true;
                    }
                },
            }
        }
        if !output.is_empty() {
            let (result, buffer) = stream.write_all(output).await;
            output = buffer;
            output.clear();
            if let Err(error) = result {
                tracing::debug!(%error, "write failed");
                break;
            }
        }
        if close {
            break;
        }
    }
    // Half-close first so a client still sending gets our last response rather
    // than a reset; the descriptor closes when the stream is dropped.
    let _ = stream.shutdown(Shutdown::Write);
}
