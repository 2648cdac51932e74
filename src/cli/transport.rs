//! One call of the client subcommands, over either protocol: an [`Op`] is
//! made once, then sent over HTTP (one request per connection, through
//! [`http_client`]) or, with `--binary`, through tqx-client's blocking client
//! on one connection for the whole command. Either way the answer is the HTTP
//! API's JSON body (the binary replies are rendered by the server's own HTTP
//! renderer, `cli::binary`), and a failure carries its [`Exit`] from the
//! server's error code, so output and exit codes cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::binary as render;
use super::exit::{Exit, Failure};
use super::http_client::{self, ServerUrl};

pub(super) const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";
/// How much longer than its `wait_ms` a dequeue waits for the reply.
const DEQUEUE_GRACE: Duration = Duration::from_secs(10);

/// Where and how to reach the server (from `ServerOpt`).
pub(super) struct Target {
    pub server: Option<String>,
    pub binary: bool,
    pub tls_ca: Option<std::path::PathBuf>,
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub token: Option<String>,
}

pub(super) enum Transport {
    Http { url: ServerUrl, tls: Option<Arc<rustls::ClientConfig>>, token: Option<String> },
    Binary { client: tqx_client::blocking::Client, token_sent: bool, addr: String },
}

/// A task to enqueue, as the command line or a JSON Lines file gave it.
/// `payload` is what goes on the wire: one JSON value's text over HTTP
/// (checked by `body`), any bytes over `--binary`.
#[derive(Clone, Debug, Default)]
pub(super) struct TaskBody {
    pub payload: Bytes,
    pub priority: Option<i32>,
    pub group: Option<String>,
    pub delay_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub depends_on: Vec<u64>,
    pub key: Option<String>,
}

/// A queue's settings to change (`PUT /v1/queues/{q}`): the engine's patch,
/// whose `None` leaves a setting as it is and `group_concurrency: Some(None)`
/// removes the limit.
pub(super) use crate::engine::QueueConfigPatch as QueueSettings;

/// One request of the HTTP API / the binary protocol.
pub(super) enum Op {
    Enqueue { queue: String, task: TaskBody },
    EnqueueBatch { queue: String, tasks: Vec<TaskBody> },
    Dequeue { queues: Vec<String>, max: Option<u32>, lease_ms: Option<u64>, wait_ms: Option<u64> },
    Complete { id: u64, lease: u64, result: Option<Bytes> },
    Fail { id: u64, lease: u64, error: String, retry: bool },
    Extend { id: u64, lease: u64, lease_ms: u64 },
    Cancel(u64),
    GetTask(u64),
    ListQueues,
    GetQueue(String),
    ConfigureQueue(String, QueueSettings),
    DeleteQueue { queue: String, force: bool },
    ListTasks { queue: String, state: crate::engine::TaskState, limit: Option<u16>, cursor: Option<String> },
    Retry(u64),
    DeleteTask(u64),
    Stats,
}

impl Transport {
    /// Over HTTP nothing is connected yet (each call connects); with
    /// `--binary` the connection is made here, once.
    pub(super) fn open(target: &Target) -> Result<Transport, Failure> {
        let server =
            target.server.clone().or_else(|| std::env::var("TQX_SERVER").ok().filter(|s| !s.trim().is_empty()));
        if target.binary {
            return open_binary(target, server.unwrap_or_else(|| render::DEFAULT_ADDR.to_string()));
        }
        let server = server.unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let url = ServerUrl::parse(&server).map_err(|error| Failure::usage(error.to_string()))?;
        let tls = match (&target.tls_ca, url.tls) {
            (None, _) => None,
            (Some(_), false) => {
                return Err(Failure::usage(format!("--tls-ca needs an https:// server URL (got {url})")));
            }
            (Some(ca), true) => {
                let identity = target.identity.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
                Some(http_client::tls_config(ca, identity).map_err(|reason| Failure::usage(format!("TLS: {reason}")))?)
            }
        };
        Ok(Transport::Http { url, tls, token: target.token.clone() })
    }

    /// The server, as `tqx top` names it: the URL, or `HOST:PORT` with `--binary`.
    pub(super) fn server_name(&self) -> String {
        match self {
            Transport::Http { url, .. } => url.to_string(),
            Transport::Binary { addr, .. } => addr.clone(),
        }
    }

    /// Sends `op` and returns the reply's JSON body (as the HTTP API sends
    /// it, without a final newline), or the failure to report.
    pub(super) fn call(&self, op: Op) -> Result<Vec<u8>, Failure> {
        match self {
            Transport::Http { url, tls, token } => http_call(url, tls.as_ref(), token.as_deref(), op),
            Transport::Binary { client, token_sent, .. } => {
                binary_call(client, op).map_err(|error| binary_failure(&error, *token_sent))
            }
        }
    }
}

