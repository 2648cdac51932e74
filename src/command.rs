//! The boundary between the network layer and the workers: a request, parsed and
//! validated as far as its protocol can, becomes a [`Command`]; a worker executes
//! it against the engine and answers a [`Reply`]. Neither knows HTTP or the wire
//! format, so both protocols share them, and [`execute`] is pure (time is passed
//! in) like the engine it drives.

use bytes::Bytes;

use crate::engine::limits::BATCH_TASKS_COUNT_MAX;
use crate::engine::{
    validate_queue_name, Engine, EngineError, Enqueued, LeaseToken, LeasedTask, NewTask, QueueConfigPatch, QueueInfo,
    TaskId, TaskState, TaskView,
};

/// Items one batch complete may hold: the same bound as an enqueue batch, for
/// the same reason (the latency one request adds to everyone behind it).
pub const COMPLETE_BATCH_ITEMS_COUNT_MAX: usize = BATCH_TASKS_COUNT_MAX;

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
    /// Complete, fail and cancel: the task's state afterwards.
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
                | Command::Dequeue { .. }
                | Command::Extend { .. }
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
    };
    result.unwrap_or_else(Reply::Error)
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
