use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::command::Reply;
use crate::engine::{
    DepRef, Discipline, EngineError, Enqueued, LeasedTask, NewTask, QueueConfig, QueueConfigPatch, QueueInfo,
    StateCounts, TaskState, TaskView,
};

// ---- helpers -------------------------------------------------------------------

/// A request with a Content-Length when there is a body.
fn request(method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    if let Some(body) = body {
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        text.push_str("\r\n");
    }
    text.into_bytes()
}

fn next(buf: &[u8]) -> Next {
    next_request(buf, &Limits::default())
}

/// The action of a complete request, checking it consumed the whole buffer.
fn action(buf: &[u8]) -> (Action, bool) {
    match next(buf) {
        Next::Request { action, keep_alive, consumed, .. } => {
            assert_eq!(consumed, buf.len(), "consumed");
            (action, keep_alive)
        }
        other => panic!("expected a request, got {other:?}"),
    }
}

fn command(method: &str, path: &str, body: Option<&str>) -> Command {
    match action(&request(method, path, body)).0 {
        Action::Execute(command) => command,
        other => panic!("expected a command for {method} {path}, got {}", describe(&other)),
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Respond(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => format!("{other:?}"),
    }
}

struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
    len: usize,
}

/// Parses one rendered response, checking its framing.
fn parse_response(bytes: &[u8]) -> Response {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes).expect("a valid response head") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial response head"),
    };
    let status = response.code.expect("status");
    let headers: HashMap<String, String> = response
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8(h.value.to_vec()).expect("ascii header")))
        .collect();
    assert_eq!(headers["content-type"], "application/json");
    let length: usize = headers["content-length"].parse().expect("Content-Length");
    assert!(bytes.len() >= head_len + length, "body shorter than Content-Length");
    let body_bytes = &bytes[head_len..head_len + length];
    assert_eq!(body_bytes.last(), Some(&b'\n'), "every JSON body ends with a newline");
    let body = serde_json::from_slice(body_bytes).expect("a JSON body");
    Response { status, headers, body, len: head_len + length }
}

fn respond(method: &str, path: &str, body: Option<&str>) -> Response {
    match action(&request(method, path, body)).0 {
        Action::Respond(bytes) => {
            let response = parse_response(&bytes);
            assert_eq!(response.len, bytes.len());
            response
        }
        other => panic!("expected an immediate response, got {other:?}"),
    }
}

fn fatal(buf: &[u8]) -> Response {
    match next(buf) {
        Next::Fatal { response } => {
            let parsed = parse_response(&response);
            assert_eq!(parsed.len, response.len());
            assert_eq!(parsed.headers["connection"], "close");
            parsed
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
}

fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.body["error"]["code"], code, "{}", response.body);
}

fn message(response: &Response) -> String {
    response.body["error"]["message"].as_str().expect("message").to_owned()
}

fn rendered(reply: &Reply, keep_alive: bool) -> Response {
    let mut out = b"previous".to_vec();
    render_reply(reply, keep_alive, &mut out);
    assert!(out.starts_with(b"previous"), "appends");
    let response = parse_response(&out[8..]);
    assert_eq!(response.len, out.len() - 8);
    assert_eq!(response.headers["connection"], if keep_alive { "keep-alive" } else { "close" });
    response
}

// ---- routes → commands ---------------------------------------------------------

#[test]
fn configure_queue_reads_every_field() {
    let body = r#"{"discipline":"priority","lease_ms":10000,"max_attempts":5,"backoff_ms":100,
        "backoff_max_ms":2000,"retention_ms":0,"dead_retention_ms":86400000,"group_concurrency":4}"#;
    let expected = QueueConfigPatch {
        discipline: Some(Discipline::Priority),
        lease_ms: Some(10_000),
        max_attempts: Some(5),
        backoff_ms: Some(100),
        backoff_max_ms: Some(2000),
        retention_ms: Some(0),
        dead_retention_ms: Some(86_400_000),
        group_concurrency: Some(Some(4)),
    };
    assert_eq!(
        command("PUT", "/v1/queues/emails", Some(body)),
        Command::ConfigureQueue { queue: "emails".into(), patch: expected }
    );
    for (name, discipline) in
        [("fifo", Discipline::Fifo), ("lifo", Discipline::Lifo), ("round_robin", Discipline::RoundRobin)]
    {
        let body = format!(r#"{{"discipline":"{name}"}}"#);
        let Command::ConfigureQueue { patch, .. } = command("PUT", "/v1/queues/q", Some(&body)) else { panic!() };
        assert_eq!(patch.discipline, Some(discipline));
    }
}

