//! The boundary between the network layer and the workers: a request, parsed and
//! validated as far as its protocol can, becomes a [`Command`]; a worker executes
//! it against the engine and answers a [`Reply`]. Neither knows HTTP or the wire
//! format, so both protocols share them, and [`execute`] is pure (time is passed
//! in) like the engine it drives.

use bytes::Bytes;

use crate::engine::{
    validate_length, validate_queue_name, validate_range, validate_text, DepRef, Engine, EngineError, Enqueued,
    LeaseToken, LeasedTask, NewTask, QueueConfigPatch, QueueInfo, TaskId, TaskPage, TaskState, TaskView,
};
pub use crate::limits::COMPLETE_BATCH_ITEMS_COUNT_MAX;
use crate::limits::{
    BATCH_DEPENDS_ON_COUNT_MAX, BATCH_TASKS_COUNT_MAX, DEPENDS_ON_COUNT_MAX, DEQUEUE_QUEUES_COUNT_MAX,
    DEQUEUE_TASKS_COUNT_MAX, ERROR_MESSAGE_BYTES_MAX, GROUP_NAME_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX,
    LIST_TASKS_COUNT_MAX, MAX_ATTEMPTS_MAX, PAYLOAD_BYTES_MAX, RESULT_BYTES_MAX, WAIT_MS_MAX,
};

/// One item of [`Command::CompleteBatch`]: what a single complete carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompleteItem {
    pub id: TaskId,
    pub lease: LeaseToken,
    pub result: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ConfigureQueue {
        queue: String,
        patch: QueueConfigPatch,
    },
    ListQueues,
    GetQueue {
        queue: String,
    },
    DeleteQueue {
        queue: String,
        force: bool,
    },
    Enqueue {
        queue: String,
        task: NewTask,
    },
    EnqueueBatch {
        queue: String,
        tasks: Vec<NewTask>,
    },
    /// `wait_ms` > 0 asks the worker to hold the request until a task is ready
    /// or the time is up (long poll); `execute` itself never waits.
    Dequeue {
        queues: Vec<String>,
        max: usize,
        lease_ms: Option<u64>,
        wait_ms: u64,
    },
    GetTask {
        id: TaskId,
    },
    Complete {
        id: TaskId,
        lease: LeaseToken,
        result: Option<Bytes>,
    },
    Fail {
        id: TaskId,
        lease: LeaseToken,
        error: String,
        retry: bool,
    },
    Extend {
        id: TaskId,
        lease: LeaseToken,
        lease_ms: u64,
    },
    Cancel {
        id: TaskId,
    },
    /// Completes each item on its own, in order, as if each were a separate
    /// `Complete` (not all or nothing: a stale lease fails only its item).
    /// 1 to [`COMPLETE_BATCH_ITEMS_COUNT_MAX`] items, else `invalid_argument`
    /// for the whole batch.
    CompleteBatch {
        items: Vec<CompleteItem>,
    },
    /// A page of the tasks of `queue` in `state` with ids above `after`
    /// (`Engine::list_tasks`). A read: not logged.
    ListTasks {
        queue: String,
        state: TaskState,
        after: TaskId,
        limit: usize,
    },
    /// Moves a dead task back to `ready` with fresh attempts.
    RetryTask {
        id: TaskId,
    },
    /// Forgets a finished task now.
    DeleteTask {
        id: TaskId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Configure and get: the queue's settings and counts.
    Queue(QueueInfo),
    Queues(Vec<QueueInfo>),
    QueueDeleted {
        queue: String,
    },
    Enqueued(Enqueued),
    EnqueuedBatch(Vec<Enqueued>),
    Leased(Vec<LeasedTask>),
    Task(TaskView),
    /// A list of tasks.
    TaskPage(TaskPage),
    TaskDeleted {
        id: TaskId,
    },
    /// Complete, fail, cancel and retry: the task's state afterwards.
    TaskState {
        id: TaskId,
        state: TaskState,
    },
    Extended {
        id: TaskId,
        lease_expires_at_ms: u64,
    },
    /// A batch complete: per item, in order, its id and the task's state
    /// afterwards (`completed`) or the error a single complete would get.
    CompletedBatch(Vec<(TaskId, Result<TaskState, EngineError>)>),
    Error(EngineError),
    /// Storage failed (the message says how): the write-ahead log before this
    /// command's record was durable (the outcome is unknown and the server is
    /// stopping), or a read of a payload kept in the store.
    StorageFailed(std::sync::Arc<str>),
}

