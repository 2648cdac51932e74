//! The HTTP/1.1 protocol (docs/http-api.md), as pure functions over bytes: no
//! sockets, no threads, no clock. The reactor hands [`take_requests`] a
//! connection's receive buffer and gets back, for each whole request at its
//! front ([`next_request`] reads one), what to do: execute a [`Command`], answer
//! at once, or answer and close. Replies are rendered with
//! [`render_reply`] and friends, appended to the connection's output buffer.
//!
//! Framing rules (what makes a connection safe to keep):
//! - a request's head (request line and headers) is at most `head_bytes_max`
//!   bytes and `headers_count_max` headers, else `431` and close;
//! - a body is only framed by `Content-Length`; `Transfer-Encoding` is refused with
//!   `411` and close; a `Content-Length` over `body_bytes_max` is refused with
//!   `413` and close as soon as the head is read, before any of the body arrives;
//! - so the receive buffer never has to hold more than
//!   `head_bytes_max + body_bytes_max` bytes (plus one read) to make progress.
//!
//! Errors that leave the framing intact (unknown path, wrong method, a body that is
//! not JSON or has a wrong field, a field over its length limit: 413 naming it)
//! are answered with the connection kept.

mod body;
// The CLI's queue table shows the settings in this order.
#[cfg(feature = "server")]
pub(crate) use body::QUEUE_FIELDS;
pub mod openapi;
mod render;
#[cfg(test)]
mod tests;
mod ui;

use std::borrow::Cow;
use std::sync::Arc;

pub use render::{
    render_document, render_health, render_health_recovering, render_health_stalled, render_overloaded,
    render_recovering, render_reply, render_shutting_down, render_too_many_connections, strip_body,
};

use crate::auth::{self, Decision, Grant, PresentedToken, Session, Tokens};
use crate::command::{check_limits, Command, Reply};
use crate::engine::TaskId;

// The bounds are defined, with what they cost, in `src/limits.rs`.
pub use crate::limits::{
    BODY_BYTES_MAX_DEFAULT, HTTP_HEADERS_COUNT_MAX as HEADERS_COUNT_MAX,
    HTTP_HEAD_BYTES_MAX_DEFAULT as HEAD_BYTES_MAX_DEFAULT, WAIT_MS_MAX,
};

/// Bounds on what one request may make the server buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers, in bytes (431 past it).
    pub head_bytes_max: usize,
    /// Headers per request (431 past it); at most [`HEADERS_COUNT_MAX`].
    pub headers_count_max: usize,
    /// Body bytes (413 past it).
    pub body_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes_max: HEAD_BYTES_MAX_DEFAULT,
            headers_count_max: HEADERS_COUNT_MAX,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }
}

/// What the reactor should do with the start of a connection's receive buffer.
// `Request` carries its token inline (`Credential`, up to 128 bytes) so that
// parsing allocates nothing for it; nearly every `Next` a connection queues is
// a `Request`, so the small variants waste little, and boxing would allocate
// once per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Not a whole request yet: read more. (If the buffer already holds more than
    /// `head_bytes_max` without a complete head, that is `Fatal` 431 instead, so the
    /// buffer stays bounded by `head_bytes_max + body_bytes_max`.)
    Incomplete,
    /// A complete request of `consumed` bytes at the start of the buffer, and
    /// the token its `Authorization` header presented.
    Request { action: Action, keep_alive: bool, consumed: usize, credential: Credential },
    /// The bytes cannot be read as a request: send `response` (already rendered,
    /// with `Connection: close`) and close the connection.
    Fatal { response: Vec<u8> },
}

