//! What requests and replies say, independent of their bytes (see `codec.rs`
//! for the layouts, and `docs/wire.md`).

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError, ErrorCode};

/// Operation codes. A reply carries the opcode of its request (with
/// [`crate::FLAG_REPLY`] set in `flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Hello = 0x01,
    Ping = 0x02,
    Auth = 0x03,
    /// The server's statistics as a JSON document (docs/wire.md, docs/metrics.md).
    Stats = 0x04,
    ConfigureQueue = 0x10,
    ListQueues = 0x11,
    GetQueue = 0x12,
    DeleteQueue = 0x13,
    ListTasks = 0x14,
    Enqueue = 0x20,
    EnqueueBatch = 0x21,
    Dequeue = 0x30,
    GetTask = 0x40,
    Complete = 0x41,
    Fail = 0x42,
    Extend = 0x43,
    Cancel = 0x44,
    CompleteBatch = 0x45,
    RetryTask = 0x46,
    DeleteTask = 0x47,
}

impl Opcode {
    pub const ALL: [Opcode; 20] = [
        Opcode::Hello,
        Opcode::Ping,
        Opcode::Auth,
        Opcode::Stats,
        Opcode::ConfigureQueue,
        Opcode::ListQueues,
        Opcode::GetQueue,
        Opcode::DeleteQueue,
        Opcode::ListTasks,
        Opcode::Enqueue,
        Opcode::EnqueueBatch,
        Opcode::Dequeue,
        Opcode::GetTask,
        Opcode::Complete,
        Opcode::Fail,
        Opcode::Extend,
        Opcode::Cancel,
        Opcode::CompleteBatch,
        Opcode::RetryTask,
        Opcode::DeleteTask,
    ];

    pub fn from_u8(value: u8) -> Option<Opcode> {
        Opcode::ALL.iter().copied().find(|o| *o as u8 == value)
    }

    /// The operation's name in `snake_case`, as in `docs/wire.md` and in decode
    /// error messages.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Hello => "hello",
            Opcode::Ping => "ping",
            Opcode::Auth => "auth",
            Opcode::Stats => "stats",
            Opcode::ConfigureQueue => "configure_queue",
            Opcode::ListQueues => "list_queues",
            Opcode::GetQueue => "get_queue",
            Opcode::DeleteQueue => "delete_queue",
            Opcode::ListTasks => "list_tasks",
            Opcode::Enqueue => "enqueue",
            Opcode::EnqueueBatch => "enqueue_batch",
            Opcode::Dequeue => "dequeue",
            Opcode::GetTask => "get_task",
            Opcode::Complete => "complete",
            Opcode::Fail => "fail",
            Opcode::Extend => "extend",
            Opcode::Cancel => "cancel",
            Opcode::CompleteBatch => "complete_batch",
            Opcode::RetryTask => "retry_task",
            Opcode::DeleteTask => "delete_task",
        }
    }
}

/// Bit of [`Response::Authenticated`]'s `scopes`: enqueue into the token's queues.
pub const SCOPE_PRODUCE: u8 = 1 << 0;
/// Bit of `scopes`: lease, complete, fail and extend tasks of the token's queues.
pub const SCOPE_CONSUME: u8 = 1 << 1;
/// Bit of `scopes`: configure, inspect and delete queues (and everything else).
pub const SCOPE_ADMIN: u8 = 1 << 2;
/// Every bit `scopes` may have; the others are reserved (0).
pub const SCOPES_ALL: u8 = SCOPE_PRODUCE | SCOPE_CONSUME | SCOPE_ADMIN;

/// Bytes that must not be printed: an API token. `Debug` shows only its
/// length, so a request logged or shown in a test failure does not leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub Bytes);

