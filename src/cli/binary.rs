//! The CLI's `--binary` path: the calls go through `tqx-client`, and the replies
//! are printed as the HTTP API's JSON bodies, rendered by the server's own HTTP
//! renderer ([`crate::http::render_reply`]) from the binary replies converted to
//! the engine's types, so the two protocols' output cannot drift apart (a
//! payload that is not JSON comes out as `"payload":null,"payload_base64":..`
//! over both).

use std::sync::Arc;

use tqx_client as wire;

use crate::command::Reply;
use crate::engine;

/// The address `--binary` uses without `--server` or `TQX_SERVER`.
pub const DEFAULT_ADDR: &str = wire::DEFAULT_ADDR;

/// Checks a `HOST:PORT` server address (an IPv6 host in brackets); the
/// host is resolved when connecting.
pub fn parse_addr(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.contains("://") {
        return Err(format!("{text:?} is a URL; with --binary the server is HOST:PORT (e.g. {DEFAULT_ADDR})"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port; with --binary the server is HOST:PORT (e.g. {DEFAULT_ADDR})"));
    };
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(format!("bad port {port:?} in {text:?}: expected 1 to 65535"));
    }
    let bare_host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare_host.is_empty() || bare_host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!("bad host {host:?} in {text:?}"));
    }
    if bare_host.contains(':') && !host.starts_with('[') {
        return Err(format!("an IPv6 host goes in brackets: [{host}]:{port}"));
    }
    Ok(text.to_string())
}

/// The JSON body the HTTP API sends for `reply`.
pub fn json_body(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    crate::http::render_reply(reply, false, &mut out);
    match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(head_len) => out.split_off(head_len + 4),
        // render_reply always writes a head; nothing to strip otherwise.
        None => out,
    }
}

/// The HTTP API's error body, `{"error":{"code":..,"message":..}}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    let mut out = b"{\"error\":{\"code\":".to_vec();
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    let _ = serde_json::to_writer(&mut out, message);
    out.extend_from_slice(b"}}");
    out
}

pub fn enqueued(enqueued: wire::Enqueued) -> Reply {
    Reply::Enqueued(engine::Enqueued { id: enqueued.id, state: state(enqueued.state), created: enqueued.created })
}

pub fn enqueued_batch(entries: Vec<wire::Enqueued>) -> Reply {
    Reply::EnqueuedBatch(
        entries.into_iter().map(|e| engine::Enqueued { id: e.id, state: state(e.state), created: e.created }).collect(),
    )
}

pub fn leased(tasks: Vec<wire::LeasedTask>) -> Reply {
    Reply::Leased(
        tasks
            .into_iter()
            .map(|task| engine::LeasedTask {
                id: task.id,
                queue: Arc::from(task.queue),
                payload: task.payload,
                priority: task.priority,
                group: task.group.map(Arc::from),
                attempt: task.attempt,
                lease: task.lease,
                lease_expires_at_ms: task.lease_expires_at_ms,
            })
            .collect(),
    )
}

pub fn task(view: wire::TaskView) -> Reply {
    Reply::Task(task_view(view))
}

pub fn task_page(tasks: Vec<wire::TaskView>, next_cursor: Option<u64>) -> Reply {
    Reply::TaskPage(engine::TaskPage { tasks: tasks.into_iter().map(task_view).collect(), next_cursor })
}

pub fn task_deleted(id: u64) -> Reply {
    Reply::TaskDeleted { id }
}

fn task_view(view: wire::TaskView) -> engine::TaskView {
    engine::TaskView {
        id: view.id,
        queue: Arc::from(view.queue),
        state: state(view.state),
        payload: view.payload,
        priority: view.priority,
        group: view.group.map(Arc::from),
        depends_on: view.depends_on,
        key: view.key,
        attempts: view.attempts,
        max_attempts: view.max_attempts,
        result: view.result,
        error: view.error,
        created_at_ms: view.created_at_ms,
        updated_at_ms: view.updated_at_ms,
        not_before_ms: view.not_before_ms,
        lease_expires_at_ms: view.lease_expires_at_ms,
        purge_at_ms: view.purge_at_ms,
    }
}

pub fn queue(info: wire::QueueInfo) -> Reply {
    Reply::Queue(queue_info(info))
}

pub fn queues(queues: Vec<wire::QueueInfo>) -> Reply {
    Reply::Queues(queues.into_iter().map(queue_info).collect())
}

pub fn task_state(id: u64, task_state: wire::TaskState) -> Reply {
    Reply::TaskState { id, state: state(task_state) }
}

pub fn extended(id: u64, lease_expires_at_ms: u64) -> Reply {
    Reply::Extended { id, lease_expires_at_ms }
}

fn queue_info(info: wire::QueueInfo) -> engine::QueueInfo {
    engine::QueueInfo {
        name: Arc::from(info.name),
        config: engine::QueueConfig {
            discipline: match info.discipline {
                wire::Discipline::Fifo => engine::Discipline::Fifo,
                wire::Discipline::Lifo => engine::Discipline::Lifo,
                wire::Discipline::Priority => engine::Discipline::Priority,
                wire::Discipline::RoundRobin => engine::Discipline::RoundRobin,
            },
            lease_ms: info.lease_ms,
            max_attempts: info.max_attempts,
            backoff_ms: info.backoff_ms,
            backoff_max_ms: info.backoff_max_ms,
            retention_ms: info.retention_ms,
            dead_retention_ms: info.dead_retention_ms,
            group_concurrency: info.group_concurrency,
        },
        // Both index counts by the state's number (waiting 0 ... cancelled 6).
        counts: engine::StateCounts(info.counts),
    }
}