/// What a request's `Authorization` header says (docs/http-api.md#authentication).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credential {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer <token>`: the token. Boxed: inline, its 129
    /// bytes made every parsed request (`Next`) that much larger, copied
    /// several times per request also without tokens (callgrind: +300
    /// instructions per HTTP request at x16, issue 18); a request with a
    /// token pays one allocation instead.
    Bearer(Box<PresentedToken>),
    /// Some other scheme, no token, a token with spaces or over
    /// `limits::TOKEN_BYTES_MAX` bytes, or two `Authorization` headers.
    Malformed,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to a worker; render its `Reply` with [`render_reply`].
    Execute(Command),
    /// `GET /healthz`: the reactor answers (render with [`render_health`]);
    /// `head_only` for `HEAD /healthz` (load balancers' probes), which answers
    /// the same without the body ([`strip_body`]).
    Health { head_only: bool },
    /// `GET /metrics` or `GET /v1/stats`: the reactor executes
    /// `Command::ListQueues` (the engine's part, under the same scope) and
    /// renders it with its own counters in this format (`server/stats.rs`).
    Stats(StatsFormat),
    /// Answer at once with this already-rendered response (404, 405, a 400 that
    /// names the field, ...), carrying `Connection: close` if `keep_alive` is false.
    Respond(Vec<u8>),
    /// `GET` or `HEAD` of `/ui`, `/ui/` or `/ui/{file}`: the dashboard's file
    /// (`ui.rs`), or its 404/405/400, already rendered like `Respond`; needs no
    /// token, and is counted under the operation `ui`.
    Ui(Vec<u8>),
}

/// How the server's statistics are rendered (docs/metrics.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    /// `GET /metrics`: the Prometheus text exposition format 0.0.4.
    Prometheus,
    /// `GET /v1/stats`: JSON (docs/http-api.md).
    Json,
}

/// The reactor's parse step for one HTTP connection, as a pure function (so a
/// fuzz target drives exactly the reactor's code path): takes every complete
/// request off the front of `inbox`, in order, and appends to `out` one
/// [`Next::Request`] or [`Next::Fatal`] each (never [`Next::Incomplete`]).
///
/// Stops after a `Fatal` (the connection is to be closed after its response) or
/// after a request with `keep_alive` false (nothing after it is read), or when
/// what is left is not a whole request; the bytes of every request taken are
/// removed from `inbox`, the rest stays for the next call. Never panics; `inbox`
/// never needs to hold more than `head_bytes_max + body_bytes_max` bytes for
/// this to make progress (past that, the head or the body is refused).
pub fn take_requests(inbox: &mut Vec<u8>, limits: &Limits, out: &mut Vec<Next>) {
    let mut consumed_total = 0;
    loop {
        match next_request(&inbox[consumed_total..], limits) {
            Next::Incomplete => break,
            Next::Fatal { response } => {
                out.push(Next::Fatal { response });
                break;
            }
            Next::Request { action, keep_alive, consumed, credential } => {
                consumed_total += consumed;
                out.push(Next::Request { action, keep_alive, consumed, credential });
                if !keep_alive {
                    break;
                }
            }
        }
    }
    inbox.drain(..consumed_total);
}

/// Reads one request from the start of `buf`. Never panics, whatever the bytes.
pub fn next_request(buf: &[u8], limits: &Limits) -> Next {
    // Only the first head_bytes_max bytes may hold the head: the parser never
    // scans further, and a head that does not end within them is refused.
    let window = &buf[..buf.len().min(limits.head_bytes_max)];
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let headers_count_max = limits.headers_count_max.min(HEADERS_COUNT_MAX);
    let mut request = httparse::Request::new(&mut headers[..headers_count_max]);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) if buf.len() > limits.head_bytes_max => {
            let message = format!("the request line and headers exceed {} bytes", limits.head_bytes_max);
            return fatal(render::HEADERS_TOO_LARGE, "headers_too_large", &message);
        }
        Ok(httparse::Status::Partial) => return Next::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            let message = format!("more than {headers_count_max} headers");
            return fatal(render::HEADERS_TOO_LARGE, "headers_too_large", &message);
        }
        Err(error) => {
            let message = format!("not an HTTP/1.1 request ({error})");
            return fatal(render::BAD_REQUEST, "malformed_request", &message);
        }
    };
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        // A complete parse always sets them; stay total anyway.
        return fatal(render::BAD_REQUEST, "malformed_request", "incomplete request line");
    };

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut credential = Credential::None;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("authorization") {
            credential = match credential {
                Credential::None => bearer(header.value),
                _ => Credential::Malformed,
            };
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = parse_content_length(header.value) else {
                return fatal(render::BAD_REQUEST, "malformed_request", "invalid Content-Length header");
            };
            if content_length.is_some_and(|known| known != length) {
                return fatal(render::BAD_REQUEST, "malformed_request", "conflicting Content-Length headers");
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_keep_alive = true;
                }
            }
        }
    }
    if transfer_encoding {
        return fatal(
            render::LENGTH_REQUIRED,
            "length_required",
            "Transfer-Encoding is not accepted; send the body with a Content-Length header",
        );
    }
    if let Some(length) = content_length {
        if length > limits.body_bytes_max as u64 {
            let message = format!("the body is {length} bytes; the limit is {}", limits.body_bytes_max);
            return fatal(render::PAYLOAD_TOO_LARGE, "payload_too_large", &message);
        }
    }
    let keep_alive = match version {
        0 => connection_keep_alive && !connection_close,
        _ => !connection_close,
    };

    let (path, query) = split_target(target);
    let route = route(method, path);
    if content_length.is_none() && matches!(route, Ok(ref route) if route.needs_body()) {
        return fatal(
            render::LENGTH_REQUIRED,
            "length_required",
            "this request needs a body with a Content-Length header",
        );
    }
    // Bounded by body_bytes_max above, so the conversion and the sum cannot fail;
    // stay total anyway.
    let body_len = usize::try_from(content_length.unwrap_or(0)).unwrap_or(usize::MAX);
    let Some(consumed) = head_len.checked_add(body_len) else {
        return fatal(render::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is too large");
    };
    let Some(body) = buf.get(head_len..consumed) else {
        return Next::Incomplete;
    };

    let head_only = method == "HEAD";
    let action = match route {
        // The dashboard's paths are not under `/v1/`: `route` knows none of them.
        Err(Refusal::NotFound) if ui::owns(path) => Action::Ui(ui::respond(method, path, query, keep_alive)),
        Ok(route) => match act(route, query, body, keep_alive) {
            Ok(action) => action,
            Err(refused) => Action::Respond(refused.render(keep_alive, head_only)),
        },
        Err(refusal) => Action::Respond(refusal.render(method, path, keep_alive, head_only)),
    };
    Next::Request { action, keep_alive, consumed, credential }
}

