//! The client subcommands (`enqueue`, `dequeue`, `complete`, ...): each makes
//! one call to a running server, over its HTTP/JSON API (docs/http-api.md)
//! through [`http_client`], or with `--binary` over the binary protocol through
//! tqx-client (replies rendered by [`super::binary`]), and prints its JSON reply.
//! Exit codes: 0 on success, 1 when the server answers an error, 2 when it
//! cannot be reached or answers something unreadable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::value::RawValue;

use super::http_client::{self, ClientError, ServerUrl};

const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";
/// How much longer than its `wait_ms` a dequeue waits for the reply.
const DEQUEUE_GRACE: Duration = Duration::from_secs(10);

// Each variant's doc comment is its line in `tqx --help` (the enum is
// flattened into the top-level command list, between `serve` and `demo`).
#[derive(Subcommand)]
pub(super) enum ClientCommand {
    /// Add a task to a queue (created with defaults if it does not exist).
    Enqueue(EnqueueArgs),
    /// Lease tasks from one or more queues, taken in the order given.
    Dequeue(DequeueArgs),
    /// Complete a leased task.
    Complete(CompleteArgs),
    /// Fail a leased task: it is retried with backoff, or dead once out of attempts.
    Fail(FailArgs),
    /// Extend a task's lease.
    Extend(ExtendArgs),
    /// Cancel a task (and, transitively, the tasks that depend on it).
    Cancel(TaskArgs),
    /// Show a task.
    Task(TaskArgs),
    /// List the queues with their settings and counts.
    Queues(ServerOpt),
    /// Show one queue's settings and counts.
    Queue(QueueArgs),
    /// List a queue's tasks in one state (dead by default), one page in id order; pass the reply's
    /// next_cursor to --cursor for the next page.
    Tasks(TasksArgs),
    /// Retry a dead task: back to ready with fresh attempts.
    Retry(TaskArgs),
    /// Delete a finished task (dead, completed or cancelled) now, before its retention ends.
    Delete(TaskArgs),
}

#[derive(Args, Debug)]
pub(super) struct ServerOpt {
    /// Server URL [env: TQX_SERVER] [default: http://127.0.0.1:7700]; with --binary, HOST:PORT
    /// [default: 127.0.0.1:7701].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Use the binary protocol (`tqx serve --binary`) instead of HTTP; the output is the same JSON.
    #[arg(long)]
    binary: bool,
    /// TLS: trust the CA certificates in this PEM file for the server's certificate (a server started
    /// with --tls-cert). Over HTTP the server URL is then https://; with --binary it turns TLS on.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: present this client certificate (PEM; with --tls-key and --tls-ca).
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// API token for a server with `--tokens` [env: TQX_TOKEN] (prefer the variable: arguments are
    /// visible to other users in the process list).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl ServerOpt {
    /// The client certificate and key for mutual TLS, if given.
    fn identity(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// `--token`, else `TQX_TOKEN` (when set and not blank).
    fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| std::env::var("TQX_TOKEN").ok().filter(|s| !s.trim().is_empty()))
    }
}

/// What to add to an error a server answered, when it concerns the token.
fn token_hint(code: &str, token_sent: bool) -> &'static str {
    match (code, token_sent) {
        ("unauthenticated", true) => "the server refused the token (check --token or TQX_TOKEN)",
        ("unauthenticated", false) => "the server requires a token: pass --token or set TQX_TOKEN",
        ("forbidden", _) => "the token does not grant this (see the scope named above)",
        _ => "",
    }
}

