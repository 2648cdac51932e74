//! The async client: typed calls over one shared, pipelined, reconnecting
//! connection.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tqx_wire::{
    CompleteItem, CompleteOutcome, Enqueued, LeasedTask, QueueInfo, QueuePatch, Request, Response, TaskSpec, TaskState,
    TaskView, HEADER_BYTES,
};

use crate::connection::{self, AttemptError, Connection, Outcome, CONNECTION_REQUEST_ID};
use crate::error::ClientError;
use crate::options::ClientOptions;

/// A TaskQueueX client over the binary protocol.
///
/// Cheap to clone: clones share one connection, on which any number of calls
/// may be in flight at once (each waits for its own reply, matched by request
/// id). When the connection drops, the next call reconnects, with exponential
/// backoff and full jitter. Calls in flight when it dropped fail with
/// [`ClientError::ConnectionLost`] (outcome unknown), except those that are
/// safe to send again, which are resent on the new connection: `ping`,
/// `list_queues`, `get_queue`, `get_task`, and an `enqueue` / `enqueue_batch`
/// whose tasks all carry an idempotency key (the server's key makes the
/// resend return the task the first send created, if it did).
///
/// The connection's reader and writer are tokio tasks: the client must be
/// used inside a tokio runtime (any flavour). Outside one, use
/// [`crate::blocking::Client`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    options: ClientOptions,
    /// Request ids: unique per client (hence per connection), from 1 (0 is the
    /// server's id for connection-level errors).
    next_request_id: AtomicU64,
    /// The connection calls use; replaced when it is found closed.
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while (re)connecting, so one caller connects and the others wait
    /// for its result instead of each opening a connection.
    reconnecting: tokio::sync::Mutex<()>,
    /// Failed (re)connect cycles so far, and the last one's error: a caller
    /// that waited for `reconnecting` while a cycle failed returns that error
    /// instead of starting another cycle, so N waiting calls cost one cycle.
    failed_cycles: AtomicU64,
    last_failure: Mutex<Option<ClientError>>,
    /// State of the splitmix64 sequence that draws the backoff jitter.
    jitter_state: AtomicU64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`, e.g. `127.0.0.1:7701`), does the hello
    /// and waits until the server is ready (not recovering), trying up to
    /// `options.reconnect_attempts_max` times with backoff.
    pub async fn connect(addr: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let seed = RandomState::new().build_hasher().finish();
        let client = Client {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                options,
                next_request_id: AtomicU64::new(CONNECTION_REQUEST_ID + 1),
                current: Mutex::new(None),
                reconnecting: tokio::sync::Mutex::new(()),
                failed_cycles: AtomicU64::new(0),
                last_failure: Mutex::new(None),
                jitter_state: AtomicU64::new(seed),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The address given to [`Client::connect`].
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Liveness and readiness: `false` while the server recovers its state
    /// (every other call then fails with `recovering`). Resent after a drop.
    pub async fn ping(&self) -> Result<bool, ClientError> {
        match self.call(Request::Ping, Resend::Safe, 0).await? {
            Response::Pong { ready } => Ok(ready),
            other => Err(unexpected("ping", other)),
        }
    }

    /// The server's statistics: the JSON document of `GET /v1/stats`
    /// (docs/http-api.md), as UTF-8 bytes. Resent after a drop.
    pub async fn stats(&self) -> Result<Bytes, ClientError> {
        match self.call(Request::Stats, Resend::Safe, 0).await? {
            Response::Stats(document) => Ok(document),
            other => Err(unexpected("stats", other)),
        }
    }

    /// Creates a queue or changes its settings (`None` fields keep theirs).
    pub async fn configure_queue(&self, queue: &str, patch: &QueuePatch) -> Result<QueueInfo, ClientError> {
        let request = Request::ConfigureQueue { queue: queue.to_string(), patch: patch.clone() };
        match self.call(request, Resend::Unsafe, 0).await? {
            Response::Queue(info) if info.name == queue => Ok(info),
            other => Err(unexpected("configure_queue", other)),
        }
    }

    /// Every queue, in name order, with its settings and counts. Resent after a drop.
    pub async fn list_queues(&self) -> Result<Vec<QueueInfo>, ClientError> {
        match self.call(Request::ListQueues, Resend::Safe, 0).await? {
            Response::Queues(queues) => Ok(queues),
            other => Err(unexpected("list_queues", other)),
        }
    }

    /// One queue's settings and counts. Resent after a drop.
    pub async fn get_queue(&self, queue: &str) -> Result<QueueInfo, ClientError> {
        match self.call(Request::GetQueue { queue: queue.to_string() }, Resend::Safe, 0).await? {
            Response::Queue(info) if info.name == queue => Ok(info),
            other => Err(unexpected("get_queue", other)),
        }
    }

    /// Deletes a queue; with `force`, cancels its unfinished tasks (and their
    /// dependents) first, else fails with `queue_not_empty` if it has any.
    pub async fn delete_queue(&self, queue: &str, force: bool) -> Result<(), ClientError> {
        match self.call(Request::DeleteQueue { queue: queue.to_string(), force }, Resend::Unsafe, 0).await? {
            Response::QueueDeleted => Ok(()),
            other => Err(unexpected("delete_queue", other)),
        }
    }

    /// Adds a task (creating the queue with defaults if needed). With a `key`
    /// the queue already holds, returns the original task with `created: false`;
    /// that is also what makes a keyed enqueue safe to resend after a drop.
    pub async fn enqueue(&self, queue: &str, task: TaskSpec) -> Result<Enqueued, ClientError> {
        let resend = if task.key.is_some() { Resend::Safe } else { Resend::Unsafe };
        match self.call(Request::Enqueue { queue: queue.to_string(), task }, resend, 0).await? {
            Response::Enqueued(enqueued) => Ok(enqueued),
            other => Err(unexpected("enqueue", other)),
        }
    }

    /// Adds tasks all or nothing (`Dep::Batch(k)` names the k-th task of the
    /// batch). Resent after a drop only if every task carries a key.
    pub async fn enqueue_batch(&self, queue: &str, tasks: Vec<TaskSpec>) -> Result<Vec<Enqueued>, ClientError> {
        let all_keyed = !tasks.is_empty() && tasks.iter().all(|task| task.key.is_some());
        let resend = if all_keyed { Resend::Safe } else { Resend::Unsafe };
        match self.call(Request::EnqueueBatch { queue: queue.to_string(), tasks }, resend, 0).await? {
            Response::EnqueuedBatch(entries) => Ok(entries),
            other => Err(unexpected("enqueue_batch", other)),
        }
    }

    /// Leases up to `max` ready tasks from `queues`, taken in the order given,
    /// for `lease_ms` (`None`: each queue's). With `wait_ms` > 0 and nothing
    /// ready, the server holds the call until a task is ready or `wait_ms`
    /// passes (then the list is empty); the call's timeout grows by `wait_ms`.
    /// A queue that does not exist is `ErrorCode::QueueNotFound` (create it
    /// with [`Client::configure_queue`] before polling it).
    pub async fn dequeue(
        &self,
        queues: &[impl AsRef<str>],
        max: u16,
        lease_ms: Option<u64>,
        wait_ms: u64,
    ) -> Result<Vec<LeasedTask>, ClientError> {
        let queues = queues.iter().map(|queue| queue.as_ref().to_string()).collect();
        match self.call(Request::Dequeue { queues, max, lease_ms, wait_ms }, Resend::Unsafe, wait_ms).await? {
            Response::Leased(tasks) => Ok(tasks),
            other => Err(unexpected("dequeue", other)),
        }
    }

    /// Every field of a task. Resent after a drop.
    pub async fn get_task(&self, id: u64) -> Result<TaskView, ClientError> {
        match self.call(Request::GetTask { id }, Resend::Safe, 0).await? {
            Response::Task(view) if view.id == id => Ok(view),
            other => Err(unexpected("get_task", other)),
        }
    }

    /// Completes a leased task, with an optional result; its state afterwards.
    pub async fn complete(&self, id: u64, lease: u64, result: Option<Bytes>) -> Result<TaskState, ClientError> {
        self.task_state("complete", id, Request::Complete { id, lease, result }).await
    }

    /// Fails a leased task: retried with backoff if `retry` and attempts are
    /// left (`delayed` or `ready`), else `dead`.
    pub async fn fail(&self, id: u64, lease: u64, error: &str, retry: bool) -> Result<TaskState, ClientError> {
        self.task_state("fail", id, Request::Fail { id, lease, error: error.to_string(), retry }).await
    }

    /// Extends a lease to `lease_ms` from now; the new expiry (ms since the epoch).
    pub async fn extend(&self, id: u64, lease: u64, lease_ms: u64) -> Result<u64, ClientError> {
        match self.call(Request::Extend { id, lease, lease_ms }, Resend::Unsafe, 0).await? {
            Response::Extended { id: reply_id, lease_expires_at_ms } if reply_id == id => Ok(lease_expires_at_ms),
            other => Err(unexpected("extend", other)),
        }
    }

    /// Cancels a task that has not finished, and transitively its dependents.
    pub async fn cancel(&self, id: u64) -> Result<TaskState, ClientError> {
        self.task_state("cancel", id, Request::Cancel { id }).await
    }

    /// Completes each item on its own (not all or nothing): one outcome per
    /// item, in order, each `Ok(state)` or the error code a single complete
    /// would have had.
    pub async fn complete_batch(&self, items: Vec<CompleteItem>) -> Result<Vec<(u64, CompleteOutcome)>, ClientError> {
        match self.call(Request::CompleteBatch { items }, Resend::Unsafe, 0).await? {
            Response::CompletedBatch(outcomes) => Ok(outcomes),
            other => Err(unexpected("complete_batch", other)),
        }
    }

    /// One page of the tasks of `queue` in `state` with ids above `after` (0:
    /// from the start), in id order, at most `limit`; and the `after` of the
    /// next page (`None`: done). A page may be short, even empty, with more
    /// to come. Resent after a drop.
    pub async fn list_tasks(
        &self,
        queue: &str,
        state: TaskState,
        after: u64,
        limit: u16,
    ) -> Result<(Vec<TaskView>, Option<u64>), ClientError> {
        let request = Request::ListTasks { queue: queue.to_string(), state, after, limit };
        match self.call(request, Resend::Safe, 0).await? {
            Response::TaskPage { tasks, next_cursor } => Ok((tasks, next_cursor)),
            other => Err(unexpected("list_tasks", other)),
        }
    }

    /// Moves a dead task back to `ready` with fresh attempts; its state afterwards.
    pub async fn retry_task(&self, id: u64) -> Result<TaskState, ClientError> {
        self.task_state("retry_task", id, Request::RetryTask { id }).await
    }

    /// Forgets a finished task now (`task_not_finished` if it has not finished).
    pub async fn delete_task(&self, id: u64) -> Result<(), ClientError> {
        match self.call(Request::DeleteTask { id }, Resend::Unsafe, 0).await? {
            Response::TaskDeleted => Ok(()),
            other => Err(unexpected("delete_task", other)),
        }
    }

    async fn task_state(&self, name: &str, id: u64, request: Request) -> Result<TaskState, ClientError> {
        match self.call(request, Resend::Unsafe, 0).await? {
            // The id in the reply is a cheap check that replies are matched right.
            Response::TaskState { id: reply_id, state } if reply_id == id => Ok(state),
            other => Err(unexpected(name, other)),
        }
    }

    /// Sends `request` and waits for its reply (`extra_wait_ms` on top of the
    /// request timeout). Reconnects first if the connection is closed. A
    /// request that was never handed to a live connection is sent again on
    /// the next; one that was, and whose connection dropped, is sent again only
    /// if `resend` says it is safe.
    async fn call(&self, request: Request, resend: Resend, extra_wait_ms: u64) -> Result<Response, ClientError> {
        let resend_safe = resend == Resend::Safe;
        let mut frame = Vec::new();
        // Values no frame can carry (an empty key, a 70 KB queue name) are refused
        // here, before anything is sent.
        if let Err(error) = request.try_encode(CONNECTION_REQUEST_ID, &mut frame) {
            return Err(ClientError::InvalidRequest { reason: error.message });
        }
        let body_bytes = frame.len() - HEADER_BYTES;
        let timeout_ms = self.inner.options.request_timeout_ms.saturating_add(extra_wait_ms);
        // Each round either gets a fresh connection or fails; bound the rounds
        // anyway, against a server that accepts and at once drops every connection.
        let rounds_max = self.inner.options.reconnect_attempts_max.max(1);
        let mut lost_reason = String::new();
        for _ in 0..rounds_max {
            let connection = self.connection().await?;
            if body_bytes > connection.frame_body_bytes_max {
                return Err(ClientError::RequestTooLarge { body_bytes, limit_bytes: connection.frame_body_bytes_max });
            }
            let request_id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
            // The header's layout is fixed (wire/src/frame.rs): the id is the
            // last 8 bytes, little-endian; set it instead of encoding again.
            frame[HEADER_BYTES - 8..HEADER_BYTES].copy_from_slice(&request_id.to_le_bytes());
            let Ok(reply) = connection.register(request_id) else {
                continue; // closed before we sent anything: try the next connection
            };
            if connection.send(Bytes::copy_from_slice(&frame)).await.is_err() {
                connection.forget(request_id);
                continue; // the writer had stopped: nothing was sent
            }
            match tokio::time::timeout(Duration::from_millis(timeout_ms), reply).await {
                Err(_elapsed) => {
                    connection.forget(request_id);
                    return Err(ClientError::Timeout { timeout_ms, resend_safe });
                }
                // The table always answers before dropping a sender; if not, the
                // connection is gone all the same.
                Ok(Err(_dropped)) => lost_reason = "the connection ended".to_string(),
                Ok(Ok(Outcome::Reply(Response::Error { code, message }))) => {
                    return Err(ClientError::Server { code, message })
                }
                Ok(Ok(Outcome::Reply(response))) => return Ok(response),
                Ok(Ok(Outcome::Undecodable(reason))) => return Err(ClientError::Protocol { reason }),
                Ok(Ok(Outcome::Lost(reason))) => lost_reason = reason,
            }
            if !resend_safe {
                return Err(ClientError::ConnectionLost { reason: lost_reason, resend_safe });
            }
            tracing::debug!(opcode = ?request.opcode(), reason = %lost_reason, "connection lost; resending");
        }
        Err(ClientError::ConnectionLost { reason: lost_reason, resend_safe })
    }

    /// The live connection, reconnecting (with backoff) if there is none.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        if let Some(connection) = self.live_connection() {
            return Ok(connection);
        }
        let failed_cycles_seen = self.inner.failed_cycles.load(Ordering::Acquire);
        let _reconnecting = self.inner.reconnecting.lock().await;
        if let Some(connection) = self.live_connection() {
            return Ok(connection); // another caller reconnected while we waited
        }
        if self.inner.failed_cycles.load(Ordering::Acquire) != failed_cycles_seen {
            let last_failure = lock(&self.inner.last_failure).clone();
            if let Some(error) = last_failure {
                return Err(error); // another caller just tried, and failed
            }
        }
        match self.open_with_backoff().await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *lock(&self.inner.current) = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                *lock(&self.inner.last_failure) = Some(error.clone());
                self.inner.failed_cycles.fetch_add(1, Ordering::Release);
                Err(error)
            }
        }
    }

    fn live_connection(&self) -> Option<Arc<Connection>> {
        let current = lock(&self.inner.current);
        current.as_ref().filter(|connection| !connection.is_closed()).cloned()
    }

    async fn open_with_backoff(&self) -> Result<Connection, ClientError> {
        let options = &self.inner.options;
        let attempts = options.reconnect_attempts_max.max(1);
        let next_request_id = || self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut reason = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait_ms = self.jitter_ms(options.backoff_ceiling_ms(attempt - 1));
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            }
            match connection::open(&self.inner.addr, options, &next_request_id).await {
                Ok(connection) => {
                    if attempt > 0 {
                        tracing::info!(addr = %self.inner.addr, attempt = attempt + 1, "connected");
                    }
                    return Ok(connection);
                }
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Transient(why)) => {
                    tracing::debug!(addr = %self.inner.addr, attempt = attempt + 1, %why, "connection attempt failed");
                    reason = why;
                }
            }
        }
        Err(ClientError::Connect { addr: self.inner.addr.clone(), attempts, reason })
    }

    /// Uniform in `[0, ceiling_ms]` ("full jitter").
    fn jitter_ms(&self, ceiling_ms: u64) -> u64 {
        let state = self.inner.jitter_state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA);
        match ceiling_ms.checked_add(1) {
            Some(span) => mix64(state) % span,
            None => mix64(state),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Sending it twice has the effect of sending it once.
    Safe,
    Unsafe,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks (plain loads and stores).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unexpected(call: &str, response: Response) -> ClientError {
    ClientError::Protocol { reason: format!("unexpected reply to {call}: {response:?}") }
}
