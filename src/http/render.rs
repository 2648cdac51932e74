//! Responses: a status line, `Content-Type: application/json`, `Content-Length`,
//! `Connection` (`keep-alive` or `close`, so that HTTP/1.0 clients that asked to
//! keep the connection know they may), any extra header, and a JSON body.
//!
//! Bodies are written straight into the output buffer (no `serde_json::Value`
//! trees): strings go through serde_json's escaper, numbers through a small
//! formatter, and `payload` / `result` are written verbatim (they are the exact
//! JSON text a client sent). The head is written after the body, once its length is
//! known, and rotated in front of it.

use crate::command::Reply;
use crate::engine::{EngineError, Enqueued, ErrorKind, LeasedTask, QueueInfo, TaskId, TaskState, TaskView};

/// An HTTP status and its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Status(pub u16, pub &'static str);

pub(super) const OK: Status = Status(200, "OK");
pub(super) const CREATED: Status = Status(201, "Created");
pub(super) const BAD_REQUEST: Status = Status(400, "Bad Request");
pub(super) const NOT_FOUND: Status = Status(404, "Not Found");
pub(super) const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
pub(super) const CONFLICT: Status = Status(409, "Conflict");
pub(super) const LENGTH_REQUIRED: Status = Status(411, "Length Required");
pub(super) const PAYLOAD_TOO_LARGE: Status = Status(413, "Payload Too Large");
pub(super) const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
pub(super) const INTERNAL_SERVER_ERROR: Status = Status(500, "Internal Server Error");
pub(super) const SERVICE_UNAVAILABLE: Status = Status(503, "Service Unavailable");

/// Appends the full HTTP/1.1 response for a worker's `reply`.
pub fn render_reply(reply: &Reply, keep_alive: bool, out: &mut Vec<u8>) {
    let start = out.len();
    let status = match reply {
        Reply::Queue(info) => {
            queue(out, info);
            OK
        }
        Reply::Queues(queues) => {
            out.extend_from_slice(b"{\"queues\":[");
            comma_separated(out, queues, queue);
            out.extend_from_slice(b"]}");
            OK
        }
        Reply::QueueDeleted { queue } => {
            out.extend_from_slice(b"{\"deleted\":");
            string(out, queue);
            out.push(b'}');
            OK
        }
        Reply::Enqueued(enqueued) => {
            id_and_state(out, enqueued.id, enqueued.state);
            if enqueued.created {
                CREATED
            } else {
                OK
            }
        }
        Reply::EnqueuedBatch(entries) => {
            batch(out, entries);
            CREATED
        }
        Reply::Leased(tasks) => {
            out.reserve(tasks.iter().map(|task| task.payload.len() + 192).sum());
            out.extend_from_slice(b"{\"tasks\":[");
            comma_separated(out, tasks, leased_task);
            out.extend_from_slice(b"]}");
            OK
        }
        Reply::Task(view) => {
            task(out, view);
            OK
        }
        Reply::TaskState { id, state } => {
            id_and_state(out, *id, *state);
            OK
        }
        Reply::Extended { id, lease_expires_at_ms } => {
            out.extend_from_slice(b"{\"id\":");
            id_string(out, *id);
            out.extend_from_slice(b",\"lease_expires_at_ms\":");
            u64_number(out, *lease_expires_at_ms);
            out.push(b'}');
            OK
        }
        Reply::Error(error) => {
            error_body(out, error.code(), &error.to_string());
            status_of(error)
        }
        Reply::StorageFailed(reason) => {
            error_body(out, "storage_failed", reason);
            INTERNAL_SERVER_ERROR
        }
    };
    finish(out, start, status, keep_alive, "");
}

/// `GET /healthz`: `200 {"status":"ok"}`.
pub fn render_health(keep_alive: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"{\"status\":\"ok\"}");
    finish(out, start, OK, keep_alive, "");
}

/// `GET /healthz` while the server replays its log: `503 {"status":"recovering"}`.
pub fn render_health_recovering(keep_alive: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"{\"status\":\"recovering\"}");
    finish(out, start, SERVICE_UNAVAILABLE, keep_alive, "Retry-After: 1\r\n");
}

/// A command arrived before recovery finished: `503 recovering`, `Retry-After: 1`.
pub fn render_recovering(keep_alive: bool, out: &mut Vec<u8>) {
    let message = "the server is recovering its state from disk; retry after 1 second";
    error(out, SERVICE_UNAVAILABLE, "recovering", message, keep_alive, "Retry-After: 1\r\n");
}

