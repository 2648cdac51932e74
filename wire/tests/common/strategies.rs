//! Proptest strategies for every request and reply. Numbers lean on their edges
//! (0, 1, the maximum, bit 63), strings on the length-field edges (empty,
//! multi-byte characters, 65,535 bytes), and every optional field is drawn both
//! present and absent.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tqx_wire::{
    CompleteItem, CompleteOutcome, Dep, Discipline, Enqueued, ErrorCode, LeasedTask, Opcode, QueueInfo, QueuePatch,
    Request, Response, Secret, TaskSpec, TaskState, TaskView, SCOPES_ALL,
};

pub fn u64_edgy() -> BoxedStrategy<u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), Just(1 << 63), Just((1 << 63) - 1), any::<u64>()].boxed()
}

pub fn u32_edgy() -> BoxedStrategy<u32> {
    prop_oneof![Just(0), Just(1), Just(u32::MAX), any::<u32>()].boxed()
}

pub fn u16_edgy() -> BoxedStrategy<u16> {
    prop_oneof![Just(0), Just(1), Just(u16::MAX), any::<u16>()].boxed()
}

pub fn i32_edgy() -> BoxedStrategy<i32> {
    prop_oneof![Just(0), Just(-1), Just(i32::MIN), Just(i32::MAX), any::<i32>()].boxed()
}

/// Any string whose length fits a U16 length field, including the empty one
/// and, rarely, the longest (65,535 bytes).
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        8 => "[a-z0-9_.:-]{0,12}",
        4 => "\\PC{0,8}",
        1 => Just(String::new()),
        1 => Just("x".repeat(u16::MAX as usize)),
        1 => Just(format!("{}é", "x".repeat(u16::MAX as usize - 2))),
    ]
    .boxed()
}

/// Where length 0 means "none" (a task spec's group and key, a leased task's
/// group), only non-empty strings are values.
pub fn nonempty_text() -> BoxedStrategy<String> {
    text().prop_filter("non-empty", |s| !s.is_empty()).boxed()
}

/// Opaque bytes: small ones, the empty one, and (rarely) one over 65,535 bytes,
/// so that a length taken as U16 by mistake would show.
pub fn blob() -> BoxedStrategy<Bytes> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..48).prop_map(Bytes::from),
        1 => Just(Bytes::new()),
        1 => Just(Bytes::from(vec![0xa5; 70_000])),
    ]
    .boxed()
}

pub fn discipline() -> BoxedStrategy<Discipline> {
    proptest::sample::select(Discipline::ALL.to_vec()).boxed()
}

pub fn task_state() -> BoxedStrategy<TaskState> {
    proptest::sample::select(TaskState::ALL.to_vec()).boxed()
}

/// Every code but `Ok`, which is never an error.
pub fn error_code() -> BoxedStrategy<ErrorCode> {
    proptest::sample::select(ErrorCode::ALL[1..].to_vec()).boxed()
}

pub fn dep() -> BoxedStrategy<Dep> {
    prop_oneof![
        prop_oneof![Just(0u64), Just((1 << 63) - 1), 0..(1u64 << 63)].prop_map(Dep::Task),
        u32_edgy().prop_map(Dep::Batch),
    ]
    .boxed()
}

pub fn task_spec() -> BoxedStrategy<TaskSpec> {
    (
        blob(),
        i32_edgy(),
        option::of(nonempty_text()),
        u64_edgy(),
        option::of(prop_oneof![Just(1u32), Just(u32::MAX), 1..=u32::MAX]),
        vec(dep(), 0..4),
        option::of(nonempty_text()),
    )
        .prop_map(|(payload, priority, group, delay_ms, max_attempts, depends_on, key)| TaskSpec {
            payload,
            priority,
            group,
            delay_ms,
            max_attempts,
            depends_on,
            key,
        })
        .boxed()
}

pub fn queue_patch() -> BoxedStrategy<QueuePatch> {
    (
        option::of(discipline()),
        option::of(u64_edgy()),
        option::of(u32_edgy()),
        option::of(u64_edgy()),
        option::of(u64_edgy()),
        option::of(u64_edgy()),
        option::of(u64_edgy()),
        option::of(option::of(u32_edgy())),
    )
        .prop_map(
            |(
                discipline,
                lease_ms,
                max_attempts,
                backoff_ms,
                backoff_max_ms,
                retention_ms,
                dead_retention_ms,
                group_concurrency,
            )| {
                QueuePatch {
                    discipline,
                    lease_ms,
                    max_attempts,
                    backoff_ms,
                    backoff_max_ms,
                    retention_ms,
                    dead_retention_ms,
                    group_concurrency,
                }
            },
        )
        .boxed()
}

pub fn complete_item() -> BoxedStrategy<CompleteItem> {
    (u64_edgy(), u64_edgy(), option::of(blob()))
        .prop_map(|(id, lease, result)| CompleteItem { id, lease, result })
        .boxed()
}

