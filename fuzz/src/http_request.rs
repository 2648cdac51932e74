//! `http_request`: any bytes as the start of a connection's receive buffer,
//! through `taskqueuex::http::next_request`, as the reactor calls it.
//!
//! Properties, besides "never panics":
//! - a request is `consumed` bytes, 0 < consumed <= the buffer, and reading
//!   exactly those bytes gives the same answer (a request depends on its own
//!   bytes only, never on what follows it);
//! - every rendered answer (an immediate response, a fatal error) is one
//!   well-formed response with a JSON body, and a fatal one closes;
//! - `Incomplete` never asks to buffer more than `head_bytes_max +
//!   body_bytes_max` bytes (the bound the reactor's reader relies on).
//!
//! Each input runs twice: with the server's default limits, and with small ones
//! so that the 431 and 413 paths are reachable with inputs of a few KiB.

use taskqueuex::http::{next_request, Action, Limits, Next};

use crate::response;

/// Limits small enough for the fuzzer's inputs (4 KiB by default) to cross.
pub fn small_limits() -> Limits {
    Limits { head_bytes_max: 256, headers_count_max: 8, body_bytes_max: 512 }
}

pub fn run(data: &[u8]) {
    check(data, &Limits::default());
    check(data, &small_limits());
}

/// One call of `next_request` and its properties; returns what it returned.
pub fn check(data: &[u8], limits: &Limits) -> Next {
    let next = next_request(data, limits);
    match &next {
        Next::Incomplete => {
            assert!(
                data.len() <= limits.head_bytes_max + limits.body_bytes_max,
                "Incomplete with {} bytes buffered: over the bound of {}",
                data.len(),
                limits.head_bytes_max + limits.body_bytes_max
            );
        }
        Next::Fatal { response } => {
            let status = response::check(response, false, false);
            assert!(status >= 400, "a fatal answer is an error, not {status}");
        }
        Next::Request { action, keep_alive, consumed, .. } => {
            assert!(*consumed > 0 && *consumed <= data.len(), "consumed {consumed} of {}", data.len());
            if let Action::Respond(bytes) = action {
                response::check(bytes, *keep_alive, is_head(&data[..*consumed]));
            }
            if *consumed < data.len() {
                let alone = next_request(&data[..*consumed], limits);
                assert_eq!(alone, next, "the request read alone differs from the request read with what follows");
            }
            check_authorized(data, limits);
        }
    }
    next
}

/// The reactor's next step with `--tokens` (`http::authorize`, which takes
/// the action: hence a fresh parse): a refusal is a well-formed response
/// that closes exactly when it says so, anything else passes unchanged.
fn check_authorized(data: &[u8], limits: &Limits) {
    let Next::Request { action, keep_alive, consumed, credential } = next_request(data, limits) else {
        unreachable!("parsed as a request just before")
    };
    let executes = matches!(action, Action::Execute(_));
    let mut session = taskqueuex::auth::Session::new();
    let checked =
        taskqueuex::http::authorize(action, &credential, keep_alive, &crate::connection::fuzz_tokens(), &mut session);
    match &checked.action {
        Action::Respond(bytes) if executes => {
            let status = response::check(bytes, keep_alive && !checked.close, is_head(&data[..consumed]));
            assert!(status == 401 || status == 403, "an authorization refusal is 401 or 403, not {status}");
        }
        _ => assert!(!checked.close, "only a refusal closes"),
    }
}

/// Whether the request (a complete head) is a `HEAD` request.
pub fn is_head(request: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; taskqueuex::http::HEADERS_COUNT_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let _ = parsed.parse(request);
    parsed.method == Some("HEAD")
}
