//! Request bodies: one encoder and one decoder per opcode (layouts in
//! `layout.rs` and `docs/wire.md`).

use bytes::Bytes;
use zerocopy::little_endian::{I32, U16, U32, U64};

use super::layout::{
    size, AuthRequest, CompletePart, ConfigureQueueRequest, CountPart, DeleteQueueRequest, DequeueRequest,
    EnqueueBatchRequest, ExtendRequest, FailRequest, HelloRequest, IdRequest, ListTasksRequest, QueueNameRequest,
    TaskSpecPart, COMPLETE_RESULT, DEP_BATCH_BIT, DEP_BYTES, DEQUEUE_LEASE_MS, DEQUEUE_QUEUE_BYTES_MIN, PATCH_ALL,
    PATCH_BACKOFF_MAX_MS, PATCH_BACKOFF_MS, PATCH_DEAD_RETENTION_MS, PATCH_DISCIPLINE,
    PATCH_GROUP_CONCURRENCY_UNLIMITED, PATCH_GROUP_CONCURRENCY_VALUE, PATCH_LEASE_MS, PATCH_MAX_ATTEMPTS,
    PATCH_RETENTION_MS,
};
use super::reader::{widen, Field, Reader};
use super::writer::Writer;
use crate::error::{DecodeError, EncodeError};
use crate::message::{CompleteItem, Dep, Discipline, Opcode, QueuePatch, Request, Secret, TaskSpec, TaskState};

const QUEUE: Field = Field::top("queue");

