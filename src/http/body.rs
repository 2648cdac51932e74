//! JSON request bodies → [`Command`]s.
//!
//! A body is read in one pass into the raw text of each known member
//! (`&RawValue`, borrowed from the receive buffer), then each member is parsed on
//! its own, so that every refusal names its field: an unknown or repeated member,
//! a missing required one, a wrong type. `payload` and `result` stay as the exact
//! text sent. `null` for an optional member is the same as leaving it out (except
//! `group_concurrency`, where it removes the limit).
//!
//! Lengths and counts (queue names, group, key, payload, result, error, batch
//! and dequeue sizes, `wait_ms`) are checked on the built command by
//! `command::check_limits`, the same function the binary protocol calls;
//! ranges the engine checks (lease and delay bounds, attempts...) are left to
//! it, so that there is one message for each; numbers too large for their
//! field saturate so that the engine's range message is the one a client sees.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::render;
use crate::command::Command;
use crate::engine::limits::{BATCH_TASKS_COUNT_MAX, DEQUEUE_QUEUES_COUNT_MAX};
use crate::engine::{DepRef, Discipline, EngineError, LeaseToken, NewTask, QueueConfigPatch, TaskId};

/// Why a well-framed request is refused (400, or 413 for a field over its
/// length limit; the connection stays open).
#[derive(Debug)]
pub(super) enum Refused {
    /// The body is not JSON (`malformed_request`).
    Malformed(String),
    /// A member is missing, unknown, repeated, of the wrong type or out of range
    /// (`invalid_argument`), or longer than its limit (`payload_too_large`,
    /// from `command::check_limits`); the message names it.
    Invalid(EngineError),
}

impl Refused {
    pub(super) fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Refused {
        Refused::Invalid(EngineError::invalid(field, reason))
    }

    pub(super) fn render(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut response = Vec::with_capacity(256);
        let (status, code, message) = match self {
            Refused::Malformed(message) => (render::BAD_REQUEST, "malformed_request", Cow::Borrowed(message.as_str())),
            // 400, or 413 for a field over its length limit.
            Refused::Invalid(error) => (render::status_of(error), error.code(), Cow::Owned(error.to_string())),
        };
        render::error_response(&mut response, status, code, &message, keep_alive, "", head_only);
        response
    }
}

type Result<T> = std::result::Result<T, Refused>;

/// Where an object sits in the body: the whole body, or an entry of a batch
/// (whose field names are then prefixed `tasks[k].`).
#[derive(Clone, Copy)]
struct At {
    batch_entry: Option<usize>,
}

const TOP: At = At { batch_entry: None };

impl At {
    fn field(self, name: &'static str) -> Cow<'static, str> {
        match self.batch_entry {
            None => Cow::Borrowed(name),
            Some(k) => Cow::Owned(format!("tasks[{k}].{name}")),
        }
    }

    fn invalid(self, name: &'static str, reason: impl Into<Cow<'static, str>>) -> Refused {
        Refused::invalid(self.field(name), reason)
    }

    /// The field name for the object itself.
    fn whole(self) -> Cow<'static, str> {
        match self.batch_entry {
            None => Cow::Borrowed("body"),
            Some(k) => Cow::Owned(format!("tasks[{k}]")),
        }
    }
}

fn utf8(body: &[u8]) -> Result<&str> {
    std::str::from_utf8(body).map_err(|_| Refused::Malformed("the body is not JSON (not valid UTF-8)".into()))
}

// ---- one pass over an object: the raw text of each known member --------------

/// What made the object walk stop, beyond what serde_json reports itself.
enum Problem {
    Unknown(String),
    Repeated(&'static str),
}

/// Reads a JSON object whose members must be among `names`, keeping each
/// member's raw text (including a literal `null`) in the slot of its name.
fn object<'a, const N: usize>(
    text: &'a str,
    names: &'static [&'static str; N],
    at: At,
) -> Result<[Option<&'a RawValue>; N]> {
    let mut problem = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walked = ObjectSeed { names, problem: &mut problem }
        .deserialize(&mut deserializer)
        .and_then(|members| deserializer.end().map(|()| members));
    walked.map_err(|error| match problem {
        Some(Problem::Unknown(name)) => Refused::invalid(
            match at.batch_entry {
                None => name,
                Some(k) => format!("tasks[{k}].{name}"),
            },
            format!("unknown field; the fields are {}", names.join(", ")),
        ),
        Some(Problem::Repeated(name)) => at.invalid(name, "appears more than once"),
        None => match error.classify() {
            // Valid JSON, but not an object.
            Category::Data => Refused::invalid(at.whole(), "expected a JSON object"),
            Category::Syntax | Category::Eof | Category::Io => {
                Refused::Malformed(format!("the body is not JSON ({error})"))
            }
        },
    })
}