impl Secret {
    pub fn new(bytes: impl Into<Bytes>) -> Secret {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &Bytes {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TaskState {
    Waiting = 0,
    Delayed = 1,
    Ready = 2,
    Leased = 3,
    Completed = 4,
    Dead = 5,
    Cancelled = 6,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Waiting,
        TaskState::Delayed,
        TaskState::Ready,
        TaskState::Leased,
        TaskState::Completed,
        TaskState::Dead,
        TaskState::Cancelled,
    ];

    pub fn from_u8(value: u8) -> Option<TaskState> {
        TaskState::ALL.get(usize::from(value)).copied()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Discipline {
    Fifo = 0,
    Lifo = 1,
    Priority = 2,
    RoundRobin = 3,
}

impl Discipline {
    pub const ALL: [Discipline; 4] = [Discipline::Fifo, Discipline::Lifo, Discipline::Priority, Discipline::RoundRobin];

    pub fn from_u8(value: u8) -> Option<Discipline> {
        Discipline::ALL.get(usize::from(value)).copied()
    }
}

/// A partial update of a queue's settings: `None` leaves a field unchanged.
/// `group_concurrency: Some(None)` removes the limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePatch {
    pub discipline: Option<Discipline>,
    pub lease_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub retention_ms: Option<u64>,
    pub dead_retention_ms: Option<u64>,
    pub group_concurrency: Option<Option<u32>>,
}

/// A dependency of a new task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dep {
    /// An existing task.
    Task(u64),
    /// The k-th task (from 0) of the same batch (it must come earlier in it).
    Batch(u32),
}

/// A task to enqueue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskSpec {
    /// Opaque bytes.
    pub payload: Bytes,
    pub priority: i32,
    pub group: Option<String>,
    pub delay_ms: u64,
    /// `None`: the queue's default.
    pub max_attempts: Option<u32>,
    pub depends_on: Vec<Dep>,
    /// Idempotency key.
    pub key: Option<String>,
}

/// One item of a batch complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompleteItem {
    pub id: u64,
    pub lease: u64,
    pub result: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Must be a connection's first frame; `version_min..=version_max` are the
    /// versions the client speaks.
    Hello {
        version_min: u8,
        version_max: u8,
    },
    /// Liveness and readiness (the binary `GET /healthz`).
    Ping,
    /// Presents an API token (after the hello, before anything else when the
    /// server has tokens configured). `token` is opaque bytes: the server
    /// compares their SHA-256 with its token file's. Its `Debug` form hides it.
    Auth {
        token: Secret,
    },
    /// The server's statistics (what `GET /v1/stats` shows); needs `admin`
    /// on every queue when the server has tokens.
    Stats,
    ConfigureQueue {
        queue: String,
        patch: QueuePatch,
    },
    ListQueues,
    GetQueue {
        queue: String,
    },
    DeleteQueue {
        queue: String,
        force: bool,
    },
    /// Tasks of `queue` in `state` with ids above `after` (0: from the
    /// start), in id order, at most `limit`.
    ListTasks {
        queue: String,
        state: TaskState,
        after: u64,
        limit: u16,
    },
    Enqueue {
        queue: String,
        task: TaskSpec,
    },
    /// All or nothing, like `POST /v1/queues/{queue}/tasks/batch`.
    EnqueueBatch {
        queue: String,
        tasks: Vec<TaskSpec>,
    },
    Dequeue {
        queues: Vec<String>,
        max: u16,
        lease_ms: Option<u64>,
        wait_ms: u64,
    },
    GetTask {
        id: u64,
    },
    Complete {
        id: u64,
        lease: u64,
        result: Option<Bytes>,
    },
    Fail {
        id: u64,
        lease: u64,
        error: String,
        retry: bool,
    },
    Extend {
        id: u64,
        lease: u64,
        lease_ms: u64,
    },
    Cancel {
        id: u64,
    },
    /// Each item completes on its own (not all or nothing); the reply has one
    /// outcome per item, in order.
    CompleteBatch {
        items: Vec<CompleteItem>,
    },
    /// Moves a dead task back to ready with fresh attempts.
    RetryTask {
        id: u64,
    },
    /// Forgets a finished task now.
    DeleteTask {
        id: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: u64,
    pub state: TaskState,
    /// False when the idempotency key had been seen: `id` is the original task.
    pub created: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedTask {
    pub id: u64,
    pub queue: String,
    pub payload: Bytes,
    pub priority: i32,
    pub group: Option<String>,
    pub attempt: u32,
    pub lease: u64,
    pub lease_expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: u64,
    pub queue: String,
    pub state: TaskState,
    pub payload: Bytes,
    pub priority: i32,
    pub group: Option<String>,
    pub depends_on: Vec<u64>,
    pub key: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub result: Option<Bytes>,
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub not_before_ms: Option<u64>,
    pub lease_expires_at_ms: Option<u64>,
    pub purge_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub discipline: Discipline,
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    pub retention_ms: u64,
    /// Carried in 32 bits (the engine's limit is 30 days).
    pub dead_retention_ms: u64,
    pub group_concurrency: Option<u32>,
    /// Tasks per state, indexed by `TaskState as usize`.
    pub counts: [u64; 7],
}

/// The outcome of one item of a batch complete: `Ok` is the task's state
/// afterwards (`completed`), `Err` the error code the single complete would get.
pub type CompleteOutcome = Result<TaskState, ErrorCode>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `version`: the version chosen; `frame_body_bytes_max`: the largest body
    /// the server accepts.
    Hello {
        version: u8,
        frame_body_bytes_max: u32,
    },
    /// `ready` is false while the server recovers its state (every other request
    /// gets `recovering` until then).
    Pong {
        ready: bool,
    },
    /// The token was accepted: what it grants ([`SCOPE_PRODUCE`],
    /// [`SCOPE_CONSUME`], [`SCOPE_ADMIN`] bits).
    Authenticated {
        scopes: u8,
    },
    /// The `stats` reply: the JSON document of `GET /v1/stats`, as UTF-8 bytes.
    Stats(Bytes),
    /// Configure and get queue.
    Queue(QueueInfo),
    Queues(Vec<QueueInfo>),
    QueueDeleted,
    Enqueued(Enqueued),
    EnqueuedBatch(Vec<Enqueued>),
    Leased(Vec<LeasedTask>),
    Task(TaskView),
    /// A list of tasks: one page, and the `after` of the next (`None`: the
    /// listing is complete).
    TaskPage {
        tasks: Vec<TaskView>,
        next_cursor: Option<u64>,
    },
    /// Delete task: the task is forgotten.
    TaskDeleted,
    /// Complete, fail, cancel and retry: the task's state afterwards.
    TaskState {
        id: u64,
        state: TaskState,
    },
    Extended {
        id: u64,
        lease_expires_at_ms: u64,
    },
    CompletedBatch(Vec<(u64, CompleteOutcome)>),
    /// Any request's failure: the frame's `status` is `code`.
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Request {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello { .. } => Opcode::Hello,
            Request::Ping => Opcode::Ping,
            Request::Auth { .. } => Opcode::Auth,
            Request::Stats => Opcode::Stats,
            Request::ConfigureQueue { .. } => Opcode::ConfigureQueue,
            Request::ListQueues => Opcode::ListQueues,
            Request::GetQueue { .. } => Opcode::GetQueue,
            Request::DeleteQueue { .. } => Opcode::DeleteQueue,
            Request::ListTasks { .. } => Opcode::ListTasks,
            Request::Enqueue { .. } => Opcode::Enqueue,
            Request::EnqueueBatch { .. } => Opcode::EnqueueBatch,
            Request::Dequeue { .. } => Opcode::Dequeue,
            Request::GetTask { .. } => Opcode::GetTask,
            Request::Complete { .. } => Opcode::Complete,
            Request::Fail { .. } => Opcode::Fail,
            Request::Extend { .. } => Opcode::Extend,
            Request::Cancel { .. } => Opcode::Cancel,
            Request::CompleteBatch { .. } => Opcode::CompleteBatch,
            Request::RetryTask { .. } => Opcode::RetryTask,
            Request::DeleteTask { .. } => Opcode::DeleteTask,
        }
    }

