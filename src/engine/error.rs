//! The engine's one error type. Each error says what kind of failure it is (which
//! the network layer maps to an HTTP status or wire code) and whether the same
//! request may succeed if retried later.

use std::borrow::Cow;
use std::fmt;

use super::types::{TaskId, TaskState};

/// The kinds of failure a caller has to tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong; retrying it unchanged fails again.
    InvalidArgument,
    /// A field of the request is longer than its limit (HTTP 413); retrying it
    /// unchanged fails again.
    TooLarge,
    /// The task or queue does not exist (never did, or was purged).
    NotFound,
    /// The request is well-formed but conflicts with the current state
    /// (stale lease, task already finished, queue still holds tasks).
    Conflict,
    /// A capacity bound is reached; the same request may succeed later.
    Unavailable,
    /// No valid token came with the request (HTTP 401). Never produced by the
    /// engine: the protocol edges answer it (`src/auth.rs`), through this one
    /// error type so that both protocols map it in one place.
    Unauthenticated,
    /// The token is valid but does not grant what the request needs (HTTP 403);
    /// also from the protocol edges only.
    Forbidden,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// A field is malformed or out of range. `field` is the path a client sent
    /// (`priority`, `tasks[3].depends_on`), `reason` says what is wrong.
    Invalid {
        field: Cow<'static, str>,
        reason: Cow<'static, str>,
    },
    /// A field is longer than its limit (`src/limits.rs`): `length` and
    /// `limit` in `unit`s (`bytes`). Checked at the protocol edge before a
    /// command is executed or logged; the engine checks again.
    TooLarge {
        field: Cow<'static, str>,
        length: usize,
        limit: usize,
        unit: &'static str,
    },
    TaskNotFound(TaskId),
    QueueNotFound(String),
    /// The task is leased, but under another lease token (a stale holder, or a
    /// wrong token).
    LeaseMismatch(TaskId),
    /// The lease token is right but the lease ran out; the task will be retried
    /// (or buried) by the next tick, and the old holder may no longer finish it.
    LeaseExpired(TaskId),
    /// Complete, fail or extend on a task that is not leased.
    NotLeased {
        id: TaskId,
        state: TaskState,
    },
    /// Cancel of a task that already finished.
    TaskFinished {
        id: TaskId,
        state: TaskState,
    },
    /// Retry of a task that is not dead.
    TaskNotDead {
        id: TaskId,
        state: TaskState,
    },
    /// Delete of a task that has not finished (cancel it first).
    TaskNotFinished {
        id: TaskId,
        state: TaskState,
    },
    /// Delete of a queue that still holds unfinished tasks, without `force`.
    QueueNotEmpty {
        queue: String,
        unfinished_count: u64,
    },
    /// An engine-wide bound (`tasks`, `queues`) is reached.
    CapacityExceeded {
        what: &'static str,
        limit: usize,
    },
    /// The request carries no token, or one the server does not accept
    /// (unknown or revoked); `reason` says which and what to send.
    Unauthenticated {
        reason: Cow<'static, str>,
    },
    /// The token does not grant `scope` (`produce`, `consume`, `admin`, or
    /// `produce or consume`) where the request needs it; `on` says where
    /// (` on queue "orders.eu"`, ` on all queues`, or empty: anywhere).
    Forbidden {
        scope: &'static str,
        on: Cow<'static, str>,
    },
}

