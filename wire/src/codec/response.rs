//! Reply bodies: which reply each opcode gets, and one encoder and one decoder
//! per reply (layouts in `layout.rs` and `docs/wire.md`).

use bytes::Bytes;
use zerocopy::little_endian::{I32, U16, U32, U64};

use super::layout::{
    size, AuthReply, CompleteOutcomePart, CountPart, EnqueuedPart, ErrorReply, ExtendedReply, HelloReply,
    LeasedTaskPart, PongReply, QueueInfoPart, TaskPageReply, TaskStateReply, TaskViewPart, DEP_BYTES,
    QUEUE_INFO_GROUP_CONCURRENCY, TASK_PAGE_NEXT_CURSOR, VIEW_ALL, VIEW_ERROR, VIEW_GROUP, VIEW_KEY,
    VIEW_LEASE_EXPIRES_AT_MS, VIEW_NOT_BEFORE_MS, VIEW_PURGE_AT_MS, VIEW_RESULT,
};
use super::reader::{widen, Field, Reader};
use super::request::decode_discipline;
use super::writer::Writer;
use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::message::{Enqueued, LeasedTask, Opcode, QueueInfo, Response, TaskState, TaskView, SCOPES_ALL};

/// Longest error message a reply carries (its length is a U16).
const ERROR_MESSAGE_BYTES_MAX: usize = u16::MAX as usize;

/// The start of error messages about `opcode`'s reply.
pub(crate) fn context(opcode: Opcode) -> &'static str {
    match opcode {
        Opcode::Hello => "hello reply",
        Opcode::Ping => "ping reply",
        Opcode::Auth => "auth reply",
        Opcode::Stats => "stats reply",
        Opcode::ConfigureQueue => "configure_queue reply",
        Opcode::ListQueues => "list_queues reply",
        Opcode::GetQueue => "get_queue reply",
        Opcode::DeleteQueue => "delete_queue reply",
        Opcode::ListTasks => "list_tasks reply",
        Opcode::Enqueue => "enqueue reply",
        Opcode::EnqueueBatch => "enqueue_batch reply",
        Opcode::Dequeue => "dequeue reply",
        Opcode::GetTask => "get_task reply",
        Opcode::Complete => "complete reply",
        Opcode::Fail => "fail reply",
        Opcode::Extend => "extend reply",
        Opcode::Cancel => "cancel reply",
        Opcode::CompleteBatch => "complete_batch reply",
        Opcode::RetryTask => "retry_task reply",
        Opcode::DeleteTask => "delete_task reply",
    }
}