fn open_binary(target: &Target, addr: String) -> Result<Transport, Failure> {
    let addr =
        render::parse_addr(&addr).map_err(|message| Failure::usage(format!("invalid server address: {message}")))?;
    let token_sent = target.token.is_some();
    let tls = match &target.tls_ca {
        None => None,
        Some(ca) => {
            let identity = target.identity.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
            // A PEM file that cannot be used: the command line names it.
            Some(tqx_client::ClientTls::from_pem_files(ca, identity).map_err(|e| Failure::usage(e.to_string()))?)
        }
    };
    // One attempt: a terminal user wants "unreachable" now, not after a backoff.
    let options = tqx_client::ClientOptions {
        token: target.token.clone().map(tqx_client::Token::new),
        connect_timeout_ms: http_client::CONNECT_TIMEOUT.as_millis() as u64,
        request_timeout_ms: http_client::REQUEST_TIMEOUT.as_millis() as u64,
        reconnect_attempts_max: 1,
        tls,
        ..tqx_client::ClientOptions::default()
    };
    match tqx_client::blocking::Client::connect(&addr, options) {
        Ok(client) => Ok(Transport::Binary { client, token_sent, addr }),
        Err(error) => Err(binary_failure(&error, token_sent)),
    }
}

/// What to add to an error a server answered, when it concerns the token.
fn token_hint(code: &str, token_sent: bool) -> &'static str {
    match (code, token_sent) {
        ("unauthenticated", true) => "\nthe server refused the token (check --token or TQX_TOKEN)",
        ("unauthenticated", false) => "\nthe server requires a token: pass --token or set TQX_TOKEN",
        ("forbidden", _) => "\nthe token does not grant this (see the scope named above)",
        _ => "",
    }
}

/// An error body as stderr shows it: indented JSON (as it came if it is not JSON).
fn shown(body: &[u8]) -> String {
    http_client::pretty_json(body).unwrap_or_else(|| String::from_utf8_lossy(body).trim_end().to_string())
}

#[derive(Serialize)]
struct TaskJson<'a> {
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

/// `bytes` (checked JSON over HTTP: `body::body`, the batch reader) as a raw value.
fn raw_json(bytes: &Bytes) -> Result<Box<RawValue>, Failure> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| Failure::usage("a body is not UTF-8 JSON"))?;
    RawValue::from_string(text).map_err(|e| Failure::usage(format!("a body is not JSON: {e}")))
}

fn task_json(task: &TaskBody) -> Result<TaskJson<'_>, Failure> {
    Ok(TaskJson {
        payload: raw_json(&task.payload)?,
        priority: task.priority,
        group: task.group.as_deref(),
        delay_ms: task.delay_ms,
        max_attempts: task.max_attempts,
        depends_on: task.depends_on.iter().map(u64::to_string).collect(),
        key: task.key.as_deref(),
    })
}

fn json_body(value: &impl Serialize) -> Option<Vec<u8>> {
    // Serializing these plain structs and maps cannot fail (string keys).
    Some(serde_json::to_vec(value).unwrap_or_default())
}

fn queue_path(queue: &str) -> String {
    format!("/v1/queues/{}", http_client::encode_path_segment(queue))
}