impl EngineError {
    pub(crate) fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        EngineError::Invalid { field: field.into(), reason: reason.into() }
    }

    /// `field` is `length` bytes, over its `limit`.
    pub(crate) fn too_large(field: impl Into<Cow<'static, str>>, length: usize, limit: usize) -> Self {
        EngineError::TooLarge { field: field.into(), length, limit, unit: "bytes" }
    }

    /// Prefixes the field of an `Invalid` or `TooLarge` error with the batch
    /// position it came from.
    pub(crate) fn in_batch(self, index: usize) -> Self {
        match self {
            EngineError::Invalid { field, reason } => {
                EngineError::Invalid { field: format!("tasks[{index}].{field}").into(), reason }
            }
            EngineError::TooLarge { field, length, limit, unit } => {
                EngineError::TooLarge { field: format!("tasks[{index}].{field}").into(), length, limit, unit }
            }
            other => other,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Invalid { .. } => ErrorKind::InvalidArgument,
            EngineError::TooLarge { .. } => ErrorKind::TooLarge,
            EngineError::TaskNotFound(_) | EngineError::QueueNotFound(_) => ErrorKind::NotFound,
            EngineError::LeaseMismatch(_)
            | EngineError::LeaseExpired(_)
            | EngineError::NotLeased { .. }
            | EngineError::TaskFinished { .. }
            | EngineError::TaskNotDead { .. }
            | EngineError::TaskNotFinished { .. }
            | EngineError::QueueNotEmpty { .. } => ErrorKind::Conflict,
            EngineError::CapacityExceeded { .. } => ErrorKind::Unavailable,
            EngineError::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            EngineError::Forbidden { .. } => ErrorKind::Forbidden,
        }
    }

    /// Whether the same request may succeed later without being changed.
    pub fn retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable)
    }

    /// A stable, machine-readable code, shared by the HTTP API's `error.code` and
    /// the wire protocol's error codes.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Invalid { .. } => "invalid_argument",
            // The HTTP API's 413 code, also the wire's `payload_too_large`.
            EngineError::TooLarge { .. } => "payload_too_large",
            EngineError::TaskNotFound(_) => "task_not_found",
            EngineError::QueueNotFound(_) => "queue_not_found",
            EngineError::LeaseMismatch(_) => "lease_mismatch",
            EngineError::LeaseExpired(_) => "lease_expired",
            EngineError::NotLeased { .. } => "not_leased",
            EngineError::TaskFinished { .. } => "task_finished",
            EngineError::TaskNotDead { .. } => "task_not_dead",
            EngineError::TaskNotFinished { .. } => "task_not_finished",
            EngineError::QueueNotEmpty { .. } => "queue_not_empty",
            EngineError::CapacityExceeded { .. } => "capacity_exceeded",
            EngineError::Unauthenticated { .. } => "unauthenticated",
            EngineError::Forbidden { .. } => "forbidden",
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Invalid { field, reason } => write!(f, "invalid {field}: {reason}"),
            EngineError::TooLarge { field, length, limit, unit } => {
                write!(f, "{field} is too large: {length} {unit}; the limit is {limit} {unit}")
            }
            EngineError::TaskNotFound(id) => write!(f, "task {id} not found"),
            EngineError::QueueNotFound(q) => write!(f, "queue {q:?} not found"),
            EngineError::LeaseMismatch(id) => write!(f, "task {id} is leased under another lease token"),
            EngineError::LeaseExpired(id) => write!(f, "the lease on task {id} has expired"),
            EngineError::NotLeased { id, state } => write!(f, "task {id} is not leased (it is {})", state.as_str()),
            EngineError::TaskFinished { id, state } => write!(f, "task {id} has already finished ({})", state.as_str()),
            EngineError::TaskNotDead { id, state } => {
                write!(f, "task {id} is not dead (it is {}); only dead tasks can be retried", state.as_str())
            }
            EngineError::TaskNotFinished { id, state } => {
                write!(f, "task {id} has not finished (it is {}); cancel it first", state.as_str())
            }
            EngineError::QueueNotEmpty { queue, unfinished_count } => {
                let tasks = if *unfinished_count == 1 { "task" } else { "tasks" };
                write!(
                    f,
                    "queue {queue:?} holds {unfinished_count} unfinished {tasks}; delete with force to cancel them"
                )
            }
            EngineError::CapacityExceeded { what, limit } => {
                write!(f, "the server holds its maximum of {limit} {what}; retry later")
            }
            EngineError::Unauthenticated { reason } => f.write_str(reason),
            // "credential": the request's token, or its mutual-TLS client
            // certificate mapped to scopes (docs/security.md).
            EngineError::Forbidden { scope, on } => write!(f, "this credential lacks the {scope} scope{on}"),
        }
    }
}

impl std::error::Error for EngineError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new user read "holds 1 unfinished tasks" (issue 19).
    #[test]
    fn one_unfinished_task_is_singular() {
        let error = |unfinished_count| EngineError::QueueNotEmpty { queue: "q".into(), unfinished_count }.to_string();
        assert_eq!(error(1), "queue \"q\" holds 1 unfinished task; delete with force to cancel them");
        assert!(error(2).contains("holds 2 unfinished tasks;"), "{}", error(2));
    }
}