/// Writes the body and returns the header's `status`.
pub(crate) fn encode(response: &Response, w: &mut Writer<'_>) -> Result<u16, EncodeError> {
    match response {
        Response::Hello { version, frame_body_bytes_max } => w.fixed(&HelloReply {
            version: *version,
            reserved: [0; 3],
            frame_body_bytes_max: U32::new(*frame_body_bytes_max),
        }),
        Response::Pong { ready } => w.fixed(&PongReply { ready: u8::from(*ready), reserved: [0; 7] }),
        Response::Authenticated { scopes } => {
            if scopes & !SCOPES_ALL != 0 {
                return Err(w.error(format_args!("scopes {scopes:#04x} has bits outside {SCOPES_ALL:#04x}")));
            }
            w.fixed(&AuthReply { scopes: *scopes, reserved: [0; 7] });
        }
        Response::Stats(document) => {
            let count = w.u32_len(document.len(), Field::top("document"))?;
            w.fixed(&CountPart { count, reserved: U32::new(0) });
            w.bytes(document);
        }
        Response::Queue(info) => encode_queue_info(info, Field::FIXED, w)?,
        Response::Queues(infos) => {
            let count = w.u32_len(infos.len(), Field::top("queues"))?;
            w.fixed(&CountPart { count, reserved: U32::new(0) });
            for (index, info) in infos.iter().enumerate() {
                encode_queue_info(info, Field::inside("queues", Some(index), ""), w)?;
            }
        }
        Response::QueueDeleted | Response::TaskDeleted => {}
        Response::TaskPage { tasks, next_cursor } => {
            let count = w.u32_len(tasks.len(), Field::top("tasks"))?;
            w.fixed(&TaskPageReply {
                count,
                flags: U32::new(if next_cursor.is_some() { TASK_PAGE_NEXT_CURSOR } else { 0 }),
                next_cursor: U64::new(next_cursor.unwrap_or(0)),
            });
            for view in tasks {
                encode_task_view(view, w)?;
            }
        }
        Response::Enqueued(enqueued) => encode_enqueued(enqueued, w),
        Response::EnqueuedBatch(enqueued) => {
            let count = w.u32_len(enqueued.len(), Field::top("tasks"))?;
            w.fixed(&CountPart { count, reserved: U32::new(0) });
            for one in enqueued {
                encode_enqueued(one, w);
            }
        }
        Response::Leased(tasks) => {
            let count = w.u32_len(tasks.len(), Field::top("tasks"))?;
            w.fixed(&CountPart { count, reserved: U32::new(0) });
            for (index, task) in tasks.iter().enumerate() {
                encode_leased_task(task, Field::inside("tasks", Some(index), ""), w)?;
            }
        }
        Response::Task(view) => encode_task_view(view, w)?,
        Response::TaskState { id, state } => {
            w.fixed(&TaskStateReply { id: U64::new(*id), state: *state as u8, reserved: [0; 7] });
        }
        Response::Extended { id, lease_expires_at_ms } => {
            w.fixed(&ExtendedReply { id: U64::new(*id), lease_expires_at_ms: U64::new(*lease_expires_at_ms) });
        }
        Response::CompletedBatch(outcomes) => {
            let count = w.u32_len(outcomes.len(), Field::top("items"))?;
            w.fixed(&CountPart { count, reserved: U32::new(0) });
            for (index, (id, outcome)) in outcomes.iter().enumerate() {
                let (status, state) = match outcome {
                    Ok(state) => (0, *state as u8),
                    Err(ErrorCode::Ok) => {
                        return Err(
                            w.error(format_args!("items[{index}] is Err(ok); a failed item needs an error code"))
                        )
                    }
                    Err(code) => (*code as u16, 0),
                };
                w.fixed(&CompleteOutcomePart { id: U64::new(*id), status: U16::new(status), state, reserved: [0; 5] });
            }
        }
        Response::Error { code, message } => {
            if *code == ErrorCode::Ok {
                return Err(w.error(format_args!("an error reply needs an error code, not ok")));
            }
            let message = cut_at_char_boundary(message, ERROR_MESSAGE_BYTES_MAX);
            let message_len = w.u16_len(message.len(), Field::top("message"))?;
            w.fixed(&ErrorReply { message_len, reserved: [0; 6] });
            w.bytes(message.as_bytes());
            return Ok(*code as u16);
        }
    }
    Ok(0)
}