fn http_call(
    url: &ServerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
    token: Option<&str>,
    op: Op,
) -> Result<Vec<u8>, Failure> {
    use serde_json::json;
    let mut timeout = http_client::REQUEST_TIMEOUT;
    let (method, path, body): (&str, String, Option<Vec<u8>>) = match op {
        Op::Enqueue { queue, task } => ("POST", format!("{}/tasks", queue_path(&queue)), json_body(&task_json(&task)?)),
        Op::EnqueueBatch { queue, tasks } => {
            // A struct, not `json!`: a `Value` would rewrite the payloads' text.
            #[derive(Serialize)]
            struct BatchJson<'a> {
                tasks: Vec<TaskJson<'a>>,
            }
            let tasks = tasks.iter().map(task_json).collect::<Result<Vec<_>, _>>()?;
            ("POST", format!("{}/tasks/batch", queue_path(&queue)), json_body(&BatchJson { tasks }))
        }
        Op::Dequeue { queues, max, lease_ms, wait_ms } => {
            // The server holds the request up to wait_ms; allow for that and then some.
            timeout = Duration::from_millis(wait_ms.unwrap_or(0)).saturating_add(DEQUEUE_GRACE);
            let mut body = serde_json::Map::new();
            body.insert("queues".into(), json!(queues));
            for (name, value) in [("max", max.map(u64::from)), ("lease_ms", lease_ms), ("wait_ms", wait_ms)] {
                if let Some(value) = value {
                    body.insert(name.into(), json!(value));
                }
            }
            ("POST", "/v1/dequeue".to_string(), json_body(&body))
        }
        Op::Complete { id, lease, result } => {
            // The result's exact text (a `Value` would rewrite `1.50` as `1.5`).
            #[derive(Serialize)]
            struct CompleteJson {
                lease: String,
                #[serde(skip_serializing_if = "Option::is_none")]
                result: Option<Box<RawValue>>,
            }
            let result = result.as_ref().map(raw_json).transpose()?;
            ("POST", format!("/v1/tasks/{id}/complete"), json_body(&CompleteJson { lease: lease.to_string(), result }))
        }
        Op::Fail { id, lease, error, retry } => (
            "POST",
            format!("/v1/tasks/{id}/fail"),
            json_body(&json!({"lease": lease.to_string(), "error": error, "retry": retry})),
        ),
        Op::Extend { id, lease, lease_ms } => (
            "POST",
            format!("/v1/tasks/{id}/extend"),
            json_body(&json!({"lease": lease.to_string(), "lease_ms": lease_ms})),
        ),
        Op::Cancel(id) => ("DELETE", format!("/v1/tasks/{id}"), None),
        Op::GetTask(id) => ("GET", format!("/v1/tasks/{id}"), None),
        Op::ListQueues => ("GET", "/v1/queues".to_string(), None),
        Op::GetQueue(queue) => ("GET", queue_path(&queue), None),
        Op::ConfigureQueue(queue, settings) => ("PUT", queue_path(&queue), json_body(&settings_json(&settings))),
        Op::DeleteQueue { queue, force } => {
            let query = if force { "?force=true" } else { "" };
            ("DELETE", format!("{}{query}", queue_path(&queue)), None)
        }
        Op::ListTasks { queue, state, limit, cursor } => {
            let mut path = format!("{}/tasks?state={}", queue_path(&queue), state.as_str());
            if let Some(limit) = limit {
                path.push_str(&format!("&limit={limit}"));
            }
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={}", http_client::encode_path_segment(cursor)));
            }
            ("GET", path, None)
        }
        Op::Retry(id) => ("POST", format!("/v1/tasks/{id}/retry"), None),
        Op::DeleteTask(id) => ("POST", format!("/v1/tasks/{id}/delete"), None),
        Op::Stats => ("GET", "/v1/stats".to_string(), None),
    };
    let response =
        http_client::request_url(url, tls, method, &path, body.as_deref(), token, timeout).map_err(|error| {
            let hint = if matches!(error, http_client::ClientError::BadResponse { .. }) {
                " (is that a TaskQueueX server?)"
            } else {
                ""
            };
            Failure::new(Exit::of_http_error(&error), format!("{error}{hint}"))
        })?;
    let success = response.is_success();
    let retry = response.header("retry-after").map(|s| format!(", retry after {s} s")).unwrap_or_default();
    let status = response.status;
    let mut body = response.body;
    // The reply is one JSON document; its final newline is the server's, not ours.
    while body.last().is_some_and(|b| b.is_ascii_whitespace()) {
        body.pop();
    }
    if success {
        return Ok(body);
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|value| value["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    let named = if code.is_empty() { String::new() } else { format!(" {code}") };
    Err(Failure::new(
        Exit::of_server_code(&code, Some(status)),
        format!("the server answered {status}{named}{retry}:\n{}{}", shown(&body), token_hint(&code, token.is_some())),
    ))
}

fn settings_json(settings: &QueueSettings) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut body = serde_json::Map::new();
    if let Some(discipline) = settings.discipline {
        body.insert("discipline".into(), json!(discipline.as_str()));
    }
    for (name, value) in [
        ("lease_ms", settings.lease_ms),
        ("max_attempts", settings.max_attempts.map(u64::from)),
        ("backoff_ms", settings.backoff_ms),
        ("backoff_max_ms", settings.backoff_max_ms),
        ("retention_ms", settings.retention_ms),
        ("dead_retention_ms", settings.dead_retention_ms),
    ] {
        if let Some(value) = value {
            body.insert(name.into(), json!(value));
        }
    }
    if let Some(limit) = settings.group_concurrency {
        body.insert("group_concurrency".into(), json!(limit));
    }
    body
}

fn task_spec(task: TaskBody) -> tqx_client::TaskSpec {
    tqx_client::TaskSpec {
        payload: task.payload,
        priority: task.priority.unwrap_or(0),
        group: task.group,
        delay_ms: task.delay_ms.unwrap_or(0),
        max_attempts: task.max_attempts,
        depends_on: task.depends_on.into_iter().map(tqx_client::Dep::Task).collect(),
        key: task.key,
    }
}