impl Command {
    /// Whether this command may let a held long poll be served, so that workers
    /// should retry them: anything that changes state except leasing and
    /// extending. (Cancel and delete count too: a cancelled leased task frees its
    /// group's slot under `group_concurrency`.)
    pub fn may_ready_tasks(&self) -> bool {
        !matches!(
            self,
            Command::ListQueues
                | Command::GetQueue { .. }
                | Command::GetTask { .. }
                | Command::ListTasks { .. }
                | Command::Dequeue { .. }
                | Command::Extend { .. }
                | Command::DeleteTask { .. }
        )
    }
}

/// Runs `command` against `engine` at `now_ms`.
pub fn execute(engine: &mut Engine, command: Command, now_ms: u64) -> Reply {
    let result = match command {
        Command::ConfigureQueue { queue, patch } => engine
            .configure_queue(&queue, &patch, now_ms)
            .map(|_| Reply::Queue(engine.queue(&queue).expect("just configured"))),
        Command::ListQueues => Ok(Reply::Queues(engine.queues())),
        Command::GetQueue { queue } => validate_queue_name(&queue, "queue")
            .and_then(|()| engine.queue(&queue).map(Reply::Queue).ok_or(EngineError::QueueNotFound(queue))),
        Command::DeleteQueue { queue, force } => {
            engine.delete_queue(&queue, force, now_ms).map(|()| Reply::QueueDeleted { queue })
        }
        Command::Enqueue { queue, task } => engine.enqueue(&queue, task, now_ms).map(Reply::Enqueued),
        Command::EnqueueBatch { queue, tasks } => engine.enqueue_batch(&queue, tasks, now_ms).map(Reply::EnqueuedBatch),
        Command::Dequeue { queues, max, lease_ms, wait_ms: _ } => {
            let mut out = Vec::new();
            engine.dequeue(&queues, max, lease_ms, now_ms, &mut out).map(|_| Reply::Leased(out))
        }
        Command::GetTask { id } => engine.task(id).map(Reply::Task).ok_or(EngineError::TaskNotFound(id)),
        Command::Complete { id, lease, result } => {
            engine.complete(id, lease, result, now_ms).map(|()| Reply::TaskState { id, state: TaskState::Completed })
        }
        Command::Fail { id, lease, error, retry } => {
            engine.fail(id, lease, &error, retry, now_ms).map(|state| Reply::TaskState { id, state })
        }
        Command::Extend { id, lease, lease_ms } => engine
            .extend(id, lease, lease_ms, now_ms)
            .map(|lease_expires_at_ms| Reply::Extended { id, lease_expires_at_ms }),
        Command::Cancel { id } => {
            engine.cancel(id, now_ms).map(|()| Reply::TaskState { id, state: TaskState::Cancelled })
        }
        Command::CompleteBatch { items } => complete_batch(engine, items, now_ms),
        Command::ListTasks { queue, state, after, limit } => {
            engine.list_tasks(&queue, state, after, limit).map(Reply::TaskPage)
        }
        Command::RetryTask { id } => {
            engine.retry(id, now_ms).map(|()| Reply::TaskState { id, state: TaskState::Ready })
        }
        Command::DeleteTask { id } => engine.delete_task(id, now_ms).map(|()| Reply::TaskDeleted { id }),
    };
    result.unwrap_or_else(Reply::Error)
}

