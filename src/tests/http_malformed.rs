//! Malformed and hostile input against the real `tqx serve` binary. After every
//! case a fresh connection must still get correct answers (`Server::assert_healthy`:
//! healthz, and a real enqueue + dequeue + complete).
//!
//! The contract (docs/http-api.md): a request that is not HTTP, has a bad request
//! line, header or `Content-Length`, or a body that is not JSON is `400
//! malformed_request`; after a `400 malformed_request`, 411, 413 or 431 the server
//! closes the connection; after any other error the connection stays open.

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{json_request, request_bytes, Client, ReadError, Response, Server};

/// How long a case may take to be answered or closed before the server is said
/// to hang on it.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The server answers `400 malformed_request` and closes, or closes at once
/// without an answer; it must not keep the connection waiting.
#[track_caller]
fn expect_400_or_close(client: &mut Client, case: &str) {
    client.set_read_timeout(ANSWER_WITHIN);
    match client.read_response() {
        Ok(response) => {
            assert_eq!(response.status, 400, "{case}: {response:?}");
            response.assert_error(400, "malformed_request");
            client.assert_closed(ANSWER_WITHIN);
        }
        Err(ReadError::Closed { partial: 0, .. }) => {}
        Err(error) => panic!("{case}: neither a 400 nor a close: {error:?}"),
    }
}

/// After an error that is not fatal to the connection, the same connection
/// answers the next request.
#[track_caller]
fn assert_connection_usable(client: &mut Client) {
    let response = client.get("/healthz");
    assert_eq!(response.status, 200, "the connection is still usable: {response:?}");
}

/// A `400 malformed_request` for a body that is not JSON. The contract says the
/// connection is closed after it; if the server keeps the connection (it knows
/// where the body ends), it must say so consistently and answer the next request.
#[track_caller]
fn expect_malformed_body(client: &mut Client, response: &Response, case: &str) {
    assert_eq!(response.status, 400, "{case}: {response:?}");
    response.assert_error(400, "malformed_request");
    if response.closes() {
        client.assert_closed(ANSWER_WITHIN);
    } else {
        client.set_read_timeout(ANSWER_WITHIN);
        client.send_raw(&request_bytes("GET", "/healthz", None));
        match client.read_response() {
            Ok(next) => assert_eq!(next.status, 200, "{case}: next request on the same connection: {next:?}"),
            Err(error) => {
                panic!("{case}: no `Connection: close` on the 400, yet the next request got no answer: {error:?}")
            }
        }
    }
}