/// The wire's form of a task state (for a request).
pub fn wire_state(task_state: engine::TaskState) -> wire::TaskState {
    match task_state {
        engine::TaskState::Waiting => wire::TaskState::Waiting,
        engine::TaskState::Delayed => wire::TaskState::Delayed,
        engine::TaskState::Ready => wire::TaskState::Ready,
        engine::TaskState::Leased => wire::TaskState::Leased,
        engine::TaskState::Completed => wire::TaskState::Completed,
        engine::TaskState::Dead => wire::TaskState::Dead,
        engine::TaskState::Cancelled => wire::TaskState::Cancelled,
    }
}

fn state(task_state: wire::TaskState) -> engine::TaskState {
    match task_state {
        wire::TaskState::Waiting => engine::TaskState::Waiting,
        wire::TaskState::Delayed => engine::TaskState::Delayed,
        wire::TaskState::Ready => engine::TaskState::Ready,
        wire::TaskState::Leased => engine::TaskState::Leased,
        wire::TaskState::Completed => engine::TaskState::Completed,
        wire::TaskState::Dead => engine::TaskState::Dead,
        wire::TaskState::Cancelled => engine::TaskState::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn binary_addresses_are_host_and_port() {
        use super::parse_addr;
        for good in ["127.0.0.1:7701", " localhost:1 ", "[::1]:7701", "q.example:65535"] {
            assert_eq!(parse_addr(good).as_deref(), Ok(good.trim()), "{good}");
        }
        for bad in ["http://127.0.0.1:7701", "127.0.0.1", "h:0", "h:65536", "h:+1", ":7701", "::1:7701", "a b:1", ""] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }

    /// The binary path prints what the HTTP path prints: the same renderer,
    /// fed from the wire types (here one of each shape, with a payload that is
    /// not JSON and a result that is).
    #[test]
    fn binary_replies_render_as_the_http_bodies() {
        use bytes::Bytes;
        use tqx_client::{Discipline, Enqueued, LeasedTask, QueueInfo, TaskState, TaskView};

        let text = |reply| {
            let body = String::from_utf8(super::json_body(&reply)).unwrap();
            body.strip_suffix('\n').expect("an HTTP JSON body ends with a newline").to_owned()
        };
        let enqueued = Enqueued { id: 7, state: TaskState::Waiting, created: false };
        assert_eq!(text(super::enqueued(enqueued)), r#"{"id":"7","state":"waiting"}"#);
        assert_eq!(text(super::task_state(7, TaskState::Dead)), r#"{"id":"7","state":"dead"}"#);
        assert_eq!(text(super::extended(7, 99)), r#"{"id":"7","lease_expires_at_ms":99}"#);
        let leased = LeasedTask {
            id: 7,
            queue: "q".into(),
            payload: Bytes::from_static(b"\xff\x00"),
            priority: -3,
            group: Some("g".into()),
            attempt: 2,
            lease: u64::MAX,
            lease_expires_at_ms: 5,
        };
        assert_eq!(
            text(super::leased(vec![leased])),
            r#"{"tasks":[{"id":"7","queue":"q","payload":null,"payload_base64":"/wA=","priority":-3,"group":"g","attempt":2,"lease":"18446744073709551615","lease_expires_at_ms":5}]}"#
        );
        let view = TaskView {
            id: 8,
            queue: "q".into(),
            state: TaskState::Completed,
            payload: Bytes::from_static(br#"{"a": [1, 2]}"#),
            priority: 0,
            group: None,
            depends_on: vec![7],
            key: Some("k".into()),
            attempts: 1,
            max_attempts: 3,
            result: Some(Bytes::from_static(b"true")),
            error: None,
            created_at_ms: 1,
            updated_at_ms: 2,
            not_before_ms: None,
            lease_expires_at_ms: None,
            purge_at_ms: Some(3),
        };
        assert_eq!(
            text(super::task(view)),
            r#"{"id":"8","queue":"q","state":"completed","payload":{"a": [1, 2]},"priority":0,"group":null,"depends_on":["7"],"key":"k","attempts":1,"max_attempts":3,"result":true,"error":null,"created_at_ms":1,"updated_at_ms":2,"not_before_ms":null,"lease_expires_at_ms":null,"purge_at_ms":3}"#
        );
        let info = QueueInfo {
            name: "q".into(),
            discipline: Discipline::RoundRobin,
            lease_ms: 1,
            max_attempts: 2,
            backoff_ms: 3,
            backoff_max_ms: 4,
            retention_ms: 5,
            dead_retention_ms: 8,
            group_concurrency: Some(6),
            counts: [1, 2, 3, 4, 5, 6, 7],
        };
        assert_eq!(
            text(super::queues(vec![info])),
            r#"{"queues":[{"name":"q","config":{"discipline":"round_robin","lease_ms":1,"max_attempts":2,"backoff_ms":3,"backoff_max_ms":4,"retention_ms":5,"dead_retention_ms":8,"group_concurrency":6},"counts":{"waiting":1,"delayed":2,"ready":3,"leased":4,"completed":5,"dead":6,"cancelled":7}}]}"#
        );
        assert_eq!(text(super::task_deleted(9)), r#"{"id":"9","deleted":true}"#);
        assert_eq!(text(super::task_page(Vec::new(), Some(41))), r#"{"tasks":[],"next_cursor":"41"}"#);
        assert_eq!(text(super::task_page(Vec::new(), None)), r#"{"tasks":[],"next_cursor":null}"#);
        assert_eq!(
            String::from_utf8(super::error_body("task_not_found", "task \"9\" not found")).unwrap(),
            r#"{"error":{"code":"task_not_found","message":"task \"9\" not found"}}"#
        );
    }
}