/// The request queue to the workers is full: `503 overloaded`, `Retry-After: 1`.
pub fn render_overloaded(keep_alive: bool, out: &mut Vec<u8>) {
    let message = "the server's request queue is full; retry after 1 second";
    error(out, SERVICE_UNAVAILABLE, "overloaded", message, keep_alive, "Retry-After: 1\r\n");
}

/// The server is stopping: `503 shutting_down`, and the connection closes.
pub fn render_shutting_down(out: &mut Vec<u8>) {
    error(out, SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down", false, "");
}

/// The HTTP status of an engine error, by its kind.
pub(super) fn status_of(error: &EngineError) -> Status {
    match error.kind() {
        ErrorKind::InvalidArgument => BAD_REQUEST,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::Unavailable => SERVICE_UNAVAILABLE,
    }
}

/// Appends an error response `{"error":{"code":..,"message":..}}`. `extra_headers`
/// are whole header lines, each ending in CRLF.
pub(super) fn error(
    out: &mut Vec<u8>,
    status: Status,
    code: &str,
    message: &str,
    keep_alive: bool,
    extra_headers: &str,
) {
    let start = out.len();
    error_body(out, code, message);
    finish(out, start, status, keep_alive, extra_headers);
}

/// Like [`error`]; with `head_only` (the answer to a `HEAD` request) the body is
/// left out, `Content-Length` still giving its length, as RFC 9110 asks.
pub(super) fn error_response(
    out: &mut Vec<u8>,
    status: Status,
    code: &str,
    message: &str,
    keep_alive: bool,
    extra_headers: &str,
    head_only: bool,
) {
    let start = out.len();
    error_body(out, code, message);
    let body_len = out.len() - start;
    finish(out, start, status, keep_alive, extra_headers);
    if head_only {
        out.truncate(out.len() - body_len);
    }
}

fn error_body(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"{\"error\":{\"code\":");
    string(out, code);
    out.extend_from_slice(b",\"message\":");
    string(out, message);
    out.extend_from_slice(b"}}");
}

/// Writes the head after the body that starts at `start`, then moves it in front.
fn finish(out: &mut Vec<u8>, start: usize, status: Status, keep_alive: bool, extra_headers: &str) {
    let body_end = out.len();
    let body_len = body_end - start;
    out.extend_from_slice(b"HTTP/1.1 ");
    u64_number(out, u64::from(status.0));
    out.push(b' ');
    out.extend_from_slice(status.1.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    u64_number(out, body_len as u64);
    out.extend_from_slice(if keep_alive { b"\r\nConnection: keep-alive\r\n" } else { b"\r\nConnection: close\r\n" });
    out.extend_from_slice(extra_headers.as_bytes());
    out.extend_from_slice(b"\r\n");
    let head_len = out.len() - body_end;
    out[start..].rotate_right(head_len);
}

// ---- JSON pieces ---------------------------------------------------------------

/// A JSON string, escaped by serde_json.
fn string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail, nor can serializing a str.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn optional_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

fn u64_number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn i64_number(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    u64_number(out, n.unsigned_abs());
}

fn optional_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => u64_number(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// Ids and lease tokens are JSON strings (`"42"`): numbers lose precision past
/// 2^53 in many clients.
fn id_string(out: &mut Vec<u8>, id: u64) {
    out.push(b'"');
    u64_number(out, id);
    out.push(b'"');
}

/// A stored JSON value, written as it was sent. An empty one (never stored by the
/// HTTP API, which requires a value) is written as `null` to keep the body JSON.
fn raw_json(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.extend_from_slice(bytes);
    }
}

fn state(out: &mut Vec<u8>, state: TaskState) {
    out.push(b'"');
    out.extend_from_slice(state.as_str().as_bytes());
    out.push(b'"');
}

fn id_and_state(out: &mut Vec<u8>, id: TaskId, task_state: TaskState) {
    out.extend_from_slice(b"{\"id\":");
    id_string(out, id);
    out.extend_from_slice(b",\"state\":");
    state(out, task_state);
    out.push(b'}');
}

fn batch(out: &mut Vec<u8>, entries: &[Enqueued]) {
    out.reserve(entries.len() * 24 + 24);
    out.extend_from_slice(b"{\"ids\":[");
    comma_separated(out, entries, |out, entry| id_string(out, entry.id));
    out.extend_from_slice(b"],\"states\":[");
    comma_separated(out, entries, |out, entry| state(out, entry.state));
    out.extend_from_slice(b"]}");
}

fn queue(out: &mut Vec<u8>, info: &QueueInfo) {
    let config = &info.config;
    out.extend_from_slice(b"{\"name\":");
    string(out, &info.name);
    out.extend_from_slice(b",\"config\":{\"discipline\":\"");
    out.extend_from_slice(config.discipline.as_str().as_bytes());
    out.extend_from_slice(b"\",\"lease_ms\":");
    u64_number(out, config.lease_ms);
    out.extend_from_slice(b",\"max_attempts\":");
    u64_number(out, u64::from(config.max_attempts));
    out.extend_from_slice(b",\"backoff_ms\":");
    u64_number(out, config.backoff_ms);
    out.extend_from_slice(b",\"backoff_max_ms\":");
    u64_number(out, config.backoff_max_ms);
    out.extend_from_slice(b",\"retention_ms\":");
    u64_number(out, config.retention_ms);
    out.extend_from_slice(b",\"group_concurrency\":");
    optional_u64(out, config.group_concurrency.map(u64::from));
    out.extend_from_slice(b"},\"counts\":{");
    for (i, task_state) in TaskState::ALL.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        state(out, *task_state);
        out.push(b':');
        u64_number(out, info.counts.get(*task_state));
    }
    out.extend_from_slice(b"}}");
}