/// How many bytes `command`'s log record may take beyond the body it was
/// decoded from: `limits::record_bytes_over_body_max` for its tasks and their
/// dependencies (at most `limits::RECORD_BYTES_OVER_BODY_MAX`).
pub fn record_bytes_over_body_max(command: &Command) -> usize {
    let tasks: &[NewTask] = match command {
        Command::Enqueue { task, .. } => std::slice::from_ref(task),
        Command::EnqueueBatch { tasks, .. } => tasks,
        _ => &[],
    };
    let depends_on_count = tasks.iter().map(|task| task.depends_on.len()).sum();
    let bound = crate::limits::record_bytes_over_body_max(tasks.len(), depends_on_count);
    assert!(bound <= crate::limits::RECORD_BYTES_OVER_BODY_MAX);
    bound
}

/// Checks every bound on what `command` may carry (`src/limits.rs`): the
/// length of every string and byte field (queue names, group, key, payload,
/// result, error message) and every count (tasks and dependencies of a batch,
/// queues and tasks of a dequeue, items of a batch complete), and `wait_ms`. Both
/// protocols call this on the command they built, before it is executed or
/// logged: it is the one place these bounds are checked for clients, so no
/// protocol can forget one, and a command that passes fits one log record
/// (`limits::RECORD_BYTES_OVER_BODY_MAX`). A length over its limit is
/// `TooLarge` (413 over HTTP, `payload_too_large` on the wire); a count or
/// anything else out of range is `Invalid` (400, `invalid_argument`); each
/// names the field and its limit. Ranges that depend only on the engine's
/// rules (lease, delay) are left to the engine, which cannot be made to log
/// more by them. A task's `max_attempts`, its dependency ids (below 2^63)
/// and batch references (only in a batch, below [`BATCH_TASKS_COUNT_MAX`])
/// are checked here too, with the engine's messages, because the log stores
/// a command as its binary request (`wal/record.rs`) and the wire has no form
/// for the others (`max_attempts` 0 means "the queue's default" there).
pub fn check_limits(command: &Command) -> Result<(), EngineError> {
    match command {
        Command::ListQueues
        | Command::GetTask { .. }
        | Command::Extend { .. }
        | Command::Cancel { .. }
        | Command::RetryTask { .. }
        | Command::DeleteTask { .. } => Ok(()),
        Command::ListTasks { queue, limit, .. } => {
            validate_queue_name(queue, "queue")?;
            // The engine checks it too, but the wire carries it in 16 bits.
            validate_range("limit", *limit as u64, 1, LIST_TASKS_COUNT_MAX as u64)
        }
        Command::ConfigureQueue { queue, .. } | Command::GetQueue { queue } | Command::DeleteQueue { queue, .. } => {
            validate_queue_name(queue, "queue")
        }
        Command::Enqueue { queue, task } => {
            validate_queue_name(queue, "queue")?;
            check_task(task, false)
        }
        Command::EnqueueBatch { queue, tasks } => {
            validate_queue_name(queue, "queue")?;
            if tasks.is_empty() || tasks.len() > BATCH_TASKS_COUNT_MAX {
                return Err(EngineError::invalid("tasks", format!("a batch holds 1 to {BATCH_TASKS_COUNT_MAX} tasks")));
            }
            let mut depends_on_count: usize = 0;
            for (index, task) in tasks.iter().enumerate() {
                check_task(task, true).map_err(|error| error.in_batch(index))?;
                depends_on_count += task.depends_on.len();
            }
            if depends_on_count > BATCH_DEPENDS_ON_COUNT_MAX {
                return Err(EngineError::invalid(
                    "tasks",
                    format!(
                        "the batch's tasks have {depends_on_count} dependencies in all; the limit is \
                         {BATCH_DEPENDS_ON_COUNT_MAX}"
                    ),
                ));
            }
            Ok(())
        }
        Command::Dequeue { queues, max, wait_ms, .. } => {
            if queues.is_empty() || queues.len() > DEQUEUE_QUEUES_COUNT_MAX {
                let reason = format!("expected an array of 1 to {DEQUEUE_QUEUES_COUNT_MAX} queue names");
                return Err(EngineError::invalid("queues", reason));
            }
            for queue in queues {
                validate_queue_name(queue, "queues")?;
            }
            if *wait_ms > WAIT_MS_MAX {
                return Err(EngineError::invalid("wait_ms", format!("must be between 0 and {WAIT_MS_MAX}")));
            }
            // The engine checks it too, but its record holds a u32.
            if *max == 0 || *max > DEQUEUE_TASKS_COUNT_MAX {
                return Err(EngineError::invalid("max", format!("must be between 1 and {DEQUEUE_TASKS_COUNT_MAX}")));
            }
            Ok(())
        }
        Command::Complete { result, .. } => {
            validate_length("result", result.as_ref().map_or(0, Bytes::len), RESULT_BYTES_MAX)
        }
        Command::Fail { error, .. } => validate_length("error", error.len(), ERROR_MESSAGE_BYTES_MAX),
        Command::CompleteBatch { items } => {
            validate_complete_batch(items.len())?;
            for (index, item) in items.iter().enumerate() {
                let length = item.result.as_ref().map_or(0, Bytes::len);
                if length > RESULT_BYTES_MAX {
                    return Err(EngineError::too_large(format!("items[{index}].result"), length, RESULT_BYTES_MAX));
                }
            }
            Ok(())
        }
    }
}

