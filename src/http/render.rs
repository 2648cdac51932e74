//! Responses: a status line, `Content-Type: application/json`, `Content-Length`,
//! `Connection` (`keep-alive` or `close`, so that HTTP/1.0 clients that asked to
//! keep the connection know they may), any extra header, and a JSON body.
//!
//! Bodies are written straight into the output buffer (no `serde_json::Value`
//! trees): strings go through serde_json's escaper, numbers through a small
//! formatter, and `payload` / `result` are written verbatim when they are JSON
//! (the exact text an HTTP client sent). A binary-protocol client may store any
//! bytes; those that are not JSON are written as `"payload":null` followed by
//! `"payload_base64":"<standard base64>"` (likewise `result`), so every body
//! stays JSON and JSON payloads stay byte-identical. The head is written after
//! the body, once its length is known, and rotated in front of it.

use crate::command::Reply;
use crate::engine::{EngineError, Enqueued, ErrorKind, LeasedTask, QueueInfo, TaskId, TaskState, TaskView};

/// An HTTP status and its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Status(pub u16, pub &'static str);

pub(super) const OK: Status = Status(200, "OK");
pub(super) const CREATED: Status = Status(201, "Created");
pub(super) const BAD_REQUEST: Status = Status(400, "Bad Request");
pub(super) const UNAUTHORIZED: Status = Status(401, "Unauthorized");
pub(super) const FORBIDDEN: Status = Status(403, "Forbidden");
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
    let mut extra_headers = "";
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
        Reply::TaskPage(page) => {
            out.reserve(page.tasks.iter().map(|view| view.payload.len() + 320).sum());
            out.extend_from_slice(b"{\"tasks\":[");
            comma_separated(out, &page.tasks, task);
            out.extend_from_slice(b"],\"next_cursor\":");
            match page.next_cursor {
                Some(cursor) => id_string(out, cursor),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
            OK
        }
        Reply::TaskDeleted { id } => {
            out.extend_from_slice(b"{\"id\":");
            id_string(out, *id);
            out.extend_from_slice(b",\"deleted\":true}");
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
        Reply::CompletedBatch(outcomes) => {
            // Only the binary protocol sends a batch complete; this rendering
            // keeps every reply expressible over HTTP too.
            out.extend_from_slice(b"{\"results\":[");
            comma_separated(out, outcomes, |out, (id, outcome)| match outcome {
                Ok(task_state) => id_and_state(out, *id, *task_state),
                Err(error) => {
                    out.extend_from_slice(b"{\"id\":");
                    id_string(out, *id);
                    out.extend_from_slice(b",");
                    error_member(out, error.code(), &error.to_string());
                    out.push(b'}');
                }
            });
            out.extend_from_slice(b"]}");
            OK
        }
        Reply::Error(error) => {
            error_body(out, error.code(), &error.to_string());
            extra_headers = error_headers(error);
            status_of(error)
        }
        Reply::StorageFailed(reason) => {
            error_body(out, "storage_failed", reason);
            INTERNAL_SERVER_ERROR
        }
    };
    finish(out, start, status, keep_alive, extra_headers);
}

/// `GET /healthz`: `200 {"status":"ok"}`.
pub fn render_health(keep_alive: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"{\"status\":\"ok\"}");
    finish(out, start, OK, keep_alive, "");
}

/// Turns the response that starts at `out[start..]` into the answer to a
/// `HEAD`: its status and headers (`Content-Length` still giving the body's
/// length, as RFC 9110 section 9.3.2 asks), without the body.
pub fn strip_body(out: &mut Vec<u8>, start: usize) {
    if let Some(head_len) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + head_len + 4);
    }
}

/// `GET /healthz` while the server replays its log: `503 {"status":"recovering"}`.
pub fn render_health_recovering(keep_alive: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"{\"status\":\"recovering\"}");
    finish(out, start, SERVICE_UNAVAILABLE, keep_alive, "Retry-After: 1\r\n");
}