    /// Appends the whole frame (header and body) to `out`.
    ///
    /// # Panics
    ///
    /// If the request has no encoding (see [`EncodeError`]: a string longer than
    /// its length field holds, an empty group or key, `max_attempts: Some(0)`,
    /// `Dep::Task` with bit 63 set). Every such value is far outside the engine's
    /// limits; use [`Request::try_encode`] where values come from users.
    pub fn encode(&self, request_id: u64, out: &mut Vec<u8>) {
        if let Err(e) = self.try_encode(request_id, out) {
            panic!("{e}");
        }
    }

    /// Appends the whole frame to `out`, or appends nothing and says which field
    /// has no encoding.
    pub fn try_encode(&self, request_id: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        crate::codec::encode_request(self, request_id, out)
    }

    /// Decodes the body of a frame whose header is `header` (checked by
    /// [`crate::peek_frame`]); `body` is exactly `header.body_len` bytes, and
    /// payloads come back as slices of it.
    pub fn decode(header: &crate::Header, body: Bytes) -> Result<Request, DecodeError> {
        crate::codec::decode_request(header, body)
    }

    /// Appends the body alone, without the frame header: exactly the bytes
    /// that follow the header in [`Request::try_encode`]'s frame (the same
    /// encoder writes both), or nothing and says which field has no encoding.
    /// The server's write-ahead log stores commands this way.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        crate::codec::encode_request_body(self, out)
    }

    /// Decodes a body alone, as [`Request::decode`] does once the header is
    /// checked: `opcode` chooses the layout, and payloads come back as slices
    /// of `body`. The same decoder, so a body the frame decoder accepts
    /// decodes here to the same request, and the other way round.
    pub fn decode_body(opcode: Opcode, body: Bytes) -> Result<Request, DecodeError> {
        crate::codec::decode_request_body(opcode, &body)
    }
}

impl Response {
    /// An error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }

    /// Appends the whole reply frame to `out`. `opcode` is the request's (for an
    /// unknown opcode, the byte the request carried; 0 after a framing error).
    /// The variant must be the one `opcode`'s reply decodes to (or `Error`).
    ///
    /// An error message longer than 65,535 bytes is cut at the last character
    /// boundary that fits: a message is for people, and a reply must go out.
    ///
    /// # Panics
    ///
    /// If the reply has no encoding (see [`Response::try_encode`]); the engine's
    /// limits keep every reply the server builds from its state encodable.
    pub fn encode(&self, opcode: u8, request_id: u64, out: &mut Vec<u8>) {
        if let Err(e) = self.try_encode(opcode, request_id, out) {
            panic!("{e}");
        }
    }

    /// Appends the whole reply frame to `out`, or appends nothing and says why
    /// not: a length over its field, an empty group in a leased task, an
    /// `Error` (or a batch outcome `Err`) with code `Ok`.
    pub fn try_encode(&self, opcode: u8, request_id: u64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        crate::codec::encode_response(self, opcode, request_id, out)
    }

    /// Decodes a reply frame's body (the client side).
    pub fn decode(header: &crate::Header, body: Bytes) -> Result<Response, DecodeError> {
        crate::codec::decode_response(header, body)
    }
}