struct ObjectSeed<'p, const N: usize> {
    names: &'static [&'static str; N],
    problem: &'p mut Option<Problem>,
}

impl<'de, const N: usize> DeserializeSeed<'de> for ObjectSeed<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for ObjectSeed<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut members = [None; N];
        while let Some(key) = map.next_key_seed(KeySeed { names: self.names })? {
            match key {
                Key::Known(i) => {
                    if members[i].is_some() {
                        *self.problem = Some(Problem::Repeated(self.names[i]));
                        return Err(de::Error::custom("repeated member"));
                    }
                    members[i] = Some(map.next_value::<&'de RawValue>()?);
                }
                Key::Unknown(name) => {
                    *self.problem = Some(Problem::Unknown(name));
                    return Err(de::Error::custom("unknown member"));
                }
            }
        }
        Ok(members)
    }
}

enum Key {
    Known(usize),
    /// The name (cut to a printable length) of a member that is not expected.
    Unknown(String),
}

struct KeySeed<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for KeySeed<N> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for KeySeed<N> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<Key, E> {
        Ok(match self.names.iter().position(|known| *known == name) {
            Some(i) => Key::Known(i),
            None => Key::Unknown(super::truncated(name, 64).into_owned()),
        })
    }
}

// ---- members -----------------------------------------------------------------

/// `null` is the same as absent.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|raw| raw.get() != "null")
}

const INTEGER_I32: &str = "expected an integer between -2147483648 and 2147483647";
const INTEGER_U64: &str = "expected a non-negative integer";
const ID: &str = "expected a task id: a decimal integer from 0 to 2^64-1, as a string or a number";
const LEASE: &str = "expected a lease token: a decimal integer from 0 to 2^64-1, as a string or a number";

/// Parses an optional member with `parse`, naming it on failure.
fn optional<'a, T>(
    at: At,
    name: &'static str,
    raw: Option<&'a RawValue>,
    parse: impl FnOnce(&'a RawValue) -> std::result::Result<T, Cow<'static, str>>,
) -> Result<Option<T>> {
    match present(raw) {
        None => Ok(None),
        Some(raw) => parse(raw).map(Some).map_err(|reason| at.invalid(name, reason)),
    }
}

fn required<'a, T>(
    at: At,
    name: &'static str,
    raw: Option<&'a RawValue>,
    parse: impl FnOnce(&'a RawValue) -> std::result::Result<T, Cow<'static, str>>,
) -> Result<T> {
    optional(at, name, raw, parse)?.ok_or_else(|| at.invalid(name, "is required"))
}

fn i32_of(raw: &RawValue) -> std::result::Result<i32, Cow<'static, str>> {
    serde_json::from_str(raw.get()).map_err(|_| INTEGER_I32.into())
}

fn u64_of(raw: &RawValue) -> std::result::Result<u64, Cow<'static, str>> {
    serde_json::from_str(raw.get()).map_err(|_| INTEGER_U64.into())
}

/// Saturates, so that the engine's range check reports a too-large value.
fn u32_of(raw: &RawValue) -> std::result::Result<u32, Cow<'static, str>> {
    u64_of(raw).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn usize_of(raw: &RawValue) -> std::result::Result<usize, Cow<'static, str>> {
    u64_of(raw).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn bool_of(raw: &RawValue) -> std::result::Result<bool, Cow<'static, str>> {
    serde_json::from_str(raw.get()).map_err(|_| "expected true or false".into())
}

fn string_of(raw: &RawValue) -> std::result::Result<String, Cow<'static, str>> {
    serde_json::from_str(raw.get()).map_err(|_| "expected a string".into())
}

/// Any JSON value, kept as the exact text sent.
fn json_of(raw: &RawValue) -> std::result::Result<Bytes, Cow<'static, str>> {
    Ok(Bytes::copy_from_slice(raw.get().as_bytes()))
}