/// The longest prefix of `text` of at most `bytes_max` bytes that ends on a
/// character boundary.
fn cut_at_char_boundary(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    // Terminates: 0 is always a boundary.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Decodes a successful reply (status 0) to a request with `opcode`.
pub(crate) fn decode(opcode: Opcode, body: &Bytes) -> Result<Response, DecodeError> {
    let mut r = Reader::new(body, context(opcode));
    let response = match opcode {
        Opcode::Hello => {
            let f = r.fixed::<HelloReply>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            Response::Hello { version: f.version, frame_body_bytes_max: f.frame_body_bytes_max.get() }
        }
        Opcode::Ping => {
            let f = r.fixed::<PongReply>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            Response::Pong { ready: r.boolean(f.ready, Field::top("ready"))? }
        }
        Opcode::Auth => {
            let f = r.fixed::<AuthReply>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            r.flags(f.scopes.into(), SCOPES_ALL.into(), Field::top("scopes"))?;
            Response::Authenticated { scopes: f.scopes }
        }
        Opcode::Stats => {
            let f = r.fixed::<CountPart>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            Response::Stats(r.bytes(widen(f.count.get()), Field::top("document"))?)
        }
        Opcode::ConfigureQueue | Opcode::GetQueue => Response::Queue(decode_queue_info(&mut r, Field::FIXED)?),
        Opcode::ListQueues => {
            let count = decode_count(&mut r, size::<QueueInfoPart>(), "queues")?;
            let mut infos = Vec::with_capacity(count);
            for index in 0..count {
                infos.push(decode_queue_info(&mut r, Field::inside("queues", Some(index), ""))?);
            }
            Response::Queues(infos)
        }
        Opcode::DeleteQueue => Response::QueueDeleted,
        Opcode::DeleteTask => Response::TaskDeleted,
        Opcode::ListTasks => {
            let f = r.fixed::<TaskPageReply>(Field::FIXED)?;
            let flags = f.flags.get();
            r.flags(flags.into(), TASK_PAGE_NEXT_CURSOR.into(), Field::top("flags"))?;
            let next_cursor = if flags & TASK_PAGE_NEXT_CURSOR != 0 {
                Some(f.next_cursor.get())
            } else {
                r.absent_is_zero(f.next_cursor.get(), Field::top("next_cursor"))?;
                None
            };
            let count = r.check_count(widen(f.count.get()), size::<TaskViewPart>(), Field::top("tasks"))?;
            let mut tasks = Vec::with_capacity(count);
            for _ in 0..count {
                tasks.push(decode_task_view(&mut r)?);
            }
            Response::TaskPage { tasks, next_cursor }
        }
        Opcode::Enqueue => Response::Enqueued(decode_enqueued(&mut r, Field::FIXED)?),
        Opcode::EnqueueBatch => {
            let count = decode_count(&mut r, size::<EnqueuedPart>(), "tasks")?;
            let mut enqueued = Vec::with_capacity(count);
            for index in 0..count {
                enqueued.push(decode_enqueued(&mut r, Field::inside("tasks", Some(index), ""))?);
            }
            Response::EnqueuedBatch(enqueued)
        }
        Opcode::Dequeue => {
            let count = decode_count(&mut r, size::<LeasedTaskPart>(), "tasks")?;
            let mut tasks = Vec::with_capacity(count);
            for index in 0..count {
                tasks.push(decode_leased_task(&mut r, Field::inside("tasks", Some(index), ""))?);
            }
            Response::Leased(tasks)
        }
        Opcode::GetTask => Response::Task(decode_task_view(&mut r)?),
        Opcode::Complete | Opcode::Fail | Opcode::Cancel | Opcode::RetryTask => {
            let f = r.fixed::<TaskStateReply>(Field::FIXED)?;
            r.reserved(&f.reserved, Field::top("reserved"))?;
            Response::TaskState { id: f.id.get(), state: decode_state(&r, f.state, Field::top("state"))? }
        }
        Opcode::Extend => {
            let f = r.fixed::<ExtendedReply>(Field::FIXED)?;
            Response::Extended { id: f.id.get(), lease_expires_at_ms: f.lease_expires_at_ms.get() }
        }
        Opcode::CompleteBatch => {
            let count = decode_count(&mut r, size::<CompleteOutcomePart>(), "items")?;
            let mut outcomes = Vec::with_capacity(count);
            for index in 0..count {
                let part = Field::inside("items", Some(index), "");
                let f = r.fixed::<CompleteOutcomePart>(part)?;
                r.reserved(&f.reserved, part.with("reserved"))?;
                let outcome = match f.status.get() {
                    0 => Ok(decode_state(&r, f.state, part.with("state"))?),
                    status => {
                        let Some(code) = ErrorCode::from_u16(status) else {
                            return Err(
                                r.malformed(format_args!("{} is {status}, not an error code", part.with("status")))
                            );
                        };
                        r.absent_is_zero(f.state.into(), part.with("state"))?;
                        Err(code)
                    }
                };
                outcomes.push((f.id.get(), outcome));
            }
            Response::CompletedBatch(outcomes)
        }
    };
    r.finish()?;
    Ok(response)
}

/// Decodes an error reply's body; `code` is the header's status (not `Ok`).
pub(crate) fn decode_error(code: ErrorCode, body: &Bytes) -> Result<Response, DecodeError> {
    let mut r = Reader::new(body, "error reply");
    let f = r.fixed::<ErrorReply>(Field::FIXED)?;
    r.reserved(&f.reserved, Field::top("reserved"))?;
    let message = r.string(usize::from(f.message_len.get()), Field::top("message"))?;
    r.finish()?;
    Ok(Response::Error { code, message })
}

/// The count part of a list reply, checked against the bytes left.
fn decode_count(r: &mut Reader<'_>, item_bytes_min: usize, list: &'static str) -> Result<usize, DecodeError> {
    let f = r.fixed::<CountPart>(Field::FIXED)?;
    r.reserved(&f.reserved, Field::top("reserved"))?;
    r.check_count(widen(f.count.get()), item_bytes_min, Field::top(list))
}

fn decode_state(r: &Reader<'_>, value: u8, field: Field) -> Result<TaskState, DecodeError> {
    TaskState::from_u8(value).ok_or_else(|| r.malformed(format_args!("{field} is {value}, not a task state (0..=6)")))
}

fn encode_queue_info(info: &QueueInfo, part: Field, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let name_len = w.u16_len(info.name.len(), part.with("name"))?;
    w.fixed(&QueueInfoPart {
        discipline: info.discipline as u8,
        flags: if info.group_concurrency.is_some() { QUEUE_INFO_GROUP_CONCURRENCY } else { 0 },
        name_len,
        max_attempts: U32::new(info.max_attempts),
        lease_ms: U64::new(info.lease_ms),
        backoff_ms: U64::new(info.backoff_ms),
        backoff_max_ms: U64::new(info.backoff_max_ms),
        retention_ms: U64::new(info.retention_ms),
        group_concurrency: U32::new(info.group_concurrency.unwrap_or(0)),
        dead_retention_ms: w.u32_value(info.dead_retention_ms, part.with("dead_retention_ms"))?,
        counts: info.counts.map(U64::new),
    });
    w.bytes(info.name.as_bytes());
    Ok(())
}

fn decode_queue_info(r: &mut Reader<'_>, part: Field) -> Result<QueueInfo, DecodeError> {
    let f = r.fixed::<QueueInfoPart>(part)?;
    let discipline = decode_discipline(r, f.discipline, part.with("discipline"))?;
    r.flags(f.flags.into(), QUEUE_INFO_GROUP_CONCURRENCY.into(), part.with("flags"))?;
    let group_concurrency = if f.flags & QUEUE_INFO_GROUP_CONCURRENCY != 0 {
        Some(f.group_concurrency.get())
    } else {
        r.absent_is_zero(f.group_concurrency.get().into(), part.with("group_concurrency"))?;
        None
    };
    let name = r.string(usize::from(f.name_len.get()), part.with("name"))?;
    Ok(QueueInfo {
        name,
        discipline,
        lease_ms: f.lease_ms.get(),
        max_attempts: f.max_attempts.get(),
        backoff_ms: f.backoff_ms.get(),
        backoff_max_ms: f.backoff_max_ms.get(),
        retention_ms: f.retention_ms.get(),
        dead_retention_ms: f.dead_retention_ms.get().into(),
        group_concurrency,
        counts: f.counts.map(|count| count.get()),
    })
}

fn encode_enqueued(enqueued: &Enqueued, w: &mut Writer<'_>) {
    w.fixed(&EnqueuedPart {
        id: U64::new(enqueued.id),
        state: enqueued.state as u8,
        created: u8::from(enqueued.created),
        reserved: [0; 6],
    });
}

fn decode_enqueued(r: &mut Reader<'_>, part: Field) -> Result<Enqueued, DecodeError> {
    let f = r.fixed::<EnqueuedPart>(part)?;
    r.reserved(&f.reserved, part.with("reserved"))?;
    Ok(Enqueued {
        id: f.id.get(),
        state: decode_state(r, f.state, part.with("state"))?,
        created: r.boolean(f.created, part.with("created"))?,
    })
}

fn encode_leased_task(task: &LeasedTask, part: Field, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let queue_len = w.u16_len(task.queue.len(), part.with("queue"))?;
    let group_len = match &task.group {
        None => U16::new(0),
        Some(group) if group.is_empty() => {
            return Err(w.error(format_args!("{} is empty; length 0 means none", part.with("group"))))
        }
        Some(group) => w.u16_len(group.len(), part.with("group"))?,
    };
    let payload_len = w.u32_len(task.payload.len(), part.with("payload"))?;
    w.fixed(&LeasedTaskPart {
        id: U64::new(task.id),
        lease: U64::new(task.lease),
        lease_expires_at_ms: U64::new(task.lease_expires_at_ms),
        priority: I32::new(task.priority),
        attempt: U32::new(task.attempt),
        queue_len,
        group_len,
        payload_len,
    });
    w.bytes(task.queue.as_bytes());
    w.bytes(task.group.as_deref().unwrap_or("").as_bytes());
    w.bytes(&task.payload);
    Ok(())
}

fn decode_leased_task(r: &mut Reader<'_>, part: Field) -> Result<LeasedTask, DecodeError> {
    let f = r.fixed::<LeasedTaskPart>(part)?;
    let queue = r.string(usize::from(f.queue_len.get()), part.with("queue"))?;
    let group = r.string_or_none(usize::from(f.group_len.get()), part.with("group"))?;
    let payload = r.bytes(widen(f.payload_len.get()), part.with("payload"))?;
    Ok(LeasedTask {
        id: f.id.get(),
        queue,
        payload,
        priority: f.priority.get(),
        group,
        attempt: f.attempt.get(),
        lease: f.lease.get(),
        lease_expires_at_ms: f.lease_expires_at_ms.get(),
    })
}

fn encode_task_view(view: &TaskView, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let mut present = 0;
    let mut optional_u64 = |value: Option<u64>, bit: u8| match value {
        Some(value) => {
            present |= bit;
            value
        }
        None => 0,
    };
    let not_before_ms = optional_u64(view.not_before_ms, VIEW_NOT_BEFORE_MS);
    let lease_expires_at_ms = optional_u64(view.lease_expires_at_ms, VIEW_LEASE_EXPIRES_AT_MS);
    let purge_at_ms = optional_u64(view.purge_at_ms, VIEW_PURGE_AT_MS);
    for (is_set, bit) in [
        (view.result.is_some(), VIEW_RESULT),
        (view.error.is_some(), VIEW_ERROR),
        (view.group.is_some(), VIEW_GROUP),
        (view.key.is_some(), VIEW_KEY),
    ] {
        if is_set {
            present |= bit;
        }
    }
    let group = view.group.as_deref().unwrap_or("");
    let key = view.key.as_deref().unwrap_or("");
    let error = view.error.as_deref().unwrap_or("");
    let result: &[u8] = view.result.as_deref().unwrap_or(&[]);
    w.fixed(&TaskViewPart {
        id: U64::new(view.id),
        created_at_ms: U64::new(view.created_at_ms),
        updated_at_ms: U64::new(view.updated_at_ms),
        not_before_ms: U64::new(not_before_ms),
        lease_expires_at_ms: U64::new(lease_expires_at_ms),
        purge_at_ms: U64::new(purge_at_ms),
        priority: I32::new(view.priority),
        attempts: U32::new(view.attempts),
        max_attempts: U32::new(view.max_attempts),
        state: view.state as u8,
        present,
        queue_len: w.u16_len(view.queue.len(), Field::top("queue"))?,
        group_len: w.u16_len(group.len(), Field::top("group"))?,
        key_len: w.u16_len(key.len(), Field::top("key"))?,
        error_len: w.u16_len(error.len(), Field::top("error"))?,
        depends_count: w.u16_len(view.depends_on.len(), Field::top("depends_on"))?,
        payload_len: w.u32_len(view.payload.len(), Field::top("payload"))?,
        result_len: w.u32_len(result.len(), Field::top("result"))?,
    });
    w.bytes(view.queue.as_bytes());
    w.bytes(group.as_bytes());
    w.bytes(key.as_bytes());
    for id in &view.depends_on {
        w.fixed(&U64::new(*id));
    }
    w.bytes(error.as_bytes());
    w.bytes(&view.payload);
    w.bytes(result);
    Ok(())
}

fn decode_task_view(r: &mut Reader<'_>) -> Result<TaskView, DecodeError> {
    let f = r.fixed::<TaskViewPart>(Field::FIXED)?;
    let present = f.present;
    r.flags(present.into(), VIEW_ALL.into(), Field::top("present"))?;
    // Each optional value is either present (its bit set) or 0, so a view has one
    // encoding.
    let optional = |r: &Reader<'_>, bit: u8, value: u64, name: &'static str| -> Result<Option<u64>, DecodeError> {
        if present & bit != 0 {
            Ok(Some(value))
        } else {
            r.absent_is_zero(value, Field::top(name)).map(|()| None)
        }
    };
    let not_before_ms = optional(r, VIEW_NOT_BEFORE_MS, f.not_before_ms.get(), "not_before_ms")?;
    let lease_expires_at_ms =
        optional(r, VIEW_LEASE_EXPIRES_AT_MS, f.lease_expires_at_ms.get(), "lease_expires_at_ms")?;
    let purge_at_ms = optional(r, VIEW_PURGE_AT_MS, f.purge_at_ms.get(), "purge_at_ms")?;
    let group_len = optional(r, VIEW_GROUP, f.group_len.get().into(), "group_len")?;
    let key_len = optional(r, VIEW_KEY, f.key_len.get().into(), "key_len")?;
    let error_len = optional(r, VIEW_ERROR, f.error_len.get().into(), "error_len")?;
    let result_len = optional(r, VIEW_RESULT, f.result_len.get().into(), "result_len")?;
    let state = decode_state(r, f.state, Field::top("state"))?;

    let queue = r.string(usize::from(f.queue_len.get()), Field::top("queue"))?;
    let group = match group_len {
        None => None,
        Some(_) => Some(r.string(usize::from(f.group_len.get()), Field::top("group"))?),
    };
    let key = match key_len {
        None => None,
        Some(_) => Some(r.string(usize::from(f.key_len.get()), Field::top("key"))?),
    };
    let depends_count = r.check_count(usize::from(f.depends_count.get()), DEP_BYTES, Field::top("depends_on"))?;
    let mut depends_on = Vec::with_capacity(depends_count);
    for _ in 0..depends_count {
        depends_on.push(r.fixed::<U64>(Field::top("depends_on"))?.get());
    }
    let error = match error_len {
        None => None,
        Some(_) => Some(r.string(usize::from(f.error_len.get()), Field::top("error"))?),
    };
    let payload = r.bytes(widen(f.payload_len.get()), Field::top("payload"))?;
    let result = match result_len {
        None => None,
        Some(_) => Some(r.bytes(widen(f.result_len.get()), Field::top("result"))?),
    };
    Ok(TaskView {
        id: f.id.get(),
        queue,
        state,
        payload,
        priority: f.priority.get(),
        group,
        depends_on,
        key,
        attempts: f.attempts.get(),
        max_attempts: f.max_attempts.get(),
        result,
        error,
        created_at_ms: f.created_at_ms.get(),
        updated_at_ms: f.updated_at_ms.get(),
        not_before_ms,
        lease_expires_at_ms,
        purge_at_ms,
    })
}