/// `Bearer <token>` (the scheme in any case, RFC 9110 section 11.1; the
/// token one run of visible ASCII, as RFC 6750's `b64token` and ours are).
fn bearer(value: &[u8]) -> Credential {
    let value = trim_ows(value);
    let Some(space) = value.iter().position(|&b| b == b' ' || b == b'\t') else {
        return Credential::Malformed;
    };
    let (scheme, token) = (&value[..space], trim_ows(&value[space..]));
    if !scheme.eq_ignore_ascii_case(b"bearer") || !token.iter().all(|b| b.is_ascii_graphic()) {
        return Credential::Malformed;
    }
    PresentedToken::new(token).map_or(Credential::Malformed, |token| Credential::Bearer(Box::new(token)))
}

/// What [`authorize`] made of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorized {
    /// The request's action, or a 401/403 response in its place.
    pub action: Action,
    /// For a command naming tasks by id under a token limited to some queues:
    /// the grant to check each task's queue against before it executes
    /// (`auth::check_task_queues`).
    pub grant: Option<Arc<Grant>>,
    /// The connection is to be closed after this response: it failed
    /// authentication `limits::AUTH_FAILURES_PER_CONNECTION_MAX` times.
    pub close: bool,
}

/// The reactor's authentication and authorization step for one parsed
/// request, when the server has tokens (`tqx serve --tokens`; without, the
/// reactor skips it). Pure, like the parse step.
///
/// A command needs a token the table holds, or, without `Authorization`, a
/// client certificate the table holds (mutual TLS: `Session::certificate_grant`)
/// (else `401 unauthenticated`, with `WWW-Authenticate: Bearer`, counted
/// against the connection: [`Session::fail`]) whose grant allows it (else `403 forbidden` naming the
/// scope and queue). `GET /healthz` needs none: load balancers probe it without
/// credentials, and it shows nothing but liveness; nor do the dashboard's
/// files (`Action::Ui`), the same for every server. Responses the parse step
/// already made (404, 405, a 400 naming a field) go out as they are: they
/// execute nothing and show nothing of the engine. `GET /metrics` and `GET
/// /v1/stats` need what listing the queues needs (`admin` on every queue):
/// they show every queue's counts.
pub fn authorize(
    action: Action,
    credential: &Credential,
    keep_alive: bool,
    tokens: &Tokens,
    session: &mut Session,
) -> Authorized {
    let (command, stats) = match action {
        Action::Execute(command) => (command, None),
        Action::Stats(format) => (Command::ListQueues, Some(format)),
        other => return Authorized { action: other, grant: None, close: false },
    };
    let authenticated = match credential {
        Credential::Bearer(presented) => session.authenticate_presented(tokens, presented).ok_or(auth::REFUSED),
        // Without a token: the grant of the connection's client certificate
        // (mutual TLS), if the token file has a line for it.
        Credential::None => session.certificate_grant(tokens).ok_or(auth::NO_TOKEN_HTTP),
        Credential::Malformed => Err(auth::MALFORMED_HTTP),
    };
    let reason = match authenticated {
        Ok(grant) => {
            let (action, grant) = match auth::authorize(grant, &command) {
                Ok(Decision::Allowed) => match stats {
                    Some(format) => (Action::Stats(format), None),
                    None => (Action::Execute(command), None),
                },
                Ok(Decision::CheckTaskQueues) => (Action::Execute(command), Some(grant.clone())),
                Err(error) => (Action::Respond(error_response(error, keep_alive)), None),
            };
            return Authorized { action, grant, close: false };
        }
        Err(reason) => reason,
    };
    let close = session.fail();
    let response = error_response(Session::failure_error(reason, close), keep_alive && !close);
    Authorized { action: Action::Respond(response), grant: None, close }
}