pub(crate) fn encode(request: &Request, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    match request {
        Request::Hello { version_min, version_max } => {
            w.fixed(&HelloRequest { version_min: *version_min, version_max: *version_max, reserved: [0; 6] });
        }
        Request::Ping | Request::ListQueues | Request::Stats => {}
        Request::Auth { token } => {
            let token_len = w.u16_len(token.0.len(), Field::top("token"))?;
            w.fixed(&AuthRequest { token_len, reserved: [0; 6] });
            w.bytes(&token.0);
        }
        Request::ConfigureQueue { queue, patch } => encode_configure_queue(queue, patch, w)?,
        Request::GetQueue { queue } => encode_queue_name(queue, w)?,
        Request::DeleteQueue { queue, force } => {
            let queue_len = w.u16_len(queue.len(), QUEUE)?;
            w.fixed(&DeleteQueueRequest { queue_len, force: u8::from(*force), reserved: [0; 5] });
            w.bytes(queue.as_bytes());
        }
        Request::Enqueue { queue, task } => {
            encode_queue_name(queue, w)?;
            encode_task_spec(task, Field::inside("task", None, ""), w)?;
        }
        Request::EnqueueBatch { queue, tasks } => {
            let queue_len = w.u16_len(queue.len(), QUEUE)?;
            let count = w.u32_len(tasks.len(), Field::top("tasks"))?;
            w.fixed(&EnqueueBatchRequest { queue_len, reserved: U16::new(0), count });
            w.bytes(queue.as_bytes());
            for (index, task) in tasks.iter().enumerate() {
                encode_task_spec(task, Field::inside("tasks", Some(index), ""), w)?;
            }
        }
        Request::Dequeue { queues, max, lease_ms, wait_ms } => {
            let queues_count = w.u16_len(queues.len(), Field::top("queues"))?;
            w.fixed(&DequeueRequest {
                max: U16::new(*max),
                queues_count,
                flags: U32::new(if lease_ms.is_some() { DEQUEUE_LEASE_MS } else { 0 }),
                lease_ms: U64::new(lease_ms.unwrap_or(0)),
                wait_ms: U64::new(*wait_ms),
            });
            for (index, queue) in queues.iter().enumerate() {
                let len = w.u16_len(queue.len(), Field::inside("queues", Some(index), ""))?;
                w.fixed(&len);
                w.bytes(queue.as_bytes());
            }
        }
        Request::ListTasks { queue, state, after, limit } => {
            let queue_len = w.u16_len(queue.len(), QUEUE)?;
            w.fixed(&ListTasksRequest {
                after: U64::new(*after),
                queue_len,
                limit: U16::new(*limit),
                state: *state as u8,
                reserved: [0; 3],
            });
            w.bytes(queue.as_bytes());
        }
        Request::GetTask { id } | Request::Cancel { id } | Request::RetryTask { id } | Request::DeleteTask { id } => {
            w.fixed(&IdRequest { id: U64::new(*id) })
        }
        Request::Complete { id, lease, result } => encode_complete_item(*id, *lease, result, Field::FIXED, w)?,
        Request::Fail { id, lease, error, retry } => {
            let error_len = w.u16_len(error.len(), Field::top("error"))?;
            w.fixed(&FailRequest {
                id: U64::new(*id),
                lease: U64::new(*lease),
                retry: u8::from(*retry),
                reserved0: 0,
                error_len,
                reserved1: U32::new(0),
            });
            w.bytes(error.as_bytes());
        }
        Request::Extend { id, lease, lease_ms } => {
            w.fixed(&ExtendRequest { id: U64::new(*id), lease: U64::new(*lease), lease_ms: U64::new(*lease_ms) });
        }
        Request::CompleteBatch { items } => {
            let count = w.u32_len(items.len(), Field::top("items"))?;
            w.fixed(&CountPart { count, reserved: U32::new(0) });
            for (index, item) in items.iter().enumerate() {
                let part = Field::inside("items", Some(index), "");
                encode_complete_item(item.id, item.lease, &item.result, part, w)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn decode(opcode: Opcode, body: &Bytes) -> Result<Request, DecodeError> {
    let mut r = Reader::new(body, opcode.name());
    let request = match opcode {
        Opcode::Hello => {
            let f = r.fixed::<HelloRequest>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            Request::Hello { version_min: f.version_min, version_max: f.version_max }
        }
        Opcode::Ping => Request::Ping,
        Opcode::Auth => {
            let f = r.fixed::<AuthRequest>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            Request::Auth { token: Secret(r.bytes(usize::from(f.token_len.get()), Field::top("token"))?) }
        }
        Opcode::ListQueues => Request::ListQueues,
        Opcode::Stats => Request::Stats,
        Opcode::ConfigureQueue => decode_configure_queue(&mut r)?,
        Opcode::GetQueue => Request::GetQueue { queue: decode_queue_name(&mut r)? },
        Opcode::DeleteQueue => {
            let f = r.fixed::<DeleteQueueRequest>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            let force = r.boolean(f.force, Field::top("force"))?;
            let queue = r.string(usize::from(f.queue_len.get()), QUEUE)?;
            Request::DeleteQueue { queue, force }
        }
        Opcode::Enqueue => {
            let queue = decode_queue_name(&mut r)?;
            let task = decode_task_spec(&mut r, Field::inside("task", None, ""))?;
            Request::Enqueue { queue, task }
        }
        Opcode::EnqueueBatch => {
            let f = r.fixed::<EnqueueBatchRequest>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            let queue = r.string(usize::from(f.queue_len.get()), QUEUE)?;
            let count = r.check_count(widen(f.count.get()), size::<TaskSpecPart>(), Field::top("tasks"))?;
            let mut tasks = Vec::with_capacity(count);
            for index in 0..count {
                tasks.push(decode_task_spec(&mut r, Field::inside("tasks", Some(index), ""))?);
            }
            Request::EnqueueBatch { queue, tasks }
        }
        Opcode::Dequeue => {
            let f = r.fixed::<DequeueRequest>(Field::FIXED)?;
            let flags = f.flags.get();
            r.flags(flags.into(), DEQUEUE_LEASE_MS.into(), Field::top("flags"))?;
            let lease_ms = if flags & DEQUEUE_LEASE_MS != 0 {
                Some(f.lease_ms.get())
            } else {
                r.absent_is_zero(f.lease_ms.get(), Field::top("lease_ms"))?;
                None
            };
            let count =
                r.check_count(usize::from(f.queues_count.get()), DEQUEUE_QUEUE_BYTES_MIN, Field::top("queues"))?;
            let mut queues = Vec::with_capacity(count);
            for index in 0..count {
                let len = r.fixed::<U16>(Field::inside("queues", Some(index), "len"))?.get();
                queues.push(r.string(usize::from(len), Field::inside("queues", Some(index), ""))?);
            }
            Request::Dequeue { queues, max: f.max.get(), lease_ms, wait_ms: f.wait_ms.get() }
        }
        Opcode::GetTask => Request::GetTask { id: r.fixed::<IdRequest>(Field::FIXED)?.id.get() },
        Opcode::Cancel => Request::Cancel { id: r.fixed::<IdRequest>(Field::FIXED)?.id.get() },
        Opcode::RetryTask => Request::RetryTask { id: r.fixed::<IdRequest>(Field::FIXED)?.id.get() },
        Opcode::DeleteTask => Request::DeleteTask { id: r.fixed::<IdRequest>(Field::FIXED)?.id.get() },
        Opcode::ListTasks => {
            let f = r.fixed::<ListTasksRequest>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            let state = TaskState::from_u8(f.state)
                .ok_or_else(|| r.malformed(format_args!("state is {}, not a task state (0..=6)", f.state)))?;
            let queue = r.string(usize::from(f.queue_len.get()), QUEUE)?;
            Request::ListTasks { queue, state, after: f.after.get(), limit: f.limit.get() }
        }
        Opcode::Complete => {
            let CompleteItem { id, lease, result } = decode_complete_item(&mut r, Field::FIXED)?;
            Request::Complete { id, lease, result }
        }
        Opcode::Fail => {
            let f = r.fixed::<FailRequest>(Field::FIXED)?;
            r.reserved(&f.reserved0, Field::top("reserved"))?;
            r.reserved(&f.reserved1, Field::top("reserved"))?;
            let retry = r.boolean(f.retry, Field::top("retry"))?;
            let error = r.string(usize::from(f.error_len.get()), Field::top("error"))?;
            Request::Fail { id: f.id.get(), lease: f.lease.get(), error, retry }
        }
        Opcode::Extend => {
            let f = r.fixed::<ExtendRequest>(Field::FIXED)?;
            Request::Extend { id: f.id.get(), lease: f.lease.get(), lease_ms: f.lease_ms.get() }
        }
        Opcode::CompleteBatch => {
            let f = r.fixed::<CountPart>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            let count = r.check_count(widen(f.count.get()), size::<CompletePart>(), Field::top("items"))?;
            let mut items = Vec::with_capacity(count);
            for index in 0..count {
                items.push(decode_complete_item(&mut r, Field::inside("items", Some(index), ""))?);
            }
            Request::CompleteBatch { items }
        }
    };
    r.finish()?;
    Ok(request)
}

fn encode_queue_name(queue: &str, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let queue_len = w.u16_len(queue.len(), QUEUE)?;
    w.fixed(&QueueNameRequest { queue_len, reserved: [0; 6] });
    w.bytes(queue.as_bytes());
    Ok(())
}

fn decode_queue_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let f = r.fixed::<QueueNameRequest>(Field::FIXED)?;
    r.reserved(&f.reserved, Field::top("reserved"))?;
    r.string(usize::from(f.queue_len.get()), QUEUE)
}

fn encode_configure_queue(queue: &str, patch: &QueuePatch, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let mut present = 0;
    let mut bit = |set: bool, mask: u16| {
        if set {
            present |= mask;
        }
    };
    bit(patch.discipline.is_some(), PATCH_DISCIPLINE);
    bit(patch.lease_ms.is_some(), PATCH_LEASE_MS);
    bit(patch.max_attempts.is_some(), PATCH_MAX_ATTEMPTS);
    bit(patch.backoff_ms.is_some(), PATCH_BACKOFF_MS);
    bit(patch.backoff_max_ms.is_some(), PATCH_BACKOFF_MAX_MS);
    bit(patch.retention_ms.is_some(), PATCH_RETENTION_MS);
    bit(matches!(patch.group_concurrency, Some(Some(_))), PATCH_GROUP_CONCURRENCY_VALUE);
    bit(matches!(patch.group_concurrency, Some(None)), PATCH_GROUP_CONCURRENCY_UNLIMITED);
    bit(patch.dead_retention_ms.is_some(), PATCH_DEAD_RETENTION_MS);
    let queue_len = w.u16_len(queue.len(), QUEUE)?;
    w.fixed(&ConfigureQueueRequest {
        present: U16::new(present),
        discipline: patch.discipline.map_or(0, |d| d as u8),
        reserved0: 0,
        max_attempts: U32::new(patch.max_attempts.unwrap_or(0)),
        lease_ms: U64::new(patch.lease_ms.unwrap_or(0)),
        backoff_ms: U64::new(patch.backoff_ms.unwrap_or(0)),
        backoff_max_ms: U64::new(patch.backoff_max_ms.unwrap_or(0)),
        retention_ms: U64::new(patch.retention_ms.unwrap_or(0)),
        group_concurrency: U32::new(patch.group_concurrency.flatten().unwrap_or(0)),
        queue_len,
        reserved1: U16::new(0),
    });
    w.bytes(queue.as_bytes());
    if let Some(dead_retention_ms) = patch.dead_retention_ms {
        w.fixed(&U64::new(dead_retention_ms));
    }
    Ok(())
}

fn decode_configure_queue(r: &mut Reader<'_>) -> Result<Request, DecodeError> {
    let f = r.fixed::<ConfigureQueueRequest>(Field::FIXED)?;
    let present = f.present.get();
    r.flags(present.into(), PATCH_ALL.into(), Field::top("present"))?;
    r.reserved(&f.reserved0, Field::top("reserved"))?;
    r.reserved(&f.reserved1, Field::top("reserved"))?;

    // A value whose bit is clear must be 0, so each patch has one encoding.
    let optional = |r: &Reader<'_>, mask: u16, value: u64, name: &'static str| -> Result<Option<u64>, DecodeError> {
        if present & mask != 0 {
            Ok(Some(value))
        } else {
            r.absent_is_zero(value, Field::top(name)).map(|()| None)
        }
    };
    let discipline = match optional(r, PATCH_DISCIPLINE, f.discipline.into(), "discipline")? {
        None => None,
        Some(_) => Some(decode_discipline(r, f.discipline, Field::top("discipline"))?),
    };
    let lease_ms = optional(r, PATCH_LEASE_MS, f.lease_ms.get(), "lease_ms")?;
    let max_attempts =
        optional(r, PATCH_MAX_ATTEMPTS, f.max_attempts.get().into(), "max_attempts")?.map(|_| f.max_attempts.get());
    let backoff_ms = optional(r, PATCH_BACKOFF_MS, f.backoff_ms.get(), "backoff_ms")?;
    let backoff_max_ms = optional(r, PATCH_BACKOFF_MAX_MS, f.backoff_max_ms.get(), "backoff_max_ms")?;
    let retention_ms = optional(r, PATCH_RETENTION_MS, f.retention_ms.get(), "retention_ms")?;
    let group_concurrency_value = f.group_concurrency.get();
    let group_concurrency =
        match (present & PATCH_GROUP_CONCURRENCY_VALUE != 0, present & PATCH_GROUP_CONCURRENCY_UNLIMITED != 0) {
            (true, true) => {
                return Err(
                    r.malformed(format_args!("present sets both group_concurrency bits (6: a value, 7: unlimited)"))
                )
            }
            (true, false) => Some(Some(group_concurrency_value)),
            (false, true) if group_concurrency_value != 0 => {
                return Err(r.malformed(format_args!(
                    "group_concurrency is {group_concurrency_value} but must be 0 when bit 7 (unlimited) is set"
                )))
            }
            (false, true) => Some(None),
            (false, false) => {
                r.absent_is_zero(group_concurrency_value.into(), Field::top("group_concurrency"))?;
                None
            }
        };
    let queue = r.string(usize::from(f.queue_len.get()), QUEUE)?;
    let dead_retention_ms = if present & PATCH_DEAD_RETENTION_MS != 0 {
        Some(r.fixed::<U64>(Field::top("dead_retention_ms"))?.get())
    } else {
        None
    };
    let patch = QueuePatch {
        discipline,
        lease_ms,
        max_attempts,
        backoff_ms,
        backoff_max_ms,
        retention_ms,
        dead_retention_ms,
        group_concurrency,
    };
    Ok(Request::ConfigureQueue { queue, patch })
}

pub(crate) fn decode_discipline(r: &Reader<'_>, value: u8, field: Field) -> Result<Discipline, DecodeError> {
    Discipline::from_u8(value).ok_or_else(|| {
        r.malformed(format_args!("{field} is {value}, not a discipline (0 fifo, 1 lifo, 2 priority, 3 round_robin)"))
    })
}

/// Length 0 means "none" for a task spec's group and key, so an empty string
/// has no encoding (the engine rejects empty ones anyway).
fn optional_text_len(text: &Option<String>, field: Field, w: &Writer<'_>) -> Result<U16, EncodeError> {
    match text {
        None => Ok(U16::new(0)),
        Some(text) if text.is_empty() => {
            Err(w.error(format_args!("{field} is empty; length 0 means none, so send None instead")))
        }
        Some(text) => w.u16_len(text.len(), field),
    }
}

fn encode_task_spec(task: &TaskSpec, part: Field, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let group_len = optional_text_len(&task.group, part.with("group"), w)?;
    let key_len = optional_text_len(&task.key, part.with("key"), w)?;
    let max_attempts = match task.max_attempts {
        None => 0,
        Some(0) => {
            return Err(w.error(format_args!(
                "{} is Some(0); 0 means the queue's default, so send None instead",
                part.with("max_attempts")
            )))
        }
        Some(n) => n,
    };
    let depends_count = w.u16_len(task.depends_on.len(), part.with("depends_on"))?;
    let payload_len = w.u32_len(task.payload.len(), part.with("payload"))?;
    w.fixed(&TaskSpecPart {
        priority: I32::new(task.priority),
        max_attempts: U32::new(max_attempts),
        delay_ms: U64::new(task.delay_ms),
        payload_len,
        depends_count,
        group_len,
        key_len,
        reserved0: U16::new(0),
        reserved1: U32::new(0),
    });
    w.bytes(task.group.as_deref().unwrap_or("").as_bytes());
    w.bytes(task.key.as_deref().unwrap_or("").as_bytes());
    for (index, dep) in task.depends_on.iter().enumerate() {
        let word = match *dep {
            Dep::Task(id) if id & DEP_BATCH_BIT != 0 => {
                return Err(w.error(format_args!(
                    "{}[{index}] is task {id}, which has bit 63 set (it marks a batch index)",
                    part.with("depends_on")
                )))
            }
            Dep::Task(id) => id,
            Dep::Batch(index) => DEP_BATCH_BIT | u64::from(index),
        };
        w.fixed(&U64::new(word));
    }
    w.bytes(&task.payload);
    Ok(())
}

fn decode_task_spec(r: &mut Reader<'_>, part: Field) -> Result<TaskSpec, DecodeError> {
    let f = r.fixed::<TaskSpecPart>(part)?;
    r.reserved(&f.reserved0, part.with("reserved"))?;
    r.reserved(&f.reserved1, part.with("reserved"))?;
    let group = r.string_or_none(usize::from(f.group_len.get()), part.with("group"))?;
    let key = r.string_or_none(usize::from(f.key_len.get()), part.with("key"))?;
    let depends_count = r.check_count(usize::from(f.depends_count.get()), DEP_BYTES, part.with("depends_on"))?;
    let mut depends_on = Vec::with_capacity(depends_count);
    for index in 0..depends_count {
        let word = r.fixed::<U64>(part.with("depends_on"))?.get();
        let dep = if word & DEP_BATCH_BIT == 0 {
            Dep::Task(word)
        } else {
            // The index must fit in bits 0..31: bits 32..62 are reserved.
            match u32::try_from(word & !DEP_BATCH_BIT) {
                Ok(batch_index) => Dep::Batch(batch_index),
                Err(_) => {
                    return Err(r.malformed(format_args!(
                        "{}[{index}] names a batch index but bits 32..62 are not 0",
                        part.with("depends_on")
                    )))
                }
            }
        };
        depends_on.push(dep);
    }
    let payload = r.bytes(widen(f.payload_len.get()), part.with("payload"))?;
    let max_attempts = match f.max_attempts.get() {
        0 => None,
        n => Some(n),
    };
    Ok(TaskSpec {
        payload,
        priority: f.priority.get(),
        group,
        delay_ms: f.delay_ms.get(),
        max_attempts,
        depends_on,
        key,
    })
}

fn encode_complete_item(
    id: u64,
    lease: u64,
    result: &Option<Bytes>,
    part: Field,
    w: &mut Writer<'_>,
) -> Result<(), EncodeError> {
    let result_len = w.u32_len(result.as_ref().map_or(0, Bytes::len), part.with("result"))?;
    w.fixed(&CompletePart {
        id: U64::new(id),
        lease: U64::new(lease),
        flags: U32::new(if result.is_some() { COMPLETE_RESULT } else { 0 }),
        result_len,
    });
    if let Some(result) = result {
        w.bytes(result);
    }
    Ok(())
}

fn decode_complete_item(r: &mut Reader<'_>, part: Field) -> Result<CompleteItem, DecodeError> {
    let f = r.fixed::<CompletePart>(part)?;
    let flags = f.flags.get();
    r.flags(flags.into(), COMPLETE_RESULT.into(), part.with("flags"))?;
    let result_len = widen(f.result_len.get());
    let result = if flags & COMPLETE_RESULT != 0 {
        Some(r.bytes(result_len, part.with("result"))?)
    } else {
        r.absent_is_zero(f.result_len.get().into(), part.with("result_len"))?;
        None
    };
    Ok(CompleteItem { id: f.id.get(), lease: f.lease.get(), result })
}