fn binary_call(client: &tqx_client::blocking::Client, op: Op) -> Result<Vec<u8>, tqx_client::ClientError> {
    let reply = match op {
        Op::Enqueue { queue, task } => client.enqueue(&queue, task_spec(task)).map(render::enqueued)?,
        Op::EnqueueBatch { queue, tasks } => {
            let tasks = tasks.into_iter().map(task_spec).collect();
            client.enqueue_batch(&queue, tasks).map(render::enqueued_batch)?
        }
        Op::Dequeue { queues, max, lease_ms, wait_ms } => {
            // Past u16 the server refuses the count anyway (at most 1000).
            let max = max.map_or(1, |max| u16::try_from(max).unwrap_or(u16::MAX));
            client.dequeue(&queues, max, lease_ms, wait_ms.unwrap_or(0)).map(render::leased)?
        }
        Op::Complete { id, lease, result } => client.complete(id, lease, result).map(|s| render::task_state(id, s))?,
        Op::Fail { id, lease, error, retry } => {
            client.fail(id, lease, &error, retry).map(|s| render::task_state(id, s))?
        }
        Op::Extend { id, lease, lease_ms } => {
            client.extend(id, lease, lease_ms).map(|expires_at_ms| render::extended(id, expires_at_ms))?
        }
        Op::Cancel(id) => client.cancel(id).map(|s| render::task_state(id, s))?,
        Op::GetTask(id) => client.get_task(id).map(render::task)?,
        Op::ListQueues => client.list_queues().map(render::queues)?,
        Op::GetQueue(queue) => client.get_queue(&queue).map(render::queue)?,
        Op::ConfigureQueue(queue, settings) => {
            client.configure_queue(&queue, &crate::binary::wire_patch(&settings)).map(render::queue)?
        }
        Op::DeleteQueue { queue, force } => {
            client.delete_queue(&queue, force)?;
            crate::command::Reply::QueueDeleted { queue }
        }
        Op::ListTasks { queue, state, limit, cursor } => {
            // The binary cursor is the id the HTTP API writes as a string.
            let after = match cursor.as_deref().filter(|c| !c.is_empty()).map(str::parse::<u64>) {
                None => 0,
                Some(Ok(after)) => after,
                Some(Err(_)) => {
                    return Err(tqx_client::ClientError::InvalidRequest {
                        reason: "--cursor takes a next_cursor a listing printed".to_string(),
                    })
                }
            };
            let limit = limit.unwrap_or(crate::limits::LIST_TASKS_COUNT_DEFAULT as u16);
            client
                .list_tasks(&queue, render::wire_state(state), after, limit)
                .map(|(tasks, next_cursor)| render::task_page(tasks, next_cursor))?
        }
        Op::Retry(id) => client.retry_task(id).map(|s| render::task_state(id, s))?,
        Op::DeleteTask(id) => client.delete_task(id).map(|()| render::task_deleted(id))?,
        // The server sends the document `GET /v1/stats` does.
        Op::Stats => {
            let mut body = client.stats()?.to_vec();
            while body.last().is_some_and(|b| b.is_ascii_whitespace()) {
                body.pop();
            }
            return Ok(body);
        }
    };
    let mut body = render::json_body(&reply);
    while body.last().is_some_and(|b| b.is_ascii_whitespace()) {
        body.pop();
    }
    Ok(body)
}

/// A failed `--binary` call, printed like the HTTP path prints one: for an
/// error reply, the code and the HTTP API's error body.
fn binary_failure(error: &tqx_client::ClientError, token_sent: bool) -> Failure {
    use tqx_client::ClientError;
    let exit = Exit::of_binary_error(error);
    let (code, message) = match error {
        ClientError::Server { code, message } => (code.as_str(), message.clone()),
        // Refused before sending; the server would have answered these the same way.
        ClientError::RequestTooLarge { .. } => ("payload_too_large", error.to_string()),
        ClientError::InvalidRequest { reason } => ("invalid_argument", reason.clone()),
        ClientError::Connect { .. }
        | ClientError::ConnectionLost { .. }
        | ClientError::Timeout { .. }
        | ClientError::Protocol { .. }
        | ClientError::Tls { .. } => return Failure::new(exit, error.to_string()),
    };
    let retry = if error.is_retryable() { ", retry later" } else { "" };
    let body = render::error_body(code, &message);
    Failure::new(exit, format!("the server answered {code}{retry}:\n{}{}", shown(&body), token_hint(code, token_sent)))
}
