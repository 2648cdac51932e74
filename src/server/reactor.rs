//! A reactor thread: one tokio-uring runtime (one io_uring ring) that accepts on
//! its own SO_REUSEPORT listeners, one per protocol, and runs each connection
//! as tasks on the ring: HTTP connections (`http_conn.rs`) answer in request
//! order, binary ones (`binary_conn.rs`) as soon as each reply is released.
//! Replies come back through the reactor's mailbox and outbox (`outbox.rs`).
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

use std::cell::Cell;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_uring::buf::fixed::FixedBufPool;
use tokio_uring::net::{TcpListener, TcpStream};

use super::conn_timers::{self, ReactorConns};
use super::outbox::Mailbox;
use super::ring::{self, BinaryIo};
use super::tls::{self, Stream};
use super::{binary_conn, http_conn, os, Shared};
use crate::http;
use crate::limits::REPLY_BUDGET_RECHECK_MS;
use crate::metrics::{Protocol as MetricsProtocol, ReactorMetrics};

/// Submission queue entries per ring (the completion queue gets twice as many).
const RING_ENTRIES_COUNT: u32 = 1024;
/// Size of each registered receive buffer (`--fixed-buffers`).
pub(crate) const FIXED_BUFFER_BYTES: usize = 16 << 10;
/// How long a stopping reactor waits for its connections to finish their requests.
pub(crate) const STOP_GRACE_MS: u64 = 10_000;
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
    binary_io: (BinaryIo, usize),
    started: Sender<io::Result<()>>,
) {
    if let Some(core) = core {
        if let Err(error) = os::pin_current_thread(core) {
            tracing::warn!(%error, core, "could not pin reactor thread");
        }
    }
    // `--binary-io io-uring` (experimental, `ring/`): the binary listener goes
    // to a reactor thread of its own on the same core; this one serves HTTP.
    let (binary_listener, ring_thread) = match binary_io {
        (BinaryIo::TokioUring, _) => (Some(binary_listener), None),
        (BinaryIo::IoUring, index) => match ring::spawn(binary_listener, shared.clone(), core, index) {
            Ok(handle) => (None, Some(handle)),
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        },
    };
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
        // This thread's request counts and latencies (only it writes them).
        let metrics = shared.metrics.register_reactor();
        let replies = binary_conn::Replies::start(&shared.watermark, metrics.clone(), shared.metrics.clock);
        let mailbox = replies.mailbox.clone();
        // This reactor's connections, swept for missed request deadlines and
        // idle timeouts (conn_timers.rs).
        let conns = Rc::new(ReactorConns::default());
        tokio_uring::spawn(conn_timers::sweep_loop(conns.clone(), shared.clone()));
        let binary = binary_listener.map(|binary_listener| {
            tokio_uring::spawn(accept_loop(
                binary_listener,
                shared.clone(),
                Protocol::Binary(replies),
                live.clone(),
                conns.clone(),
            ))
        });
        accept_loop(listener, shared, Protocol::Http(pool.flatten(), mailbox, metrics), live.clone(), conns).await;
        if let Some(binary) = binary {
            let _ = binary.await;
        }
        let deadline = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        while live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    if let Some(ring_thread) = ring_thread {
        let _ = ring_thread.join();
    }
}

/// What a listener's connections speak. Registered receive buffers
/// (`--fixed-buffers`) serve HTTP reads only: a binary connection reads into
/// its frame buffer (see `binary_conn.rs`).
#[derive(Clone)]
enum Protocol {
    /// With the reactor's mailbox, through which replies that wait for the
    /// durable watermark come back (`outbox.rs`), and its metrics.
    Http(Option<FixedBufPool<Vec<u8>>>, Arc<Mailbox>, Arc<ReactorMetrics>),
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
    let counted = match protocol {
        Protocol::Http(..) => MetricsProtocol::Http as usize,
        Protocol::Binary(_) => MetricsProtocol::Binary as usize,
    };
    let connections = &shared.conns.metrics;
    while !shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept().await {
            Ok((stream, peer)) => {
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
                    shared.refused(counted, || Some(peer));
                    live.set(live.get() + 1);
                    let (shared, live, protocol) = (shared.clone(), live.clone(), protocol.clone());
                    tokio_uring::spawn(async move {
                        refuse(stream, &protocol, shared.connections_max, shared.tls.is_some()).await;
                        live.set(live.get() - 1);
                    });
                    continue;
                }
                let fd = stream.as_raw_fd();
                shared.track_socket(fd);
                let timer = conns.register(&shared.conns, fd, counted);
                connections.accepted[counted].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                connections.open[counted].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                live.set(live.get() + 1);
                let (shared, live, protocol, conns) = (shared.clone(), live.clone(), protocol.clone(), conns.clone());
                tokio_uring::spawn(async move {
                    let listener = match protocol {
                        Protocol::Http(..) => tls::Listener::Http,
                        Protocol::Binary(_) => tls::Listener::Binary,
                    };
                    match Stream::accepted(stream, shared.tls.as_ref(), listener, &timer, shared.read_bytes_max) {
                        Ok(stream) => {
                            let stream = Rc::new(stream);
                            match protocol {
                                Protocol::Http(pool, mailbox, metrics) => {
                                    http_conn::serve_connection(&stream, &shared, pool, &timer, &mailbox, &metrics)
                                        .await
                                }
                                Protocol::Binary(replies) => {
                                    binary_conn::serve_connection(&stream, &shared, &replies, &timer).await
                                }
                            }
                        }
                        // Only a configuration rustls refuses does this; the
                        // socket is dropped (closed).
                        Err(error) => tracing::warn!(%error, "cannot start a TLS session"),
                    }
                    // Before the socket is closed (when `stream` drops), so no
                    // pruner shuts down a reused descriptor number.
                    conns.unregister(&shared.conns, &timer);
                    shared.untrack_socket(fd);
                    shared.connections_open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    shared.conns.metrics.open[counted].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    live.set(live.get() - 1);
                });
            }
            Err(error) => {
                if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                // Reported by the activity log (docs/logs.md), not once per failure.
                shared.activity.accept_failed(&error);
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_PAUSE_MS)).await;
            }
        }
    }
    shared.untrack_socket(listener.as_raw_fd());
}

/// Answers a connection past `--max-connections` with one `overloaded`
/// refusal in its protocol, then closes it, as Redis does past `maxclients`.
/// Nothing is read: a client that already sent a request may see the close
/// (a reset) before the refusal. Under TLS (`tls`) the connection is closed
/// without a word: a refusal needs a handshake, which is what is refused.
async fn refuse(stream: TcpStream, protocol: &Protocol, limit: usize, tls: bool) {
    if tls {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
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