#[derive(Args, Debug)]
pub(super) struct EnqueueArgs {
    /// Queue name (A-Z a-z 0-9 _ - . :).
    queue: String,
    /// The task's payload as JSON, e.g. '{"to":"a@b.c"}'; text that is not JSON is sent as a JSON string.
    #[arg(allow_negative_numbers = true)]
    payload: String,
    /// Priority (higher first, in `priority` queues).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Group key (for round-robin queues and group concurrency limits).
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// Hold the task this long before it is ready.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<u64>,
    /// Attempts before the task is dead (default: the queue's).
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Wait for this task to complete first (repeat, or separate ids with commas).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    depends_on: Vec<u64>,
    /// Idempotency key: enqueueing the same key again returns the original task.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct DequeueArgs {
    /// Queues to take from, in order (1 to 64).
    #[arg(required = true, value_name = "QUEUE")]
    queues: Vec<String>,
    /// Most tasks to lease (1 to 1000; server default 1).
    #[arg(long, value_name = "N")]
    max: Option<u32>,
    /// Lease length (default: each queue's).
    #[arg(long, value_name = "MS")]
    lease_ms: Option<u64>,
    /// Wait up to this long for a task when none is ready (at most 60000).
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct CompleteArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// Result as JSON; text that is not JSON is sent as a JSON string.
    #[arg(long, value_name = "JSON", allow_negative_numbers = true)]
    result: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct FailArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// Error message, kept with the task.
    error: String,
    /// Do not retry: the task is dead at once.
    #[arg(long)]
    no_retry: bool,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct ExtendArgs {
    /// Task id.
    id: u64,
    /// Lease token from the dequeue.
    lease: u64,
    /// New lease length, counted from now.
    lease_ms: u64,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct TaskArgs {
    /// Task id.
    id: u64,
    #[command(flatten)]
    server: ServerOpt,
}

#[derive(Args, Debug)]
pub(super) struct TasksArgs {
    /// Queue name.
    queue: String,
    /// Which tasks: waiting, delayed, ready, leased, completed, dead or cancelled.
    #[arg(long, value_name = "STATE", default_value = "dead", value_parser = parse_state)]
    state: crate::engine::TaskState,
    /// Most tasks on the page (1 to 1000; server default 100).
    #[arg(long, value_name = "N")]
    limit: Option<u16>,
    /// Where to continue: the next_cursor of the previous page.
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,
    #[command(flatten)]
    server: ServerOpt,
}

fn parse_state(text: &str) -> Result<crate::engine::TaskState, String> {
    crate::engine::TaskState::parse(text)
        .ok_or_else(|| "expected waiting, delayed, ready, leased, completed, dead or cancelled".to_string())
}

#[derive(Args, Debug)]
pub(super) struct QueueArgs {
    /// Queue name.
    name: String,
    #[command(flatten)]
    server: ServerOpt,
}

impl ClientCommand {
    /// Makes the call over the protocol `--binary` chooses and prints the reply.
    pub(super) fn run(self) -> ExitCode {
        if self.server().binary {
            return binary_call(self);
        }
        self.http_call().run()
    }

    /// The subcommand's name, as messages print it (`tqx NAME: ...`).
    fn name(&self) -> &'static str {
        match self {
            ClientCommand::Enqueue(_) => "enqueue",
            ClientCommand::Dequeue(_) => "dequeue",
            ClientCommand::Complete(_) => "complete",
            ClientCommand::Fail(_) => "fail",
            ClientCommand::Extend(_) => "extend",
            ClientCommand::Cancel(_) => "cancel",
            ClientCommand::Task(_) => "task",
            ClientCommand::Queues(_) => "queues",
            ClientCommand::Queue(_) => "queue",
            ClientCommand::Tasks(_) => "tasks",
            ClientCommand::Retry(_) => "retry",
            ClientCommand::Delete(_) => "delete",
        }
    }

    /// The subcommand's `--server` and `--binary` options.
    fn server(&self) -> &ServerOpt {
        match self {
            ClientCommand::Enqueue(a) => &a.server,
            ClientCommand::Dequeue(a) => &a.server,
            ClientCommand::Complete(a) => &a.server,
            ClientCommand::Fail(a) => &a.server,
            ClientCommand::Extend(a) => &a.server,
            ClientCommand::Cancel(a) | ClientCommand::Task(a) | ClientCommand::Retry(a) | ClientCommand::Delete(a) => {
                &a.server
            }
            ClientCommand::Tasks(a) => &a.server,
            ClientCommand::Queues(server) => server,
            ClientCommand::Queue(a) => &a.server,
        }
    }

    /// The HTTP request the subcommand makes.
    fn http_call(self) -> Call {
        match self {
            ClientCommand::Enqueue(a) => enqueue_call(a),
            ClientCommand::Dequeue(a) => dequeue_call(a),
            ClientCommand::Complete(a) => {
                let body = CompleteBody { lease: a.lease.to_string(), result: a.result.as_deref().map(json_or_string) };
                task_call("complete", a.server, "POST", a.id, "/complete", to_body(&body))
            }
            ClientCommand::Fail(a) => {
                let body = FailBody { lease: a.lease.to_string(), error: a.error, retry: !a.no_retry };
                task_call("fail", a.server, "POST", a.id, "/fail", to_body(&body))
            }
            ClientCommand::Extend(a) => {
                let body = ExtendBody { lease: a.lease.to_string(), lease_ms: a.lease_ms };
                task_call("extend", a.server, "POST", a.id, "/extend", to_body(&body))
            }
            ClientCommand::Cancel(a) => task_call("cancel", a.server, "DELETE", a.id, "", None),
            ClientCommand::Task(a) => task_call("task", a.server, "GET", a.id, "", None),
            ClientCommand::Queues(s) => Call::get("queues", s, "/v1/queues".to_string()),
            ClientCommand::Queue(a) => {
                Call::get("queue", a.server, format!("/v1/queues/{}", http_client::encode_path_segment(&a.name)))
            }
            ClientCommand::Tasks(a) => {
                let mut path = format!(
                    "/v1/queues/{}/tasks?state={}",
                    http_client::encode_path_segment(&a.queue),
                    a.state.as_str()
                );
                if let Some(limit) = a.limit {
                    path.push_str(&format!("&limit={limit}"));
                }
                if let Some(cursor) = &a.cursor {
                    path.push_str(&format!("&cursor={}", http_client::encode_path_segment(cursor)));
                }
                Call::get("tasks", a.server, path)
            }
            ClientCommand::Retry(a) => task_call("retry", a.server, "POST", a.id, "/retry", None),
            ClientCommand::Delete(a) => task_call("delete", a.server, "POST", a.id, "/delete", None),
        }
    }
}

/// One HTTP call a client subcommand makes.
struct Call {
    name: &'static str,
    server: ServerOpt,
    method: &'static str,
    path: String,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

#[derive(Serialize)]
struct EnqueueBody {
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Serialize)]
struct DequeueBody {
    queues: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
}

#[derive(Serialize)]
struct CompleteBody {
    lease: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct FailBody {
    lease: String,
    error: String,
    retry: bool,
}

#[derive(Serialize)]
struct ExtendBody {
    lease: String,
    lease_ms: u64,
}

/// `text` as a JSON value, kept byte for byte when it is JSON, else as a JSON string.
fn json_or_string(text: &str) -> Box<RawValue> {
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(raw) => raw,
        Err(_) => {
            let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string());
            // A serialized string is valid JSON; the default (`null`) is unreachable.
            RawValue::from_string(quoted).unwrap_or_default()
        }
    }
}