#[test]
fn bad_json_body_is_malformed_request() {
    let server = Server::start(&[]);
    let cases: &[(&str, &str, &[u8])] = &[
        ("POST", "/v1/queues/q/tasks", br#"{"payload":"#),
        ("POST", "/v1/queues/q/tasks", b"hello"),
        ("POST", "/v1/queues/q/tasks", br#"{"payload": 1} trailing"#),
        ("POST", "/v1/queues/q/tasks", br#"{"payload": 1,}"#),
        ("POST", "/v1/queues/q/tasks", b"{\"payload\": \"\xff\xfe\"}"),
        ("POST", "/v1/queues/q/tasks", br#"{'payload': 1}"#),
        ("POST", "/v1/queues/q/tasks/batch", br#"{"tasks": [{"payload": 1}"#),
        ("PUT", "/v1/queues/q", br#"{"lease_ms": }"#),
        ("POST", "/v1/dequeue", br#"{"queues": ["q"]"#),
        ("POST", "/v1/tasks/1/complete", br#"{"lease": "1", "result": tru}"#),
    ];
    for (method, path, body) in cases {
        let case = format!("{method} {path} {:?}", String::from_utf8_lossy(body));
        let mut client = server.client();
        let response = client.request_bytes(method, path, Some(body));
        expect_malformed_body(&mut client, &response, &case);
        server.assert_healthy();
    }
    // Nothing was enqueued by any of them.
    server.client().get("/v1/queues/q").assert_error(404, "queue_not_found"); // nothing was enqueued
}

#[test]
fn bad_json_then_a_pipelined_request() {
    // The bad body and a valid request in one write: the 400 comes first; the
    // valid request is either answered (connection kept) or not (closed).
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut bytes = request_bytes("POST", "/v1/queues/q/tasks", Some(b"{not json}"));
    bytes.extend(request_bytes("GET", "/healthz", None));
    client.send_raw(&bytes);
    let first = client.read_response().expect("the 400");
    first.assert_error(400, "malformed_request");
    if first.closes() {
        client.assert_closed(ANSWER_WITHIN);
    } else {
        assert_eq!(client.read_response().expect("the healthz answer").status, 200);
    }
    server.assert_healthy();
}

#[test]
fn json_that_is_not_an_object_is_refused() {
    let server = Server::start(&[]);
    let mut client = server.client();
    for body in [&b"[1]"[..], b"\"payload\"", b"42", b"null", b"true"] {
        let response = client.request_bytes("POST", "/v1/queues/q/tasks", Some(body));
        assert_eq!(response.status, 400, "{:?}: {response:?}", String::from_utf8_lossy(body));
        assert!(matches!(response.code(), "invalid_argument" | "malformed_request"), "{response:?}");
        if response.closes() {
            client = server.client();
        }
    }
    server.assert_healthy();
}

#[test]
fn wrong_types_name_the_field_and_keep_the_connection() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    let cases = [
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "priority": "5"}), "priority"),
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "group": 7}), "group"),
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "delay_ms": "10"}), "delay_ms"),
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "max_attempts": true}), "max_attempts"),
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "depends_on": "1"}), "depends_on"),
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "key": 17}), "key"),
        ("POST", "/v1/queues/q/tasks/batch".to_string(), json!({"tasks": {"payload": 1}}), "tasks"),
        ("POST", "/v1/queues/q/tasks/batch".to_string(), json!({"tasks": [1]}), "tasks[0]"),
        ("PUT", "/v1/queues/q".to_string(), json!({"discipline": 1}), "discipline"),
        ("PUT", "/v1/queues/q".to_string(), json!({"lease_ms": "30000"}), "lease_ms"),
        ("PUT", "/v1/queues/q".to_string(), json!({"group_concurrency": "none"}), "group_concurrency"),
        ("POST", "/v1/dequeue".to_string(), json!({"queues": "q"}), "queues"),
        ("POST", "/v1/dequeue".to_string(), json!({"queues": [1]}), "queues"),
        ("POST", "/v1/dequeue".to_string(), json!({"queues": ["q"], "max": "10"}), "max"),
        ("POST", "/v1/dequeue".to_string(), json!({"queues": ["q"], "wait_ms": "100"}), "wait_ms"),
        ("POST", format!("/v1/tasks/{id}/complete"), json!({"lease": true}), "lease"),
        ("POST", format!("/v1/tasks/{id}/fail"), json!({"lease": "1", "error": 5}), "error"),
        ("POST", format!("/v1/tasks/{id}/fail"), json!({"lease": "1", "error": "x", "retry": "yes"}), "retry"),
        ("POST", format!("/v1/tasks/{id}/extend"), json!({"lease": "1", "lease_ms": "10"}), "lease_ms"),
    ];
    for (method, path, body, field) in &cases {
        let response = client.request(method, path, Some(body));
        assert_eq!(response.status, 400, "{method} {path} {body}: {response:?}");
        response.assert_invalid(field);
    }
    assert_connection_usable(&mut client);
    assert_eq!(client.task(&id)["state"], "ready", "nothing changed the task");
    server.assert_healthy();
}

#[test]
fn unknown_fields_are_named() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    let cases = [
        ("POST", "/v1/queues/q/tasks".to_string(), json!({"payload": 1, "prio": 5}), "prio"),
        ("POST", "/v1/queues/q/tasks/batch".to_string(), json!({"tasks": [{"payload": 1}], "atomic": true}), "atomic"),
        (
            "POST",
            "/v1/queues/q/tasks/batch".to_string(),
            json!({"tasks": [{"payload": 1}, {"payload": 2, "x": 1}]}),
            "x",
        ),
        ("PUT", "/v1/queues/q".to_string(), json!({"lease": 1000}), "lease"),
        ("POST", "/v1/dequeue".to_string(), json!({"queues": ["q"], "limit": 5}), "limit"),
        ("POST", format!("/v1/tasks/{id}/complete"), json!({"lease": "1", "output": 1}), "output"),
        ("POST", format!("/v1/tasks/{id}/fail"), json!({"lease": "1", "error": "e", "backoff": 1}), "backoff"),
        ("POST", format!("/v1/tasks/{id}/extend"), json!({"lease": "1", "lease_ms": 5, "by": 1}), "by"),
    ];
    for (method, path, body, field) in &cases {
        let response = client.request(method, path, Some(body));
        assert_eq!(response.status, 400, "{method} {path} {body}: {response:?}");
        response.assert_invalid(field);
    }
    assert_connection_usable(&mut client);
    assert!(client.dequeue(&["q"], 10).len() == 1, "only the first task exists");
    server.assert_healthy();
}