fn leased_task(out: &mut Vec<u8>, task: &LeasedTask) {
    out.extend_from_slice(b"{\"id\":");
    id_string(out, task.id);
    out.extend_from_slice(b",\"queue\":");
    string(out, &task.queue);
    out.extend_from_slice(b",\"payload\":");
    raw_json(out, &task.payload);
    out.extend_from_slice(b",\"priority\":");
    i64_number(out, i64::from(task.priority));
    out.extend_from_slice(b",\"group\":");
    optional_string(out, task.group.as_deref());
    out.extend_from_slice(b",\"attempt\":");
    u64_number(out, u64::from(task.attempt));
    out.extend_from_slice(b",\"lease\":");
    id_string(out, task.lease);
    out.extend_from_slice(b",\"lease_expires_at_ms\":");
    u64_number(out, task.lease_expires_at_ms);
    out.push(b'}');
}

fn task(out: &mut Vec<u8>, view: &TaskView) {
    out.reserve(view.payload.len() + view.result.as_ref().map_or(0, |r| r.len()) + 384);
    out.extend_from_slice(b"{\"id\":");
    id_string(out, view.id);
    out.extend_from_slice(b",\"queue\":");
    string(out, &view.queue);
    out.extend_from_slice(b",\"state\":");
    state(out, view.state);
    out.extend_from_slice(b",\"payload\":");
    raw_json(out, &view.payload);
    out.extend_from_slice(b",\"priority\":");
    i64_number(out, i64::from(view.priority));
    out.extend_from_slice(b",\"group\":");
    optional_string(out, view.group.as_deref());
    out.extend_from_slice(b",\"depends_on\":[");
    comma_separated(out, &view.depends_on, |out, id| id_string(out, *id));
    out.extend_from_slice(b"],\"key\":");
    optional_string(out, view.key.as_deref());
    out.extend_from_slice(b",\"attempts\":");
    u64_number(out, u64::from(view.attempts));
    out.extend_from_slice(b",\"max_attempts\":");
    u64_number(out, u64::from(view.max_attempts));
    out.extend_from_slice(b",\"result\":");
    match &view.result {
        Some(result) => raw_json(out, result),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":");
    optional_string(out, view.error.as_deref());
    out.extend_from_slice(b",\"created_at_ms\":");
    u64_number(out, view.created_at_ms);
    out.extend_from_slice(b",\"updated_at_ms\":");
    u64_number(out, view.updated_at_ms);
    out.extend_from_slice(b",\"not_before_ms\":");
    optional_u64(out, view.not_before_ms);
    out.extend_from_slice(b",\"lease_expires_at_ms\":");
    optional_u64(out, view.lease_expires_at_ms);
    out.extend_from_slice(b",\"purge_at_ms\":");
    optional_u64(out, view.purge_at_ms);
    out.push(b'}');
}

/// Writes `items` one after another, separated by commas (a JSON array's inside).
fn comma_separated<T>(out: &mut Vec<u8>, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}