/// The bounds of one task: its lengths, and its dependency count (which the
/// engine checks too, but a batch's total is only known here), and what the
/// binary form needs (see [`check_limits`]); `in_batch`: whether batch
/// references may appear.
fn check_task(task: &NewTask, in_batch: bool) -> Result<(), EngineError> {
    validate_length("payload", task.payload.len(), PAYLOAD_BYTES_MAX)?;
    if let Some(group) = &task.group {
        validate_text("group", group, GROUP_NAME_BYTES_MAX)?;
    }
    if let Some(key) = &task.key {
        validate_text("key", key, IDEMPOTENCY_KEY_BYTES_MAX)?;
    }
    if task.depends_on.len() > DEPENDS_ON_COUNT_MAX {
        return Err(EngineError::invalid("depends_on", format!("at most {DEPENDS_ON_COUNT_MAX} dependencies")));
    }
    if let Some(max_attempts) = task.max_attempts {
        validate_range("max_attempts", max_attempts.into(), 1, MAX_ATTEMPTS_MAX.into())?;
    }
    for dep in &task.depends_on {
        match *dep {
            DepRef::Task(id) if id >= 1 << 63 => {
                let reason = format!("task {id} does not exist (task ids are below 2^63)");
                return Err(EngineError::invalid("depends_on", reason));
            }
            DepRef::Batch(_) if !in_batch => {
                return Err(EngineError::invalid("depends_on", "#k references are only valid in a batch"));
            }
            DepRef::Batch(k) if k >= BATCH_TASKS_COUNT_MAX => {
                return Err(EngineError::invalid(
                    "depends_on",
                    format!("#{k} must name an earlier task of the same batch"),
                ));
            }
            DepRef::Task(_) | DepRef::Batch(_) => {}
        }
    }
    Ok(())
}

/// Checks the size of a batch complete (the same check for every protocol).
pub fn validate_complete_batch(items_count: usize) -> Result<(), EngineError> {
    if items_count == 0 || items_count > COMPLETE_BATCH_ITEMS_COUNT_MAX {
        return Err(EngineError::invalid(
            "items",
            format!("a batch complete holds 1 to {COMPLETE_BATCH_ITEMS_COUNT_MAX} items"),
        ));
    }
    Ok(())
}