#[test]
fn configure_queue_null_group_concurrency_removes_the_limit_and_absent_keeps_it() {
    let with = |body: &str| match command("PUT", "/v1/queues/q", Some(body)) {
        Command::ConfigureQueue { patch, .. } => patch,
        other => panic!("{other:?}"),
    };
    assert_eq!(with(r#"{"group_concurrency":null}"#).group_concurrency, Some(None));
    assert_eq!(with(r#"{"lease_ms":5}"#).group_concurrency, None);
    // null for any other optional member is the same as absent.
    assert_eq!(with(r#"{"lease_ms":null,"discipline":null}"#), QueueConfigPatch::default());
}

#[test]
fn configure_queue_accepts_no_body_and_an_empty_one_but_not_whitespace() {
    let empty = Command::ConfigureQueue { queue: "q".into(), patch: QueueConfigPatch::default() };
    assert_eq!(command("PUT", "/v1/queues/q", None), empty);
    assert_eq!(command("PUT", "/v1/queues/q", Some("")), empty);
    assert_eq!(command("PUT", "/v1/queues/q", Some("{}")), empty);
    // Whitespace alone is a body, and not JSON (schemathesis found it taken as `{}`).
    let blank = respond("PUT", "/v1/queues/q", Some(" \r\n"));
    assert_eq!((blank.status, &blank.body["error"]["code"]), (400, &json!("malformed_request")));
}

#[test]
fn queue_names_and_task_ids_in_paths_are_percent_decoded() {
    assert_eq!(command("GET", "/v1/queues/billing%3Aeu", None), Command::GetQueue { queue: "billing:eu".into() });
    assert_eq!(command("GET", "/v1/tasks/%34%32", None), Command::GetTask { id: 42 });
    for (path, field) in [
        ("/v1/queues/a%3", "queue"),
        ("/v1/queues/a%g1", "queue"),
        ("/v1/queues/%C3", "queue"),
        ("/v1/tasks/4%2", "id"),
    ] {
        let refused = respond("GET", path, None);
        assert_eq!((refused.status, &refused.body["error"]["code"]), (400, &json!("invalid_argument")), "{path}");
        assert!(
            refused.body["error"]["message"].as_str().is_some_and(|m| m.contains(field)),
            "{path}: {}",
            refused.body
        );
    }
}

#[test]
fn queue_reads_and_deletes() {
    assert_eq!(command("GET", "/v1/queues", None), Command::ListQueues);
    assert_eq!(command("GET", "/v1/queues/emails", None), Command::GetQueue { queue: "emails".into() });
    let delete = |path| match command("DELETE", path, None) {
        Command::DeleteQueue { queue, force } => (queue, force),
        other => panic!("{other:?}"),
    };
    assert_eq!(delete("/v1/queues/emails"), ("emails".into(), false));
    assert_eq!(delete("/v1/queues/emails?force=true"), ("emails".into(), true));
    assert_eq!(delete("/v1/queues/emails?force=false"), ("emails".into(), false));
    assert_eq!(delete("/v1/queues/emails?force=false&force=true"), ("emails".into(), true), "the last counts");
    let refused = respond("DELETE", "/v1/queues/emails?force=yes", None);
    assert_error(&refused, 400, "invalid_argument");
    assert!(message(&refused).starts_with("invalid force:"), "{}", message(&refused));
}

#[test]
fn queue_names_are_taken_raw_and_checked_before_they_become_commands() {
    // Not percent-decoded: `%` is not a queue name character.
    let refused = respond("GET", "/v1/queues/a%2Fb", None);
    assert_error(&refused, 400, "invalid_argument");
    assert!(message(&refused).starts_with("invalid queue:"), "{}", message(&refused));
    assert_eq!(command("GET", "/v1/queues/a.b:c-d_e", None), Command::GetQueue { queue: "a.b:c-d_e".into() });
    let refused = respond("GET", &format!("/v1/queues/{}", "q".repeat(129)), None);
    assert_error(&refused, 413, "payload_too_large");
    assert_eq!(message(&refused), "queue is too large: 129 bytes; the limit is 128 bytes");
}

#[test]
fn enqueue_reads_every_field() {
    let body = r#"{"payload": {"to": "a@b.c", "n": [1, 2]} , "priority": -5, "group": "g1",
        "delay_ms": 250, "max_attempts": 7, "depends_on": ["3", 4], "key": "order-17"}"#;
    let task = NewTask {
        payload: Bytes::from_static(br#"{"to": "a@b.c", "n": [1, 2]}"#),
        priority: -5,
        group: Some("g1".into()),
        delay_ms: 250,
        max_attempts: Some(7),
        depends_on: vec![DepRef::Task(3), DepRef::Task(4)],
        key: Some("order-17".into()),
    };
    assert_eq!(
        command("POST", "/v1/queues/emails/tasks", Some(body)),
        Command::Enqueue { queue: "emails".into(), task }
    );
}

#[test]
fn enqueue_defaults_and_payload_kept_verbatim() {
    for payload in ["\"fetch\"", "17", "null", "[1,2.5e3]", r#"{"a":"\u00e9\n"}"#, "true"] {
        let body = format!(r#"{{"payload":{payload}}}"#);
        let Command::Enqueue { task, .. } = command("POST", "/v1/queues/q/tasks", Some(&body)) else { panic!() };
        assert_eq!(task, NewTask { payload: Bytes::copy_from_slice(payload.as_bytes()), ..NewTask::default() });
    }
    // null for optional members is absent.
    let body = r#"{"payload":1,"priority":null,"group":null,"delay_ms":null,"max_attempts":null,
        "depends_on":null,"key":null}"#;
    let Command::Enqueue { task, .. } = command("POST", "/v1/queues/q/tasks", Some(body)) else { panic!() };
    assert_eq!(task, NewTask { payload: Bytes::from_static(b"1"), ..NewTask::default() });
}

#[test]
fn ids_and_leases_as_strings_and_numbers() {
    let body = r#"{"payload":1,"depends_on":["9223372036854775807", 9007199254740993, "0", 12]}"#;
    let Command::Enqueue { task, .. } = command("POST", "/v1/queues/q/tasks", Some(body)) else { panic!() };
    assert_eq!(
        task.depends_on,
        vec![DepRef::Task(i64::MAX as u64), DepRef::Task(9_007_199_254_740_993), DepRef::Task(0), DepRef::Task(12)]
    );
    // An id is a u64, but no task has one of 2^63 or more, and the binary form
    // (which the log stores) has no room for one: refused at the edge.
    let refused = respond("POST", "/v1/queues/q/tasks", Some(r#"{"payload":1,"depends_on":["18446744073709551615"]}"#));
    assert_error(&refused, 400, "invalid_argument");
    assert!(message(&refused).contains("task 18446744073709551615 does not exist"), "{}", message(&refused));
    for lease in [r#""1234567890123456789""#, "1234567890123456789"] {
        let body = format!(r#"{{"lease":{lease}}}"#);
        assert_eq!(
            command("POST", "/v1/tasks/7/complete", Some(&body)),
            Command::Complete { id: 7, lease: 1_234_567_890_123_456_789, result: None }
        );
    }
    for bad in [r#""-1""#, "-1", "1.5", "1e3", r#""""#, r#"" 1""#, r#""+1""#, "18446744073709551616", "true", "[1]"] {
        let body = format!(r#"{{"lease":{bad}}}"#);
        let refused = respond("POST", "/v1/tasks/7/complete", Some(&body));
        assert_error(&refused, 400, "invalid_argument");
        assert!(message(&refused).starts_with("invalid lease: expected a lease token"), "{bad}: {}", message(&refused));
        let body = format!(r#"{{"payload":1,"depends_on":[{bad}]}}"#);
        let refused = respond("POST", "/v1/queues/q/tasks", Some(&body));
        assert!(message(&refused).starts_with("invalid depends_on: entry 0: expected a task id"), "{bad}");
    }
}

#[test]
fn batch_reads_entries_and_hash_references() {
    let body = r##"{"tasks":[{"payload":"fetch","key":"k"},{"payload":"render","depends_on":["#0", "5", 6]},
        {"payload":{},"priority":3,"depends_on":["#1","#0"]}]}"##;
    let tasks = vec![
        NewTask { payload: Bytes::from_static(b"\"fetch\""), key: Some("k".into()), ..NewTask::default() },
        NewTask {
            payload: Bytes::from_static(b"\"render\""),
            depends_on: vec![DepRef::Batch(0), DepRef::Task(5), DepRef::Task(6)],
            ..NewTask::default()
        },
        NewTask {
            payload: Bytes::from_static(b"{}"),
            priority: 3,
            depends_on: vec![DepRef::Batch(1), DepRef::Batch(0)],
            ..NewTask::default()
        },
    ];
    assert_eq!(
        command("POST", "/v1/queues/emails/tasks/batch", Some(body)),
        Command::EnqueueBatch { queue: "emails".into(), tasks }
    );
}

#[test]
fn batch_errors_name_the_entry() {
    let cases = [
        (r#"{"tasks":[{"payload":1},{"payload":2,"depends_on":"x"}]}"#, "invalid tasks[1].depends_on:"),
        (r##"{"tasks":[{"payload":1},{"payload":2,"depends_on":["#x"]}]}"##, "invalid tasks[1].depends_on: entry 0"),
        (r#"{"tasks":[{"payload":1},{"payload":2,"color":1}]}"#, "invalid tasks[1].color: unknown field"),
        (r#"{"tasks":[{"payload":1},{"priority":2}]}"#, "invalid tasks[1].payload: is required"),
        (r#"{"tasks":[{"payload":1},{"payload":2,"priority":"high"}]}"#, "invalid tasks[1].priority:"),
        (r#"{"tasks":[{"payload":1},7]}"#, "invalid tasks[1]: expected a JSON object"),
        (r#"{"tasks":[]}"#, "invalid tasks: a batch holds 1 to 10000 tasks"),
        (r#"{"tasks":{}}"#, "invalid tasks: expected an array"),
        (r#"{}"#, "invalid tasks: is required"),
    ];
    for (body, expected) in cases {
        let refused = respond("POST", "/v1/queues/q/tasks/batch", Some(body));
        assert_error(&refused, 400, "invalid_argument");
        assert!(message(&refused).starts_with(expected), "{body}: {}", message(&refused));
    }
}

#[test]
fn hash_references_outside_a_batch_are_refused() {
    let refused = respond("POST", "/v1/queues/q/tasks", Some(r##"{"payload":1,"depends_on":["#0"]}"##));
    assert_error(&refused, 400, "invalid_argument");
    assert_eq!(message(&refused), "invalid depends_on: #k references are only valid in a batch");
}

#[test]
fn dequeue_reads_every_field_and_defaults() {
    assert_eq!(
        command("POST", "/v1/dequeue", Some(r#"{"queues":["a","b"],"max":10,"lease_ms":500,"wait_ms":60000}"#)),
        Command::Dequeue { queues: vec!["a".into(), "b".into()], max: 10, lease_ms: Some(500), wait_ms: 60_000 }
    );
    assert_eq!(
        command("POST", "/v1/dequeue", Some(r#"{"queues":["a"]}"#)),
        Command::Dequeue { queues: vec!["a".into()], max: 1, lease_ms: None, wait_ms: 0 }
    );
    let refused = respond("POST", "/v1/dequeue", Some(r#"{"queues":["a"],"wait_ms":60001}"#));
    assert_error(&refused, 400, "invalid_argument");
    assert_eq!(message(&refused), "invalid wait_ms: must be between 0 and 60000");
    for bad in [r#"{"queues":[]}"#, r#"{"queues":"a"}"#, r#"{"queues":[1]}"#, r#"{"max":1}"#] {
        let refused = respond("POST", "/v1/dequeue", Some(bad));
        assert!(message(&refused).starts_with("invalid queues:"), "{bad}: {}", message(&refused));
    }
    let many: Vec<String> = (0..65).map(|i| format!("\"q{i}\"")).collect();
    let refused = respond("POST", "/v1/dequeue", Some(&format!(r#"{{"queues":[{}]}}"#, many.join(","))));
    assert!(message(&refused).starts_with("invalid queues:"));
}

#[test]
fn task_routes() {
    assert_eq!(command("GET", "/v1/tasks/7", None), Command::GetTask { id: 7 });
    assert_eq!(command("DELETE", "/v1/tasks/18446744073709551615", None), Command::Cancel { id: u64::MAX });
    assert_eq!(
        command("POST", "/v1/tasks/7/complete", Some(r#"{"lease":"9","result":{"sent": true}}"#)),
        Command::Complete { id: 7, lease: 9, result: Some(Bytes::from_static(br#"{"sent": true}"#)) }
    );
    assert_eq!(
        command("POST", "/v1/tasks/7/complete", Some(r#"{"lease":"9","result":null}"#)),
        Command::Complete { id: 7, lease: 9, result: None }
    );
    assert_eq!(
        command("POST", "/v1/tasks/7/fail", Some(r#"{"lease":"9","error":"smtp \"timeout\"","retry":false}"#)),
        Command::Fail { id: 7, lease: 9, error: "smtp \"timeout\"".into(), retry: false }
    );
    assert_eq!(
        command("POST", "/v1/tasks/7/fail", Some(r#"{"lease":9,"error":"x"}"#)),
        Command::Fail { id: 7, lease: 9, error: "x".into(), retry: true }
    );
    assert_eq!(
        command("POST", "/v1/tasks/7/extend", Some(r#"{"lease":"9","lease_ms":30000}"#)),
        Command::Extend { id: 7, lease: 9, lease_ms: 30_000 }
    );
    for (path, body, field) in [
        ("/v1/tasks/7/fail", r#"{"lease":"9"}"#, "error"),
        ("/v1/tasks/7/fail", r#"{"error":"x"}"#, "lease"),
        ("/v1/tasks/7/extend", r#"{"lease":"9"}"#, "lease_ms"),
        ("/v1/tasks/7/complete", r#"{}"#, "lease"),
    ] {
        let refused = respond("POST", path, Some(body));
        assert_error(&refused, 400, "invalid_argument");
        assert_eq!(message(&refused), format!("invalid {field}: is required"));
    }
}

#[test]
fn dead_letter_routes_list_retry_and_delete() {
    use crate::limits::{LIST_TASKS_COUNT_DEFAULT, LIST_TASKS_COUNT_MAX};
    let list = |state, after, limit| Command::ListTasks { queue: "q".into(), state, after, limit };
    assert_eq!(
        command("GET", "/v1/queues/q/tasks?state=dead", None),
        list(TaskState::Dead, 0, LIST_TASKS_COUNT_DEFAULT)
    );
    assert_eq!(
        command("GET", "/v1/queues/q/tasks?limit=1000&cursor=41&state=waiting", None),
        list(TaskState::Waiting, 41, LIST_TASKS_COUNT_MAX)
    );
    assert_eq!(command("GET", "/v1/queues/q/tasks?state=ready&cursor=", None), list(TaskState::Ready, 0, 100));
    assert_eq!(command("POST", "/v1/tasks/7/retry", None), Command::RetryTask { id: 7 });
    assert_eq!(command("POST", "/v1/tasks/7/delete", None), Command::DeleteTask { id: 7 });
    for (query, field) in [
        ("", "state"),
        ("state=buried", "state"),
        ("state=dead&limit=0", "limit"),
        ("state=dead&limit=1001", "limit"),
        ("state=dead&cursor=x", "cursor"),
        ("state=dead&sort=id", "query"),
    ] {
        let refused = respond("GET", &format!("/v1/queues/q/tasks?{query}"), None);
        assert_error(&refused, 400, "invalid_argument");
        assert!(message(&refused).starts_with(&format!("invalid {field}:")), "{query}: {}", message(&refused));
    }
    assert_error(&respond("GET", "/v1/queues/bad%20name/tasks?state=dead", None), 400, "invalid_argument");
}

#[test]
fn a_task_page_renders_its_tasks_and_cursor_and_a_delete_its_id() {
    use crate::engine::TaskPage;
    let view = TaskView {
        id: 7,
        queue: Arc::from("q"),
        state: TaskState::Dead,
        payload: Bytes::from_static(b"{}"),
        priority: 0,
        group: None,
        depends_on: vec![],
        key: None,
        attempts: 3,
        max_attempts: 3,
        result: None,
        error: Some("boom".into()),
        created_at_ms: 1,
        updated_at_ms: 2,
        not_before_ms: None,
        lease_expires_at_ms: None,
        purge_at_ms: Some(3),
    };
    let page = rendered(&Reply::TaskPage(TaskPage { tasks: vec![view], next_cursor: Some(7) }), true);
    assert_eq!(page.status, 200);
    assert_eq!(page.body["next_cursor"], "7");
    assert_eq!(page.body["tasks"][0]["id"], "7");
    assert_eq!(page.body["tasks"][0]["error"], "boom");
    assert_eq!(page.body["tasks"][0]["attempts"], 3);
    let last = rendered(&Reply::TaskPage(TaskPage { tasks: vec![], next_cursor: None }), true);
    assert_eq!(last.body, serde_json::json!({"tasks": [], "next_cursor": null}));
    let deleted = rendered(&Reply::TaskDeleted { id: 7 }, true);
    assert_eq!((deleted.status, deleted.body.clone()), (200, serde_json::json!({"id": "7", "deleted": true})));
}

#[test]
fn task_ids_in_paths_must_be_decimal_u64() {
    for path in ["/v1/tasks/abc", "/v1/tasks/-1", "/v1/tasks/+1", "/v1/tasks/18446744073709551616", "/v1/tasks/1e3"] {
        let refused = respond("GET", path, None);
        assert_error(&refused, 400, "invalid_argument");
        assert!(message(&refused).starts_with("invalid id:"), "{path}");
    }
    let refused = respond("POST", "/v1/tasks/x7/complete", Some(r#"{"lease":"1"}"#));
    assert!(message(&refused).starts_with("invalid id:"));
}

#[test]
fn health_answers_get_and_head() {
    assert_eq!(action(&request("GET", "/healthz", None)), (Action::Health { head_only: false }, true));
    assert_eq!(action(&request("HEAD", "/healthz", None)), (Action::Health { head_only: true }, true));
    let refused = respond("POST", "/healthz", None);
    assert_error(&refused, 405, "method_not_allowed");
    assert_eq!(refused.headers["allow"], "GET, HEAD");
}

#[test]
fn head_strips_the_body_and_keeps_its_length() {
    let mut out = b"previous".to_vec();
    render_health(true, &mut out);
    let full = out.clone();
    strip_body(&mut out, b"previous".len());
    assert!(full.starts_with(&out) && full.len() - out.len() == "{\"status\":\"ok\"}\n".len());
    assert!(out.ends_with(b"\r\n\r\n"));
    let text = String::from_utf8(out).expect("ascii");
    assert!(text.contains("\r\nContent-Length: 16\r\n"), "{text}");
}

#[test]
fn unknown_query_parameters_are_refused_on_every_endpoint() {
    for (method, path, body) in [
        ("GET", "/healthz?verbose=1", None),
        ("GET", "/metrics?x", None),
        ("GET", "/v1/stats?pretty=true", None),
        ("GET", "/v1/queues?limit=5", None),
        ("GET", "/v1/queues/q?x=1", None),
        ("PUT", "/v1/queues/q?mode=lifo", Some("{}")),
        ("DELETE", "/v1/queues/q?forse=true", None),
        ("POST", "/v1/queues/q/tasks?priority=1", Some(r#"{"payload":1}"#)),
        ("POST", "/v1/queues/q/tasks/batch?x", Some(r#"{"tasks":[{"payload":1}]}"#)),
        ("POST", "/v1/dequeue?wait_ms=5", Some(r#"{"queues":["q"]}"#)),
        ("GET", "/v1/tasks/1?x=", None),
        ("DELETE", "/v1/tasks/1?x", None),
        ("POST", "/v1/tasks/1/complete?x", Some(r#"{"lease":"1"}"#)),
        ("POST", "/v1/tasks/1/fail?x", Some(r#"{"lease":"1","error":"e"}"#)),
        ("POST", "/v1/tasks/1/extend?x", Some(r#"{"lease":"1","lease_ms":1000}"#)),
        ("POST", "/v1/tasks/1/retry?x", None),
        ("POST", "/v1/tasks/1/delete?x", None),
        ("GET", "/v1/queues/q/tasks?state=dead&sort=id", None),
    ] {
        let refused = respond(method, path, body);
        assert_error(&refused, 400, "invalid_argument");
        assert!(message(&refused).starts_with("invalid query: unknown parameter"), "{path}: {}", message(&refused));
    }
    // Empty pairs are no parameters.
    assert_eq!(command("GET", "/v1/queues?", None), Command::ListQueues);
    assert_eq!(command("GET", "/v1/queues?&&", None), Command::ListQueues);
    assert_eq!(action(&request("GET", "/healthz?", None)).0, Action::Health { head_only: false });
}

#[test]
fn absolute_form_targets_are_reduced_to_their_path() {
    assert_eq!(command("GET", "http://localhost:7700/v1/queues/q", None), Command::GetQueue { queue: "q".into() });
    assert_eq!(command("GET", "HTTP://h/v1/queues", None), Command::ListQueues);
}

// ---- 404 and 405 ---------------------------------------------------------------

#[test]
fn unknown_paths_are_404_and_keep_the_connection() {
    for path in [
        "/",
        "/v1",
        "/v1/",
        "/v2/queues",
        "/v1/queues/",
        "/v1/queues//tasks",
        "/v1/queues/q/tasks/",
        "/v1/queues/q/tasks/batch/x",
        "/v1/queues/q/other",
        "/v1/tasks",
        "/v1/tasks/",
        "/v1/tasks/7/requeue",
        "/v1/dequeue/",
        "/healthz/",
        "*",
        "/v1/queues/q/tasks/batch/x/y/z",
    ] {
        let (action, keep_alive) = action(&request("GET", path, None));
        assert!(keep_alive);
        let Action::Respond(bytes) = action else { panic!("{path}") };
        assert_error(&parse_response(&bytes), 404, "not_found");
    }
}

#[test]
fn wrong_methods_are_405_with_allow() {
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/v1/queues", "GET"),
        ("POST", "/v1/queues/q", "GET, PUT, DELETE"),
        ("DELETE", "/v1/queues/q/tasks", "GET, POST"),
        ("GET", "/v1/tasks/7/retry", "POST"),
        ("DELETE", "/v1/tasks/7/delete", "POST"),
        ("PUT", "/v1/queues/q/tasks/batch", "POST"),
        ("GET", "/v1/dequeue", "POST"),
        ("POST", "/v1/tasks/7", "GET, DELETE"),
        ("PATCH", "/v1/tasks/abc", "GET, DELETE"),
        ("GET", "/v1/tasks/7/complete", "POST"),
        ("DELETE", "/v1/tasks/7/fail", "POST"),
        ("PUT", "/v1/tasks/7/extend", "POST"),
    ] {
        let refused = respond(method, path, None);
        assert_error(&refused, 405, "method_not_allowed");
        assert_eq!(refused.headers["allow"], allow, "{method} {path}");
    }
    // A wrong method with a body: the body is consumed, the connection kept.
    let (action, keep_alive) = action(&request("PATCH", "/v1/queues/q", Some("{\"x\":1}")));
    assert!(keep_alive);
    assert!(matches!(action, Action::Respond(_)));
}

#[test]
fn head_requests_get_the_head_without_the_body() {
    let buf = request("HEAD", "/v1/queues", None);
    let (Action::Respond(bytes), true) = action(&buf) else { panic!() };
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body after the head: {text}");
    assert!(text.contains("\r\nAllow: GET\r\n"));
}

// ---- framing -------------------------------------------------------------------

#[test]
fn keep_alive_rules() {
    let cases: [(&str, bool); 8] = [
        ("GET /v1/queues HTTP/1.1\r\n\r\n", true),
        ("GET /v1/queues HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        ("GET /v1/queues HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n", false),
        ("GET /v1/queues HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET /v1/queues HTTP/1.0\r\n\r\n", false),
        ("GET /v1/queues HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ("GET /v1/queues HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
        ("GET /v1/queues HTTP/1.0\r\nConnection: foo\r\n\r\n", false),
    ];
    for (text, expected) in cases {
        assert_eq!(action(text.as_bytes()), (Action::Execute(Command::ListQueues), expected), "{text:?}");
    }
    // Immediate answers say whether the connection stays.
    let buf = b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n";
    let (Action::Respond(bytes), false) = action(buf) else { panic!() };
    assert_eq!(parse_response(&bytes).headers["connection"], "close");
    let (Action::Respond(bytes), true) = action(b"GET /nope HTTP/1.1\r\n\r\n") else { panic!() };
    assert_eq!(parse_response(&bytes).headers["connection"], "keep-alive");
}

#[test]
fn pipelined_requests_are_read_one_at_a_time() {
    let mut buf = request("POST", "/v1/queues/q/tasks", Some(r#"{"payload":1}"#));
    let first_len = buf.len();
    buf.extend_from_slice(&request("GET", "/v1/tasks/1", None));
    buf.extend_from_slice(b"GET /v1/qu"); // the start of a third
    let Next::Request { action: Action::Execute(Command::Enqueue { .. }), keep_alive: true, consumed, .. } = next(&buf)
    else {
        panic!()
    };
    assert_eq!(consumed, first_len);
    let rest = &buf[consumed..];
    let Next::Request { action, consumed, .. } = next(rest) else { panic!() };
    assert_eq!(action, Action::Execute(Command::GetTask { id: 1 }));
    assert_eq!(next(&rest[consumed..]), Next::Incomplete);
}

#[test]
fn partial_heads_and_bodies_are_incomplete() {
    let buf = request("POST", "/v1/queues/q/tasks", Some(r#"{"payload":{"to":"a@b.c"},"priority":5}"#));
    for end in 0..buf.len() {
        assert_eq!(next(&buf[..end]), Next::Incomplete, "prefix of {end} bytes");
    }
    assert!(matches!(next(&buf), Next::Request { .. }));
}

#[test]
fn oversized_heads_are_431() {
    let limits = Limits::default();
    // A head that never ends: refused once the buffer holds more than the limit.
    let mut buf = b"GET /v1/queues HTTP/1.1\r\nX-Long: ".to_vec();
    buf.resize(limits.head_bytes_max, b'a');
    assert_eq!(next(&buf), Next::Incomplete);
    buf.push(b'a');
    assert_error(&fatal(&buf), 431, "headers_too_large");
    // A complete head just over the limit.
    let mut text = String::from("GET /v1/queues HTTP/1.1\r\nX-Long: ");
    text.push_str(&"a".repeat(limits.head_bytes_max));
    text.push_str("\r\n\r\n");
    assert_error(&fatal(text.as_bytes()), 431, "headers_too_large");
    // A head of exactly the limit is fine.
    let mut text = String::from("GET /v1/queues HTTP/1.1\r\nX-Long: ");
    let fill = limits.head_bytes_max - text.len() - 4;
    text.push_str(&"a".repeat(fill));
    text.push_str("\r\n\r\n");
    assert_eq!(text.len(), limits.head_bytes_max);
    assert_eq!(action(text.as_bytes()).0, Action::Execute(Command::ListQueues));
}

#[test]
fn too_many_headers_are_431() {
    let head = |count: usize| {
        let mut text = String::from("GET /v1/queues HTTP/1.1\r\n");
        for i in 0..count {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    };
    assert_eq!(action(&head(64)).0, Action::Execute(Command::ListQueues));
    let refused = fatal(&head(65));
    assert_error(&refused, 431, "headers_too_large");
    assert_eq!(message(&refused), "more than 64 headers");
}

#[test]
fn oversized_bodies_are_413_before_the_body_arrives() {
    let limits = Limits { body_bytes_max: 100, ..Limits::default() };
    let head = b"POST /v1/queues/q/tasks HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
    let Next::Fatal { response } = next_request(head, &limits) else { panic!() };
    assert_error(&parse_response(&response), 413, "payload_too_large");
    let head = b"POST /v1/queues/q/tasks HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
    assert_eq!(next_request(head, &limits), Next::Incomplete);
    let huge = b"POST /v1/queues/q/tasks HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n";
    let Next::Fatal { response } = next_request(huge, &limits) else { panic!() };
    assert_error(&parse_response(&response), 413, "payload_too_large");
    let big = b"GET /v1/queues HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
    assert_error(&fatal(big), 413, "payload_too_large");
}

#[test]
fn transfer_encoding_and_missing_length_are_411() {
    let chunked = b"POST /v1/queues/q/tasks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_error(&fatal(chunked), 411, "length_required");
    let both = b"POST /v1/dequeue HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}";
    assert_error(&fatal(both), 411, "length_required");
    for path in ["/v1/queues/q/tasks", "/v1/queues/q/tasks/batch", "/v1/dequeue", "/v1/tasks/1/complete"] {
        assert_error(&fatal(&request("POST", path, None)), 411, "length_required");
    }
    // Unknown paths and wrong methods without a body are answered as such.
    assert_error(&respond("POST", "/v1/nope", None), 404, "not_found");
    assert_error(&respond("POST", "/v1/tasks/1", None), 405, "method_not_allowed");
}

#[test]
fn bad_content_length_is_400_fatal() {
    for value in ["abc", "-1", "+5", "5 5", "", "0x10", "5,6", "1.0"] {
        let text = format!("POST /v1/dequeue HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
        assert_error(&fatal(text.as_bytes()), 400, "malformed_request");
    }
    let conflicting = b"POST /v1/dequeue HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x";
    assert_error(&fatal(conflicting), 400, "malformed_request");
    // Repeats of one value are accepted.
    let body = r#"{"queues":["a"]}"#;
    for lengths in [
        format!("Content-Length: {0}\r\ncontent-length: {0}", body.len()),
        format!("Content-Length: {0}, {0}", body.len()),
    ] {
        let text = format!("POST /v1/dequeue HTTP/1.1\r\n{lengths}\r\n\r\n{body}");
        assert!(matches!(action(text.as_bytes()).0, Action::Execute(Command::Dequeue { .. })));
    }
}

#[test]
fn bytes_that_are_not_http_are_400_fatal() {
    for bytes in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"hello world\r\n\r\n",
        b"GET /v1/queues HTTP/2.0\r\n\r\n",
        b"GET /v1/queues\r\n\r\n",
        b"GET  /v1/queues HTTP/1.1\r\n\r\n",
        b"GET /v1/queues HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /v1/qu\xffeues HTTP/1.1\r\n\r\n",
    ] {
        assert_error(&fatal(bytes), 400, "malformed_request");
    }
}

// ---- bodies --------------------------------------------------------------------

#[test]
fn bodies_that_are_not_json_are_400_malformed_and_keep_the_connection() {
    for body in ["", "{", "not json", "{\"payload\":1,}", "{\"payload\":1} x", "{\"payload\":01}", "\u{ff}"] {
        let (action, keep_alive) = action(&request("POST", "/v1/queues/q/tasks", Some(body)));
        assert!(keep_alive);
        let Action::Respond(bytes) = action else { panic!("{body:?}") };
        assert_error(&parse_response(&bytes), 400, "malformed_request");
    }
    let mut invalid_utf8 = request("POST", "/v1/dequeue", Some("{\"queues\":[\"a\"]}"));
    let at = invalid_utf8.len() - 4;
    invalid_utf8[at] = 0xff;
    let Action::Respond(bytes) = action(&invalid_utf8).0 else { panic!() };
    assert_error(&parse_response(&bytes), 400, "malformed_request");
}

#[test]
fn json_that_is_not_an_object_is_invalid_argument() {
    for body in ["[1]", "42", "null", "\"x\""] {
        let refused = respond("POST", "/v1/queues/q/tasks", Some(body));
        assert_error(&refused, 400, "invalid_argument");
        assert_eq!(message(&refused), "invalid body: expected a JSON object");
    }
}

#[test]
fn wrong_field_types_name_the_field() {
    let cases = [
        (
            r#"{"payload":1,"priority":"high"}"#,
            "invalid priority: expected an integer between -2147483648 and 2147483647",
        ),
        (
            r#"{"payload":1,"priority":2147483648}"#,
            "invalid priority: expected an integer between -2147483648 and 2147483647",
        ),
        (r#"{"payload":1,"priority":1.5}"#, "invalid priority: expected an integer between -2147483648 and 2147483647"),
        (r#"{"payload":1,"group":5}"#, "invalid group: expected a string"),
        (r#"{"payload":1,"key":[]}"#, "invalid key: expected a string"),
        (r#"{"payload":1,"delay_ms":-1}"#, "invalid delay_ms: expected a non-negative integer"),
        (r#"{"payload":1,"max_attempts":"3"}"#, "invalid max_attempts: expected a non-negative integer"),
        (r#"{"payload":1,"depends_on":{}}"#, "invalid depends_on: expected an array of task ids"),
        (r#"{"priority":1}"#, "invalid payload: is required"),
    ];
    for (body, expected) in cases {
        let refused = respond("POST", "/v1/queues/q/tasks", Some(body));
        assert_error(&refused, 400, "invalid_argument");
        assert_eq!(message(&refused), expected, "{body}");
    }
    let refused = respond("PUT", "/v1/queues/q", Some(r#"{"discipline":"random"}"#));
    assert_eq!(message(&refused), "invalid discipline: expected one of fifo, lifo, priority, round_robin");
    let refused = respond("PUT", "/v1/queues/q", Some(r#"{"group_concurrency":"4"}"#));
    assert_eq!(message(&refused), "invalid group_concurrency: expected a non-negative integer");
    let refused = respond("POST", "/v1/tasks/1/fail", Some(r#"{"lease":"1","error":"x","retry":"no"}"#));
    assert_eq!(message(&refused), "invalid retry: expected true or false");
}

#[test]
fn numbers_too_large_for_their_field_saturate_and_are_refused_with_their_range() {
    let refused = respond("POST", "/v1/queues/q/tasks", Some(r#"{"payload":1,"max_attempts":99999999999}"#));
    assert_error(&refused, 400, "invalid_argument");
    assert_eq!(message(&refused), "invalid max_attempts: must be between 1 and 1000");
}

#[test]
fn unknown_and_repeated_fields_are_named() {
    let refused = respond("POST", "/v1/queues/q/tasks", Some(r#"{"payload":1,"colour":"red"}"#));
    assert_error(&refused, 400, "invalid_argument");
    assert!(message(&refused).starts_with("invalid colour: unknown field"), "{}", message(&refused));
    let refused = respond("POST", "/v1/queues/q/tasks", Some(r#"{"payload":1,"pay\u006coad":2}"#));
    assert_eq!(message(&refused), "invalid payload: appears more than once");
    let refused = respond("POST", "/v1/queues/q/tasks", Some(r#"{"payload":1,"priority":null,"priority":2}"#));
    assert_eq!(message(&refused), "invalid priority: appears more than once");
    let refused = respond("POST", "/v1/dequeue", Some(r#"{"queues":["a"],"timeout":5}"#));
    assert!(message(&refused).starts_with("invalid timeout: unknown field"));
    // Escaped member names are read like any other.
    let Command::Enqueue { task, .. } = command("POST", "/v1/queues/q/tasks", Some(r#"{"pay\u006coad":1}"#)) else {
        panic!()
    };
    assert_eq!(task.payload, Bytes::from_static(b"1"));
    // A long unknown name is cut in the message.
    let long = "x".repeat(10_000);
    let refused = respond("POST", "/v1/queues/q/tasks", Some(&format!(r#"{{"{long}":1}}"#)));
    assert!(message(&refused).len() < 300);
}

#[test]
fn deeply_nested_payloads_do_not_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(r#"{{"payload":{deep}}}"#);
    let Command::Enqueue { task, .. } = command("POST", "/v1/queues/q/tasks", Some(&body)) else { panic!() };
    assert_eq!(task.payload.len(), deep.len());
    let body = format!(r#"{{"payload":1,"depends_on":{deep}}}"#);
    assert_error(&respond("POST", "/v1/queues/q/tasks", Some(&body)), 400, "invalid_argument");
    let body = format!(r#"{{"payload":1,"priority":{deep}}}"#);
    assert_error(&respond("POST", "/v1/queues/q/tasks", Some(&body)), 400, "invalid_argument");
}

// ---- rendering -----------------------------------------------------------------

fn queue_info() -> QueueInfo {
    QueueInfo {
        name: Arc::from("emails"),
        config: QueueConfig { group_concurrency: Some(4), ..QueueConfig::default() },
        counts: StateCounts([1, 2, 3, 4, 5, 6, 7]),
    }
}

fn queue_json() -> Value {
    json!({"name": "emails",
        "config": {"discipline": "fifo", "lease_ms": 30000, "max_attempts": 3, "backoff_ms": 1000,
                   "backoff_max_ms": 60000, "retention_ms": 3600000, "dead_retention_ms": 604800000,
                   "group_concurrency": 4},
        "counts": {"waiting": 1, "delayed": 2, "ready": 3, "leased": 4, "completed": 5, "dead": 6, "cancelled": 7}})
}

#[test]
fn render_queue_replies() {
    let response = rendered(&Reply::Queue(queue_info()), true);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, queue_json());
    let mut other = queue_info();
    other.name = Arc::from("x\"y");
    other.config = QueueConfig::default();
    let response = rendered(&Reply::Queues(vec![queue_info(), other]), false);
    assert_eq!(response.body["queues"][0], queue_json());
    assert_eq!(response.body["queues"][1]["name"], "x\"y");
    assert_eq!(response.body["queues"][1]["config"]["group_concurrency"], Value::Null);
    assert_eq!(rendered(&Reply::Queues(vec![]), true).body, json!({"queues": []}));
    let response = rendered(&Reply::QueueDeleted { queue: "emails".into() }, true);
    assert_eq!((response.status, response.body), (200, json!({"deleted": "emails"})));
}

#[test]
fn render_enqueue_replies() {
    let created = Enqueued { id: 7, state: TaskState::Ready, created: true };
    let response = rendered(&Reply::Enqueued(created), true);
    assert_eq!((response.status, response.body), (201, json!({"id": "7", "state": "ready"})));
    let repeat = Enqueued { id: u64::MAX, state: TaskState::Waiting, created: false };
    let response = rendered(&Reply::Enqueued(repeat), true);
    assert_eq!((response.status, response.body), (200, json!({"id": "18446744073709551615", "state": "waiting"})));
    let batch = vec![created, Enqueued { id: 9, state: TaskState::Waiting, created: true }];
    let response = rendered(&Reply::EnqueuedBatch(batch), true);
    assert_eq!((response.status, response.body), (201, json!({"ids": ["7", "9"], "states": ["ready", "waiting"]})));
}

#[test]
fn render_leased_tasks() {
    let tasks = vec![
        LeasedTask {
            id: 7,
            queue: Arc::from("emails"),
            payload: Bytes::from_static(br#"{"to": "a@b.c"}"#),
            priority: -3,
            group: None,
            attempt: 1,
            lease: 1_234_567_890_123_456_789,
            lease_expires_at_ms: 1_764_000_030_000,
        },
        LeasedTask {
            id: 8,
            queue: Arc::from("emails"),
            payload: Bytes::from_static(b"\"x\""),
            priority: i32::MIN,
            group: Some(Arc::from("g\n1")),
            attempt: 2,
            lease: u64::MAX,
            lease_expires_at_ms: 0,
        },
    ];
    let response = rendered(&Reply::Leased(tasks), true);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"tasks": [
            {"id": "7", "queue": "emails", "payload": {"to": "a@b.c"}, "priority": -3, "group": null,
             "attempt": 1, "lease": "1234567890123456789", "lease_expires_at_ms": 1764000030000u64},
            {"id": "8", "queue": "emails", "payload": "x", "priority": -2147483648, "group": "g\n1",
             "attempt": 2, "lease": "18446744073709551615", "lease_expires_at_ms": 0}]})
    );
    assert_eq!(rendered(&Reply::Leased(vec![]), true).body, json!({"tasks": []}));
}

#[test]
fn leased_task_fields_are_in_the_documented_order() {
    let task = LeasedTask {
        id: 7,
        queue: Arc::from("emails"),
        payload: Bytes::from_static(b"{}"),
        priority: 0,
        group: None,
        attempt: 1,
        lease: 5,
        lease_expires_at_ms: 9,
    };
    let mut out = Vec::new();
    render_reply(&Reply::Leased(vec![task]), true, &mut out);
    let text = String::from_utf8(out).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        body,
        concat!(
            r#"{"tasks":[{"id":"7","queue":"emails","payload":{},"priority":0,"group":null,"attempt":1,"lease":"5","#,
            r#""lease_expires_at_ms":9}]}"#,
            "\n"
        )
    );
}

#[test]
fn render_task_views() {
    let view = TaskView {
        id: 7,
        queue: Arc::from("emails"),
        state: TaskState::Leased,
        payload: Bytes::from_static(br#"{"to": "a@b.c"}"#),
        priority: 0,
        group: None,
        depends_on: vec![],
        key: None,
        attempts: 1,
        max_attempts: 3,
        result: None,
        error: None,
        created_at_ms: 1_764_000_000_000,
        updated_at_ms: 1_764_000_000_100,
        not_before_ms: None,
        lease_expires_at_ms: Some(1_764_000_030_100),
        purge_at_ms: None,
    };
    let response = rendered(&Reply::Task(view.clone()), true);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        json!({"id": "7", "queue": "emails", "state": "leased", "payload": {"to": "a@b.c"}, "priority": 0,
            "group": null, "depends_on": [], "key": null, "attempts": 1, "max_attempts": 3,
            "result": null, "error": null, "created_at_ms": 1764000000000u64, "updated_at_ms": 1764000000100u64,
            "not_before_ms": null, "lease_expires_at_ms": 1764000030100u64, "purge_at_ms": null})
    );
    let full = TaskView {
        state: TaskState::Dead,
        priority: 9,
        group: Some(Arc::from("g")),
        depends_on: vec![3, 4],
        key: Some("k\"1".into()),
        result: Some(Bytes::from_static(b"[true]")),
        error: Some("smtp\ttimeout \u{1}".into()),
        not_before_ms: Some(5),
        lease_expires_at_ms: None,
        purge_at_ms: Some(6),
        ..view
    };
    let body = rendered(&Reply::Task(full), true).body;
    assert_eq!(body["state"], "dead");
    assert_eq!(body["group"], "g");
    assert_eq!(body["depends_on"], json!(["3", "4"]));
    assert_eq!(body["key"], "k\"1");
    assert_eq!(body["result"], json!([true]));
    assert_eq!(body["error"], "smtp\ttimeout \u{1}");
    assert_eq!((body["not_before_ms"].clone(), body["purge_at_ms"].clone()), (json!(5), json!(6)));
    assert_eq!(body["lease_expires_at_ms"], Value::Null);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 17);
}

#[test]
fn render_state_and_extend_replies() {
    for state in TaskState::ALL {
        let response = rendered(&Reply::TaskState { id: 7, state }, true);
        assert_eq!((response.status, response.body), (200, json!({"id": "7", "state": state.as_str()})));
    }
    let response = rendered(&Reply::Extended { id: 7, lease_expires_at_ms: 1_764_000_060_000 }, true);
    assert_eq!((response.status, response.body), (200, json!({"id": "7", "lease_expires_at_ms": 1764000060000u64})));
}

#[test]
fn render_engine_errors_by_kind() {
    let cases = [
        (EngineError::Invalid { field: "priority".into(), reason: "must be \"small\"".into() }, 400),
        (EngineError::TaskNotFound(7), 404),
        (EngineError::QueueNotFound("q".into()), 404),
        (EngineError::LeaseMismatch(7), 409),
        (EngineError::LeaseExpired(7), 409),
        (EngineError::NotLeased { id: 7, state: TaskState::Ready }, 409),
        (EngineError::TaskFinished { id: 7, state: TaskState::Dead }, 409),
        (EngineError::TaskNotDead { id: 7, state: TaskState::Ready }, 409),
        (EngineError::TaskNotFinished { id: 7, state: TaskState::Leased }, 409),
        (EngineError::QueueNotEmpty { queue: "q".into(), unfinished_count: 3 }, 409),
        (EngineError::CapacityExceeded { what: "tasks", limit: 10 }, 503),
        (EngineError::Unauthenticated { reason: "no token".into() }, 401),
        (EngineError::Forbidden { scope: "consume", on: " on queue \"q\"".into() }, 403),
    ];
    for (error, status) in cases {
        let response = rendered(&Reply::Error(error.clone()), true);
        assert_eq!(response.status, status);
        assert_eq!(response.body, json!({"error": {"code": error.code(), "message": error.to_string()}}));
    }
}

#[test]
fn render_health_overloaded_and_shutting_down() {
    let mut out = Vec::new();
    render_health(true, &mut out);
    let response = parse_response(&out);
    assert_eq!((response.status, response.body), (200, json!({"status": "ok"})));
    assert_eq!(response.headers["connection"], "keep-alive");

    let mut out = Vec::new();
    render_overloaded(false, &mut out);
    let response = parse_response(&out);
    assert_error(&response, 503, "overloaded");
    assert_eq!(response.headers["retry-after"], "1");
    assert_eq!(response.headers["connection"], "close");

    let mut out = Vec::new();
    render_shutting_down(&mut out);
    let response = parse_response(&out);
    assert_error(&response, 503, "shutting_down");
    assert_eq!(response.headers["connection"], "close");
}

#[test]
fn responses_append_after_earlier_ones() {
    let mut out = Vec::new();
    render_health(true, &mut out);
    let first = out.len();
    render_reply(&Reply::TaskState { id: 1, state: TaskState::Completed }, true, &mut out);
    assert_eq!(parse_response(&out).len, first);
    assert_eq!(parse_response(&out[first..]).body, json!({"id": "1", "state": "completed"}));
}

// ---- no input panics -----------------------------------------------------------

fn valid_requests() -> Vec<Vec<u8>> {
    vec![
        request("POST", "/v1/queues/emails/tasks", Some(r#"{"payload":{"to":"a@b.c"},"priority":5,"key":"k"}"#)),
        request(
            "POST",
            "/v1/queues/q/tasks/batch",
            Some(r##"{"tasks":[{"payload":1},{"payload":2,"depends_on":["#0"]}]}"##),
        ),
        request("POST", "/v1/dequeue", Some(r#"{"queues":["a","b"],"max":10,"wait_ms":5}"#)),
        request("PUT", "/v1/queues/q", Some(r#"{"discipline":"priority","group_concurrency":null}"#)),
        request("POST", "/v1/tasks/7/fail", Some(r#"{"lease":"12","error":"x","retry":false}"#)),
        request("DELETE", "/v1/queues/q?force=true", None),
        request("GET", "/healthz", None),
    ]
}

/// Checks what every answer must satisfy, whatever the input.
fn check_invariants(buf: &[u8], limits: &Limits) {
    match next_request(buf, limits) {
        Next::Incomplete => assert!(buf.len() <= limits.head_bytes_max + limits.body_bytes_max),
        Next::Request { action, consumed, .. } => {
            assert!(consumed > 0 && consumed <= buf.len());
            if let Action::Respond(bytes) = action {
                check_head_or_response(&bytes);
            }
        }
        Next::Fatal { response } => {
            parse_response(&response);
        }
    }
}

/// A response, or (answering a HEAD request) a response head alone.
fn check_head_or_response(bytes: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) if head_len == bytes.len() => {}
        _ => {
            parse_response(bytes);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_invariants(&bytes, &Limits::default());
        check_invariants(&bytes, &Limits { head_bytes_max: 64, headers_count_max: 4, body_bytes_max: 16 });
    }

    #[test]
    fn http_like_bytes_never_panic(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "X"]),
        path in "(/v1/(queues|tasks|dequeue)(/[a-z0-9#%?=&]{0,6}){0,4})|/healthz|[ -~]{0,12}",
        headers in proptest::collection::vec("(Content-Length|Connection|Transfer-Encoding|X): [ -~]{0,8}", 0..4),
        body in "[ -~]{0,64}",
    ) {
        let mut text = format!("{method} {path} HTTP/1.1\r\n");
        for header in &headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.push_str(&body);
        check_invariants(text.as_bytes(), &Limits::default());
    }

    #[test]
    fn truncated_and_mutated_requests_never_panic(
        which in 0usize..7,
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let full = &valid_requests()[which];
        let truncated = &full[..cut.index(full.len() + 1)];
        check_invariants(truncated, &Limits::default());
        prop_assert!(truncated.len() == full.len() || next(truncated) == Next::Incomplete);
        let mut mutated = full.clone();
        let at = flip.index(mutated.len());
        mutated[at] = byte;
        check_invariants(&mutated, &Limits::default());
    }

    #[test]
    fn arbitrary_json_bodies_never_panic(body in "[\\[\\]{}\",:0-9a-z#. -]{0,80}") {
        for path in ["/v1/queues/q/tasks", "/v1/queues/q/tasks/batch", "/v1/dequeue", "/v1/tasks/1/complete",
                     "/v1/tasks/1/fail", "/v1/tasks/1/extend"] {
            check_invariants(&request("POST", path, Some(&body)), &Limits::default());
        }
        check_invariants(&request("PUT", "/v1/queues/q", Some(&body)), &Limits::default());
    }
}

#[test]
fn valid_requests_parse_to_commands() {
    for buf in valid_requests() {
        let (action, keep_alive) = action(&buf);
        assert!(keep_alive);
        assert!(matches!(action, Action::Execute(_) | Action::Health { .. }), "{}", describe(&action));
    }
}

// ---- authentication ------------------------------------------------------------

fn credential_of(headers: &str) -> Credential {
    let text = format!("GET /v1/queues HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    match next(text.as_bytes()) {
        Next::Request { credential, .. } => credential,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_authorization_header_is_read_as_a_bearer_token_or_refused_as_malformed() {
    let bearer = |token: &[u8]| Credential::Bearer(Box::new(crate::auth::PresentedToken::new(token).unwrap()));
    assert_eq!(credential_of(""), Credential::None);
    assert_eq!(credential_of("Authorization: Bearer tqx_abc\r\n"), bearer(b"tqx_abc"));
    assert_eq!(credential_of("authorization:   bearer    tqx_abc  \r\n"), bearer(b"tqx_abc"));
    for malformed in [
        "Authorization: Basic dXNlcjpwdw==\r\n",
        "Authorization: Bearer\r\n",
        "Authorization: Bearer \r\n",
        "Authorization: Bearer a b\r\n",
        "Authorization: tqx_abc\r\n",
        "Authorization: Bearer a\r\nAuthorization: Bearer a\r\n",
    ] {
        assert_eq!(credential_of(malformed), Credential::Malformed, "{malformed:?}");
    }
    let longest = "t".repeat(crate::limits::TOKEN_BYTES_MAX);
    assert_eq!(credential_of(&format!("Authorization: Bearer {longest}\r\n")), bearer(longest.as_bytes()));
    assert_eq!(credential_of(&format!("Authorization: Bearer {longest}t\r\n")), Credential::Malformed);
}

/// The tokens "p" (produce on `orders.*`) and "a" (admin).
fn tokens() -> crate::auth::Tokens {
    let line = |token: &str, rest: &str| {
        let hash: String = crate::auth::hash_token(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hash} {rest}\n")
    };
    crate::auth::Tokens::parse(&(line("p", "scopes=produce queues=orders.*") + &line("a", "scopes=admin"))).unwrap()
}

/// Parses `request` and runs the authorization step on it.
fn authorized(request: &[u8], session: &mut Session) -> Authorized {
    let Next::Request { action, keep_alive, credential, .. } = next(request) else { panic!("not a request") };
    authorize(action, &credential, keep_alive, &tokens(), session)
}

fn with_token(method: &str, path: &str, token: &str, body: Option<&str>) -> Vec<u8> {
    let mut text = String::from_utf8(request(method, path, body)).unwrap();
    let at = text.find("Host: x\r\n").unwrap() + "Host: x\r\n".len();
    text.insert_str(at, &format!("Authorization: Bearer {token}\r\n"));
    text.into_bytes()
}

fn response_of(authorized: &Authorized) -> (u16, Value, String) {
    let Action::Respond(bytes) = &authorized.action else { panic!("not refused: {:?}", authorized.action) };
    let text = String::from_utf8(bytes.clone()).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    (status, body, text)
}

#[test]
fn a_request_without_a_valid_token_gets_401_with_www_authenticate_and_the_third_closes() {
    let mut session = Session::new();
    let enqueue = r#"{"payload":1}"#;
    let cases = [
        request("POST", "/v1/queues/orders.eu/tasks", Some(enqueue)),
        with_token("POST", "/v1/queues/orders.eu/tasks", "wrong", Some(enqueue)),
        with_token("GET", "/v1/queues", "a b", None),
    ];
    for (i, case) in cases.iter().enumerate() {
        let checked = authorized(case, &mut session);
        let (status, body, text) = response_of(&checked);
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{text}");
        assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{text}");
        let last = i == cases.len() - 1;
        assert_eq!(checked.close, last);
        assert_eq!(text.contains("Connection: close"), last, "{text}");
    }
    // A health check needs no token.
    let mut session = Session::new();
    let checked = authorized(&request("GET", "/healthz", None), &mut session);
    assert_eq!((checked.action, checked.close), (Action::Health { head_only: false }, false));
}

#[test]
fn a_token_without_the_scope_gets_403_naming_it_and_a_limited_one_defers_task_checks() {
    let mut session = Session::new();
    let ok = authorized(&with_token("POST", "/v1/queues/orders.eu/tasks", "p", Some(r#"{"payload":1}"#)), &mut session);
    assert!(matches!(ok.action, Action::Execute(Command::Enqueue { .. })) && ok.grant.is_none());
    let refused =
        authorized(&with_token("POST", "/v1/queues/billing/tasks", "p", Some(r#"{"payload":1}"#)), &mut session);
    let (status, body, _) = response_of(&refused);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(body["error"]["message"], "this credential lacks the produce scope on queue \"billing\"");
    let refused = authorized(&with_token("GET", "/v1/queues", "p", None), &mut session);
    assert_eq!(response_of(&refused).0, 403);
    // A task read under a token limited to some queues: decided at execution.
    let deferred = authorized(&with_token("GET", "/v1/tasks/7", "p", None), &mut session);
    assert!(matches!(deferred.action, Action::Execute(Command::GetTask { id: 7 })) && deferred.grant.is_some());
    let admin = authorized(&with_token("GET", "/v1/tasks/7", "a", None), &mut session);
    assert!(matches!(admin.action, Action::Execute(_)) && admin.grant.is_none());
    assert!(!refused.close, "a 403 is not a failed authentication");
}

#[test]
fn metrics_and_stats_route_to_their_formats_and_take_get_only() {
    assert_eq!(action(&request("GET", "/metrics", None)), (Action::Stats(StatsFormat::Prometheus), true));
    assert_eq!(action(&request("GET", "/v1/stats", None)), (Action::Stats(StatsFormat::Json), true));
    for path in ["/metrics", "/v1/stats"] {
        let refused = respond("POST", path, Some("{}"));
        assert_error(&refused, 405, "method_not_allowed");
    }
}

/// `/metrics` and `/v1/stats` show every queue's counts: they need what
/// listing queues needs, `admin` on every queue.
#[test]
fn metrics_and_stats_need_admin_on_every_queue() {
    for path in ["/metrics", "/v1/stats"] {
        let mut session = Session::new();
        let (status, _, text) = response_of(&authorized(&with_token("GET", path, "p", None), &mut session));
        assert_eq!(status, 403, "{text}");
        let allowed = authorized(&with_token("GET", path, "a", None), &mut session);
        assert!(matches!(allowed.action, Action::Stats(_)), "{:?}", allowed.action);
        let (status, _, _) = response_of(&authorized(&request("GET", path, None), &mut Session::new()));
        assert_eq!(status, 401);
    }
}
