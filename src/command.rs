//! The boundary between the network layer and the workers: a request, parsed and
//! validated as far as its protocol can, becomes a [`Command`]; a worker executes
//! it against the engine and answers a [`Reply`]. Neither knows HTTP or the wire
//! format, so both protocols share them, and [`execute`] is pure (time is passed
//! in) like the engine it drives.

use bytes::Bytes;

use crate::engine::{
    validate_queue_name, Engine, EngineError, Enqueued, LeaseToken, LeasedTask, NewTask, QueueConfigPatch, QueueInfo,
    TaskId, TaskState, TaskView,
};

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
    };
    result.unwrap_or_else(Reply::Error)
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
}