fn to_body(value: &impl Serialize) -> Option<Vec<u8>> {
    // Serializing these plain structs cannot fail (string keys, no maps).
    Some(serde_json::to_vec(value).unwrap_or_default())
}

fn enqueue_call(a: EnqueueArgs) -> Call {
    let body = EnqueueBody {
        payload: json_or_string(&a.payload),
        priority: a.priority,
        group: a.group,
        delay_ms: a.delay_ms,
        max_attempts: a.max_attempts,
        depends_on: a.depends_on.iter().map(u64::to_string).collect(),
        key: a.key,
    };
    Call {
        name: "enqueue",
        server: a.server,
        method: "POST",
        path: format!("/v1/queues/{}/tasks", http_client::encode_path_segment(&a.queue)),
        body: to_body(&body),
        timeout: http_client::REQUEST_TIMEOUT,
    }
}

fn dequeue_call(a: DequeueArgs) -> Call {
    // The server holds the request up to wait_ms; allow for that and then some.
    let timeout = Duration::from_millis(a.wait_ms.unwrap_or(0)).saturating_add(DEQUEUE_GRACE);
    let body = DequeueBody { queues: a.queues, max: a.max, lease_ms: a.lease_ms, wait_ms: a.wait_ms };
    Call {
        name: "dequeue",
        server: a.server,
        method: "POST",
        path: "/v1/dequeue".to_string(),
        body: to_body(&body),
        timeout,
    }
}

fn task_call(
    name: &'static str,
    server: ServerOpt,
    method: &'static str,
    id: u64,
    action: &str,
    body: Option<Vec<u8>>,
) -> Call {
    Call { name, server, method, path: format!("/v1/tasks/{id}{action}"), body, timeout: http_client::REQUEST_TIMEOUT }
}

impl Call {
    fn get(name: &'static str, server: ServerOpt, path: String) -> Call {
        Call { name, server, method: "GET", path, body: None, timeout: http_client::REQUEST_TIMEOUT }
    }

