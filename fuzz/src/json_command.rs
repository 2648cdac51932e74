//! `json_command`: arbitrary JSON bodies through the JSON-to-command mapping
//! (`src/http/body.rs`), then through the engine and the reply renderer.
//!
//! The first byte picks an endpoint that takes a body; the rest is the body. The
//! harness frames it itself (a fixed, valid head with the right
//! `Content-Length`), so the fuzzer spends its time on bodies, not on HTTP
//! framing (the mapping functions are private to `taskqueuex::http`; the head
//! costs one short parse).
//!
//! Properties, besides "never panics" (the engine's too: "no input makes the
//! engine panic", docs/architecture.md):
//! - a well-framed request always reads as one whole request that keeps the
//!   connection: a bad body is a 400 answer, never a framing error;
//! - a refusal is a well-formed 400 (413 for a field over its length limit)
//!   with a JSON body;
//! - a command fits one log record within the bound of `src/limits.rs`;
//! - a command runs against a small engine (a queue `q` with three tasks, task 1
//!   leased) without breaking its invariants, and its reply renders as a
//!   well-formed response with a JSON body and a status the API documents, and
//!   as a binary reply frame that decodes (`replies.rs`).

use taskqueuex::http::{next_request, Action, Limits, Next};

use crate::{replies, response};

/// The endpoints that take a JSON body: (method, path). Task paths name task 1,
/// which the fixture holds leased.
pub const ROUTES: [(&str, &str); 7] = [
    ("PUT", "/v1/queues/q"),
    ("POST", "/v1/queues/q/tasks"),
    ("POST", "/v1/queues/q/tasks/batch"),
    ("POST", "/v1/dequeue"),
    ("POST", "/v1/tasks/1/complete"),
    ("POST", "/v1/tasks/1/fail"),
    ("POST", "/v1/tasks/1/extend"),
];

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(selector) % ROUTES.len()];
    let request = frame(method, path, body);
    let (action, keep_alive, consumed) = match next_request(&request, &Limits::default()) {
        Next::Request { action, keep_alive, consumed, .. } => (action, keep_alive, consumed),
        other => panic!("a well-framed {method} {path} did not read as a request: {other:?}"),
    };
    assert_eq!(consumed, request.len(), "the whole request is consumed");
    assert!(keep_alive, "a bad body keeps the connection");
    match action {
        Action::Respond(bytes) => {
            let status = response::check(&bytes, true, false);
            assert!(matches!(status, 400 | 413), "a body is refused with 400, or 413 for a field too long: {status}");
        }
        Action::Health { .. } => panic!("{method} {path} is not the health check"),
        Action::Stats(_) => panic!("{method} {path} is not a statistics route"),
        Action::Execute(command) => {
            replies::check_record_fits(&command, body.len());
            replies::run_and_check(command, 1)
        }
        Action::Ui(_) => panic!("{method} {path} is not the dashboard"),
    }
}

/// A valid HTTP/1.1 request with `body`.
pub fn frame(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    request
}