#[test]
fn negative_and_overflowing_numbers_are_invalid() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("leased", json!({"payload": 1}));
    let leased = client.dequeue(&["leased"], 1);
    let lease = leased[0]["lease"].as_str().unwrap().to_string();
    let enqueue = "/v1/queues/q/tasks".to_string();
    let extend = format!("/v1/tasks/{id}/extend");
    let cases: Vec<(&str, String, String, &str)> = vec![
        ("POST", enqueue.clone(), r#"{"payload":1,"priority":2147483648}"#.into(), "priority"),
        ("POST", enqueue.clone(), r#"{"payload":1,"priority":-2147483649}"#.into(), "priority"),
        ("POST", enqueue.clone(), r#"{"payload":1,"priority":1.5}"#.into(), "priority"),
        ("POST", enqueue.clone(), r#"{"payload":1,"priority":99999999999999999999999}"#.into(), "priority"),
        ("POST", enqueue.clone(), r#"{"payload":1,"delay_ms":-1}"#.into(), "delay_ms"),
        ("POST", enqueue.clone(), r#"{"payload":1,"delay_ms":18446744073709551616}"#.into(), "delay_ms"),
        ("POST", enqueue.clone(), r#"{"payload":1,"delay_ms":31622400001}"#.into(), "delay_ms"),
        ("POST", enqueue.clone(), r#"{"payload":1,"max_attempts":-1}"#.into(), "max_attempts"),
        ("POST", enqueue.clone(), r#"{"payload":1,"max_attempts":4294967296}"#.into(), "max_attempts"),
        ("POST", enqueue.clone(), r#"{"payload":1,"max_attempts":1001}"#.into(), "max_attempts"),
        ("POST", "/v1/dequeue".into(), r#"{"queues":["q"],"max":-1}"#.into(), "max"),
        ("POST", "/v1/dequeue".into(), r#"{"queues":["q"],"max":1e100}"#.into(), "max"),
        ("POST", "/v1/dequeue".into(), r#"{"queues":["q"],"max":18446744073709551616}"#.into(), "max"),
        ("POST", "/v1/dequeue".into(), r#"{"queues":["q"],"lease_ms":-5}"#.into(), "lease_ms"),
        ("POST", "/v1/dequeue".into(), r#"{"queues":["q"],"wait_ms":99999999999999999999}"#.into(), "wait_ms"),
        ("POST", "/v1/dequeue".into(), r#"{"queues":["q"],"wait_ms":-1}"#.into(), "wait_ms"),
        ("PUT", "/v1/queues/q".into(), r#"{"lease_ms":-1}"#.into(), "lease_ms"),
        ("PUT", "/v1/queues/q".into(), r#"{"lease_ms":86400001}"#.into(), "lease_ms"),
        ("PUT", "/v1/queues/q".into(), r#"{"retention_ms":2592000001}"#.into(), "retention_ms"),
        ("PUT", "/v1/queues/q".into(), r#"{"group_concurrency":1000001}"#.into(), "group_concurrency"),
        ("PUT", "/v1/queues/q".into(), r#"{"group_concurrency":-1}"#.into(), "group_concurrency"),
        ("PUT", "/v1/queues/q".into(), r#"{"backoff_ms":86400001}"#.into(), "backoff_ms"),
        ("PUT", "/v1/queues/q".into(), r#"{"max_attempts":0}"#.into(), "max_attempts"),
        ("POST", extend.clone(), format!(r#"{{"lease":"{lease}","lease_ms":0}}"#), "lease_ms"),
        ("POST", extend.clone(), format!(r#"{{"lease":"{lease}","lease_ms":-1}}"#), "lease_ms"),
        ("POST", extend.clone(), format!(r#"{{"lease":"{lease}","lease_ms":86400001}}"#), "lease_ms"),
        ("POST", extend.clone(), format!(r#"{{"lease":"{lease}","lease_ms":1.0e400}}"#), "lease_ms"),
    ];
    for (method, path, body, field) in &cases {
        let response = client.request_bytes(method, path, Some(body.as_bytes()));
        if response.code() == "malformed_request" {
            // 1.0e400 is not a number serde_json can represent; a parser may call it not JSON.
            assert!(body.contains("e400"), "{method} {path} {body}: {response:?}");
            client = server.client();
            continue;
        }
        assert_eq!(response.status, 400, "{method} {path} {body}: {response:?}");
        response.assert_invalid(field);
    }
    assert_connection_usable(&mut client);
    // Negative priorities and the extremes are valid.
    for priority in [i32::MIN as i64, -1, i32::MAX as i64] {
        client.enqueue("ok", json!({"payload": 1, "priority": priority}));
    }
    let queue = client.get("/v1/queues/q");
    if queue.status == 200 {
        assert_eq!(queue.body["counts"]["ready"], 0, "nothing was enqueued: {queue:?}");
        assert_eq!(queue.body["config"]["lease_ms"], 30000, "nothing was configured: {queue:?}");
    }
    server.assert_healthy();
}

#[test]
fn ids_that_are_not_numbers() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let id = client.enqueue("q", json!({"payload": 1}));
    // In the path: 400 (invalid id) or 404 (no such task or path); the connection stays.
    // (Percent-encoded digits are an id: `%31` is `1`, openapi.rs tests it.)
    for bad in ["abc", "-1", "1.5", "18446744073709551616", "0x10", "+1", "1e3", "%3", "%zz", "%20", "1abc"] {
        for (method, path) in [
            ("GET", format!("/v1/tasks/{bad}")),
            ("DELETE", format!("/v1/tasks/{bad}")),
            ("POST", format!("/v1/tasks/{bad}/complete")),
        ] {
            let body = if method == "POST" { Some(&br#"{"lease":"1"}"#[..]) } else { None };
            let response = client.request_bytes(method, &path, body);
            assert!(matches!(response.status, 400 | 404), "{method} {path}: {response:?}");
            assert!(
                matches!(response.code(), "invalid_argument" | "task_not_found" | "not_found"),
                "{method} {path}: {response:?}"
            );
            response.assert_error(response.status, response.code());
        }
    }
    assert_connection_usable(&mut client);
    // In a body: invalid_argument naming the field.
    let complete = format!("/v1/tasks/{id}/complete");
    let cases: &[(&str, &str, &str)] = &[
        (complete.as_str(), r#"{"lease":"abc"}"#, "lease"),
        (complete.as_str(), r#"{"lease":""}"#, "lease"),
        (complete.as_str(), r#"{"lease":"-1"}"#, "lease"),
        (complete.as_str(), r#"{"lease":-1}"#, "lease"),
        (complete.as_str(), r#"{"lease":1.5}"#, "lease"),
        (complete.as_str(), r#"{"lease":"18446744073709551616"}"#, "lease"),
        (complete.as_str(), r#"{"lease":18446744073709551616}"#, "lease"),
        (complete.as_str(), r#"{"lease":" 1"}"#, "lease"),
        (complete.as_str(), r#"{"lease":null}"#, "lease"),
        ("/v1/queues/q/tasks", r#"{"payload":1,"depends_on":["abc"]}"#, "depends_on"),
        ("/v1/queues/q/tasks", r#"{"payload":1,"depends_on":[-1]}"#, "depends_on"),
        ("/v1/queues/q/tasks", r#"{"payload":1,"depends_on":[true]}"#, "depends_on"),
        ("/v1/queues/q/tasks", r#"{"payload":1,"depends_on":[{"id":1}]}"#, "depends_on"),
        ("/v1/queues/q/tasks", r##"{"payload":1,"depends_on":["#0"]}"##, "depends_on"),
        (
            "/v1/queues/q/tasks/batch",
            r##"{"tasks":[{"payload":1},{"payload":2,"depends_on":["#x"]}]}"##,
            "tasks[1].depends_on",
        ),
        (
            "/v1/queues/q/tasks/batch",
            r##"{"tasks":[{"payload":1},{"payload":2,"depends_on":["#1"]}]}"##,
            "tasks[1].depends_on",
        ),
        (
            "/v1/queues/q/tasks/batch",
            r##"{"tasks":[{"payload":1},{"payload":2,"depends_on":["#-1"]}]}"##,
            "tasks[1].depends_on",
        ),
    ];
    for (path, body, field) in cases {
        let response = client.request_bytes("POST", path, Some(body.as_bytes()));
        assert_eq!(response.status, 400, "{path} {body}: {response:?}");
        response.assert_invalid(field);
    }
    assert_connection_usable(&mut client);
    assert_eq!(client.queue_counts("q")["ready"], 1, "only the first task exists");
    server.assert_healthy();
}

#[test]
fn bad_content_length_is_malformed_request() {
    let server = Server::start(&["--max-body-bytes", "1024"]);
    let cases: &[&[u8]] = &[
        b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{\"payload\":1}",
        b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{\"payload\":1}",
        b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 1 3\r\n\r\n{\"payload\":1}",
        b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 0x0d\r\n\r\n{\"payload\":1}",
        b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\nContent-Length: 14\r\n\r\n{\"payload\":1} ",
    ];
    for request in cases {
        let case = String::from_utf8_lossy(request).into_owned();
        let mut client = server.client();
        let response = client.send_raw_and_read(request.to_vec()).unwrap_or_else(|e| panic!("{case:?}: {e:?}"));
        response.assert_error(400, "malformed_request");
        client.assert_closed(ANSWER_WITHIN);
        server.assert_healthy();
    }
    // A length too large to represent: a bad Content-Length (400), or over the limit (413).
    let mut client = server.client();
    let request = b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}";
    let response = client.send_raw_and_read(request.to_vec()).expect("a response");
    assert!(
        (response.status, response.code()) == (400, "malformed_request")
            || (response.status, response.code()) == (413, "payload_too_large"),
        "{response:?}"
    );
    client.assert_closed(ANSWER_WITHIN);
    server.assert_healthy();
    server.client().get("/v1/queues/q").assert_error(404, "queue_not_found"); // nothing was enqueued
}

#[test]
fn bad_header_lines_are_malformed_request() {
    let server = Server::start(&[]);
    let cases: &[&[u8]] = &[
        b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n: empty\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nX: \x00\x01\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"/healthz HTTP/1.1\r\n\r\n",
    ];
    for request in cases {
        let case = String::from_utf8_lossy(request).into_owned();
        let mut client = server.client();
        client.send_raw(request);
        expect_400_or_close(&mut client, &case);
        server.assert_healthy();
    }
}

#[test]
fn huge_headers_are_431_then_close() {
    let server = Server::start(&[]);
    // One huge header value.
    let mut client = server.client();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n", "c".repeat(100 * 1024));
    let response = client.send_raw_and_read(request.into_bytes()).expect("a 431 response");
    response.assert_error(431, "headers_too_large");
    client.assert_closed(ANSWER_WITHIN);
    server.assert_healthy();
    // Headers that never end (no blank line) but exceed the limit.
    let mut client = server.client();
    let mut request = b"POST /v1/queues/q/tasks HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        request.extend_from_slice(format!("X-Header-Number-{i}: some value\r\n").as_bytes());
    }
    let response = client.send_raw_and_read(request).expect("a 431 response");
    response.assert_error(431, "headers_too_large");
    client.assert_closed(ANSWER_WITHIN);
    server.assert_healthy();
}

#[test]
fn request_line_of_100_kib_is_431() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let request = format!("GET /v1/queues/{} HTTP/1.1\r\nHost: x\r\n\r\n", "q".repeat(100 * 1024));
    let response = client.send_raw_and_read(request.into_bytes()).expect("a 431 response");
    response.assert_error(431, "headers_too_large");
    client.assert_closed(ANSWER_WITHIN);
    server.assert_healthy();
    // A long path within the limit is an ordinary request: a name too long for a
    // queue is refused (413 naming it and its limit), the connection kept.
    let mut client = server.client();
    let response = client.get(&format!("/v1/queues/{}", "q".repeat(8 * 1024)));
    assert_too_large(&mut client, &response, "queue", 128);
}

#[test]
fn many_tiny_headers_are_431() {
    let server = Server::start(&[]);
    for count in [65, 100, 1000] {
        let mut client = server.client();
        let mut request = String::from("GET /healthz HTTP/1.1\r\n");
        for i in 0..count {
            request.push_str(&format!("h{i}:v\r\n"));
        }
        request.push_str("\r\n");
        let response = client.send_raw_and_read(request.into_bytes()).expect("a 431 response");
        response.assert_error(431, "headers_too_large");
        client.assert_closed(ANSWER_WITHIN);
        server.assert_healthy();
    }
}

#[test]
fn non_http_bytes_get_400_or_close() {
    let server = Server::start(&[]);
    // A TLS 1.2 ClientHello record (handshake, version 3.1, with random and cipher suites).
    let mut client_hello = vec![0x16, 0x03, 0x01, 0x00, 0x4a, 0x01, 0x00, 0x00, 0x46, 0x03, 0x03];
    client_hello.extend((0u8..32).map(|i| i.wrapping_mul(37)));
    client_hello.extend([0x00, 0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f, 0x01, 0x00, 0x00, 0x19]);
    client_hello.extend([0x00, 0x00, 0x00, 0x0e, 0x00, 0x0c, 0x00, 0x00, 0x09]);
    client_hello.extend(b"localhost");
    // Deterministic pseudo-random binary.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let binary: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text garbage", b"hello world, this is not http\r\n\r\n".to_vec()),
        ("binary", binary),
        ("NUL bytes", vec![0u8; 512]),
        ("TLS ClientHello", client_hello),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("lone CR", b"GET /healthz HTTP/1.1\rHost: x\r\r".to_vec()),
        ("bytes over 0x7f in the path", b"GET /v1/queues/\xff\xfe HTTP/1.1\r\n\r\n".to_vec()),
    ];
    for (case, bytes) in cases {
        let mut client = server.client();
        let _ = client.send_raw_lossy(&bytes);
        expect_400_or_close(&mut client, case);
        server.assert_healthy();
    }
}

#[test]
fn truncated_body_then_close_does_not_hang_others() {
    let server = Server::start(&[]);
    // Promise 100 bytes, send 10, close.
    let mut client = server.client();
    client.send_raw(b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"payload\"");
    drop(client);
    server.assert_healthy();
    // Promise 100 bytes, send 10, keep the connection open: others are served.
    let mut stuck = server.client();
    stuck.send_raw(b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"payload\"");
    let start = Instant::now();
    server.assert_healthy();
    let mut other = server.client();
    for _ in 0..20 {
        assert_eq!(other.get("/healthz").status, 200);
    }
    assert!(start.elapsed() < Duration::from_secs(2), "others were held up: {:?}", start.elapsed());
    // Only the health-check tasks exist in their queues; q got nothing.
    other.get("/v1/queues/q").assert_error(404, "queue_not_found"); // nothing was enqueued
    drop(stuck);
    server.assert_healthy();
}

#[test]
fn slow_client_does_not_delay_others() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let slow = |request: Vec<u8>| {
        thread::spawn(move || {
            let mut client = Client::connect(addr);
            for byte in request {
                client.stream.write_all(&[byte]).unwrap();
                thread::sleep(Duration::from_millis(50));
            }
            client.read_response().expect("the slow client is answered")
        })
    };
    let slow_get = slow(request_bytes("GET", "/healthz", None));
    let slow_post = slow(json_request("POST", "/v1/queues/slow/tasks", &json!({"payload": 7})));
    thread::sleep(Duration::from_millis(100));
    // Meanwhile, other clients are served normally.
    for round in 0..10 {
        let start = Instant::now();
        let mut client = server.client();
        assert_eq!(client.get("/healthz").status, 200);
        let id = client.enqueue("fast", json!({"payload": round}));
        let tasks = client.dequeue(&["fast"], 1);
        assert_eq!(tasks[0]["id"], json!(id));
        assert!(start.elapsed() < Duration::from_secs(2), "round {round} took {:?}", start.elapsed());
        thread::sleep(Duration::from_millis(100));
    }
    let response = slow_get.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, json!({"status": "ok"}));
    let response = slow_post.join().unwrap();
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(server.client().dequeue(&["slow"], 10)[0]["payload"], 7);
    server.assert_healthy();
}

#[test]
fn silent_client_does_not_delay_others() {
    let server = Server::start(&[]);
    let silent: Vec<Client> = (0..20).map(|_| server.client()).collect();
    let start = Instant::now();
    for _ in 0..5 {
        server.assert_healthy();
    }
    assert!(start.elapsed() < Duration::from_secs(2), "others were held up: {:?}", start.elapsed());
    // A silent connection can still speak later.
    let mut late = silent.into_iter().next().unwrap();
    assert_connection_usable(&mut late);
    server.assert_healthy();
}

#[test]
fn half_close_after_a_partial_request_closes() {
    let server = Server::start(&[]);
    let partials: &[&[u8]] = &[
        b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"pay",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"GET /hea",
    ];
    for partial in partials {
        let case = String::from_utf8_lossy(partial).into_owned();
        let mut client = server.client();
        client.send_raw(partial);
        client.shutdown_write();
        expect_400_or_close(&mut client, &case);
        server.assert_healthy();
    }
    server.client().get("/v1/queues/q").assert_error(404, "queue_not_found"); // nothing was enqueued
}

#[test]
fn half_close_after_complete_requests_still_gets_the_answers() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut bytes = Vec::new();
    for i in 0..3 {
        bytes.extend(json_request("POST", "/v1/queues/h/tasks", &json!({"payload": i})));
    }
    bytes.extend(request_bytes("GET", "/healthz", None));
    client.send_raw(&bytes);
    client.stream.shutdown(Shutdown::Write).unwrap();
    for _ in 0..3 {
        let response = client.read_response().expect("an answer after the half-close");
        assert_eq!(response.status, 201, "{response:?}");
    }
    assert_eq!(client.read_response().expect("the healthz answer").status, 200);
    client.assert_closed(ANSWER_WITHIN);
    assert_eq!(server.client().queue_counts("h")["ready"], 3);
    server.assert_healthy();
}

#[test]
fn pipelined_valid_requests_then_garbage_are_answered_first_in_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.extend(json_request("POST", "/v1/queues/p/tasks", &json!({"payload": i})));
    }
    bytes.extend(request_bytes("GET", "/healthz", None));
    bytes.extend(request_bytes("GET", "/v1/queues/p", None));
    bytes.extend(b"\x00\x01\x02 garbage garbage\r\n\r\n");
    bytes.extend(request_bytes("GET", "/healthz", None)); // never reached
    client.send_raw(&bytes);
    let mut last = 0;
    for i in 0..5 {
        let response = client.read_response().unwrap_or_else(|e| panic!("response {i}: {e:?}"));
        assert_eq!(response.status, 201, "response {i}: {response:?}");
        let id = support::as_id(&response.body["id"]);
        assert!(id > last, "ids in request order");
        last = id;
    }
    assert_eq!(client.read_response().expect("healthz").body, json!({"status": "ok"}));
    assert_eq!(client.read_response().expect("queue").body["counts"]["ready"], 5);
    expect_400_or_close(&mut client, "garbage after pipelined requests");
    let tasks = server.client().dequeue(&["p"], 10);
    let payloads: Vec<_> = tasks.iter().map(|t| t["payload"].clone()).collect();
    assert_eq!(payloads, vec![json!(0), json!(1), json!(2), json!(3), json!(4)]);
    server.assert_healthy();
}

#[test]
fn odd_but_valid_json_does_not_break_the_server() {
    // Whatever the answer (a 2xx or a 400 with the error shape), the server
    // survives; a payload it accepts comes back exactly as sent.
    let server = Server::start(&[]);
    let deep = format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000));
    let accented = format!(r#""{}""#, "é".repeat(10_000));
    let payloads: Vec<(&str, String)> = vec![
        ("20,000 levels deep", deep),
        ("lone surrogate escape", r#""\ud800""#.into()),
        ("NUL escape", r#""\u0000""#.into()),
        ("10,000 two-byte characters", accented),
    ];
    for (case, payload) in &payloads {
        let mut client = server.client();
        let body = format!(r#"{{"payload": {payload}}}"#);
        let response = client.request_bytes("POST", "/v1/queues/odd/tasks", Some(body.as_bytes()));
        match response.status {
            201 => {
                let id = response.body["id"].as_str().unwrap().to_string();
                let got = client.get(&format!("/v1/tasks/{id}"));
                assert_eq!(got.status, 200, "{case}: {got:?}");
                assert!(got.raw_text().contains(payload.as_str()), "{case}: the payload comes back as sent");
                let cancel = client.delete(&format!("/v1/tasks/{id}"));
                assert_eq!(cancel.status, 200, "{case}: {cancel:?}");
            }
            400 => {
                assert!(matches!(response.code(), "invalid_argument" | "malformed_request"), "{case}: {response:?}")
            }
            _ => panic!("{case}: unexpected {response:?}"),
        }
        server.assert_healthy();
    }
    let bodies: Vec<(&str, String)> = vec![
        ("repeated member", r#"{"payload": 1, "payload": 2}"#.into()),
        ("2,000 dependencies", format!(r#"{{"payload": 1, "depends_on": [{}]}}"#, vec!["1"; 2000].join(","))),
        ("whitespace everywhere", "  \r\n\t{\"payload\" :\n 1 }\n".into()),
    ];
    for (case, body) in &bodies {
        let mut client = server.client();
        let response = client.request_bytes("POST", "/v1/queues/odd/tasks", Some(body.as_bytes()));
        assert!(matches!(response.status, 201 | 400), "{case}: unexpected {response:?}");
        if response.status == 400 {
            assert!(matches!(response.code(), "invalid_argument" | "malformed_request"), "{case}: {response:?}");
        }
        server.assert_healthy();
    }
}

#[test]
fn a_body_on_a_get_is_framed_by_its_content_length() {
    // The body of a request that takes none is skipped, not read as the next request.
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut bytes =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\nGET /nope HTTP/1.1\r\n\r\n\r\n".to_vec();
    bytes.extend(request_bytes("DELETE", "/v1/queues/none", Some(b"GET /x HTTP/1.1\r\n\r\n")));
    bytes.extend(request_bytes("GET", "/v1/queues", None));
    client.send_raw(&bytes);
    assert_eq!(client.read_response().expect("healthz").body, json!({"status": "ok"}));
    client.read_response().expect("delete").assert_error(404, "queue_not_found");
    assert_eq!(client.read_response().expect("list").body, json!({"queues": []}));
    assert_connection_usable(&mut client);
    server.assert_healthy();
}

#[test]
fn closing_while_the_reader_is_paused_on_a_full_buffer_does_not_hang_the_stop() {
    // Regression: a connection closed by the server (here `Connection: close`)
    // while its reader was paused on a full receive buffer left the reader
    // waiting forever, so the server then needed its whole 10 s stop grace.
    let mut server = Server::start(&["--max-body-bytes", "1024"]);
    let mut client = server.client();
    let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 200 * 1024)); // far more than the 17 KiB the reader buffers
    let _ = client.send_raw_lossy(&bytes);
    let response = client.read_response().expect("the health answer");
    assert_eq!(response.status, 200);
    server.assert_healthy();
    server.signal(libc::SIGTERM);
    let started = std::time::Instant::now();
    let status = server.wait_exit(Duration::from_secs(15)).expect("the server exits after SIGTERM");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
}

// ---- limits (issue 15, item 1: one request stops the server) ----------------------

/// A string of `bytes` bytes, longer than any field's limit: past 64 KiB the
/// old WAL record encoder panicked on its u16 length while the worker held the
/// engine, and the server hung.
fn over_64_kib() -> String {
    "x".repeat(70_000)
}

/// `response` is `413 payload_too_large` naming `field` and its `limit`, and
/// the connection stays usable.
#[track_caller]
fn assert_too_large(client: &mut Client, response: &Response, field: &str, limit: usize) {
    response.assert_error(413, "payload_too_large");
    let message = response.message();
    assert!(message.contains(field) && message.contains(&limit.to_string()), "{field}, {limit}: {message}");
    assert!(!response.closes(), "a field over its limit leaves the framing intact: {response:?}");
    assert_connection_usable(client);
}

#[test]
fn a_group_key_queue_name_or_error_over_64_kib_gets_413_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let long = over_64_kib();
    let cases = [
        ("/v1/queues/q/tasks", json!({"payload": 1, "group": long}), "group", 128),
        ("/v1/queues/q/tasks", json!({"payload": 1, "key": long}), "key", 256),
        (
            "/v1/queues/q/tasks/batch",
            json!({"tasks": [{"payload": 1}, {"payload": 1, "group": long}]}),
            "tasks[1].group",
            128,
        ),
        ("/v1/dequeue", json!({"queues": ["q", long]}), "queues", 128),
        ("/v1/tasks/1/fail", json!({"lease": "1", "error": long}), "error", 4096),
    ];
    for (path, body, field, limit) in cases {
        client.set_read_timeout(ANSWER_WITHIN);
        let response = client.post(path, body);
        assert_too_large(&mut client, &response, field, limit);
        server.assert_healthy();
    }
    // A queue name over its limit in a path (the head allows 16 KiB).
    let path = format!("/v1/queues/{}/tasks", "q".repeat(10_000));
    let response = client.post(&path, json!({"payload": 1}));
    assert_too_large(&mut client, &response, "queue", 128);
    // Nothing was enqueued into any queue.
    assert_eq!(client.get("/v1/queues/q").status, 404);
    server.assert_healthy();
}

#[test]
fn a_batch_dense_with_dependencies_is_refused_before_it_makes_a_log_record_over_4_mib() {
    // Each dependency `1,` is 2 bytes of body and 9 of log record: 480 tasks of
    // 1,024 dependencies fit the default 1 MiB body and made a 4.4 MiB record,
    // over the log's 4 MiB record limit, and the server stopped.
    let server = Server::start(&[]);
    let mut client = server.client();
    let deps = vec!["1"; 1024].join(",");
    let entry = format!(r#"{{"payload":0,"depends_on":[{deps}]}}"#);
    let body = format!(r#"{{"tasks":[{}]}}"#, vec![entry; 480].join(","));
    assert!(body.len() <= 1 << 20);
    client.set_read_timeout(ANSWER_WITHIN);
    let response = client.request_bytes("POST", "/v1/queues/q/tasks/batch", Some(body.as_bytes()));
    response.assert_invalid("tasks");
    assert!(response.message().contains("16384"), "{response:?}");
    assert_connection_usable(&mut client);
    server.assert_healthy();
}

/// Starts `tqx serve` with `args` and expects it to exit non-zero before it
/// creates its data directory or listens; returns its stderr.
fn refused_at_start(args: &[&str]) -> String {
    let dir = support::fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut all = vec!["--http", "127.0.0.1:0", "--binary", "127.0.0.1:0", "--reactors", "1", "--workers", "1"];
    all.push("--no-pin");
    all.extend_from_slice(args);
    let (status, stdout, stderr) = support::serve_until_exit(&all, &dir.join("data"));
    let Some(status) = status else { panic!("tqx serve {args:?} kept running") };
    let created = dir.join("data").exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!created, "{args:?} must be refused before the data directory is touched");
    assert!(!status.success(), "{args:?}: {status:?}");
    assert!(!stdout.contains("listening"), "{args:?} must be refused before listening: {stdout}");
    stderr
}

#[test]
fn a_max_body_bytes_the_log_cannot_hold_is_refused_at_start() {
    // Under --max-body-bytes 16777216 an HTTP batch of 5 tasks of 1 MiB each
    // made a 5 MiB log record, over the 4 MiB record limit, and the server
    // stopped: such a body limit is now refused before the server listens.
    let stderr = refused_at_start(&["--max-body-bytes", "16777216"]);
    assert!(
        stderr.contains("--max-body-bytes 16777216") && stderr.contains("4194304") && stderr.contains("3905488"),
        "the refusal names both limits: {stderr}"
    );
    refused_at_start(&["--max-body-bytes", "3969105"]);
}

#[test]
fn at_the_largest_accepted_body_limit_a_batch_of_three_1_mib_payloads_is_logged_and_served() {
    let server = Server::start(&["--max-body-bytes", "3905488"]);
    let mut client = server.client();
    let payload = "p".repeat((1 << 20) - 2); // a JSON string of exactly 1 MiB
    let body = json!({"tasks": [{"payload": payload}, {"payload": payload}, {"payload": payload}]});
    let response = client.post("/v1/queues/big/tasks/batch", body);
    assert_eq!(response.status, 201, "{}", response.raw_text().chars().take(300).collect::<String>());
    // Five no longer fit one body: 413 and close, and the server stays up.
    let five = json!({"tasks": vec![json!({"payload": payload}); 5]});
    let response = client.send_raw_and_read(json_request("POST", "/v1/queues/big/tasks/batch", &five));
    response.expect("a 413").assert_error(413, "payload_too_large");
    server.assert_healthy();
    let server = server.crash_and_restart(&["--max-body-bytes", "3905488"]);
    assert_eq!(server.client().queue_counts("big")["ready"], json!(3), "the batch was logged and replays");
}