    /// Sends the request and prints the reply: the JSON body on stdout and exit 0
    /// for 2xx; the body on stderr and exit 1 for an error reply; a message and
    /// exit 2 when the server cannot be reached or does not speak HTTP.
    fn run(self) -> ExitCode {
        let name = self.name;
        let server = self
            .server
            .server
            .clone()
            .or_else(|| std::env::var("TQX_SERVER").ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let url = match ServerUrl::parse(&server) {
            Ok(url) => url,
            Err(error) => {
                eprintln!("tqx {name}: {error}");
                return ExitCode::from(2);
            }
        };
        let token = self.server.token();
        let tls = match (&self.server.tls_ca, url.tls) {
            (None, _) => None,
            (Some(_), false) => {
                eprintln!("tqx {name}: --tls-ca needs an https:// server URL (got {url})");
                return ExitCode::from(2);
            }
            (Some(ca), true) => match http_client::tls_config(ca, self.server.identity()) {
                Ok(config) => Some(config),
                Err(reason) => {
                    eprintln!("tqx {name}: TLS: {reason}");
                    return ExitCode::from(2);
                }
            },
        };
        let response = match http_client::request_url(
            &url,
            tls.as_ref(),
            self.method,
            &self.path,
            self.body.as_deref(),
            token.as_deref(),
            self.timeout,
        ) {
            Ok(response) => response,
            Err(error) => {
                let hint = if matches!(error, ClientError::BadResponse { .. }) {
                    " (is that a TaskQueueX server?)"
                } else {
                    ""
                };
                eprintln!("tqx {name}: {error}{hint}");
                return ExitCode::from(2);
            }
        };
        let body = http_client::pretty_json(&response.body)
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim_end().to_string());
        if response.is_success() {
            println!("{body}");
            ExitCode::SUCCESS
        } else {
            let retry = response.header("retry-after").map(|s| format!(", retry after {s} s")).unwrap_or_default();
            eprintln!("tqx {name}: the server answered {}{retry}:", response.status);
            eprintln!("{body}");
            let code = match response.status {
                401 => "unauthenticated",
                403 => "forbidden",
                _ => "",
            };
            let hint = token_hint(code, token.is_some());
            if !hint.is_empty() {
                eprintln!("tqx {name}: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A client subcommand with `--binary`: the same call through tqx-client's
/// blocking API, and the same output and exit codes as over HTTP (the reply is
/// rendered as the HTTP API's JSON body; see `cli::binary`). Payloads and
/// results are sent as the same bytes the HTTP path sends (`json_or_string`).
fn binary_call(command: ClientCommand) -> ExitCode {
    let name = command.name();
    let addr = command
        .server()
        .server
        .clone()
        .or_else(|| std::env::var("TQX_SERVER").ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| super::binary::DEFAULT_ADDR.to_string());
    let addr = match super::binary::parse_addr(&addr) {
        Ok(addr) => addr,
        Err(message) => {
            eprintln!("tqx {name}: invalid server address: {message}");
            return ExitCode::from(2);
        }
    };
    let server = command.server();
    let token = server.token();
    let token_sent = token.is_some();
    let tls = match &server.tls_ca {
        None => None,
        Some(ca) => match tqx_client::ClientTls::from_pem_files(ca, server.identity()) {
            Ok(tls) => Some(tls),
            Err(error) => return binary_failure(name, &error, token_sent),
        },
    };
    // One attempt: a terminal user wants "unreachable" now, not after a backoff.
    let options = tqx_client::ClientOptions {
        token: token.clone().map(tqx_client::Token::new),
        connect_timeout_ms: http_client::CONNECT_TIMEOUT.as_millis() as u64,
        request_timeout_ms: http_client::REQUEST_TIMEOUT.as_millis() as u64,
        reconnect_attempts_max: 1,
        tls,
        ..tqx_client::ClientOptions::default()
    };
    let connection = match tqx_client::blocking::Client::connect(&addr, options) {
        Ok(connection) => connection,
        Err(error) => return binary_failure(name, &error, token_sent),
    };
    use super::binary as render;
    let reply = match command {
        ClientCommand::Enqueue(a) => {
            let task = tqx_client::TaskSpec {
                payload: Bytes::from(json_or_string(&a.payload).get().to_string()),
                priority: a.priority.unwrap_or(0),
                group: a.group,
                delay_ms: a.delay_ms.unwrap_or(0),
                max_attempts: a.max_attempts,
                depends_on: a.depends_on.into_iter().map(tqx_client::Dep::Task).collect(),
                key: a.key,
            };
            connection.enqueue(&a.queue, task).map(render::enqueued)
        }
        ClientCommand::Dequeue(a) => {
            // Past u16 the server refuses the count anyway (at most 1000).
            let max = a.max.map_or(1, |max| u16::try_from(max).unwrap_or(u16::MAX));
            connection.dequeue(&a.queues, max, a.lease_ms, a.wait_ms.unwrap_or(0)).map(render::leased)
        }
        ClientCommand::Complete(a) => {
            let result = a.result.as_deref().map(|text| Bytes::from(json_or_string(text).get().to_string()));
            connection.complete(a.id, a.lease, result).map(|state| render::task_state(a.id, state))
        }
        ClientCommand::Fail(a) => {
            connection.fail(a.id, a.lease, &a.error, !a.no_retry).map(|state| render::task_state(a.id, state))
        }
        ClientCommand::Extend(a) => {
            connection.extend(a.id, a.lease, a.lease_ms).map(|expires_at_ms| render::extended(a.id, expires_at_ms))
        }
        ClientCommand::Cancel(a) => connection.cancel(a.id).map(|state| render::task_state(a.id, state)),
        ClientCommand::Task(a) => connection.get_task(a.id).map(render::task),
        ClientCommand::Queues(_) => connection.list_queues().map(render::queues),
        ClientCommand::Queue(a) => connection.get_queue(&a.name).map(render::queue),
        ClientCommand::Tasks(a) => {
            // The binary cursor is the id the HTTP API writes as a string.
            let after = match a.cursor.as_deref().filter(|c| !c.is_empty()).map(str::parse::<u64>) {
                None => 0,
                Some(Ok(after)) => after,
                Some(Err(_)) => {
                    eprintln!("tqx {name}: --cursor takes a next_cursor a listing printed");
                    return ExitCode::from(2);
                }
            };
            let limit = a.limit.unwrap_or(crate::limits::LIST_TASKS_COUNT_DEFAULT as u16);
            connection
                .list_tasks(&a.queue, render::wire_state(a.state), after, limit)
                .map(|(tasks, next_cursor)| render::task_page(tasks, next_cursor))
        }
        ClientCommand::Retry(a) => connection.retry_task(a.id).map(|state| render::task_state(a.id, state)),
        ClientCommand::Delete(a) => connection.delete_task(a.id).map(|()| render::task_deleted(a.id)),
    };
    match reply {
        Ok(reply) => {
            let body = render::json_body(&reply);
            println!(
                "{}",
                http_client::pretty_json(&body).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
            );
            ExitCode::SUCCESS
        }
        Err(error) => binary_failure(name, &error, token_sent),
    }
}

/// Prints a failed `--binary` call like the HTTP path prints one: an error reply
/// (the HTTP API's error body on stderr) exits 1; a server that cannot be
/// reached, or whose answer is lost or unreadable, exits 2.
fn binary_failure(name: &str, error: &tqx_client::ClientError, token_sent: bool) -> ExitCode {
    use tqx_client::ClientError;
    let (code, message) = match error {
        ClientError::Server { code, message } => (code.as_str(), message.clone()),
        // Refused before sending; the server would have answered these the same way.
        ClientError::RequestTooLarge { .. } => ("payload_too_large", error.to_string()),
        ClientError::InvalidRequest { reason } => ("invalid_argument", reason.clone()),
        ClientError::Connect { .. }
        | ClientError::ConnectionLost { .. }
        | ClientError::Timeout { .. }
        | ClientError::Protocol { .. }
        | ClientError::Tls { .. } => {
            eprintln!("tqx {name}: {error}");
            return ExitCode::from(2);
        }
    };
    let retry = if error.is_retryable() { ", retry later" } else { "" };
    eprintln!("tqx {name}: the server answered {code}{retry}:");
    let body = super::binary::error_body(code, &message);
    eprintln!("{}", http_client::pretty_json(&body).unwrap_or_default());
    let hint = token_hint(code, token_sent);
    if !hint.is_empty() {
        eprintln!("tqx {name}: {hint}");
    }
    ExitCode::FAILURE
}
