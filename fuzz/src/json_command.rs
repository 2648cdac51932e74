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
//! - a refusal is a well-formed 400 with a JSON body;
//! - a command runs against a small engine (a queue `q` with three tasks, task 1
//!   leased) without breaking its invariants, and its reply renders as a
//!   well-formed response with a JSON body and a status the API documents.

use taskqueuex::command::{execute, Reply};
use taskqueuex::engine::{DepRef, Engine, EngineConfig, LeaseToken, NewTask, QueueConfigPatch};
use taskqueuex::http::{next_request, render_reply, Action, Limits, Next};

use crate::response;

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

/// The fixture's clock.
pub const NOW_MS: u64 = 1_764_000_000_000;

/// Statuses a reply may carry (docs/http-api.md).
const STATUSES: [u16; 8] = [200, 201, 400, 404, 409, 413, 500, 503];

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(selector) % ROUTES.len()];
    let request = frame(method, path, body);
    let (action, keep_alive, consumed) = match next_request(&request, &Limits::default()) {
        Next::Request { action, keep_alive, consumed } => (action, keep_alive, consumed),
        other => panic!("a well-framed {method} {path} did not read as a request: {other:?}"),
    };
    assert_eq!(consumed, request.len(), "the whole request is consumed");
    assert!(keep_alive, "a bad body keeps the connection");
    match action {
        Action::Respond(bytes) => {
            let status = response::check(&bytes, true, false);
            assert_eq!(status, 400, "a body is refused with 400");
        }
        Action::Health => panic!("{method} {path} is not the health check"),
        Action::Execute(command) => {
            let (mut engine, _) = fixture();
            let reply = execute(&mut engine, command, NOW_MS + 1);
            if let Err(broken) = engine.check_invariants() {
                panic!("the engine's invariants broke: {broken}");
            }
            if let Reply::StorageFailed(_) = reply {
                panic!("the pure engine cannot fail storage");
            }
            let mut out = Vec::new();
            render_reply(&reply, true, &mut out);
            let status = response::check(&out, true, false);
            assert!(STATUSES.contains(&status), "status {status} for {reply:?}");
            // Time passes: retries, lease expiries and purges must keep the
            // invariants too.
            engine.tick(NOW_MS + 86_400_000 * 365, usize::MAX);
            if let Err(broken) = engine.check_invariants() {
                panic!("the engine's invariants broke after a tick: {broken}");
            }
        }
    }
}

/// A valid HTTP/1.1 request with `body`.
pub fn frame(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    request
}

/// The engine every command runs against, and the lease token of its task 1:
/// queue `q` holds tasks 1, 2 and 3 (payloads `1`, `2`, `3`; 3 depends on 2), and
/// task 1 is leased.
pub fn fixture() -> (Engine, LeaseToken) {
    let mut engine = Engine::new(EngineConfig::default());
    engine.configure_queue("q", &QueueConfigPatch::default(), NOW_MS).expect("queue q");
    for k in 1..=3u64 {
        let task = NewTask {
            payload: bytes::Bytes::from(k.to_string()),
            depends_on: if k == 3 { vec![DepRef::Task(2)] } else { Vec::new() },
            ..NewTask::default()
        };
        engine.enqueue("q", task, NOW_MS).expect("task");
    }
    let mut leased = Vec::new();
    engine.dequeue(&["q"], 1, None, NOW_MS, &mut leased).expect("lease task 1");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].id, 1);
    (engine, leased[0].lease)
}