fn error_response(error: crate::engine::EngineError, keep_alive: bool) -> Vec<u8> {
    let mut response = Vec::with_capacity(256);
    render_reply(&Reply::Error(error), keep_alive, &mut response);
    response
}

fn fatal(status: render::Status, code: &str, message: &str) -> Next {
    let mut response = Vec::with_capacity(256);
    render::error(&mut response, status, code, message, false, "");
    Next::Fatal { response }
}

/// `Content-Length: 1*DIGIT`, also as a list of equal values (`5, 5`), which
/// RFC 9110 lets a recipient accept. A number past u64::MAX reads as u64::MAX (it
/// is then refused as too large, not as malformed). Anything else (a sign, a space
/// inside, differing values) is refused.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for item in value.split(|&b| b == b',') {
        let item = trim_ows(item);
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let item = parse_decimal_u64(item).unwrap_or(u64::MAX);
        if length.is_some_and(|known| known != item) {
            return None;
        }
        length = Some(item);
    }
    length
}

/// 1 or more ASCII digits, no sign, no whitespace, at most u64::MAX.
pub(crate) fn parse_decimal_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Splits a request target into path and query. The absolute form
/// (`http://host/path`), which servers must accept, is reduced to its path; the
/// asterisk and authority forms yield a path no route matches.
fn split_target(target: &str) -> (&str, &str) {
    let mut path = target;
    for scheme in ["http://", "https://"] {
        if path.len() >= scheme.len() && path.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) {
            let rest = &path[scheme.len()..];
            path = rest.find('/').map_or("/", |slash| &rest[slash..]);
            break;
        }
    }
    match path.split_once('?') {
        Some((path, query)) => (path, query),
        None => (path, ""),
    }
}