/// One strategy per request variant, named, so each gets its own property.
pub fn requests() -> Vec<(&'static str, BoxedStrategy<Request>)> {
    vec![
        (
            "hello",
            (any::<u8>(), any::<u8>())
                .prop_map(|(version_min, version_max)| Request::Hello { version_min, version_max })
                .boxed(),
        ),
        ("ping", Just(Request::Ping).boxed()),
        (
            "auth",
            prop_oneof![vec(any::<u8>(), 0..200), vec(any::<u8>(), 65_535..=65_535)]
                .prop_map(|token| Request::Auth { token: Secret::new(token) })
                .boxed(),
        ),
        ("stats", Just(Request::Stats).boxed()),
        (
            "configure_queue",
            (text(), queue_patch()).prop_map(|(queue, patch)| Request::ConfigureQueue { queue, patch }).boxed(),
        ),
        ("list_queues", Just(Request::ListQueues).boxed()),
        ("get_queue", text().prop_map(|queue| Request::GetQueue { queue }).boxed()),
        (
            "delete_queue",
            (text(), any::<bool>()).prop_map(|(queue, force)| Request::DeleteQueue { queue, force }).boxed(),
        ),
        (
            "list_tasks",
            (text(), task_state(), u64_edgy(), u16_edgy())
                .prop_map(|(queue, state, after, limit)| Request::ListTasks { queue, state, after, limit })
                .boxed(),
        ),
        ("enqueue", (text(), task_spec()).prop_map(|(queue, task)| Request::Enqueue { queue, task }).boxed()),
        (
            "enqueue_batch",
            (text(), vec(task_spec(), 0..5)).prop_map(|(queue, tasks)| Request::EnqueueBatch { queue, tasks }).boxed(),
        ),
        (
            "dequeue",
            (vec(text(), 0..5), u16_edgy(), option::of(u64_edgy()), u64_edgy())
                .prop_map(|(queues, max, lease_ms, wait_ms)| Request::Dequeue { queues, max, lease_ms, wait_ms })
                .boxed(),
        ),
        ("get_task", u64_edgy().prop_map(|id| Request::GetTask { id }).boxed()),
        (
            "complete",
            complete_item()
                .prop_map(|CompleteItem { id, lease, result }| Request::Complete { id, lease, result })
                .boxed(),
        ),
        (
            "fail",
            (u64_edgy(), u64_edgy(), text(), any::<bool>())
                .prop_map(|(id, lease, error, retry)| Request::Fail { id, lease, error, retry })
                .boxed(),
        ),
        (
            "extend",
            (u64_edgy(), u64_edgy(), u64_edgy())
                .prop_map(|(id, lease, lease_ms)| Request::Extend { id, lease, lease_ms })
                .boxed(),
        ),
        ("cancel", u64_edgy().prop_map(|id| Request::Cancel { id }).boxed()),
        ("complete_batch", vec(complete_item(), 0..5).prop_map(|items| Request::CompleteBatch { items }).boxed()),
        ("retry_task", u64_edgy().prop_map(|id| Request::RetryTask { id }).boxed()),
        ("delete_task", u64_edgy().prop_map(|id| Request::DeleteTask { id }).boxed()),
    ]
}

pub fn queue_info() -> BoxedStrategy<QueueInfo> {
    (
        text(),
        discipline(),
        (u64_edgy(), u32_edgy(), u64_edgy(), u64_edgy(), u64_edgy(), u32_edgy()),
        option::of(u32_edgy()),
        proptest::array::uniform7(u64_edgy()),
    )
        .prop_map(
            |(
                name,
                discipline,
                (lease_ms, max_attempts, backoff_ms, backoff_max_ms, retention_ms, dead_retention_ms),
                group_concurrency,
                counts,
            )| {
                QueueInfo {
                    name,
                    discipline,
                    lease_ms,
                    max_attempts,
                    backoff_ms,
                    backoff_max_ms,
                    retention_ms,
                    dead_retention_ms: dead_retention_ms.into(),
                    group_concurrency,
                    counts,
                }
            },
        )
        .boxed()
}

pub fn enqueued() -> BoxedStrategy<Enqueued> {
    (u64_edgy(), task_state(), any::<bool>()).prop_map(|(id, state, created)| Enqueued { id, state, created }).boxed()
}

pub fn leased_task() -> BoxedStrategy<LeasedTask> {
    (u64_edgy(), text(), blob(), i32_edgy(), option::of(nonempty_text()), u32_edgy(), u64_edgy(), u64_edgy())
        .prop_map(|(id, queue, payload, priority, group, attempt, lease, lease_expires_at_ms)| LeasedTask {
            id,
            queue,
            payload,
            priority,
            group,
            attempt,
            lease,
            lease_expires_at_ms,
        })
        .boxed()
}