/// A u64 written as a JSON string of decimal digits (`"42"`) or as a JSON integer
/// (`42`). The raw text of a valid JSON value is either form exactly when it is
/// digits, possibly between quotes (a string with escapes is not accepted).
fn u64_string_or_number(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    super::parse_decimal_u64(digits.as_bytes())
}

fn lease_of(raw: &RawValue) -> std::result::Result<LeaseToken, Cow<'static, str>> {
    u64_string_or_number(raw.get()).ok_or(Cow::Borrowed(LEASE))
}

fn array_of(raw: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

/// Task ids (strings or numbers) and, in a batch, `"#k"` references to earlier
/// entries.
fn depends_on_of(raw: &RawValue, in_batch: bool) -> std::result::Result<Vec<DepRef>, Cow<'static, str>> {
    let items = array_of(raw).ok_or("expected an array of task ids")?;
    let mut deps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = item.get();
        if let Some(k) = text.strip_prefix("\"#").and_then(|t| t.strip_suffix('"')) {
            if !in_batch {
                return Err("#k references are only valid in a batch".into());
            }
            let k = super::parse_decimal_u64(k.as_bytes())
                .and_then(|k| usize::try_from(k).ok())
                .ok_or_else(|| format!("entry {i}: expected #k, k the position of an earlier task of the batch"))?;
            deps.push(DepRef::Batch(k));
        } else {
            let id = u64_string_or_number(text).ok_or_else(|| format!("entry {i}: {ID}"))?;
            deps.push(DepRef::Task(id));
        }
    }
    Ok(deps)
}

// ---- requests ------------------------------------------------------------------

const TASK_FIELDS: [&str; 7] = ["payload", "priority", "group", "delay_ms", "max_attempts", "depends_on", "key"];

fn new_task(text: &str, at: At) -> Result<NewTask> {
    let [payload, priority, group, delay_ms, max_attempts, depends_on, key] = object(text, &TASK_FIELDS, at)?;
    let in_batch = at.batch_entry.is_some();
    // `payload` is any JSON value, `null` included, but it must be there.
    let payload = match payload {
        Some(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
        None => return Err(at.invalid("payload", "is required")),
    };
    Ok(NewTask {
        payload,
        priority: optional(at, "priority", priority, i32_of)?.unwrap_or(0),
        group: optional(at, "group", group, string_of)?,
        delay_ms: optional(at, "delay_ms", delay_ms, u64_of)?.unwrap_or(0),
        max_attempts: optional(at, "max_attempts", max_attempts, u32_of)?,
        depends_on: optional(at, "depends_on", depends_on, |raw| depends_on_of(raw, in_batch))?.unwrap_or_default(),
        key: optional(at, "key", key, string_of)?,
    })
}

/// `POST /v1/queues/{queue}/tasks`.
pub(super) fn enqueue(queue: &str, body: &[u8]) -> Result<Command> {
    let task = new_task(utf8(body)?, TOP)?;
    Ok(Command::Enqueue { queue: queue.to_owned(), task })
}

/// `POST /v1/queues/{queue}/tasks/batch`.
pub(super) fn enqueue_batch(queue: &str, body: &[u8]) -> Result<Command> {
    let [tasks] = object(utf8(body)?, &["tasks"], TOP)?;
    let entries = required(TOP, "tasks", tasks, |raw| array_of(raw).ok_or("expected an array of task objects".into()))?;
    // Refused before its entries are parsed (`command::check_limits` checks
    // the count again, with the same message, for both protocols).
    if entries.is_empty() || entries.len() > BATCH_TASKS_COUNT_MAX {
        return Err(Refused::invalid("tasks", format!("a batch holds 1 to {BATCH_TASKS_COUNT_MAX} tasks")));
    }
    let mut tasks = Vec::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        tasks.push(new_task(entry.get(), At { batch_entry: Some(k) })?);
    }
    Ok(Command::EnqueueBatch { queue: queue.to_owned(), tasks })
}

/// A queue's settings, in the order of docs/http-api.md's queue object.
pub(crate) const QUEUE_FIELDS: [&str; 8] = [
    "discipline",
    "lease_ms",
    "max_attempts",
    "backoff_ms",
    "backoff_max_ms",
    "retention_ms",
    "dead_retention_ms",
    "group_concurrency",
];