/// The endpoints of docs/http-api.md, with the raw path segments they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Health { head_only: bool },
    OpenApi,
    Metrics,
    Stats,
    ListQueues,
    ConfigureQueue(&'a str),
    GetQueue(&'a str),
    DeleteQueue(&'a str),
    Enqueue(&'a str),
    EnqueueBatch(&'a str),
    Dequeue,
    GetTask(&'a str),
    Cancel(&'a str),
    Complete(&'a str),
    Fail(&'a str),
    Extend(&'a str),
    ListTasks(&'a str),
    RetryTask(&'a str),
    DeleteTask(&'a str),
}

impl Route<'_> {
    /// Requests whose body carries required fields: without `Content-Length` they
    /// are refused with 411. (`PUT /v1/queues/{queue}` may have no body.)
    fn needs_body(&self) -> bool {
        matches!(
            self,
            Route::Enqueue(_)
                | Route::EnqueueBatch(_)
                | Route::Dequeue
                | Route::Complete(_)
                | Route::Fail(_)
                | Route::Extend(_)
        )
    }
}

/// Why a request matched no endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    NotFound,
    /// The path exists; these are its methods (the `Allow` header).
    MethodNotAllowed(&'static str),
}

impl Refusal {
    fn render(self, method: &str, path: &str, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut response = Vec::with_capacity(256);
        match self {
            Refusal::NotFound => {
                let message = format!("no such path: {}", truncated(path, 256));
                render::error_response(
                    &mut response,
                    render::NOT_FOUND,
                    "not_found",
                    &message,
                    keep_alive,
                    "",
                    head_only,
                );
            }
            Refusal::MethodNotAllowed(allow) => {
                let message = format!("method {} is not allowed here; allowed: {allow}", truncated(method, 32));
                let header = format!("Allow: {allow}\r\n");
                render::error_response(
                    &mut response,
                    render::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &message,
                    keep_alive,
                    &header,
                    head_only,
                );
            }
        }
        response
    }
}

/// At most `bytes_max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncated(text: &str, bytes_max: usize) -> Cow<'_, str> {
    if text.len() <= bytes_max {
        return Cow::Borrowed(text);
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", &text[..end]))
}

const ALLOW_GET: &str = "GET";
const ALLOW_HEALTH: &str = "GET, HEAD";
const ALLOW_POST: &str = "POST";
const ALLOW_QUEUE: &str = "GET, PUT, DELETE";
const ALLOW_TASK: &str = "GET, DELETE";
const ALLOW_TASKS: &str = "GET, POST";

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, Refusal> {
    use Refusal::{MethodNotAllowed, NotFound};
    if path == "/healthz" {
        return match method {
            "GET" => Ok(Route::Health { head_only: false }),
            "HEAD" => Ok(Route::Health { head_only: true }),
            _ => Err(MethodNotAllowed(ALLOW_HEALTH)),
        };
    }
    if path == "/metrics" {
        return if method == "GET" { Ok(Route::Metrics) } else { Err(MethodNotAllowed(ALLOW_GET)) };
    }
    if path == openapi::PATH {
        return if method == "GET" { Ok(Route::OpenApi) } else { Err(MethodNotAllowed(ALLOW_GET)) };
    }
    let rest = path.strip_prefix("/v1/").ok_or(NotFound)?;
    let mut segments = [""; 4];
    let mut count = 0;
    for segment in rest.split('/') {
        // Empty segments (`//`, a trailing slash) match nothing.
        if count == segments.len() || segment.is_empty() {
            return Err(NotFound);
        }
        segments[count] = segment;
        count += 1;
    }
    match (&segments[..count], method) {
        (["stats"], "GET") => Ok(Route::Stats),
        (["stats"], _) => Err(MethodNotAllowed(ALLOW_GET)),
        (["queues"], "GET") => Ok(Route::ListQueues),
        (["queues"], _) => Err(MethodNotAllowed(ALLOW_GET)),
        (["queues", queue], "GET") => Ok(Route::GetQueue(queue)),
        (["queues", queue], "PUT") => Ok(Route::ConfigureQueue(queue)),
        (["queues", queue], "DELETE") => Ok(Route::DeleteQueue(queue)),
        (["queues", _], _) => Err(MethodNotAllowed(ALLOW_QUEUE)),
        (["queues", queue, "tasks"], "POST") => Ok(Route::Enqueue(queue)),
        (["queues", queue, "tasks"], "GET") => Ok(Route::ListTasks(queue)),
        (["queues", _, "tasks"], _) => Err(MethodNotAllowed(ALLOW_TASKS)),
        (["queues", queue, "tasks", "batch"], "POST") => Ok(Route::EnqueueBatch(queue)),
        (["queues", _, "tasks", "batch"], _) => Err(MethodNotAllowed(ALLOW_POST)),
        (["dequeue"], "POST") => Ok(Route::Dequeue),
        (["dequeue"], _) => Err(MethodNotAllowed(ALLOW_POST)),
        (["tasks", id], "GET") => Ok(Route::GetTask(id)),
        (["tasks", id], "DELETE") => Ok(Route::Cancel(id)),
        (["tasks", _], _) => Err(MethodNotAllowed(ALLOW_TASK)),
        (["tasks", id, "complete"], "POST") => Ok(Route::Complete(id)),
        (["tasks", id, "fail"], "POST") => Ok(Route::Fail(id)),
        (["tasks", id, "extend"], "POST") => Ok(Route::Extend(id)),
        (["tasks", id, "retry"], "POST") => Ok(Route::RetryTask(id)),
        (["tasks", id, "delete"], "POST") => Ok(Route::DeleteTask(id)),
        (["tasks", _, "complete" | "fail" | "extend" | "retry" | "delete"], _) => Err(MethodNotAllowed(ALLOW_POST)),
        _ => Err(NotFound),
    }
}

/// Turns a routed request into what the reactor does with it: a command
/// only once it passed `command::check_limits` (every length and count, so
/// nothing the log cannot hold is executed or logged). Every endpoint refuses
/// a query parameter it does not take (400 naming it), so a misspelt one is
/// not silently ignored.
fn act(route: Route<'_>, query: &str, body: &[u8], keep_alive: bool) -> Result<Action, body::Refused> {
    let command = match route {
        Route::ListTasks(queue) => list_tasks(&path_queue(queue)?, query)?,
        Route::DeleteQueue(queue) => {
            Command::DeleteQueue { queue: path_queue(queue)?.into_owned(), force: force(query)? }
        }
        route => {
            parameters(query, &[], |_, _| Ok(()))?;
            match route {
                Route::Health { head_only } => return Ok(Action::Health { head_only }),
                Route::OpenApi => return Ok(Action::Respond(openapi::response(keep_alive))),
                Route::Metrics => return Ok(Action::Stats(StatsFormat::Prometheus)),
                Route::Stats => return Ok(Action::Stats(StatsFormat::Json)),
                Route::ListQueues => Command::ListQueues,
                Route::GetQueue(queue) => Command::GetQueue { queue: path_queue(queue)?.into_owned() },
                Route::ConfigureQueue(queue) => body::configure_queue(&path_queue(queue)?, body)?,
                Route::Enqueue(queue) => body::enqueue(&path_queue(queue)?, body)?,
                Route::EnqueueBatch(queue) => body::enqueue_batch(&path_queue(queue)?, body)?,
                Route::Dequeue => body::dequeue(body)?,
                Route::GetTask(id) => Command::GetTask { id: path_id(id)? },
                Route::Cancel(id) => Command::Cancel { id: path_id(id)? },
                Route::Complete(id) => body::complete(path_id(id)?, body)?,
                Route::Fail(id) => body::fail(path_id(id)?, body)?,
                Route::Extend(id) => body::extend(path_id(id)?, body)?,
                Route::RetryTask(id) => Command::RetryTask { id: path_id(id)? },
                Route::DeleteTask(id) => Command::DeleteTask { id: path_id(id)? },
                Route::ListTasks(_) | Route::DeleteQueue(_) => unreachable!("matched above"),
            }
        }
    };
    check_limits(&command).map_err(body::Refused::Invalid)?;
    Ok(Action::Execute(command))
}

/// Calls `each` with every `name=value` pair of `query` (a pair without `=`
/// has an empty value; empty pairs, as in `?&`, are skipped), refusing a name
/// not in `known` with 400 `invalid_argument` naming it and the known ones.
/// Values are taken as they are: every value an endpoint takes is a number, a
/// word or an id, which need no percent-decoding.
fn parameters<'q>(
    query: &'q str,
    known: &[&str],
    mut each: impl FnMut(&'q str, &'q str) -> Result<(), body::Refused>,
) -> Result<(), body::Refused> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&name) {
            let name = truncated(name, 64);
            let expected = match known {
                [] => "this endpoint takes none".to_owned(),
                known => format!("expected {}", known.join(", ")),
            };
            return Err(body::Refused::invalid("query", format!("unknown parameter {name:?}; {expected}")));
        }
        each(name, value)?;
    }
    Ok(())
}

/// A task id in a path: decimal digits of a u64 (else 400 naming `id`),
/// percent-encoded or not.
fn path_id(segment: &str) -> Result<TaskId, body::Refused> {
    parse_decimal_u64(path_segment("id", segment)?.as_bytes())
        .ok_or_else(|| body::Refused::invalid("id", "expected a task id: a decimal integer from 0 to 2^64-1"))
}

/// A queue name in a path, percent-encoded or not (checked as a name later,
/// by `check_limits` and the engine).
fn path_queue(segment: &str) -> Result<Cow<'_, str>, body::Refused> {
    path_segment("queue", segment)
}

/// A path segment with its percent-encoding undone (RFC 3986 section 2.1):
/// `:`, valid in a queue name, is reserved in a URI, so clients built from
/// docs/openapi.yaml and a browser's `encodeURIComponent` send it as `%3A`.
/// A `%` not followed by two hex digits, or bytes that are not UTF-8 once
/// decoded, are refused naming `field`.
fn path_segment<'a>(field: &'static str, segment: &'a str) -> Result<Cow<'a, str>, body::Refused> {
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut decoded = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let [first, tail @ ..] = rest {
        rest = tail;
        if *first != b'%' {
            decoded.push(*first);
            continue;
        }
        let [high, low, tail @ ..] = rest else {
            return Err(body::Refused::invalid(field, "a % must be followed by two hex digits"));
        };
        let (Some(high), Some(low)) = (hex(*high), hex(*low)) else {
            return Err(body::Refused::invalid(field, "a % must be followed by two hex digits"));
        };
        decoded.push((high * 16 + low) as u8);
        rest = tail;
    }
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| body::Refused::invalid(field, "not UTF-8 once percent-decoded"))
}

/// `GET /v1/queues/{queue}/tasks?state=S&limit=N&cursor=C`: `state` is
/// required, `limit` defaults to `LIST_TASKS_COUNT_DEFAULT`, `cursor` is a
/// previous page's `next_cursor` (absent or empty: from the start).
fn list_tasks(queue: &str, query: &str) -> Result<Command, body::Refused> {
    use crate::engine::TaskState;
    use crate::limits::{LIST_TASKS_COUNT_DEFAULT, LIST_TASKS_COUNT_MAX};
    let (mut state, mut limit, mut after) = (None, LIST_TASKS_COUNT_DEFAULT, 0);
    parameters(query, &["state", "limit", "cursor"], |name, value| {
        match name {
            "state" => {
                state = Some(TaskState::parse(value).ok_or_else(|| {
                    body::Refused::invalid(
                        "state",
                        "expected one of waiting, delayed, ready, leased, completed, dead, cancelled",
                    )
                })?)
            }
            "limit" => {
                limit = parse_decimal_u64(value.as_bytes())
                    .filter(|n| (1..=LIST_TASKS_COUNT_MAX as u64).contains(n))
                    .ok_or_else(|| {
                        body::Refused::invalid("limit", format!("must be between 1 and {LIST_TASKS_COUNT_MAX}"))
                    })? as usize
            }
            _ if value.is_empty() => after = 0,
            _ => {
                after = parse_decimal_u64(value.as_bytes())
                    .ok_or_else(|| body::Refused::invalid("cursor", "expected a next_cursor this endpoint returned"))?
            }
        }
        Ok(())
    })?;
    let state = state.ok_or_else(|| body::Refused::invalid("state", "required: which state to list"))?;
    Ok(Command::ListTasks { queue: queue.to_owned(), state, after, limit })
}

/// `force=true|false` in the query of `DELETE /v1/queues/{queue}`; the last
/// `force` counts.
fn force(query: &str) -> Result<bool, body::Refused> {
    let mut force = false;
    parameters(query, &["force"], |_, value| {
        force = match value {
            "true" => true,
            "false" => false,
            _ => return Err(body::Refused::invalid("force", "expected true or false")),
        };
        Ok(())
    })?;
    Ok(force)
}

#[cfg(test)]
mod take_requests_tests {
    use super::*;

    fn request(path: &str, extra: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn takes_every_whole_request_and_leaves_a_partial_one() {
        let mut inbox = [request("/v1/queues", ""), request("/healthz", ""), b"GET /v1/qu".to_vec()].concat();
        let mut out = Vec::new();
        take_requests(&mut inbox, &Limits::default(), &mut out);
        assert!(
            matches!(
                out[..],
                [
                    Next::Request { action: Action::Execute(Command::ListQueues), keep_alive: true, .. },
                    Next::Request { action: Action::Health { head_only: false }, .. }
                ]
            ),
            "{out:?}"
        );
        assert_eq!(inbox, b"GET /v1/qu");
        out.clear();
        take_requests(&mut inbox, &Limits::default(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn stops_after_connection_close_and_after_a_fatal_error() {
        let after = request("/healthz", "");
        let mut inbox = [request("/healthz", "Connection: close\r\n"), after.clone()].concat();
        let mut out = Vec::new();
        take_requests(&mut inbox, &Limits::default(), &mut out);
        assert!(matches!(out[..], [Next::Request { keep_alive: false, .. }]), "{out:?}");
        assert_eq!(inbox, after, "nothing after the last request is read");

        let mut inbox = [b"NOT HTTP\r\n\r\n".to_vec(), after].concat();
        out.clear();
        take_requests(&mut inbox, &Limits::default(), &mut out);
        assert!(matches!(out[..], [Next::Fatal { .. }]), "{out:?}");
    }
}