pub fn task_view() -> BoxedStrategy<TaskView> {
    let strings = (text(), option::of(text()), option::of(text()), option::of(text()));
    let contents = (task_state(), blob(), option::of(blob()), vec(u64_edgy(), 0..4));
    let numbers = (u64_edgy(), i32_edgy(), u32_edgy(), u32_edgy());
    let times = (u64_edgy(), u64_edgy(), option::of(u64_edgy()), option::of(u64_edgy()), option::of(u64_edgy()));
    (strings, contents, numbers, times)
        .prop_map(
            |(
                (queue, group, key, error),
                (state, payload, result, depends_on),
                (id, priority, attempts, max_attempts),
                (created_at_ms, updated_at_ms, not_before_ms, lease_expires_at_ms, purge_at_ms),
            )| TaskView {
                id,
                queue,
                state,
                payload,
                priority,
                group,
                depends_on,
                key,
                attempts,
                max_attempts,
                result,
                error,
                created_at_ms,
                updated_at_ms,
                not_before_ms,
                lease_expires_at_ms,
                purge_at_ms,
            },
        )
        .boxed()
}

pub fn complete_outcome() -> BoxedStrategy<CompleteOutcome> {
    prop_oneof![task_state().prop_map(Ok), error_code().prop_map(Err)].boxed()
}

/// Any opcode byte a reply may carry: a known one, 0 (a framing error) or an
/// unknown one (the answer to an unknown opcode).
pub fn any_opcode_byte() -> BoxedStrategy<u8> {
    prop_oneof![opcode().prop_map(|o| o as u8), Just(0u8), any::<u8>()].boxed()
}

pub fn opcode() -> BoxedStrategy<Opcode> {
    proptest::sample::select(Opcode::ALL.to_vec()).boxed()
}

fn with(opcode: Opcode, response: impl Strategy<Value = Response> + 'static) -> BoxedStrategy<(u8, Response)> {
    response.prop_map(move |r| (opcode as u8, r)).boxed()
}

/// One strategy per reply variant, each with an opcode whose reply it is.
pub fn responses() -> Vec<(&'static str, BoxedStrategy<(u8, Response)>)> {
    vec![
        (
            "hello",
            with(
                Opcode::Hello,
                (any::<u8>(), u32_edgy())
                    .prop_map(|(version, frame_body_bytes_max)| Response::Hello { version, frame_body_bytes_max }),
            ),
        ),
        ("pong", with(Opcode::Ping, any::<bool>().prop_map(|ready| Response::Pong { ready }))),
        ("authenticated", with(Opcode::Auth, (0..=SCOPES_ALL).prop_map(|scopes| Response::Authenticated { scopes }))),
        (
            "queue",
            (prop_oneof![Just(Opcode::ConfigureQueue), Just(Opcode::GetQueue)], queue_info())
                .prop_map(|(opcode, info)| (opcode as u8, Response::Queue(info)))
                .boxed(),
        ),
        ("stats", with(Opcode::Stats, vec(any::<u8>(), 0..64).prop_map(|document| Response::Stats(document.into())))),
        ("queues", with(Opcode::ListQueues, vec(queue_info(), 0..4).prop_map(Response::Queues))),
        ("queue_deleted", with(Opcode::DeleteQueue, Just(Response::QueueDeleted))),
        ("enqueued", with(Opcode::Enqueue, enqueued().prop_map(Response::Enqueued))),
        ("enqueued_batch", with(Opcode::EnqueueBatch, vec(enqueued(), 0..6).prop_map(Response::EnqueuedBatch))),
        ("leased", with(Opcode::Dequeue, vec(leased_task(), 0..4).prop_map(Response::Leased))),
        ("task", with(Opcode::GetTask, task_view().prop_map(Response::Task))),
        (
            "task_page",
            with(
                Opcode::ListTasks,
                (vec(task_view(), 0..3), option::of(u64_edgy()))
                    .prop_map(|(tasks, next_cursor)| Response::TaskPage { tasks, next_cursor }),
            ),
        ),
        ("task_deleted", with(Opcode::DeleteTask, Just(Response::TaskDeleted))),
        (
            "task_state",
            (
                prop_oneof![Just(Opcode::Complete), Just(Opcode::Fail), Just(Opcode::Cancel), Just(Opcode::RetryTask)],
                u64_edgy(),
                task_state(),
            )
                .prop_map(|(opcode, id, state)| (opcode as u8, Response::TaskState { id, state }))
                .boxed(),
        ),
        (
            "extended",
            with(
                Opcode::Extend,
                (u64_edgy(), u64_edgy())
                    .prop_map(|(id, lease_expires_at_ms)| Response::Extended { id, lease_expires_at_ms }),
            ),
        ),
        (
            "completed_batch",
            with(Opcode::CompleteBatch, vec((u64_edgy(), complete_outcome()), 0..6).prop_map(Response::CompletedBatch)),
        ),
        (
            "error",
            (any_opcode_byte(), error_code(), text())
                .prop_map(|(opcode, code, message)| (opcode, Response::Error { code, message }))
                .boxed(),
        ),
    ]
}