/// Each item goes through `Engine::complete` on its own, at the same `now_ms`:
/// the engine stays the one place that decides what a complete does, and
/// replaying the record repeats exactly these calls.
fn complete_batch(engine: &mut Engine, items: Vec<CompleteItem>, now_ms: u64) -> Result<Reply, EngineError> {
    validate_complete_batch(items.len())?;
    let outcomes = items
        .into_iter()
        .map(|CompleteItem { id, lease, result }| {
            (id, engine.complete(id, lease, result, now_ms).map(|()| TaskState::Completed))
        })
        .collect();
    Ok(Reply::CompletedBatch(outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::limits;

    fn task(payload: &[u8]) -> NewTask {
        NewTask { payload: Bytes::copy_from_slice(payload), ..NewTask::default() }
    }

    #[test]
    fn check_limits_names_each_field_over_its_limit_and_the_limit() {
        let long = |n: usize| "x".repeat(n);
        let dequeue =
            |queues: Vec<String>, max: usize, wait_ms: u64| Command::Dequeue { queues, max, lease_ms: None, wait_ms };
        let cases: Vec<(Command, &str, &str, usize)> = vec![
            (Command::GetQueue { queue: long(70_000) }, "payload_too_large", "queue", limits::QUEUE_NAME_BYTES_MAX),
            (
                Command::Enqueue { queue: "q".into(), task: NewTask { group: Some(long(70_000)), ..task(b"1") } },
                "payload_too_large",
                "group",
                limits::GROUP_NAME_BYTES_MAX,
            ),
            (
                Command::Enqueue { queue: "q".into(), task: NewTask { key: Some(long(257)), ..task(b"1") } },
                "payload_too_large",
                "key",
                limits::IDEMPOTENCY_KEY_BYTES_MAX,
            ),
            (
                Command::Enqueue { queue: "q".into(), task: task(&vec![b'1'; limits::PAYLOAD_BYTES_MAX + 1]) },
                "payload_too_large",
                "payload",
                limits::PAYLOAD_BYTES_MAX,
            ),
            (
                Command::EnqueueBatch {
                    queue: "q".into(),
                    tasks: vec![task(b"1"), NewTask { group: Some(long(129)), ..task(b"1") }],
                },
                "payload_too_large",
                "tasks[1].group",
                limits::GROUP_NAME_BYTES_MAX,
            ),
            (
                Command::EnqueueBatch {
                    queue: "q".into(),
                    tasks: vec![
                        NewTask {
                            depends_on: vec![DepRef::Task(1); limits::DEPENDS_ON_COUNT_MAX],
                            ..task(b"1")
                        };
                        limits::BATCH_DEPENDS_ON_COUNT_MAX / limits::DEPENDS_ON_COUNT_MAX + 1
                    ],
                },
                "invalid_argument",
                "tasks",
                limits::BATCH_DEPENDS_ON_COUNT_MAX,
            ),
            (
                dequeue(vec!["q".into(), long(70_000)], 1, 0),
                "payload_too_large",
                "queues",
                limits::QUEUE_NAME_BYTES_MAX,
            ),
            (
                dequeue(vec!["q".into()], 1, limits::WAIT_MS_MAX + 1),
                "invalid_argument",
                "wait_ms",
                limits::WAIT_MS_MAX as usize,
            ),
            (dequeue(vec!["q".into()], 1 << 32, 0), "invalid_argument", "max", limits::DEQUEUE_TASKS_COUNT_MAX),
            (
                Command::Fail { id: 1, lease: 1, error: long(70_000), retry: true },
                "payload_too_large",
                "error",
                limits::ERROR_MESSAGE_BYTES_MAX,
            ),
            (
                Command::Complete {
                    id: 1,
                    lease: 1,
                    result: Some(Bytes::from(vec![b'1'; limits::RESULT_BYTES_MAX + 1])),
                },
                "payload_too_large",
                "result",
                limits::RESULT_BYTES_MAX,
            ),
            (
                Command::CompleteBatch {
                    items: vec![
                        CompleteItem { id: 1, lease: 1, result: None },
                        CompleteItem {
                            id: 2,
                            lease: 1,
                            result: Some(Bytes::from(vec![b'1'; limits::RESULT_BYTES_MAX + 1])),
                        },
                    ],
                },
                "payload_too_large",
                "items[1].result",
                limits::RESULT_BYTES_MAX,
            ),
        ];
        for (command, code, field, limit) in cases {
            let error = check_limits(&command).expect_err(field);
            let message = error.to_string();
            assert_eq!(error.code(), code, "{field}: {message}");
            assert!(message.starts_with(field) || message.contains(&format!(" {field}")), "{field}: {message}");
            assert!(message.contains(&limit.to_string()), "{field}: {message}");
        }
        // At the limits, everything passes.
        let at_limits = NewTask {
            group: Some(long(limits::GROUP_NAME_BYTES_MAX)),
            key: Some(long(limits::IDEMPOTENCY_KEY_BYTES_MAX)),
            depends_on: vec![DepRef::Task(1); limits::DEPENDS_ON_COUNT_MAX],
            ..task(&vec![b'1'; limits::PAYLOAD_BYTES_MAX])
        };
        check_limits(&Command::Enqueue { queue: long(limits::QUEUE_NAME_BYTES_MAX), task: at_limits }).unwrap();
        let error = long(limits::ERROR_MESSAGE_BYTES_MAX);
        check_limits(&Command::Fail { id: 1, lease: 1, error, retry: false }).unwrap();
    }

    /// The bound `limits::RECORD_BYTES_OVER_BODY_MAX` is derived by hand from
    /// the record layout; this builds the bodies that gain the most on each
    /// protocol (minimal tasks, dependencies at their densest, every optional
    /// field, the longest path name) and checks it.
    #[test]
    fn record_bytes_never_exceed_the_body_by_more_than_the_bound() {
        use crate::http::{self, Action, Next};
        use crate::wal::record;

        let bound = limits::RECORD_BYTES_OVER_BODY_MAX;
        let record_of = |command: &Command| {
            let mut bytes = Vec::new();
            record::encode_command(u64::MAX, command, &mut bytes);
            bytes.len()
        };
        let queue = "q".repeat(limits::QUEUE_NAME_BYTES_MAX);
        let http_limits = http::Limits { body_bytes_max: limits::BODY_BYTES_MAX_MAX, ..http::Limits::default() };
        let via_http = |method: &str, path: &str, body: &str| {
            let request = format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            match http::next_request(request.as_bytes(), &http_limits) {
                Next::Request { action: Action::Execute(command), .. } => {
                    let gain = record_of(&command) as i64 - body.len() as i64;
                    let own = record_bytes_over_body_max(&command);
                    assert!(gain <= own as i64, "{method} {path}: {gain} > {own}");
                    gain
                }
                other => panic!("{method} {path}: {other:?}"),
            }
        };
        // A batch: as many tasks as dependencies allow at 1,024 each, then
        // the rest minimal; every dependency `1,`.
        let deps = vec!["1"; limits::DEPENDS_ON_COUNT_MAX].join(",");
        let dense = limits::BATCH_DEPENDS_ON_COUNT_MAX / limits::DEPENDS_ON_COUNT_MAX;
        let mut entries = vec![format!(r#"{{"payload":0,"depends_on":[{deps}]}}"#); dense];
        entries.resize(limits::BATCH_TASKS_COUNT_MAX, r#"{"payload":0}"#.to_string());
        let body = format!(r#"{{"tasks":[{}]}}"#, entries.join(","));
        let batch_gain = via_http("POST", &format!("/v1/queues/{queue}/tasks/batch"), &body);
        assert!(batch_gain > bound as i64 * 9 / 10, "the bound is tight: {batch_gain} of {bound}");
        let full = r#"{"payload":0,"group":"g","key":"k","max_attempts":1,"priority":1,"delay_ms":1,"depends_on":[1]}"#;
        via_http("POST", &format!("/v1/queues/{queue}/tasks/batch"), &format!(r#"{{"tasks":[{full},{full}]}}"#));
        via_http("POST", &format!("/v1/queues/{queue}/tasks"), &format!(r#"{{"payload":0,"depends_on":[{deps}]}}"#));
        via_http("POST", &format!("/v1/queues/{queue}/tasks"), full);
        via_http("PUT", &format!("/v1/queues/{queue}"), "");
        let patch = r#"{"discipline":"fifo","lease_ms":1,"max_attempts":1,"backoff_ms":1,"backoff_max_ms":1,"retention_ms":1,"dead_retention_ms":1,"group_concurrency":1}"#;
        via_http("PUT", &format!("/v1/queues/{queue}"), patch);
        via_http("DELETE", &format!("/v1/queues/{queue}"), "");
        let names = vec![r#""a""#; limits::DEQUEUE_QUEUES_COUNT_MAX].join(",");
        via_http("POST", "/v1/dequeue", &format!(r#"{{"queues":[{names}],"lease_ms":1}}"#));
        via_http("POST", "/v1/tasks/1/complete", r#"{"lease":1}"#);
        via_http("POST", "/v1/tasks/1/complete", r#"{"lease":1,"result":0}"#);
        via_http("POST", "/v1/tasks/1/fail", r#"{"lease":1,"error":""}"#);
        via_http("POST", "/v1/tasks/1/extend", r#"{"lease":1,"lease_ms":1}"#);
        via_http("DELETE", "/v1/tasks/1", "");

        // Binary: the same commands as frames.
        use tqx_wire::{CompleteItem as WireItem, Dep, QueuePatch, Request, TaskSpec, HEADER_BYTES};
        let via_binary = |request: Request| {
            let mut frame = Vec::new();
            request.encode(1, &mut frame);
            let header = tqx_wire::peek_frame(&frame, usize::MAX).unwrap().unwrap();
            let body = Bytes::copy_from_slice(&frame[HEADER_BYTES..]);
            let body_bytes = body.len();
            let command = crate::binary::request_to_command(Request::decode(&header, body).unwrap()).unwrap();
            let gain = record_of(&command) as i64 - body_bytes as i64;
            let own = record_bytes_over_body_max(&command);
            assert!(gain <= own as i64, "{gain} > {own}");
        };
        let spec = |depends_on: Vec<Dep>| TaskSpec {
            payload: Bytes::new(),
            priority: 1,
            group: Some("g".into()),
            delay_ms: 1,
            max_attempts: Some(1),
            depends_on,
            key: Some("k".into()),
        };
        let mut tasks = vec![spec(vec![Dep::Task(1); limits::DEPENDS_ON_COUNT_MAX]); dense];
        tasks.resize(limits::BATCH_TASKS_COUNT_MAX, spec(Vec::new()));
        via_binary(Request::EnqueueBatch { queue: queue.clone(), tasks });
        via_binary(Request::Enqueue { queue: queue.clone(), task: spec(vec![Dep::Task(1); 1024]) });
        let patch = QueuePatch {
            discipline: Some(tqx_wire::Discipline::Fifo),
            lease_ms: Some(1),
            max_attempts: Some(1),
            backoff_ms: Some(1),
            backoff_max_ms: Some(1),
            retention_ms: Some(1),
            dead_retention_ms: Some(1),
            group_concurrency: Some(Some(1)),
        };
        via_binary(Request::ConfigureQueue { queue: queue.clone(), patch });
        via_binary(Request::DeleteQueue { queue: queue.clone(), force: true });
        let queues = vec!["a".to_string(); limits::DEQUEUE_QUEUES_COUNT_MAX];
        via_binary(Request::Dequeue { queues, max: 1, lease_ms: Some(1), wait_ms: 0 });
        via_binary(Request::Complete { id: 1, lease: 1, result: Some(Bytes::new()) });
        let items =
            vec![WireItem { id: 1, lease: 1, result: Some(Bytes::new()) }; limits::COMPLETE_BATCH_ITEMS_COUNT_MAX];
        via_binary(Request::CompleteBatch { items });
        via_binary(Request::Fail { id: 1, lease: 1, error: String::new(), retry: true });
        via_binary(Request::Extend { id: 1, lease: 1, lease_ms: 1 });
        via_binary(Request::Cancel { id: 1 });
    }

    #[test]
    fn the_documented_body_limit_ceiling_is_the_derived_one() {
        // docs/limits.md and `tqx serve --help` quote these figures.
        assert_eq!(limits::RECORD_BYTES_OVER_BODY_MAX, 288_816);
        assert_eq!(limits::BODY_BYTES_MAX_MAX, 3_905_488);
        assert!(limits::check_body_bytes_max(limits::BODY_BYTES_MAX_MAX).is_ok());
        let refusal = limits::check_body_bytes_max(16 << 20).unwrap_err();
        assert!(refusal.contains("--max-body-bytes 16777216") && refusal.contains("4194304"), "{refusal}");
    }

    #[test]
    fn execute_maps_engine_results_and_errors_to_replies() {
        let mut engine = Engine::new(EngineConfig::default());
        let task = NewTask { payload: Bytes::from_static(b"1"), ..NewTask::default() };
        let reply = execute(&mut engine, Command::Enqueue { queue: "q".into(), task }, 0);
        assert!(matches!(reply, Reply::Enqueued(Enqueued { id: 1, state: TaskState::Ready, created: true })));
        match execute(&mut engine, Command::GetQueue { queue: "nope".into() }, 0) {
            Reply::Error(e) => assert_eq!(e.code(), "queue_not_found"),
            other => panic!("{other:?}"),
        }
        match execute(&mut engine, Command::Cancel { id: 1 }, 1) {
            Reply::TaskState { id: 1, state: TaskState::Cancelled } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_batch_complete_settles_each_item_on_its_own_in_order() {
        let mut engine = Engine::new(EngineConfig::default());
        for payload in [&b"a"[..], b"b"] {
            let task = NewTask { payload: Bytes::copy_from_slice(payload), ..NewTask::default() };
            execute(&mut engine, Command::Enqueue { queue: "q".into(), task }, 0);
        }
        let Reply::Leased(leased) =
            execute(&mut engine, Command::Dequeue { queues: vec!["q".into()], max: 2, lease_ms: None, wait_ms: 0 }, 1)
        else {
            panic!("dequeue")
        };
        let items = vec![
            CompleteItem { id: leased[0].id, lease: leased[0].lease, result: Some(Bytes::from_static(b"r")) },
            CompleteItem { id: leased[1].id, lease: leased[1].lease ^ 1, result: None },
            // The same task twice: the second sees the first's effect.
            CompleteItem { id: leased[0].id, lease: leased[0].lease, result: None },
            CompleteItem { id: 99, lease: 0, result: None },
        ];
        let Reply::CompletedBatch(outcomes) = execute(&mut engine, Command::CompleteBatch { items }, 2) else {
            panic!("batch complete")
        };
        let codes: Vec<_> = outcomes.iter().map(|(id, r)| (*id, r.clone().map_err(|e| e.code()))).collect();
        assert_eq!(
            codes,
            vec![
                (1, Ok(TaskState::Completed)),
                (2, Err("lease_mismatch")),
                (1, Err("not_leased")),
                (99, Err("task_not_found"))
            ]
        );
        assert_eq!(engine.task(1).unwrap().result, Some(Bytes::from_static(b"r")));
        assert_eq!(engine.task(2).unwrap().state, TaskState::Leased);
    }

    #[test]
    fn a_batch_complete_holds_1_to_the_limit_of_items() {
        let mut engine = Engine::new(EngineConfig::default());
        for count in [0, COMPLETE_BATCH_ITEMS_COUNT_MAX + 1] {
            let items = vec![CompleteItem { id: 1, lease: 1, result: None }; count];
            match execute(&mut engine, Command::CompleteBatch { items }, 0) {
                Reply::Error(error) => {
                    assert_eq!((error.code(), error.to_string().contains("items")), ("invalid_argument", true))
                }
                other => panic!("{other:?}"),
            }
        }
        let items = vec![CompleteItem { id: 1, lease: 1, result: None }; COMPLETE_BATCH_ITEMS_COUNT_MAX];
        assert!(
            matches!(execute(&mut engine, Command::CompleteBatch { items }, 0), Reply::CompletedBatch(o) if o.len() == COMPLETE_BATCH_ITEMS_COUNT_MAX)
        );
    }
}