/// `GET /healthz` while a server thread is stuck or gone (`server/liveness.rs`):
/// `503 {"status":"stalled"}`. Not retryable in a second: a supervisor should
/// restart the server.
pub fn render_health_stalled(keep_alive: bool, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"{\"status\":\"stalled\"}");
    finish(out, start, SERVICE_UNAVAILABLE, keep_alive, "");
}

/// `GET /metrics` and `GET /v1/stats`: `200` with `body` as it is, of
/// `content_type` (the Prometheus text format is not JSON).
pub fn render_document(content_type: &str, body: &[u8], keep_alive: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    u64_number(out, body.len() as u64);
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
    out.extend_from_slice(body);
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

/// A connection past `--max-connections`: `503 overloaded`, `Retry-After: 1`,
/// and the connection closes (sent before reading any request).
pub fn render_too_many_connections(limit: usize, out: &mut Vec<u8>) {
    let message =
        format!("too many connections: the server's limit is {limit} (--max-connections); retry after 1 second");
    error(out, SERVICE_UNAVAILABLE, "overloaded", &message, false, "Retry-After: 1\r\n");
}

/// The server is stopping: `503 shutting_down`, and the connection closes.
pub fn render_shutting_down(out: &mut Vec<u8>) {
    error(out, SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down", false, "");
}

/// The HTTP status of an engine error, by its kind.
pub(super) fn status_of(error: &EngineError) -> Status {
    match error.kind() {
        ErrorKind::InvalidArgument => BAD_REQUEST,
        ErrorKind::TooLarge => PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::Unavailable => SERVICE_UNAVAILABLE,
        ErrorKind::Unauthenticated => UNAUTHORIZED,
        ErrorKind::Forbidden => FORBIDDEN,
    }
}

/// Header lines an error's response carries besides the usual ones: a 401
/// says how to authenticate (RFC 9110 section 11.6.1; the scheme of RFC 6750).
fn error_headers(error: &EngineError) -> &'static str {
    match error.kind() {
        ErrorKind::Unauthenticated => "WWW-Authenticate: Bearer\r\n",
        _ => "",
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
    let body_len = finish(out, start, status, keep_alive, extra_headers);
    if head_only {
        out.truncate(out.len() - body_len);
    }
}

fn error_body(out: &mut Vec<u8>, code: &str, message: &str) {
    out.push(b'{');
    error_member(out, code, message);
    out.push(b'}');
}

/// `"error":{"code":..,"message":..}`.
fn error_member(out: &mut Vec<u8>, code: &str, message: &str) {
    out.extend_from_slice(b"\"error\":{\"code\":");
    string(out, code);
    out.extend_from_slice(b",\"message\":");
    string(out, message);
    out.push(b'}');
}

/// Ends the JSON body that starts at `start` with a newline (so `curl` output
/// and `cat`-ed logs end their line, as `jq` and most JSON APIs do), writes
/// the head after it, then moves the head in front. Returns the body's length.
fn finish(out: &mut Vec<u8>, start: usize, status: Status, keep_alive: bool, extra_headers: &str) -> usize {
    out.push(b'\n');
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
    body_len
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

/// The member `"<name>":<value>` for a stored payload or result: the value as
/// it was stored when it is JSON (always, for what the HTTP API stored), else
/// `null` followed by the member `"<name>_base64":"<standard base64>"` (bytes a
/// binary-protocol client stored; an empty value is not JSON either).
///
/// Validated here, at render time, rather than flagged at enqueue: a stored
/// value has no protocol attached, and reading it once more costs about what
/// writing it into the response does. serde_json's `IgnoredAny` walks nesting
/// with a loop, not recursion, so no depth is too deep for it (the HTTP API
/// accepts payloads of any depth).
fn stored_value(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    if is_json(bytes) {
        out.extend_from_slice(bytes);
    } else {
        out.extend_from_slice(b"null,\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"_base64\":\"");
        base64(out, bytes);
        out.push(b'"');
    }
}

/// Whether `bytes` are exactly one JSON value (surrounding whitespace allowed).
/// UTF-8 is checked first: serde_json's slice reader skips string contents
/// without checking them, and the response must stay UTF-8.
fn is_json(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
        Err(_) => false,
    }
}

/// Standard base64 (RFC 4648 section 4, with `=` padding). Twenty lines here
/// instead of a dependency for one function.
pub(crate) fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.reserve(bytes.len().div_ceil(3) * 4);
    let mut chunks = bytes.chunks_exact(3);
    for chunk in &mut chunks {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(n >> shift) as usize & 63]);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[ALPHABET[(n >> 18) as usize & 63], ALPHABET[(n >> 12) as usize & 63], b'=', b'=']);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                ALPHABET[(n >> 18) as usize & 63],
                ALPHABET[(n >> 12) as usize & 63],
                ALPHABET[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
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
    out.extend_from_slice(b",\"dead_retention_ms\":");
    u64_number(out, config.dead_retention_ms);
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
    out.push(b',');
    stored_value(out, "payload", &task.payload);
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
    out.push(b',');
    stored_value(out, "payload", &view.payload);
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
    out.push(b',');
    match &view.result {
        Some(result) => stored_value(out, "result", result),
        None => out.extend_from_slice(b"\"result\":null"),
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn base64_of(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        base64(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, encoded) in vectors {
            assert_eq!(base64_of(plain.as_bytes()), encoded);
        }
        assert_eq!(base64_of("foobar".as_bytes()), "Zm9vYmFy");
        assert_eq!(base64_of(&[0xff, 0xfe, 0x00, 0x3e, 0x3f]), "//4APj8=");
    }

    fn rendered_task(payload: &[u8], result: Option<&[u8]>) -> serde_json::Value {
        let view = TaskView {
            id: 1,
            queue: "q".into(),
            state: TaskState::Completed,
            payload: Bytes::copy_from_slice(payload),
            priority: 0,
            group: None,
            depends_on: Vec::new(),
            key: None,
            attempts: 1,
            max_attempts: 3,
            result: result.map(Bytes::copy_from_slice),
            error: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            not_before_ms: None,
            lease_expires_at_ms: None,
            purge_at_ms: None,
        };
        let mut out = Vec::new();
        task(&mut out, &view);
        serde_json::from_slice(&out).expect("the body is JSON")
    }

    #[test]
    fn a_batch_complete_renders_one_outcome_per_item() {
        let reply = Reply::CompletedBatch(vec![(1, Ok(TaskState::Completed)), (2, Err(EngineError::LeaseMismatch(2)))]);
        let mut out = Vec::new();
        render_reply(&reply, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        let body: serde_json::Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"results": [
                {"id": "1", "state": "completed"},
                {"id": "2", "error": {"code": "lease_mismatch", "message": "task 2 is leased under another lease token"}}
            ]})
        );
    }

    #[test]
    fn json_payloads_stay_verbatim_and_other_bytes_are_base64() {
        let mut out = Vec::new();
        stored_value(&mut out, "payload", br#"{"a": [1, 2.50]}"#);
        assert_eq!(out, br#""payload":{"a": [1, 2.50]}"#);

        let task = rendered_task(&[0xff, 0x00, b'{'], Some(b"not json"));
        assert_eq!(task["payload"], serde_json::Value::Null);
        assert_eq!(task["payload_base64"], "/wB7");
        assert_eq!(task["result"], serde_json::Value::Null);
        assert_eq!(task["result_base64"], "bm90IGpzb24=");

        // Empty bytes are not JSON; a JSON `null` is, and gets no base64 member.
        let task = rendered_task(b"", Some(b"null"));
        assert_eq!((task["payload"].clone(), task["payload_base64"].clone()), (serde_json::Value::Null, "".into()));
        assert!(task.get("result_base64").is_none(), "{task}");
        // Text that is UTF-8 but not one JSON value, and a JSON string holding
        // invalid UTF-8, are both base64.
        for payload in [&b"1 2"[..], b"\"\xff\""] {
            let task = rendered_task(payload, None);
            assert_eq!(task["payload_base64"], base64_of(payload), "{task}");
        }
        // Nesting deeper than serde_json's recursion limit is still JSON.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut out = Vec::new();
        stored_value(&mut out, "payload", deep.as_bytes());
        assert_eq!(out.len(), "\"payload\":".len() + deep.len());
    }
}