/// `PUT /v1/queues/{queue}`: an absent or empty body is `{}`; any other body
/// is JSON (whitespace alone is not: docs/openapi.yaml and its check agree).
pub(super) fn configure_queue(queue: &str, body: &[u8]) -> Result<Command> {
    let text = utf8(body)?;
    let members = if text.is_empty() { [None; 8] } else { object(text, &QUEUE_FIELDS, TOP)? };
    let [discipline, lease_ms, max_attempts, backoff_ms, backoff_max_ms, retention_ms, dead_retention_ms, group_concurrency] =
        members;
    let discipline = optional(TOP, "discipline", discipline, |raw| {
        serde_json::from_str::<String>(raw.get())
            .ok()
            .and_then(|name| Discipline::parse(&name))
            .ok_or("expected one of fifo, lifo, priority, round_robin".into())
    })?;
    let group_concurrency = match group_concurrency {
        None => None,
        Some(raw) if raw.get() == "null" => Some(None),
        Some(raw) => Some(Some(u32_of(raw).map_err(|reason| Refused::invalid("group_concurrency", reason))?)),
    };
    let patch = QueueConfigPatch {
        discipline,
        lease_ms: optional(TOP, "lease_ms", lease_ms, u64_of)?,
        max_attempts: optional(TOP, "max_attempts", max_attempts, u32_of)?,
        backoff_ms: optional(TOP, "backoff_ms", backoff_ms, u64_of)?,
        backoff_max_ms: optional(TOP, "backoff_max_ms", backoff_max_ms, u64_of)?,
        retention_ms: optional(TOP, "retention_ms", retention_ms, u64_of)?,
        dead_retention_ms: optional(TOP, "dead_retention_ms", dead_retention_ms, u64_of)?,
        group_concurrency,
    };
    Ok(Command::ConfigureQueue { queue: queue.to_owned(), patch })
}

/// `POST /v1/dequeue`.
pub(super) fn dequeue(body: &[u8]) -> Result<Command> {
    let [queues, max, lease_ms, wait_ms] = object(utf8(body)?, &["queues", "max", "lease_ms", "wait_ms"], TOP)?;
    let queues = required(TOP, "queues", queues, |raw| {
        let not_names = || Cow::Owned(format!("expected an array of 1 to {DEQUEUE_QUEUES_COUNT_MAX} queue names"));
        let items = array_of(raw).ok_or_else(not_names)?;
        if items.is_empty() || items.len() > DEQUEUE_QUEUES_COUNT_MAX {
            return Err(not_names());
        }
        items.iter().map(|item| serde_json::from_str::<String>(item.get()).map_err(|_| not_names())).collect()
    })?;
    let wait_ms = optional(TOP, "wait_ms", wait_ms, u64_of)?.unwrap_or(0);
    Ok(Command::Dequeue {
        queues,
        max: optional(TOP, "max", max, usize_of)?.unwrap_or(1),
        lease_ms: optional(TOP, "lease_ms", lease_ms, u64_of)?,
        wait_ms,
    })
}

/// `POST /v1/tasks/{id}/complete`.
pub(super) fn complete(id: TaskId, body: &[u8]) -> Result<Command> {
    let [lease, result] = object(utf8(body)?, &["lease", "result"], TOP)?;
    Ok(Command::Complete {
        id,
        lease: required(TOP, "lease", lease, lease_of)?,
        result: optional(TOP, "result", result, json_of)?,
    })
}

/// `POST /v1/tasks/{id}/fail`.
pub(super) fn fail(id: TaskId, body: &[u8]) -> Result<Command> {
    let [lease, error, retry] = object(utf8(body)?, &["lease", "error", "retry"], TOP)?;
    Ok(Command::Fail {
        id,
        lease: required(TOP, "lease", lease, lease_of)?,
        error: required(TOP, "error", error, string_of)?,
        retry: optional(TOP, "retry", retry, bool_of)?.unwrap_or(true),
    })
}

/// `POST /v1/tasks/{id}/extend`.
pub(super) fn extend(id: TaskId, body: &[u8]) -> Result<Command> {
    let [lease, lease_ms] = object(utf8(body)?, &["lease", "lease_ms"], TOP)?;
    Ok(Command::Extend {
        id,
        lease: required(TOP, "lease", lease, lease_of)?,
        lease_ms: required(TOP, "lease_ms", lease_ms, u64_of)?,
    })
}
